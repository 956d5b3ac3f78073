"""`cellbox run` as a user types it: a real process, real sandboxes, exit statuses and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "cellbox.cli"]


def cellbox(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_runs_a_file_and_prints_its_output(tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("print('hello'); 6 * 7")
    done = cellbox("run", str(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n42\n"


def test_reads_code_from_stdin_and_copies_input_files(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    done = cellbox("run", "--file", str(data), "-", stdin="import pandas as pd\nprint(pd.read_csv('data.csv').a.sum())")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "4\n"


def test_exit_status_1_and_traceback_when_the_code_raises() -> None:
    done = cellbox("run", "-", stdin="raise ValueError('bad value')")
    assert done.returncode == 1
    assert "ValueError" in done.stderr
    assert "bad value" in done.stderr


def test_json_document_has_every_output_item() -> None:
    code = "print('a')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nopen('r.txt', 'w').write('x')\n1/0"
    done = cellbox("run", "--json", "-", stdin=code)
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["status"] == "error"
    assert document["isolation"]["mode"] == "strict"
    types = [o["type"] for o in document["outputs"]]
    assert types[0] == "stream"
    assert "display" in types
    assert "error" in types  # figures are flushed after the cell, even after a traceback (as in Jupyter)
    assert document["files"] == [{"path": "/mnt/data/r.txt", "bytes": 1}]


def test_out_copies_files_the_code_wrote(tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = "import os\nos.makedirs('sub', exist_ok=True)\nopen('sub/r.txt', 'w').write('result')"
    done = cellbox("run", "--out", str(out), "-", stdin=code)
    assert done.returncode == 0, done.stderr
    assert (out / "sub" / "r.txt").read_text() == "result"
    assert "/mnt/data/sub/r.txt" in done.stderr


def test_timeout_interrupts_and_exits_1() -> None:
    done = cellbox("run", "--timeout", "1", "-", stdin="import time; time.sleep(60)")
    assert done.returncode == 1
    assert "timed out" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "/nonexistent/script.py"], "cannot read /nonexistent/script.py"),
        (["run", "--timeout", "-1", "-"], "--timeout must be a positive"),
        (["run", "--memory", "lots", "-"], "invalid memory limit"),
        (["run", "--file", "/nonexistent.csv", "-"], "cannot read --file"),
        (["run"], "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    done = cellbox(*args, stdin="print(1)")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_terminal_escapes_from_the_code_are_shown_escaped() -> None:
    code = ("import os\nprint('a\\x1b]0;owned\\x07b')\nopen('\\x1b[2Jname.txt', 'w').write('x')\n"
            "raise ValueError('\\x1b[31mred')")
    done = cellbox("run", "-", stdin=code)
    assert done.returncode == 1
    assert "\x1b" not in done.stdout + done.stderr
    assert done.stdout == "a\\x1b]0;owned\\x07b\n"
    assert "\\x1b[2Jname.txt" in done.stderr  # a name the workspace refuses, said escaped
    assert "ValueError" in done.stderr
    exact = json.loads(cellbox("run", "--json", "-", stdin=code).stdout)
    assert exact["outputs"][0]["text"] == "a\x1b]0;owned\x07b\n"  # --json keeps the exact text
