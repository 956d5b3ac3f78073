"""Files API bytes in an S3-compatible store (moto's server): a real `cellbox serve` with CELLBOX_BLOB_URL, driven by
the openai SDK; and a store that cannot be used stops the start in one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.exceptions
import openai
import pytest

from tests.integration.api.server import Server, client, free_port, raw
from tests.s3 import ENV, REGION, MotoServer

PREFIX = "cellbox/files"
LIMIT = 12 << 20  # more than one part (8 MiB), so a big upload is multipart


def _store_env(moto: MotoServer, bucket: str) -> dict[str, str]:
    return {"CELLBOX_BLOB_URL": f"s3://{bucket}/{PREFIX}", "CELLBOX_S3_ENDPOINT_URL": moto.url,
            "CELLBOX_S3_REGION": REGION, **ENV}


def _held(s3: Any, bucket: str) -> list[str]:
    objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted([o["Key"] for o in objects] + [f"upload of {u['Key']}" for u in uploads])


def test_files_live_in_the_bucket(moto: MotoServer, tmp_path: Path) -> None:
    bucket, s3 = moto.new_bucket(), moto.client()
    server = Server(tmp_path, CELLBOX_MAX_UPLOAD=str(LIMIT), CELLBOX_WARM_POOL="1", **_store_env(moto, bucket))
    server.start()
    try:
        with client(server) as sdk, raw(server) as http:
            upload = sdk.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="assistants")
            key = f"{PREFIX}/{upload.id}"
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"a,b\n1,2\n"
            assert not (tmp_path / "files").exists()  # nothing of it on this node
            assert sdk.files.content(upload.id).read() == b"a,b\n1,2\n"
            answer = http.get(f"/v1/files/{upload.id}/content")
            assert answer.headers["content-type"].startswith("text/csv")
            assert answer.headers["content-disposition"] == 'attachment; filename="data.csv"'
            assert answer.headers["content-length"] == "8"
            assert answer.headers["content-security-policy"] == "sandbox"
            assert answer.headers["x-content-type-options"] == "nosniff"

            box = sdk.containers.create(name="s3", file_ids=[upload.id])
            run = http.post(f"/v1/containers/{box.id}/execute", json={"code": "print(open('data.csv').read())"})
            assert run.json()["outputs"] == [{"type": "logs", "logs": "a,b\n1,2\n\n"}]
            sdk.containers.delete(box.id)

            big = os.urandom(10 << 20)
            large = sdk.files.create(file=("big.bin", big), purpose="assistants")
            assert s3.head_object(Bucket=bucket, Key=f"{PREFIX}/{large.id}")["ETag"].endswith('-2"')  # two parts
            streamed = http.get(f"/v1/files/{large.id}/content")
            assert hashlib.sha256(streamed.content).digest() == hashlib.sha256(big).digest()

            with pytest.raises(openai.APIStatusError) as refused:  # within the body limit, over the file limit
                sdk.files.create(file=("over.bin", b"o" * (LIMIT + (512 << 10))), purpose="assistants")
            assert refused.value.status_code == 413
            assert f"the file is larger than the {LIMIT}-byte upload limit" in refused.value.message  # the store's
            assert _held(s3, bucket) == sorted([key, f"{PREFIX}/{large.id}"])

        server.stop()
        server.start()  # the bytes are in the bucket, the metadata in the data directory: both are still there
        with client(server) as sdk:
            assert sdk.files.content(upload.id).read() == b"a,b\n1,2\n"
            sdk.files.delete(upload.id)
            sdk.files.delete(large.id)
            assert _held(s3, bucket) == []
            with pytest.raises(openai.NotFoundError):
                sdk.files.content(upload.id)
    finally:
        server.stop()


def test_a_store_that_goes_away_is_a_503(tmp_path: Path) -> None:
    own = MotoServer().start()
    server = Server(tmp_path, CELLBOX_WARM_POOL="1", **_store_env(own, own.new_bucket()))
    try:
        server.start()
        with client(server) as sdk:
            kept = sdk.files.create(file=("kept.txt", b"kept"), purpose="assistants")
            own.stop()
            for attempt in (lambda: sdk.files.create(file=("new.txt", b"new"), purpose="assistants"),
                            lambda: sdk.files.content(kept.id), lambda: sdk.files.delete(kept.id)):
                with pytest.raises(openai.InternalServerError) as failed:
                    attempt()
                assert failed.value.status_code == 503
                assert "the file store is unavailable" in failed.value.message
            assert sdk.files.retrieve(kept.id).bytes == 4  # a failed delete leaves the file, for a retry
    finally:
        server.stop()
        own.stop()


def _serve_once(data_dir: Path, **env: str) -> tuple[int, list[str]]:
    process = subprocess.run([sys.executable, "-m", "cellbox.cli", "serve", "--port", str(free_port()),
                              "--data-dir", str(data_dir)], env={**os.environ, "CELLBOX_PRELOAD": "[]", **env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    return process.returncode, process.stderr.strip().splitlines()


def test_a_missing_bucket_stops_the_start_in_one_line(moto: MotoServer, tmp_path: Path) -> None:
    status, lines = _serve_once(tmp_path, **_store_env(moto, "no-such-bucket"))
    assert status == 5
    assert lines[0].startswith("cellbox: starting")
    assert lines[1:] == [f"cellbox: the file store s3://no-such-bucket/{PREFIX} cannot be used: no such bucket"]
    with pytest.raises(botocore.exceptions.ClientError):
        moto.client().head_bucket(Bucket="no-such-bucket")  # the start made nothing


@pytest.mark.parametrize("url", ["file:///srv/blobs", "s3://"])
def test_a_bad_blob_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    status, lines = _serve_once(tmp_path, CELLBOX_BLOB_URL=url)
    assert status == 2
    assert lines[0].startswith("cellbox: starting")
    assert len(lines) == 2
    assert lines[1].startswith(f"cellbox: error: CELLBOX_BLOB_URL {url!r} must be s3://bucket")
