"""Which Host headers name the loopback (open local mode serves only those)."""

from __future__ import annotations

import pytest

from cellbox.api.hosts import is_loopback, same_origin


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST.", "a.b.localhost:1", "127.0.0.1",
                                  "127.0.0.1:8000", "127.255.0.9", "[::1]", "[::1]:8000", "::1"])
def test_loopback_names(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["", "example.com", "localhost.example.com", "127.0.0.1.example.com",
                                  "localhostx", "0.0.0.0", "10.0.0.1:80", "[::2]", "[::1", "[fe80::1]:80",
                                  "2130706433", "0x7f000001"])
def test_other_names(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", True), ("http://LOCALHOST:8000", "localhost:8000", True),
    ("http://[::1]:8000", "[::1]:8000", True), ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
    ("http://localhost:8000", "127.0.0.1:8000", False), ("https://evil.example", "127.0.0.1:8000", False),
    ("null", "127.0.0.1:8000", False), ("file://", "127.0.0.1:8000", False),
    ("http://127.0.0.1:8000/x", "127.0.0.1:8000", False), ("", "127.0.0.1:8000", False)])
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same
