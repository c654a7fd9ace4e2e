"""``VirtualService`` (networking.istio.io/v1): routing rules for hosts.

https://istio.io/latest/docs/reference/config/networking/virtual-service/
Fields meshloop does not translate yet (``corsPolicy``, ``delegate``,
``directResponse``, ``mirrors``, ``tls`` routes) are accepted as given so that valid
Istio YAML loads; their contents are not checked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from meshloop.mesh.base import (
    Labels,
    NonNegative,
    Percent,
    PortNumber,
    PortSelector,
    PositiveDuration,
    Resource,
    Strict,
    StringMatch,
)
from meshloop.mesh.duration import Duration


class Destination(Strict):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Strict):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: tuple[str, ...] = ()


class Headers(Strict):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(Strict):
    destination: Destination
    weight: NonNegative | None = None
    headers: Headers | None = None


class HTTPMatchRequest(Strict):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: PortNumber | None = None
    source_labels: Labels = Field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_namespace: str | None = None
    stat_prefix: str | None = None

    def is_catch_all(self) -> bool:
        """True when this block matches every request (no condition, or only ``uri: prefix: /``)."""
        conditions = self.model_dump(
            exclude_defaults=True, exclude={"name", "stat_prefix", "uri", "ignore_uri_case"}
        )
        return not conditions and (self.uri is None or self.uri.prefix == "/")


class HTTPRedirect(Strict):
    uri: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: Annotated[int, Field(ge=300, le=399)] | None = None


class HTTPRewrite(Strict):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: Any = None


class HTTPRetry(Strict):
    attempts: NonNegative = 0
    per_try_timeout: PositiveDuration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None


class Percentage(Strict):
    value: Percent


class Delay(Strict):
    fixed_delay: PositiveDuration
    percentage: Percentage | None = None
    percent: Annotated[int, Field(ge=0, le=100)] | None = None


class Abort(Strict):
    http_status: Annotated[int, Field(ge=200, le=599)] | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percentage | None = None


class HTTPFaultInjection(Strict):
    delay: Delay | None = None
    abort: Abort | None = None


class HTTPRoute(Strict):
    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: Any = None
    delegate: Any = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: Any = None
    mirror_percentage: Percentage | None = None
    mirror_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    cors_policy: Any = None
    headers: Headers | None = None


class L4MatchAttributes(Strict):
    destination_subnets: tuple[str, ...] = ()
    port: PortNumber | None = None
    source_subnet: str | None = None
    source_labels: Labels = Field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    source_namespace: str | None = None


class RouteDestination(Strict):
    destination: Destination
    weight: NonNegative | None = None


class TCPRoute(Strict):
    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()


class VirtualServiceSpec(Strict):
    hosts: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    http: tuple[HTTPRoute, ...] = ()
    tls: Any = None
    tcp: tuple[TCPRoute, ...] = ()
    export_to: tuple[str, ...] = ()


class VirtualService(Resource):
    kind: Literal["VirtualService"] = "VirtualService"
    spec: VirtualServiceSpec
