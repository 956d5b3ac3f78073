"""The seccomp deny-list every container runs under, compiled once to BPF with libseccomp.

Denied with EPERM: debugging other processes, mounting, new namespaces, kernel keyrings, BPF,
io_uring, kernel modules, perf, clock and system administration.
``clone3`` answers ENOSYS so libc falls back to ``clone``, whose namespace flags can be inspected.
Sockets: only the families a Python session needs (AF_UNIX; AF_INET and AF_INET6, which reach nothing but
the container's own loopback; AF_NETLINK for NETLINK_ROUTE alone, which glibc's getaddrinfo reads). Every
other family answers EAFNOSUPPORT: vsock, for one, ignores network namespaces and would reach the hypervisor.
Foreign architectures are killed.
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
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
NETLINK_ROUTE = 0
SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
SOCKET_FAMILY_NAMES = ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK (NETLINK_ROUTE only)")  # as /health says
SOCKETPAIR_FAMILIES = (AF_UNIX,)
FAMILY_LIMIT = 64  # above every family the kernel knows (AF_MAX is 46); larger values are refused whole
LOW_32 = 0xFFFFFFFF  # an int argument: the kernel reads only the low half of the register


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
        f.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, LOW_32, request))
    _allow_families(f)
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def _allow_families(f: seccomp.SyscallFilter) -> None:
    """Deny socket() and socketpair() for every address family outside the allowed ones (a default-allow
    filter has no "not in", so each other family gets its own rule)."""
    refuse = seccomp.ERRNO(errno.EAFNOSUPPORT)
    for call, allowed in (("socket", SOCKET_FAMILIES), ("socketpair", SOCKETPAIR_FAMILIES)):
        for family in range(FAMILY_LIMIT):
            if family not in allowed:
                f.add_rule(refuse, call, seccomp.Arg(0, seccomp.MASKED_EQ, LOW_32, family))
        f.add_rule(refuse, call, seccomp.Arg(0, seccomp.GE, FAMILY_LIMIT))
    f.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.MASKED_EQ, LOW_32, AF_NETLINK),
               seccomp.Arg(2, seccomp.NE, NETLINK_ROUTE))


def _namespace_bits() -> list[int]:
    return [1 << bit for bit in range(32) if CLONE_NAMESPACE_FLAGS & (1 << bit)]
