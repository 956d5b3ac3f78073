"""The egress proxy's certificate authority: one CA per server, kept on disk, and a leaf certificate per host.

Code in a container trusts the CA (``cert_pem``); the proxy ends each HTTPS tunnel with a leaf for the tunnel's
host, made on demand and kept in a bounded cache. All leaves share one key, made at start and never written
anywhere but the moment's temporary file: a key per host would cost a key generation per new host and protect
nothing more, since whoever could read one of them could read them all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import tempfile
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cellbox.errors import SandboxUnavailable

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
CA_LIFETIME = timedelta(days=3650)
LEAF_LIFETIME = timedelta(days=30)
LEAF_RENEWAL = timedelta(days=1)  # a cached leaf this close to its end is made anew
CLOCK_SKEW = timedelta(hours=1)  # leaves are valid from a little before now: a container's clock may lag
CACHE_SIZE = 1024
MAX_COMMON_NAME = 64  # X.509's upper bound; a longer host name goes in the SAN only

CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class Authority:
    """The CA's key and certificate, and the server-side TLS contexts made from them (cached per host)."""

    def __init__(self, key: CAKey, cert: x509.Certificate, cache_size: int = CACHE_SIZE) -> None:
        self._key = key
        self._cert = cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        self._cache_size = cache_size
        self._contexts: OrderedDict[str, tuple[ssl.SSLContext, datetime]] = OrderedDict()

    @classmethod
    def load_or_create(cls, directory: Path, cache_size: int = CACHE_SIZE) -> Authority:
        """The CA kept in ``directory``, made there (key mode 0600) the first time."""
        key_path, cert_path = directory / CA_KEY, directory / CA_CERT
        if key_path.exists() and cert_path.exists():
            return cls(*_load(key_path, cert_path), cache_size=cache_size)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _ca_certificate(key)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The key first: a crash between the two writes leaves no certificate, so the next start makes a new pair.
        _write_atomically(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
        _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(key, cert, cache_size=cache_size)

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a leaf for ``host`` (a canonical name), offering HTTP/1.1 only."""
        now = datetime.now(UTC)
        cached = self._contexts.get(host)
        if cached is not None and cached[1] - now > LEAF_RENEWAL:
            self._contexts.move_to_end(host)
            return cached[0]
        context, expires = self._leaf_context(host, now)
        self._contexts[host] = (context, expires)
        self._contexts.move_to_end(host)
        while len(self._contexts) > self._cache_size:
            self._contexts.popitem(last=False)
        return context

    def _leaf_context(self, host: str, now: datetime) -> tuple[ssl.SSLContext, datetime]:
        leaf = self._leaf(host, now)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        # SSLContext loads a certificate and key from files only: a private directory, gone right after.
        with tempfile.TemporaryDirectory(prefix="cellbox-egress-") as private:
            path = Path(private) / "leaf.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(leaf.public_bytes(serialization.Encoding.PEM) + self._leaf_key_pem)
            context.load_cert_chain(path)
        return context, leaf.not_valid_after_utc

    def _leaf(self, host: str, now: datetime) -> x509.Certificate:
        fits = len(host) <= MAX_COMMON_NAME
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)] if fits else [])
        public_key = self._leaf_key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + LEAF_LIFETIME, self._cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=not fits)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cellbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"Cellbox egress CA {secrets.token_hex(4)}"),
    ])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _load(key_path: Path, cert_path: Path) -> tuple[CAKey, x509.Certificate]:
    """The stored pair, checked to belong together and to be a CA (a broken pair is the operator's to remove:
    replacing it silently would leave running containers trusting a CA that no longer signs)."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, TypeError, x509.ExtensionNotFound) as exc:
        raise _broken(key_path, cert_path, "cannot be read") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) or not constraints.ca:
        raise _broken(key_path, cert_path, "is not an EC or RSA certificate authority")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise _broken(key_path, cert_path, "is a key and a certificate that do not belong together")
    return key, cert


def _broken(key_path: Path, cert_path: Path, what: str) -> SandboxUnavailable:
    return SandboxUnavailable(f"the egress CA in {key_path.parent} {what}; remove {key_path.name} and "
                              f"{cert_path.name} to have a new one made (containers then need restarting)")


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write a temporary file beside ``path`` and rename it over: a reader sees the old file or the new one."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
