"""Open local mode answers only requests addressed to a loopback name.

A web page on any site can make its visitor's browser send requests to 127.0.0.1 under the site's own domain name
(DNS rebinding); the browser then treats Cellbox as part of that site and lets the page read the answers. Such a
request names the site in its Host header. With API keys the page has no key to send; without keys (open local
mode) this check is what keeps it out. Loopback names: ``localhost`` and ``*.localhost`` (browsers resolve those
themselves, never through DNS), and loopback IP literals.
"""

from __future__ import annotations

import ipaddress

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


class LoopbackHosts:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host")
            # The name is checked first: a loopback name (every local client) costs no lookup of the mode.
            if host is not None and not is_loopback(host.decode("latin-1")) \
                    and await scope["app"].state.services.keys.open_mode():
                await error_response(Forbidden(
                    "This server runs in open local mode (no API keys), so it answers only requests addressed to "
                    "a loopback name (localhost, 127.0.0.1, [::1]); this one was addressed to "
                    f"{host.decode('latin-1')[:100]!r}. Create an API key to serve other names.", "host"))(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)
