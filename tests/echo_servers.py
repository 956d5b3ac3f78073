"""Local stand-ins for the servers a container's code calls out to, on 127.0.0.1 only: HTTP and HTTPS servers that
answer with what they received (method, path, headers) as JSON, or with a large body for the byte limit, and a
test certificate authority for their certificates (also the unit tests' proxy's), and a package index of
wheels made by hand. The egress proxy reaches them through CELLBOX_EGRESS_RESOLVE
mappings, so no name is ever looked up and nothing leaves the machine."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BIG = 1 << 20  # bytes of /big


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/big"):
            body = b"x" * BIG
            ctype = "application/octet-stream"
        else:
            body = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                               "server": self.server.label}).encode()  # type: ignore[attr-defined]
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed test CA, valid for a month."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
              names: list[str]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for ``names``, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


class UpstreamAuthority:
    """A CA the proxy is told to trust (CELLBOX_EGRESS_CA_BUNDLE), and server certificates from it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key, self._cert = make_ca("Cellbox tests' upstream CA")
        self.bundle = directory / "upstream-ca.pem"
        self.bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, *names: str) -> ssl.SSLContext:
        key, cert = make_leaf(self._key, self._cert, list(names))
        cert_file, key_file = self.directory / f"{names[0]}.pem", self.directory / f"{names[0]}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context


def make_wheel(directory: Path, name: str, version: str, files: dict[str, bytes],
               requires: tuple[str, ...] = (), entry_points: str = "") -> Path:
    """A pure-Python wheel written by hand (no build tool, no network): ``files`` by path inside the wheel."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                    + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    if entry_points:
        contents[f"{info}/entry_points.txt"] = entry_points.encode()
    contents[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: cellbox-tests\nRoot-Is-Purelib: true\n"
                                 b"Tag: py3-none-any\n")
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in contents.items()]
    contents[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in contents.items():
            archive.writestr(path, data)
    return wheel


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


class _Index(BaseHTTPRequestHandler):
    """A PEP 503 simple index of the wheels in one directory: ``/simple/<project>/`` and ``/files/<wheel>``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        directory: Path = self.server.directory  # type: ignore[attr-defined]
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        parts = self.path.split("?")[0].strip("/").split("/")
        body, ctype = b"", "text/html"
        if len(parts) == 2 and parts[0] == "simple":
            project = re.sub(r"[-_.]+", "_", parts[1]).lower()
            links = [f'<a href="/files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">{w.name}</a>'
                     for w in sorted(directory.glob("*.whl")) if w.name.lower().startswith(project + "-")]
            body = ("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>").encode() if links else b""
        elif len(parts) == 2 and parts[0] == "files" and (directory / parts[1]).is_file() and "/" not in parts[1]:
            body, ctype = (directory / parts[1]).read_bytes(), "application/octet-stream"
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def echo_server(label: str, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """An echo server on 127.0.0.1 (HTTPS with ``tls``); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.label = label  # type: ignore[attr-defined]
    with _serving(server, tls) as port:
        yield port


@contextmanager
def package_index(directory: Path, tls: ssl.SSLContext) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS package index of ``directory``'s wheels on 127.0.0.1; yields its port and the paths requested."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    server.directory, server.requests = directory, []  # type: ignore[attr-defined]
    with _serving(server, tls) as port:
        yield port, server.requests  # type: ignore[attr-defined]


@contextmanager
def _serving(server: ThreadingHTTPServer, tls: ssl.SSLContext | None) -> Iterator[int]:
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
