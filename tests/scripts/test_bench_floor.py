"""scripts/bench_floor.py's ladder: each level does the check it names, or its rate says nothing.

Level 0 (the issue's floor) trusts the leaf hash a receipt claims, so a receipt whose record was altered passes
it; from level 1 on, the record is recomputed into its leaf and the same receipt fails. Levels 2 and 3 read the
result's versions and write one row per verification, on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scripts.bench_floor import LEVELS, TABLE_ROWS, WRITE_BATCH, create_floor_app, open_table

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "receipt"


def _receipt(name: str) -> dict[str, Any]:
    receipt: dict[str, Any] = json.loads((VECTORS / name).read_text())["receipt"]
    return receipt


@pytest.mark.parametrize("altered", ["value_altered.json", "status_altered.json", "salt_altered.json"])
def test_only_the_levels_that_recompute_the_leaf_catch_an_altered_record(altered: str) -> None:
    verdicts = []
    for level in range(2):
        with TestClient(create_floor_app(level)) as client:
            verdicts.append([client.post("/v1/verify", json={"receipt": _receipt(name)}).json()["verdict"]
                             for name in ("ok_unanchored.json", altered)])
    assert verdicts == [["authentic", "authentic"], ["authentic", "tampered"]]


def test_the_read_finds_the_results_versions_and_the_write_keeps_every_verification(tmp_path: Path) -> None:
    receipt = _receipt("ok_unanchored.json")
    record = receipt["record"]
    db = open_table([{"hospital_id": record["hospital_id"], "result_id": record["result_id"],
                      "version": record["version"], "leaf": receipt["leaf"]["hash"]}], tmp_path)
    assert db.execute("SELECT count(*) FROM versions").fetchone() == (TABLE_ROWS,)
    other = {**receipt, "record": {**record, "result_id": record["result_id"] + "-not-held"}}
    with TestClient(create_floor_app(len(LEVELS) - 1, db)) as client:
        answers = [client.post("/v1/verify", json={"receipt": receipt}).json() for _ in range(WRITE_BATCH)]
        unknown = client.post("/v1/verify", json={"receipt": other}).json()
    assert {a["versions"] for a in answers} == {1} and {a["verdict"] for a in answers} == {"authentic"}
    assert unknown == {"verdict": "tampered", "versions": 0}
    # Written a batch at a time: the first WRITE_BATCH are in, the one after waits for its batch.
    assert db.execute("SELECT count(*), min(verdict), max(verdict) FROM verifications").fetchone() \
        == (WRITE_BATCH, "authentic", "authentic")


def test_a_level_that_reads_refuses_to_start_without_its_table() -> None:
    with pytest.raises(ValueError, match="open_table"):
        create_floor_app(2)
