"""The CA's DER-template fast path gives exactly the certificate ``CertificateBuilder`` gives.

``sign_csr`` encodes workload certificates itself (``meshloop.identity.fast_x509``);
``CertificateAuthority.issue`` still uses ``CertificateBuilder``. With the serial pinned,
the two must produce the same TBSCertificate byte for byte, and the same fields once
parsed; openssl must verify the fast path's chains.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshloop.identity import ca as ca_module
from meshloop.identity import fast_x509
from meshloop.identity.ca import CertificateAuthority, TrustBundle, new_intermediate, new_root, pem
from meshloop.identity.errors import CSRRefused
from meshloop.identity.spiffe import SpiffeId

NOW = dt.datetime(2026, 3, 1, 12, 0, 30, 123456, tzinfo=dt.UTC)
ME = SpiffeId("cluster.local", "shop", "cart")
SEGMENT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
# Kubernetes: a namespace is a DNS label (≤ 63), a service account a DNS subdomain (≤ 253).
LONGEST = SpiffeId("cluster.local", "n" * 63, "s" * 253)


def _root_ca(
    now: dt.datetime = NOW, lifetime: dt.timedelta = dt.timedelta(days=3650)
) -> CertificateAuthority:
    root, key = new_root(now, lifetime=lifetime)
    return CertificateAuthority(root, key, TrustBundle([root]))


def _intermediate_ca(now: dt.datetime = NOW) -> CertificateAuthority:
    root, root_key = new_root(now - dt.timedelta(days=1))
    inter, inter_key = new_intermediate(root, root_key, now - dt.timedelta(days=1))
    return CertificateAuthority(inter, inter_key, TrustBundle([root]), [inter])


ROOT_CA = _root_ca()
INTERMEDIATE_CA = _intermediate_ca()


def make_csr(
    key: ec.EllipticCurvePrivateKey,
    uris: tuple[str, ...] = (),
    critical: bool = True,
    dns: tuple[str, ...] = (),
    hash_algorithm: hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=critical)
    csr = builder.sign(key, hash_algorithm or hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


@contextmanager
def pinned_serial(serial: int) -> Iterator[None]:
    with mock.patch.object(ca_module, "serial_number", lambda: serial):
        yield


@contextmanager
def no_builder() -> Iterator[None]:
    """Fail if sign_csr falls back to CertificateAuthority.issue (CertificateBuilder)."""
    with mock.patch.object(CertificateAuthority, "issue", side_effect=AssertionError("builder path taken")):
        yield


def fields(cert: x509.Certificate) -> dict[str, object]:
    return {
        "version": cert.version,
        "serial": cert.serial_number,
        "subject": cert.subject,
        "issuer": cert.issuer,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "public_key": cert.public_key(),
        "signature_algorithm": cert.signature_algorithm_oid,
        "extensions": [(e.oid, e.critical, e.value) for e in cert.extensions],
    }


def fast_and_builder(
    ca: CertificateAuthority,
    identity: SpiffeId,
    csr: bytes,
    now: dt.datetime | None,
    ttl: dt.timedelta | None,
    serial: int = 0x1234_5678_9ABC_DEF0_1122_3344_5566_7788,
    fast: bool = True,
) -> tuple[x509.Certificate, x509.Certificate, list[str]]:
    """(sign_csr's leaf, CertificateBuilder's leaf for the same inputs, sign_csr's chain).

    ``fast``: sign_csr must not fall back to ``issue`` (the builder) for these inputs.
    """
    public_key = x509.load_pem_x509_csr(csr).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    when = now or dt.datetime.now(dt.UTC)
    with pinned_serial(serial):
        with no_builder() if fast else nullcontext():
            chain = ca.sign_csr(csr, identity, ttl, now=when)
        built = ca.issue(public_key, identity, when, ttl)
    return x509.load_pem_x509_certificate(chain[0].encode()), built, chain


def assert_same(fast: x509.Certificate, built: x509.Certificate) -> None:
    assert fast.tbs_certificate_bytes == built.tbs_certificate_bytes
    assert fields(fast) == fields(built)


def assert_signed_by(cert: x509.Certificate, ca: CertificateAuthority) -> None:
    cert.verify_directly_issued_by(ca.signing_cert)


# ------------------------------------------------------------------ same certificate as the builder


@pytest.mark.parametrize("ca", [ROOT_CA, INTERMEDIATE_CA], ids=["root", "intermediate"])
@pytest.mark.parametrize("ttl", [None, dt.timedelta(hours=1), dt.timedelta(days=90), dt.timedelta(seconds=1)])
def test_sign_csr_certificate_equals_the_builders(ca: CertificateAuthority, ttl: dt.timedelta | None) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    fast, built, chain = fast_and_builder(ca, ME, make_csr(key, (ME.uri,)), NOW, ttl)
    assert_same(fast, built)
    assert_signed_by(fast, ca)
    assert chain[1:] == [pem(c) for c in ca.intermediates]
    assert chain[0] == pem(fast)  # the same PEM text cryptography writes


@pytest.mark.parametrize(
    "serial",
    [
        1,
        0x7F,
        0x80,
        0xFF,
        0x100,
        2**63,
        2**64 - 1,
        2**126,
        2**127 - 1,
        0x00FF_0000_0000_0000_0000_0000_0000_0001,
    ],
)
def test_serial_encodings_equal_the_builders(serial: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    fast, built, _ = fast_and_builder(ROOT_CA, ME, make_csr(key), NOW, None, serial=serial)
    assert fast.serial_number == serial
    assert_same(fast, built)


def test_default_clock_path_equals_the_builder() -> None:
    """``now=None`` takes the POSIX-seconds path; it must agree with the datetime path."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, (ME.uri,))
    with pinned_serial(77), no_builder():
        before = dt.datetime.now(dt.UTC).replace(microsecond=0)
        cert = x509.load_pem_x509_certificate(ROOT_CA.sign_csr(csr, ME)[0].encode())
        after = dt.datetime.now(dt.UTC)
    assert before - ca_module.CLOCK_SKEW <= cert.not_valid_before_utc <= after - ca_module.CLOCK_SKEW
    with pinned_serial(77):
        built = ROOT_CA.issue(key.public_key(), ME, cert.not_valid_before_utc + ca_module.CLOCK_SKEW)
    assert_same(cert, built)


def test_not_after_clamped_to_the_signing_certificate() -> None:
    ca = _root_ca(lifetime=dt.timedelta(hours=2))
    key = ec.generate_private_key(ec.SECP256R1())
    fast, built, _ = fast_and_builder(ca, ME, make_csr(key), NOW, dt.timedelta(days=3))
    assert fast.not_valid_after_utc == ca.signing_cert.not_valid_after_utc
    assert_same(fast, built)


def test_signing_certificate_expired_fails_as_the_builder_does() -> None:
    ca = _root_ca(lifetime=dt.timedelta(hours=2))
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
    later = NOW + dt.timedelta(hours=3)
    with pytest.raises(ValueError) as builder_error:
        ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), ME, later)
    with pytest.raises(ValueError) as fast_error:
        ca.sign_csr(csr, ME, now=later)
    assert str(fast_error.value) == str(builder_error.value)


def test_times_after_2049_are_generalized_time() -> None:
    start = dt.datetime(2049, 12, 31, 12, 0, tzinfo=dt.UTC)
    ca = _root_ca(start, lifetime=dt.timedelta(days=3650))
    key = ec.generate_private_key(ec.SECP256R1())
    fast, built, _ = fast_and_builder(ca, ME, make_csr(key), start, dt.timedelta(days=2))
    assert fast.not_valid_after_utc.year == 2050
    assert b"\x18\x0f20500102120000Z" in fast.tbs_certificate_bytes
    assert_same(fast, built)


def test_aware_non_utc_now_and_sub_second_ttl_equal_the_builder() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    plus5 = NOW.astimezone(dt.timezone(dt.timedelta(hours=5)))
    fast, built, _ = fast_and_builder(ROOT_CA, ME, make_csr(key), plus5, dt.timedelta(hours=3))
    assert_same(fast, built)
    fast, built, _ = fast_and_builder(
        ROOT_CA, ME, make_csr(key), NOW, dt.timedelta(seconds=90.75), fast=False
    )
    assert_same(fast, built)


def test_longest_identity_needs_long_form_lengths() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    fast, built, _ = fast_and_builder(INTERMEDIATE_CA, LONGEST, make_csr(key, (LONGEST.uri,)), NOW, None)
    san = fast.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert len(san.value.public_bytes()) > 255
    assert_same(fast, built)


# ------------------------------------------------------------------ CSR shapes


@pytest.mark.parametrize(
    ("uris", "critical", "dns"),
    [
        ((), True, ()),  # no extensions: the [0] attributes are empty
        ((ME.uri,), True, ()),  # Istio's shape
        ((ME.uri,), False, ()),
        ((ME.uri,), False, ("cart.shop.svc",)),  # extra names: parsed by cryptography, not issued
        ((ME.uri, ME.uri), True, ()),
    ],
)
def test_requested_sans_equal_to_the_identity_are_accepted(
    uris: tuple[str, ...], critical: bool, dns: tuple[str, ...]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    fast, built, _ = fast_and_builder(ROOT_CA, ME, make_csr(key, uris, critical, dns), NOW, None)
    assert_same(fast, built)
    names = fast.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(names) == [x509.UniformResourceIdentifier(ME.uri)]


@pytest.mark.parametrize(
    "uris",
    [
        ("spiffe://cluster.local/ns/bank/sa/vault",),
        (ME.uri, "spiffe://cluster.local/ns/bank/sa/vault"),
        (ME.uri + "x",),
        ("spiffe://cluster.local/ns/shop/sa/car",),
    ],
)
@pytest.mark.parametrize("critical", [True, False])
def test_other_requested_identities_are_refused(uris: tuple[str, ...], critical: bool) -> None:
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), uris, critical)
    with pytest.raises(CSRRefused) as refused:
        ROOT_CA.sign_csr(csr, ME, now=NOW)
    assert refused.value.reason == "identity_mismatch"


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_csr_signature_hashes_accepted(algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    fast, built, _ = fast_and_builder(
        ROOT_CA, ME, make_csr(key, (ME.uri,), hash_algorithm=algorithm), NOW, None
    )
    assert_same(fast, built)


def test_csr_signed_with_sha224_is_refused() -> None:
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), hash_algorithm=hashes.SHA224())
    with pytest.raises(CSRRefused) as refused:
        ROOT_CA.sign_csr(csr, ME, now=NOW)
    assert refused.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP256K1())],
    ids=["p384", "secp256k1"],
)
def test_other_keys_are_refused(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(CSRRefused) as refused:
        ROOT_CA.sign_csr(make_csr(key), ME, now=NOW)
    assert refused.value.reason == "bad_key"


def _compressed_point_csr(key: ec.EllipticCurvePrivateKey, uri: str) -> bytes:
    """A CSR whose SubjectPublicKeyInfo holds the compressed point (the builder never writes one)."""
    tlv = fast_x509.tlv
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    algorithm = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")
    spki = tlv(0x30, algorithm + tlv(0x03, b"\x00" + point))
    san = tlv(0x30, bytes.fromhex("0603551d11") + tlv(0x04, tlv(0x30, tlv(0x86, uri.encode()))))
    attributes = fast_x509.requested_attributes((san,))
    cri = tlv(0x30, b"\x02\x01\x00" + b"\x30\x00" + spki + attributes)
    signature = key.sign(cri, ec.ECDSA(hashes.SHA256()))
    der = tlv(0x30, cri + bytes.fromhex("300a06082a8648ce3d040302") + tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)


def test_compressed_point_key_is_issued_uncompressed_as_the_builder_does() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _compressed_point_csr(key, ME.uri)
    fast, built, _ = fast_and_builder(ROOT_CA, ME, csr, NOW, None)
    assert_same(fast, built)
    spki = fast.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki.startswith(fast_x509.P256_SPKI_PREFIX)


@pytest.mark.parametrize(
    "transform",
    [
        lambda pem_: pem_.replace(b"\n", b"\r\n"),
        lambda pem_: b"a comment line\n" + pem_,
        lambda pem_: pem_.rstrip(b"\n"),
        lambda pem_: pem_ + b"\n\n",
        lambda pem_: pem_.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"),
        lambda pem_: pem_.replace(b"\n", b"\n ", 2),
        lambda pem_: pem_[:60] + b"!" + pem_[60:],
        lambda pem_: pem_[:60] + pem_[64:],
        lambda pem_: pem_.replace(b"-----END", b"=\n-----END"),
        lambda pem_: pem_.decode().encode("utf-16"),
    ],
)
def test_pem_variants_accepted_exactly_when_cryptography_accepts_them(
    transform: Callable[[bytes], bytes],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    data = transform(make_csr(key, (ME.uri,)))
    try:
        x509.load_pem_x509_csr(data)
    except ValueError:
        with pytest.raises(CSRRefused) as refused:
            ROOT_CA.sign_csr(data, ME, now=NOW)
        assert refused.value.reason == "bad_csr"
    else:
        fast, built, _ = fast_and_builder(ROOT_CA, ME, data, NOW, None)
        assert_same(fast, built)


def _pem_variants(pem_: bytes) -> Iterator[bytes]:
    head, *lines, foot, _ = pem_.split(b"\n")
    body = b"".join(lines)
    yield pem_
    yield pem_.rstrip(b"\n")
    for width in (4, 10, 63, 65, 76, 1000):
        yield b"\n".join([head, *(body[i : i + width] for i in range(0, len(body), width)), foot, b""])
    for extra in (b"=", b"==", b"A", b"A=", b" ", b"\n", b"\r"):
        yield b"\n".join([head, *lines[:-1], lines[-1] + extra, foot, b""])
        yield b"\n".join([head, extra + lines[0], *lines[1:], foot, b""])
    yield b"\n".join([head, lines[0], b"", *lines[1:], foot, b""])
    yield b"\n".join([head, *lines, b"", foot, b""])
    yield b"\n".join([head, b"", *lines, foot, b""])
    last = lines[-1].rstrip(b"=")
    for symbol in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef":  # other bits after the last byte
        yield b"\n".join([head, *lines[:-1], last[:-1] + bytes([symbol]) + lines[-1][len(last) :], foot, b""])


def test_fast_pem_decoding_accepts_a_subset_of_cryptography_with_the_same_der() -> None:
    fast_hits = 0
    for _ in range(8):  # keys and signatures of several lengths: every base64 padding
        key = ec.generate_private_key(ec.SECP256R1())
        for data in _pem_variants(make_csr(key, (ME.uri,))):
            der = fast_x509.csr_der_from_pem(data)
            if der is None:
                continue
            fast_hits += 1
            expected = x509.load_pem_x509_csr(data).public_bytes(serialization.Encoding.DER)
            assert der == expected, data
    assert fast_hits >= 16  # the canonical form, with and without the final newline


def test_bad_base64_behind_a_good_header_is_refused() -> None:
    data = b"-----BEGIN CERTIFICATE REQUEST-----\nMII$$$\n-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(CSRRefused) as refused:
        ROOT_CA.sign_csr(data, ME, now=NOW)
    assert refused.value.reason == "bad_csr"


def test_identity_cache_evicts_and_stays_correct() -> None:
    ca = _root_ca()
    assert ca._template is not None
    ca._template.IDENTITY_CACHE = 2  # type: ignore[misc]
    key = ec.generate_private_key(ec.SECP256R1())
    for round_ in range(2):
        for name in ("a", "b", "c"):
            identity = SpiffeId("cluster.local", "ns", name + str(round_))
            fast, built, _ = fast_and_builder(ca, identity, make_csr(key, (identity.uri,)), NOW, None)
            assert_same(fast, built)
    assert len(ca._template._identities) == 2


# ------------------------------------------------------------------ DER helpers


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**24])
def test_der_length_forms(n: int) -> None:
    encoded = fast_x509.der_length(n)
    if n < 128:
        assert encoded == bytes([n])
    else:
        size = encoded[0] & 0x7F
        assert encoded[0] & 0x80 and len(encoded) == 1 + size
        assert int.from_bytes(encoded[1:], "big") == n and encoded[1] != 0


def test_split_request_info_refuses_other_shapes() -> None:
    assert fast_x509.split_request_info(b"") is None
    assert fast_x509.split_request_info(b"\x30\x03\x02\x01\x01") is None  # version 2
    assert fast_x509.split_request_info(b"\x30\x05\x02\x01\x00\x30\x00") is None  # no SPKI
    assert fast_x509.split_request_info(b"\x30\x09\x02\x01\x00\x30\x00\x30\x02\x05\x00") == (
        b"\x30\x02\x05\x00",
        b"",
    )
    assert fast_x509.split_request_info(b"\x30\x09\x02\x01\x00\x30\x00\x30\x09\x05\x00") is None  # overrun


# ------------------------------------------------------------------ openssl


def openssl(args: list[str], text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], input=text, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("ca", [ROOT_CA, INTERMEDIATE_CA], ids=["root", "intermediate"])
@pytest.mark.parametrize("identity", [ME, LONGEST], ids=["short", "longest"])
def test_openssl_verifies_fast_path_chains(
    ca: CertificateAuthority, identity: SpiffeId, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with no_builder():
        chain = ca.sign_csr(make_csr(key, (identity.uri,)), identity)
    (tmp_path / "roots.pem").write_text(ca.bundle.pem())
    (tmp_path / "chain.pem").write_text("".join(chain))
    (tmp_path / "leaf.pem").write_text(chain[0])
    for purpose in ("sslclient", "sslserver"):
        result = openssl(
            [
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                str(tmp_path / "roots.pem"),
                "-untrusted",
                str(tmp_path / "chain.pem"),
                str(tmp_path / "leaf.pem"),
            ]
        )
        assert result.returncode == 0, result.stdout + result.stderr
    text = openssl(["x509", "-noout", "-text"], chain[0])
    assert text.returncode == 0, text.stderr
    assert f"URI:{identity.uri}" in text.stdout
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text.stdout
    assert "Digital Signature, Key Encipherment" in text.stdout
    assert "CA:FALSE" in text.stdout
    assert "ecdsa-with-SHA256" in text.stdout
    # strict DER: openssl re-encodes the certificate to the same bytes
    der = openssl(["x509", "-outform", "PEM"], chain[0])
    assert der.stdout == chain[0]


# ------------------------------------------------------------------ property


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    namespace=st.text(SEGMENT, min_size=1, max_size=63),
    account=st.text(SEGMENT, min_size=1, max_size=253),
    domain=st.sampled_from(["cluster.local", "a", "example.org", "t" * 120]),
    ttl_seconds=st.one_of(st.none(), st.just(0), st.integers(1, 90 * 86400)),
    offset=st.integers(-86400 * 10, 86400 * 40),
    microsecond=st.integers(0, 999_999),
    serial=st.integers(1, 2**127 - 1),
    request=st.sampled_from(["none", "critical", "plain", "with_dns"]),
    intermediate=st.booleans(),
)
def test_property_fast_path_equals_builder(
    namespace: str,
    account: str,
    domain: str,
    ttl_seconds: int | None,
    offset: int,
    microsecond: int,
    serial: int,
    request: str,
    intermediate: bool,
) -> None:
    identity = SpiffeId(domain, namespace, account)
    ca = INTERMEDIATE_CA if intermediate else PROPERTY_CA  # PROPERTY_CA ends 30 days after NOW: clamps
    key = PROPERTY_KEY
    uris = () if request == "none" else (identity.uri,)
    dns = ("x.example",) if request == "with_dns" else ()
    csr = make_csr(key, uris, critical=request != "plain", dns=dns)
    now = NOW.replace(microsecond=microsecond) + dt.timedelta(seconds=offset)
    ttl = None if ttl_seconds is None else dt.timedelta(seconds=ttl_seconds)
    with pinned_serial(serial):
        try:
            built = ca.issue(key.public_key(), identity, now, ttl)
        except ValueError:  # the signing certificate has expired at ``now``: sign_csr refuses too
            with pytest.raises(ValueError):
                ca.sign_csr(csr, identity, ttl, now=now)
            return
        with no_builder():
            fast = x509.load_pem_x509_certificate(ca.sign_csr(csr, identity, ttl, now=now)[0].encode())
    assert_same(fast, built)
    assert_signed_by(fast, ca)


PROPERTY_CA = _root_ca(NOW - dt.timedelta(days=1), lifetime=dt.timedelta(days=31))
PROPERTY_KEY = ec.generate_private_key(ec.SECP256R1())
