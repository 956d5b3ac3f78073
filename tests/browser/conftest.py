"""A real browser (Debian's chromium, headless, driven by Playwright) against a real `cellbox serve` and the scripted
model server. Every page load is watched: a request to anything but the server under test fails the test, so the
pages are proven to work offline. Screenshots of each test go to test-artifacts/browser/ (CELLBOX_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, Playwright, Route, expect, sync_playwright

from tests.integration.api.server import Server
from tests.upstream import ScriptedUpstream

CHROMIUM = "/usr/bin/chromium"  # scripts/system-packages --test installs it; Playwright downloads no browser
ARTIFACTS = Path(os.environ.get("CELLBOX_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "browser"
WAIT_MS = 90_000  # for anything the page waits on: sized for a slow, busy machine
expect.set_options(timeout=WAIT_MS)


# Package scope, not session: while Playwright's sync API is alive its event loop counts as running in this thread,
# so no asyncio test may run until it stops (these tests are all synchronous; it stops when they are done).
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run scripts/system-packages --test"
    launched = playwright.chromium.launch(executable_path=CHROMIUM)
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Server]:
    """A server with API keys (the key is entered in the page)."""
    running = Server(tmp_path_factory.mktemp("browser-data"), CELLBOX_UPSTREAM_BASE_URL=upstream.url).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server in open local mode (no keys: nothing to enter)."""
    running = Server(tmp_path_factory.mktemp("browser-open"), CELLBOX_API_KEYS="").start()
    yield running
    running.stop()


class Visit:
    """A page of one test: what it asked of other origins, what it logged as errors, and a screenshot at the end."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.set_default_timeout(WAIT_MS)
        page.route("**/*", self._guard(origin))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def snap(self, name: str) -> Path:
        """A screenshot of the page as it is now, kept with the test artifacts."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=path)
        return path

    def unlabelled(self) -> list[str]:
        """Controls a screen reader could not name (no label, no aria-label, no text)."""
        return list(self.page.evaluate("""() => [...document.querySelectorAll('button, input, textarea, select')]
            .filter((c) => !c.closest('[hidden]') && c.type !== 'hidden')
            .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label')
                            && !(c.textContent || '').trim())
            .map((c) => c.outerHTML)"""))

    def _guard(self, origin: str) -> Callable[[Route], None]:
        def route(route: Route) -> None:
            url = route.request.url
            if url.startswith((origin + "/", "data:", "blob:")):
                route.continue_()
            else:
                self.foreign.append(url)
                route.abort()
        return route


@pytest.fixture
def visit(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., Visit]]:
    """`visit(server, path="/", key=None)` opens a page of that server (with the key already in the browser's
    storage when given); the page is screenshotted when the test ends."""
    contexts = []
    visits: list[Visit] = []

    def open_page(server: Server, path: str = "/", key: str | None = None, **options: object) -> Visit:
        context = browser.new_context(accept_downloads=True, viewport={"width": 1366, "height": 860}, **options)
        if key is not None:
            context.add_init_script(f"localStorage.setItem('cellbox.key', {key!r})")
        contexts.append(context)
        page = context.new_page()
        seen = Visit(page, server.url)
        visits.append(seen)
        page.goto(server.url + path)
        return seen

    yield open_page
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for i, seen in enumerate(visits):
        seen.page.screenshot(path=ARTIFACTS / f"{name}{'-' + str(i) if i else ''}.png", full_page=False)
    for context in contexts:
        context.close()


@pytest.fixture
def model(request: pytest.FixtureRequest) -> str:
    """A model name of this test's own, so scripted replies never leak between tests."""
    return f"model-{request.node.name}"


def natural_width(locator: Locator) -> int:
    """An image's decoded width, once it has loaded (0 if it failed to)."""
    locator.wait_for()
    handle = locator.element_handle()
    locator.page.wait_for_function("img => img.complete", arg=handle, timeout=WAIT_MS)
    return int(locator.evaluate("img => img.naturalWidth"))
