"""Which domains a container may reach, and which secrets go where: the rules, parsed and checked once.

A pattern is a host name, matched without regard to case or a trailing dot (IDNs compare in their ASCII form):

- ``example.com``   that name only;
- ``*.example.com`` any name below it (``api.example.com``, ``a.b.example.com``), not ``example.com`` itself;
- ``.example.com``  the name and any name below it.

IP literals, ports and URLs are not patterns (egress goes by name, to ports 80 and 443 only). The operator's
permit list (``CELLBOX_EGRESS_PERMIT``) uses the same syntax plus ``*`` for any name; a container's allowlist must
lie inside it, pattern by pattern.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cellbox.errors import InvalidInput

MAX_DOMAINS = 256
MAX_SECRETS = 64
MAX_SECRET_BYTES = 8192
PORTS = {"http": 80, "https": 443}

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# A value goes into HTTP header fields, where tab is the only control character allowed (and no space may end
# one); a value that could not stand there would make the HTTP layer fail with the value in its message.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Names the container's own set-up depends on: a secret may not take them over.
RESERVED_NAMES = frozenset({
    "PATH", "HOME", "USER", "SHELL", "TERM", "LANG", "LC_ALL", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE",
    "PYTHONSTARTUP", "PYTHONSAFEPATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "TMPDIR", "MPLBACKEND", "MPLCONFIGDIR",
    "IPYTHONDIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
    "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_TARGET", "PIP_PREFIX", "PIP_USER",
    "PIP_CONFIG_FILE", "NODE_EXTRA_CA_CERTS",
})


def hostname(text: str) -> str:
    """A host name in its canonical form (lower case, ASCII, no trailing dot), or InvalidInput."""
    name = text.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidInput(f"{text!r} is not a valid host name") from exc
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise InvalidInput(f"{text!r} is not a valid host name")
    if is_ip_literal(name):
        raise InvalidInput(f"{text!r} is an IP address: egress goes by domain name only")
    return name


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return bool(re.fullmatch(r"[0-9.]+|0x[0-9a-f.x]+", host))  # 2130706433, 0x7f.1: numbers, not names
    return True


@dataclass(frozen=True)
class Pattern:
    """One allowlist entry: ``base`` itself (``exact`` or ``tree``) and/or the names below it (``below``)."""

    base: str
    itself: bool
    below: bool

    @classmethod
    def parse(cls, text: str, allow_any: bool = False) -> Pattern:
        raw = text.strip()
        if allow_any and raw == "*":
            return cls("", itself=False, below=True)
        if any(c in raw for c in "/:[]@"):
            if is_ip_literal(raw):
                raise InvalidInput(f"{text!r} is an IP address: egress goes by domain name only")
            raise InvalidInput(f"{text!r}: a domain pattern is a host name, without scheme, port or path")
        if raw.startswith("*."):
            return cls(hostname(raw[2:]), itself=False, below=True)
        if raw.startswith("."):
            return cls(hostname(raw[1:]), itself=True, below=True)
        if "*" in raw:
            raise InvalidInput(f"{text!r}: a wildcard may only lead a pattern, as in '*.example.com'")
        return cls(hostname(raw), itself=True, below=False)

    def matches(self, host: str) -> bool:
        if not self.base:
            return True
        return (self.itself and host == self.base) or (self.below and host.endswith("." + self.base))

    def within(self, other: Pattern) -> bool:
        """Whether every name this pattern matches, ``other`` matches too."""
        if not other.base:
            return True
        if not self.below:
            return other.matches(self.base)
        deeper = self.base.endswith("." + other.base)  # strictly below other's base
        return other.below and (deeper or (self.base == other.base and (other.itself or not self.itself)))

    def __str__(self) -> str:
        if not self.base:
            return "*"
        return ("." if self.itself else "*.") + self.base if self.below else self.base


@dataclass(frozen=True)
class Secret:
    domain: Pattern
    name: str
    value: str = field(repr=False)  # never in a log line or a traceback's locals


@dataclass(frozen=True)
class Policy:
    """A container's egress: the patterns it may reach and its secrets (empty ``allowed``: no egress)."""

    allowed: tuple[Pattern, ...] = ()
    secrets: tuple[Secret, ...] = ()

    def allows(self, host: str) -> bool:
        return any(p.matches(host) for p in self.allowed)

    def secrets_for(self, host: str) -> tuple[Secret, ...]:
        return tuple(s for s in self.secrets if s.domain.matches(host))

    @property
    def domains(self) -> list[str]:
        """What the container object shows (never the secrets)."""
        return [str(p) for p in self.allowed]


def index_host(url: str) -> Pattern:
    """The host of the operator's ``CELLBOX_PIP_INDEX_URL``, an http(s) URL on its scheme's own port (the proxy's
    only ports; CELLBOX_EGRESS_RESOLVE maps a name to another address and port)."""
    where = "CELLBOX_PIP_INDEX_URL"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{where} {url!r} must be an http:// or https:// URL with a host name")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{where} {url!r} has an invalid port") from exc
    if port not in (None, PORTS[parts.scheme]) or parts.username or parts.password:
        raise InvalidInput(f"{where} {url!r}: no credentials and no port but {PORTS[parts.scheme]} (the egress "
                           "proxy's); map the name to another address and port with CELLBOX_EGRESS_RESOLVE")
    try:
        return Pattern.parse(parts.hostname)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from exc


def parse_permit(text: str) -> tuple[Pattern, ...]:
    """The operator's ``CELLBOX_EGRESS_PERMIT``: patterns separated by commas or spaces (empty: egress off)."""
    return tuple(Pattern.parse(part, allow_any=True) for part in re.split(r"[\s,]+", text) if part)


def parse_policy(domains: list[str], secrets: list[tuple[str, str, str]], permit: tuple[Pattern, ...],
                 param: str = "network_policy") -> Policy:
    """A tenant's allowlist and secrets, checked against the operator's permit list; InvalidInput names the
    field at fault."""
    if not permit:
        raise InvalidInput("network access is turned off on this server (the operator has set no "
                           "CELLBOX_EGRESS_PERMIT); use {\"type\": \"disabled\"}", param)
    if not domains:
        raise InvalidInput("an allowlist needs at least one domain", f"{param}.allowed_domains")
    if len(domains) > MAX_DOMAINS:
        raise InvalidInput(f"at most {MAX_DOMAINS} allowed domains", f"{param}.allowed_domains")
    if len(secrets) > MAX_SECRETS:
        raise InvalidInput(f"at most {MAX_SECRETS} domain secrets", f"{param}.domain_secrets")
    allowed: list[Pattern] = []
    for i, text in enumerate(domains):
        field = f"{param}.allowed_domains.{i}"
        try:
            pattern = Pattern.parse(text)
        except InvalidInput as exc:
            raise InvalidInput(str(exc), field) from exc
        if not any(pattern.within(p) for p in permit):
            raise InvalidInput(f"{text!r} is not among the domains this server permits "
                               f"({', '.join(map(str, permit))})", field)
        if pattern not in allowed:
            allowed.append(pattern)
    parsed: list[Secret] = []
    names: set[str] = set()
    for i, (domain, name, value) in enumerate(secrets):
        field = f"{param}.domain_secrets.{i}"
        try:
            pattern = Pattern.parse(domain)
        except InvalidInput as exc:
            raise InvalidInput(str(exc), f"{field}.domain") from exc
        if not any(pattern.within(p) for p in allowed):
            raise InvalidInput(f"the secret's domain {domain!r} is not in allowed_domains", f"{field}.domain")
        if not _NAME.match(name) or name in RESERVED_NAMES or name.startswith("CELLBOX_"):
            raise InvalidInput(f"{name!r} cannot be a secret's name: use an environment variable name "
                               "(letters, digits, _) that the container's set-up does not use", f"{field}.name")
        if name in names:
            raise InvalidInput(f"two secrets are named {name!r}", f"{field}.name")
        if not value or len(value.encode()) > MAX_SECRET_BYTES or _CONTROL.search(value) or value != value.strip():
            raise InvalidInput(f"a secret's value must be 1 to {MAX_SECRET_BYTES} bytes with no line breaks, "
                               "other control characters or surrounding spaces", f"{field}.value")
        names.add(name)
        parsed.append(Secret(pattern, name, value))
    return Policy(tuple(allowed), tuple(parsed))
