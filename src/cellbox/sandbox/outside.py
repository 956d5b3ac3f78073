"""A container's one way out, when it has one: a listening socket inside its own network namespace.

The namespace keeps nothing but its loopback (no interface, no route). For a container whose policy allows egress,
the host enters the namespace on a short-lived thread just long enough to create a socket there, bound to the
container's 127.0.0.1, and serves that socket from its own event loop (the egress proxy). Code in the container
connects to it as to any local proxy; every other address stays unreachable, as before. The container learns
only what the standard variables tell it (``HTTP_PROXY`` and friends, a CA file), given here as ``env`` and
``files``; the sandbox knows nothing of policies or secrets.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


@dataclass(frozen=True)
class Outside:
    """What a container with egress gets: variables and files at every start, and after every start (a crashed
    session comes back in a new namespace) a fresh listener on ``port``, handed to ``serve``."""

    port: int
    serve: Callable[[socket.socket], Awaitable[None]]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # absolute path inside -> text (public things only)


def listen_inside(pid: int, port: int) -> socket.socket:
    """A non-blocking TCP socket listening on 127.0.0.1:``port`` in the network namespace of process ``pid``."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_listen() -> None:
        # setns changes only this thread's namespace; the thread ends right after, so nothing else runs in it.
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the container's network: {os.strerror(err)}")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen(64)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            made.append(sock)
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=enter_and_listen, name=f"netns-{pid}", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]
