"""A workspace shaped by a hostile tenant: odd file names, huge trees, uploads racing the code. Through the HTTP API
every execute still answers 200 with what could be registered, and says what was left out."""

from __future__ import annotations

import threading

import httpx
import openai

from cellbox.sandbox.workspace import MAX_SCAN_ENTRIES

EVIL_NAMES = r'''
import os
names = [b"line\nbreak.txt", b"cr\rreturn.txt", b"bell\x07.txt", b"\x1b[2J\x1b[31mred.txt", b"latin-\xe9.txt",
         b"rtl\xe2\x80\xaetxt.exe"]
for name in names:
    with open(os.path.join(b"/mnt/data", name), "wb") as f:
        f.write(b"x")
with open("/mnt/data/fine.txt", "w") as f:
    f.write("ok")
'''


def test_file_names_that_are_not_plain_text_are_not_registered(http: httpx.Client, sdk: openai.OpenAI,
                                                                container: str) -> None:
    response = http.post(f"/v1/containers/{container}/execute", json={"code": EVIL_NAMES})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert [f["path"] for f in body["files"]] == ["/mnt/data/fine.txt"]
    assert body["message"].startswith("6 file(s) were not registered because their names are not UTF-8 text")
    assert body["message"].isprintable()
    listed = [f.path for f in sdk.containers.files.list(container)]
    assert listed == ["/mnt/data/fine.txt"]
    again = http.post(f"/v1/containers/{container}/execute", json={"code": "import os; len(os.listdir('.'))"})
    assert again.status_code == 200
    assert again.json()["outputs"] == [{"type": "logs", "logs": "7\n"}]  # the files are still there for the code


def test_a_huge_tree_is_scanned_within_bounds_and_the_execution_says_so(http: httpx.Client, sdk: openai.OpenAI,
                                                                        container: str) -> None:
    code = f"""
import os
with open("/mnt/data/first.txt", "w") as f:
    f.write("1")
for i in range({MAX_SCAN_ENTRIES + 2000}):
    os.mkdir(f"/mnt/data/d{{i:06}}")
"""
    body = http.post(f"/v1/containers/{container}/execute", json={"code": code, "timeout": 300}).json()
    assert body["status"] == "completed", body
    assert f"more than {MAX_SCAN_ENTRIES} files and directories" in body["message"]
    # The server still serves this container and its files, with descriptors to spare.
    uploaded = sdk.containers.files.create(container, file=("after.txt", b"later"))
    assert uploaded.path == "/mnt/data/after.txt"
    assert sdk.containers.files.content.retrieve(uploaded.id, container_id=container).read() == b"later"


def test_an_upload_during_an_execution_loses_none_of_the_files_the_code_wrote(http: httpx.Client, sdk: openai.OpenAI,
                                                                             container: str) -> None:
    code = """
with open("/mnt/data/a.txt", "w") as f:
    f.write("written by the code")
print("waiting", flush=True)
while not __import__("os").path.exists("/mnt/data/b.txt"):
    __import__("time").sleep(0.01)
"""
    result: dict[str, object] = {}

    def execute() -> None:
        with http.stream("POST", f"/v1/containers/{container}/execute",
                         json={"code": code, "stream": True, "timeout": 120}) as stream:
            for line in stream.iter_lines():
                if "waiting" in line and "uploaded" not in result:
                    result["uploaded"] = sdk.containers.files.create(container, file=("b.txt", b"uploaded")).path
                if line.startswith("data:") and '"container.execution"' in line:
                    result["done"] = line
    thread = threading.Thread(target=execute)
    thread.start()
    thread.join(timeout=300)
    assert result["uploaded"] == "/mnt/data/b.txt"
    assert '"/mnt/data/a.txt"' in str(result["done"])
    paths = {f.path: f.source for f in sdk.containers.files.list(container)}
    assert paths == {"/mnt/data/a.txt": "assistant", "/mnt/data/b.txt": "user"}
