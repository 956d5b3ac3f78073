"""Resource limits: memory (cgroup), processes (pids cgroup), file size and open files (rlimits), and the
workspace quota. A container that hits one fails on its own; the host and the engine carry on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cellbox.config import Settings, parse_size
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import container, probe

QUOTA = "8m"
MIB = 1 << 20


async def test_memory_bomb_is_killed_and_the_session_restarts_with_its_files(engine: Engine) -> None:
    async with container(engine, memory="256m") as box:
        await probe(box, """
            with open("/mnt/data/before.txt", "w") as f:
                f.write("kept")
            survivor = 1
        """)
        # Up to 4 GiB of touched memory, far above the 256m limit (and harmless to the host if it held).
        result = await box.run("hog = []\nfor _ in range(128):\n    hog.append(b'x' * (32 << 20))\n", timeout=60)
        assert result.status == "out_of_memory", (result.status, result.message)
        assert result.restarted is True
        assert result.error is not None
        assert result.error.ename == "MemoryError"
        assert box.download("before.txt") == b"kept"
        after = await box.run("survivor")  # a fresh session: variables are gone, files are not
        assert after.status == "error"
        assert after.error is not None
        assert after.error.ename == "NameError"
        assert box.stats()["memory_bytes"] < parse_size("256m")
    async with container(engine) as other:  # the engine still serves containers
        assert (await other.run("sum(range(10))")).outputs[-1].data["text/plain"] == "45"


async def test_fork_bomb_is_stopped_by_the_pids_limit(box: Sandbox, settings: Settings) -> None:
    result = await box.run(f"""
import errno, os, signal, time
children, failure = [], None
for _ in range({settings.pids_limit * 2}):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = errno.errorcode[exc.errno]
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
print(failure, len(children))
""", timeout=60)
    if result.status == "ok":
        failure, forked = result.stdout.split()
        assert failure == "EAGAIN"
        assert int(forked) < settings.pids_limit
    else:  # the session may itself have been unable to go on; it must then have been restarted cleanly
        assert result.restarted is True, (result.status, result.message)
    after = await box.run("import subprocess; subprocess.run(['true']).returncode")
    assert after.ok
    assert after.outputs[-1].data["text/plain"] == "0"
    assert box.stats()["pids"] < 16


async def test_open_files_limit(box: Sandbox, settings: Settings) -> None:
    out = await probe(box, """
        import resource
        files = []
        try:
            for _ in range(limit * 2):
                files.append(open("/dev/null", "rb"))
            out["failure"] = None
        except OSError as exc:
            out["failure"] = _errno.errorcode[exc.errno]
        out["opened"] = len(files)
        for f in files:
            f.close()
        out["raise_limit"] = attempt(resource.setrlimit, resource.RLIMIT_NOFILE, (limit * 4, limit * 4))
    """, limit=settings.open_files)
    assert out["failure"] == "EMFILE"
    assert out["opened"] < settings.open_files
    assert out["raise_limit"] != "OK"


@pytest.fixture(scope="module")
async def small_quota_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    async with Engine(Settings(data_dir=tmp_path_factory.mktemp("quota"), disk_quota=QUOTA, timeout=30, preload=[],
                               interrupt_grace=2)) as started:
        yield started


def _workspace_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


WRITE_BIG = '''
def write_big(path, size):
    """Write ``size`` bytes in 1 MiB chunks; return (errno name or None, bytes written)."""
    chunk, written = b"x" * (1 << 20), 0
    try:
        with open(path, "wb") as f:
            while written < size:
                f.write(chunk)
                f.flush()
                written += len(chunk)
    except OSError as exc:
        return _errno.errorcode[exc.errno], written
    return None, written
'''


async def test_file_bigger_than_quota_fails(small_quota_engine: Engine) -> None:
    """In the workspace the volume fills (ENOSPC) or RLIMIT_FSIZE bites (EFBIG); in /tmp it is the rlimit."""
    quota = parse_size(QUOTA)
    async with container(small_quota_engine) as box:
        out = await probe(box, """
            import resource
            out["workspace"] = write_big("/mnt/data/big.bin", 2 * quota)
            out["tmp"] = write_big("/tmp/big.bin", 2 * quota)
            out["raise_limit"] = attempt(resource.setrlimit, resource.RLIMIT_FSIZE, (4 * quota, 4 * quota))
        """, setup=WRITE_BIG, quota=quota)
        assert out["workspace"][0] in ("EFBIG", "ENOSPC")
        assert (box.workspace.root / "big.bin").stat().st_size <= quota
        assert out["tmp"] == ["EFBIG", quota]  # /tmp (512m) has room: the file-size limit stops it
        assert out["raise_limit"] == "ValueError"  # raising a hard limit needs a capability it lacks


async def test_workspace_total_is_bounded_by_quota(small_quota_engine: Engine) -> None:
    """Many files each below the quota must not add up to more than the quota ("workspace size limit")."""
    quota = parse_size(QUOTA)
    async with container(small_quota_engine) as box:
        out = await probe(box, """
            chunk = b"x" * (1 << 20)
            out["failure"] = None
            for i in range(4):  # 4 files of 3/4 of the quota: 3x the quota in total
                try:
                    with open(f"/mnt/data/part{i}.bin", "wb") as f:
                        for _ in range(quota * 3 // 4 // len(chunk)):
                            f.write(chunk)
                except OSError as exc:
                    out["failure"] = _errno.errorcode[exc.errno]
                    break
        """, quota=quota)
        used = _workspace_bytes(box.workspace.root)
    assert used <= quota, f"the workspace holds {used / MIB:g} MiB with a {QUOTA} quota"
    assert out["failure"] in ("EFBIG", "ENOSPC", "EDQUOT")
