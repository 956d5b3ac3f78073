"""Host-side workspace access against paths the sandboxed code controls.

Code owns /mnt/data: it can plant symlinks (to host paths it cannot see, too: a link target is just a
string), FIFOs and sockets there, and callers pass arbitrary paths to download/upload. None of this may make
the host read, write, delete or block on anything outside the workspace.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cellbox.errors import InvalidInput, NotFound
from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import probe

HOST_CONTENT = b"host-only secret contents\n"
DEADLINE = 20.0  # a hang guard (a FIFO opened for reading blocks forever), not a timing assertion


def _with_deadline(fn: Callable[[], Any]) -> Any:
    """Run fn in a daemon thread; fail instead of hanging the suite if it blocks."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    if thread.is_alive():
        pytest.fail(f"{fn} blocked for {DEADLINE:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _read_via_open(box: Sandbox, path: str) -> bytes:
    with box.open(path) as f:
        return f.read()


def assert_refused(box: Sandbox, path: str) -> None:
    """download() and open() both refuse the path, and so never return anything (host contents included)."""
    for read in (box.download, lambda p: _read_via_open(box, p)):
        try:
            data = _with_deadline(lambda read=read: read(path))
        except (NotFound, InvalidInput):
            continue
        assert HOST_CONTENT not in data, f"{path!r} read a host file"
        assert b"root:x:0:0" not in data, f"{path!r} read the host's /etc/passwd"
        pytest.fail(f"{path!r} was read: {data[:60]!r}")


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    """A host file and directory the container can't see but can name in a symlink."""
    secret_dir = tmp_path / "host-secrets"
    secret_dir.mkdir()
    secret = secret_dir / "secret.txt"
    secret.write_bytes(HOST_CONTENT)
    return secret


PLANT = """
import os, socket
for target, name in links:
    os.symlink(target, name)
os.mkfifo("fifo")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind("/mnt/data/sock")
with open("real.txt", "w") as f:
    f.write("mine")
out["hardlinks"] = {source: attempt(os.link, source, "/mnt/data/hard-" + os.path.basename(source))
                    for source in hardlink_sources}
"""


async def test_planted_links_and_special_files_are_not_followed(box: Sandbox, host_secret: Path) -> None:
    links = [
        ("/etc/passwd", "link"),
        (str(host_secret), "host_link"),
        ("/etc", "dirlink"),
        (str(host_secret.parent), "host_dirlink"),
        ("/", "rootlink"),
        ("../../../../../../..", "uplink"),
    ]
    out = await probe(box, PLANT, links=links,
                      hardlink_sources=["/usr/bin/python3", "/etc/passwd", os.path.realpath("/usr/bin/env")])
    # Hard links can't pull a file of another filesystem (the host's /usr, the root) into the workspace.
    assert set(out["hardlinks"].values()) == {"EXDEV"}, out["hardlinks"]
    assert box.download("real.txt") == b"mine"  # the workspace itself is readable
    for path in ["link", "host_link", "dirlink/passwd", "host_dirlink/secret.txt", "rootlink/etc/passwd",
                 f"rootlink{host_secret}", f"uplink{host_secret}", "fifo", "sock", "/mnt/data/link",
                 "/mnt/data/host_dirlink/secret.txt"]:
        assert_refused(box, path)
    # Deleting through a link fails; deleting the link itself leaves its target alone.
    with pytest.raises(NotFound):
        box.delete_file("host_dirlink/secret.txt")
    box.delete_file("host_link")
    assert host_secret.read_bytes() == HOST_CONTENT
    # The workspace listing (what executions report as changed) does not wander through links either.
    assert [f.path for f in box.files()] == ["/mnt/data/real.txt"]


@pytest.mark.parametrize("path", [
    "", "\x00", "real.txt\x00", "real.txt\x00/../../etc/passwd", "..", "../", "/..", "/mnt/data/..",
    "/mnt/data/../../etc/passwd", "a/../../etc/passwd", "./../etc/passwd", "....//....//etc/passwd",
    "/etc/passwd", "//etc/passwd", "///etc/passwd", "/mnt/data//etc/passwd", "/mnt/data///etc/passwd",
    "/mnt/database/../../etc/passwd", "/proc/self/environ", "//proc/self/environ", "/mnt/data",
])
async def test_paths_outside_the_workspace_are_refused(box: Sandbox, path: str) -> None:
    box.upload("real.txt", b"mine")
    assert_refused(box, path)


async def test_host_paths_relative_to_the_workspace_are_refused(box: Sandbox, host_secret: Path) -> None:
    """'../' paths from the workspace to a host file: refused for reading, deleting and writing."""
    relative = os.path.relpath(host_secret, box.workspace.root)
    assert relative.startswith("..")
    for path in [relative, f"/mnt/data/{relative}", f"x/../{relative}"]:
        assert_refused(box, path)
        with pytest.raises(InvalidInput):
            box.delete_file(path)
    for path in [relative, f"/mnt/data/{relative}", f"x/../{relative}"]:
        with pytest.raises(InvalidInput):
            box.upload(path, b"overwritten")
    assert host_secret.read_bytes() == HOST_CONTENT


# Spellings of a host path, each of which must still mean a path inside the workspace or be refused.
# POSIX lets '//' be a root of its own: PurePosixPath('//tmp/x').parts == ('//', 'tmp', 'x').
SPELLINGS = ["{}", "/{}", "/mnt/data{}", "/mnt/data/{}", "/mnt/data//{}"]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_host_paths_cannot_be_read(box: Sandbox, host_secret: Path, spelling: str) -> None:
    assert_refused(box, spelling.format(host_secret))


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_host_paths_cannot_be_written(box: Sandbox, host_secret: Path, spelling: str) -> None:
    planted = host_secret.parent / "planted.txt"
    for target in (host_secret, planted):
        with contextlib.suppress(NotFound, InvalidInput):  # or it lands inside the workspace: fine too
            box.upload(spelling.format(target), b"overwritten")
    assert host_secret.read_bytes() == HOST_CONTENT
    assert not planted.exists()


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_host_paths_cannot_be_deleted(box: Sandbox, host_secret: Path, spelling: str) -> None:
    with contextlib.suppress(NotFound, InvalidInput):
        box.delete_file(spelling.format(host_secret))
    assert host_secret.exists()


async def test_upload_replaces_a_planted_symlink_instead_of_writing_through(box: Sandbox, host_secret: Path) -> None:
    root = box.workspace.root
    os.symlink(host_secret, root / "host_planted")  # planted from the host side...
    await probe(box, """
        import os
        os.symlink(target, "code_planted")  # ...and by the code, naming a host path it cannot even see
        os.symlink(target_dir, "code_dir")
    """, target=str(host_secret), target_dir=str(host_secret.parent))
    for name in ("host_planted", "code_planted"):
        box.upload(name, b"uploaded")
        assert not (root / name).is_symlink()
        assert (root / name).read_bytes() == b"uploaded"
    with pytest.raises((NotFound, InvalidInput)):  # a linked directory is not walked into either
        box.upload("code_dir/new.txt", b"uploaded")
    with pytest.raises((NotFound, InvalidInput)):
        box.upload("code_dir/secret.txt", b"uploaded")
    assert host_secret.read_bytes() == HOST_CONTENT
    assert sorted(p.name for p in host_secret.parent.iterdir()) == ["secret.txt"]
