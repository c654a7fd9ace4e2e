"""Istio ``AuthorizationPolicy`` → Envoy HTTP RBAC filters (pure: no I/O, no clock).

Semantics: https://istio.io/latest/docs/reference/config/security/authorization-policy/
Envoy API: https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/rbac/v3/rbac.proto
Translation modelled on Istio's ``pilot/pkg/security/authz/{builder,model}``:

* **Selection** — a policy applies to a workload when it is in the root namespace
  (mesh-wide) or the workload's namespace, and its ``selector.matchLabels`` (if any) is a
  subset of the workload's labels. ``targetRef(s)`` policies (gateways/waypoints) never
  select a sidecar.
* **Order** — AUDIT (Envoy ``LOG``, first so it also sees requests denied later, as in
  Istio), then DENY, then ALLOW. CUSTOM (ext_authz) is not supported: as Istio does for a
  CUSTOM policy whose provider is unusable, its rules are enforced as DENY (fail closed);
  :func:`authorization_warnings` says so.
* **ALLOW** — the ALLOW filter exists as soon as one ALLOW policy applies; a policy with no
  rules (``spec: {}``) contributes no Envoy policy, so ALLOW-nothing denies everything. A
  DENY or AUDIT policy with no rules matches nothing.
* **Rules** — each rule is one Envoy policy ``ns[<ns>]-policy[<name>]-rule[<i>]``; rules and
  policies are OR'ed, ``from``/``to`` entries OR'ed, fields AND'ed, values within a field
  OR'ed, ``notX`` → ``not_id``/``not_rule``; ``when`` conditions are AND'ed into every
  ``from``/``to`` entry. Unsupported keys raise :class:`AuthorizationPolicyError`.

Two ways to install it (both use the three filter names of :data:`FILTER_NAMES`):

1. **Listener level** — :func:`inbound_http_filters` in the HCM's ``http_filters`` (before
   the router). A change reaches **new connections only** (ENVOY.md).
2. **Per route (preferred)** — :func:`route_scoped_http_filters` (constant: policy-free, so
   the listener never changes with policy) in the HCM, and :func:`route_rbac_override` in
   the inbound ``RouteConfiguration``'s / each virtual host's / each route's
   ``typed_per_filter_config``. A policy change is then an RDS-only push and reaches
   existing keep-alive connections with that push (measured with Envoy 1.40, set_snapshot
   to the first 403 on an existing keep-alive connection: 2.5-10 ms; the test bounds it at
   1 s; tests/integration/test_authz_envoy.py). The listener default is **fail closed**:
   a route that carries no override answers 403.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401 (registers the type URLs)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from meshloop.errors import MeshloopError
from meshloop.mesh.security import AuthorizationPolicy, Condition, Operation, Rule, Source

__all__ = [
    "FILTER_NAMES",
    "RBAC_PER_ROUTE_TYPE",
    "RBAC_TYPE",
    "SUPPORTED_WHEN_KEYS",
    "AuthorizationPolicyError",
    "applicable_policies",
    "authorization_warnings",
    "http_filter_messages",
    "inbound_http_filters",
    "policy_problems",
    "route_rbac_override",
    "route_scoped_http_filters",
    "selects",
]

RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
Layer = Literal["AUDIT", "DENY", "ALLOW"]
#: HTTP filter names, in filter-chain order. Distinct names, so that a route's
#: ``typed_per_filter_config`` can address each filter.
FILTER_NAMES: dict[Layer, str] = {
    "AUDIT": "envoy.filters.http.rbac.audit",
    "DENY": "envoy.filters.http.rbac.deny",
    "ALLOW": "envoy.filters.http.rbac.allow",
}
_ENVOY_ACTION: dict[Layer, str] = {"AUDIT": "LOG", "DENY": "DENY", "ALLOW": "ALLOW"}
_SPIFFE = "spiffe://"
DEFAULT_ROOT_NAMESPACE = "istio-system"
SUPPORTED_WHEN_KEYS = (
    "request.headers[NAME]",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
    "connection.sni",
)

Matcher = dict[str, Any]
Side = Literal["principal", "permission"]


class AuthorizationPolicyError(MeshloopError):
    """A policy uses something this translation cannot express; names the policy and field."""

    def __init__(self, policy: AuthorizationPolicy, where: str, problem: str) -> None:
        self.policy_key = policy.key
        self.where = where
        self.problem = problem
        super().__init__(f"AuthorizationPolicy {policy.namespace}/{policy.name}: {where}: {problem}")


# --- selection -------------------------------------------------------------------------


def selects(
    policy: AuthorizationPolicy,
    workload_namespace: str,
    workload_labels: Mapping[str, str],
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> bool:
    """Whether ``policy`` applies to a sidecar workload (namespace scope + matchLabels)."""
    spec = policy.spec
    if spec.target_ref is not None or spec.target_refs:
        return False
    if policy.namespace not in (workload_namespace, root_namespace):
        return False
    wanted = spec.selector.match_labels if spec.selector is not None else {}
    return all(workload_labels.get(k) == v for k, v in wanted.items())


def applicable_policies(
    workload_namespace: str,
    workload_labels: Mapping[str, str],
    policies: Iterable[AuthorizationPolicy],
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> dict[Layer, list[AuthorizationPolicy]]:
    """The policies selecting the workload by Envoy layer, sorted by (namespace, name).

    CUSTOM policies land in ``DENY`` (fail closed, see the module docstring)."""
    layers: dict[Layer, list[AuthorizationPolicy]] = {"AUDIT": [], "DENY": [], "ALLOW": []}
    for policy in sorted(policies, key=lambda p: (p.namespace, p.name)):
        if selects(policy, workload_namespace, workload_labels, root_namespace):
            action = policy.spec.action
            layers["DENY" if action == "CUSTOM" else action].append(policy)
    return layers


def authorization_warnings(
    workload_namespace: str,
    workload_labels: Mapping[str, str],
    policies: Iterable[AuthorizationPolicy],
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> list[str]:
    """What the translation does differently from Istio for this workload (CUSTOM policies)."""
    return [
        f"AuthorizationPolicy {p.namespace}/{p.name}: action CUSTOM (ext_authz) is not supported; "
        "its rules are enforced as DENY (fail closed)"
        for p in policies
        if p.spec.action == "CUSTOM" and selects(p, workload_namespace, workload_labels, root_namespace)
    ]


# --- value matchers (Istio's pilot/pkg/security/authz/matcher) ----------------------------


def _string(value: str, prefix: str = "") -> Matcher:
    """``StringMatcherWithPrefix``: ``*`` any (non-empty), ``*x`` suffix, ``x*`` prefix, else exact."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.startswith("*"):
        if not prefix:
            return {"suffix": value[1:]}
        return {"safe_regex": {"regex": re.escape(prefix) + ".*" + re.escape(value[1:])}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def _header(name: str, value: str, ignore_case: bool = False) -> Matcher:
    """``HeaderMatcher``/``HostMatcher``: ``*`` = present, else a (maybe case-blind) string match."""
    if value == "*":
        return {"name": name, "present_match": True}
    match = _string(value)
    if ignore_case:
        match["ignore_case"] = True
    return {"name": name, "string_match": match}


def _cidr(value: str) -> Matcher:
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR block") from None
    return {"address_prefix": str(network.network_address), "prefix_len": network.prefixlen}


def _port(value: str) -> Matcher:
    if not value.isdigit() or not 0 < int(value) <= 65535:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return {"destination_port": int(value)}


def _authenticated(match: Matcher) -> Matcher:
    return {"authenticated": {"principal_name": match}}


def _principal(value: str, trust_domain: str) -> Matcher:
    """``from.source.principals``: Istio writes them without ``spiffe://``. ``cluster.local``
    is Istio's default alias of the mesh trust domain, so it matches ``trust_domain`` too."""
    domain, sep, rest = value.partition("/")
    if domain == "cluster.local" and sep and trust_domain != "cluster.local":
        return {
            "or_ids": {
                "ids": [_authenticated(_string(v, _SPIFFE)) for v in (value, f"{trust_domain}/{rest}")]
            }
        }
    return _authenticated(_string(value, _SPIFFE))


def _namespace(value: str) -> Matcher:
    pattern = ".*".join(re.escape(part) for part in value.split("*"))
    return _authenticated({"safe_regex": {"regex": f".*/ns/{pattern}/.*"}})


def _service_account(value: str) -> Matcher:
    namespace, sep, account = value.partition("/")
    if not sep or not namespace or not account or "/" in account:
        raise ValueError(f"serviceAccounts entry {value!r} must be <namespace>/<service-account>")
    return _authenticated({"suffix": f"/ns/{namespace}/sa/{account}"})


def _path(value: str) -> Matcher:
    if "{" in value:
        raise ValueError(f"path templates ({value!r}) are not supported; use exact, prefix* or *suffix")
    return {"url_path": {"path": _string(value)}}


def _unsupported(what: str) -> Callable[[str], Matcher]:
    def fail(_: str) -> Matcher:
        raise ValueError(f"{what} is not supported (meshloop has no JWT/request authentication)")

    return fail


# --- rule → Envoy policy -------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """One Istio field: values OR'ed, not-values OR'ed then negated; ``make`` builds one matcher."""

    side: Side
    values: tuple[str, ...]
    not_values: tuple[str, ...]
    make: Callable[[str], Matcher]


_SET = {
    "principal": ("and_ids", "or_ids", "not_id", "ids"),
    "permission": ("and_rules", "or_rules", "not_rule", "rules"),
}


def _or(side: Side, items: list[Matcher]) -> Matcher:
    _, or_key, _, list_key = _SET[side]
    return items[0] if len(items) == 1 else {or_key: {list_key: items}}


def _combine(side: Side, fields: Sequence[_Field]) -> Matcher:
    """AND of the fields of one ``from``/``to`` entry (``any`` when it has none)."""
    and_key, _, not_key, list_key = _SET[side]
    parts: list[Matcher] = []
    for field in fields:
        if field.side != side:
            continue
        if field.values:
            parts.append(_or(side, [field.make(v) for v in field.values]))
        if field.not_values:
            parts.append({not_key: _or(side, [field.make(v) for v in field.not_values])})
    if not parts:
        return {"any": True}
    return parts[0] if len(parts) == 1 else {and_key: {list_key: parts}}


def _source_fields(source: Source, trust_domain: str) -> list[_Field]:
    s = source
    return [
        _Field("principal", s.principals, s.not_principals, lambda v: _principal(v, trust_domain)),
        _Field(
            "principal", s.request_principals, s.not_request_principals, _unsupported("requestPrincipals")
        ),
        _Field("principal", s.namespaces, s.not_namespaces, _namespace),
        _Field("principal", s.service_accounts, s.not_service_accounts, _service_account),
        _Field("principal", s.ip_blocks, s.not_ip_blocks, lambda v: {"direct_remote_ip": _cidr(v)}),
        _Field("principal", s.remote_ip_blocks, s.not_remote_ip_blocks, lambda v: {"remote_ip": _cidr(v)}),
    ]


def _operation_fields(op: Operation) -> list[_Field]:
    return [
        _Field("permission", op.hosts, op.not_hosts, lambda v: {"header": _header(":authority", v, True)}),
        _Field("permission", op.methods, op.not_methods, lambda v: {"header": _header(":method", v)}),
        _Field("permission", op.paths, op.not_paths, _path),
        _Field("permission", op.ports, op.not_ports, _port),
    ]


_HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")


def _when_field(condition: Condition, trust_domain: str) -> _Field:
    """A ``when`` condition as a field; ``ValueError`` for keys meshloop does not support."""
    key, values, nots = condition.key, condition.values, condition.not_values
    header = _HEADER_KEY.match(key)
    if header:
        name = header.group(1).strip()
        return _Field("principal", values, nots, lambda v: {"header": _header(name, v)})
    makers: dict[str, tuple[Side, Callable[[str], Matcher]]] = {
        "source.ip": ("principal", lambda v: {"direct_remote_ip": _cidr(v)}),
        "remote.ip": ("principal", lambda v: {"remote_ip": _cidr(v)}),
        "source.namespace": ("principal", _namespace),
        "source.principal": ("principal", lambda v: _principal(v, trust_domain)),
        "destination.ip": ("permission", lambda v: {"destination_ip": _cidr(v)}),
        "destination.port": ("permission", _port),
        "connection.sni": ("permission", lambda v: {"requested_server_name": _string(v)}),
    }
    if key not in makers:
        raise ValueError(
            f"when key {key!r} is not supported; supported keys: {', '.join(SUPPORTED_WHEN_KEYS)}"
        )
    if not values and not nots:
        raise ValueError(f"when key {key!r} needs values or notValues")
    side, make = makers[key]
    return _Field(side, values, nots, make)


def _rule_policy(rule: Rule, trust_domain: str) -> dict[str, Any]:
    """One Istio rule → one Envoy ``Policy``: any ``from`` AND any ``to`` AND every ``when``."""
    when = [_when_field(c, trust_domain) for c in rule.when]
    principals = [_combine("principal", _source_fields(f.source, trust_domain) + when) for f in rule.from_]
    permissions = [_combine("permission", _operation_fields(t.operation) + when) for t in rule.to]
    return {
        "permissions": permissions or [_combine("permission", when)],
        "principals": principals or [_combine("principal", when)],
    }


def _envoy_policies(policies: Iterable[AuthorizationPolicy], trust_domain: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for policy in policies:
        for i, rule in enumerate(policy.spec.rules):
            try:
                translated = _rule_policy(rule, trust_domain)
            except ValueError as exc:
                raise AuthorizationPolicyError(policy, f"spec.rules[{i}]", str(exc)) from None
            result[f"ns[{policy.namespace}]-policy[{policy.name}]-rule[{i}]"] = translated
    return result


def policy_problems(policy: AuthorizationPolicy, trust_domain: str = "cluster.local") -> list[str]:
    """Why ``policy`` cannot be translated (empty when it can): for ``meshloop validate``."""
    try:
        _envoy_policies([policy], trust_domain)
    except AuthorizationPolicyError as exc:
        return [str(exc)]
    return []


def _rbac(layer: Layer, policies: list[AuthorizationPolicy], trust_domain: str) -> dict[str, Any]:
    """The ``RBAC`` message body (without ``@type``) enforcing ``policies`` for one layer."""
    return {"rules": {"action": _ENVOY_ACTION[layer], "policies": _envoy_policies(policies, trust_domain)}}


# --- public builders ------------------------------------------------------------------------


def inbound_http_filters(
    workload_namespace: str,
    workload_labels: Mapping[str, str],
    policies: Iterable[AuthorizationPolicy],
    trust_domain: str = "cluster.local",
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> list[dict[str, Any]]:
    """Listener-level RBAC filters (AUDIT, DENY, ALLOW — each only when a policy of its kind
    applies) for the inbound HCM, to go before the router. Empty when no policy applies.
    Raises :class:`AuthorizationPolicyError`. Reaches new connections only."""
    layers = applicable_policies(workload_namespace, workload_labels, policies, root_namespace)
    return [
        {
            "name": FILTER_NAMES[layer],
            "typed_config": {"@type": RBAC_TYPE, **_rbac(layer, found, trust_domain)},
        }
        for layer, found in layers.items()
        if found
    ]


def route_scoped_http_filters() -> list[dict[str, Any]]:
    """The three RBAC filters for a listener whose policies come per route (constant).

    AUDIT and DENY are no-ops and ALLOW denies everything unless a route's
    :func:`route_rbac_override` replaces them: a route without an override is refused (fail
    closed)."""
    return [
        {"name": FILTER_NAMES["AUDIT"], "typed_config": {"@type": RBAC_TYPE}},
        {"name": FILTER_NAMES["DENY"], "typed_config": {"@type": RBAC_TYPE}},
        {"name": FILTER_NAMES["ALLOW"], "typed_config": {"@type": RBAC_TYPE, "rules": {"action": "ALLOW"}}},
    ]


def route_rbac_override(
    workload_namespace: str,
    workload_labels: Mapping[str, str],
    policies: Iterable[AuthorizationPolicy],
    trust_domain: str = "cluster.local",
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> dict[str, Any]:
    """``typed_per_filter_config`` entries (``RBACPerRoute``) for the filters of
    :func:`route_scoped_http_filters`: the full policy of each layer, or "disabled" (no
    ``rbac``) for a layer without policies. Merge into the inbound RouteConfiguration's,
    virtual hosts' or routes' ``typed_per_filter_config``; a policy change then reaches
    existing connections with the next RDS push."""
    layers = applicable_policies(workload_namespace, workload_labels, policies, root_namespace)
    override: dict[str, Any] = {}
    for layer, found in layers.items():
        entry: dict[str, Any] = {"@type": RBAC_PER_ROUTE_TYPE}
        if found:
            entry["rbac"] = _rbac(layer, found, trust_domain)
        override[FILTER_NAMES[layer]] = entry
    return override


def http_filter_messages(filters: Iterable[Mapping[str, Any]]) -> list[hcm.HttpFilter]:
    """Filter dicts (from the functions above) as xds-protos ``HttpFilter`` messages."""
    return [json_format.ParseDict(f, hcm.HttpFilter()) for f in filters]
