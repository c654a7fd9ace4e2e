"""The Envoy messages the generators emit, imported once so ``json_format`` can resolve
every ``@type`` in a ``typed_config``, and :func:`parse` from proto3 JSON to a message.

The generators write resources as proto3-JSON dicts (Envoy's documented field names, the
same shape as ``config_dump``) and convert at the edge; a misspelt field fails loudly here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

from meshloop.xds.proto_json import parse_dict

M = TypeVar("M", bound=Message)

TYPE = "type.googleapis.com/"
HCM = TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = TYPE + "envoy.extensions.filters.http.router.v3.Router"
FAULT = TYPE + "envoy.extensions.filters.http.fault.v3.HTTPFault"
TCP_PROXY = TYPE + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
TLS_INSPECTOR = TYPE + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
UPSTREAM_TLS = TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_PROTOCOL_OPTIONS = TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
FAULT_FILTER = "envoy.filters.http.fault"
ROUTER_FILTER = "envoy.filters.http.router"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
ADS_SOURCE: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}


def parse(data: Mapping[str, Any], cls: type[M]) -> M:
    """``data`` (proto3 JSON) as a ``cls`` message; unknown fields are errors. The same
    message as ``json_format.ParseDict`` gives, faster (:mod:`meshloop.xds.proto_json`)."""
    return parse_dict(data, cls)


def dump(message: Message) -> dict[str, Any]:
    """A message as proto3 JSON with Envoy's (snake_case) field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def duration(nanos: int) -> str:
    """A nanosecond count as a proto3-JSON Duration (``"1.5s"``)."""
    whole, frac = divmod(nanos, 1_000_000_000)
    return f"{whole}s" if frac == 0 else f"{whole}.{frac:09d}".rstrip("0") + "s"


PREVIOUS_HOSTS = TYPE + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
