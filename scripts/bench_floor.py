"""The floor for ``scripts/bench_api.py``: the least a receipt verification over HTTP can cost in Python here —
and, one level at a time, what each check a verification cannot skip adds to it.

Level 0 (``floor_rps``, the issue's floor): a bare FastAPI app with one route, ``POST /v1/verify``, that reads
the body, parses the JSON and walks the receipt's audit path (RFC 9162 leaf and node hashing up to a root) —
and nothing else: no schema, no canonicalisation, no signature, no database, no chain. Each further level adds
one thing every verification must do, done the cheapest way Python has, so that the ladder is a ceiling on
what any implementation of the same checks could reach, not a re-run of the node:

1. ``leaf``: the record and salt recomputed into the leaf the path starts from (the node's own record parse and
   RFC 8785 commitment, ``ledger.leaf.commit``). Without it a receipt whose record was altered verifies: the
   floor trusts the leaf hash the receipt claims.
2. ``read``: one indexed point read of the result's versions (stdlib ``sqlite3``, on the loop, a table shaped
   like ``record_versions`` and preloaded with the receipts' results plus filler to 20,000 rows, WAL like the
   node's): without it a superseded or revoked result reads as current.
3. ``write``: one row per verification written (stdlib ``sqlite3``, buffered, ``executemany`` of 100 rows in one
   transaction, on the loop): the verification and access rows every verification leaves (the node writes
   both, through a buffer).

Served the way ``mrledger serve`` serves the node (uvicorn, one worker, the node's bounded httptools protocol)
so that what separates the two is the node's own work. bench_api.py starts it as a child process and loads it
with the same generator and the same bodies; the ratio of the node's saturation rate to level 0's is
``floor_ratio``, and ``floor_ladder`` lists each level's rate.

Usage (by bench_api.py):  python scripts/bench_floor.py PORT [LEVEL RESULTS.json]
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from mrledger.ledger.leaf import commit  # noqa: E402
from mrledger.ledger.merkle import root_from_inclusion_proof  # noqa: E402
from mrledger.ledger.records import ResultRecord  # noqa: E402

#: The ladder's levels, in order; each includes every one before it.
LEVELS = ("parse+path", "leaf", "read", "write")
#: Rows in the versions table (the receipts' own results first, then filler), as bench_api's --preload.
TABLE_ROWS = 20_000
#: Verification rows written per transaction (level 3).
WRITE_BATCH = 100


def _key(hospital_id: str, result_id: str) -> bytes:
    """Stands in for the node's keyed hash of a result id (HMAC-SHA-256 costs the same)."""
    return hashlib.sha256(f"{hospital_id}\0{result_id}".encode()).digest()


def open_table(results: list[dict[str, Any]], directory: Path) -> sqlite3.Connection:
    """The versions table, preloaded: ``results`` (hospital_id, result_id, version, leaf) and filler rows."""
    db = sqlite3.connect(directory / "floor.db", isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE versions (hospital_id TEXT, result_hmac BLOB, version INTEGER, status TEXT,"
               " leaf_hash BLOB, accepted_at TEXT, PRIMARY KEY (hospital_id, result_hmac, version))")
    db.execute("CREATE TABLE verifications (id INTEGER PRIMARY KEY, at TEXT, hospital_id TEXT, result_hmac BLOB,"
               " version INTEGER, verdict TEXT)")
    now = datetime.now(UTC).isoformat()
    rows = {(r["hospital_id"], _key(r["hospital_id"], r["result_id"]), r["version"]): bytes.fromhex(r["leaf"])
            for r in results}
    k = 0
    while len(rows) < TABLE_ROWS:
        rows[("filler", _key("filler", str(k)), 1)] = hashlib.sha256(str(k).encode()).digest()
        k += 1
    db.execute("BEGIN")
    db.executemany("INSERT INTO versions VALUES (?, ?, ?, 'current', ?, ?)",
                   [(*key, leaf, now) for key, leaf in rows.items()])
    db.execute("COMMIT")
    return db


def create_floor_app(level: int = 0, db: sqlite3.Connection | None = None) -> FastAPI:
    """The one-route app at ``level`` (``LEVELS``); its answer says whether the receipt holds up. Levels 2 and 3
    need ``db`` (``open_table``): without it they would measure level 1 under their own name."""
    if level >= 2 and db is None:
        raise ValueError(f"level {level} ({LEVELS[level]}) reads and writes a table: pass open_table's connection")
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    pending: list[tuple[str, str, bytes, int, str]] = []

    @app.post("/v1/verify")
    async def verify(request: Request) -> JSONResponse:
        body: dict[str, Any] = json.loads(await request.body())
        receipt = body["receipt"]
        leaf, batch = receipt["leaf"], receipt["batch"]
        leaf_hash = bytes.fromhex(leaf["hash"])
        ok = True
        if level >= 1:
            record = ResultRecord.from_obj(receipt["record"])
            ok = commit(record, bytes.fromhex(receipt["salt"])) == leaf_hash
        root = root_from_inclusion_proof(int(leaf["index"]), int(batch["size"]), leaf_hash,
                                         [bytes.fromhex(h) for h in receipt["audit_path"]])
        verdict = "authentic" if ok and root.hex() == batch["root"] else "tampered"
        answer: dict[str, Any] = {"verdict": verdict}
        if level >= 2 and db is not None:
            hid, rid = receipt["record"]["hospital_id"], receipt["record"]["result_id"]
            key = _key(hid, rid)
            versions = db.execute("SELECT version, status, leaf_hash, accepted_at FROM versions"
                                  " WHERE hospital_id = ? AND result_hmac = ? ORDER BY version", (hid, key)).fetchall()
            answer["versions"] = len(versions)
            if level >= 3:
                pending.append((datetime.now(UTC).isoformat(), hid, key, int(receipt["record"]["version"]), verdict))
                if len(pending) >= WRITE_BATCH:
                    db.execute("BEGIN")
                    db.executemany("INSERT INTO verifications (at, hospital_id, result_hmac, version, verdict)"
                                   " VALUES (?, ?, ?, ?, ?)", pending)
                    db.execute("COMMIT")
                    pending.clear()
        return JSONResponse(answer)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    import uvicorn

    from mrledger.http.protocol import BoundedHttpToolsProtocol

    port = int(sys.argv[1])
    level = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    # uvicorn re-raises the SIGTERM it stopped on once it has shut down; with the default action that killed the
    # process before the temporary directory below was removed (every bench_api run left one in /tmp).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="mrl-floor-") as tmp:
        db = None
        if level >= 2:
            db = open_table(json.loads(Path(sys.argv[3]).read_text()), Path(tmp))
        config = uvicorn.Config(create_floor_app(level, db), host="127.0.0.1", port=port,
                                http=BoundedHttpToolsProtocol, lifespan="on", access_log=False, log_level="warning",
                                log_config=None)
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
