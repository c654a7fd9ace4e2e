"""The CA: root files, key-mode refusal, workload certificate fields, CSR checks, openssl."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshloop.identity.ca import (
    CertificateAuthority,
    TrustBundle,
    key_pem,
    load_ca,
    load_or_create_ca,
    new_intermediate,
    new_root,
    pem,
)
from meshloop.identity.errors import CSRRefused, KeyFilePermissions
from meshloop.identity.spiffe import SpiffeId

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ME = SpiffeId("cluster.local", "shop", "cart")


def make_csr(uris: tuple[str, ...] = (), key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uris:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris])
        builder = builder.add_extension(san, critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def ca() -> CertificateAuthority:
    root, key = new_root(NOW)
    return CertificateAuthority(root, key, TrustBundle([root]))


def openssl_verify(tmp_path: Path, roots_pem: str, chain: list[str]) -> subprocess.CompletedProcess[str]:
    roots, untrusted, leaf = tmp_path / "roots.pem", tmp_path / "chain.pem", tmp_path / "leaf.pem"
    roots.write_text(roots_pem)
    untrusted.write_text("".join(chain))
    leaf.write_text(chain[0])
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            str(roots),
            "-untrusted",
            str(untrusted),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_root_is_created_0600_and_reopened(tmp_path: Path) -> None:
    first = load_or_create_ca(tmp_path)
    key_file = tmp_path / "ca" / "root-key.pem"
    assert oct(key_file.stat().st_mode & 0o777) == oct(0o600)
    assert oct((tmp_path / "ca" / "root-cert.pem").stat().st_mode & 0o777) == oct(0o600)
    root = first.root
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert root.not_valid_after_utc - root.not_valid_before_utc > dt.timedelta(days=3649)
    second = load_or_create_ca(tmp_path)
    assert second.root == root
    assert list(tmp_path.joinpath("ca").iterdir()) and not list(tmp_path.glob("ca/.*tmp"))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o602, 0o660])
def test_key_readable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    load_or_create_ca(tmp_path)
    key_file = tmp_path / "ca" / "root-key.pem"
    os.chmod(key_file, mode)
    with pytest.raises(KeyFilePermissions) as refused:
        load_or_create_ca(tmp_path)
    message = str(refused.value)
    assert str(key_file) in message and f"{mode:04o}" in message and f"chmod 600 {key_file}" in message


def test_workload_certificate_fields(ca: CertificateAuthority) -> None:
    chain = ca.sign_csr(make_csr((ME.uri,)), ME, now=NOW)
    assert len(chain) == 1
    cert = x509.load_pem_x509_certificate(chain[0].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [ME.uri]
    assert len(list(san.value)) == 1
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = ca.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    assert cert.not_valid_after_utc - NOW == dt.timedelta(hours=24)
    assert dt.timedelta(0) < NOW - cert.not_valid_before_utc <= dt.timedelta(minutes=5)
    assert cert.subject == x509.Name([])
    assert cert.serial_number.bit_length() > 64


def test_serials_differ(ca: CertificateAuthority) -> None:
    csr = make_csr()
    serials = {
        x509.load_pem_x509_certificate(ca.sign_csr(csr, ME)[0].encode()).serial_number for _ in range(20)
    }
    assert len(serials) == 20


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (dt.timedelta(hours=1), dt.timedelta(hours=1)),
        (dt.timedelta(days=90), dt.timedelta(days=90)),
        (None, dt.timedelta(hours=24)),
        (dt.timedelta(0), dt.timedelta(hours=24)),
    ],
)
def test_ttl(ca: CertificateAuthority, ttl: dt.timedelta | None, expected: dt.timedelta) -> None:
    cert = x509.load_pem_x509_certificate(ca.sign_csr(make_csr(), ME, ttl, now=NOW)[0].encode())
    assert cert.not_valid_after_utc - NOW == expected


def test_ttl_over_90_days_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CSRRefused) as refused:
        ca.sign_csr(make_csr(), ME, dt.timedelta(days=90, seconds=1), now=NOW)
    assert refused.value.reason == "ttl_too_long"


def test_not_after_never_exceeds_the_signing_certificate() -> None:
    root, key = new_root(NOW, lifetime=dt.timedelta(hours=2))
    ca = CertificateAuthority(root, key, TrustBundle([root]))
    cert = x509.load_pem_x509_certificate(ca.sign_csr(make_csr(), ME, now=NOW)[0].encode())
    assert cert.not_valid_after_utc == root.not_valid_after_utc


def test_csr_for_another_identity_is_refused(ca: CertificateAuthority) -> None:
    other = SpiffeId("cluster.local", "bank", "vault").uri
    with pytest.raises(CSRRefused) as refused:
        ca.sign_csr(make_csr((other,)), ME)
    assert refused.value.reason == "identity_mismatch" and other in str(refused.value)


def test_requested_dns_names_are_not_issued(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("bank.example"), x509.UniformResourceIdentifier(ME.uri)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(san, False)
    data = csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    cert = x509.load_pem_x509_certificate(ca.sign_csr(data, ME)[0].encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == []


def test_tampered_csr_signature_is_refused(ca: CertificateAuthority) -> None:
    csr = x509.load_pem_x509_csr(make_csr((ME.uri,)))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the ECDSA signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRRefused) as refused:
        ca.sign_csr(tampered, ME)
    assert refused.value.reason == "bad_signature"


def test_garbage_csr_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CSRRefused) as refused:
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", ME)
    assert refused.value.reason == "bad_csr"


def test_openssl_verifies_issued_chains_and_shows_the_spiffe_san(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    for _ in range(3):
        chain = ca.sign_csr(make_csr(), ME)
        result = openssl_verify(tmp_path, ca.bundle.pem(), chain)
        assert result.returncode == 0, result.stdout + result.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text"], input=chain[0], capture_output=True, text=True, check=True
    ).stdout
    assert f"URI:{ME.uri}" in text


def test_user_intermediate_chain_of_two_verifies(tmp_path: Path) -> None:
    root, root_key = new_root(NOW - dt.timedelta(days=1))
    inter, inter_key = new_intermediate(root, root_key, NOW - dt.timedelta(days=1))
    (tmp_path / "ca-cert.pem").write_text(pem(inter) + pem(root))
    key_file = tmp_path / "ca-key.pem"
    key_file.touch(mode=0o600)
    key_file.write_bytes(key_pem(inter_key))
    ca = load_ca(tmp_path / "ca-cert.pem", key_file)
    chain = ca.sign_csr(make_csr(), ME)
    assert len(chain) == 2 and x509.load_pem_x509_certificate(chain[1].encode()) == inter
    assert ca.bundle.roots == (root,)
    result = openssl_verify(tmp_path, pem(root), chain)
    assert result.returncode == 0, result.stdout + result.stderr
    # the chain does not verify against an unrelated root
    other, _ = new_root(NOW)
    assert openssl_verify(tmp_path, pem(other), chain).returncode != 0


def test_user_key_with_open_mode_is_refused(tmp_path: Path) -> None:
    root, key = new_root(NOW)
    (tmp_path / "ca-cert.pem").write_text(pem(root))
    key_file = tmp_path / "ca-key.pem"
    key_file.write_bytes(key_pem(key))
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyFilePermissions, match="chmod 600"):
        load_ca(tmp_path / "ca-cert.pem", key_file)


def test_trust_bundle_with_two_roots_verifies_both(tmp_path: Path) -> None:
    old_root, old_key = new_root(NOW)
    new_root_cert, new_key = new_root(NOW)
    bundle = TrustBundle([old_root])
    bundle.add(new_root_cert)
    bundle.add(old_root)  # no duplicate
    assert bundle.roots == (old_root, new_root_cert)
    assert TrustBundle.from_pem(bundle.pem()).roots == bundle.roots
    for root, key in ((old_root, old_key), (new_root_cert, new_key)):
        chain = CertificateAuthority(root, key, bundle).sign_csr(make_csr(), ME)
        result = openssl_verify(tmp_path, bundle.pem(), chain)
        assert result.returncode == 0, result.stdout + result.stderr
    stranger, stranger_key = new_root(NOW)
    chain = CertificateAuthority(stranger, stranger_key, TrustBundle([stranger])).sign_csr(make_csr(), ME)
    assert openssl_verify(tmp_path, bundle.pem(), chain).returncode != 0
