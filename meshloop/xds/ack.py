"""The per-stream, per-type ACK/NACK state machine (pure: no I/O, no clock).

Follows the xDS protocol's ACK/NACK rules
(https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#ack-and-nack-semantics)
and Istio's ``ShouldRespond`` (pilot/pkg/xds/ads.go):

=====================================  ============  =======================================
request                                kind          effect
=====================================  ============  =======================================
first on the stream for this type,     REQUEST       subscribe; ``version_info`` (reconnect)
or empty nonce                                       is what the client holds: respond only
                                                     if the current version differs
``error_detail``, nonce of one of the  NACK          record (version rejected, message);
last responses                                       never respond with that version again
no error, an older nonce (or unknown)  STALE         ignore: a newer response is in flight
latest nonce, no error                 ACK           record the acked version; respond if
                                                     the subscription changed
latest nonce again after a NACK        RESUBSCRIBE   names may change; respond only with a
                                                     version other than the rejected one
=====================================  ============  =======================================

The delta protocol uses the same classification (:func:`classify`); its per-resource
bookkeeping lives in the server.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = [
    "AckState",
    "Kind",
    "Outcome",
    "RequestView",
    "apply_ack",
    "apply_nack",
    "classify",
    "on_request",
    "record_send",
    "should_push",
]


class Kind(enum.Enum):
    REQUEST = "REQUEST"
    ACK = "ACK"
    NACK = "NACK"
    STALE = "STALE"
    RESUBSCRIBE = "RESUBSCRIBE"


HISTORY = 16  # responses per type remembered, so a NACK of an older nonce is still attributed
MAX_REJECTED = 64  # NACKed versions remembered per stream and type


@dataclass(frozen=True)
class AckState:
    """What one stream knows about one type.

    ``sent``: the latest responses as ``(nonce, version)``, newest last (a reconnect's
    ``version_info`` is recorded with an empty nonce: what the client holds);
    ``acked_version``: the latest the client ACKed; ``rejected``: versions the client NACKed
    on this stream, oldest first; ``nacked_nonce``/``nack_message``: the latest rejection;
    ``names``: the subscription (``None`` = wildcard).
    """

    sent: tuple[tuple[str, str], ...] = ()
    acked_version: str | None = None
    rejected: tuple[str, ...] = ()
    nacked_nonce: str | None = None
    nack_message: str | None = None
    names: frozenset[str] | None = None

    @property
    def sent_version(self) -> str | None:
        return self.sent[-1][1] if self.sent else None

    @property
    def sent_nonce(self) -> str | None:
        return self.sent[-1][0] if self.sent else None

    @property
    def nacked_version(self) -> str | None:
        return self.rejected[-1] if self.rejected else None

    def version_of(self, nonce: str) -> str | None:
        """The version sent with ``nonce``, if it is among the last :data:`HISTORY` responses."""
        return next((v for n, v in reversed(self.sent) if n == nonce), None)


@dataclass(frozen=True)
class RequestView:
    """The parts of a SotW ``DiscoveryRequest`` the state machine reads."""

    nonce: str = ""
    version_info: str = ""
    error: str | None = None
    names: frozenset[str] | None = None


@dataclass(frozen=True)
class Outcome:
    """The decision for one request: its kind, the new state, and whether to respond now
    (with the current version); ``rejected`` is the NACKed version for a NACK."""

    kind: Kind
    state: AckState
    respond: bool
    rejected: str | None = None


def classify(state: AckState | None, nonce: str, has_error: bool) -> Kind:
    """REQUEST (new subscription), NACK, ACK, RESUBSCRIBE or STALE — see the module table."""
    if state is None or not nonce:
        return Kind.REQUEST
    if has_error and state.version_of(nonce) is not None and nonce != state.nacked_nonce:
        return Kind.NACK
    if nonce != state.sent_nonce:
        return Kind.STALE
    if state.nacked_nonce == nonce:
        return Kind.RESUBSCRIBE
    return Kind.ACK


def should_push(state: AckState, version: str | None) -> bool:
    """Push ``version`` on this stream? Only when there is one, it differs from what was
    last sent (or what the client holds) and it is not the version the client rejected."""
    return version is not None and version != state.sent_version and version not in state.rejected


def apply_nack(state: AckState, nonce: str, message: str) -> tuple[AckState, str]:
    """Record a NACK of the response sent with ``nonce``; returns (state, rejected version)."""
    rejected = state.version_of(nonce)
    assert rejected is not None, "classify() said NACK"
    versions = state.rejected if rejected in state.rejected else (*state.rejected, rejected)
    new = replace(state, rejected=versions[-MAX_REJECTED:], nacked_nonce=nonce, nack_message=message)
    return new, rejected


def apply_ack(state: AckState) -> AckState:
    """Record an ACK of the latest response."""
    return replace(state, acked_version=state.sent_version)


def on_request(state: AckState | None, request: RequestView, current: str | None) -> Outcome:
    """Apply one SotW request to ``state``; ``current`` is the snapshot's version of the type
    (``None`` when the node has no snapshot yet). Pure."""
    kind = classify(state, request.nonce, request.error is not None)
    if kind is Kind.REQUEST:
        held = request.version_info or None
        new = AckState(sent=(("", held),) if held else (), acked_version=held, names=request.names)
        if state is not None:  # an empty nonce mid-stream: keep what we learnt about rejections
            new = replace(new, rejected=state.rejected, nack_message=state.nack_message)
        return Outcome(kind, new, should_push(new, current))
    assert state is not None
    if kind is Kind.STALE:
        return Outcome(kind, state, False)
    if kind is Kind.NACK:
        new, rejected = apply_nack(state, request.nonce, request.error or "")
        return Outcome(kind, replace(new, names=request.names), False, rejected=rejected)
    resend = request.names != state.names and current is not None and current not in state.rejected
    if kind is Kind.RESUBSCRIBE:
        return Outcome(kind, replace(state, names=request.names), resend)
    return Outcome(kind, replace(apply_ack(state), names=request.names), resend)


def record_send(state: AckState, version: str, nonce: str) -> AckState:
    """The state after sending ``version`` with ``nonce``."""
    return replace(state, sent=(*state.sent, (nonce, version))[-HISTORY:])
