"""The egress CA: kept on disk privately and atomically, reloaded the same, and leaves that verify for their host
only (TLS handshakes in memory, no sockets)."""

from __future__ import annotations

import os
import ssl
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cellbox.egress.authority import CA_CERT, CA_KEY, Authority
from cellbox.errors import SandboxUnavailable


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> ssl.SSLObject:
    """A TLS handshake between two contexts over memory buffers; the client's end, once done."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_end = client.wrap_bio(client_in, client_out, server_hostname=name)
    server_end = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, end in (("client", client_end), ("server", server_end)):
            if not done[side]:
                try:
                    end.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            return client_end
    raise AssertionError("the handshake did not finish")


def trusting(authority: Authority) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=authority.cert_pem.decode())
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def test_the_ca_is_made_once_kept_private_and_reloaded_the_same(tmp_path: Path) -> None:
    folder = tmp_path / "egress"
    first = Authority.load_or_create(folder)
    again = Authority.load_or_create(folder)
    assert again.cert_pem == first.cert_pem
    assert sorted(os.listdir(folder)) == [CA_KEY, CA_CERT]  # no temporary file left behind
    assert stat.S_IMODE((folder / CA_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (folder / CA_CERT).read_bytes() == first.cert_pem


def test_the_ca_certificate_is_a_ca_that_signs_leaves_only(tmp_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(Authority.load_or_create(tmp_path).cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    assert usage.key_cert_sign
    assert isinstance(common_name, str)
    assert common_name.startswith("Cellbox egress CA ")
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3650


def test_a_leaf_verifies_for_its_host_and_not_for_another(tmp_path: Path) -> None:
    authority = Authority.load_or_create(tmp_path)
    context = authority.server_context("api.test")
    end = handshake(context, trusting(authority), "api.test")
    assert end.selected_alpn_protocol() == "http/1.1"
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(context, trusting(authority), "other.test")


def test_a_leaf_does_not_verify_against_another_ca(tmp_path: Path) -> None:
    ours, theirs = Authority.load_or_create(tmp_path / "a"), Authority.load_or_create(tmp_path / "b")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ours.server_context("api.test"), trusting(theirs), "api.test")


def test_the_leaf_names_its_host_for_server_auth(tmp_path: Path) -> None:
    authority = Authority.load_or_create(tmp_path)
    der = handshake(authority.server_context("api.test"), trusting(authority), "api.test").getpeercert(True)
    assert der is not None
    leaf = x509.load_der_x509_certificate(der)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert names.get_values_for_type(x509.DNSName) == ["api.test"]
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 31


def test_a_name_too_long_for_a_common_name_still_gets_a_leaf(tmp_path: Path) -> None:
    authority = Authority.load_or_create(tmp_path)
    host = ".".join(["a" * 60, "b" * 60, "example"])
    handshake(authority.server_context(host), trusting(authority), host)


def test_contexts_are_cached_per_host_in_a_bounded_lru(tmp_path: Path) -> None:
    authority = Authority.load_or_create(tmp_path, cache_size=2)
    a = authority.server_context("a.test")
    b = authority.server_context("b.test")
    assert authority.server_context("a.test") is a  # now the most recent
    authority.server_context("c.test")  # evicts b.test, the least recent
    assert authority.server_context("a.test") is a
    assert authority.server_context("b.test") is not b


def test_leaf_files_are_gone_once_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    authority = Authority.load_or_create(tmp_path / "ca")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    authority.server_context("api.test")
    assert list(scratch.iterdir()) == []


def test_a_key_and_certificate_that_do_not_belong_together_are_refused(tmp_path: Path) -> None:
    Authority.load_or_create(tmp_path / "a")
    Authority.load_or_create(tmp_path / "b")
    (tmp_path / "a" / CA_KEY).write_bytes((tmp_path / "b" / CA_KEY).read_bytes())
    with pytest.raises(SandboxUnavailable, match="do not belong together"):
        Authority.load_or_create(tmp_path / "a")


def test_an_unreadable_ca_is_refused_not_replaced(tmp_path: Path) -> None:
    Authority.load_or_create(tmp_path)
    (tmp_path / CA_CERT).write_bytes(b"not a certificate")
    with pytest.raises(SandboxUnavailable, match="cannot be read"):
        Authority.load_or_create(tmp_path)
    assert (tmp_path / CA_CERT).read_bytes() == b"not a certificate"


def test_a_lone_key_left_by_a_crash_is_replaced_by_a_new_pair(tmp_path: Path) -> None:
    first = Authority.load_or_create(tmp_path)
    (tmp_path / CA_CERT).unlink()
    assert Authority.load_or_create(tmp_path).cert_pem != first.cert_pem
