"""Secrets of the server never reach a container: not its environment, not its open descriptors."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import container, probe

SECRET_NAME = "CELLBOX_TEST_SECRET"


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """A secret in the server's environment, as an API key would be."""
    value = f"s3cr3t-{secrets.token_hex(16)}"
    monkeypatch.setenv(SECRET_NAME, value)
    return value


@pytest.fixture
async def secret_engine(secret: str, tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine started while the secret is in the environment (the session engine predates it)."""
    async with Engine(Settings(data_dir=tmp_path, timeout=30, preload=[])) as started:
        yield started


async def test_server_environment_does_not_reach_the_container(secret_engine: Engine, secret: str) -> None:
    # The code carries only a digest of the value, so the value can't be found because the code contains it.
    digest = hashlib.sha256(secret.encode()).hexdigest()
    async with container(secret_engine) as box:
        out = await probe(box, """
            import hashlib, os, re

            def holds(blob):
                return any(hashlib.sha256(v).hexdigest() == digest for v in re.findall(rb"s3cr3t-[0-9a-f]+", blob))

            out["os_environ_name"] = name in os.environ
            out["os_environ_value"] = holds("\\0".join(os.environ.values()).encode())
            out["environ_files"] = {}
            for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
                try:
                    blob = open(f"/proc/{pid}/environ", "rb").read()
                except OSError as exc:
                    out["environ_files"][pid] = type(exc).__name__
                    continue
                out["environ_files"][pid] = {"name": name.encode() in blob, "value": holds(blob)}
            out["cmdline"] = holds(open("/proc/self/cmdline", "rb").read())
        """, name=SECRET_NAME, digest=digest)
    assert out["os_environ_name"] is False
    assert out["os_environ_value"] is False
    environ = out["environ_files"]
    assert environ.pop("1") == "PermissionError"  # the init is not dumpable: its memory is not the session's
    assert {"2", "self"} <= environ.keys()
    assert all(v == {"name": False, "value": False} for v in environ.values()), environ
    assert out["cmdline"] is False


async def test_no_host_descriptors_leak_into_the_container(box: Sandbox) -> None:
    """Every descriptor the container's processes hold is a pipe, socket, device or a file it can see itself.

    A leaked descriptor of a host directory (the data dir, a workspace) would let code openat() its way out.
    The session's own are checked from inside; the init's (not dumpable, so hidden from the session) from the host.
    """
    fd_dir = f"/proc/{box.init_pid}/fd"
    init_kinds = {stat.S_IFMT(os.stat(f"{fd_dir}/{fd}").st_mode) for fd in os.listdir(fd_dir)}
    assert init_kinds <= {stat.S_IFCHR, stat.S_IFIFO, stat.S_IFSOCK}, init_kinds  # /dev/null, pipes, sockets
    out = await probe(box, """
        import os, stat
        out["leaks"], out["count"] = [], 0
        out["init_fds"] = attempt(os.listdir, "/proc/1/fd")
        for pid in ("self",):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = f"/proc/{pid}/fd/{fd}"
                try:
                    target, info = os.readlink(link), os.stat(link)
                except OSError:
                    continue  # the descriptor listdir itself used
                out["count"] += 1
                if stat.S_ISDIR(info.st_mode):
                    out["leaks"].append([pid, fd, target, "directory"])
                elif stat.S_ISREG(info.st_mode):
                    try:
                        seen = os.stat(target)
                    except OSError:
                        seen = None
                    if seen is None or (seen.st_dev, seen.st_ino) != (info.st_dev, info.st_ino):
                        out["leaks"].append([pid, fd, target, "file not visible inside"])
    """)
    assert out["init_fds"] == "EACCES"
    assert out["count"] >= 3
    assert out["leaks"] == []
