"""Errors of the CA and the node agent; all derive from :class:`meshloop.errors.MeshloopError`."""

from __future__ import annotations

from pathlib import Path

from meshloop.errors import MeshloopError


class IdentityError(MeshloopError):
    """Base of the CA's and the agent's errors."""


class KeyFilePermissions(IdentityError):
    """A CA private key is readable or writable by group or others: refuse to start."""

    def __init__(self, path: Path, mode: int) -> None:
        self.path = path
        self.mode = mode
        super().__init__(
            f"CA key file {path} has mode {mode:04o}; group/others must have no access. Fix: chmod 600 {path}"
        )


class CAFileError(IdentityError):
    """A CA certificate or key file is missing, unreadable or inconsistent."""


class CSRRefused(IdentityError):
    """A CSR cannot be signed: bad signature, a foreign identity, a TTL over the maximum.

    ``reason`` is a short label (``bad_csr``, ``bad_signature``, ``identity_mismatch``,
    ``ttl_too_long``) used as the ``reason`` of ``meshloop_ca_csr_denied_total``.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class TokenFileError(IdentityError):
    """The bootstrap token file is malformed."""
