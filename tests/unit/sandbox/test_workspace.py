"""The host's view of /mnt/data: path handling, link/FIFO-safe access, atomic writes, quota, change tracking.

Everything the sandbox can plant (symlinks out of the workspace, symlinked directories, FIFOs, devices) is
planted here by hand, and the promise checked: never follow out, never block, never leave debris.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from cellbox.errors import CellboxError, InvalidInput, NotFound
from cellbox.sandbox import workspace as workspace_module
from cellbox.sandbox.events import ChangedFile
from cellbox.sandbox.workspace import (
    MAX_ADOPT_DEPTH,
    MOUNT_POINT,
    Diff,
    Scan,
    Workspace,
    presentable,
    relative_path,
    safe_filename,
    sandbox_path,
    visible,
)

SECRET = b"host secret\n"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Turn a call that would block forever (e.g. opening a FIFO) into a TimeoutError."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("blocked: the workspace opened something that never answers")

    previous = signal.signal(signal.SIGALRM, expire)
    outer = signal.setitimer(signal.ITIMER_REAL, seconds)  # pytest-timeout's own SIGALRM timer, if armed
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *outer)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory next to the workspace, with a file the sandbox must never reach."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_bytes(SECRET)
    return directory


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "ws", uid=os.getuid(), gid=os.getgid())
    workspace.create()
    return workspace


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


# --- relative_path / sandbox_path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "relative"),
    [
        ("/mnt/data/a.csv", "a.csv"),
        ("/mnt/data/dir/b.csv", "dir/b.csv"),
        ("a/b.csv", "a/b.csv"),
        ("./a//b/./c.txt", "a/b/c.txt"),
        ("/mnt/data//x", "x"),
        ("//x", "x"),
        ("///x", "x"),
        ("/mnt/database/x", "mnt/database/x"),  # only the mount point itself is stripped
        ("...", "..."),
        ("a..b", "a..b"),
    ],
)
def test_relative_path(path: str, relative: str) -> None:
    assert relative_path(path) == PurePosixPath(relative)


@pytest.mark.parametrize(
    "path",
    ["", ".", "/", "/mnt/data", "/mnt/data/", "..", "../x", "a/../../x", "/mnt/data/../x", "/mnt/data/a/../..",
     "a\x00b", "/mnt/data/\x00"],
)
def test_relative_path_refuses_paths_that_name_no_file_inside(path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        relative_path(path)
    assert info.value.param == "path"


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "/mnt/other/x", "/proc/self/environ", "//etc/shadow", "/mnt/data//etc/shadow", "///etc/x",
     "/mnt/data///etc/x", "a//b"],
)
def test_absolute_paths_elsewhere_stay_inside_the_workspace(path: str) -> None:
    relative = relative_path(path)
    assert not relative.is_absolute()
    assert ".." not in relative.parts
    assert sandbox_path(relative).startswith(MOUNT_POINT + "/")


def test_an_absolute_path_outside_is_read_from_inside_the_workspace(ws: Workspace) -> None:
    with pytest.raises(NotFound):
        ws.read("/etc/hostname")  # the host's file exists; the workspace's does not
    ws.write("/etc/hostname", b"inside")
    assert (ws.root / "etc/hostname").read_bytes() == b"inside"
    assert ws.read("/etc/hostname") == b"inside"


def test_double_slash_paths_cannot_reach_host_files(ws: Workspace, outside: Path) -> None:
    """POSIX lets '//' be a root of its own: PurePosixPath('//x').parts == ('//', 'x'), which is absolute,
    and os.open() ignores dir_fd for an absolute component."""
    host_path = str(outside)  # e.g. /tmp/pytest-.../outside
    for path in ("/" + host_path + "/secret.txt", "/mnt/data/" + host_path + "/secret.txt"):
        try:
            leaked = ws.read(path)
        except NotFound:
            leaked = b""
        assert leaked != SECRET
        with contextlib.suppress(NotFound):
            ws.delete(path)
        assert (outside / "secret.txt").read_bytes() == SECRET
        with contextlib.suppress(CellboxError):
            ws.write(path.replace("secret.txt", "planted.txt"), b"x")
        assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_sandbox_path() -> None:
    assert sandbox_path(PurePosixPath("a/b.txt")) == "/mnt/data/a/b.txt"
    assert sandbox_path("c.txt") == "/mnt/data/c.txt"


# --- safe_filename ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.csv", "report.csv"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/data.xlsx", "data.xlsx"),
        ("C:\\Users\\me\\data.xlsx", "data.xlsx"),
        ("..\\..\\evil.py", "evil.py"),
        (".bashrc", "bashrc"),
        ("...hidden", "hidden"),
        ("  spaced.txt  ", "spaced.txt"),
        ("new\nline\r.txt", "newline.txt"),
        ("tab\tbell\x07nul\x00.txt", "tabbellnul.txt"),
        ("esc\x1b[31m.txt", "esc[31m.txt"),
        ("rtl\u202egnp.exe", "rtlgnp.exe"),
        ('a<b>c:d"e|f?g*h.txt', "abcdefgh.txt"),
        ("naïve résumé.pdf", "naïve résumé.pdf"),
        ("", "upload"),
        ("..", "upload"),
        ("/", "upload"),
        ("dir/", "upload"),
        ("\x00\x01", "upload"),
    ],
)
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


@pytest.mark.parametrize("name", ["x" * 1000, "é" * 300, "😀" * 300, "a/" * 50 + "b" * 400])
def test_safe_filename_fits_in_a_linux_file_name(name: str) -> None:
    """NAME_MAX is 255 *bytes*: a longer "safe" name cannot be written to the workspace at all."""
    safe = safe_filename(name)
    assert safe
    assert "/" not in safe
    assert len(safe.encode()) <= 255


def test_safe_filename_results_are_valid_workspace_paths() -> None:
    for name in ["../../x", ".", "a/..", "\x00", "../", "..."]:
        relative = relative_path(safe_filename(name))
        assert len(relative.parts) == 1


# --- reading ------------------------------------------------------------------------------------------


def test_read_and_open_a_regular_file(ws: Workspace) -> None:
    (ws.root / "a.txt").write_bytes(b"hello")
    (ws.root / "d").mkdir()
    (ws.root / "d/b.bin").write_bytes(b"\x00\x01")
    assert ws.read("a.txt") == b"hello"
    assert ws.read("/mnt/data/d/b.bin") == b"\x00\x01"
    with ws.open("/mnt/data/a.txt") as f:
        assert f.read() == b"hello"


def test_read_missing_file_is_not_found(ws: Workspace) -> None:
    with pytest.raises(NotFound, match=r"/mnt/data/nope\.txt"):
        ws.read("nope.txt")
    with pytest.raises(NotFound):
        ws.read("no/such/dir/file.txt")


def test_read_refuses_a_symlink_to_a_file_outside(ws: Workspace, outside: Path) -> None:
    (ws.root / "link").symlink_to(outside / "secret.txt")
    with pytest.raises(NotFound):
        ws.read("link")


def test_read_refuses_a_relative_symlink_escaping_the_workspace(ws: Workspace, outside: Path) -> None:
    (ws.root / "rel").symlink_to("../outside/secret.txt")
    assert (ws.root / "rel").read_bytes() == SECRET  # the link really does lead out
    with pytest.raises(NotFound):
        ws.read("rel")


def test_read_refuses_a_symlink_even_to_a_file_inside(ws: Workspace) -> None:
    (ws.root / "real.txt").write_bytes(b"ok")
    (ws.root / "alias").symlink_to("real.txt")
    with pytest.raises(NotFound):
        ws.read("alias")


def test_read_refuses_a_symlinked_parent_directory(ws: Workspace, outside: Path) -> None:
    (ws.root / "sub").symlink_to(outside)
    with pytest.raises(NotFound):
        ws.read("sub/secret.txt")
    (ws.root / "deep").mkdir()
    (ws.root / "deep/link").symlink_to(outside)
    with pytest.raises(NotFound):
        ws.read("/mnt/data/deep/link/secret.txt")


def test_read_refuses_a_fifo_without_blocking(ws: Workspace) -> None:
    os.mkfifo(ws.root / "fifo")
    with deadline(5), pytest.raises(NotFound, match="not a regular file"):
        ws.read("fifo")
    with deadline(5), pytest.raises(NotFound):
        ws.open("fifo")


def test_read_refuses_a_device(ws: Workspace) -> None:
    try:
        os.mknod(ws.root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot create device nodes here")
    with deadline(5), pytest.raises(NotFound):
        ws.read("null")


def test_read_refuses_a_directory(ws: Workspace) -> None:
    (ws.root / "dir").mkdir()
    with pytest.raises(NotFound):
        ws.read("dir")
    with pytest.raises(NotFound):
        ws.read("/mnt/data/dir/")


def test_open_leaks_no_descriptor_when_refusing(ws: Workspace) -> None:
    (ws.root / "dir").mkdir()
    os.mkfifo(ws.root / "fifo")
    before = len(os.listdir("/proc/self/fd"))
    for path in ("dir", "fifo", "missing", "dir/missing"):
        with deadline(5), pytest.raises(NotFound):
            ws.open(path)
    assert len(os.listdir("/proc/self/fd")) == before


# --- writing ------------------------------------------------------------------------------------------


def test_write_creates_the_file_and_its_parents(ws: Workspace) -> None:
    changed = ws.write("/mnt/data/a/b/c.txt", b"data")
    assert changed == ChangedFile("/mnt/data/a/b/c.txt", 4)
    assert (ws.root / "a/b/c.txt").read_bytes() == b"data"
    assert (ws.root / "a").is_dir()
    assert (ws.root / "a/b").is_dir()
    st = (ws.root / "a/b/c.txt").stat()
    assert (st.st_uid, st.st_gid) == (ws.uid, ws.gid)
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert temp_files(ws.root) == []


def test_write_replaces_an_existing_file(ws: Workspace) -> None:
    ws.write("f.txt", b"old contents")
    ws.write("f.txt", b"new")
    assert ws.read("f.txt") == b"new"
    assert sorted(p.name for p in ws.root.iterdir()) == ["f.txt"]


def test_write_replaces_a_planted_symlink_instead_of_following_it(ws: Workspace, outside: Path) -> None:
    (ws.root / "link").symlink_to(outside / "secret.txt")
    ws.write("link", b"mine")
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert not (ws.root / "link").is_symlink()
    assert (ws.root / "link").read_bytes() == b"mine"


def test_write_replaces_a_dangling_symlink_instead_of_creating_its_target(ws: Workspace, outside: Path) -> None:
    (ws.root / "dangling").symlink_to(outside / "created-by-sandbox.txt")
    ws.write("dangling", b"mine")
    assert not (outside / "created-by-sandbox.txt").exists()
    assert (ws.root / "dangling").read_bytes() == b"mine"


def test_write_replaces_a_planted_fifo_without_blocking(ws: Workspace) -> None:
    os.mkfifo(ws.root / "fifo")
    with deadline(5):
        ws.write("fifo", b"data")
    assert stat.S_ISREG((ws.root / "fifo").lstat().st_mode)
    assert ws.read("fifo") == b"data"


def test_write_refuses_a_symlinked_parent_directory(ws: Workspace, outside: Path) -> None:
    (ws.root / "sub").symlink_to(outside)
    with pytest.raises(NotFound):
        ws.write("sub/evil.txt", b"x")
    with pytest.raises(NotFound):
        ws.write("sub/secret.txt", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_write_refuses_a_file_used_as_a_directory(ws: Workspace) -> None:
    (ws.root / "plain").write_bytes(b"x")
    with pytest.raises(NotFound):
        ws.write("plain/inner.txt", b"y")
    assert (ws.root / "plain").read_bytes() == b"x"


def test_a_failed_write_leaves_no_temp_file_and_keeps_the_old_contents(ws: Workspace,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ws.write("d/f.txt", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        ws.write("d/f.txt", b"new")
    monkeypatch.undo()
    assert ws.read("d/f.txt") == b"old"
    assert temp_files(ws.root) == []


def test_writing_over_a_directory_fails_cleanly(ws: Workspace) -> None:
    (ws.root / "dir").mkdir()
    (ws.root / "dir/keep.txt").write_bytes(b"keep")
    with pytest.raises((OSError, CellboxError)):
        ws.write("dir", b"x")
    assert (ws.root / "dir/keep.txt").read_bytes() == b"keep"
    assert temp_files(ws.root) == []


def test_write_accepts_any_legal_file_name(ws: Workspace) -> None:
    """Names up to NAME_MAX (255 bytes) are legal; the temp name must not push the write over that."""
    name = "n" * 250
    ws.write(name, b"x")
    assert ws.read(name) == b"x"
    assert temp_files(ws.root) == []


def test_write_refuses_invalid_paths(ws: Workspace) -> None:
    for path in ("", "../x", "/mnt/data/../x", "a\x00b", "/mnt/data"):
        with pytest.raises(InvalidInput):
            ws.write(path, b"x")
    assert list(ws.root.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_workspace_is_invalid_input_and_leaves_no_debris(ws: Workspace, monkeypatch: pytest.MonkeyPatch,
                                                                code: int) -> None:
    """The quota is the size of the workspace's own filesystem: running out must read as a caller error."""
    ws.write("f.txt", b"old")

    def full(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InvalidInput, match="full") as info:
        ws.write("f.txt", b"new contents")
    monkeypatch.undo()
    assert info.value.param == "file"
    assert ws.read("f.txt") == b"old"
    assert temp_files(ws.root) == []


# --- deleting -----------------------------------------------------------------------------------------


def test_delete_removes_a_file(ws: Workspace) -> None:
    ws.write("d/f.txt", b"x")
    ws.delete("/mnt/data/d/f.txt")
    assert not (ws.root / "d/f.txt").exists()
    assert (ws.root / "d").is_dir()


def test_delete_refuses_missing_files_and_directories(ws: Workspace) -> None:
    (ws.root / "dir").mkdir()
    with pytest.raises(NotFound):
        ws.delete("missing.txt")
    with pytest.raises(NotFound):
        ws.delete("dir")
    with pytest.raises(NotFound):
        ws.delete("no/such/file")
    assert (ws.root / "dir").is_dir()


def test_delete_removes_a_symlink_not_its_target(ws: Workspace, outside: Path) -> None:
    (ws.root / "link").symlink_to(outside / "secret.txt")
    ws.delete("link")
    assert not os.path.lexists(ws.root / "link")
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_delete_refuses_a_symlinked_parent_directory(ws: Workspace, outside: Path) -> None:
    (ws.root / "sub").symlink_to(outside)
    with pytest.raises(NotFound):
        ws.delete("sub/secret.txt")
    assert (outside / "secret.txt").read_bytes() == SECRET


# --- scan, usage, changes -----------------------------------------------------------------------------


def test_scan_lists_regular_files_only(ws: Workspace, outside: Path) -> None:
    (ws.root / "a.txt").write_bytes(b"12345")
    (ws.root / "d/e").mkdir(parents=True)
    (ws.root / "d/e/f.txt").write_bytes(b"123")
    (ws.root / "empty").mkdir()
    (ws.root / "file-link").symlink_to(outside / "secret.txt")
    (ws.root / "dir-link").symlink_to(outside)
    (ws.root / "d/loop").symlink_to("..")
    os.mkfifo(ws.root / "d/fifo")
    with deadline(5):
        scan = ws.scan()
    assert scan.limit is None
    snapshot = scan.files
    assert sorted(snapshot) == ["a.txt", "d/e/f.txt"]
    assert snapshot["a.txt"].size == 5
    assert snapshot["d/e/f.txt"].size == 3
    assert snapshot["a.txt"].inode == (ws.root / "a.txt").stat().st_ino
    assert ws.usage() == 8


def test_the_reserved_directory_is_never_scanned_nor_addressed(ws: Workspace) -> None:
    (ws.root / ".cellbox/python/lib").mkdir(parents=True)
    (ws.root / ".cellbox/python/lib/pkg.py").write_bytes(b"x")
    (ws.root / "d/.cellbox").mkdir(parents=True)
    (ws.root / "d/.cellbox/mine.txt").write_bytes(b"y")  # only the top-level one is reserved
    (ws.root / ".cellbox-notes.txt").write_bytes(b"z")
    assert sorted(ws.scan().files) == [".cellbox-notes.txt", "d/.cellbox/mine.txt"]
    for path in ("/mnt/data/.cellbox/python/lib/pkg.py", ".cellbox/x", "./.cellbox/x"):
        with pytest.raises(InvalidInput, match="reserved"):
            relative_path(path)


def test_scan_of_a_missing_workspace_is_empty(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "never-created", uid=os.getuid(), gid=os.getgid())
    assert ws.scan() == Scan({})
    assert ws.usage() == 0


def test_changes_report_created_and_modified_files_only(ws: Workspace) -> None:
    ws.write("same.txt", b"unchanged")
    ws.write("edit.txt", b"v1")
    ws.write("touch.txt", b"t")
    ws.write("gone.txt", b"bye")
    os.utime(ws.root / "touch.txt", ns=(1_000_000_000, 1_000_000_000))
    before = ws.scan()

    ws.write("edit.txt", b"version 2")
    ws.write("new/deep.txt", b"new!")
    os.utime(ws.root / "touch.txt", ns=(2_000_000_000, 2_000_000_000))  # same size, new mtime
    ws.delete("gone.txt")
    after = ws.scan()

    assert Workspace.diff(before, after) == Diff([
        ChangedFile("/mnt/data/edit.txt", 9),
        ChangedFile("/mnt/data/new/deep.txt", 4),
        ChangedFile("/mnt/data/touch.txt", 1),
    ], ["/mnt/data/gone.txt"], [])
    assert Workspace.diff(after, after) == Diff([], [], [])
    assert Workspace.diff(after, ws.scan()) == Diff([], [], [])


def test_create_and_destroy(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "a/b/ws", uid=os.getuid(), gid=os.getgid())
    ws.create()
    ws.create()  # idempotent
    assert stat.S_IMODE(ws.root.stat().st_mode) == 0o700
    ws.write("x/y.txt", b"1")
    ws.destroy()
    assert not ws.root.exists()
    ws.destroy()  # idempotent


# --- what a scan may cost, and which names may leave the sandbox --------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_wide_tree_is_scanned_with_a_few_descriptors(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 sibling directories: the old walk opened one descriptor per directory before descending."""
    for i in range(3000):
        (ws.root / f"d{i}").mkdir()
    (ws.root / "d0/early.txt").write_bytes(b"1")
    peak = 0
    real_open = os.open

    def counting_open(*args: object, **kwargs: object) -> int:
        nonlocal peak
        fd = real_open(*args, **kwargs)  # type: ignore[arg-type]
        peak = max(peak, _open_fds())
        return fd

    monkeypatch.setattr(workspace_module.os, "open", counting_open)
    baseline = _open_fds()
    scan = ws.scan()
    assert scan.limit is None
    assert "d0/early.txt" in scan.files
    assert peak - baseline <= 4


def test_a_deep_tree_stops_at_the_depth_limit_and_says_so(ws: Workspace) -> None:
    path = ws.root
    for _ in range(workspace_module.MAX_SCAN_DEPTH + 5):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "deep.txt").write_bytes(b"x")
    (ws.root / "top.txt").write_bytes(b"x")
    scan = ws.scan()
    assert scan.limit == f"directories nested more than {workspace_module.MAX_SCAN_DEPTH} deep"
    assert "top.txt" in scan.files


def test_an_incomplete_scan_reports_no_deletions(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the walk did not reach is not gone: its container file must stay registered."""
    for i in range(30):
        ws.write(f"f{i:02}.txt", b"x")
    before = ws.scan()
    monkeypatch.setattr(workspace_module, "MAX_SCAN_ENTRIES", 10)
    after = ws.scan()
    assert after.limit == "more than 10 files and directories"
    assert len(after.files) == 10
    diff = Workspace.diff(before, after)
    assert diff.deleted == []
    assert diff.changed == []
    assert diff.notes == ["The workspace was too large to scan completely (more than 10 files and directories); "
                          "files beyond that were not registered."]


def test_at_most_so_many_files_are_registered_per_execution(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace_module, "MAX_FILES_PER_EXECUTION", 3)
    before = ws.scan()
    for i in range(5):
        ws.write(f"f{i}.txt", b"x")
    diff = Workspace.diff(before, ws.scan())
    assert [c.path for c in diff.changed] == ["/mnt/data/f0.txt", "/mnt/data/f1.txt", "/mnt/data/f2.txt"]
    assert diff.notes == ["2 more changed file(s) were not registered: at most 3 per execution."]


@pytest.mark.parametrize("name", ["line\nbreak.txt", "cr\r.txt", "bell\a.txt", "\x1b[31mred.txt", "tab\there.txt",
                                  "del\x7f.txt", "c1\x9b.txt", "sep\u2028.txt", "rtl\u202etxt.exe", "iso\u2066.txt",
                                  "bad\udcff.txt", "x" * 1025])
def test_unpresentable_names_are_refused(name: str) -> None:
    assert presentable(name) is False
    shown = visible(name)
    assert shown.isascii()
    assert shown.isprintable()


@pytest.mark.parametrize("name", ["plain.txt", "dir/sub/file.csv", "naïve café.txt", "数据.xlsx", "emoji 👩‍💻.png",
                                  "[x](y).md", "x" * 1024])
def test_presentable_names_pass(name: str) -> None:
    assert presentable(name) is True


def test_files_with_unpresentable_names_are_not_registered(ws: Workspace) -> None:
    before = ws.scan()
    ws.write("good.txt", b"1")
    (ws.root / "evil\n\x1b[2J.txt").write_bytes(b"2")
    with open(os.path.join(os.fsencode(ws.root), b"latin-\xe9.txt"), "wb") as f:
        f.write(b"3")
    diff = Workspace.diff(before, ws.scan())
    assert [c.path for c in diff.changed] == ["/mnt/data/good.txt"]
    assert len(diff.notes) == 1
    assert diff.notes[0].startswith("2 file(s) were not registered because their names are not UTF-8 text")
    assert diff.notes[0].isprintable()


# --- adopt: a kept workspace changes owner -------------------------------------------------------------------------


def _owners(root: Path) -> set[tuple[int, int]]:
    entries = [root, *root.rglob("*")]  # rglob does not follow symlinked directories
    return {(info.st_uid, info.st_gid) for info in (os.lstat(p) for p in entries)}


def test_adopt_gives_every_entry_to_the_new_owner_and_follows_no_link(ws: Workspace, outside: Path) -> None:
    ws.write("a.txt", b"a")
    ws.write("d/e/f.txt", b"f")
    os.symlink(outside / "secret.txt", ws.root / "link-to-file")
    os.symlink(outside, ws.root / "d" / "link-to-dir")
    os.mkfifo(ws.root / "d" / "e" / "fifo")
    os.link(ws.root / "a.txt", ws.root / "d" / "hard.txt")
    before = os.stat(outside / "secret.txt"), os.stat(outside)
    adopted = Workspace(ws.root, uid=123456, gid=654321)
    with deadline(5):
        adopted.adopt()
    assert _owners(ws.root) == {(123456, 654321)}
    assert (os.stat(outside / "secret.txt"), os.stat(outside)) == before
    assert (ws.root / "d" / "hard.txt").read_bytes() == b"a"


def test_adopt_of_a_workspace_already_owned_changes_nothing(ws: Workspace) -> None:
    ws.write("a.txt", b"a")
    os.chown(ws.root / "a.txt", 4242, 4242)  # not walked: the root says the workspace is already this owner's
    ws.adopt()
    assert os.lstat(ws.root / "a.txt").st_uid == 4242


def test_adopt_of_a_missing_workspace_creates_it(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "gone", uid=123456, gid=123456)
    ws.adopt()
    assert _owners(ws.root) == {(123456, 123456)}


def test_adopt_refuses_a_pathologically_deep_tree_and_leaves_the_root_to_its_old_owner(ws: Workspace) -> None:
    fd = os.open(ws.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(MAX_ADOPT_DEPTH + 1):  # deeper than a path can name: made one level at a time by descriptor
            os.mkdir("d", dir_fd=fd)
            next_fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    finally:
        os.close(fd)
    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="nested deeper than"):
        Workspace(ws.root, uid=123456, gid=123456).adopt()
    assert os.lstat(ws.root).st_uid == os.getuid()  # the next start walks again
    assert len(os.listdir("/proc/self/fd")) == open_before  # every directory descriptor closed


def test_a_scan_can_be_held_to_fewer_entries_and_says_so(ws: Workspace) -> None:
    """The scan after an execution first runs on the event loop held to a few entries, and again in a thread
    when it says it stopped early: it must say so whenever it did not see everything."""
    for i in range(8):
        ws.write(f"f{i}.txt", b"x")
    assert ws.scan(entries=8).limit is None
    held = ws.scan(entries=5)
    assert held.limit == "more than 5 files and directories"
    assert len(held.files) == 5
    assert ws.scan(entries=10**9).files == ws.scan().files  # never beyond the server's own bound


def test_a_scan_can_be_held_to_less_time_and_says_so(ws: Workspace) -> None:
    for i in range(40):
        ws.write(f"f{i:02}.txt", b"x")
    held = ws.scan(seconds=1e-9)  # the clock is read every 16 entries: past it at the first reading
    assert held.limit == "more than 1e-09 s to list"
    assert len(held.files) < 40
    assert len(ws.scan(seconds=60).files) == 40
