"""Envoy's enums and response flags as the short names stored in ``access_logs``.

Shared by the columnar decoder and the reference decoder, so both spell every value
the same way. Sources:

- response flags: ``envoy.data.accesslog.v3.ResponseFlags`` and the short codes of
  ``%RESPONSE_FLAGS%`` (https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage#config-access-log-format-response-flags);
- ``envoy.config.core.v3.RequestMethod``, ``HTTPAccessLogEntry.HTTPVersion``,
  ``TLSProperties.TLSVersion``, ``envoy.data.accesslog.v3.AccessLogType``;
- TLS cipher suites: IANA code points → the OpenSSL/BoringSSL names Envoy prints for
  ``%DOWNSTREAM_TLS_CIPHER%``.
"""

from __future__ import annotations

from typing import Any

# (ResponseFlags field name, short code). The bit of a flag in ResponseFlagsMask is its
# protobuf field number - 1, which is also the order of Envoy's own flag enum, so the
# mask of an entry equals Envoy's legacy ``uint64`` response-flag bitmask.
RESPONSE_FLAGS: tuple[tuple[str, str], ...] = (
    ("failed_local_healthcheck", "LH"),
    ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"),
    ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"),
    ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"),
    ("upstream_overflow", "UO"),
    ("no_route_found", "NR"),
    ("delay_injected", "DI"),
    ("fault_injected", "FI"),
    ("rate_limited", "RL"),
    ("unauthorized_details", "UAEX"),  # a message: set = unauthorized by ext_authz
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"),
    ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"),
    ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"),
    ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"),
    ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"),
    ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"),
    ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"),
    ("downstream_remote_reset", "DR"),
)
UNAUTHORIZED_FLAG = "unauthorized_details"

# Enum value → stored name. Values missing from a table (a newer Envoy) are stored
# as their decimal number; the "unspecified" zero of method, protocol and TLS version
# is stored as '' (TCP entries have no method or protocol).
REQUEST_METHODS: dict[int, str] = {
    0: "", 1: "GET", 2: "HEAD", 3: "POST", 4: "PUT", 5: "DELETE",
    6: "CONNECT", 7: "OPTIONS", 8: "TRACE", 9: "PATCH",
}
HTTP_VERSIONS: dict[int, str] = {0: "", 1: "HTTP10", 2: "HTTP11", 3: "HTTP2", 4: "HTTP3"}
TLS_VERSIONS: dict[int, str] = {0: "", 1: "TLSv1", 2: "TLSv1_1", 3: "TLSv1_2", 4: "TLSv1_3"}
ACCESS_LOG_TYPES: dict[int, str] = {
    0: "NotSet", 1: "TcpUpstreamConnected", 2: "TcpPeriodic", 3: "TcpConnectionEnd",
    4: "DownstreamStart", 5: "DownstreamPeriodic", 6: "DownstreamEnd",
    7: "UpstreamPoolReady", 8: "UpstreamPeriodic", 9: "UpstreamEnd",
    10: "DownstreamTunnelSuccessfullyEstablished", 11: "UdpTunnelUpstreamConnected",
    12: "UdpPeriodic", 13: "UdpSessionEnd",
}
# Unknown suites are stored as 0x%04X; an absent cipher suite as ''.
TLS_CIPHER_SUITES: dict[int, str] = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256",
    0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
    0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305",
    0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305",
    0xC009: "ECDHE-ECDSA-AES128-SHA",
    0xC00A: "ECDHE-ECDSA-AES256-SHA",
    0xC013: "ECDHE-RSA-AES128-SHA",
    0xC014: "ECDHE-RSA-AES256-SHA",
    0x009C: "AES128-GCM-SHA256",
    0x009D: "AES256-GCM-SHA384",
    0x002F: "AES128-SHA",
    0x0035: "AES256-SHA",
}


FLAG_BITS: dict[str, int] = {code: bit for bit, (_field, code) in enumerate(RESPONSE_FLAGS)}


def flag_codes(flags: Any) -> list[str]:
    """The short codes of an ``envoy.data.accesslog.v3.ResponseFlags`` message, in bit order."""
    return [
        code for field, code in RESPONSE_FLAGS
        if (flags.HasField(field) if field == UNAUTHORIZED_FLAG else getattr(flags, field))
    ]


def flag_mask(codes: list[str]) -> int:
    """ResponseFlagsMask of a list of short codes."""
    mask = 0
    for code in codes:
        mask |= 1 << FLAG_BITS[code]
    return mask


def enum_name(table: dict[int, str], value: int) -> str:
    """The stored name of an enum ``value``: its name in ``table``, else its number."""
    name = table.get(value)
    return name if name is not None else str(value)


def cipher_name(value: int | None) -> str:
    """The stored name of a TLS cipher suite code point (``None`` = not recorded)."""
    if value is None:
        return ""
    name = TLS_CIPHER_SUITES.get(value)
    return name if name is not None else f"0x{value:04X}"
