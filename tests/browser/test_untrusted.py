"""Nothing from a model, from code or from a file name runs as script in the operator's browser: each attempt is
shown as text, the page's DOM holds no handler or script from it, and an outside image (a tracking pixel that
could carry data out) is never requested. A file a container wrote, opened directly, runs no script either."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Visit
from tests.integration.api.server import Server
from tests.upstream import ScriptedUpstream

HOSTILE_NAME = "<img src=x onerror=window.__xss='name'>.png"
CODE = (
    "print('<img src=x onerror=\"window.__xss=\\'output\\'\"><script>window.__xss=\"output\"</script>')\n"
    "import matplotlib.pyplot as plt\nplt.plot([1, 2])\n"
    f"plt.savefig({'/mnt/data/' + HOSTILE_NAME!r})\n"
)


def _text(pixel: str) -> str:
    return ("Look: <img src=x onerror=\"window.__xss='text'\"> <script>window.__xss='script'</script>\n\n"
            "[click me](javascript:window.__xss='link') <a href=\"#\" onclick=\"window.__xss='click'\">here</a>\n\n"
            f"<iframe src=\"javascript:parent.__xss='frame'\"></iframe> ![pixel]({pixel}?secret=42)\n\n"
            "```python\n</code></pre><img src=x onerror=\"window.__xss='fence'\">\n```\n")


def _no_script_ran(page: Page, visit: Visit) -> None:
    assert page.evaluate("window.__xss") is None
    for selector in ("[onerror]", "[onclick]", "script", "iframe", "a[href^='javascript']"):
        assert page.locator(f"main {selector}").count() == 0, selector
    assert visit.dialogs == []
    assert visit.foreign == []  # the outside image was never even asked for


def test_model_text_code_output_and_file_names_stay_text(server: Server, upstream: ScriptedUpstream, model: str,
                                                         visit: Callable[..., Visit]) -> None:
    pixel = "http://127.0.0.2:9/pixel.png"  # never contacted: the page's policy forbids outside images
    upstream.script(model, {"code": CODE}, {"text": _text(pixel)})
    seen = visit(server, key="key-a")
    page = seen.page
    page.fill("#model", model)
    page.fill("#prompt", "<img src=x onerror=window.__xss='prompt'>")
    page.click("#send")
    expect(page.locator(".turn.user .said")).to_have_text("<img src=x onerror=window.__xss='prompt'>")
    expect(page.locator(".call pre.logs")).to_contain_text("<img src=x onerror=")
    answer = page.locator(".message").last
    expect(answer).to_contain_text("Look:")
    expect(answer.locator("a", has_text="here")).to_be_visible()
    expect(answer.locator("pre code")).to_contain_text("<img src=x onerror=")  # a fenced block is text
    expect(answer.get_by_role("button", name=f"Download {HOSTILE_NAME}")).to_be_visible()
    expect(answer.locator("img.preview")).to_have_attribute("alt", f"Preview of {HOSTILE_NAME}")
    answer.locator("a", has_text="here").click()
    answer.locator("a", has_text="click me").click()
    _no_script_ran(page, seen)


def test_the_notebook_shows_hostile_names_and_output_as_text(open_server: Server,
                                                             visit: Callable[..., Visit]) -> None:
    seen = visit(open_server)
    page = seen.page
    page.get_by_role("tab", name="Notebook").click()
    page.get_by_label("Code cell 1").fill(CODE)
    page.get_by_role("button", name="Run cell 1").click()
    expect(page.get_by_role("region", name="Cell 1").locator("pre.logs")).to_contain_text("<script>")
    expect(page.locator("#files li .name", has_text=HOSTILE_NAME)).to_be_visible()
    _no_script_ran(page, seen)


def test_a_container_file_opened_directly_runs_no_script(open_server: Server, visit: Callable[..., Visit]) -> None:
    with httpx.Client(base_url=open_server.url + "/v1", timeout=60) as api:
        cid = api.post("/containers", json={"name": "page"}).json()["id"]
        html = "<html><body><h1>made by code</h1><script>window.__ran = 1</script></body></html>"
        api.post(f"/containers/{cid}/execute",
                 json={"code": f"open('/mnt/data/page.html', 'w').write({html!r})"}).raise_for_status()
        (listed,) = api.get(f"/containers/{cid}/files").json()["data"]
    page = visit(open_server, f"/v1/containers/{cid}/files/{listed['id']}/content").page
    expect(page.locator("h1")).to_have_text("made by code")  # shown, but as an opaque origin with scripts off
    assert page.evaluate("window.__ran") is None
