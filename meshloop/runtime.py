"""Wires meshloop's components into one asyncio process; start and stop order.

Start: own the data dir → HTTP API (so /healthz and /readyz answer at once) → store
(open + migrate, retried with backoff while a server is unreachable; /readyz is 503
meanwhile) → the ClickHouse HTTP interface of the embedded store → the collector (WAL
replay, flusher, gRPC). Stop, on SIGINT or SIGTERM: listeners, then the collector
(stop intake, flush), then the store, within :data:`STOP_DEADLINE_S`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from meshloop.api.http import Readiness, build_api_app, start_site
from meshloop.config import Settings
from meshloop.datadir import DataDirLock, write_endpoints
from meshloop.errors import StoreUnavailable
from meshloop.store import Store, open_store

if TYPE_CHECKING:
    import grpc

    from meshloop.collector.service import Collector
    from meshloop.control import MeshControl
    from meshloop.identity.service import CAServer
    from meshloop.xds.cache import SnapshotCache
    from meshloop.xds.pusher import MeshPusher
    from meshloop.xds.status import XdsStatus

log = logging.getLogger("meshloop")

STOP_DEADLINE_S = 5.0
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0


def announce(message: str) -> None:
    """Tell the operator something (stdout, flushed: tests and wrappers read it)."""
    print(message, flush=True)


@dataclass
class Runtime:
    """The running process: what started, in order, so it can stop in reverse."""

    settings: Settings
    readiness: Readiness = field(default_factory=Readiness)
    store: Store | None = None
    collector: Collector | None = None
    ca_server: CAServer | None = None
    xds_server: grpc.aio.Server | None = None
    xds_cache: SnapshotCache | None = None
    xds_status: XdsStatus | None = None
    mesh_pusher: MeshPusher | None = None
    mesh_control: MeshControl | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    endpoints: dict[str, Any] = field(default_factory=dict)
    _runners: list[web.AppRunner] = field(default_factory=list)
    _lock: DataDirLock | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Start every component; raises on a fatal start-up error (e.g. port in use)."""
        settings = self.settings
        self._lock = DataDirLock(settings.data_dir)
        self._lock.acquire()
        status = {
            "settings": settings.redacted,
            "collector": lambda: self.collector.status() if self.collector else None,
            "xds": lambda: self.xds_status.status() if self.xds_status else None,
            "mesh": lambda: self.mesh_control.status() if self.mesh_control else None,
        }
        from meshloop.api.mesh import mesh_routes

        routes = mesh_routes(lambda: self.mesh_control, settings.admin_token)
        app = build_api_app(self.readiness, status, token=settings.admin_token, routes=routes)
        runner, port = await start_site(app, settings.bind, port=settings.http_port)
        self._runners.append(runner)
        base = f"http://{_host(settings.bind)}:{port}"
        self.endpoints["http_api"] = base
        announce(f"meshloop: HTTP API      {base}  (/healthz /readyz /metrics)")
        self.store = await self._open_store_with_retries()
        if self.store is None:
            return  # stopped while waiting for the store
        await self._start_clickhouse_http()
        await self._start_collector()
        await self._start_xds()
        await self._start_ca()
        write_endpoints(settings.data_dir, self.endpoints)
        announce(f"meshloop: ready (data dir {settings.data_dir.resolve()})")

    async def _open_store_with_retries(self) -> Store | None:
        from meshloop.store.migrations import migrate

        settings = self.settings
        delay = BACKOFF_INITIAL_S
        where = _store_description(settings)
        while not self._stopping.is_set():
            self.readiness.set(False, f"opening store ({where})")
            try:
                store = await asyncio.to_thread(open_store, settings)
                try:
                    report = await asyncio.to_thread(
                        migrate,
                        store,
                        cluster=settings.clickhouse_cluster,
                        ttl_days=settings.retention_days,
                        progress=lambda line: log.info("%s", line),
                    )
                except BaseException:
                    await asyncio.to_thread(store.close)
                    raise
            except StoreUnavailable as exc:
                self.readiness.set(False, f"store unreachable: {exc}")
                log.warning("cannot reach ClickHouse at %s (%s); retrying in %.1fs", where, exc, delay)
                if await self._wait_stop(delay):
                    return None
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            applied = ", ".join(str(v) for v in report.applied) or "none"
            announce(f"meshloop: store         {where}  (schema v{report.version}; applied: {applied})")
            self.readiness.set(True, "ok")
            return store
        return None

    async def _start_clickhouse_http(self) -> None:
        from meshloop.store.embedded import EmbeddedStore

        if not isinstance(self.store, EmbeddedStore):
            return
        from meshloop.api.clickhouse_http import auth_from_settings, start_clickhouse_http

        settings = self.settings
        runner, port = await start_clickhouse_http(
            self.store, auth_from_settings(settings), settings.bind, settings.clickhouse_http_port
        )
        self._runners.append(runner)
        url = f"http://{_host(settings.bind)}:{port}"
        self.endpoints["clickhouse_http"] = url
        announce(f"meshloop: ClickHouse    {url}  (HTTP interface: /ping, ?query=)")

    async def _start_collector(self) -> None:
        from meshloop.collector.service import Collector

        assert self.store is not None
        self.collector = Collector(self.settings, self.store)
        port = await self.collector.start()
        address = f"{_host(self.settings.bind)}:{port}"
        self.endpoints["collector"] = address
        announce(
            f"meshloop: collector     grpc://{address}  (Envoy ALS, Envoy metrics, OTLP logs/metrics/traces)"
        )

    async def _start_xds(self) -> None:
        from meshloop.store.buffered import BufferedWriter
        from meshloop.store.schema_control import XDS_EVENTS
        from meshloop.xds.cache import SnapshotCache
        from meshloop.xds.generate import BOOTSTRAP_CLUSTERS
        from meshloop.xds.server import start_xds_server
        from meshloop.xds.status import XdsStatus, events_frame

        assert self.store is not None
        recorder = BufferedWriter(self.store, XDS_EVENTS, events_frame)
        self.xds_status = XdsStatus(on_event=recorder.add)
        self.xds_cache = SnapshotCache(external_clusters=BOOTSTRAP_CLUSTERS)
        self._tasks.append(asyncio.create_task(recorder.run()))
        await self._start_mesh(self.xds_cache)
        self.xds_server, port = await start_xds_server(
            self.xds_cache, self.settings.bind, self.settings.xds_port, status=self.xds_status
        )
        address = f"{_host(self.settings.bind)}:{port}"
        self.endpoints["xds"] = address
        announce(f"meshloop: xDS           grpc://{address}  (ADS: state of the world and delta)")

    async def _start_mesh(self, cache: SnapshotCache) -> None:
        """The mesh's desired state (``--mesh-dir`` + overrides) → per-proxy snapshots."""
        from meshloop.control import MeshControl, changes_frame
        from meshloop.mesh import MeshConfig
        from meshloop.store.buffered import BufferedWriter
        from meshloop.store.schema_control import MESH_CHANGES
        from meshloop.xds.pusher import MeshPusher
        from meshloop.xds.security_hooks import security_hooks

        assert self.store is not None
        changes = BufferedWriter(self.store, MESH_CHANGES, changes_frame)
        hooks = security_hooks(self.settings.trust_domain)
        self.mesh_pusher = MeshPusher(cache, hooks=hooks).start()
        paths = [self.settings.mesh_dir] if self.settings.mesh_dir is not None else []
        self.mesh_control = MeshControl(self.mesh_pusher, changes, paths)
        if not paths:
            self.mesh_control.apply_config(MeshConfig.build([]), [])  # serve an empty, consistent mesh
        self._tasks.append(asyncio.create_task(changes.run()))
        self._tasks.append(asyncio.create_task(self.mesh_control.watch()))
        self._tasks.append(asyncio.create_task(self._prune_gone_proxies()))
        if paths:
            announce(f"meshloop: mesh          {self.settings.mesh_dir}  (watched; GET /api/v1/mesh)")

    async def _prune_gone_proxies(self, every_s: float = 60.0, gone_for_s: float = 600.0) -> None:
        """Proxies without a stream for 10 minutes are forgotten by the xDS status and the
        pusher (no more builds for them); a proxy that comes back is a new node."""
        while True:
            await asyncio.sleep(every_s)
            if self.xds_status is None or self.mesh_pusher is None:
                continue
            for node_id in self.xds_status.prune(gone_for_s):
                self.mesh_pusher.forget(node_id)

    async def _start_ca(self) -> None:
        from meshloop.identity.ca import load_ca, load_or_create_ca
        from meshloop.identity.service import start_ca_server
        from meshloop.identity.tokens import TokenTable

        settings = self.settings
        if settings.ca_cert is not None and settings.ca_key is not None:
            ca = await asyncio.to_thread(
                load_ca, settings.ca_cert, settings.ca_key, trust_domain=settings.trust_domain
            )
        else:
            ca = await asyncio.to_thread(load_or_create_ca, settings.data_dir, settings.trust_domain)
        tokens = TokenTable.load(settings.ca_token_file) if settings.ca_token_file else TokenTable()
        self.ca_server, port = await start_ca_server(ca, tokens, settings.bind, settings.xds_secure_port)
        address = f"{_host(settings.bind)}:{port}"
        self.endpoints["ca"] = address
        announce(
            f"meshloop: CA            grpcs://{address}  "
            f"(IstioCertificateService, trust domain {settings.trust_domain})"
        )

    async def _wait_stop(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def request_stop(self) -> None:
        """Ask the process to stop (signal handlers call this)."""
        self._stopping.set()

    async def wait(self) -> None:
        """Block until a stop is requested."""
        await self._stopping.wait()

    async def stop(self) -> None:
        """Stop listeners, flush and close the store, release the data dir; runs once."""
        self.readiness.set(False, "stopping")
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.ca_server is not None:
            await self.ca_server.stop(0.5)
            self.ca_server = None
        if self.xds_server is not None:
            await self.xds_server.stop(0.5)
            self.xds_server = None
        if self.mesh_pusher is not None:
            await self.mesh_pusher.close()
            self.mesh_pusher = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.collector is not None:
            await self.collector.stop()
            self.collector = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _host(bind: str) -> str:
    return f"[{bind}]" if ":" in bind else bind


def _store_description(settings: Settings) -> str:
    if settings.clickhouse_url:
        parts = urlsplit(settings.clickhouse_url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 8123}"
    return f"chdb {settings.data_dir.resolve() / 'clickhouse'}"


async def run(settings: Settings, on_ready: Callable[[Runtime], None] | None = None) -> int:
    """Run meshloop until SIGINT/SIGTERM; return the process exit code."""
    runtime = Runtime(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runtime.request_stop)
    try:
        await runtime.start()
        if on_ready is not None:
            on_ready(runtime)
        await runtime.wait()
        announce("meshloop: stopping")
    finally:
        try:
            await asyncio.wait_for(runtime.stop(), STOP_DEADLINE_S)
        except TimeoutError:
            print("meshloop: stop took longer than 5 s; exiting anyway", file=sys.stderr)
    announce("meshloop: stopped")
    return 0
