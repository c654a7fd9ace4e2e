"""One WAL batch → the frames to insert, per table (no I/O; decode time is measured per source).

Records are grouped by source (Envoy metrics also by stream identity, the WAL record's
``meta``) and decoded in bulk by the ``accesslog`` room. Access logs of every stream
are decoded in one call, each payload with its stream's identity: a fleet of a
thousand Envoys costs one decode per batch, not a thousand. A payload that cannot be
decoded is quarantined with its error (for access logs, in the same pass) — the rest of
the batch still lands.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import polars as pl

from meshloop.accesslog.identity import StreamIdentity
from meshloop.collector.sources import Source
from meshloop.collector.wal import WalRecord

ACCESS_LOGS = "access_logs"
WINDOWS = "access_log_windows"


@dataclass
class BatchFrames:
    """What one batch becomes: rows per table, window partials, and what was refused."""

    tables: dict[str, list[pl.DataFrame]] = field(default_factory=lambda: defaultdict(list))
    sources: dict[str, Source] = field(default_factory=dict)
    quarantined: list[tuple[WalRecord, str]] = field(default_factory=list)
    late_entries: int = 0
    decode_seconds: dict[Source, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, source: Source, table: str, frame: pl.DataFrame) -> None:
        if frame.height:
            self.tables[table].append(frame)
            self.sources[table] = source

    def merged(self) -> dict[str, pl.DataFrame]:
        """One frame per table: rows concatenated; window partials summed per key."""
        from meshloop.accesslog.windows import merge_partials

        out = {}
        for table, frames in self.tables.items():
            if table == WINDOWS:
                out[table] = merge_partials(frames)
            else:
                out[table] = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
        return out


def _identity(meta: bytes) -> StreamIdentity:
    try:
        fields = json.loads(meta)
        return StreamIdentity(**{k: v for k, v in fields.items() if k in StreamIdentity.__dataclass_fields__})
    except (ValueError, TypeError):
        return StreamIdentity()


def _identity_fields(meta: bytes) -> dict[str, str]:
    try:
        return {key: str(value) for key, value in json.loads(meta or b"{}").items()}
    except ValueError:
        return {}


def _decode_isolating(
    records: Sequence[WalRecord], decode: Decoder, out: BatchFrames
) -> list[dict[str, pl.DataFrame]]:
    """Decode ``records`` together; on failure, one by one, quarantining the bad ones."""
    try:
        return [decode([r.payload for r in records])]
    except ValueError:
        pass
    results = []
    for record in records:
        try:
            results.append(decode([record.payload]))
        except ValueError as exc:
            out.quarantined.append((record, str(exc)))
    return results


Decoder = Callable[[Sequence[bytes]], dict[str, pl.DataFrame]]


def _decoder(source: Source, meta: bytes, batch_id: str) -> Decoder:
    """How payloads of one source (and one stream, for Envoy) become frames per table."""
    from meshloop.accesslog import otlp

    if source is Source.ENVOY_METRICS:
        fields = _identity_fields(meta)
        return partial(otlp.envoy_metrics_frames, identity=fields, counters_as_deltas=True)
    if source is Source.OTLP_LOGS:
        return lambda payloads: {"otel_logs": otlp.logs_frame(payloads)}
    if source is Source.OTLP_TRACES:
        return lambda payloads: {"otel_traces": otlp.traces_frame(payloads)}
    return otlp.metrics_frames


def build_frames(records: Sequence[WalRecord], batch_id: str, lateness_ns: int) -> BatchFrames:
    """Decode a batch of WAL records into per-table frames (see module docstring)."""
    out = BatchFrames()
    groups: dict[tuple[int, bytes], list[WalRecord]] = defaultdict(list)
    for record in records:
        scoped = record.kind == Source.ENVOY_METRICS  # ALS streams are decoded together
        groups[(record.kind, record.meta if scoped else b"")].append(record)
    for (kind, meta), group in groups.items():
        source = Source(kind)
        started = time.perf_counter()
        if source is Source.ENVOY_ALS:
            _access_logs(group, batch_id, lateness_ns, out)
        else:
            for frames in _decode_isolating(group, _decoder(source, meta, batch_id), out):
                for table, frame in frames.items():
                    out.add(source, table, frame)
        out.decode_seconds[source] += time.perf_counter() - started
    return out


def _access_logs(records: list[WalRecord], batch_id: str, lateness_ns: int, out: BatchFrames) -> None:
    """Every ALS record of the batch in one decode, whatever stream it came on (each
    payload gets its stream's identity); malformed payloads are quarantined, in the
    same pass."""
    from meshloop.accesslog.decode import decode_batch_skipping
    from meshloop.accesslog.windows import window_partials

    identities = {meta: _identity(meta) for meta in {r.meta for r in records}}
    streams = [identities[r.meta] for r in records]
    frame, errors = decode_batch_skipping([r.payload for r in records], streams, batch_id=batch_id)
    for error in errors:
        assert error.message_index is not None  # the reader names every payload it skips
        out.quarantined.append((records[error.message_index], str(error)))
    if not frame.height:
        return
    out.add(Source.ENVOY_ALS, ACCESS_LOGS, frame)
    partials, late = window_partials(frame, max(record.arrival_ns for record in records), lateness_ns)
    out.late_entries += late
    out.add(Source.ENVOY_ALS, WINDOWS, partials)
