"""Chat mode in a real browser: a turn streams its code, logs and figure; its cited file downloads with the right
bytes; an attached file reaches the code; a follow-up runs in the same container; the API's errors show as said."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import Visit, natural_width
from tests.integration.api.server import Server, client
from tests.upstream import ScriptedUpstream

PLOT = ("import matplotlib.pyplot as plt\ntotal = sum(range(10))\nprint('total', total)\n"
        "plt.plot([1, 4, 9, 16])\nplt.title('squares')\nplt.savefig('/mnt/data/squares.png')\nplt.show()")


def test_a_turn_shows_code_logs_and_figure_and_its_file_downloads(server: Server, upstream: ScriptedUpstream,
                                                                 model: str, visit: Callable[..., Visit]) -> None:
    upstream.script(model, {"text": "Let me compute.", "code": PLOT},
                    {"text": "The total is **45**.\n\nHere is the chart: [squares](sandbox:/mnt/data/squares.png)"},
                    {"code": "print('again', total)"}, {"text": "Still `45`."})
    seen = visit(server, key="key-a")
    page = seen.page
    page.fill("#model", model)
    page.fill("#prompt", "Add up 0 to 9, then plot the first four squares.")
    page.keyboard.press("Enter")

    call = page.locator(".call").first
    expect(call.locator("pre.logs")).to_contain_text("total 45")
    expect(call.locator("pre.code code")).to_contain_text("sum(range(10))")
    expect(call.locator("pre.code code .hljs-built_in").first).to_be_visible()  # highlighted
    assert natural_width(call.locator("img.figure")) > 0
    answer = page.locator(".message").nth(1)  # after "Let me compute."
    expect(answer.locator("strong")).to_have_text("45")
    assert natural_width(answer.locator("img.preview")) > 0
    page.locator(".call").first.scroll_into_view_if_needed()
    seen.snap("chat-first-turn")

    with page.expect_download() as download:
        answer.locator("a[href='sandbox:/mnt/data/squares.png']").click()
    assert download.value.suggested_filename == "squares.png"
    cid = call.get_attribute("data-container")
    with client(server) as sdk:
        (saved,) = [f for f in sdk.containers.files.list(cid) if f.path == "/mnt/data/squares.png"]
        expected = sdk.containers.files.content.retrieve(saved.id, container_id=cid).read()
    assert Path(download.value.path()).read_bytes() == expected
    with page.expect_download() as again:
        answer.get_by_role("button", name="Download squares.png").click()
    assert Path(again.value.path()).read_bytes() == expected

    page.fill("#prompt", "And again?")
    page.click("#send")
    follow = page.locator(".call").nth(1)
    expect(follow.locator("pre.logs")).to_contain_text("again 45")  # the same session: `total` survived
    assert follow.get_attribute("data-container") == cid
    expect(page.locator(".message").last.locator("code")).to_have_text("45")
    assert upstream.remaining(model) == 0
    assert seen.foreign == []
    assert seen.errors == []
    assert seen.unlabelled() == []

    theme = "document.documentElement.dataset.theme"
    before = page.evaluate(theme)
    page.get_by_role("button", name="Switch between light and dark").click()
    after = page.evaluate(theme)
    assert {before, after} == {"light", "dark"}
    assert page.evaluate("document.getElementById('code-dark').disabled") is (after == "light")
    assert page.evaluate("localStorage.getItem('cellbox.theme')") == after
    seen.snap("chat-other-theme")


def test_an_attached_file_is_used_by_the_code(server: Server, upstream: ScriptedUpstream, model: str,
                                              visit: Callable[..., Visit]) -> None:
    code = "import pandas as pd\nprint('sum of b:', pd.read_csv('/mnt/data/data.csv').b.sum())"
    upstream.script(model, {"code": code}, {"text": "Done."})
    page = visit(server, key="key-a").page
    page.fill("#model", model)
    page.set_input_files("#attach", files=[{"name": "data.csv", "mimeType": "text/csv", "buffer": b"a,b\n1,2\n3,4\n"}])
    expect(page.locator("#attachments .chip")).to_contain_text("data.csv")
    page.fill("#prompt", "What is the sum of column b?")
    page.click("#send")
    expect(page.locator(".call pre.logs")).to_contain_text("sum of b: 6")
    expect(page.locator("#attachments .chip")).to_have_count(0)
    (request, _) = upstream.requests(model)
    said = str(request["messages"])
    assert "/mnt/data/data.csv" in said


def test_the_api_error_is_shown_as_said_and_a_key_entered_once_works(server: Server, upstream: ScriptedUpstream,
                                                                     model: str, visit: Callable[..., Visit]) -> None:
    upstream.script(model, {"text": "Hello from the model."})
    page = visit(server).page
    page.fill("#model", model)
    page.fill("#prompt", "Hi")
    page.click("#send")
    failure = page.locator(".turn.assistant .failure")
    expect(failure).to_have_text("Missing API key: send 'Authorization: Bearer <key>'.")  # as the API said it

    page.click("#key-button")
    page.fill("#key-input", "key-a")
    page.click("#key-save")
    expect(page.locator(f"#models option[value='{model}']")).to_have_count(1)  # listed by GET /v1/models
    page.fill("#prompt", "Hi again")
    page.click("#send")
    expect(page.locator(".message").last).to_have_text("Hello from the model.")
    assert page.evaluate("localStorage.getItem('cellbox.key')") == "key-a"
    page.reload()  # kept in the browser's storage: nothing to enter again
    expect(page.locator("#server")).to_contain_text("API keys")
    assert page.evaluate("localStorage.getItem('cellbox.key')") == "key-a"
