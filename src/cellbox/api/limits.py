"""A ceiling on request bodies, enforced while they arrive: a declared length over it is refused before a byte is
read, and a chunked body is cut off as soon as it passes it. Routes then parse bodies only after auth."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cellbox.api.errors import error_response
from cellbox.errors import TooLarge

MULTIPART_SLACK = 1 << 20  # boundaries and part headers around an upload of exactly the limit


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.ceiling = limit + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.ceiling:
            await error_response(self._too_large())(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.ceiling:
                raise self._too_large()
            return message

        await self.app(scope, counted, send)

    def _too_large(self) -> TooLarge:
        return TooLarge(f"the upload is larger than the {self.limit}-byte limit", "file")
