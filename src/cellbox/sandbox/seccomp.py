"""The seccomp deny-list every container runs under, compiled once to BPF with libseccomp.

Denied with EPERM: debugging other processes, mounting, new namespaces, kernel keyrings, BPF,
io_uring, kernel modules, perf, clock and system administration. ``clone3`` answers ENOSYS so libc
falls back to ``clone``, whose namespace flags can be inspected. Foreign architectures are killed.
"""

from __future__ import annotations

import errno
import tempfile

import pyseccomp as seccomp

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick",
    "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "iopl", "ioperm", "personality", "fanotify_init", "uselib", "nfsservctl",
)
CLONE_NAMESPACE_FLAGS = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
TIOCSTI = 0x5412
TIOCLINUX = 0x541C


def build_filter() -> bytes:
    """Return the filter as raw BPF, ready for ``prctl(PR_SET_SECCOMP)``."""
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            f.add_rule(deny, name)
        except (RuntimeError, ValueError, OSError):
            continue  # a syscall this architecture does not have
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for flag in _namespace_bits():
        f.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    for request in (TIOCSTI, TIOCLINUX):
        f.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def _namespace_bits() -> list[int]:
    return [1 << bit for bit in range(32) if CLONE_NAMESPACE_FLAGS & (1 << bit)]
