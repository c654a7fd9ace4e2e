"""Workload identity (Istio's Citadel + istio-agent): CA, CSR service, node agent with SDS.

Public API:

* :mod:`~meshloop.identity.ca` — :class:`CertificateAuthority`, :class:`TrustBundle`,
  :func:`load_or_create_ca`, :func:`load_ca`;
* :mod:`~meshloop.identity.service` — :func:`start_ca_server` (``IstioCertificateService``);
* :mod:`~meshloop.identity.agent` — :class:`NodeAgent`, :func:`add_agent_command`;
* :mod:`~meshloop.identity.envoy_tls` — :func:`sds_cluster`, :func:`sds_secret_config`,
  :func:`secure_bootstrap`.
"""

from meshloop.identity.ca import CertificateAuthority, TrustBundle, load_ca, load_or_create_ca
from meshloop.identity.errors import CSRRefused, IdentityError, KeyFilePermissions
from meshloop.identity.spiffe import SpiffeId

__all__ = [
    "CSRRefused",
    "CertificateAuthority",
    "IdentityError",
    "KeyFilePermissions",
    "SpiffeId",
    "TrustBundle",
    "load_ca",
    "load_or_create_ca",
]
