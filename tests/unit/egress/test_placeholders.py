"""Substitution of placeholders by secret values: per host, whole placeholders only, one pass."""

from __future__ import annotations

from cellbox.egress.placeholders import Substitution
from cellbox.egress.policy import parse_permit, parse_policy

POLICY = parse_policy(["api.test", "*.cdn.test"], [("api.test", "API", "real-api"), ("*.cdn.test", "CDN", "real-cdn")],
                      parse_permit("*"))
API, CDN = POLICY.secrets
PLACEHOLDERS = {"ph-api": API, "ph-api-long": CDN, "ph-cdn": CDN}


def test_only_the_hosts_secrets_are_substituted() -> None:
    api = Substitution(POLICY, PLACEHOLDERS, "api.test")
    cdn = Substitution(POLICY, PLACEHOLDERS, "x.cdn.test")
    assert api.apply(b"Bearer ph-api, ph-cdn") == b"Bearer real-api, ph-cdn"
    assert cdn.apply(b"Bearer ph-api, ph-cdn") == b"Bearer ph-api, real-cdn"
    assert Substitution(POLICY, PLACEHOLDERS, "elsewhere.test").apply(b"ph-api ph-cdn") == b"ph-api ph-cdn"


def test_the_longest_placeholder_wins_and_values_are_not_searched_again() -> None:
    cdn = Substitution(POLICY, PLACEHOLDERS, "x.cdn.test")
    assert cdn.apply(b"ph-api-long") == b"real-cdn"
    loop = Substitution(POLICY, {"a": API, "real-api": API}, "api.test")
    assert loop.apply(b"a") == b"real-api"


def test_a_secret_outside_the_policy_is_never_substituted() -> None:
    other = parse_policy(["api.test"], [("api.test", "API", "foreign")], parse_permit("*")).secrets[0]
    assert Substitution(POLICY, {"ph": other}, "api.test").apply(b"ph") == b"ph"
