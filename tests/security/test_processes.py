"""Process isolation: a container sees and can signal only its own processes (own pid namespace)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from cellbox.sandbox.engine import Engine
from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import container, host_pids_alive, probe

LIST_PROCESSES = '''
import os


def processes():
    """pid -> command line of every process this container can see."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    found[int(name)] = f.read().replace(b"\\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return found
'''

KILL_EVERYTHING = '''
import os
import signal
out["kill_targets"] = {str(pid): attempt(os.kill, pid, signal.SIGKILL) for pid in targets}
out["kill_all"] = attempt(os.kill, -1, signal.SIGKILL)
'''


@pytest.fixture
def host_sleeper(box: Sandbox) -> Iterator[subprocess.Popen[bytes]]:
    """A host process running as the very uid the container's code runs as on the host."""
    process = subprocess.Popen(["sleep", "300"], user=box.uid, group=box.workspace.gid,
                               extra_groups=[], stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


async def test_proc_lists_only_the_containers_processes(box: Sandbox) -> None:
    out = await probe(box, """
        out["processes"] = processes()
    """, setup=LIST_PROCESSES)
    pids = {int(pid) for pid in out["processes"]}
    assert pids == {1, 2}  # the container's init and the Python session
    assert not any("pytest" in cmdline for cmdline in out["processes"].values())
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:  # the host's /proc would show this process
        assert b"pytest" in f.read()


async def test_host_processes_cannot_be_signalled(box: Sandbox, host_sleeper: subprocess.Popen[bytes]) -> None:
    """Not even a host process with the same host uid as the container's code, nor the test process."""
    targets = [host_sleeper.pid, os.getpid(), os.getppid()]
    out = await probe(box, KILL_EVERYTHING, targets=targets)
    assert out["kill_targets"] == {str(pid): "ESRCH" for pid in targets}
    assert host_pids_alive(host_sleeper.pid, os.getpid())
    assert host_sleeper.poll() is None
    assert (await box.run("1 + 1")).ok  # kill(-1) inside spared the session


async def test_other_container_processes_are_invisible_and_unkillable(box: Sandbox, engine: Engine) -> None:
    token = f"{secrets.randbelow(10**6) + 1000}.{secrets.randbelow(1000)}"  # `sleep 123456.789`
    async with container(engine) as other:
        await probe(other, """
            import subprocess
            sleeper = subprocess.Popen(["sleep", token])
            out["pid"] = sleeper.pid
        """, token=token)
        assert _host_pids_with_cmdline(f"sleep {token}"), "the other container's process is not running"
        out = await probe(box, 'out["matching"] = [pid for pid, cmd in processes().items() if token in cmd]\n'
                          + KILL_EVERYTHING, setup=LIST_PROCESSES, token=token, targets=[other.init_pid])
        assert out["matching"] == []
        assert out["kill_targets"] == {str(other.init_pid): "ESRCH"}
        survivor = await probe(other, """
            out["sleeper_running"] = sleeper.poll() is None
            sleeper.kill()
            sleeper.wait()
        """)
        assert survivor["sleeper_running"] is True
        assert other.restarts == 0


def _host_pids_with_cmdline(text: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if text.encode() in f.read().replace(b"\0", b" "):
                        found.append(int(name))
            except OSError:
                continue
    return found
