"""Container files: uploads (multipart or file_id), files the code writes, downloads, and path tricks."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.api.server import check_error


def run(http: httpx.Client, container: str, code: str) -> dict:
    response = http.post(f"/v1/containers/{container}/execute", json={"code": code})
    assert response.status_code == 200, response.text
    return response.json()


def test_multipart_upload_and_download(sdk: openai.OpenAI, http: httpx.Client, container: str) -> None:
    created = sdk.containers.files.create(container, file=("in.txt", b"payload"))
    assert (created.path, created.source, created.bytes) == ("/mnt/data/in.txt", "user", 7)
    assert run(http, container, "print(open('/mnt/data/in.txt').read())")["outputs"][0]["logs"] == "payload\n"
    content = sdk.containers.files.content.retrieve(created.id, container_id=container)
    assert content.read() == b"payload"
    fetched = sdk.containers.files.retrieve(created.id, container_id=container)
    assert fetched.path == created.path


def test_upload_by_file_id(sdk: openai.OpenAI, container: str) -> None:
    upload = sdk.files.create(file=("table.csv", b"x\n1\n"), purpose="assistants")
    created = sdk.containers.files.create(container, file_id=upload.id)
    assert (created.path, created.bytes) == ("/mnt/data/table.csv", 4)
    again = sdk.containers.files.create(container, file_id=upload.id)
    assert again.path == "/mnt/data/table-1.csv"  # never overwrites a file already there


def test_files_written_by_code_are_registered_as_assistant_files(sdk: openai.OpenAI, http: httpx.Client,
                                                                 container: str) -> None:
    result = run(http, container, "import os\nos.makedirs('out', exist_ok=True)\n"
                                  "open('out/report.txt', 'w').write('done')")
    assert [(f["path"], f["source"], f["bytes"]) for f in result["files"]] == [
        ("/mnt/data/out/report.txt", "assistant", 4)]
    listed = {f.path: f for f in sdk.containers.files.list(container)}
    report = listed["/mnt/data/out/report.txt"]
    assert sdk.containers.files.content.retrieve(report.id, container_id=container).read() == b"done"
    modified = run(http, container, "open('out/report.txt', 'a').write('!')")
    assert modified["files"][0]["id"] == report.id  # same file, new size
    assert sdk.containers.files.retrieve(report.id, container_id=container).bytes == 5
    run(http, container, "import os; os.remove('out/report.txt')")
    assert "/mnt/data/out/report.txt" not in {f.path for f in sdk.containers.files.list(container)}


def test_delete_removes_the_file_from_the_workspace(sdk: openai.OpenAI, http: httpx.Client, container: str) -> None:
    created = sdk.containers.files.create(container, file=("gone.txt", b"x"))
    assert sdk.containers.files.delete(created.id, container_id=container) is None
    assert run(http, container, "import os; print(os.path.exists('gone.txt'))")["outputs"][0]["logs"] == "False\n"
    with pytest.raises(openai.NotFoundError):
        sdk.containers.files.retrieve(created.id, container_id=container)


def test_symlinks_planted_by_code_are_never_followed(sdk: openai.OpenAI, http: httpx.Client, container: str) -> None:
    run(http, container, "import os; os.symlink('/etc/passwd', 'passwd')")
    sdk.containers.files.create(container, file=("real.txt", b"x"))
    # A symlink is not a regular file: it is never registered, so there is nothing to download.
    assert "/mnt/data/passwd" not in {f.path for f in sdk.containers.files.list(container)}
    swapped = sdk.containers.files.create(container, file=("swap.txt", b"mine"))
    run(http, container, "import os; os.remove('swap.txt'); os.symlink('/etc/shadow', 'swap.txt')")
    response = http.get(f"/v1/containers/{container}/files/{swapped.id}/content")
    assert response.status_code == 404
    assert b"root:" not in response.content


def test_upload_names_are_sanitised(sdk: openai.OpenAI, container: str) -> None:
    created = sdk.containers.files.create(container, file=("../../../etc/cron.d/x", b"x"))
    assert created.path == "/mnt/data/x"


def test_bad_requests(http: httpx.Client, container: str) -> None:
    check_error(http.post(f"/v1/containers/{container}/files", json={}), 400, "file_id")
    check_error(http.post(f"/v1/containers/{container}/files", content=b"raw", headers={"content-type": "text/plain"}),
                400, "multipart")
    check_error(http.post(f"/v1/containers/{container}/files", files={"other": ("a", b"x")}), 400, "'file' part")
    check_error(http.post(f"/v1/containers/{container}/files", json={"file_id": "file-missing"}), 404)
    check_error(http.post(f"/v1/containers/{container}/files", files={"file": ("big", b"x" * (6 << 20))}), 413)
    check_error(http.get(f"/v1/containers/{container}/files/cfile_missing"), 404, "not found")
    check_error(http.get(f"/v1/containers/{container}/files/cfile_missing/content"), 404)


def test_a_listing_can_ask_for_the_files_at_given_paths(sdk: openai.OpenAI, http: httpx.Client,
                                                        container: str) -> None:
    """Cellbox's extension: ``path`` (repeatable) finds files by path in one request, however many the container
    has; other paths, and those of other containers, are not found."""
    run(http, container, "for n in range(150): open(f'f{n}.txt', 'w').write(str(n))")
    other = sdk.containers.create(name="other").id
    run(http, other, "open('f7.txt', 'w').write('other')")
    asked = [("path", "/mnt/data/f149.txt"), ("path", "/mnt/data/f7.txt"), ("path", "/mnt/data/none.txt")]
    page = http.get(f"/v1/containers/{container}/files", params=asked).json()
    assert sorted(f["path"] for f in page["data"]) == ["/mnt/data/f149.txt", "/mnt/data/f7.txt"]
    assert {f["container_id"] for f in page["data"]} == {container}
    assert page["has_more"] is False
    assert http.get(f"/v1/containers/{container}/files", params=[*asked[:1], ("limit", "1")]).json()["data"][0][
        "path"] == "/mnt/data/f149.txt"
    too_many = [("path", f"/mnt/data/f{n}.txt") for n in range(101)]
    check_error(http.get(f"/v1/containers/{container}/files", params=too_many), 400, "path")
