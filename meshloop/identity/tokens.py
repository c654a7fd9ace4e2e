"""Bootstrap tokens: a first certificate for a workload that has none yet.

The file (YAML or JSON) reads ``tokens: [{token, namespace, serviceAccount}, ...]``.
A caller presenting ``authorization: Bearer <token>`` is authenticated as that
namespace/service account. Lookups compare every configured token with
:func:`hmac.compare_digest` (no early exit revealing which prefix matched).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from meshloop.identity.errors import TokenFileError


@dataclass(frozen=True)
class BootstrapToken:
    token: str
    namespace: str
    service_account: str

    def __repr__(self) -> str:  # never print the secret
        return f"BootstrapToken(namespace={self.namespace!r}, service_account={self.service_account!r})"


class TokenTable:
    """The configured bootstrap tokens; :meth:`lookup` is constant-time per entry."""

    def __init__(self, tokens: Iterable[BootstrapToken] = ()) -> None:
        self._tokens = tuple(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def lookup(self, presented: str) -> BootstrapToken | None:
        """The entry whose token equals ``presented``, ``None`` if none does."""
        found = None
        candidate = presented.encode()
        for entry in self._tokens:
            if hmac.compare_digest(entry.token.encode(), candidate):
                found = entry
        return found

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        """Read ``tokens: [{token, namespace, serviceAccount}]`` from a YAML/JSON file."""
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise TokenFileError(f"token file {path}: {exc}") from exc
        items = doc.get("tokens") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise TokenFileError(
                f"token file {path}: expected 'tokens: [{{token, namespace, serviceAccount}}]'"
            )
        tokens = []
        for index, item in enumerate(items):
            try:
                token, ns, sa = item["token"], item["namespace"], item["serviceAccount"]
            except (TypeError, KeyError) as exc:
                raise TokenFileError(
                    f"token file {path}: tokens[{index}] needs token, namespace and serviceAccount"
                ) from exc
            if not isinstance(token, str) or len(token) < 16:
                raise TokenFileError(f"token file {path}: tokens[{index}].token must be ≥ 16 characters")
            tokens.append(BootstrapToken(token, str(ns), str(sa)))
        return cls(tokens)
