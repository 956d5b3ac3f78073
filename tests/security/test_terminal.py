"""The operator's terminal: a server started in the foreground of a terminal gives its containers none of it.

The engine runs in a child process whose controlling terminal is a pseudo-terminal this test holds, as
`cellbox serve` in an operator's shell would. Code in a container then tries to write to the terminal and to
read from it; the test reads the other side and checks nothing arrived, and checks from the host that no
container process shares the server's session or has a controlling terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

MARK = "CELLBOX-TTY-PROBE"

SERVER = r'''
import asyncio, fcntl, json, os, sys, termios
from pathlib import Path

fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # this pty is now our controlling terminal, as a login shell's would be
from cellbox.config import Settings
from cellbox.sandbox.engine import Engine

ATTACK = """
import errno, os, json
out = {}
for path in ("/dev/tty", "/dev/console", "/dev/tty0", "/dev/pts/0"):
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        out[path] = errno.errorcode[exc.errno]
        continue
    try:
        os.write(fd, b"MARK written from a container\\n")
        out[path] = "OPENED"
    finally:
        os.close(fd)
print(json.dumps(out))
""".replace("MARK", sys.argv[2])


async def main():
    settings = Settings(data_dir=Path(sys.argv[1]), warm_pool=0, preload=[], timeout=60)
    async with Engine(settings) as engine:
        box = await engine.create()
        result = await box.run(ATTACK)
        inside = json.loads(result.stdout)
        kernel = int(open(f"/proc/{box.init_pid}/task/{box.init_pid}/children").read().split()[0])
        host = {}
        for name, pid in (("init", box.init_pid), ("kernel", kernel), ("template", engine._zygote.pid)):
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            host[name] = {"session": int(fields[3]), "tty_nr": int(fields[4])}
        report = {"inside": inside, "host": host, "server_session": os.getsid(0)}
        Path(sys.argv[3]).write_text(json.dumps(report))


asyncio.run(main())
'''


def test_containers_never_reach_the_servers_terminal(tmp_path: Path) -> None:
    master, slave = os.openpty()
    report = tmp_path / "report.json"
    seen = bytearray()

    def drain() -> None:  # keep the terminal readable, like the operator's screen; EOF when the child is gone
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process = subprocess.run([sys.executable, "-c", SERVER, str(tmp_path / "data"), MARK, str(report)],
                                 stdin=slave, stdout=slave, stderr=slave, start_new_session=True, timeout=300)
    finally:
        os.close(slave)
    reader.join(timeout=30)
    os.close(master)
    assert process.returncode == 0, seen.decode(errors="replace")
    result = json.loads(report.read_text())
    assert MARK.encode() not in seen
    inside = result["inside"]
    assert inside["/dev/tty"] == "ENXIO"  # no controlling terminal at all
    assert all(inside[path] == "ENOENT" for path in ("/dev/console", "/dev/tty0", "/dev/pts/0"))
    server = result["server_session"]
    for name, proc in result["host"].items():
        assert proc["session"] != server, name
        assert proc["tty_nr"] == 0, name
