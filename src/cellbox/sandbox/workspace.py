"""A container's /mnt/data as seen from the host: safe reads and writes, and what changed.

Code inside the sandbox owns this directory and may plant symlinks, FIFOs or hard links in it. Every
host-side access walks the path one component at a time with O_NOFOLLOW under a directory descriptor,
so nothing here ever follows a link out of the workspace or blocks on a FIFO.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from cellbox.errors import InvalidInput, NotFound
from cellbox.sandbox.events import ChangedFile

MOUNT_POINT = "/mnt/data"
# /mnt/data/.cellbox is Cellbox's own (the packages pip installs): never scanned, never a container file.
RESERVED = ".cellbox"
# What one scan may cost the server, however the tenant shapes its workspace (see README, Isolation).
MAX_SCAN_ENTRIES = 20_000  # files and directories seen
MAX_SCAN_DEPTH = 32  # directory levels: also the most descriptors a scan holds at once
MAX_SCAN_SECONDS = 5.0
MAX_FILES_PER_EXECUTION = 1_000  # changed files one execution registers as container files
MAX_PATH_BYTES = 1_024
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MAX_ADOPT_DEPTH = 256  # directory levels, one descriptor each, when a workspace changes owner
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    inode: int


Snapshot = dict[str, FileState]


@dataclass(frozen=True)
class Scan:
    """What a scan saw; ``limit`` says which bound stopped it early (None: it saw everything)."""

    files: Snapshot
    limit: str | None = None


@dataclass(frozen=True)
class Diff:
    """An execution's effect on the workspace, ready to register; ``notes`` say what was left out and why."""

    changed: list[ChangedFile]
    deleted: list[str]
    notes: list[str]


def relative_path(path: str) -> PurePosixPath:
    """'/mnt/data/a/b.csv', 'a/b.csv' -> 'a/b.csv'; anything that could leave the workspace is refused.

    Built from a plain split on '/', never from pathlib's parsing: POSIX keeps a leading '//' as a root of its own.
    """
    if not path or "\x00" in path:
        raise InvalidInput("file path is empty or contains a NUL byte", "path")
    if path == MOUNT_POINT or path.startswith(MOUNT_POINT + "/"):
        path = path[len(MOUNT_POINT):]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise InvalidInput(f"file path {path!r} must name a file inside {MOUNT_POINT}", "path")
    if parts[0] == RESERVED:
        raise InvalidInput(f"{MOUNT_POINT}/{RESERVED} is reserved for the packages pip installs", "path")
    return PurePosixPath(*parts)


def sandbox_path(relative: PurePosixPath | str) -> str:
    return f"{MOUNT_POINT}/{relative}"


def safe_filename(name: str) -> str:
    """An uploaded file's name reduced to a harmless basename."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '<>:"|?*').strip().lstrip(".")
    return base.encode()[:200].decode("utf-8", "ignore") or "upload"  # a Linux name is at most 255 bytes


class Workspace:
    """The host directory bind-mounted at /mnt/data in one container."""

    def __init__(self, root: Path, uid: int, gid: int) -> None:
        self.root = root
        self.uid = uid
        self.gid = gid

    def create(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(self.root, self.uid, self.gid)

    def destroy(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def adopt(self) -> None:
        """Give a kept workspace and everything in it to this uid and gid (it was kept under another one).

        The tenant's code is not running, but it may have planted symlinks: the walk goes by directory descriptor
        with O_NOFOLLOW and changes links themselves, never their targets. The root is changed last, so a walk cut
        short (a crash) is done again on the next start.
        """
        try:
            owner = os.lstat(self.root)
        except FileNotFoundError:
            self.create()
            return
        if (owner.st_uid, owner.st_gid) == (self.uid, self.gid):
            return
        stack: list[tuple[int, Iterator[str]]] = []  # one descriptor per level, depth first
        try:
            self._enter(stack, os.open(self.root, _DIR_FLAGS), owner.st_dev)
            while stack:
                fd, subdirectories = stack[-1]
                name = next(subdirectories, None)
                if name is None:
                    os.close(stack.pop()[0])
                elif len(stack) >= MAX_ADOPT_DEPTH:
                    raise OSError(errno.ELOOP, f"directories nested deeper than {MAX_ADOPT_DEPTH} levels")
                else:
                    self._enter(stack, os.open(name, _DIR_FLAGS, dir_fd=fd), owner.st_dev)
        finally:
            for fd, _ in stack:
                os.close(fd)
        os.chown(self.root, self.uid, self.gid, follow_symlinks=False)

    def _enter(self, stack: list[tuple[int, Iterator[str]]], fd: int, device: int) -> None:
        """Push a directory (so it is closed however the walk ends), then change the owner of its entries."""
        stack.append((fd, iter(())))
        stack[-1] = (fd, iter(self._chown_entries(fd, device)))

    def _chown_entries(self, fd: int, device: int) -> list[str]:
        """Change the owner of every entry of a directory (not its targets); return its subdirectories."""
        subdirectories = []
        for entry in list(os.scandir(fd)):
            info = entry.stat(follow_symlinks=False)
            if info.st_dev != device:
                continue
            os.chown(entry.name, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                subdirectories.append(entry.name)
        return subdirectories

    # --- safe access ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _parent_fd(self, relative: PurePosixPath, create: bool = False) -> Iterator[int]:
        if relative.is_absolute() or any("/" in part or part == ".." for part in relative.parts):
            raise InvalidInput(f"file path {relative} must stay inside {MOUNT_POINT}", "path")
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in relative.parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                        os.chown(part, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except (FileNotFoundError, NotADirectoryError, OSError) as exc:
                    raise NotFound(f"no such file: {sandbox_path(relative)}") from exc
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes:
        with self.open(path) as f:
            return f.read()

    def open(self, path: str) -> BinaryIO:
        """Open a regular file for reading; links, FIFOs and devices are refused as not found."""
        relative = relative_path(path)
        with self._parent_fd(relative) as parent:
            try:
                fd = os.open(relative.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=parent)
            except OSError as exc:
                raise NotFound(f"no such file: {sandbox_path(relative)}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotFound(f"no such file: {sandbox_path(relative)} (not a regular file)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def write(self, path: str, data: bytes | BinaryIO) -> ChangedFile:
        """Atomically create or replace a file (a planted symlink is replaced, never followed)."""
        relative = relative_path(path)
        with self._parent_fd(relative, create=True) as parent:
            temp = f".cellbox-{secrets.token_hex(8)}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    if isinstance(data, bytes | bytearray):
                        f.write(data)
                    else:
                        shutil.copyfileobj(data, f, 1 << 20)
                    f.flush()
                    os.fsync(f.fileno())
                    size = f.tell()
                os.chown(temp, self.uid, self.gid, dir_fd=parent, follow_symlinks=False)
                os.rename(temp, relative.name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException as exc:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=parent)
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise InvalidInput(f"the workspace is full: {relative.name} does not fit", "file") from exc
                if isinstance(exc, IsADirectoryError):
                    raise InvalidInput(f"{sandbox_path(relative)} is a directory", "path") from exc
                raise
        return ChangedFile(sandbox_path(relative), size)

    def delete(self, path: str) -> None:
        relative = relative_path(path)
        with self._parent_fd(relative) as parent:
            try:
                os.unlink(relative.name, dir_fd=parent)
            except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
                raise NotFound(f"no such file: {sandbox_path(relative)}") from exc

    # --- what is there, what changed -----------------------------------------------------------

    def scan(self, entries: int | None = None, seconds: float | None = None) -> Scan:
        """Regular files under the workspace, keyed by relative path, within the scan limits (or tighter ones:
        ``entries`` files and directories seen, ``seconds`` spent).

        Walks depth first by directory descriptor with O_NOFOLLOW, holding only the chain of parent descriptors
        (at most ``MAX_SCAN_DEPTH``), so code swapping a directory for a symlink mid-walk cannot make it list host
        files, and a wide or deep tree cannot cost the server more than a few descriptors and bounded time."""
        most = min(entries or MAX_SCAN_ENTRIES, MAX_SCAN_ENTRIES)
        walk = _Walk(min(seconds or MAX_SCAN_SECONDS, MAX_SCAN_SECONDS), most)
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError:
            return Scan({})
        try:
            walk.directory("", fd, 1)
        finally:
            os.close(fd)
        return Scan(walk.found, walk.limit)

    def exists(self, path: str) -> bool:
        """Whether anything (a file, a directory, a link) has this name, without following links."""
        relative = relative_path(path)
        try:
            with self._parent_fd(relative) as parent:
                os.stat(relative.name, dir_fd=parent, follow_symlinks=False)
        except (NotFound, OSError):
            return False
        return True

    def state(self, path: str) -> FileState | None:
        """The state a scan would record for one regular file, or None."""
        relative = relative_path(path)
        try:
            with self._parent_fd(relative) as parent:
                info = os.stat(relative.name, dir_fd=parent, follow_symlinks=False)
        except (NotFound, OSError):
            return None
        return FileState(info.st_size, info.st_mtime_ns, info.st_ino) if stat.S_ISREG(info.st_mode) else None

    @staticmethod
    def diff(before: Scan, after: Scan) -> Diff:
        """What an execution changed, in the form that may leave the sandbox: files with presentable names only,
        at most ``MAX_FILES_PER_EXECUTION`` of them, and no deletions inferred from a scan that stopped early."""
        changed, refused = [], []
        for name, state in sorted(after.files.items()):
            if before.files.get(name) == state:
                continue
            (changed if presentable(name) else refused).append(name)
        notes = []
        if after.limit is not None:
            notes.append(f"The workspace was too large to scan completely ({after.limit}); files beyond that "
                         "were not registered.")
        if refused:
            notes.append(f"{len(refused)} file(s) were not registered because their names are not UTF-8 text without "
                         f"control characters (for example {visible(refused[0])}).")
        if len(changed) > MAX_FILES_PER_EXECUTION:
            notes.append(f"{len(changed) - MAX_FILES_PER_EXECUTION} more changed file(s) were not registered: at most "
                         f"{MAX_FILES_PER_EXECUTION} per execution.")
            changed = changed[:MAX_FILES_PER_EXECUTION]
        deleted = [] if after.limit is not None or before.limit is not None else [
            sandbox_path(name) for name in sorted(before.files) if name not in after.files and presentable(name)]
        return Diff([ChangedFile(sandbox_path(name), after.files[name].size) for name in changed], deleted, notes)

    def usage(self) -> int:
        return sum(state.size for state in self.scan().files.values())


class _Walk:
    """One bounded depth-first walk: what it found, and which limit stopped it, if one did."""

    def __init__(self, seconds: float, entries: int) -> None:
        self.found: Snapshot = {}
        self.limit: str | None = None
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds
        self._most = entries
        self._entries = 0

    def directory(self, prefix: str, fd: int, depth: int) -> None:
        entries = []  # listed whole before descending, so one directory's listing holds no descriptor meanwhile
        try:
            with os.scandir(fd) as listing:
                for entry in listing:
                    if not self._count():
                        break
                    with contextlib.suppress(OSError):
                        entries.append((entry.name, entry.stat(follow_symlinks=False)))
        except OSError:
            return
        for name, info in entries:
            if stat.S_ISREG(info.st_mode):
                self.found[prefix + name] = FileState(info.st_size, info.st_mtime_ns, info.st_ino)
            elif stat.S_ISDIR(info.st_mode) and self.limit is None and (prefix or name != RESERVED):
                self._descend(prefix + name + "/", name, fd, depth + 1)

    def _descend(self, prefix: str, name: str, parent: int, depth: int) -> None:
        if depth > MAX_SCAN_DEPTH:
            self.limit = f"directories nested more than {MAX_SCAN_DEPTH} deep"
            return
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError:
            return  # swapped for a link or removed mid-walk: nothing of it is listed
        try:
            self.directory(prefix, fd, depth)
        finally:
            os.close(fd)

    def _count(self) -> bool:
        """Count one entry; False once a limit is reached."""
        self._entries += 1
        if self._entries > self._most:
            self.limit = f"more than {self._most} files and directories"
        elif self._entries % 16 == 0 and time.monotonic() > self._deadline:
            self.limit = f"more than {self._seconds:g} s to list"
        return self.limit is None


def presentable(name: str) -> bool:
    """A path may leave the sandbox (become a container file's path, reach logs, terminals and markdown) only as
    UTF-8 text without control characters, line separators or bidirectional overrides, and short enough to index."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
        return False
    return len(encoded) <= MAX_PATH_BYTES and not any(_hidden(ch) for ch in name)


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS


def visible(name: str) -> str:
    """A refused name, quoted with every troublesome character escaped, safe to show anywhere."""
    return ascii(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
