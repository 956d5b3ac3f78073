"""What only the S3-compatible store has: its URL, its key layout, multipart uploads, and a store that is down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from cellbox.errors import InvalidInput, NotFound, StoreUnavailable
from cellbox.store.s3 import PART_SIZE, S3Blobs, parse_blob_url
from tests.s3 import ENV, REGION, MotoServer, free_port

MIB = 1 << 20


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def own_moto() -> Iterator[MotoServer]:
    """A server of this test's own, to stop under the store."""
    server = MotoServer().start()
    yield server
    server.stop()


async def pieces(data: bytes, size: int = MIB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://files", "files", ""),
    ("s3://my-bucket.example/", "my-bucket.example", ""),
    ("s3://b12/cellbox/files/", "b12", "cellbox/files"),
])
def test_a_blob_url_is_a_bucket_and_a_prefix(url: str, bucket: str, prefix: str) -> None:
    assert parse_blob_url(url) == (bucket, prefix)


@pytest.mark.parametrize(("url", "says"), [
    ("/var/lib/cellbox", "must be s3://bucket"),
    ("gs://bucket/prefix", "must be s3://bucket"),
    ("s3://", "must be s3://bucket"),
    ("s3:///prefix", "must be s3://bucket"),
    ("s3://Upper/p", "is not a bucket name"),
    ("s3://ab/p", "is not a bucket name"),
    ("s3://bucket/p?versionId=1", "no query or fragment"),
])
def test_a_bad_blob_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match="CELLBOX_BLOB_URL") as caught:
        parse_blob_url(url)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_endpoint_is_refused() -> None:
    with pytest.raises(InvalidInput, match="CELLBOX_S3_ENDPOINT_URL 'minio:9000' must be an http"):
        S3Blobs("s3://bucket", "minio:9000")


@pytest.mark.parametrize(("url", "endpoint", "where"), [
    ("s3://AKIAKEY:hush@bucket/p", "", "CELLBOX_BLOB_URL"),
    ("s3://bucket/p", "http://AKIAKEY:hush@minio:9000", "CELLBOX_S3_ENDPOINT_URL"),
])
def test_credentials_in_a_url_are_refused_unshown(url: str, endpoint: str, where: str) -> None:
    with pytest.raises(InvalidInput, match=f"{where} must not hold credentials") as caught:
        S3Blobs(url, endpoint)
    assert "hush" not in str(caught.value)


async def test_objects_are_named_prefix_slash_id(moto: MotoServer) -> None:
    bucket = moto.new_bucket()
    store = S3Blobs(f"s3://{bucket}/team/files/", moto.url, REGION)
    await store.start()
    await store.write("file-abc", pieces(b"123"), limit=MIB)
    assert [o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket)["Contents"]] == ["team/files/file-abc"]
    bare = S3Blobs(f"s3://{bucket}", moto.url, REGION)
    await bare.start()
    with pytest.raises(NotFound):  # the same id names another key without the prefix
        await bare.read("file-abc")


async def test_small_bodies_are_one_put_large_ones_multipart(moto: MotoServer) -> None:
    bucket = moto.new_bucket()
    store = S3Blobs(f"s3://{bucket}", moto.url, REGION)
    await store.start()
    await store.write("file-small", pieces(b"s" * (PART_SIZE - 1)), limit=1 << 30)
    await store.write("file-large", pieces(b"l" * (PART_SIZE * 2 + 1)), limit=1 << 30)
    s3 = moto.client()
    assert "-" not in s3.head_object(Bucket=bucket, Key="file-small")["ETag"]
    assert s3.head_object(Bucket=bucket, Key="file-large")["ETag"].endswith('-3"')  # three parts


async def test_a_missing_bucket_fails_the_start(moto: MotoServer) -> None:
    store = S3Blobs("s3://no-such-bucket-here/files", moto.url, REGION)
    with pytest.raises(StoreUnavailable, match="s3://no-such-bucket-here/files cannot be used: no such bucket"):
        await store.start()


async def test_an_unreachable_store_fails_the_start() -> None:
    store = S3Blobs("s3://bucket", f"http://127.0.0.1:{free_port()}", REGION)
    with pytest.raises(StoreUnavailable, match="cannot be used: Could not connect to the endpoint URL"):
        await store.start()


async def test_a_bucket_gone_while_serving_is_the_store_failing_not_a_missing_file(moto: MotoServer) -> None:
    bucket = moto.new_bucket()
    store = S3Blobs(f"s3://{bucket}", moto.url, REGION)
    await store.start()
    moto.client().delete_bucket(Bucket=bucket)
    with pytest.raises(StoreUnavailable, match="refused the request"):
        await store.write("file-orphan", pieces(b"o"), limit=MIB)
    with pytest.raises(StoreUnavailable, match="refused the request"):
        await store.read("file-orphan")


async def test_a_store_that_goes_down_is_unavailable(own_moto: MotoServer, caplog: pytest.LogCaptureFixture) -> None:
    """The caller hears that the store is unavailable; the operator's log says why."""
    store = S3Blobs(f"s3://{own_moto.new_bucket()}", own_moto.url, REGION)
    await store.start()
    await store.write("file-kept", pieces(b"k"), limit=MIB)
    own_moto.stop()
    with pytest.raises(StoreUnavailable, match=r"^the file store is unavailable; try again$"):
        await store.write("file-new", pieces(b"n"), limit=MIB)
    assert f"Could not connect to the endpoint URL: \"{own_moto.url}/" in caplog.text
    with pytest.raises(StoreUnavailable):
        await store.write("file-parts", pieces(b"p" * (PART_SIZE + 1)), limit=1 << 30)
    with pytest.raises(StoreUnavailable):
        await store.read("file-kept")
    with pytest.raises(StoreUnavailable):
        await store.open("file-kept")
    with pytest.raises(StoreUnavailable):
        await store.delete("file-kept")
