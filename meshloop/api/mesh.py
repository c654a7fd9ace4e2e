"""HTTP routes over :class:`~meshloop.control.MeshControl`: mesh status and overrides.

All need the admin token when one is set. Bodies and answers are JSON; a refused
override is ``400 {"error": "<what and why>"}`` and changes nothing.

| method | path | body / query |
| --- | --- | --- |
| GET | /api/v1/mesh | — (served config, last rejection, overrides, pushes) |
| PUT | /api/v1/overrides/route-weights | ``{"host", "weights": {subset: percent}, "route"?}`` |
| DELETE | /api/v1/overrides/route-weights | ``?host=&route=`` |
| PUT | /api/v1/overrides/circuit-breakers | ``{"host", "subset"?, "max_requests"?, ...}`` (1) |
| DELETE | /api/v1/overrides/circuit-breakers | ``?host=&subset=`` |
| PUT | /api/v1/overrides/outlier-detection | ``{"host", "consecutive_5xx"?, ...}`` (2) |
| DELETE | /api/v1/overrides/outlier-detection | ``?host=`` |
| PUT | /api/v1/overrides/authorization-policies | an Istio ``AuthorizationPolicy`` (JSON) |
| DELETE | /api/v1/overrides/authorization-policies | ``?namespace=&name=`` |

(1) thresholds: max_connections, max_pending_requests, max_requests, max_retries.
(2) consecutive_5xx, consecutive_gateway_errors, interval_s, base_ejection_time_s,
max_ejection_percent.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from meshloop.api.http import require_token
from meshloop.control import MeshControl
from meshloop.errors import MeshloopError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mesh_routes(get_control: Callable[[], MeshControl | None], token: str | None) -> list[web.RouteDef]:
    """The routes; ``get_control`` returns the running MeshControl (None until it starts)."""

    def guarded(action: Callable[[MeshControl, web.Request, dict[str, Any]], Any]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            control = get_control()
            if control is None:
                return web.json_response({"error": "the mesh is not running yet"}, status=503)
            body: dict[str, Any] = {}
            if request.can_read_body:
                try:
                    body = json.loads(await request.read() or b"{}")
                except ValueError as exc:
                    return web.json_response({"error": f"body is not JSON: {exc}"}, status=400)
                if not isinstance(body, dict):
                    return web.json_response({"error": "body must be a JSON object"}, status=400)
            try:
                result = action(control, request, body)
            except (MeshloopError, ValidationError, TypeError, KeyError, ValueError) as exc:
                return web.json_response({"error": _message(exc)}, status=400)
            return web.json_response(result if result is not None else control.status()["xds"]["overrides"])

        return require_token(token, handle)

    def query(request: web.Request, name: str) -> str | None:
        return request.query.get(name) or None

    def put_weights(control: MeshControl, _: web.Request, body: dict[str, Any]) -> None:
        control.set_route_weights(
            body["host"], body["weights"], body.get("route"), actor=body.get("actor", "api")
        )

    def put_breaker(control: MeshControl, _: web.Request, body: dict[str, Any]) -> None:
        fields = {k: v for k, v in body.items() if k not in ("host", "subset", "actor")}
        control.set_circuit_breaker(
            body["host"], body.get("subset"), actor=body.get("actor", "api"), **fields
        )

    def put_outlier(control: MeshControl, _: web.Request, body: dict[str, Any]) -> None:
        fields = {k: v for k, v in body.items() if k not in ("host", "actor")}
        control.set_outlier_detection(body["host"], actor=body.get("actor", "api"), **fields)

    def put_policy(control: MeshControl, _: web.Request, body: dict[str, Any]) -> None:
        from meshloop.mesh.security import AuthorizationPolicy

        control.set_authorization_policy(AuthorizationPolicy.model_validate(body))

    base = "/api/v1/overrides"
    return [
        web.get("/api/v1/mesh", guarded(lambda c, _r, _b: c.status())),
        web.get(base, guarded(lambda c, _r, _b: None)),
        web.put(f"{base}/route-weights", guarded(put_weights)),
        web.delete(
            f"{base}/route-weights",
            guarded(lambda c, r, _b: c.remove_route_weights(r.query["host"], query(r, "route"))),
        ),
        web.put(f"{base}/circuit-breakers", guarded(put_breaker)),
        web.delete(
            f"{base}/circuit-breakers",
            guarded(lambda c, r, _b: c.remove_circuit_breaker(r.query["host"], query(r, "subset"))),
        ),
        web.put(f"{base}/outlier-detection", guarded(put_outlier)),
        web.delete(
            f"{base}/outlier-detection", guarded(lambda c, r, _b: c.remove_outlier_detection(r.query["host"]))
        ),
        web.put(f"{base}/authorization-policies", guarded(put_policy)),
        web.delete(
            f"{base}/authorization-policies",
            guarded(lambda c, r, _b: c.remove_authorization_policy(r.query["namespace"], r.query["name"])),
        ),
    ]


def _message(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)
