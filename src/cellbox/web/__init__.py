"""The web playground: static files only (no build step, nothing from a CDN), served beside the API.

The page is a client of the public API like any other; this module only serves it, with headers that keep the
browser from running anything the page did not ship itself (a strict Content-Security-Policy), so untrusted text
from a model or a container cannot become script even if it ever slipped past the page's sanitiser.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Script, styles and connections from this origin only; images also from data: (figures) and blob: (previews of
# downloaded files). No inline script or style attribute ever runs, no plugin, no framing, no <base> rewrite.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


async def _page(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=HEADERS)


def routes() -> list[BaseRoute]:
    """`/` is the page; `/playground/...` its assets."""
    return [Route("/", _page, methods=["GET", "HEAD"]),
            Mount("/playground", StaticFiles(directory=STATIC), name="playground")]
