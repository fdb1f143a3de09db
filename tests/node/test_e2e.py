"""End to end, as a region would run it: `mrledger serve` (uvicorn on a free port, sealer, anchoring worker,
managed anvil) on SQLite and on the real PostgreSQL; three hospitals submit 1,000 results over HTTP; every
receipt is fetched once anchored and verified through the API and through the CLI (offline for all, on
chain for a sample, and once through the installed console script); a tampered value is caught.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from mrledger.anchoring.node import free_port
from mrledger.cli.main import app as cli
from tests.conftest import db_url
from tests.node.test_serve import COMMAND, Node, http_client, record

pytestmark = pytest.mark.anvil
HOSPITALS = {"gz-001": "Guangzhou First People's Hospital", "qd-002": "Qingdao Municipal Hospital",
             "bj-003": "Beijing Chaoyang Hospital"}
TOTAL = 1000


def _wait_for_receipts(client: httpx.Client, api: str, keys: list[tuple[str, str]], token: dict[str, str],
                       timeout: float = 120) -> dict[tuple[str, str], dict[str, Any]]:
    import time

    receipts: dict[tuple[str, str], dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    pending = list(keys)
    while pending and time.monotonic() < deadline:
        still = []
        for h, rid in pending:
            r = client.get(f"{api}/hospitals/{h}/results/{rid}/receipt", headers=token)
            if r.status_code == 200:
                receipts[(h, rid)] = r.json()
            else:
                assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json", r.text
                still.append((h, rid))
        pending = still
        if pending:
            time.sleep(0.3)
    assert not pending, f"{len(pending)} receipts never became available"
    return receipts


def test_thousand_results_three_hospitals_end_to_end(engine: Engine, tmp_path: Path) -> None:
    node = Node(tmp_path / "data", free_port())
    node.env["MRL_DATABASE_URL"] = db_url(engine)
    # Hundreds of patients' receipts checked without a token from this one address: above the per-address limit
    # of anonymous verification a node sets (docs/access.md §4), which tests/http/test_ratelimit.py covers.
    node.env["MRL_VERIFY_RATE_LIMIT"] = "0"
    # On PostgreSQL a node must be given the region's key (docs/kpis.md §4); a fixed test key on both backends.
    node.env["MRL_REGIONAL_KEY"] = "5e" * 32
    try:
        info = node.start()
        admin = {"Authorization": f"Bearer {(node.data_dir / 'admin-token').read_text().strip()}"}
        with http_client() as client:
            for hid, name in HOSPITALS.items():
                r = client.post(f"{node.api}/hospitals", json={"id": hid, "name": name}, headers=admin)
                assert r.status_code == 201, r.text
            tokens = {}
            for role in [*(f"hospital:{h}" for h in HOSPITALS), "doctor"]:
                out = node.cli("token", "create", "--role", role)
                assert out.returncode == 0, out.stderr
                tokens[role] = {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}

            keys: list[tuple[str, str]] = []
            hospitals = list(HOSPITALS)
            for n, hid in enumerate(hospitals):
                share = range(n, TOTAL, len(hospitals))
                records = [record(hid, i) for i in share]
                r = client.post(f"{node.api}/hospitals/{hid}/results", json={"records": records},
                                headers=tokens[f"hospital:{hid}"])
                assert r.status_code == 202, r.text
                assert r.json()["accepted"] == len(records)
                keys += [(hid, rec["result_id"]) for rec in records]
            assert len(keys) == TOTAL

            receipts = _wait_for_receipts(client, node.api, keys, admin)
            verdicts = Counter()
            for receipt in receipts.values():
                r = client.post(f"{node.api}/verify", json={"receipt": receipt})
                assert r.status_code == 200, r.text
                verdicts[r.json()["verdict"]] += 1
            assert verdicts == Counter({"authentic": TOTAL})

            # The doctor's other path: the result she holds, looked up by id.
            hid, rid = keys[17]
            held = receipts[(hid, rid)]["record"]
            r = client.post(f"{node.api}/verify", headers=tokens["doctor"],
                            json={"hospital_id": hid, "result_id": rid, "record": held})
            assert r.json()["verdict"] == "authentic"

            tampered = json.loads(json.dumps(receipts[keys[0]]))
            tampered["record"]["content"]["observations"][0]["value"] = 99.9
            r = client.post(f"{node.api}/verify", json={"receipt": tampered})
            assert r.json()["verdict"] == "tampered" and r.json()["failed_check"] == "leaf-hash"

        # The CLI: offline for every receipt, on chain for a sample, the real console script once.
        runner = CliRunner()
        folder = tmp_path / "receipts"
        folder.mkdir()
        for n, (hid, rid) in enumerate(keys):
            path = folder / f"{hid}-{rid}.json"
            path.write_text(json.dumps(receipts[(hid, rid)]))
            args = ["verify", str(path)] + (["--rpc", info["rpc_url"]] if n % 50 == 0 else [])
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, (args, result.output)
        bad = folder / "tampered.json"
        bad.write_text(json.dumps(tampered))
        assert runner.invoke(cli, ["verify", str(bad), "--rpc", info["rpc_url"]]).exit_code == 1
        real = subprocess.run([*COMMAND, "verify", str(folder / f"{keys[-1][0]}-{keys[-1][1]}.json"),
                               "--rpc", info["rpc_url"], "--json"], capture_output=True, text=True, timeout=60)
        assert real.returncode == 0, real.stderr
        assert json.loads(real.stdout)["status"] == "valid"

        assert node.stop() == 0
    finally:
        node.cleanup()
