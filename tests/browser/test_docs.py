"""/docs renders in a real browser with every outside request refused: Swagger UI comes from Cellbox itself."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from tests.browser.conftest import Visit
from tests.integration.api.server import Server


def test_the_docs_render_offline_with_the_api_and_an_authorize_button(server: Server,
                                                                      visit: Callable[..., Visit]) -> None:
    seen = visit(server, "/docs")
    page = seen.page
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Cellbox")
    expect(page.locator(".opblock-summary-path", has_text="/v1/containers/{container_id}/execute")).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/v1/responses").first).to_be_visible()
    page.locator("button.authorize").click()
    expect(page.locator(".modal-ux-header", has_text="Available authorizations")).to_be_visible()
    assert seen.foreign == []  # nothing came from a CDN or anywhere else
    assert seen.errors == []
