"""The egress rules: what a pattern matches, what lies within a permit, and what an allowlist with secrets must
be to pass."""

from __future__ import annotations

import pytest

from cellbox.egress.policy import (
    MAX_DOMAINS,
    MAX_SECRET_BYTES,
    Pattern,
    Policy,
    Secret,
    hostname,
    index_host,
    is_ip_literal,
    parse_permit,
    parse_policy,
)
from cellbox.errors import InvalidInput

ANY = parse_permit("*")


def matches(pattern: str, host: str) -> bool:
    return Pattern.parse(pattern).matches(hostname(host))


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("example.com", "example.com", True),
    ("example.com", "api.example.com", False),
    ("example.com", "badexample.com", False),
    ("*.example.com", "api.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
    (".example.com", "example.com", True),
    (".example.com", "a.b.example.com", True),
    (".example.com", "example.org", False),
    ("Example.COM", "eXample.com", True),
    ("example.com.", "example.com", True),
    ("example.com", "example.com.", True),
    ("bücher.example", "BÜCHER.example", True),
    ("bücher.example", "xn--bcher-kva.example", True),
    ("*.bücher.example", "api.xn--bcher-kva.example", True),
])
def test_what_a_pattern_matches(pattern: str, host: str, expected: bool) -> None:
    assert matches(pattern, host) is expected


def test_names_are_canonical_lower_case_ascii_without_the_trailing_dot() -> None:
    assert hostname(" API.Example.com. ") == "api.example.com"
    assert hostname("Bücher.example") == "xn--bcher-kva.example"


@pytest.mark.parametrize("text", ["", ".", "a..b", "-a.com", "a-.com", "a_b.com", "a b.com", "x" * 64 + ".com",
                                  ".".join(["a" * 60] * 5)])
def test_what_is_not_a_host_name(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a valid host name"):
        hostname(text)


@pytest.mark.parametrize("text", ["127.0.0.1", "10.1.2.3", "::1", "[::1]", "[fd00:ec2::254]", "2130706433",
                                  "0x7f.1", "0x7f000001", "127.1", "0177.0.0.1", "::ffff:127.0.0.1"])
def test_ip_literals_in_every_spelling(text: str) -> None:
    assert is_ip_literal(text)


@pytest.mark.parametrize("text", ["example.com", "1e100.net", "123.example", "localhost", "xn--bcher-kva.example"])
def test_names_that_look_numeric_are_still_names(text: str) -> None:
    assert not is_ip_literal(text)


@pytest.mark.parametrize("text", ["127.0.0.1", "[::1]", "2130706433"])
def test_an_ip_literal_is_no_pattern(text: str) -> None:
    with pytest.raises(InvalidInput, match="IP address"):
        Pattern.parse(text)


@pytest.mark.parametrize(("text", "why"), [
    ("https://example.com", "without scheme, port or path"),
    ("example.com:443", "without scheme, port or path"),
    ("example.com/path", "without scheme, port or path"),
    ("user@example.com", "without scheme, port or path"),
    ("*example.com", "wildcard may only lead"),
    ("api.*.example.com", "wildcard may only lead"),
    ("*", "wildcard may only lead"),
])
def test_what_is_not_a_pattern(text: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        Pattern.parse(text)


def test_patterns_print_as_written() -> None:
    assert [str(Pattern.parse(p)) for p in ["Example.com", "*.example.com", ".example.com"]] == [
        "example.com", "*.example.com", ".example.com"]
    assert str(Pattern.parse("*", allow_any=True)) == "*"


@pytest.mark.parametrize(("inner", "outer", "expected"), [
    ("api.example.com", "api.example.com", True),
    ("api.example.com", "*.example.com", True),
    ("api.example.com", ".example.com", True),
    ("example.com", "*.example.com", False),
    ("example.com", ".example.com", True),
    ("*.a.example.com", "*.example.com", True),
    ("*.example.com", "*.example.com", True),
    ("*.example.com", ".example.com", True),
    (".example.com", ".example.com", True),
    (".example.com", "*.example.com", False),
    (".a.example.com", "*.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "*.a.example.com", False),
    ("example.org", "*.example.com", False),
    ("*.example.org", "*", True),
    ("example.org", "*", True),
])
def test_within_a_permit(inner: str, outer: str, expected: bool) -> None:
    assert Pattern.parse(inner).within(Pattern.parse(outer, allow_any=True)) is expected


def test_the_permit_list_splits_on_commas_and_spaces() -> None:
    assert [str(p) for p in parse_permit(" a.com, *.b.com  .c.com,,*")] == ["a.com", "*.b.com", ".c.com", "*"]
    assert parse_permit("") == ()


def test_a_policy_inside_the_permit_allows_its_names_only() -> None:
    policy = parse_policy(["API.example.com", "*.cdn.example.com", "api.example.com"], [],
                          parse_permit("*.example.com"))
    assert policy.domains == ["api.example.com", "*.cdn.example.com"]  # a repeated pattern counted once
    assert policy.allows("api.example.com")
    assert policy.allows("x.cdn.example.com")
    assert not policy.allows("cdn.example.com")
    assert not Policy().allows("api.example.com")


@pytest.mark.parametrize(("domains", "permit", "param", "message"), [
    (["a.com"], (), "network_policy", "network access is turned off"),
    ([], ANY, "network_policy.allowed_domains", "at least one domain"),
    (["a.com"] * (MAX_DOMAINS + 1), ANY, "network_policy.allowed_domains", "at most"),
    (["a.com", "b.org"], parse_permit("*.com"), "network_policy.allowed_domains.1", "not among the domains"),
    (["a.com", "https://b.com"], ANY, "network_policy.allowed_domains.1", "without scheme"),
    (["*.example.com"], parse_permit("api.example.com"), "network_policy.allowed_domains.0", "not among"),
])
def test_an_allowlist_that_does_not_pass(domains: list[str], permit: tuple[Pattern, ...], param: str,
                                         message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        parse_policy(domains, [], permit)
    assert caught.value.param == param


def secret_error(domain: str = "api.example.com", name: str = "API_KEY", value: str = "s3cret",
                 others: list[tuple[str, str, str]] | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_policy(["api.example.com", "*.cdn.example.com"], [*(others or []), (domain, name, value)], ANY)
    return caught.value


@pytest.mark.parametrize("name", ["PATH", "HOME", "HTTPS_PROXY", "https_proxy", "SSL_CERT_FILE", "LD_PRELOAD",
                                  "CELLBOX_TOKEN", "1KEY", "KEY-NAME", "", "K" * 129])
def test_a_secret_may_not_take_a_name_the_container_needs_or_no_name(name: str) -> None:
    error = secret_error(name=name)
    assert error.param == "network_policy.domain_secrets.0.name"


@pytest.mark.parametrize("value", ["", "a\r\nX-Injected: 1", "line\n", "nul\0", "bell\a", "del\x7f", " padded",
                                   "padded ", "x" * (MAX_SECRET_BYTES + 1), "é" * (MAX_SECRET_BYTES // 2 + 1)])
def test_a_secret_value_must_fit_in_a_header(value: str) -> None:
    error = secret_error(value=value)
    assert error.param == "network_policy.domain_secrets.0.value"
    assert value not in str(error) or not value


@pytest.mark.parametrize("domain", ["other.example.com", "*.example.com", ".cdn.example.com", "example.com"])
def test_a_secrets_domain_must_be_inside_the_allowlist(domain: str) -> None:
    error = secret_error(domain=domain)
    assert error.param == "network_policy.domain_secrets.0.domain"
    assert "not in allowed_domains" in str(error)


def test_two_secrets_may_not_share_a_name() -> None:
    error = secret_error(others=[("api.example.com", "API_KEY", "first")])
    assert error.param == "network_policy.domain_secrets.1.name"


def test_secrets_go_to_their_domains_and_never_show_their_value() -> None:
    policy = parse_policy(["api.example.com", "*.cdn.example.com"],
                          [("api.example.com", "API_KEY", "tab\tinside-is-fine"), ("*.cdn.example.com", "CDN", "c")],
                          ANY)
    assert [s.name for s in policy.secrets_for("api.example.com")] == ["API_KEY"]
    assert [s.name for s in policy.secrets_for("x.cdn.example.com")] == ["CDN"]
    assert policy.secrets_for("cdn.example.com") == ()
    assert "tab\tinside-is-fine" not in repr(policy.secrets[0])
    assert "tab\tinside-is-fine" not in repr(policy)
    assert "API_KEY" in repr(Secret(Pattern.parse("a.com"), "API_KEY", "hidden"))
    assert "hidden" not in repr(Secret(Pattern.parse("a.com"), "API_KEY", "hidden"))


@pytest.mark.parametrize(("url", "host"), [("https://pypi.internal/simple/", "pypi.internal"),
                                           ("http://Mirror.Example.:80/pypi/simple", "mirror.example"),
                                           ("https://pypi.internal:443/simple", "pypi.internal")])
def test_the_pip_index_is_a_host_on_its_schemes_port(url: str, host: str) -> None:
    assert index_host(url) == Pattern(host, itself=True, below=False)


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://pypi.internal/simple", "http:// or https://"), ("pypi.internal/simple", "http:// or https://"),
    ("https://pypi.internal:8443/simple", "CELLBOX_EGRESS_RESOLVE"), ("https://u:p@pypi.internal/", "no credentials"),
    ("https://10.0.0.5/simple", "IP address"), ("https://pypi.internal:x/", "invalid port")])
def test_what_is_not_a_pip_index(url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        index_host(url)
