"""Open collector streams and their counts, for the status API (per-stream counts).

Prometheus gets totals by source (bounded label sets); the per-stream view — which
proxy, since when, how many messages and bytes — is served as JSON instead, so a
mesh of thousands of proxies does not explode metric cardinality.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StreamInfo:
    """One open gRPC stream (mutable counters, updated on the event loop only)."""

    source: str
    peer: str
    node_id: str = ""
    workload: str = ""
    namespace: str = ""
    opened_at: float = field(default_factory=time.time)
    messages: int = 0
    bytes: int = 0


class StreamRegistry:
    """The streams open right now; closed ones are forgotten (their totals live on
    in the Prometheus counters)."""

    def __init__(self) -> None:
        self._streams: dict[int, StreamInfo] = {}
        self._ids = itertools.count(1)

    def open(self, source: str, peer: str) -> tuple[int, StreamInfo]:
        stream_id = next(self._ids)
        info = StreamInfo(source=source, peer=peer)
        self._streams[stream_id] = info
        return stream_id, info

    def close(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def snapshot(self) -> list[dict[str, Any]]:
        """JSON-ready rows, oldest stream first."""
        return [{"id": stream_id, **asdict(info)} for stream_id, info in sorted(self._streams.items())]
