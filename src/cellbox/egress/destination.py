"""Where a permitted host name connects: the operator's mapping, trusted as given, or a DNS answer made only of
public addresses.

The address checked is the address dialled: a name is resolved once per upstream connection and the connection
goes to the checked address, so a second DNS answer cannot slip in between check and connect (no rebinding).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from cellbox.egress.wire import CHUNK, Refusal

METADATA = frozenset({ip_address("169.254.169.254"), ip_address("fd00:ec2::254")})
MAX_ATTEMPTS = 4  # addresses of one answer tried in turn, each with the whole connect timeout
_SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64 = ip_network("64:ff9b::/96")

Address = IPv4Address | IPv6Address

_KINDS: tuple[tuple[str, Callable[[Address], bool]], ...] = (
    ("a loopback address", lambda a: a.is_loopback),
    ("a link-local address", lambda a: a.is_link_local),
    ("a multicast address", lambda a: a.is_multicast),
    ("an unspecified address", lambda a: a.is_unspecified),
    ("a reserved address", lambda a: a.is_reserved),
    ("a shared (carrier-grade NAT) address", lambda a: a.version == 4 and a in _SHARED),
    ("a private address", lambda a: a.is_private),
    ("a non-global address", lambda a: not a.is_global),
)


def why_not_public(address: Address) -> str | None:
    """What kind of address this is, if the proxy may not reach it; None for a public one."""
    if address in METADATA:
        return "a cloud metadata address"
    inner = _embedded_ipv4(address)
    if inner is not None:
        return why_not_public(inner)
    return next((kind for kind, test in _KINDS if test(address)), None)


def _embedded_ipv4(address: Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4), which is where packets would go."""
    if not isinstance(address, IPv6Address):
        return None
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


@dataclass(frozen=True)
class Destination:
    """A checked host: its name (for TLS and the Host header), the port and the addresses to dial."""

    host: str
    port: int
    addresses: tuple[str, ...]


class Resolver:
    """Names to checked destinations: ``mapping`` (operator's, ``name -> (ip, port)``) first, then DNS."""

    def __init__(self, mapping: Mapping[str, tuple[str, int]], timeout: float) -> None:
        self._mapping = dict(mapping)
        self._timeout = timeout

    async def find(self, host: str, port: int) -> Destination:
        if host in self._mapping:
            address, mapped_port = self._mapping[host]
            return Destination(host, mapped_port, (address,))
        try:
            async with asyncio.timeout(self._timeout):
                answer = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise Refusal(504, f"{host!r} could not be resolved within {self._timeout:g} s") from None
        except (OSError, UnicodeError):
            raise Refusal(502, f"{host!r} could not be resolved") from None
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in answer))
        for text in addresses:
            kind = why_not_public(ip_address(text))
            if kind is not None:
                raise Refusal(403, f"{host!r} resolves to {text}, {kind}: the proxy reaches public addresses only")
        if not addresses:
            raise Refusal(502, f"{host!r} could not be resolved")
        return Destination(host, port, addresses)


async def connect(destination: Destination, tls: ssl.SSLContext | None,
                  timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to one of the destination's addresses (TLS verified for its name when ``tls`` is given)."""
    host = destination.host
    timed_out = False
    for address in destination.addresses[:MAX_ATTEMPTS]:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(
                    address, destination.port, limit=CHUNK, ssl=tls, server_hostname=host if tls else None,
                    ssl_handshake_timeout=timeout if tls else None)
        except ssl.SSLCertVerificationError as exc:
            raise Refusal(502, f"{host!r} presented a certificate that does not verify ({exc.verify_message})"
                          ) from None
        except ssl.SSLError:
            raise Refusal(502, f"the TLS handshake with {host!r} failed") from None
        except TimeoutError:
            timed_out = True
        except OSError:
            pass
    if timed_out:
        raise Refusal(504, f"{host!r} did not accept a connection within {timeout:g} s")
    raise Refusal(502, f"{host!r} refused the connection or could not be reached")
