"""Notebook mode in a real browser, in open local mode (no key to enter): cells keep state across runs, outputs
stream in, figures render, files upload and download, and the container's status and expiry are shown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import Visit, natural_width
from tests.integration.api.server import Server


def test_cells_keep_state_and_files_go_both_ways(open_server: Server, visit: Callable[..., Visit]) -> None:
    seen = visit(open_server)
    page = seen.page
    page.get_by_role("tab", name="Notebook").click()
    first = page.get_by_label("Code cell 1")
    first.fill("x = 41\nprint('set')")
    first.press("Shift+Enter")  # runs, then moves to a new cell
    cell = page.get_by_role("region", name="Cell 1")
    expect(cell.locator("pre.logs")).to_have_text("set\n")
    expect(cell.locator(".state")).to_have_text("[1] completed")
    expect(page.locator("#container-info [data-field=status]")).to_have_text("running")
    expect(page.locator("#container-info [data-field=expires]")).to_contain_text("after 20 min idle")

    second = page.get_by_label("Code cell 2")
    expect(second).to_be_focused()
    second.fill("import time\nprint(x + 1, flush=True)\ntime.sleep(0.5)\nprint('later')\n"
                "_ = open('/mnt/data/answer.txt', 'w').write(str(x + 1))")
    page.get_by_role("button", name="Run cell 2").click()
    logs = page.get_by_role("region", name="Cell 2").locator("pre.logs")
    expect(logs.first).to_have_text("42\n")  # streamed: the first print arrives as its own output
    expect(logs.last).to_have_text("later\n")
    expect(logs).to_have_count(2)
    answer = page.locator("#files li", has_text="answer.txt")
    expect(answer).to_contain_text("2 B")
    with page.expect_download() as download:
        answer.get_by_role("button", name="Download answer.txt").click()
    assert Path(download.value.path()).read_bytes() == b"42"

    page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    expect(page.locator("#files li", has_text="notes.txt")).to_be_visible()
    page.get_by_role("button", name="+ Cell").click()
    third = page.get_by_label("Code cell 3")
    third.fill("import matplotlib.pyplot as plt\nprint(open('/mnt/data/notes.txt').read())\n"
               "plt.plot([3, 1, 2]); plt.show()")
    third.press("Control+Enter")
    result = page.get_by_role("region", name="Cell 3")
    expect(result.locator("pre.logs")).to_have_text("hello\n")
    assert natural_width(result.locator("img.figure")) > 0
    assert seen.foreign == []
    assert seen.errors == []

    page.reload()  # the container is remembered; its files are listed again
    page.get_by_role("tab", name="Notebook").click()
    expect(page.locator("#files li", has_text="notes.txt")).to_be_visible()
    page.get_by_label("Code cell 1").fill("print(x)")
    page.get_by_role("button", name="Run cell 1").click()
    expect(page.get_by_role("region", name="Cell 1").locator("pre.logs")).to_have_text("41\n")


def test_an_error_and_a_deleted_container_are_shown(open_server: Server, visit: Callable[..., Visit]) -> None:
    page = visit(open_server).page
    page.get_by_role("tab", name="Notebook").click()
    page.get_by_role("button", name="New container").click()
    expect(page.locator("#container-info [data-field=status]")).to_have_text("running")
    cell = page.get_by_label("Code cell 1")
    cell.fill("1 / 0")
    page.get_by_role("button", name="Run cell 1").click()
    region = page.get_by_role("region", name="Cell 1")
    expect(region.locator(".state")).to_contain_text("failed")
    expect(region.locator("pre.logs")).to_contain_text("ZeroDivisionError")
    page.get_by_role("button", name="Delete").click()
    expect(page.locator("#container-info")).to_contain_text("None yet")
