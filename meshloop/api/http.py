"""meshloop's HTTP API: health, readiness and Prometheus metrics.

- ``GET /healthz`` — 200 while the process runs (liveness).
- ``GET /readyz`` — 200 once the store is reachable and migrated, else 503 with the
  reason (readiness; Kubernetes probes and load balancers read it).
- ``GET /metrics`` — Prometheus text format, or OpenMetrics when the ``Accept`` header
  asks (process metrics plus meshloop's own), https://prometheus.io/docs/instrumenting/exposition_formats/.

- ``GET /api/v1/status[/<name>]`` — component status as JSON (e.g. ``collector``:
  WAL, windows and every open stream with its message and byte counts).

Admin and status endpoints are wrapped in :func:`require_token`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from meshloop.errors import MeshloopError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Readiness:
    """What /readyz reports: ready or not, and why not."""

    ready: bool = False
    reason: str = "starting"

    def set(self, ready: bool, reason: str) -> None:
        self.ready = ready
        self.reason = reason


def require_token(token: str | None, handler: Handler) -> Handler:
    """Wrap an admin handler: with a token configured, demand ``Authorization: Bearer``."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if token is not None:
            header = request.headers.get("Authorization", "")
            given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.json_response(
                    {"error": "missing or wrong bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return guarded


StatusProvider = Callable[[], Any]
"""Returns a JSON-ready value, or None while its component is not running."""


def build_api_app(
    readiness: Readiness,
    status: Mapping[str, StatusProvider] | None = None,
    token: str | None = None,
    routes: list[web.RouteDef] | None = None,
) -> web.Application:
    """The HTTP API application.

    ``status`` maps a name to a provider served as ``GET /api/v1/status/<name>`` (and
    all of them at ``GET /api/v1/status``); those need ``token`` when it is set.
    """
    providers = dict(status or {})

    async def status_one(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in providers:
            return web.json_response(
                {"error": f"no status named {name!r}", "known": sorted(providers)}, status=404
            )
        value = providers[name]()
        if value is None:
            return web.json_response({"error": f"{name} is not running"}, status=503)
        return web.json_response(value, dumps=_dumps)

    async def status_all(_: web.Request) -> web.Response:
        return web.json_response({name: provider() for name, provider in providers.items()}, dumps=_dumps)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        body = {"ready": readiness.ready, "reason": readiness.reason}
        return web.json_response(body, status=200 if readiness.ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        # Content negotiation as Prometheus does it: OpenMetrics when the scraper asks.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(REGISTRY), headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", require_token(token, status_all))
    app.router.add_get("/api/v1/status/{name}", require_token(token, status_one))
    app.router.add_routes(routes or [])
    return app


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, indent=2)


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    what: str = "HTTP API",
    flag: str = "--http-port",
    **runner_options: Any,
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (0 = a free port); return the runner and real port.

    A port that cannot be bound is a :class:`MeshloopError` naming the listener and
    the flag that moves it.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise MeshloopError(
            f"cannot listen on {host}:{port} for the {what}: {exc.strerror or exc}; "
            f"choose another {flag} (0 picks a free port)"
        ) from None
    addresses = runner.addresses
    return runner, int(addresses[0][1]) if addresses else port
