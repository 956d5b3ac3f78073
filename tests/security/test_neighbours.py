"""Neighbours: the kernel counts some limits per user (inotify, POSIX message queues, pipe buffers, pending
signals), so each live container runs as a host uid of its own and one container using up its share leaves the
others theirs. Every test makes container A really hit the limit, checks container B still gets the resource,
then lets A go.
"""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import container, probe

LIBC = '''
import ctypes
import errno
import os

libc = ctypes.CDLL(None, use_errno=True)


def errname():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
'''

INOTIFY_INSTANCES = '''
held, failure = [], None
for _ in range(bound):
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        failure = errname()
        break
    held.append(fd)
out["held"], out["failure"] = len(held), failure
'''

INOTIFY_WATCHES = '''
import tempfile
folder = tempfile.mkdtemp()
for name in range(files):
    open(f"{folder}/{name}", "w").close()
instances, watches, failure = [], 0, None
while failure is None and watches < bound:
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        failure = "init " + errname()
        break
    instances.append(fd)
    for name in range(files):
        if libc.inotify_add_watch(fd, f"{folder}/{name}".encode(), 0x2) < 0:  # IN_MODIFY
            failure = errname()
            break
        watches += 1
out["watches"], out["failure"] = watches, failure
'''

MQUEUE = '''
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long),
                ("curmsgs", ctypes.c_long), ("reserved", ctypes.c_long * 4)]


libc.mq_open.restype = ctypes.c_int
libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Attr)]
libc.mq_unlink.argtypes = [ctypes.c_char_p]
attr = Attr(0, 10, 8192, 0)  # the largest queue an unprivileged process may ask for (msg_max, msgsize_max)


def open_queues(prefix, bound):
    held, failure = [], None
    for n in range(bound):
        fd = libc.mq_open(f"/{prefix}{n}".encode(), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, ctypes.byref(attr))
        if fd < 0:
            failure = errname()
            break
        held.append((f"/{prefix}{n}", fd))
    return held, failure


def close_queues(held):
    for name, fd in held:
        os.close(fd)
        libc.mq_unlink(name.encode())
'''

PIPES = '''
import fcntl


def grow_pipes(bound):
    held, failure = [], None
    for _ in range(bound):
        read_end, write_end = os.pipe()
        held += [read_end, write_end]
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, size)
        except OSError as exc:
            failure = errno.errorcode[exc.errno]
            break
    return held, failure
'''

SIGNALS = '''
import errno
import signal
import threading

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN})


def queue_signals(bound):
    """Queue blocked real-time signals to this thread (tgkill is not exempt from RLIMIT_SIGPENDING, kill is)."""
    for n in range(bound):
        try:
            signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)
        except OSError as exc:
            return n, errno.errorcode[exc.errno]
    return bound, None


def drop_signals():
    signal.signal(signal.SIGRTMIN, signal.SIG_IGN)  # discards the queued ones
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGRTMIN})
    signal.signal(signal.SIGRTMIN, signal.SIG_DFL)
'''


def _sysctl(name: str) -> int:
    return int(Path("/proc/sys", name).read_text().split()[0])


@pytest.fixture
async def neighbour(engine: Engine) -> AsyncIterator[Sandbox]:
    async with container(engine) as other:
        yield other


async def test_neighbours_run_as_different_host_uids(box: Sandbox, neighbour: Sandbox, settings: Settings) -> None:
    uids = []
    for sandbox in (box, neighbour):
        with open(f"/proc/{sandbox.init_pid}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines())
        assert status["Uid"].split() == [str(sandbox.uid)] * 4
        uids.append(sandbox.uid)
    assert uids[0] != uids[1]
    assert all(settings.sandbox_uid <= uid < settings.sandbox_uid + settings.sandbox_id_count for uid in uids)


async def test_inotify_instances_used_up_by_one_container_are_not_the_others(box: Sandbox, neighbour: Sandbox,
                                                                             settings: Settings) -> None:
    limit = _sysctl("fs/inotify/max_user_instances")
    if limit + 64 > settings.open_files:
        pytest.skip(f"max_user_instances {limit} is not below the open-files limit: EMFILE would be ambiguous")
    hog = await probe(box, INOTIFY_INSTANCES, setup=LIBC, bound=limit + 1)
    try:
        assert hog["failure"] == "EMFILE"  # the per-user limit, well below the container's open-files limit
        assert hog["held"] <= limit
        other = await probe(neighbour, INOTIFY_INSTANCES, setup=LIBC, bound=1)
        assert (other["held"], other["failure"]) == (1, None)
    finally:
        await probe(box, "for fd in held: os.close(fd)")


async def test_inotify_watches_used_up_by_one_container_are_not_the_others(box: Sandbox,
                                                                           neighbour: Sandbox) -> None:
    limit = _sysctl("fs/inotify/max_user_watches")
    if limit > 400_000:
        pytest.skip(f"max_user_watches is {limit}: too many to use up in a test")
    files = limit // 64 + 1  # 64 instances of this many watches pass the limit
    hog = await probe(box, INOTIFY_WATCHES, setup=LIBC, files=files, bound=limit + 1, timeout=120)
    try:
        assert hog["failure"] == "ENOSPC"
        assert hog["watches"] <= limit
        other = await probe(neighbour, INOTIFY_WATCHES, setup=LIBC, files=1, bound=1)
        assert (other["watches"], other["failure"]) == (1, None)
    finally:
        await probe(box, "for fd in instances: os.close(fd)\nimport shutil; shutil.rmtree(folder)")


async def test_message_queue_bytes_used_up_by_one_container_are_not_the_others(box: Sandbox,
                                                                               neighbour: Sandbox) -> None:
    limit = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[0]
    if limit == resource.RLIM_INFINITY or limit > 64 << 20:
        pytest.skip(f"RLIMIT_MSGQUEUE is {limit}: too large to use up in a test")
    bound = limit // (10 * 8192) + 2
    hog = await probe(box, 'held, failure = open_queues("hog", bound)\nout["failure"] = failure',
                      setup=LIBC + MQUEUE, bound=bound)
    try:
        assert hog["failure"] == "EMFILE"  # RLIMIT_MSGQUEUE, counted per host user
        other = await probe(neighbour, """
            held, failure = open_queues("other", 1)
            close_queues(held)
            out["failure"] = failure
        """, setup=LIBC + MQUEUE)
        assert other["failure"] is None
    finally:
        await probe(box, "close_queues(held)")


async def test_pipe_buffers_used_up_by_one_container_are_not_the_others(box: Sandbox, neighbour: Sandbox) -> None:
    soft_pages = _sysctl("fs/pipe-user-pages-soft")
    size = min(_sysctl("fs/pipe-max-size"), 1 << 20)
    if soft_pages == 0 or soft_pages * 4096 // size > 400:
        pytest.skip(f"pipe-user-pages-soft is {soft_pages}: off or too many pipes to fill in a test")
    bound = soft_pages * 4096 // size + 4
    hog = await probe(box, 'held, failure = grow_pipes(bound)\nout["failure"] = failure',
                      setup=LIBC + PIPES, bound=bound, size=size)
    try:
        assert hog["failure"] == "EPERM"  # past pipe-user-pages-soft, an unprivileged user's pipes cannot grow
        other = await probe(neighbour, """
            held, failure = grow_pipes(1)
            out["failure"] = failure
            out["size"] = fcntl.fcntl(held[1], fcntl.F_GETPIPE_SZ)
            fresh = os.pipe()
            out["fresh"] = fcntl.fcntl(fresh[1], fcntl.F_GETPIPE_SZ)  # one page when the user is over the limit
            for fd in [*held, *fresh]:
                os.close(fd)
        """, setup=LIBC + PIPES, size=size)
        assert (other["failure"], other["size"], other["fresh"]) == (None, size, 65536)
    finally:
        await probe(box, "for fd in held: os.close(fd)")


async def test_pending_signals_used_up_by_one_container_are_not_the_others(box: Sandbox,
                                                                           neighbour: Sandbox) -> None:
    limit = resource.getrlimit(resource.RLIMIT_SIGPENDING)[0]
    if limit == resource.RLIM_INFINITY or limit > 1_000_000:
        pytest.skip(f"RLIMIT_SIGPENDING is {limit}: too many signals to queue in a test")
    hog = await probe(box, 'out["queued"], out["failure"] = queued, failure = queue_signals(bound)',
                      setup=SIGNALS, bound=limit + 1, timeout=120)
    try:
        assert hog["failure"] == "EAGAIN"
        assert hog["queued"] <= limit
        other = await probe(neighbour, """
            out["queued"], out["failure"] = queue_signals(1)
            drop_signals()
        """, setup=SIGNALS)
        assert (other["queued"], other["failure"]) == (1, None)
    finally:
        await probe(box, "drop_signals()")
