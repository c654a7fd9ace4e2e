"""Trace and span ids from request headers: W3C ``traceparent``, then B3.

Envoy logs the headers named in ``additional_request_headers_to_log`` under their
lower-case names (``Http::LowerCaseString``), so lookups are by lower-case name.

Precedence: a valid ``traceparent`` (https://www.w3.org/TR/trace-context/#traceparent-header),
else a valid ``x-b3-traceid`` (+ ``x-b3-spanid``), else a valid single ``b3`` header
(https://github.com/openzipkin/b3-propagation). Ids are lower-case hex as sent; a 64-bit
B3 trace id is left-padded with zeros to 128 bits, as OpenTelemetry does, so it joins
``otel_traces.TraceId``. An invalid or all-zero trace id counts as absent; a span id is
taken from the same header(s) as the trace id, '' if it is not valid hex.

These functions are the reference (the tests' oracle); the hot path applies the same
rules in C (``trace_context`` in ``_als_decode.c``). Patterns are anchored ``^...$``;
Python uses ``re.fullmatch`` on the unanchored text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

TRACEPARENT = "traceparent"
B3_TRACE_ID = "x-b3-traceid"
B3_SPAN_ID = "x-b3-spanid"
B3_SINGLE = "b3"
HEADERS = (TRACEPARENT, B3_TRACE_ID, B3_SPAN_ID, B3_SINGLE)

TRACEPARENT_PATTERN = r"^(?s)[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(?:-.*)?$"
B3_TRACE_ID_PATTERN = r"^(?:[0-9a-f]{16}|[0-9a-f]{32})$"
B3_SPAN_ID_PATTERN = r"^[0-9a-f]{16}$"
B3_SINGLE_PATTERN = r"^(?s)([0-9a-f]{16}|[0-9a-f]{32})-([0-9a-f]{16})(?:-.*)?$"
ZERO_TRACE_ID = "0" * 32


def _full(pattern: str, text: str) -> re.Match[str] | None:
    return re.fullmatch(pattern[1:-1], text)


def _valid(trace_id: str) -> bool:
    return trace_id != ZERO_TRACE_ID


def trace_context(headers: Mapping[str, str]) -> tuple[str, str]:
    """(TraceId, SpanId) from logged request headers; ('', '') when none is valid."""
    match = _full(TRACEPARENT_PATTERN, headers.get(TRACEPARENT, ""))
    if match and _valid(match.group(1)):
        return match.group(1), match.group(2)
    trace_id = headers.get(B3_TRACE_ID, "")
    if _full(B3_TRACE_ID_PATTERN, trace_id) and _valid(trace_id.zfill(32)):
        span_id = headers.get(B3_SPAN_ID, "")
        return trace_id.zfill(32), span_id if _full(B3_SPAN_ID_PATTERN, span_id) else ""
    match = _full(B3_SINGLE_PATTERN, headers.get(B3_SINGLE, ""))
    if match and _valid(match.group(1).zfill(32)):
        return match.group(1).zfill(32), match.group(2)
    return "", ""
