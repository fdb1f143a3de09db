"""``mrledger kpis`` against the real app over real HTTP: the table, JSON and CSV forms, and its exit codes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrledger.cli.main import app
from mrledger.http.app import create_app
from mrledger.service.decisions import new_id, result_ref
from mrledger.store.decisions import VerificationRow
from mrledger.store.events import ItemRef
from tests.harness import Api, serve_in_thread

runner = CliRunner()
CT_HEAD = ItemRef("urn:mrledger:catalogue:imaging", "ct-head", "ct")


@pytest.fixture
def node(api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Api, str]]:
    """One recognised CT decision of qd-002 today (200 CNY), served on a free port."""
    monkeypatch.chdir(tmp_path)
    for name in ("MRL_TOKEN", "MRL_API_URL"):
        monkeypatch.delenv(name, raising=False)
    now = api.ledger.clock()
    vid = new_id(now)
    api.ledger.events.remember(VerificationRow(vid, now, None, None, "gz-001",
                                               result_ref(api.ledger.regional_key, "gz-001", "R9"), 1, "authentic",
                                               "recognise", (), "ct", (CT_HEAD,)))
    token = api.ledger.access.create_token("doctor:qd-002", "doctor", now)
    r = api.client.post("/v1/decisions", json={"verification_id": vid, "decision": "recognised"},
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    with serve_in_thread(create_app(api.ledger)) as url:
        yield api, url


def test_table_json_and_csv(node: tuple[Api, str]) -> None:
    api, url = node
    env = {"MRL_TOKEN": api.tokens["auditor"]}
    table = runner.invoke(app, ["kpis", "--api", url], env=env)
    assert table.exit_code == 0, table.output
    assert "qd-002" in table.output and "100.0 %" in table.output and "200.00" in table.output
    as_json = runner.invoke(app, ["kpis", "--api", url, "--json", "--hospital", "qd-002"], env=env)
    assert as_json.exit_code == 0, as_json.output
    rep = json.loads(as_json.output)
    assert rep["totals"]["current"]["money_saved"] == 200.0 and rep["filters"]["hospital"] == "qd-002"
    as_csv = runner.invoke(app, ["kpis", "--api", url, "--csv", "--category", "ct"], env=env)
    assert as_csv.exit_code == 0, as_csv.output
    total = next(csv.DictReader(io.StringIO(as_csv.output)))
    assert (total["scope"], total["tests_avoided"], total["money_saved"]) == ("total", "1", "200.00")


def test_csv_to_a_file_and_a_period(node: tuple[Api, str], tmp_path: Path) -> None:
    api, url = node
    out = runner.invoke(app, ["kpis", "--api", url, "--csv", "--out", str(tmp_path / "k.csv"), "--from",
                              "2024-05-01", "--to", "2024-05-31", "--tz", "Asia/Shanghai"],
                        env={"MRL_TOKEN": api.tokens["auditor"]})
    assert out.exit_code == 0, out.output
    first = next(csv.DictReader(io.StringIO((tmp_path / "k.csv").read_text())))
    assert (first["from"], first["to"], first["decisions"]) == ("2024-05-01", "2024-05-31", "0")


def test_refusals_and_usage_errors(node: tuple[Api, str]) -> None:
    api, url = node
    doctor = runner.invoke(app, ["kpis", "--api", url], env={"MRL_TOKEN": api.tokens["doctor"]})
    assert doctor.exit_code == 1 and "Role not allowed" in doctor.output
    backwards = runner.invoke(app, ["kpis", "--api", url, "--from", "2024-06-01", "--to", "2024-05-01"],
                              env={"MRL_TOKEN": api.tokens["auditor"]})
    assert backwards.exit_code == 1 and "after" in backwards.output
    both = runner.invoke(app, ["kpis", "--api", url, "--csv", "--json"], env={"MRL_TOKEN": api.tokens["auditor"]})
    assert both.exit_code == 2
    nobody = runner.invoke(app, ["kpis", "--api", "http://127.0.0.1:9"], env={"MRL_TOKEN": "x"})
    assert nobody.exit_code == 2 and "no mrledger API answers" in nobody.output
