"""One server per data directory: an advisory lock held for the server's whole life.

Two servers on one directory would each mount, scan and delete the other's workspaces. The lock is an
``flock`` on ``server.lock``, which the kernel drops however the holder dies, so a crashed server never
blocks a restart. The file names the holder (pid, address) for the message the second server prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

LOCK_NAME = "server.lock"


class DataDirInUse(Exception):
    """Another live process serves this data directory."""


class DataDirLock:
    """Held from :meth:`acquire` until the process exits (or :meth:`release`)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, address: str) -> None:
        """Take the lock or raise DataDirInUse naming its holder; writes nothing before the lock is ours."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise DataDirInUse(f"the data directory {self.path.parent} is in use by another cellbox server "
                               f"({holder}); stop it first, or use --data-dir for a second server") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "address": address}).encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {int(info['pid'])}, serving {str(info['address'])[:200]}"
        return "pid unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
