"""Blobs in an S3-compatible object store (``CELLBOX_BLOB_URL=s3://bucket/prefix``), through boto3: objects named
``<prefix>/<blob_id>``, so file bytes outlive the node that took the upload.

boto3 blocks, so every request runs in a worker thread. botocore's errors are translated here, where they enter: a
missing object is NotFound, anything else the store does wrong (unreachable, refused, no such bucket) is
StoreUnavailable. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
an instance or pod role); they are never logged or shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cellbox.errors import InvalidInput, NotFound, StoreUnavailable
from cellbox.store.blobs import checked, too_large

log = logging.getLogger(__name__)
T = TypeVar("T")

PART_SIZE = 8 << 20  # bytes per part of a multipart upload (S3's smallest is 5 MiB); a smaller body is one put
CHUNK = 1 << 20  # bytes per read of a download
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's rule for bucket names
_MISSING = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}  # an object or upload; a missing bucket is no blob's fault
_NO_CREDENTIALS = ("{} must not hold credentials: boto3 reads them from AWS_ACCESS_KEY_ID and "
                   "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role")
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=60)

Call = Callable[..., Awaitable[Any]]


def parse_blob_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix); anything else is a configuration error, reported at start."""
    parts = urlsplit(url.strip())
    if "@" in parts.netloc:
        raise InvalidInput(_NO_CREDENTIALS.format("CELLBOX_BLOB_URL"))  # not echoed: it would show them
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidInput(f"CELLBOX_BLOB_URL {url!r} must be s3://bucket or s3://bucket/prefix "
                           "(or empty, for a directory in the data directory)")
    if not _BUCKET.match(parts.netloc) or parts.query or parts.fragment:
        raise InvalidInput(f"CELLBOX_BLOB_URL {url!r}: {parts.netloc!r} is not a bucket name (3 to 63 lower-case "
                           "letters, digits, dots and hyphens; no query or fragment)")
    return parts.netloc, parts.path.strip("/")


def _checked_endpoint(url: str) -> str | None:
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise InvalidInput(_NO_CREDENTIALS.format("CELLBOX_S3_ENDPOINT_URL"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"CELLBOX_S3_ENDPOINT_URL {url!r} must be an http:// or https:// URL with a host name")
    return url


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Domain errors for botocore's. What went wrong is logged for the operator; the caller hears no endpoint, bucket
    or key."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) in _MISSING:
            raise NotFound("no such blob in the file store") from exc
        log.warning("the file store refused a request: %s", _reason(exc))
        raise StoreUnavailable("the file store refused the request; try again") from exc
    except BotoCoreError as exc:
        log.warning("the file store is unavailable: %s", exc)
        raise StoreUnavailable("the file store is unavailable; try again") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(exc: ClientError | BotoCoreError) -> str:
    if isinstance(exc, BotoCoreError):
        return str(exc)
    code, message = _code(exc), exc.response.get("Error", {}).get("Message")
    if code in ("404", "NoSuchBucket"):  # HEAD answers carry no body: a bucket's absence is a bare 404
        return "no such bucket"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access denied ({code}): check the credentials"
    return f"{code}: {message}" if message else code


async def _uncut(call: Awaitable[T]) -> T:
    """The call's result. A cancellation still waits for the call to end (its thread cannot be stopped), so that the
    clean-up after it sees everything the call made."""
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class S3Blobs:
    """Blobs as objects ``<prefix>/<blob_id>`` in one bucket."""

    def __init__(self, url: str, endpoint_url: str = "", region: str = "") -> None:
        self.bucket, self.prefix = parse_blob_url(url)
        self._endpoint_url = _checked_endpoint(endpoint_url)
        self._region = region.strip() or None
        self._client: Any = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _connect(self) -> Any:
        # A store at an endpoint of its own (MinIO, Ceph, a test server) is addressed by path: http://host/bucket/key.
        style = {"s3": {"addressing_style": "path"}} if self._endpoint_url else {}
        return boto3.session.Session().client("s3", endpoint_url=self._endpoint_url, region_name=self._region,
                                              config=_CONFIG.merge(Config(**style)))

    async def start(self) -> None:
        try:
            self._client = await asyncio.to_thread(self._connect)
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"the file store {self.url} cannot be used: {_reason(exc)}") from exc

    def _key(self, blob_id: str) -> str:
        return f"{self.prefix}/{checked(blob_id)}" if self.prefix else checked(blob_id)

    async def _call(self, operation: str, **params: Any) -> Any:
        """One request, in a worker thread, its errors in domain words."""
        with _translated():
            return await asyncio.to_thread(getattr(self._client, operation), Bucket=self.bucket, **params)

    async def write(self, blob_id: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """A part is sent each time PART_SIZE bytes have come (so memory stays at about one part per upload); a body
        smaller than one part is a single put. On failure or overflow the upload is aborted."""
        upload = _Upload(self._call, self._key(blob_id))
        pending, size = bytearray(), 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                pending += chunk
                while len(pending) >= PART_SIZE:
                    await upload.send(bytes(pending[:PART_SIZE]))
                    del pending[:PART_SIZE]
            await upload.finish(bytes(pending))
        except BaseException:
            await upload.abort()
            raise
        return size

    async def _get(self, blob_id: str) -> Any:
        try:
            return (await self._call("get_object", Key=self._key(blob_id)))["Body"]
        except NotFound:
            raise NotFound(f"no such blob: {blob_id}") from None

    async def read(self, blob_id: str) -> bytes:
        body = await self._get(blob_id)
        try:
            with _translated():
                data: bytes = await asyncio.to_thread(body.read)
            return data
        finally:
            await asyncio.to_thread(body.close)

    async def open(self, blob_id: str) -> AsyncIterator[bytes]:
        return self._chunks(await self._get(blob_id))

    async def _chunks(self, body: Any) -> AsyncIterator[bytes]:
        try:
            while True:
                with _translated():
                    chunk = await asyncio.to_thread(body.read, CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            await asyncio.to_thread(body.close)

    async def delete(self, blob_id: str) -> None:
        await self._call("delete_object", Key=self._key(blob_id))


class _Upload:
    """One object being written: a single put, or a multipart upload whose parts go as they fill. Aborting undoes
    whichever was begun, so a failed or cancelled write leaves no object and no pending upload behind."""

    def __init__(self, call: Call, key: str) -> None:
        self._call, self._key = call, key
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._finishing = False

    async def send(self, part: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = (await _uncut(self._call("create_multipart_upload", Key=self._key)))["UploadId"]
        number = len(self._parts) + 1
        sent = await _uncut(self._call("upload_part", Key=self._key, UploadId=self._upload_id, PartNumber=number,
                                       Body=part))
        self._parts.append({"ETag": sent["ETag"], "PartNumber": number})

    async def finish(self, rest: bytes) -> None:
        if self._upload_id is None:
            self._finishing = True
            await _uncut(self._call("put_object", Key=self._key, Body=rest))
            return
        if rest:
            await self.send(rest)
        self._finishing = True
        await _uncut(self._call("complete_multipart_upload", Key=self._key, UploadId=self._upload_id,
                                MultipartUpload={"Parts": self._parts}))

    async def abort(self) -> None:
        steps = [("abort_multipart_upload", {"UploadId": self._upload_id})] if self._upload_id else []
        if self._finishing:  # the put or the completion may have landed before the failure reached us
            steps.append(("delete_object", {}))
        for operation, params in steps:
            try:
                await self._call(operation, Key=self._key, **params)
            except NotFound:
                pass  # nothing of it was there
            except StoreUnavailable as exc:
                log.warning("could not undo the failed upload of %s (%s): an object or multipart upload of that "
                            "name may be left in the bucket, referenced by no file", self._key, exc)
