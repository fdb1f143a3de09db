"""The hottest routes served straight from the ASGI call, past FastAPI's router and request handler.

Why: a city replay sends every doctor's look as ``POST /v1/verify`` and then ``POST /v1/decisions``, and a
patient's receipt is checked with ``POST /v1/verify`` by anyone. py-spy of an API process at saturation (issue 20,
``scripts/bench_api.py --py-spy``) put half of its interpreter time in the framework around the verification:
Starlette's exception and exit-stack middlewares, FastAPI's telemetry and body-limit wrappers, nested routers,
``request_response`` and the request handler — ~0.6 ms a request, against ~0.25 ms for the whole of
``scripts/bench_floor.py``'s request. Those layers do nothing these two routes need: they take no FastAPI
dependencies (``verify`` resolves its caller and body itself; ``record_decision_lane`` does what FastAPI's handler
did for its body), and their errors are the same RFC 9457 problems. Measured (bench_api, one API process, runs
alternated with the parent commit): saturation 665–754/s before, 792–843/s with the lane — less than the
profile's share suggested, since uvicorn's own protocol and the event loop stay.

What stays the same, by construction:

* the routes remain in the FastAPI app (OpenAPI, and every request this lane does not take: other methods, a
  ``root_path``, a body that is not declared JSON — FastAPI's own path answers those as before);
* the middlewares outside this one still run: latency metrics (the route is written into the scope as the
  router would), the raw result-id path, the body limit and its depth guard, the 500 of an unhandled error;
* an exception is answered by the app's own handler for its type (``mrledger.http.problems``), looked up the
  way Starlette's ``ExceptionMiddleware`` looks it up; one no handler takes propagates as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

#: A lane's handler: the request in, the full response out (it raises for a problem).
Handler = Callable[[Request], Awaitable[Response]]
#: Whether a request may take the lane, from its scope alone (before its body is read).
Admit = Callable[[Scope], bool]


def always(_scope: Scope) -> bool:
    return True


class FastLane:
    """Pure ASGI (no per-request task). ``lanes`` maps ``(method, path)`` to a handler and its admission test;
    the app's exception handlers and the route objects are looked up once, on the first request (the app's
    routes are complete by then)."""

    def __init__(self, app: ASGIApp, lanes: Mapping[tuple[str, str], tuple[Handler, Admit]]) -> None:
        self.app, self.lanes = app, dict(lanes)
        self._routes: dict[tuple[str, str], Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            key = (scope["method"], scope["path"])
            lane = self.lanes.get(key)
            if lane is not None and lane[1](scope):
                await self._serve(key, lane[0], scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, key: tuple[str, str], handler: Handler, scope: Scope, receive: Receive,
                     send: Send) -> None:
        if self._routes is None:
            self._routes = _routes(scope["app"], self.lanes)
        scope["route"] = self._routes[key]  # read by the latency metrics, as the router would have set it
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except Exception as exc:  # answered by the app's handler for it, or raised on as before
            response = await _handled(request, exc)
        await response(scope, receive, send)


def _routes(app: Any, lanes: Mapping[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    """The app's route object for each lane; a lane without one is a wiring error, said at once."""
    found: dict[tuple[str, str], Any] = {}
    for ctx in iter_route_contexts(app.routes):
        for method in ctx.methods or ():
            if (method, ctx.path) in lanes:
                found[(method, str(ctx.path))] = ctx.route
    missing = set(lanes) - set(found)
    if missing:
        raise RuntimeError(f"fast lanes without a route in the app: {sorted(missing)}")
    return found


async def _handled(request: Request, exc: Exception) -> Response:
    """Starlette's lookup (``starlette._exception_handler``): the handler of the nearest class in the exception's
    MRO. ``Exception``/500 handlers belong to the server-error middleware outside: re-raised to it."""
    handlers: dict[Any, Any] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            break
        handler = handlers.get(cls)
        if handler is not None:
            if inspect.iscoroutinefunction(handler):
                response: Response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
            return response
    raise exc
