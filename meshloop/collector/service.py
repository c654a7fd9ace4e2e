"""The collector as one component of ``meshloop up``: WAL, intake, flusher, gRPC server.

Start: open the WAL (recovering a torn tail) → replay batches in flight at a crash →
queue the rest of the uncommitted records → start the flusher → serve gRPC. Stop:
stop accepting (gRPC grace) → flush what was accepted → close the WAL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any

import grpc
import polars as pl

from meshloop.collector import metrics as m
from meshloop.collector.flusher import Flusher
from meshloop.collector.intake import Intake
from meshloop.collector.servicers import generic_handlers
from meshloop.collector.streams import StreamRegistry
from meshloop.collector.wal import WriteAheadLog
from meshloop.config import Settings
from meshloop.errors import MeshloopError
from meshloop.store.base import Store

log = logging.getLogger(__name__)

TICK_S = 1.0


class Collector:
    """Receives telemetry over gRPC and moves it, exactly once, into the store."""

    def __init__(self, settings: Settings, store: Store) -> None:
        from meshloop.accesslog.window_feed import WindowAggregator

        self.settings = settings
        self.store = store
        self.wal_dir = settings.data_dir / "wal"
        self.windows = WindowAggregator(lateness_ns=int(settings.window_lateness * 1e9))
        self.streams = StreamRegistry()
        self.wal: WriteAheadLog | None = None
        self.intake: Intake | None = None
        self.flusher: Flusher | None = None
        self._server: grpc.aio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Start every part; return the gRPC port actually bound."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        self.wal = await asyncio.to_thread(
            WriteAheadLog.open,
            self.wal_dir,
            max_total_bytes=settings.wal_max_bytes,
            fsync_interval_s=settings.wal_fsync_interval,
        )
        self.intake = Intake(self.wal, flush_bytes=settings.flush_max_bytes)
        self._export_wal_gauges(self.wal)
        self.flusher = Flusher(
            self.intake,
            self.wal,
            self.store,
            flush_interval_s=settings.flush_interval,
            flush_max_bytes=settings.flush_max_bytes,
            lateness_ns=int(settings.window_lateness * 1e9),
            quarantine_dir=settings.data_dir / "quarantine",
            on_windows=lambda partials, now, late: self._feed_windows(loop, partials, now, late),
        )
        recovery = self.wal.recovery()
        if recovery.in_flight:
            await asyncio.to_thread(self.flusher.replay_in_flight, recovery.in_flight)
        if recovery.pending_first is not None:
            log.info(
                "replaying %d uncommitted WAL records", recovery.pending_last - recovery.pending_first + 1
            )
            self.intake.resume_from(recovery.pending_first, recovery.pending_last)
        self.flusher.start()
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_concurrent_streams", 1000),
            ]
        )
        self._server.add_generic_rpc_handlers(generic_handlers(self.intake, self.streams))
        address = f"{settings.bind}:{settings.collector_port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise MeshloopError(
                f"cannot listen on {address} for the collector: {exc}; choose another --collector-port"
            ) from None
        await self._server.start()
        self._ticker = asyncio.create_task(self._tick())
        return self.port

    def _feed_windows(
        self, loop: asyncio.AbstractEventLoop, partials: pl.DataFrame, now: int, late: int
    ) -> None:
        """Hand a batch's windows to the aggregator on the event loop (its subscribers'
        loop); called from the flusher thread."""
        loop.call_soon_threadsafe(lambda: self.windows.feed(partials, now, late_entries=late))

    @staticmethod
    def _export_wal_gauges(wal: WriteAheadLog) -> None:
        """WAL gauges read at scrape time, so they are right even while inserts fail."""
        m.WAL_BYTES.set_function(lambda: wal.stats().bytes)
        m.WAL_SEGMENTS.set_function(lambda: wal.stats().segments)
        m.WAL_PENDING_RECORDS.set_function(lambda: max(0, wal.stats().last_seq - wal.stats().committed_seq))

    async def _tick(self) -> None:
        """Finalize windows on the clock even when no data comes; export lag."""
        while True:
            await asyncio.sleep(TICK_S)
            now = time.time_ns()
            self.windows.advance(now)
            newest = self.windows.stats.final_before_ns
            if newest:
                m.WINDOW_LAG.set(max(0.0, (now - newest) / 1e9))

    async def stop(self, grace_s: float = 1.0, flush_timeout_s: float = 2.5) -> None:
        """Stop intake, flush what was accepted (the rest stays in the WAL), close."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            await self._server.stop(grace_s)
        if self.flusher is not None:
            finished = await asyncio.to_thread(self.flusher.stop, flush_timeout_s)
            if not finished:
                log.warning(
                    "flush did not finish in %.1fs; the rest stays in the WAL for the next start",
                    flush_timeout_s,
                )
        if self.wal is not None:
            await asyncio.to_thread(self.wal.close)
        self.windows.close()

    def status(self) -> dict[str, Any]:
        """The collector's state for the status API: port, WAL, windows, open streams."""
        wal = self.wal.stats() if self.wal is not None else None
        return {
            "port": self.port,
            "wal": asdict(wal) if wal is not None else None,
            "queued_bytes": self.intake.queued_bytes if self.intake is not None else 0,
            "batches_committed": self.flusher.batches_committed if self.flusher is not None else 0,
            "windows": asdict(self.windows.stats),
            "streams": self.streams.snapshot(),
        }
