"""Helpers for the security tier: run attack code inside a container and get a JSON verdict back.

Every probe runs a snippet that fills a dict ``out``; the helper prints it as JSON inside the sandbox and
returns it parsed. Values the host wants to hand in (ports, paths, tokens) are passed as keyword arguments
and become plain Python assignments at the top of the snippet. The prelude gives snippets ``attempt``,
which runs a call and answers "OK" or the errno's symbolic name (ECONNREFUSED, EROFS, ...), and
``write_file`` (one unbuffered write).
"""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from typing import Any

from cellbox.sandbox.engine import Engine
from cellbox.sandbox.sandbox import Sandbox

PRELUDE = '''
import errno as _errno
import json as _json
import os


def attempt(fn, *args, **kwargs):
    """'OK' if the call succeeds, else the errno's name (or the exception's type if it has none)."""
    try:
        fn(*args, **kwargs)
    except OSError as exc:
        if exc.errno is None:
            return type(exc).__name__
        return _errno.errorcode.get(exc.errno, str(exc.errno))
    except ValueError:  # e.g. setrlimit above the hard limit
        return "ValueError"
    return "OK"


def write_file(path, data):
    """One unbuffered write(2), so the kernel's answer is not lost in a buffered close."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
'''

MARK = "::cellbox-probe::"

# User code that finds the runtime's own channel, to forge frames on it: ``forge(message)`` sends a frame as the runtime
# would, for the request being executed; ``raw(*chunks)`` writes bytes straight to the socket; ``body(text)`` frames
# a text. The Outbox is found through the garbage collector; the Executor was built in the forkserver (frozen out of
# gc's view), so it is found through its display hook.
FORGE = '''
import gc, json, struct
from cellbox.runtime.display import Publisher
from cellbox.runtime.streams import Outbox

_outbox = next(o for o in gc.get_objects() if isinstance(o, Outbox))
_executor = Publisher.emit.__self__  # built in the forkserver, so frozen out of gc's view; its hook leads to it
MIB = 1 << 20


def forge(message):
    """A frame as the runtime would send it, for the request being executed."""
    _outbox.send({"id": _executor._request_id, **message})


def raw(*chunks):
    """Bytes straight onto the channel socket, not torn by the runtime's own frames."""
    with _outbox._lock:
        for chunk in chunks:
            _outbox._sock.sendall(chunk)


def body(text):
    return struct.pack("!I", len(text.encode())) + text.encode()


rid = json.dumps(_executor._request_id)
'''


def _program(code: str, setup: str, values: dict[str, Any]) -> str:
    assignments = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return (PRELUDE + textwrap.dedent(setup) + "\n" + assignments + "out = {}\n" + textwrap.dedent(code)
            + f"\nprint({MARK!r} + _json.dumps(out))\n")


async def probe(box: Sandbox, code: str, timeout: float = 30, setup: str = "", **values: Any) -> dict[str, Any]:
    """Run ``setup`` (shared definitions) then ``code`` in ``box``; it must finish without an exception.

    Returns the ``out`` dict the code filled.
    """
    result = await box.run(_program(code, setup, values), timeout=timeout)
    detail = result.error.text if result.error else result.message
    assert result.status == "ok", f"probe ended {result.status}: {detail}\nstderr: {result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.startswith(MARK)]
    assert lines, f"probe printed no verdict; stdout: {result.stdout!r}"
    verdict: dict[str, Any] = json.loads(lines[-1][len(MARK):])
    return verdict


@contextlib.asynccontextmanager
async def container(engine: Engine, **kwargs: Any) -> AsyncIterator[Sandbox]:
    """A container of ``engine`` that is destroyed (with its workspace) on the way out."""
    box = await engine.create(**kwargs)
    try:
        yield box
    finally:
        if not box.closed:
            await engine.destroy(box.id)


def host_pids_alive(*pids: int) -> bool:
    """Whether every host pid still names a live (not zombie) process."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
    return True
