"""``DestinationRule`` (networking.istio.io/v1): policies applied after routing.

https://istio.io/latest/docs/reference/config/networking/destination-rule/
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from meshloop.mesh.base import (
    Labels,
    NonNegative,
    PortSelector,
    PositiveDuration,
    Resource,
    Strict,
    WorkloadSelector,
)

SimpleLB = Literal["UNSPECIFIED", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN"]
TLSMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


class HTTPCookie(Strict):
    name: str
    path: str | None = None
    ttl: PositiveDuration | None = None


class ConsistentHashLB(Strict):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: Any = None
    maglev: Any = None
    minimum_ring_size: NonNegative | None = None


class LoadBalancerSettings(Strict):
    """``simple`` or ``consistentHash`` (not both)."""

    simple: SimpleLB | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: Any = None
    warmup_duration_secs: Any = None
    warmup: Any = None

    @model_validator(mode="after")
    def _one_policy(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise ValueError("set either simple or consistentHash, not both")
        return self


class TCPSettings(Strict):
    max_connections: NonNegative | None = None
    connect_timeout: PositiveDuration | None = None
    tcp_keepalive: Any = None
    max_connection_duration: PositiveDuration | None = None
    idle_timeout: PositiveDuration | None = None


class HTTPSettings(Strict):
    http1_max_pending_requests: NonNegative | None = None
    http2_max_requests: NonNegative | None = None
    max_requests_per_connection: NonNegative | None = None
    max_retries: NonNegative | None = None
    idle_timeout: PositiveDuration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: NonNegative | None = None


class ConnectionPoolSettings(Strict):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Strict):
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: NonNegative | None = None
    consecutive_gateway_errors: NonNegative | None = None
    consecutive_5xx_errors: NonNegative | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_errors: NonNegative | None = None
    interval: PositiveDuration | None = None
    base_ejection_time: PositiveDuration | None = None
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    min_health_percent: Annotated[int, Field(ge=0, le=100)] | None = None


class ClientTLSSettings(Strict):
    mode: TLSMode
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None


class PortTrafficPolicy(Strict):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(Strict):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()
    tunnel: Any = None
    proxy_protocol: Any = None


class Subset(Strict):
    name: str = Field(min_length=1)
    labels: Labels = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Strict):
    host: str = Field(min_length=1)
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: tuple[str, ...] = ()
    workload_selector: WorkloadSelector | None = None

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)


class DestinationRule(Resource):
    kind: Literal["DestinationRule"] = "DestinationRule"
    spec: DestinationRuleSpec
