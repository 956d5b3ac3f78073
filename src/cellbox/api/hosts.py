"""Open local mode answers only requests addressed to a loopback name.

A web page on any site can make its visitor's browser send requests to 127.0.0.1 under the site's own domain name
(DNS rebinding); the browser then treats Cellbox as part of that site and lets the page read the answers. Such a
request names the site in its Host header. With API keys the page has no key to send; without keys (open local
mode) this check is what keeps it out. Loopback names: ``localhost`` and ``*.localhost`` (browsers resolve those
themselves, never through DNS), and loopback IP literals.

And only requests from its own pages: a page on another site may still *send* a "simple" cross-site request (a
multipart form posting a file) to http://127.0.0.1:8000, even though it cannot read the answer (CSRF). Browsers
name the page's origin in an ``Origin`` header on such requests; in open mode one that is not this server's own
origin (or is ``null``) is refused. Clients that are not browsers send no Origin and are not affected.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from cellbox.api.errors import error_response
from cellbox.errors import Forbidden


def is_loopback(host: str) -> bool:
    """Whether a Host header's name (port and IPv6 brackets aside) is a loopback name."""
    if host.startswith("["):
        if "]" not in host:
            return False
        name = host[1:host.find("]")]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def same_origin(origin: str, host: str) -> bool:
    """Whether an Origin header names the server the request was addressed to (``host``, its Host header)."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower() and not parts.path


class LoopbackHosts:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await self._refusal(scope)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refusal(scope: Scope) -> Forbidden | None:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin")
        # Names and origins are checked first: a local client (every one) costs no lookup of the mode.
        foreign_host = bool(host) and not is_loopback(host)
        foreign_origin = origin is not None and not same_origin(origin.decode("latin-1"), host)
        if not (foreign_host or foreign_origin) or not await scope["app"].state.services.keys.open_mode():
            return None
        if foreign_host:
            return Forbidden("This server runs in open local mode (no API keys), so it answers only requests "
                             "addressed to a loopback name (localhost, 127.0.0.1, [::1]); this one was addressed to "
                             f"{host[:100]!r}. Create an API key to serve other names.", "host")
        assert origin is not None
        return Forbidden("This server runs in open local mode (no API keys), so it answers browsers only from its "
                         f"own pages; this request came from a page of {origin.decode('latin-1')[:100]!r}. "
                         "Create an API key to serve other sites.", "origin")
