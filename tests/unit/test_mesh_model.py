"""The resource models: Istio field names, strictness, durations, defaults."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from meshloop.mesh.destination_rule import DestinationRule
from meshloop.mesh.duration import Duration
from meshloop.mesh.kubernetes import EndpointSlice, Service
from meshloop.mesh.model import KINDS, model_for
from meshloop.mesh.networking import Gateway, ServiceEntry
from meshloop.mesh.security import AuthorizationPolicy, PeerAuthentication
from meshloop.mesh.virtual_service import VirtualService


def parse(model: type, text: str):  # type: ignore[no-untyped-def]
    return model.model_validate(yaml.safe_load(text))


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("1s", 10**9),
        ("0.5s", 5 * 10**8),
        ("1.5s", 15 * 10**8),
        ("500ms", 5 * 10**8),
        ("1m30s", 90 * 10**9),
        ("2h", 7200 * 10**9),
        ("100us", 100_000),
        ("250µs", 250_000),
        ("7ns", 7),
        ("0", 0),
        ("0s", 0),
        (".25s", 25 * 10**7),
    ],
)
def test_duration_parses_go_syntax(text: str, nanos: int) -> None:
    assert Duration.parse(text).nanos == nanos


@pytest.mark.parametrize("text", ["", "5", "5 s", "1sec", "-1s", "s", "1.2.3s", "1d"])
def test_duration_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        Duration.parse(text)


@pytest.mark.parametrize(
    ("nanos", "text"), [(10**9, "1s"), (15 * 10**8, "1.5s"), (10**6, "0.001s"), (0, "0s")]
)
def test_duration_renders_protobuf_json(nanos: int, text: str) -> None:
    assert str(Duration(nanos)) == text


VS = """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo, labels: {app: reviews}}
spec:
  hosts: [reviews]
  gateways: [mesh]
  http:
  - name: r
    match:
    - uri: {prefix: /api}
      authority: {exact: reviews}
      headers: {end-user: {regex: "j.*"}}
      method: {exact: GET}
      queryParams: {debug: {exact: "1"}}
      port: 9080
      sourceLabels: {app: productpage}
      gateways: [mesh]
      withoutHeaders: {x-skip: {exact: "1"}}
      ignoreUriCase: true
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 100
      headers: {request: {set: {x-a: b}, remove: [x-c]}}
    rewrite: {uri: /v2, authority: reviews-v2}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: 5xx}
    fault:
      delay: {percentage: {value: 10}, fixedDelay: 2s}
      abort: {percentage: {value: 1.5}, httpStatus: 503}
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 5}
    headers: {response: {add: {x-b: c}}}
  tcp:
  - match: [{port: 9090}]
    route: [{destination: {host: reviews, port: {number: 9090}}}]
"""


def test_virtual_service_reads_istio_fields() -> None:
    vs = parse(VirtualService, VS)
    http = vs.spec.http[0]
    assert vs.api_version == "networking.istio.io/v1beta1"
    assert vs.key == ("VirtualService", "bookinfo", "reviews")
    assert http.match[0].headers["end-user"].regex == "j.*"
    assert http.match[0].query_params["debug"].exact == "1"
    assert http.match[0].ignore_uri_case is True
    assert http.timeout == Duration(1_500_000_000)
    assert http.retries is not None and http.retries.per_try_timeout == Duration(500_000_000)
    assert http.fault is not None and http.fault.abort is not None and http.fault.abort.http_status == 503
    assert http.mirror_percentage is not None and http.mirror_percentage.value == 5
    assert vs.spec.tcp[0].route[0].destination.port is not None
    # serialises back to the camelCase Istio shape
    dumped = vs.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    assert dumped["spec"]["http"][0]["retries"]["perTryTimeout"] == "0.5s"
    assert dumped["spec"]["http"][0]["match"][0]["queryParams"] == {"debug": {"exact": "1"}}


def test_models_are_frozen() -> None:
    vs = parse(VirtualService, VS)
    with pytest.raises(ValidationError):
        vs.spec.hosts = ("x",)  # type: ignore[misc]


def test_string_match_needs_exactly_one_kind() -> None:
    bad = VS.replace("uri: {prefix: /api}", "uri: {prefix: /api, exact: /api}")
    with pytest.raises(ValidationError, match="exactly one of exact, prefix, regex"):
        parse(VirtualService, bad)


def test_destination_rule_fields() -> None:
    dr = parse(
        DestinationRule,
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: end-user}}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 1s}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 2, maxRequestsPerConnection: 3, maxRetries: 4,
             idleTimeout: 5s}
    outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 2, interval: 1s,
                       baseEjectionTime: 30s, maxEjectionPercent: 50, minHealthPercent: 10}
    tls: {mode: MUTUAL, sni: reviews.example.com, subjectAltNames: [spiffe://x]}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
""",
    )
    tp = dr.spec.traffic_policy
    assert tp.outlier_detection.consecutive_5xx_errors == 5
    assert tp.connection_pool.http.http1_max_pending_requests == 1
    assert tp.tls.subject_alt_names == ("spiffe://x",)
    assert dr.spec.subset("v1").labels == {"version": "v1"}
    assert dr.namespace == "default"


def test_load_balancer_simple_and_consistent_hash_exclusive() -> None:
    with pytest.raises(ValidationError, match="either simple or consistentHash"):
        DestinationRule.model_validate(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "x"},
                "spec": {
                    "host": "h",
                    "trafficPolicy": {"loadBalancer": {"simple": "RANDOM", "consistentHash": {}}},
                },
            }
        )


def test_service_entry_gateway_security_kubernetes() -> None:
    se = parse(
        ServiceEntry,
        """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  addresses: [10.0.0.1]
  ports: [{number: 443, protocol: tls, name: tls, targetPort: 8443}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 1.2.3.4, ports: {tls: 9443}, labels: {v: a}, weight: 3}]
""",
    )
    assert se.spec.ports[0].protocol == "TLS"  # case-insensitive, as Istio
    gw = parse(
        Gateway,
        """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, credentialName: cert, httpsRedirect: false}
    name: s
""",
    )
    assert gw.spec.servers[0].tls.credential_name == "cert"
    pa = parse(
        PeerAuthentication,
        """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {8080: {mode: DISABLE}}
""",
    )
    assert pa.spec.port_level_mtls[8080].mode == "DISABLE"
    ap = parse(
        AuthorizationPolicy,
        """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a}
spec:
  action: DENY
  rules:
  - from: [{source: {notPrincipals: [x], ipBlocks: [10.0.0.0/8], notIpBlocks: [10.1.0.0/16],
                     requestPrincipals: ["*"], namespaces: [ns], notNamespaces: [other]}}]
    to: [{operation: {methods: [POST], notMethods: [GET], paths: [/a], notPaths: [/b], ports: ["80"],
                      notPorts: ["81"], hosts: [h], notHosts: [g]}}]
    when: [{key: "request.auth.claims[iss]", values: [a], notValues: [b]}]
""",
    )
    assert ap.spec.rules[0].from_[0].source.ip_blocks == ("10.0.0.0/8",)
    svc = parse(
        Service,
        """
apiVersion: v1
kind: Service
metadata: {name: s, namespace: n}
spec:
  clusterIP: 10.96.0.1
  selector: {app: s}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP, appProtocol: http}]
""",
    )
    assert svc.spec.cluster_ip == "10.96.0.1" and svc.spec.ports[0].target_port == "http"
    eps = parse(
        EndpointSlice,
        """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: n, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.5], conditions: {ready: false}, targetRef: {kind: Pod, name: p}, zone: z}]
ports: [{name: http, port: 8080, protocol: TCP}]
""",
    )
    assert eps.service_name == "s" and eps.endpoints[0].conditions.ready is False


@pytest.mark.parametrize(
    ("api_version", "kind", "error"),
    [
        ("networking.istio.io/v1alpha3", "VirtualService", None),
        ("security.istio.io/v1", "AuthorizationPolicy", None),
        ("networking.istio.io/v2", "VirtualService", 'apiVersion "networking.istio.io/v2" is not supported'),
        ("networking.istio.io/v1", "Sidecar", 'unknown kind "Sidecar"'),
    ],
)
def test_model_for(api_version: str, kind: str, error: str | None) -> None:
    if error is None:
        assert model_for(api_version, kind) is KINDS[kind][0]
    else:
        with pytest.raises(ValueError, match=error):
            model_for(api_version, kind)
