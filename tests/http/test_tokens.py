"""Token revocation and expiry (issue 14, finding 5): ``mrledger token list | revoke``, ``--expires-in`` /
``--expires-at``, the admin API ``/v1/tokens``, and that two API processes on one database both refuse a revoked
or expired token on the very next request (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from typer.testing import CliRunner

from mrledger.anchoring.node import free_port
from mrledger.cli.main import app as cli
from mrledger.cli.tokens import parse_duration, parse_instant
from mrledger.http.app import create_app
from mrledger.service.ledger import build_services
from mrledger.store import Store, make_engine
from mrledger.store.access import Access
from mrledger.store.models import ApiToken
from tests.conftest import TEST_KEY, db_url
from tests.harness import Api
from tests.http.test_hospitals import assert_problem

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
#: A second API process on the same database: the app exactly as ``mrledger serve`` builds it (no chain).
SECOND_NODE = """
import os, sys, uvicorn
from mrledger.http.app import create_app
from mrledger.service.ledger import build_services
from mrledger.store import Store, make_engine
from mrledger.store.crypto import MasterKey
key = MasterKey.from_text(os.environ["MRL_MASTER_KEY"])  # the test's key, handed down by the parent
uvicorn.run(create_app(build_services(Store(make_engine(sys.argv[1]), master_key=key))), host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning")
"""


@pytest.fixture
def second_node(engine: Engine) -> Iterator[str]:
    """Another process serving the API on ``engine``'s database; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SECOND_NODE, db_url(engine), str(port)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the second API process died"
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the second API process did not start"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def _status(base: str, token: str) -> int:
    return httpx.get(base + "/v1/hospitals", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def test_a_revoked_or_expired_token_is_refused_by_both_processes_on_the_next_request(
        api: Api, engine: Engine, second_node: str) -> None:
    admin = api.auth("admin")
    made = api.client.post("/v1/tokens", json={"role": "doctor:qd-002", "label": "ward 3"}, headers=admin)
    assert made.status_code == 201, made.text
    doctor, doctor_id = made.json()["token"], made.json()["id"]
    auditor = api.tokens["auditor"]
    # A third app instance with its own engine (its own connection pool) on the same database.
    other = TestClient(create_app(build_services(Store(make_engine(db_url(engine)), master_key=TEST_KEY))))
    for status in (_status(second_node, doctor), other.get("/v1/hospitals", headers=api.auth("admin")).status_code,
                   api.client.get("/v1/hospitals", headers={"Authorization": f"Bearer {doctor}"}).status_code):
        assert status == 200
    # Revoked through this process's admin API: the other process refuses it on its next request.
    revoked = api.client.post(f"/v1/tokens/{doctor_id}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked", revoked.text
    assert _status(second_node, doctor) == 401
    assert other.get("/v1/hospitals", headers={"Authorization": f"Bearer {doctor}"}).status_code == 401
    problem = assert_problem(api.client.get("/v1/hospitals", headers={"Authorization": f"Bearer {doctor}"}), 401,
                             "unauthenticated")
    assert problem["title"] == "Unknown, revoked or expired token"
    # Expiry: the auditor's token reaches its expiry (set in the database, as time passing would).
    assert _status(second_node, auditor) == 200
    auditor_id = api.ledger.access.authenticate(auditor)
    assert auditor_id is not None
    with api.ledger.store.engine.begin() as conn:
        conn.execute(update(ApiToken).where(ApiToken.id == auditor_id.token_id)
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert _status(second_node, auditor) == 401
    assert other.get("/v1/hospitals", headers={"Authorization": f"Bearer {auditor}"}).status_code == 401


def test_expiry_is_judged_at_the_requests_time(api: Api) -> None:
    now = api.ledger.clock()
    token = api.ledger.access.create_token("auditor", "short", now, expires_at=now + timedelta(hours=1))
    access = api.ledger.access
    assert access.authenticate(token, now + timedelta(minutes=59)) is not None
    assert access.authenticate(token, now + timedelta(hours=1)) is None  # refused from the instant on
    with pytest.raises(ValueError, match="future"):
        access.create_token("auditor", "past", now, expires_at=now - timedelta(seconds=1))
    with pytest.raises(ValueError, match="offset"):
        access.create_token("auditor", "naive", now, expires_at=datetime(2099, 1, 1))


def test_the_admin_api_lists_without_secrets_and_creates_no_admin(api: Api) -> None:
    admin = api.auth("admin")
    made = api.client.post("/v1/tokens", json={"role": "hospital:gz-001", "label": "LIS", "expires_in": 3600},
                           headers=admin)
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    body = made.json()
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.fromisoformat(body["created_at"]) <= timedelta(hours=1)
    assert api.ledger.access.authenticate(body["token"]) is not None
    listing = api.client.get("/v1/tokens", headers=admin)
    assert listing.status_code == 200
    tokens = listing.json()["tokens"]
    assert {t["role"] for t in tokens} >= {"admin", "doctor", "hospital:gz-001"}
    text = listing.text
    for secret in [*api.tokens.values(), body["token"]]:
        assert secret not in text  # neither the tokens nor anything like their hashes
    assert all(set(t) == {"id", "role", "label", "created_at", "expires_at", "revoked_at", "state"} for t in tokens)
    # A leaked admin token must not mint its own successor: admin tokens are made on the host.
    assert_problem(api.client.post("/v1/tokens", json={"role": "admin"}, headers=admin), 403, "forbidden")
    assert_problem(api.client.post("/v1/tokens", json={"role": "auditor", "expires_in": 60,
                                                       "expires_at": "2099-01-01T00:00:00Z"}, headers=admin),
                   422, "validation")
    assert_problem(api.client.post("/v1/tokens", json={"role": "auditor", "expires_at": "2001-01-01T00:00:00Z"},
                                   headers=admin), 422, "invalid-submission")
    assert_problem(api.client.post("/v1/tokens", json={"role": "hospital:nowhere"}, headers=admin), 404, "not-found")
    assert_problem(api.client.post("/v1/tokens/424242/revoke", headers=admin), 404, "not-found")
    for role in ("doctor", "auditor", "hospital:gz-001"):
        assert api.client.get("/v1/tokens", headers=api.auth(role)).status_code == 403


def test_revocation_is_idempotent_and_an_admin_may_revoke_itself(api: Api) -> None:
    admin = api.auth("admin")
    me = api.ledger.access.authenticate(api.tokens["admin"])
    assert me is not None
    first = api.client.post(f"/v1/tokens/{me.token_id}/revoke", headers=admin)
    assert first.status_code == 200 and first.json()["state"] == "revoked"
    assert api.client.post(f"/v1/tokens/{me.token_id}/revoke", headers=admin).status_code == 401  # gone already
    again = api.ledger.access.revoke_token(me.token_id, api.ledger.clock() + timedelta(days=1))
    assert again.revoked_at == datetime.fromisoformat(first.json()["revoked_at"])  # the first time is kept
    actions = [e.action for e in api.ledger.access.entries(limit=10)]
    assert "token-revoke" in actions


def test_cli_create_with_expiry_list_and_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MRL_DATA_DIR", "MRL_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "node").mkdir()
    store = Store.open(f"sqlite:///{tmp_path / 'node' / 'mrledger.db'}", master_key=TEST_KEY)
    env = {"MRL_DATA_DIR": str(tmp_path / "node")}
    made = runner.invoke(cli, ["token", "create", "--role", "auditor", "--label", "audit 2027", "--expires-in",
                               "90d"], env=env)
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    access = Access(store)
    principal = access.authenticate(token)
    assert principal is not None
    assert access.authenticate(token, datetime.now(UTC) + timedelta(days=91)) is None
    at = runner.invoke(cli, ["token", "create", "--role", "auditor", "--expires-at", "2099-01-01T08:00:00+08:00"],
                       env=env)
    assert at.exit_code == 0, at.output
    for bad in (["--expires-in", "soon"], ["--expires-at", "2099-01-01"], ["--expires-at", "2001-01-01T00:00:00Z"],
                ["--expires-in", "1d", "--expires-at", "2099-01-01T00:00:00Z"]):
        out = runner.invoke(cli, ["token", "create", "--role", "auditor", *bad], env=env)
        assert out.exit_code == 2, (bad, out.output)

    listed = runner.invoke(cli, ["token", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["label"], r["state"], r["expires_at"]) for r in rows] == [
        ("audit 2027", "active", rows[0]["expires_at"]), ("cli auditor", "active", "2099-01-01T00:00:00Z")]
    assert token not in listed.stdout
    table = runner.invoke(cli, ["token", "list"], env=env)
    assert table.exit_code == 0 and "audit 2027" in table.stdout

    revoked = runner.invoke(cli, ["token", "revoke", str(principal.token_id)], env=env)
    assert revoked.exit_code == 0 and "revoked at" in revoked.stdout, revoked.output
    assert access.authenticate(token) is None
    assert json.loads(runner.invoke(cli, ["token", "list", "--json"], env=env).stdout.splitlines()[0])["state"] == \
        "revoked"
    missing = runner.invoke(cli, ["token", "revoke", "999"], env=env)
    assert missing.exit_code == 2 and "no token 999" in missing.output


def test_durations_and_instants() -> None:
    assert [parse_duration(t) for t in ("90d", "12h", "30m", "45s", "2w", "3600")] == [
        timedelta(days=90), timedelta(hours=12), timedelta(minutes=30), timedelta(seconds=45), timedelta(weeks=2),
        timedelta(hours=1)]
    for bad in ("0d", "-1d", "1y", "", "1.5h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_instant("2027-01-01T08:00:00+08:00") == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_instant("2027-01-01T08:00:00")
