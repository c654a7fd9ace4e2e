"""Overrides: what controllers layer over the user's mesh config (weights, breakers, ejection).

An :class:`Overrides` is an immutable value. ``with_*`` returns a new value with one entry
set (replacing the previous entry of the same key), ``without_*`` one without it, and
:meth:`Overrides.describe` renders it for status pages. Entries validate themselves on
construction (weights total 100, thresholds positive); :meth:`Overrides.problems` checks
them against a config (hosts and subsets exist). Hosts are FQDNs
(``reviews.bookinfo.svc.cluster.local``).

How each entry applies (see :mod:`meshloop.xds.rds` and :mod:`meshloop.xds.cds`):

* :class:`RouteWeights` replaces the destinations of the host's catch-all HTTP routes
  (routes with no ``match`` whose destinations all go to the host) — or of the routes named
  ``route`` — with the given subsets and weights, on sidecars and gateways. When the host has
  no such route, a weighted catch-all route is added after its other routes.
* :class:`CircuitBreaker` replaces the thresholds of the host's clusters (one subset, or all).
* :class:`OutlierOverride` replaces the outlier detection of all the host's clusters.
* ``authorization_policies``: extra AuthorizationPolicies applied after the user's (the
  RBAC translator reads ``PushContext.authorization_policies``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from meshloop.errors import MeshloopError
from meshloop.mesh.security import AuthorizationPolicy

if TYPE_CHECKING:
    from meshloop.mesh import MeshConfig

__all__ = ["CircuitBreaker", "OutlierOverride", "OverrideError", "Overrides", "RouteWeights"]


class OverrideError(MeshloopError):
    """An override is malformed, or names a host or subset the mesh does not have."""


def _positive(where: str, **values: int | float | None) -> None:
    for key, value in values.items():
        if value is not None and not value > 0:
            raise OverrideError(f"{where}: {key} must be > 0, got {value}")


@dataclass(frozen=True)
class RouteWeights:
    """Traffic shares of a host's subsets, in percent (total 100); ``route``: only the HTTP
    routes with that name (else the catch-all routes)."""

    host: str
    weights: tuple[tuple[str, int], ...]
    route: str | None = None

    def __post_init__(self) -> None:
        where = f"route weights for {self.host}"
        if not self.weights:
            raise OverrideError(f"{where}: at least one subset is required")
        names = [s for s, _ in self.weights]
        if len(set(names)) != len(names):
            raise OverrideError(f"{where}: a subset appears twice in {names}")
        if any(w < 0 for _, w in self.weights):
            raise OverrideError(f"{where}: weights must not be negative, got {dict(self.weights)}")
        total = sum(w for _, w in self.weights)
        if total != 100:
            raise OverrideError(f"{where}: weights sum to {total}; they must total 100")

    @classmethod
    def of(cls, host: str, weights: dict[str, int], route: str | None = None) -> RouteWeights:
        return cls(host, tuple(weights.items()), route)


@dataclass(frozen=True)
class CircuitBreaker:
    """Envoy ``circuit_breakers.thresholds`` for a host (``subset=None``: every subset)."""

    host: str
    subset: str | None = None
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None

    def __post_init__(self) -> None:
        where = f"circuit breaker for {self.host}" + (f" subset {self.subset}" if self.subset else "")
        values = self.thresholds()
        if not values:
            raise OverrideError(f"{where}: set at least one threshold")
        _positive(where, **values)

    def thresholds(self) -> dict[str, int]:
        keys = ("max_connections", "max_pending_requests", "max_requests", "max_retries")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass(frozen=True)
class OutlierOverride:
    """Outlier detection for every cluster of a host. Durations in seconds."""

    host: str
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    interval_s: float | None = None
    base_ejection_time_s: float | None = None
    max_ejection_percent: int | None = None

    def __post_init__(self) -> None:
        where = f"outlier detection for {self.host}"
        _positive(
            where,
            consecutive_5xx=self.consecutive_5xx,
            consecutive_gateway_errors=self.consecutive_gateway_errors,
            interval_s=self.interval_s,
            base_ejection_time_s=self.base_ejection_time_s,
        )
        if self.max_ejection_percent is not None and not 0 <= self.max_ejection_percent <= 100:
            raise OverrideError(
                f"{where}: max_ejection_percent must be 0-100, got {self.max_ejection_percent}"
            )


@dataclass(frozen=True)
class Overrides:
    """All overrides, each kind keyed (and sorted) by host (and subset)."""

    route_weights: tuple[RouteWeights, ...] = ()
    circuit_breakers: tuple[CircuitBreaker, ...] = ()
    outlier_detection: tuple[OutlierOverride, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = field(default=())

    # --- lookup ---------------------------------------------------------------------------
    def weights_for(self, host: str) -> list[RouteWeights]:
        return [w for w in self.route_weights if w.host == host]

    def circuit_breaker(self, host: str, subset: str | None) -> CircuitBreaker | None:
        """The subset's entry, else the host-wide one."""
        exact = next((c for c in self.circuit_breakers if (c.host, c.subset) == (host, subset)), None)
        return exact or next((c for c in self.circuit_breakers if c.host == host and c.subset is None), None)

    def outlier(self, host: str) -> OutlierOverride | None:
        return next((o for o in self.outlier_detection if o.host == host), None)

    # --- immutable updates -----------------------------------------------------------------
    def with_weights(self, entry: RouteWeights) -> Overrides:
        kept = [w for w in self.route_weights if (w.host, w.route) != (entry.host, entry.route)]
        return replace(self, route_weights=_sorted([*kept, entry], lambda w: (w.host, w.route or "")))

    def without_weights(self, host: str, route: str | None = None) -> Overrides:
        kept = tuple(w for w in self.route_weights if (w.host, w.route) != (host, route))
        return replace(self, route_weights=kept)

    def with_circuit_breaker(self, entry: CircuitBreaker) -> Overrides:
        kept = [c for c in self.circuit_breakers if (c.host, c.subset) != (entry.host, entry.subset)]
        return replace(self, circuit_breakers=_sorted([*kept, entry], lambda c: (c.host, c.subset or "")))

    def without_circuit_breaker(self, host: str, subset: str | None = None) -> Overrides:
        kept = tuple(c for c in self.circuit_breakers if (c.host, c.subset) != (host, subset))
        return replace(self, circuit_breakers=kept)

    def with_outlier(self, entry: OutlierOverride) -> Overrides:
        kept = [o for o in self.outlier_detection if o.host != entry.host]
        return replace(self, outlier_detection=_sorted([*kept, entry], lambda o: (o.host, "")))

    def without_outlier(self, host: str) -> Overrides:
        return replace(self, outlier_detection=tuple(o for o in self.outlier_detection if o.host != host))

    def with_authorization_policy(self, policy: AuthorizationPolicy) -> Overrides:
        kept = [p for p in self.authorization_policies if p.key != policy.key]
        return replace(self, authorization_policies=tuple(sorted([*kept, policy], key=lambda p: p.key)))

    def without_authorization_policy(self, namespace: str, name: str) -> Overrides:
        kept = tuple(p for p in self.authorization_policies if (p.namespace, p.name) != (namespace, name))
        return replace(self, authorization_policies=kept)

    # --- validation and status -------------------------------------------------------------
    def problems(self, config: MeshConfig) -> list[str]:
        """What in these overrides the config cannot honour (unknown hosts or subsets)."""
        from meshloop.mesh import resolve_host

        registry = config.registry
        subsets: dict[str, set[str]] = {}
        for dr in config.destination_rules:
            host = resolve_host(dr.spec.host, dr.namespace)
            subsets.setdefault(host, set()).update(s.name for s in dr.spec.subsets)
        out: list[str] = []
        entries: list[tuple[str, str, list[str]]] = [
            *((f"route weights for {w.host}", w.host, [s for s, _ in w.weights]) for w in self.route_weights),
            *(
                (f"circuit breaker for {c.host}", c.host, [c.subset] if c.subset else [])
                for c in self.circuit_breakers
            ),
            *((f"outlier detection for {o.host}", o.host, []) for o in self.outlier_detection),
        ]
        for where, host, names in entries:
            if not registry.has_host(host):
                out.append(
                    f'{where}: unknown host "{host}"; '
                    "use a service FQDN such as name.namespace.svc.cluster.local"
                )
                continue
            for name in names:
                if name not in subsets.get(host, set()):
                    known = ", ".join(sorted(subsets.get(host, set()))) or "none"
                    out.append(
                        f'{where}: subset "{name}" is not defined by a DestinationRule (known: {known})'
                    )
        return out

    def check(self, config: MeshConfig) -> None:
        """Raise :class:`OverrideError` listing every problem against ``config``."""
        problems = self.problems(config)
        if problems:
            raise OverrideError("; ".join(problems))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for status pages and ``config dump``."""
        return {
            "route_weights": [
                {"host": w.host, "route": w.route, "weights": dict(w.weights)} for w in self.route_weights
            ],
            "circuit_breakers": [
                {"host": c.host, "subset": c.subset, **c.thresholds()} for c in self.circuit_breakers
            ],
            "outlier_detection": [
                {k: v for k, v in vars(o).items() if v is not None} for o in self.outlier_detection
            ],
            "authorization_policies": [f"{p.namespace}/{p.name}" for p in self.authorization_policies],
        }

    def __bool__(self) -> bool:
        return bool(
            self.route_weights
            or self.circuit_breakers
            or self.outlier_detection
            or self.authorization_policies
        )


def _sorted(items: list[Any], key: Any) -> tuple[Any, ...]:
    return tuple(sorted(items, key=key))
