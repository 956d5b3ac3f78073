"""Workspace volumes: every workspace is a small ext4 filesystem of its own (a sparse image file, loop-mounted),
so the disk quota is the filesystem's size and a full workspace fails writes with ENOSPC, never the host disk.

Formatting and mounting take ~20 ms, so a few volumes are kept ready and handed out instantly. A volume that
was handed out carries a ``.claimed`` marker beside its image; unclaimed ones left by a crash are discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from cellbox.errors import SandboxUnavailable

BYTES_PER_INODE = 16 * 1024  # 131,072 files in 2 GiB; inode tables are lazily initialised, so free
_MOUNT_OPTIONS = "loop,nosuid,nodev,noinit_itable"


async def _run(*argv: str) -> None:
    """Run mkfs, mount or umount from a thread with :mod:`subprocess`, which starts it with vfork. The event
    loop's own subprocesses (uvloop's) fork the whole server: its page tables are copied for every call, ~30 ms
    for a server of a few hundred MiB, which made a burst of creates queue behind their volumes."""
    done = await asyncio.to_thread(subprocess.run, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv[:2])} failed: {done.stdout.decode(errors='replace').strip()}")


def _mounted_under(directory: Path) -> list[Path]:
    prefix = str(directory) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [Path(p) for p in points if p.startswith(prefix)]


class Volumes:
    """Creates, hands out and removes workspace volumes under one directory."""

    def __init__(self, directory: Path, size_bytes: int, spare: int = 2) -> None:
        self.directory = directory
        self.size_bytes = size_bytes
        self._spare = spare
        self._ready: list[Path] = []
        self._refill: asyncio.Task[None] | None = None
        self._mounted: set[Path] = set()
        self._closing = False

    async def start(self) -> None:
        """Check this host can make volumes and format the first spares."""
        missing = [tool for tool in ("mkfs.ext4", "mount", "umount") if shutil.which(tool) is None]
        if missing or not os.path.exists("/dev/loop-control"):
            what = f"the {', '.join(missing)} command(s)" if missing else "loop devices (/dev/loop-control)"
            raise SandboxUnavailable(
                f"workspace disk quotas need {what}: install e2fsprogs and util-linux and allow loop devices, "
                "or set CELLBOX_SANDBOX_DISK_QUOTA=off for workspaces without a size limit (weaker)."
            )
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        await self._discard_stale_spares()
        try:
            self._ready.append(await self._make())
        except OSError as exc:
            raise SandboxUnavailable(f"cannot create a workspace volume: {exc}") from exc
        self._schedule_refill()

    async def _discard_stale_spares(self) -> None:
        """Spares are never handed out across restarts; a crash may have left some behind."""
        for image in self.directory.glob("vol-*.img"):
            if not image.with_suffix(".claimed").exists():
                await self.release(image.with_suffix(""))

    async def _make(self) -> Path:
        name = "vol-" + secrets.token_hex(12)
        image = self.directory / f"{name}.img"
        mount_point = self.directory / name
        inodes = max(4096, self.size_bytes // BYTES_PER_INODE)
        with open(image, "wb") as f:
            f.truncate(self.size_bytes)
        try:
            await _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-N", str(inodes),
                       "-E", "lazy_itable_init=1,nodiscard,root_owner=0:0", str(image))
            mount_point.mkdir(mode=0o700)
            await _run("mount", "-o", _MOUNT_OPTIONS, str(image), str(mount_point))
        except OSError:
            image.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                mount_point.rmdir()
            raise
        self._mounted.add(mount_point)
        os.rmdir(mount_point / "lost+found")
        os.chmod(mount_point, 0o700)
        return mount_point

    def _schedule_refill(self) -> None:
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._fill(), name="cellbox-volumes")

    def filling(self) -> asyncio.Task[None] | None:
        """The refill under way, if any."""
        return self._refill if self._refill is not None and not self._refill.done() else None

    async def _fill(self) -> None:
        await asyncio.sleep(0.05)  # after the request that took a volume, not during it
        while len(self._ready) < self._spare and not self._closing:
            self._ready.append(await self._make())

    async def take(self) -> Path:
        """A fresh, empty, mounted volume, owned by root until the engine gives it to its container's uid
        (unclaimed until :meth:`claim`)."""
        mount_point = self._ready.pop() if self._ready else await self._make()
        self._schedule_refill()
        return mount_point

    @staticmethod
    def claim(mount_point: Path) -> None:
        """Mark a volume as holding a container's files: it now survives restarts until released."""
        mount_point.with_suffix(".claimed").touch()

    def claimed(self) -> list[Path]:
        return sorted(p.with_suffix("") for p in self.directory.glob("vol-*.claimed"))

    async def attach(self, mount_point: Path) -> Path:
        """Mount a volume handed out before a restart (it may still be mounted after a crash)."""
        image = mount_point.with_suffix(".img")
        if mount_point.parent != self.directory or not image.exists():
            raise FileNotFoundError(f"no workspace volume at {mount_point}")
        if mount_point not in _mounted_under(self.directory):
            mount_point.mkdir(mode=0o700, exist_ok=True)
            await _run("mount", "-o", _MOUNT_OPTIONS, str(image), str(mount_point))
        self._mounted.add(mount_point)
        return mount_point

    async def detach(self, mount_point: Path) -> None:
        """Unmount a volume but keep its image (and the files in it) for the next start."""
        if mount_point in _mounted_under(self.directory):
            await _run("umount", "-l", str(mount_point))
        self._mounted.discard(mount_point)

    async def release(self, mount_point: Path) -> None:
        """Unmount and delete a volume and everything in it."""
        if mount_point in self._mounted or mount_point in _mounted_under(self.directory):
            await _run("umount", "-l", str(mount_point))
        self._mounted.discard(mount_point)
        mount_point.with_suffix(".img").unlink(missing_ok=True)
        mount_point.with_suffix(".claimed").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mount_point.rmdir()

    async def aclose(self) -> None:
        """Delete the spares; volumes still in use at this point are unmounted but kept."""
        self._closing = True
        if self._refill is not None:  # let a format or mount in flight finish, or it would stay mounted
            with contextlib.suppress(OSError):
                await self._refill
        for spare in self._ready:
            with contextlib.suppress(OSError):
                await self.release(spare)
        self._ready.clear()
        for mount_point in [*self._mounted]:
            with contextlib.suppress(OSError):
                await self.detach(mount_point)

