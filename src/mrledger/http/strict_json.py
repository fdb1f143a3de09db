"""JSON bodies that FastAPI decodes for a model (``body: DecisionIn``) decoded as strictly as the bodies routes
read raw (``mrledger.ledger.parse_json``): no duplicate keys, no number a double cannot hold (``1e-400`` would reach
the model as 0, ``1e400`` as inf), no lone surrogate — refused with the same 400 ``malformed`` problem.

Why a route class: FastAPI decodes with Starlette's ``Request.json()`` (plain ``json.loads``), and the
documented way to change that is a ``Request`` subclass handed in by an ``APIRoute`` subclass. Routers whose
routes take a model body say ``APIRouter(route_class=StrictJsonRoute)``; tests/http/test_input_limits.py
fails for any route that decodes a body without it. (Nesting depth is bounded for every body, of every
route, earlier: ``mrledger.http.app.BodyLimit``.)
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Scope

from mrledger.ledger.canonical import parse_json


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            strict_request = StrictJsonRequest(request.scope, request.receive)
            if decodes_as_json(request.headers.get("content-type")) and await strict_request.body():
                # Decoded here, before FastAPI's own error handling would turn an EncodingError into a bare
                # "There was an error parsing the body": our handler answers 400 with the reason.
                await strict_request.json()
            return await handler(strict_request)

        return strict


def content_type(scope: Scope) -> str | None:
    """The request's Content-Type header from the ASGI scope, for the pure-ASGI layers that run before a
    ``Request`` exists (the body limit's depth guard, the fast lane's admission)."""
    value = next((v for k, v in scope["headers"] if k == b"content-type"), None)
    return None if value is None else value.decode("latin-1")


def decodes_as_json(value: str | None) -> bool:
    """Whether FastAPI decodes a body of this Content-Type as JSON (none, application/json, application/*+json);
    other bodies (HL7 v2 text) are not JSON."""
    if value is None:
        return True
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
