"""The floor for ``scripts/bench_api.py``: the least a receipt verification over HTTP can cost in Python here.

A bare FastAPI app with one route, ``POST /v1/verify``, that reads the body, parses the JSON and walks the receipt's
audit path (RFC 9162 leaf and node hashing up to a root) — and nothing else: no schema, no canonicalisation, no
signature, no database, no chain. It is served the way ``mrledger serve`` serves the node (uvicorn, one worker, the
node's bounded httptools protocol, a socket bound first) so that what separates the two is the node's own work.
bench_api.py starts it as a child process and loads it with the same generator and the same bodies; the
ratio of the node's saturation rate to this floor's is ``floor_ratio``.

Usage (by bench_api.py):  python scripts/bench_floor.py PORT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from mrledger.ledger.merkle import root_from_inclusion_proof  # noqa: E402


def create_floor_app() -> FastAPI:
    """The one-route app; its answer says whether the path leads to the batch root the receipt names."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/v1/verify")
    async def verify(request: Request) -> JSONResponse:
        body: dict[str, Any] = json.loads(await request.body())
        receipt = body["receipt"]
        leaf, batch = receipt["leaf"], receipt["batch"]
        root = root_from_inclusion_proof(int(leaf["index"]), int(batch["size"]), bytes.fromhex(leaf["hash"]),
                                         [bytes.fromhex(h) for h in receipt["audit_path"]])
        verdict = "authentic" if root.hex() == batch["root"] else "tampered"
        return JSONResponse({"verdict": verdict})

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    import uvicorn

    from mrledger.http.protocol import BoundedHttpToolsProtocol

    port = int(sys.argv[1])
    config = uvicorn.Config(create_floor_app(), host="127.0.0.1", port=port, http=BoundedHttpToolsProtocol,
                            lifespan="on", access_log=False, log_level="warning", log_config=None)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
