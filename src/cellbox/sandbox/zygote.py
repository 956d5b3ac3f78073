"""The forkserver: imports the data stack and builds an IPython shell once, then forks a container per request.

Started by the host with a clean environment (it must never hold secrets: every container is a copy of
it). Spawns overlap: the template forks a monitor and goes on to the next request while the monitor sets up
the namespaces and reports its init's pid. Each spawn makes three processes:

    monitor (host side, in the container's cgroups)  - waits for the container; kills it if the server dies
      └─ init   (pid 1 of new pid/mount/net/ipc/uts/cgroup namespaces) - builds the root, drops privileges,
           │                                              forwards SIGINT, reaps orphans
           └─ kernel (pid 2) - the stateful IPython session, serving its channel

Control messages are JSON over a SOCK_SEQPACKET socketpair; a spawn request carries the container's
channel socket as SCM_RIGHTS. The server also passes a "lifeline": the read end of a pipe whose write end
only the server holds. It reads EOF when the server is gone, however it died, and the monitors then kill their
containers. Containers therefore outlive a crash of the template, but never the server.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

from cellbox.runtime.executor import Executor, build_shell
from cellbox.runtime.main import serve
from cellbox.runtime.packages import use_installed_packages
from cellbox.runtime.protocol import FATAL, encode
from cellbox.sandbox import confine

MAX_CONTROL_MESSAGE = 1 << 20


def _send(ctrl: socket.socket, message: dict[str, Any]) -> None:
    ctrl.send(json.dumps(message).encode())


def _fail_channel(channel_fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(channel_fd, encode({"type": FATAL, "id": None, "message": message}))


def _kernel(channel_fd: int, spec: dict[str, Any], executor: Executor) -> None:
    os.environ.clear()
    os.environ.update(spec["env"])
    sys.path.insert(0, "")  # modules in /mnt/data import, as in a notebook
    use_installed_packages()
    executor.settle_in(spec["env"]["HOME"])
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # forked children would otherwise share the zygote's random state
    if spec["warm"]:
        executor.warm_up()
    serve(socket.socket(fileno=channel_fd), executor)


def _container_init(channel_fd: int, spec: dict[str, Any], seccomp: bytes, executor: Executor) -> None:
    """Runs as pid 1 of the new namespaces; never returns."""
    try:
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        confine.close_fds_except({channel_fd})
        confine.build_root(spec)
        socket.sethostname(spec["hostname"])
        confine.loopback_up()
        os.chdir("/mnt/data")
        confine.set_rlimits(spec["rlimits"])
        confine.become_unprivileged(spec["uid"], spec["gid"])
        # The init is not dumpable: the session may not read or write its memory or environment (/proc/1/mem).
        # The session is (its own /proc/self/fd, /proc/self/environ are owned by root otherwise).
        confine.prctl(confine.PR_SET_DUMPABLE, 0)
        confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)
        kernel = os.fork()
        if kernel == 0:
            confine.prctl(confine.PR_SET_DUMPABLE, 1)
        confine.load_seccomp(seccomp)
    except BaseException as exc:
        _fail_channel(channel_fd, f"sandbox setup failed: {exc}")
        os._exit(1)
    if kernel == 0:
        try:
            _kernel(channel_fd, spec, executor)
        except BaseException:
            _fail_channel(channel_fd, traceback.format_exc())
        os._exit(0)
    os.close(channel_fd)
    _reap(kernel)


def _reap(kernel: int) -> None:
    """Forward interrupts to the session and reap every orphan until the session itself exits."""

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kernel, signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == kernel:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _monitor(report_fd: int, channel_fd: int, lifeline: int, spec: dict[str, Any], seccomp: bytes,
             executor: Executor) -> None:
    """First child: joins the cgroups, creates the namespaces, reports the init's pid, waits; never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # a session of its own: no controlling terminal for the container, whatever the server has
        confine.close_fds_except({report_fd, channel_fd, lifeline})
        confine.join_cgroups(spec["cgroup_procs"])
        confine.unshare(confine.CONTAINER_NAMESPACES)
        init = os.fork()
        if init == 0:
            os.close(report_fd)
            _container_init(channel_fd, spec, seccomp, executor)
        os.write(report_fd, f"ok {init}".encode())
    except BaseException as exc:
        os.write(report_fd, f"error {exc}".encode())
        os._exit(1)
    confine.close_fds_except({lifeline})
    container = os.pidfd_open(init)
    readable, _, _ = select.select([lifeline, container], [], [])
    if container not in readable:  # the server is gone: take the container with it
        os.kill(init, signal.SIGKILL)
    os.waitpid(init, 0)
    os._exit(0)


def spawn(spec: dict[str, Any], channel_fd: int, lifeline: int, seccomp: bytes, executor: Executor) -> int:
    """Fork a container's monitor; return the read end of the pipe on which it reports its init's host pid
    (``read_report``). The template does not wait for it: the monitor's namespaces and its init's fork take
    longer than this fork, and other spawns go ahead meanwhile."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:
        os.close(read_end)
        _monitor(write_end, channel_fd, lifeline, spec, seccomp, executor)
    os.close(write_end)
    os.close(channel_fd)
    return read_end


def read_report(report: int) -> int:
    """The host pid of the init a monitor started (one write, smaller than PIPE_BUF: read whole or not at all)."""
    try:
        status, _, detail = os.read(report, 4096).decode().partition(" ")
    finally:
        os.close(report)
    if status != "ok":
        raise RuntimeError(detail or "container monitor exited without a report")
    return int(detail)


def preload(modules: list[str]) -> list[str]:
    """Import what every container should start with; return the modules that failed."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
    return failed


def main() -> None:
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    lifeline = int(sys.argv[2])
    confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)
    config = json.loads(ctrl.recv(MAX_CONTROL_MESSAGE) or b"{}")
    if sys.path and sys.path[0] == os.getcwd():
        del sys.path[0]  # `python -m` put the working directory first; containers get "" instead
    cache = config["cache"]  # host paths by message, not environment: the exec'd environment stays in every child
    os.environ.update(IPYTHONDIR=f"{cache}/ipython", MPLCONFIGDIR=f"{cache}/matplotlib")
    seccomp = base64.b64decode(config["seccomp"])
    failed = preload(config.get("preload", []))
    executor = Executor(build_shell())
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped automatically
    gc.collect()
    gc.freeze()  # keep the collector from dirtying shared pages in every child
    _send(ctrl, {"type": "ready", "pid": os.getpid(), "failed_preloads": failed})
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the host went away: nothing to serve
        _serve_requests(ctrl, lifeline, seccomp, executor)


def _serve_requests(ctrl: socket.socket, lifeline: int, seccomp: bytes, executor: Executor) -> None:
    """Answer spawn requests as their monitors report, in whatever order that is; replies carry the request's id."""
    reports: dict[int, int] = {}  # report pipe -> request id
    poller = select.poll()  # not select(): many spawns in flight may hold descriptors above FD_SETSIZE
    poller.register(ctrl, select.POLLIN)
    while True:
        readable = {fd for fd, _ in poller.poll()}
        for report in [fd for fd in readable if fd in reports]:
            poller.unregister(report)
            request_id = reports.pop(report)
            try:
                _send(ctrl, {"type": "spawned", "id": request_id, "pid": read_report(report)})
            except RuntimeError as exc:
                _send(ctrl, {"type": "error", "id": request_id, "message": str(exc)})
        if ctrl.fileno() not in readable:
            continue
        data, fds, _, _ = socket.recv_fds(ctrl, MAX_CONTROL_MESSAGE, 1)
        if not data:
            return
        request = json.loads(data)
        try:
            if len(fds) != 1:
                raise RuntimeError("spawn request without a channel descriptor")
            report = spawn(request["spec"], fds[0], lifeline, seccomp, executor)
            reports[report] = request["id"]
            poller.register(report, select.POLLIN)
        except Exception as exc:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            _send(ctrl, {"type": "error", "id": request["id"], "message": str(exc)})


if __name__ == "__main__":
    main()
