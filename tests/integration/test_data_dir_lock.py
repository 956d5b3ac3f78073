"""One server per data directory: a second `cellbox serve` refuses at once and leaves the first untouched; a crashed
server's lock does not block a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.integration.api.server import Server, client, free_port


def _second_serve(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellbox.cli", "serve", "--port", str(free_port()),
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CELLBOX_PRELOAD": "[]"})


def test_a_second_server_on_the_same_data_directory_refuses_and_the_first_is_unaffected(tmp_path: Path) -> None:
    first = Server(tmp_path / "data").start()
    try:
        with client(first) as sdk:
            box = sdk.containers.create(name="kept")
            uploaded = sdk.containers.files.create(box.id, file=("a.txt", b"before"))
            second = _second_serve(first.data_dir)
            assert second.returncode == 4
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert lines[0] == (f"cellbox: the data directory {first.data_dir} is in use by another cellbox server "
                                f"(pid {first.process.pid}, serving http://127.0.0.1:{first.port}); stop it first, "
                                "or use --data-dir for a second server")
            # The first server still reads, registers and deletes.
            assert sdk.containers.files.content.retrieve(uploaded.id, container_id=box.id).read() == b"before"
            run = sdk.post(f"/containers/{box.id}/execute", body={"code": "open('b.txt', 'w').write('x')"},
                           cast_to=object)
            assert [f["path"] for f in run["files"]] == ["/mnt/data/b.txt"]
            sdk.containers.delete(box.id)
    finally:
        first.stop()


def test_a_crashed_servers_lock_does_not_block_a_restart(tmp_path: Path) -> None:
    first = Server(tmp_path / "data").start()
    first.stop(signal.SIGKILL)
    again = Server(tmp_path / "data").start()  # raises if it refused to start
    again.stop()
