"""Syscalls and privileges, attacked from inside a real container.

Each dangerous syscall is made through ctypes from a freshly forked, single-threaded child (the best case
for an attacker: unshare(CLONE_NEWUSER) is refused to threaded processes anyway), with arguments chosen so that
without the seccomp filter the kernel would answer something other than EPERM (success, ESRCH, ENOENT,
EBADF, EFAULT, EINVAL, ...). EPERM therefore proves the filter, not just missing capabilities.
"""

from __future__ import annotations

import platform

import pytest

from cellbox.config import Settings
from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import probe

NUMBERS = {
    "x86_64": {"ptrace": 101, "mount": 165, "umount2": 166, "unshare": 272, "setns": 308, "keyctl": 250,
               "add_key": 248, "bpf": 321, "io_uring_setup": 425, "perf_event_open": 298, "init_module": 175,
               "finit_module": 313, "clone3": 435, "clone": 56, "chroot": 161, "userfaultfd": 323,
               "process_vm_readv": 310, "pidfd_getfd": 438, "open_by_handle_at": 304, "name_to_handle_at": 303},
    "aarch64": {"ptrace": 117, "mount": 40, "umount2": 39, "unshare": 97, "setns": 268, "keyctl": 219,
                "add_key": 217, "bpf": 280, "io_uring_setup": 425, "perf_event_open": 241, "init_module": 105,
                "finit_module": 273, "clone3": 435, "clone": 220, "chroot": 51, "userfaultfd": 282,
                "process_vm_readv": 270, "pidfd_getfd": 438, "open_by_handle_at": 265, "name_to_handle_at": 264},
}
CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
PTRACE_TRACEME, PTRACE_ATTACH = 0, 16
MISSING = b"/nonexistent-cellbox-probe"

# name -> (syscall, args); what the kernel answers without the filter, as measured, in the comment
ATTACKS = {
    "ptrace_traceme": ("ptrace", [PTRACE_TRACEME, 0, 0, 0]),  # succeeds
    "ptrace_attach_init": ("ptrace", [PTRACE_ATTACH, 1, 0, 0]),  # succeeds (same uid, dumpable)
    "ptrace_attach_missing": ("ptrace", [PTRACE_ATTACH, 999_999, 0, 0]),  # ESRCH
    "mount": ("mount", [None, MISSING, None, 0, None]),  # ENOENT
    "umount2": ("umount2", [MISSING, 0]),  # ENOENT
    "unshare_user": ("unshare", [CLONE_NEWUSER]),  # succeeds
    "unshare_user_net": ("unshare", [CLONE_NEWUSER | CLONE_NEWNET]),  # succeeds
    "clone_newuser": ("clone", [CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0]),  # succeeds
    "setns": ("setns", [-1, 0]),  # EBADF
    "keyctl": ("keyctl", [0xFFFF, 0, 0, 0, 0]),  # EOPNOTSUPP
    "add_key": ("add_key", [None, None, None, 0, 0]),  # EFAULT
    "bpf": ("bpf", [0xFFFF, None, 0]),  # EINVAL
    "io_uring_setup": ("io_uring_setup", [0, None]),  # EFAULT
    "perf_event_open": ("perf_event_open", [None, 0, -1, -1, 0]),  # EFAULT
    "init_module": ("init_module", [None, 0, None]),  # ENOSYS/EPERM depending on the kernel
    "finit_module": ("finit_module", [-1, None, 0]),
    "chroot": ("chroot", [MISSING]),  # ENOENT
    "userfaultfd": ("userfaultfd", [0xFFFF]),  # EINVAL
    "process_vm_readv": ("process_vm_readv", [1, None, 0, None, 0, 0]),  # succeeds (reads nothing)
    "pidfd_getfd": ("pidfd_getfd", [-1, -1, 0]),  # EBADF
    "open_by_handle_at": ("open_by_handle_at", [-1, None, 0]),  # EFAULT
    "name_to_handle_at": ("name_to_handle_at", [-1, None, None, None, 0]),  # EFAULT
}

SYSCALL = '''
import ctypes, json, os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _arg(value):
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    return ctypes.c_void_p(None) if value is None else ctypes.c_long(value)


def raw_syscall(number, args):
    """'OK' or the errno name of syscall(number, *args), made from a fresh single-threaded child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ctypes.set_errno(0)
            result = _libc.syscall(ctypes.c_long(number), *[_arg(a) for a in args])
            if result == 0 and number == CLONE_NR:
                os._exit(0)  # a clone that went through: this is the new child; vanish
            verdict = "OK" if result >= 0 else _errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
            os.write(write_end, verdict.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    verdict = os.read(read_end, 100).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    return verdict
'''


@pytest.fixture
def numbers() -> dict[str, int]:
    if platform.machine() not in NUMBERS:
        pytest.skip(f"no syscall numbers for {platform.machine()}")
    return NUMBERS[platform.machine()]


async def test_dangerous_syscalls_are_denied_with_eperm(box: Sandbox, numbers: dict[str, int]) -> None:
    attacks = {name: (numbers[call], args) for name, (call, args) in ATTACKS.items()}
    out = await probe(box, """
        out.update({name: raw_syscall(number, args) for name, (number, args) in attacks.items()})
        import fcntl  # typing into the terminal of whoever reads ours
        out["ioctl_tiocsti"] = attempt(fcntl.ioctl, 0, 0x5412, b"x")  # ENOTTY on /dev/null without the filter
    """, setup=SYSCALL, CLONE_NR=numbers["clone"], attacks=attacks)
    assert out == {**dict.fromkeys(ATTACKS, "EPERM"), "ioctl_tiocsti": "EPERM"}


async def test_clone3_answers_enosys_and_fork_subprocess_threads_work(box: Sandbox, numbers: dict[str, int]) -> None:
    out = await probe(box, """
        import subprocess, threading
        out["clone3"] = raw_syscall(clone3, [None, 0])  # EINVAL without the filter
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        out["fork_exit"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out["subprocess"] = subprocess.run(["/bin/sh", "-c", "echo $((6 * 7))"], capture_output=True,
                                           text=True).stdout.strip()
        ran = []
        thread = threading.Thread(target=lambda: ran.append(True))
        thread.start()
        thread.join()
        out["thread_ran"] = ran == [True]
    """, setup=SYSCALL, CLONE_NR=numbers["clone"], clone3=numbers["clone3"])
    assert out == {"clone3": "ENOSYS", "fork_exit": 7, "subprocess": "42", "thread_ran": True}


async def test_no_privileges_inside(box: Sandbox, settings: Settings) -> None:
    out = await probe(box, """
        import os
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        out["status"] = {k: status[k].split() for k in ("Uid", "Gid", "NoNewPrivs", "Seccomp", "CapInh", "CapPrm",
                                                        "CapEff", "CapBnd", "CapAmb")}
        out["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]
        out["setuid_root"] = attempt(os.setuid, 0)
        out["setgid_root"] = attempt(os.setgid, 0)
        out["uid_map"] = attempt(write_file, "/proc/self/uid_map", b"0 0 1\\n")
        out["chown"] = attempt(os.chown, "/mnt/data", 0, 0)
    """)
    zero = ["0000000000000000"]
    assert out["status"] == {"Uid": ["1000"] * 4, "Gid": ["1000"] * 4, "NoNewPrivs": ["1"], "Seccomp": ["2"],
                             "CapInh": zero, "CapPrm": zero, "CapEff": zero, "CapBnd": zero, "CapAmb": zero}
    assert out["ids"] == [1000, 1000, 1000, 1000, []]
    assert out["setuid_root"] in ("EINVAL", "EPERM")  # root is not even mapped in the user namespace
    assert out["setgid_root"] in ("EINVAL", "EPERM")
    assert out["uid_map"] in ("EPERM", "EACCES")
    assert out["chown"] in ("EINVAL", "EPERM")
    # Seen from the host, the container's processes run as the unprivileged sandbox uid, not root.
    with open(f"/proc/{box.init_pid}/status") as f:
        host_status = dict(line.split(":", 1) for line in f.read().splitlines())
    assert host_status["Uid"].split() == [str(box.uid)] * 4
    assert settings.sandbox_uid <= box.uid < settings.sandbox_uid + settings.sandbox_id_count
    assert host_status["CapEff"].split() == zero
