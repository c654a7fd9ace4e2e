"""SPIFFE identities in Istio's shape: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``.

https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

DEFAULT_TRUST_DOMAIN = "cluster.local"
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A workload identity: trust domain, Kubernetes namespace, service account."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise ValueError(f"invalid SPIFFE trust domain {self.trust_domain!r}")
        for part in (self.namespace, self.service_account):
            if not _SEGMENT.match(part):
                raise ValueError(f"invalid SPIFFE path segment {part!r}")

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse Istio's form; ``ValueError`` for anything else."""
        if not uri.startswith("spiffe://"):
            raise ValueError(f"not a SPIFFE id: {uri!r}")
        domain, _, path = uri.removeprefix("spiffe://").partition("/")
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise ValueError(f"not an Istio SPIFFE id (spiffe://<td>/ns/<ns>/sa/<sa>): {uri!r}")
        return cls(domain, parts[1], parts[3])


def certificate_uris(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """The URI SANs of a certificate or CSR (empty when it has none)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.UniformResourceIdentifier))


def certificate_spiffe_id(cert: x509.Certificate) -> SpiffeId | None:
    """The one SPIFFE id in a certificate's URI SANs, ``None`` if there is not exactly one."""
    ids = [u for u in certificate_uris(cert) if u.startswith("spiffe://")]
    if len(ids) != 1:
        return None
    try:
        return SpiffeId.parse(ids[0])
    except ValueError:
        return None
