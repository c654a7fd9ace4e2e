"""The mesh CA (Istio's Citadel): a root or intermediate signing SPIFFE workload certificates.

Pure where possible: :func:`new_root` and :meth:`CertificateAuthority.issue` take ``now``
and do no I/O; the file handling (:func:`load_or_create_ca`, :func:`load_ca`) is a thin
shell around them.

* **Root.** On first start a self-signed EC P-256 root (10 years, ``CA:TRUE, pathlen:1``,
  keyCertSign + cRLSign, ``O=meshloop``, SKI) is written to ``<data_dir>/ca/root-cert.pem``
  and ``root-key.pem`` (0600, created with ``O_EXCL`` under a temporary name and linked into
  place, so two starting processes never both write a root); later starts reopen it.
  Or the user brings a root or an intermediate (``ca_cert`` = signing cert, then its chain;
  ``ca_key``); an intermediate's chain is appended to every issued chain.
* **Key files** readable or writable by group/others are refused
  (:class:`~meshloop.identity.errors.KeyFilePermissions`, with the ``chmod 600`` fix).
* **Workload certificates** as Istio issues them (security/pkg/pki/util/generate_cert.go):
  empty subject with a *critical* SAN holding exactly the SPIFFE URI, KU digitalSignature +
  keyEncipherment, EKU serverAuth + clientAuth, ``CA:FALSE``, AKI = issuer SKI, a random
  128-bit serial (positive, < 2**127), notBefore backdated :data:`CLOCK_SKEW` for clock skew.
  Lifetime defaults to 24 h. **A TTL above the maximum (90 days) is refused**, not clamped,
  as istiod does (``TTLError``): a caller asking for a year has a misconfiguration it should
  see. notAfter never exceeds the signing certificate's notAfter (clamped: not the caller's
  fault).
* **CSRs**: the signature is verified; the requested SANs are ignored except that any SPIFFE
  URI in them must equal the authenticated identity; the certificate carries exactly the
  authenticated identity.
* **Fast path.** :meth:`CertificateAuthority.sign_csr` encodes the certificate from a
  per-CA DER template (:mod:`meshloop.identity.fast_x509`) and signs the bytes directly:
  the same TBSCertificate, byte for byte, that :meth:`CertificateAuthority.issue` gets
  from ``CertificateBuilder`` (``tests/unit/test_fast_x509.py``). Unusual inputs (non-EC
  signing key, naive ``now``, sub-second TTL, an expired signing certificate) take
  ``issue``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import secrets
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from meshloop.identity import fast_x509
from meshloop.identity.errors import CAFileError, CSRRefused, KeyFilePermissions
from meshloop.identity.spiffe import SpiffeId, certificate_uris

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_TTL",
    "MAX_TTL",
    "CertificateAuthority",
    "TrustBundle",
    "check_key_file",
    "load_ca",
    "load_or_create_ca",
    "new_root",
    "pem",
    "write_private_file",
]

DEFAULT_TTL = dt.timedelta(hours=24)
MAX_TTL = dt.timedelta(days=90)
MIN_TTL = dt.timedelta(seconds=1)
ROOT_LIFETIME = dt.timedelta(days=3650)
CLOCK_SKEW = dt.timedelta(minutes=1)
ORGANIZATION = "meshloop"
ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"

_WORKLOAD_KU = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_CA_KU = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
_NOT_CA = x509.BasicConstraints(ca=False, path_length=None)
# The CSR signature algorithms accepted (ECDSA with SHA-2), as ready-made verify arguments.
_CSR_ECDSA = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: fast_x509.ECDSA_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}
_NO_ATTRIBUTES = b"\xa0\x00"  # a CSR's [0] attributes when it requests nothing
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SECOND = dt.timedelta(seconds=1)
_CLOCK_SKEW_SECONDS = CLOCK_SKEW // _SECOND
_EARLIEST_SECONDS = (dt.datetime(1950, 1, 1, tzinfo=dt.UTC) - _EPOCH) // _SECOND  # the builder's floor


def pem(cert: x509.Certificate) -> str:
    """One certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def serial_number() -> int:
    """A random positive 127-bit serial (RFC 5280: ≤ 20 octets, positive; ≥ 64 bits of entropy)."""
    return secrets.randbits(127) | 1


class TrustBundle:
    """The roots workloads trust: several at once so a root can be rotated without an outage."""

    def __init__(self, roots: Sequence[x509.Certificate] = ()) -> None:
        self._roots: list[x509.Certificate] = []
        for root in roots:
            self.add(root)

    def add(self, root: x509.Certificate) -> None:
        """Trust ``root`` too (a no-op if it is already there)."""
        if root not in self._roots:
            self._roots.append(root)

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return tuple(self._roots)

    def pems(self) -> list[str]:
        return [pem(root) for root in self._roots]

    def pem(self) -> str:
        """The bundle as one PEM concatenation (what Envoy's ``trusted_ca`` and openssl take)."""
        return "".join(self.pems())

    @classmethod
    def from_pem(cls, text: str | bytes) -> TrustBundle:
        data = text.encode() if isinstance(text, str) else text
        return cls(x509.load_pem_x509_certificates(data))


def _ski(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


def new_root(
    now: dt.datetime, lifetime: dt.timedelta = ROOT_LIFETIME, common_name: str = "meshloop root CA"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed EC P-256 root: CA:TRUE pathlen 1, keyCertSign + cRLSign, O=meshloop."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    ski = _ski(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_KU, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def new_intermediate(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    lifetime: dt.timedelta = dt.timedelta(days=365),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An EC P-256 intermediate CA (pathlen 0) signed by ``issuer`` (used by tests and demos)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "meshloop intermediate CA"),
        ]
    )
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + lifetime, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KU, critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


@dataclass(frozen=True)
class ServerNames:
    """Extra SANs for a server certificate (the CA's own gRPC endpoint)."""

    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


class CertificateAuthority:
    """Signs workload certificates with ``signing_cert``/``signing_key``.

    ``intermediates`` are the certificates between the signing certificate and the root
    (the signing certificate itself included when it is not the root); they follow the
    leaf in every issued chain. ``bundle`` holds the roots workloads should trust.
    """

    def __init__(
        self,
        signing_cert: x509.Certificate,
        signing_key: ec.EllipticCurvePrivateKey,
        bundle: TrustBundle,
        intermediates: Sequence[x509.Certificate] = (),
        trust_domain: str = "cluster.local",
        max_ttl: dt.timedelta = MAX_TTL,
        default_ttl: dt.timedelta = DEFAULT_TTL,
    ) -> None:
        if default_ttl > max_ttl:
            raise ValueError(f"default TTL {default_ttl} exceeds the maximum {max_ttl}")
        self.signing_cert = signing_cert
        self.signing_key = signing_key
        self.bundle = bundle
        self.intermediates = tuple(intermediates)
        self.trust_domain = trust_domain
        self.max_ttl = max_ttl
        self.default_ttl = default_ttl
        self._issuer = signing_cert.subject
        ski = signing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        self._chain_pems = [pem(c) for c in self.intermediates]
        self._not_after_limit = (signing_cert.not_valid_after_utc - _EPOCH) // _SECOND
        # sign_csr's fast path: the same certificate as issue() gives CertificateBuilder,
        # encoded from a per-CA DER template and signed directly (EC signing keys).
        self._template = (
            fast_x509.WorkloadTemplate(self._issuer, _WORKLOAD_KU, _EKU, _NOT_CA, self._aki)
            if isinstance(signing_key, ec.EllipticCurvePrivateKey)
            else None
        )

    @property
    def root(self) -> x509.Certificate:
        """The root the signing certificate chains to (the first root of the bundle)."""
        return self.bundle.roots[0]

    def identity(self, namespace: str, service_account: str) -> SpiffeId:
        return SpiffeId(self.trust_domain, namespace, service_account)

    def resolve_ttl(self, ttl: dt.timedelta | None) -> dt.timedelta:
        """``None``/zero → the default; above the maximum → :class:`CSRRefused` (``ttl_too_long``)."""
        if ttl is None or ttl <= dt.timedelta(0):
            return self.default_ttl
        if ttl > self.max_ttl:
            raise CSRRefused(
                "ttl_too_long",
                f"requested certificate lifetime {ttl} exceeds the maximum {self.max_ttl}; ask for less",
            )
        return max(ttl, MIN_TTL)

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        identity: SpiffeId,
        now: dt.datetime,
        ttl: dt.timedelta | None = None,
        server_names: ServerNames = ServerNames(),
    ) -> x509.Certificate:
        """A workload certificate for ``identity`` (pure apart from the random serial)."""
        import ipaddress

        lifetime = self.resolve_ttl(ttl)
        not_after = min(now + lifetime, self.signing_cert.not_valid_after_utc)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        names += [x509.DNSName(d) for d in server_names.dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in server_names.ips]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._issuer)
            .public_key(public_key)
            .serial_number(serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(_WORKLOAD_KU, critical=True)
            .add_extension(_EKU, critical=False)
            .add_extension(_NOT_CA, critical=True)
            .add_extension(self._aki, critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
        )
        return builder.sign(self.signing_key, hashes.SHA256())

    def chain_pems(self, leaf: x509.Certificate) -> list[str]:
        """Leaf first, then the intermediates (no root: that is in the trust bundle)."""
        return [pem(leaf), *self._chain_pems]

    def sign_csr(
        self,
        csr_pem: str | bytes,
        identity: SpiffeId,
        ttl: dt.timedelta | None = None,
        now: dt.datetime | None = None,
    ) -> list[str]:
        """Verify a PKCS#10 CSR and issue a certificate for the *authenticated* ``identity``.

        Returns the chain as PEM strings, leaf first. Raises :class:`CSRRefused` when the CSR
        does not parse (``bad_csr``), its signature is wrong (``bad_signature``), it asks for a
        SPIFFE id other than ``identity`` (``identity_mismatch``), its key is not EC P-256
        (``bad_key``) or the TTL is over the maximum (``ttl_too_long``).
        """
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        csr = self._load_csr(data)
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise CSRRefused("bad_key", "CSR key must be EC P-256")
        ecdsa = _CSR_ECDSA.get(csr.signature_algorithm_oid)
        if ecdsa is None:  # not ECDSA-SHA2 by OID: the general check (and its errors)
            algorithm = csr.signature_hash_algorithm
            if not isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
                raise CSRRefused("bad_signature", "CSR must be signed with ECDSA and SHA-2")
            ecdsa = ec.ECDSA(algorithm)
        cri = csr.tbs_certrequest_bytes
        try:  # the same check as csr.is_signature_valid, without its extra parsing (~20% faster)
            public_key.verify(csr.signature, cri, ecdsa)
        except InvalidSignature as exc:
            raise CSRRefused("bad_signature", "CSR signature does not verify with its public key") from exc
        template = self._template
        parts = fast_x509.split_request_info(cri) if template is not None else None
        if parts is None or template is None:
            self._check_requested_uris(csr, identity)
            return self.chain_pems(self.issue(public_key, identity, now or dt.datetime.now(dt.UTC), ttl))
        spki, attributes = parts
        mine = template.identity(identity.uri)
        # The common requests (no extensions; exactly our SAN) by their bytes, the rest parsed.
        if (
            attributes != mine.request_critical
            and attributes != _NO_ATTRIBUTES
            and attributes != mine.request_plain
        ):
            self._check_requested_uris(csr, identity)
        # The builder's path (and its errors) for naive times, sub-second TTLs, bad validity.
        lifetime = self.resolve_ttl(ttl)
        if now is None:
            seconds = math.floor(time.time())
        elif now.tzinfo is not None:
            seconds = (now - _EPOCH) // _SECOND
        else:
            return self.chain_pems(self.issue(public_key, identity, now, ttl))
        not_before = seconds - _CLOCK_SKEW_SECONDS
        not_after = min(seconds + lifetime.days * 86400 + lifetime.seconds, self._not_after_limit)
        if lifetime.microseconds or not_after < not_before or not_before < _EARLIEST_SECONDS:
            return self.chain_pems(self.issue(public_key, identity, now or dt.datetime.now(dt.UTC), ttl))
        if len(spki) != fast_x509.P256_SPKI_LENGTH or not spki.startswith(fast_x509.P256_SPKI_PREFIX):
            spki = public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        validity = template.validity(not_before, not_after)
        tbs = template.tbs_certificate(serial_number(), validity, spki, mine.extensions)
        return [fast_x509.certificate_pem(template.certificate(tbs, self.signing_key)), *self._chain_pems]

    @staticmethod
    def _check_requested_uris(csr: x509.CertificateSigningRequest, identity: SpiffeId) -> None:
        """Any URI SAN the CSR asks for must be the authenticated identity."""
        for uri in certificate_uris(csr):
            if uri != identity.uri:
                raise CSRRefused(
                    "identity_mismatch",
                    f"CSR asks for {uri} but the caller is authenticated as {identity.uri}",
                )

    @staticmethod
    def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
        """Parse a PEM CSR (the plain one-block form decoded here, anything else by cryptography)."""
        der = fast_x509.csr_der_from_pem(data)
        if der is not None:
            try:
                return x509.load_der_x509_csr(der)
            except ValueError:
                pass  # report it as load_pem_x509_csr does
        try:
            return x509.load_pem_x509_csr(data)
        except ValueError as exc:
            raise CSRRefused("bad_csr", f"CSR is not a PEM PKCS#10 request: {exc}") from exc


# ---------------------------------------------------------------- files (the thin shell)


def check_key_file(path: Path) -> None:
    """Refuse a key file that group or others may read or write (mode & 0o066)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise CAFileError(f"CA key file {path}: {exc.strerror}") from exc
    if mode & 0o066:
        raise KeyFilePermissions(path, mode)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` with mode 0600, atomically.

    The bytes go to ``<path>.<random>.tmp`` created with ``O_CREAT|O_EXCL|O_WRONLY, 0o600``
    and fsynced; ``os.link`` then puts it in place, failing (``FileExistsError``) if another
    process got there first — an existing file is never overwritten.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    check_key_file(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CAFileError(f"CA key file {path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAFileError(f"CA key file {path}: only EC keys are supported")
    return key


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CAFileError(f"CA certificate file {path}: {exc}") from exc
    return certs


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def load_ca(
    ca_cert: Path,
    ca_key: Path,
    root_cert: Path | None = None,
    trust_domain: str = "cluster.local",
    max_ttl: dt.timedelta = MAX_TTL,
) -> CertificateAuthority:
    """A user-provided CA: ``ca_cert`` holds the signing certificate, then its chain.

    The root is ``root_cert`` when given, else the last certificate of ``ca_cert`` if it is
    self-signed. For an intermediate, the certificates between it and the root (itself
    included) are appended to issued chains.
    """
    certs = _load_certs(ca_cert)
    if not certs:
        raise CAFileError(f"CA certificate file {ca_cert}: no certificate in it")
    key = _load_key(ca_key)
    signing = certs[0]
    if signing.public_key() != key.public_key():
        raise CAFileError(f"CA key {ca_key} does not match the first certificate of {ca_cert}")
    roots = _load_certs(root_cert) if root_cert else [c for c in certs[-1:] if _self_signed(c)]
    if not roots:
        raise CAFileError(
            f"{ca_cert} holds an intermediate whose chain does not end in a self-signed root; "
            "append the root to it or pass the root file (ca_root)"
        )
    intermediates = [c for c in certs if not _self_signed(c)]
    return CertificateAuthority(signing, key, TrustBundle(roots), intermediates, trust_domain, max_ttl)


def load_or_create_ca(
    data_dir: Path,
    trust_domain: str = "cluster.local",
    now: dt.datetime | None = None,
    max_ttl: dt.timedelta = MAX_TTL,
) -> CertificateAuthority:
    """The self-signed root under ``<data_dir>/ca/``, created on first start (0600, atomic)."""
    directory = data_dir / "ca"
    cert_path, key_path = directory / ROOT_CERT_FILE, directory / ROOT_KEY_FILE
    if not key_path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert, key = new_root(now or dt.datetime.now(dt.UTC))
        try:
            write_private_file(key_path, key_pem(key))
            write_private_file(cert_path, pem(cert).encode())
        except FileExistsError:
            pass  # another process created the root first: use theirs
    if not cert_path.exists():
        raise CAFileError(f"{key_path} exists but {cert_path} does not; restore it or remove {directory}")
    return load_ca(cert_path, key_path, trust_domain=trust_domain, max_ttl=max_ttl)
