"""Filesystem isolation: a fresh read-only root; only the workspace and private tmpfs mounts are writable;
nothing of the host (data directory, /root, /sys, other workspaces, the host's /tmp) is reachable.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import container, probe

# Private to each container (tmpfs or the container's own workspace); /dev/shm is POSIX shared memory.
WRITABLE_MOUNTS = {"/mnt/data", "/tmp", "/dev/shm"}


def _python_dirs(settings: Settings) -> list[str]:
    return sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix),
                   os.path.realpath(settings.sandbox_python.parent.parent)})


async def test_system_directories_are_read_only(box: Sandbox, settings: Settings) -> None:
    """Creating anything in the root, /usr, /etc or the Python installation fails with EROFS."""
    targets = ["/", "/usr", "/usr/bin", "/usr/lib", "/etc", "/mnt", *_python_dirs(settings)]
    out = await probe(box, """
        import os
        out["create"] = {d: attempt(lambda d=d: open(os.path.join(d, "cellbox-probe"), "x").close()) for d in targets}
        out["mkdir"] = {d: attempt(os.mkdir, os.path.join(d, "cellbox-probe-dir")) for d in targets}
        out["modify"] = {f: attempt(lambda f=f: open(f, "a").close()) for f in files}
        out["rename"] = attempt(os.rename, "/etc/passwd", "/etc/passwd.bak")
    """, targets=targets, files=["/etc/passwd", "/etc/hosts", "/usr/bin/env", os.path.realpath(sys.executable)])
    assert out["create"] == dict.fromkeys(targets, "EROFS")
    assert out["mkdir"] == dict.fromkeys(targets, "EROFS")
    assert set(out["modify"].values()) <= {"EROFS", "EACCES"}, out["modify"]
    assert out["rename"] == "EROFS"


async def test_only_workspace_and_private_tmpfs_are_writable(box: Sandbox) -> None:
    """Try to create a file in every mounted directory: only /mnt/data, /tmp and /dev/shm accept one."""
    out = await probe(box, """
        import os
        mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
        out["mounts"] = mounts
        out["writable"] = []
        for point in mounts:
            if not os.path.isdir(point):
                continue
            path = os.path.join(point, ".cellbox-write-probe")
            if attempt(lambda: open(path, "x").close()) == "OK":
                out["writable"].append(point)
                os.unlink(path)
    """)
    assert "/mnt/data" in out["mounts"]
    assert set(out["writable"]) == WRITABLE_MOUNTS


async def test_engine_data_dir_and_host_paths_are_not_visible(box: Sandbox, settings: Settings) -> None:
    data_dir = settings.data_dir.resolve()
    paths = [str(data_dir), str(data_dir / "state"), str(data_dir / "workspaces"), str(box.workspace.root),
             "/sys", "/sys/fs/cgroup", "/boot", "/var", "/home", "/srv", "/opt", "/run"]
    out = await probe(box, """
        import os
        out["visible"] = [p for p in paths if os.path.lexists(p)]
        out["state_dir"] = attempt(os.listdir, state_dir)
    """, paths=paths, state_dir=str(data_dir / "state"))
    host_visible = [p for p in paths if os.path.lexists(p)]
    assert str(data_dir) in host_visible  # these exist on the host...
    assert "/sys" in host_visible
    assert out["visible"] == []  # ...but nothing of the host's tree is there inside
    assert out["state_dir"] == "ENOENT"


async def test_root_home_is_not_visible(box: Sandbox, settings: Settings) -> None:
    """/root (keys, tokens, shell history) is absent; at most the path to the Python installation exists."""
    needed = {Path(p).relative_to("/root").parts[0] for p in _python_dirs(settings) if p.startswith("/root/")}
    secret_entries = sorted(set(os.listdir("/root")) - needed)  # .bashrc, .config, ... on this host
    out = await probe(box, """
        import os
        out["listing"] = sorted(os.listdir("/root")) if os.path.isdir("/root") else []
        out["found"] = [name for name in names if os.path.lexists(os.path.join("/root", name))]
    """, names=[*secret_entries, ".ssh", ".bash_history", ".aws", ".netrc"])
    assert out["found"] == []
    assert set(out["listing"]) <= needed


async def test_host_proc_is_not_writable_or_privileged(box: Sandbox) -> None:
    out = await probe(box, """
        out["sysctl"] = attempt(write_file, "/proc/sys/kernel/hostname", b"pwned")
        out["kmsg"] = attempt(lambda: open("/proc/kmsg", "rb").read(1))
        out["mounts_of_host"] = [l.split()[4] for l in open("/proc/self/mountinfo") if " /sys" in l]
    """)
    assert out["sysctl"] in ("EACCES", "EROFS", "EPERM")
    assert out["kmsg"] in ("EACCES", "EPERM")
    assert out["mounts_of_host"] == []


@pytest.fixture
def host_tmp_marker() -> Iterator[Path]:
    """A file in the host's /tmp that no container may see."""
    with tempfile.NamedTemporaryFile(prefix="cellbox-security-", dir=tempfile.gettempdir()) as f:
        yield Path(f.name)


async def test_tmp_is_private_per_container(box: Sandbox, engine: Engine, host_tmp_marker: Path) -> None:
    token = f"cellbox-tmp-{secrets.token_hex(8)}"
    out = await probe(box, """
        import os
        with open("/tmp/" + token, "w") as f:
            f.write("mine")
        out["own"] = os.path.exists("/tmp/" + token)
        out["host_marker"] = os.path.lexists(host_marker)
        out["tmp_listing"] = os.listdir("/tmp")
    """, token=token, host_marker=str(host_tmp_marker))
    assert out["own"] is True
    assert out["host_marker"] is False
    assert host_tmp_marker.name not in out["tmp_listing"]
    assert not (Path(tempfile.gettempdir()) / token).exists()  # it did not land in the host's /tmp
    async with container(engine) as other:
        seen = await probe(other, """
            import os
            out["seen"] = os.path.exists("/tmp/" + token)
            out["tmp_listing"] = os.listdir("/tmp")
        """, token=token)
    assert seen["seen"] is False
    assert token not in seen["tmp_listing"]


FIND = '''
import os


def find(token):
    """Every path under / (but /proc) whose name contains token."""
    found = []
    for top, dirs, files in os.walk("/", onerror=lambda exc: None):
        if top == "/":
            dirs[:] = [d for d in dirs if d != "proc"]
        found += [os.path.join(top, n) for n in dirs + files if token in n]
    return found
'''


async def test_other_containers_workspace_is_unreachable(box: Sandbox, engine: Engine, settings: Settings) -> None:
    """A marker in another container's workspace (and in the data dir) can't be found by any path."""
    token = f"cellbox-marker-{secrets.token_hex(8)}"
    (settings.data_dir / f"{token}-data-dir").write_bytes(b"host")
    try:
        async with container(engine) as other:
            other.upload(f"{token}-uploaded", b"other")
            await probe(other, """
                with open(f"/mnt/data/{token}-written", "w") as f:
                    f.write("other")
            """, token=token)
            assert len(list(other.workspace.root.glob(f"{token}*"))) == 2
            out = await probe(box, """
                with open(f"/mnt/data/{token}-own", "w") as f:  # the search does find what is reachable
                    f.write("mine")
                out["found"] = sorted(find(token))
                out["other_root"] = [p for p in (other_root, other_root + "/" + token + "-uploaded")
                                     if os.path.lexists(p)]
                out["mounts"] = [line for line in open("/proc/self/mountinfo")
                                 if other_id in line or os.path.basename(other_root) in line]
            """, timeout=60, setup=FIND, token=token, other_root=str(other.workspace.root), other_id=other.id)
    finally:
        (settings.data_dir / f"{token}-data-dir").unlink()
    assert out["found"] == [f"/mnt/data/{token}-own"]
    assert out["other_root"] == []
    assert out["mounts"] == []
