"""Which addresses the proxy may dial, and what the resolver answers (the operator's map; /etc/hosts for
localhost: no DNS query leaves the machine)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from cellbox.egress.destination import Destination, Resolver, why_not_public
from cellbox.egress.wire import Refusal


@pytest.mark.parametrize(("text", "kind"), [
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("169.254.10.10", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("240.0.0.1", "a reserved address"),
    ("192.0.2.1", "a private address"),  # documentation range
    ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
    ("64:ff9b::a00:1", "a private address"),  # NAT64 of 10.0.0.1
    ("2002:a00:1::1", "a private address"),  # 6to4 of 10.0.0.1
])
def test_addresses_the_proxy_may_not_reach(text: str, kind: str) -> None:
    assert why_not_public(ip_address(text)) == kind


@pytest.mark.parametrize("text", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:93.184.215.14",
                                  "1.1.1.1"])
def test_public_addresses(text: str) -> None:
    assert why_not_public(ip_address(text)) is None


async def test_a_mapped_name_goes_where_the_operator_says() -> None:
    resolver = Resolver({"pypi.test": ("127.0.0.1", 8443)}, timeout=120)
    assert await resolver.find("pypi.test", 443) == Destination("pypi.test", 8443, ("127.0.0.1",))


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    with pytest.raises(Refusal, match=r"'localhost' resolves to .*a loopback address") as caught:
        await Resolver({}, timeout=120).find("localhost", 443)
    assert caught.value.status == 403
