"""One contract, two stores: the local directory and the S3-compatible store (against moto's server) behave alike."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cellbox.errors import NotFound, TooLarge
from cellbox.store.blobs import BlobStore, LocalBlobs
from cellbox.store.s3 import PART_SIZE, S3Blobs
from tests.s3 import ENV, REGION, MotoServer

MIB = 1 << 20


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BlobStore:
    blobs: BlobStore
    if request.param == "local":
        blobs = LocalBlobs(tmp_path / "blobs")
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        for name, value in ENV.items():
            monkeypatch.setenv(name, value)
        blobs = S3Blobs(f"s3://{moto.new_bucket()}/cellbox/files", moto.url, REGION)
    await blobs.start()
    return blobs


@pytest.fixture
def leftovers(store: BlobStore, request: pytest.FixtureRequest) -> Callable[[], list[str]]:
    """Everything the store holds: files (temporary ones too), or objects and unfinished multipart uploads."""
    if isinstance(store, LocalBlobs):
        return lambda: sorted(os.listdir(store.directory))
    assert isinstance(store, S3Blobs)
    s3 = request.getfixturevalue("moto").client()

    def held() -> list[str]:
        objects = s3.list_objects_v2(Bucket=store.bucket).get("Contents", [])
        uploads = s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        return sorted([o["Key"] for o in objects] + [f"upload of {u['Key']}" for u in uploads])
    return held


async def pieces(data: bytes, size: int = MIB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def sent(store: BlobStore, blob_id: str) -> bytes:
    """What a client downloading the blob receives."""
    content = await store.open(blob_id)
    if isinstance(content, Path):
        return content.read_bytes()
    return b"".join([chunk async for chunk in content])


async def test_round_trip(store: BlobStore, leftovers: Callable[[], list[str]]) -> None:
    assert await store.write("file-a", pieces(b"hello\n"), limit=MIB) == 6
    assert await store.read("file-a") == b"hello\n"
    assert await sent(store, "file-a") == b"hello\n"
    assert len(leftovers()) == 1
    assert await store.write("file-empty", pieces(b""), limit=MIB) == 0
    assert await store.read("file-empty") == b""


async def test_a_large_body_arrives_whole(store: BlobStore) -> None:
    """Two and a half parts' worth: for S3 a multipart upload (the part boundaries fall inside chunks)."""
    data = os.urandom(PART_SIZE * 5 // 2)
    assert await store.write("file-large", pieces(data, MIB + 7), limit=len(data)) == len(data)
    assert hashlib.sha256(await sent(store, "file-large")).digest() == hashlib.sha256(data).digest()
    assert await store.read("file-large") == data


@pytest.mark.parametrize("size", [MIB, PART_SIZE * 2 + MIB], ids=["small", "after-two-parts"])
async def test_over_the_limit_leaves_nothing(store: BlobStore, leftovers: Callable[[], list[str]],
                                             size: int) -> None:
    with pytest.raises(TooLarge, match="upload limit"):
        await store.write("file-big", pieces(b"x" * size), limit=size - 1)
    assert leftovers() == []
    with pytest.raises(NotFound):
        await store.read("file-big")


async def test_a_failing_source_leaves_nothing(store: BlobStore, leftovers: Callable[[], list[str]]) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"y" * (PART_SIZE + MIB)
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        await store.write("file-broken", broken(), limit=1 << 30)
    assert leftovers() == []


async def test_a_cancelled_write_leaves_nothing(store: BlobStore, leftovers: Callable[[], list[str]]) -> None:
    """Cancelled while waiting for the client's next bytes, after a whole part was sent."""
    waiting = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"z" * (PART_SIZE + MIB)
        waiting.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(store.write("file-stalled", stalls(), limit=1 << 30))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers() == []


async def test_delete(store: BlobStore, leftovers: Callable[[], list[str]]) -> None:
    await store.write("file-gone", pieces(b"bye"), limit=MIB)
    await store.delete("file-gone")
    assert leftovers() == []
    with pytest.raises(NotFound):
        await store.read("file-gone")
    await store.delete("file-gone")  # already gone: no error


@pytest.mark.parametrize("blob_id", ["file-never-written", "../etc/passwd", ".hidden", ""])
async def test_a_missing_blob_is_not_found(store: BlobStore, blob_id: str) -> None:
    with pytest.raises(NotFound):
        await store.read(blob_id)
    with pytest.raises(NotFound):
        await store.open(blob_id)
