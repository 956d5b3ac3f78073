"""Files API through the official SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.api.server import check_error


def test_upload_retrieve_list_download_delete(sdk: openai.OpenAI) -> None:
    created = sdk.files.create(file=("notes.txt", b"hello\n"), purpose="assistants")
    assert created.id.startswith("file-")
    assert (created.filename, created.bytes, created.purpose, created.status) == ("notes.txt", 6, "assistants",
                                                                                  "processed")
    assert sdk.files.retrieve(created.id).filename == "notes.txt"
    assert sdk.files.content(created.id).read() == b"hello\n"
    assert created.id in [f.id for f in sdk.files.list(purpose="assistants")]
    assert created.id not in [f.id for f in sdk.files.list(purpose="vision")]
    deleted = sdk.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)


def test_pagination_walks_every_file_in_order(sdk: openai.OpenAI) -> None:
    ids = [sdk.files.create(file=(f"p{i}.txt", b"x"), purpose="user_data").id for i in range(5)]
    page = sdk.files.list(purpose="user_data", limit=2, order="asc")
    assert page.has_more
    assert len(list(page.iter_pages())) >= 3  # the SDK followed the cursor page by page
    walked = [f.id for f in page]  # iterating a page walks every page (SDK 3.x)
    assert [i for i in walked if i in ids] == ids
    newest_first = [f.id for f in sdk.files.list(purpose="user_data", order="desc", limit=2)]
    assert [i for i in newest_first if i in ids] == ids[::-1]


def test_upload_names_are_sanitised(sdk: openai.OpenAI) -> None:
    created = sdk.files.create(file=("../../etc/passwd", b"x"), purpose="assistants")
    assert created.filename == "passwd"


def test_files_of_another_project_are_invisible(sdk: openai.OpenAI, other: openai.OpenAI) -> None:
    mine = sdk.files.create(file=("secret.txt", b"s"), purpose="assistants")
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(mine.id)
    assert mine.id not in [f.id for f in other.files.list()]


def test_bad_uploads(http: httpx.Client) -> None:
    check_error(http.post("/v1/files", data={"purpose": "assistants"}), 400, "file")
    check_error(http.post("/v1/files", files={"file": ("a.txt", b"x")}), 400, "purpose")
    check_error(http.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "nonsense"}), 400,
                "purpose must be one of")
    check_error(http.post("/v1/files", files={"file": ("big.bin", b"x" * (6 << 20))},
                          data={"purpose": "assistants"}), 413, "limit")
    check_error(http.get("/v1/files/file-doesnotexist"), 404, "no such file")
    check_error(http.get("/v1/files", params={"limit": 0}), 400, "limit")
    check_error(http.get("/v1/files", params={"after": "file-unknown"}), 400, "cursor")
