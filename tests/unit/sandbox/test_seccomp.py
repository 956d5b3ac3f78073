"""The seccomp filter: it compiles to BPF, and once loaded (in a forked child, never in pytest) it denies
what it promises and still allows fork and threads."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import select
import signal
import threading
import traceback
from typing import Any

import pyseccomp
import pytest

from cellbox.sandbox import confine
from cellbox.sandbox.seccomp import CLONE_NAMESPACE_FLAGS, DENIED, build_filter

BPF_MAXINSNS = 4096
CLONE_NEWNET = 0x40000000
SIGCHLD = 17
PTRACE_ATTACH = 16
MS_REMOUNT = 0x20
TIOCSTI = 0x5412

# syscall numbers used by the probes
NR = {
    "x86_64": {"clone": 56, "clone3": 435, "ioctl": 16, "bpf": 321, "setns": 308, "io_uring_setup": 425,
               "perf_event_open": 298, "keyctl": 250},
    "aarch64": {"clone": 220, "clone3": 435, "ioctl": 29, "bpf": 280, "setns": 268, "io_uring_setup": 425,
                "perf_event_open": 241, "keyctl": 219},
}


@pytest.fixture(scope="module")
def program() -> bytes:
    return build_filter()


def test_filter_is_whole_bpf_instructions(program: bytes) -> None:
    assert program
    assert len(program) % 8 == 0
    assert len(program) // 8 <= BPF_MAXINSNS


def test_filter_is_deterministic(program: bytes) -> None:
    assert build_filter() == program


def test_every_denied_name_is_a_real_syscall() -> None:
    """build_filter skips names the architecture lacks, so a typo here would silently allow nothing less."""
    unknown = [name for name in DENIED if pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name) < 0]
    assert unknown == []


def test_clone_namespace_flags_are_the_namespace_bits() -> None:
    assert CLONE_NAMESPACE_FLAGS == (
        confine.CLONE_NEWNS | confine.CLONE_NEWCGROUP | confine.CLONE_NEWUTS | confine.CLONE_NEWIPC
        | confine.CLONE_NEWUSER | confine.CLONE_NEWPID | confine.CLONE_NEWNET | 0x00000080  # CLONE_NEWTIME
    )


# --- loaded, in a child -------------------------------------------------------------------------------


def _probe() -> dict[str, Any]:
    """Runs in the confined child. Every probe is chosen to fail differently without the filter."""
    libc = ctypes.CDLL(None, use_errno=True)
    nr = NR[platform.machine()]

    def errno_of(call: Any, *args: Any) -> int:
        ctypes.set_errno(0)
        result = call(*args)
        return 0 if result >= 0 else ctypes.get_errno()

    def syscall(name: str, *args: int) -> int:
        return errno_of(libc.syscall, ctypes.c_long(nr[name]), *(ctypes.c_long(a) for a in args))

    results: dict[str, Any] = {}
    results["unshare_user"] = errno_of(libc.unshare, confine.CLONE_NEWUSER)  # root: would succeed
    results["unshare_net"] = errno_of(libc.unshare, confine.CLONE_NEWNET)
    results["ptrace"] = errno_of(libc.ptrace, ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(2**22 + 1),
                                 None, None)  # no such pid: ESRCH without the filter
    results["mount"] = errno_of(libc.mount, None, b"/nonexistent-cellbox-test", None,
                                ctypes.c_ulong(MS_REMOUNT), None)  # ENOENT without the filter
    results["setns"] = syscall("setns", -1, 0)  # EBADF without the filter
    results["bpf"] = syscall("bpf", -1, 0, 0)  # EINVAL without the filter
    results["io_uring_setup"] = syscall("io_uring_setup", 0, 0)
    results["perf_event_open"] = syscall("perf_event_open", 0, 0, -1, -1, 0)
    results["keyctl"] = syscall("keyctl", 0, -3, 0)
    results["clone3"] = syscall("clone3", 0, 0)  # EINVAL without the filter
    r, w = os.pipe()
    byte = ctypes.c_char(b"x")
    results["tiocsti"] = syscall("ioctl", r, TIOCSTI, ctypes.addressof(byte))  # ENOTTY without the filter
    os.close(r)
    os.close(w)
    rc = libc.syscall(ctypes.c_long(nr["clone"]), ctypes.c_long(CLONE_NEWNET | SIGCHLD), *[ctypes.c_long(0)] * 4)
    if rc == 0:
        os._exit(0)  # the filter let a namespaced clone through: we are its child; vanish
    results["clone_newnet"] = ctypes.get_errno() if rc < 0 else f"created pid {rc}"
    if rc > 0:
        os.waitpid(rc, 0)

    # what must keep working: plain fork (clone without namespace flags) and threads (clone3 -> clone fallback)
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    results["fork_exit"] = os.waitstatus_to_exitcode(status)
    ran: list[bool] = []
    thread = threading.Thread(target=lambda: ran.append(True))
    thread.start()
    thread.join(5)
    results["thread_ran"] = ran == [True]
    results["getpid"] = os.getpid() > 0
    return results


def run_confined(program: bytes) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            confine.prctl(confine.PR_SET_NO_NEW_PRIVS, 1)
            confine.load_seccomp(program)
            os.write(write_end, json.dumps(_probe()).encode())
            code = 0
        except BaseException:
            try:
                os.write(write_end, json.dumps({"child_error": traceback.format_exc()}).encode())
            finally:
                code = 2
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], 30)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail("the confined child hung")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    results = json.loads(b"".join(chunks) or b"{}")
    assert "child_error" not in results, results.get("child_error")
    assert os.waitstatus_to_exitcode(status) == 0, results
    return results


@pytest.fixture(scope="module")
def confined(program: bytes) -> dict[str, Any]:
    if platform.machine() not in NR:
        pytest.skip(f"no syscall numbers for {platform.machine()}")
    return run_confined(program)


@pytest.mark.parametrize(
    "probe",
    ["unshare_user", "unshare_net", "ptrace", "mount", "setns", "bpf", "io_uring_setup", "perf_event_open",
     "keyctl", "tiocsti", "clone_newnet"],
)
def test_denied_with_eperm(confined: dict[str, Any], probe: str) -> None:
    assert confined[probe] == errno.EPERM, errno.errorcode.get(confined[probe], confined[probe])


def test_clone3_answers_enosys_so_libc_falls_back_to_clone(confined: dict[str, Any]) -> None:
    assert confined["clone3"] == errno.ENOSYS


def test_fork_and_threads_still_work(confined: dict[str, Any]) -> None:
    assert confined["fork_exit"] == 7
    assert confined["thread_ran"] is True
    assert confined["getpid"] is True
