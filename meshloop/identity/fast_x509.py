"""Workload certificates as DER bytes from a per-CA template (the CA's hot path).

``CertificateBuilder`` spends about as long in Python-side object work as the ECDSA
signature itself. A workload certificate differs from the next only in its serial,
validity, subject public key and SPIFFE SAN, so :class:`WorkloadTemplate` encodes
everything else (version, signature algorithm, issuer name, KU, EKU, basic constraints,
AKI) once, and per certificate concatenates the TBSCertificate, signs it with the CA key
and wraps it as a Certificate. The result is byte-for-byte the TBSCertificate
``CertificateBuilder`` produces for the same inputs (``tests/unit/test_fast_x509.py``).

The CSR side (:func:`csr_der_from_pem`, :func:`split_request_info`,
:func:`requested_attributes`) only *locates* bytes in a request ``cryptography`` has
already parsed and whose signature is verified with ``cryptography``; anything not in
the exact expected shape returns ``None`` and the caller takes the general path.
"""

from __future__ import annotations

import binascii
import datetime as dt
import time
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ECDSA_SHA256",
    "IdentityParts",
    "P256_SPKI_PREFIX",
    "WorkloadTemplate",
    "certificate_pem",
    "csr_der_from_pem",
    "der_length",
    "der_posix_time",
    "der_time",
    "requested_attributes",
    "split_request_info",
    "tlv",
]

ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())

# SubjectPublicKeyInfo of an EC P-256 key as an uncompressed point: the fixed 27 bytes
# before the 64 coordinate bytes (SEQUENCE, AlgorithmIdentifier{id-ecPublicKey,
# prime256v1}, BIT STRING with no unused bits, 0x04).
P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04"
P256_SPKI_LENGTH = len(P256_SPKI_PREFIX) + 64

_ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")  # AlgorithmIdentifier, no params
_VERSION_3 = bytes.fromhex("a003020102")
_EMPTY_NAME = b"\x30\x00"
_TRUE = b"\x01\x01\xff"
_OID_KU = b"\x06\x03\x55\x1d\x0f"
_OID_EKU = b"\x06\x03\x55\x1d\x25"
_OID_BC = b"\x06\x03\x55\x1d\x13"
_OID_AKI = b"\x06\x03\x55\x1d\x23"
_OID_SAN = b"\x06\x03\x55\x1d\x11"
_OID_EXTENSION_REQUEST = bytes.fromhex("06092a864886f70d01090e")  # PKCS#9 extensionRequest

_PEM_CSR_BEGIN = b"-----BEGIN CERTIFICATE REQUEST-----\n"
_PEM_CSR_END = b"\n-----END CERTIFICATE REQUEST-----"
_PEM_CERT_BEGIN = "-----BEGIN CERTIFICATE-----\n"
_PEM_CERT_END = "-----END CERTIFICATE-----\n"

# cryptography's rule (as RFC 5280 4.1.2.5): UTCTime for 1950-2049, else GeneralizedTime.
_UTC_TIME_YEARS = range(1950, 2050)


# ------------------------------------------------------------------ DER primitives


def der_length(n: int) -> bytes:
    """The DER length octets for ``n`` content bytes (short form below 128, else long)."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: a one-byte tag, the length, the content."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + der_length(n) + content


def der_positive_integer(value: int) -> bytes:
    """An INTEGER for a positive ``value`` (minimal; a 0x00 first when the top bit is set)."""
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def der_time(when: dt.datetime) -> bytes:
    """UTCTime (1950-2049) or GeneralizedTime, to the second, in UTC, as cryptography encodes.

    An aware ``when`` is converted to UTC; a naive one is taken as UTC (as the builder does);
    microseconds are dropped.
    """
    offset = when.utcoffset()
    if offset:
        when = when - offset
    return _der_time_fields(when.year, when.month, when.day, when.hour, when.minute, when.second)


def der_posix_time(seconds: int) -> bytes:
    """:func:`der_time` for a POSIX time in whole seconds."""
    t = time.gmtime(seconds)
    return _der_time_fields(t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _der_time_fields(year: int, month: int, day: int, hour: int, minute: int, second: int) -> bytes:
    if year in _UTC_TIME_YEARS:
        return b"\x17\x0d%02d%02d%02d%02d%02d%02dZ" % (year % 100, month, day, hour, minute, second)
    return b"\x18\x0f%04d%02d%02d%02d%02d%02dZ" % (year, month, day, hour, minute, second)


def _extension(oid: bytes, critical: bool, value: bytes) -> bytes:
    return tlv(0x30, oid + (_TRUE if critical else b"") + tlv(0x04, value))


def _header(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(tag, content start, content end) of the element at ``pos``; ``None`` if malformed."""
    end = len(data)
    if pos + 2 > end:
        return None
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        size = n & 0x7F
        if size == 0 or size > 4 or pos + size > end:
            return None
        n = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if pos + n > end:
        return None
    return tag, pos, pos + n


# ------------------------------------------------------------------ certificates


class IdentityParts(NamedTuple):
    """The per-identity DER of a workload certificate and of the CSR attributes that ask
    for exactly that identity."""

    extensions: bytes  # the TBSCertificate's [3] element: the fixed extensions, then the SAN
    request_critical: bytes  # a CSR's [0] attributes: extensionRequest{SAN, critical}
    request_plain: bytes  # the same with the SAN not marked critical


class WorkloadTemplate:
    """The fixed parts of every workload certificate one CA issues, DER-encoded once.

    Per certificate only the serial, validity, subject public key info and the SPIFFE URI
    SAN are encoded; the layout is the one :meth:`CertificateAuthority.issue` gives
    ``CertificateBuilder`` (empty subject; extensions KU critical, EKU, basic constraints
    critical, AKI, SAN critical, in that order). The per-identity parts are kept for the
    last :data:`IDENTITY_CACHE` identities, the encoded validity for the last second.
    """

    IDENTITY_CACHE = 4096

    def __init__(
        self,
        issuer: x509.Name,
        key_usage: x509.KeyUsage,
        extended_key_usage: x509.ExtendedKeyUsage,
        basic_constraints: x509.BasicConstraints,
        authority_key_identifier: x509.AuthorityKeyIdentifier,
    ) -> None:
        self._before_validity = _ECDSA_WITH_SHA256 + issuer.public_bytes()
        self._fixed_extensions = (
            _extension(_OID_KU, True, key_usage.public_bytes())
            + _extension(_OID_EKU, False, extended_key_usage.public_bytes())
            + _extension(_OID_BC, True, basic_constraints.public_bytes())
            + _extension(_OID_AKI, False, authority_key_identifier.public_bytes())
        )
        self._identities: dict[str, IdentityParts] = {}
        self._validity: tuple[tuple[int, int], bytes] = ((0, 0), b"")

    def identity(self, uri: str) -> IdentityParts:
        """The parts for the SPIFFE ``uri`` (ASCII; a SpiffeId's URI is)."""
        parts = self._identities.get(uri)
        if parts is None:
            san_value = tlv(0x30, tlv(0x86, uri.encode("ascii")))
            san = _extension(_OID_SAN, True, san_value)
            parts = IdentityParts(
                tlv(0xA3, tlv(0x30, self._fixed_extensions + san)),
                requested_attributes((san,)),
                requested_attributes((_extension(_OID_SAN, False, san_value),)),
            )
            if len(self._identities) >= self.IDENTITY_CACHE:
                self._identities.pop(next(iter(self._identities)), None)
            self._identities[uri] = parts
        return parts

    def validity(self, not_before: int, not_after: int) -> bytes:
        """The Validity element for two POSIX times (whole seconds, UTC)."""
        key, encoded = self._validity
        if key != (not_before, not_after):
            encoded = tlv(0x30, der_posix_time(not_before) + der_posix_time(not_after))
            self._validity = ((not_before, not_after), encoded)
        return encoded

    def tbs_certificate(self, serial: int, validity: bytes, spki: bytes, extensions: bytes) -> bytes:
        """The TBSCertificate DER; ``validity`` from :meth:`validity`, ``spki`` a DER
        SubjectPublicKeyInfo, ``extensions`` from :meth:`identity`."""
        body = b"".join(
            (
                _VERSION_3,
                der_positive_integer(serial),
                self._before_validity,
                validity,
                _EMPTY_NAME,
                spki,
                extensions,
            )
        )
        return tlv(0x30, body)

    @staticmethod
    def certificate(tbs: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
        """Sign ``tbs`` with ECDSA-SHA256 and wrap it: SEQUENCE {tbs, algorithm, BIT STRING}."""
        signature = key.sign(tbs, ECDSA_SHA256)
        return tlv(0x30, tbs + _ECDSA_WITH_SHA256 + tlv(0x03, b"\x00" + signature))


def certificate_pem(der: bytes) -> str:
    """PEM text for a certificate's DER, 64 characters a line (as ``public_bytes(PEM)``)."""
    text = binascii.b2a_base64(der, newline=False).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    lines.append(_PEM_CERT_END)
    return _PEM_CERT_BEGIN + "\n".join(lines)


# ------------------------------------------------------------------ CSRs


def csr_der_from_pem(data: bytes) -> bytes | None:
    """The DER inside a canonical one-block ``CERTIFICATE REQUEST`` PEM: canonical base64 in
    64-character lines with ``\\n`` line ends, as OpenSSL, Go and cryptography write it.

    ``None`` for anything else (other labels, headers, CRLF, other line lengths, text
    around it, non-canonical base64): the caller hands those bytes to ``load_pem_x509_csr``
    as before, so this accepts a subset of what cryptography accepts, with the same DER.
    """
    if not data.startswith(_PEM_CSR_BEGIN):
        return None
    end = data.find(_PEM_CSR_END, len(_PEM_CSR_BEGIN))
    if end < 0 or data[end + len(_PEM_CSR_END) :] not in (b"\n", b""):
        return None
    raw = data[len(_PEM_CSR_BEGIN) : end]
    body = raw.replace(b"\n", b"")
    # every newline at a line end after 64 characters, none last (no empty line)
    if not body or raw.endswith(b"\n") or raw[64::65] != b"\n" * (len(raw) - len(body)):
        return None
    try:
        der = binascii.a2b_base64(body, strict_mode=True)
    except binascii.Error:
        return None
    if binascii.b2a_base64(der, newline=False) != body:  # canonical only (no stray "=", no dirty bits)
        return None
    return der


def split_request_info(cri: bytes) -> tuple[bytes, bytes] | None:
    """(subjectPKInfo DER, the rest: the ``[0]`` attributes) of a CertificationRequestInfo.

    ``cri`` is ``csr.tbs_certrequest_bytes`` of a request cryptography parsed; ``None``
    if it is not SEQUENCE {INTEGER 0, SEQUENCE subject, SEQUENCE spki, ...}.
    """
    outer = _header(cri, 0)
    if outer is None or outer[0] != 0x30 or outer[2] != len(cri):
        return None
    pos = outer[1]
    if cri[pos : pos + 3] != b"\x02\x01\x00":
        return None
    subject = _header(cri, pos + 3)
    if subject is None or subject[0] != 0x30:
        return None
    spki = _header(cri, subject[2])
    if spki is None or spki[0] != 0x30:
        return None
    return cri[subject[2] : spki[2]], cri[spki[2] :]


def requested_attributes(extensions: tuple[bytes, ...]) -> bytes:
    """The ``[0]`` attributes of a CSR whose only attribute is an extensionRequest holding
    exactly ``extensions`` (each a DER Extension)."""
    request = tlv(0x30, _OID_EXTENSION_REQUEST + tlv(0x31, tlv(0x30, b"".join(extensions))))
    return tlv(0xA0, request)
