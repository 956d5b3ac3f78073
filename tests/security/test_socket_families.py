"""Socket families: only AF_UNIX, AF_INET/AF_INET6 (own loopback) and NETLINK_ROUTE can be created inside.

vsock, packet, bluetooth, alg, tipc, can, xdp and the other families ignore network namespaces or reach
kernel code a Python session never needs; seccomp refuses them with EAFNOSUPPORT. These probes only create
(or bind) sockets: nothing is ever sent anywhere.
"""

from __future__ import annotations

import platform

import pytest

from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import probe

DENIED = {"AF_UNSPEC": 0, "AF_AX25": 3, "AF_IPX": 4, "AF_APPLETALK": 5, "AF_X25": 9, "AF_KEY": 15, "AF_PACKET": 17,
          "AF_RDS": 21, "AF_PPPOX": 24, "AF_LLC": 26, "AF_CAN": 29, "AF_TIPC": 30, "AF_BLUETOOTH": 31, "AF_ALG": 38,
          "AF_VSOCK": 40, "AF_QIPCRTR": 42, "AF_SMC": 43, "AF_XDP": 44, "AF_MCTP": 45, "future_63": 63}
NETLINK_DENIED = {"NETLINK_SOCK_DIAG": 4, "NETLINK_AUDIT": 9, "NETLINK_KOBJECT_UEVENT": 15, "NETLINK_GENERIC": 16}
SOCKET_NR = {"x86_64": (41, 53), "aarch64": (198, 199)}  # socket, socketpair

RAW = '''
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def raw_socket(number, family, kind, proto):
    """socket(2) with a full 64-bit family, past libc's int: the filter must read only what the kernel reads."""
    ctypes.set_errno(0)
    fd = _libc.syscall(ctypes.c_long(number), ctypes.c_ulong(family), ctypes.c_long(kind), ctypes.c_long(proto))
    if fd >= 0:
        os.close(fd)
        return "OK"
    return _errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
'''


@pytest.fixture
def numbers() -> tuple[int, int]:
    if platform.machine() not in SOCKET_NR:
        pytest.skip(f"no syscall numbers for {platform.machine()}")
    return SOCKET_NR[platform.machine()]


async def test_other_socket_families_are_refused(box: Sandbox, numbers: tuple[int, int]) -> None:
    out = await probe(box, """
        import socket
        for name, family in denied.items():
            out[name] = {kind: attempt(lambda: socket.socket(family, kind).close())
                         for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_SEQPACKET)}
        for name, proto in netlink.items():
            out[name] = attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto).close())
        out["socketpair_tipc"] = attempt(socket.socketpair, 30, socket.SOCK_SEQPACKET)
        out["socketpair_inet"] = attempt(socket.socketpair, socket.AF_INET, socket.SOCK_STREAM)
        out["vsock_high_bits"] = raw_socket(socket_nr, (1 << 32) | 40, socket.SOCK_STREAM, 0)
        out["vsock_negative"] = raw_socket(socket_nr, (1 << 64) - 1, socket.SOCK_STREAM, 0)
    """, setup=RAW, denied=DENIED, netlink=NETLINK_DENIED, socket_nr=numbers[0])
    refused = {"1": "EAFNOSUPPORT", "2": "EAFNOSUPPORT", "3": "EAFNOSUPPORT", "5": "EAFNOSUPPORT"}
    assert {name: out[name] for name in DENIED} == dict.fromkeys(DENIED, refused)
    assert {name: out[name] for name in NETLINK_DENIED} == dict.fromkeys(NETLINK_DENIED, "EAFNOSUPPORT")
    assert out["socketpair_tipc"] == out["socketpair_inet"] == "EAFNOSUPPORT"
    assert out["vsock_high_bits"] == out["vsock_negative"] == "EAFNOSUPPORT"


async def test_the_families_a_session_needs_still_work(box: Sandbox) -> None:
    out = await probe(box, """
        import socket
        a, b = socket.socketpair()
        a.sendall(b"ping")
        out["unix"] = b.recv(4).decode()
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as server:
                server.bind((address, 0))
                server.listen()
                with socket.create_connection(server.getsockname()[:2]) as client, server.accept()[0] as peer:
                    client.sendall(b"hi")
                    out[str(family)] = peer.recv(2).decode()
        out["netlink_route"] = attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close())
        out["interfaces"] = [name for _, name in socket.if_nameindex()]
        infos = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        out["getaddrinfo"] = sorted({info[4][0] for info in infos})
    """)
    assert out["unix"] == "ping"
    assert out["2"] == out["10"] == "hi"
    assert out["netlink_route"] == "OK"
    assert out["interfaces"] == ["lo"]
    assert "127.0.0.1" in out["getaddrinfo"]
