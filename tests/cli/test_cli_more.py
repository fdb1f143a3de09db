"""The node-facing CLI commands (`token create`, `hospital register`, `submit`, `receipt`) and their error
paths: a missing database or an absent server is a clear message and exit 2, a refusal by the server its
RFC 9457 title and detail and exit 1, a receipt still pending exit 3.

The server side is a stand-in (a stdlib HTTP server answering canned responses): these tests pin the
client's behaviour, not the routes', which have tests of their own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from mrledger.anchoring.node import free_port
from mrledger.cli.http_client import api_root, load_records
from mrledger.cli.main import app
from mrledger.store import Store
from mrledger.store.access import Access
from tests.conftest import TEST_KEY

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No MRL_* from the developer's shell or a .env in the checkout leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in ("MRL_DATA_DIR", "MRL_DATABASE_URL", "MRL_TOKEN", "MRL_API_URL", "MRL_PORT", "MRL_HOST"):
        monkeypatch.delenv(name, raising=False)


def _node_db(data_dir: Path) -> Store:
    data_dir.mkdir()
    store = Store.open(f"sqlite:///{data_dir / 'mrledger.db'}", master_key=TEST_KEY)
    store.register_hospital("gz-001", "Guangzhou First People's Hospital")
    return store


def _record(i: int) -> dict[str, Any]:
    return {"hospital_id": "gz-001", "result_id": f"R{i}", "version": 1, "kind": "lab",
            "code": {"system": "http://loinc.org", "code": "2345-7"}, "subject": {"value": f"P{i}"},
            "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
            "content": {"type": "observations", "observations": [
                {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 5.0, "unit": "mmol/L"}]}}


# -------------------------------------------------------------------------------- token / hospital


def test_token_create_needs_the_nodes_database(tmp_path: Path) -> None:
    out = runner.invoke(app, ["token", "create", "--role", "admin"], env={"MRL_DATA_DIR": str(tmp_path / "none")})
    assert out.exit_code == 2 and "no mrledger database" in out.output
    assert not (tmp_path / "none").exists()  # nothing created in the wrong place


def test_token_create_prints_a_working_token_once(tmp_path: Path) -> None:
    store = _node_db(tmp_path / "node")
    env = {"MRL_DATA_DIR": str(tmp_path / "node")}
    out = runner.invoke(app, ["token", "create", "--role", "hospital:gz-001", "--label", "LIS upload"], env=env)
    assert out.exit_code == 0, out.output
    token = out.stdout.strip()
    principal = Access(store).authenticate(token)
    assert principal is not None and principal.hospital == "gz-001"

    unknown = runner.invoke(app, ["token", "create", "--role", "hospital:nowhere"], env=env)
    assert unknown.exit_code == 2 and "unknown hospital" in unknown.output
    bad = runner.invoke(app, ["token", "create", "--role", "root"], env=env)
    assert bad.exit_code == 2 and "role must be" in bad.output


def test_hospital_register(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["hospital", "register", "x-1", "X"], env={"MRL_DATA_DIR": str(tmp_path / "no")})
    assert missing.exit_code == 2 and "no mrledger database" in missing.output
    store = _node_db(tmp_path / "node")
    env = {"MRL_DATA_DIR": str(tmp_path / "node")}
    ok = runner.invoke(app, ["hospital", "register", "qd-002", "Qingdao Municipal Hospital"], env=env)
    assert ok.exit_code == 0, ok.output
    assert ("qd-002", "Qingdao Municipal Hospital") in store.hospitals()
    again = runner.invoke(app, ["hospital", "register", "qd-002", "Qingdao Municipal Hospital"], env=env)
    assert again.exit_code == 0  # idempotent
    other = runner.invoke(app, ["hospital", "register", "qd-002", "Another Name"], env=env)
    assert other.exit_code == 1 and "another name" in other.output
    invalid = runner.invoke(app, ["hospital", "register", "_bad id", "X"], env=env)
    assert invalid.exit_code == 1 and "hospital id" in invalid.output


# -------------------------------------------------------------------------------- submit / receipt


class _Canned(BaseHTTPRequestHandler):
    """Answers every request with the next canned (status, content type, body); records what it got."""

    replies: ClassVar[list[tuple[int, str, bytes]]] = []
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.seen.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
        status, ctype, body = self.replies.pop(0) if self.replies else (500, "text/plain", b"no reply left")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Canned.replies, _Canned.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _problem(status: int, title: str, detail: str) -> tuple[int, str, bytes]:
    body = {"type": "urn:mrledger:problem:x", "title": title, "status": status, "detail": detail}
    return status, "application/problem+json", json.dumps(body).encode()


def _accepted(n: int) -> tuple[int, str, bytes]:
    return 202, "application/json", json.dumps({"accepted": n, "duplicates": 0, "results": []}).encode()


def test_submit_without_a_server_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps(_record(1)))
    api = f"http://127.0.0.1:{free_port()}"
    out = runner.invoke(app, ["submit", str(tmp_path / "r.json"), "--hospital", "gz-001", "--api", api],
                        env={"MRL_TOKEN": "mrl_x"})
    assert out.exit_code == 2 and "no mrledger API answers" in out.output and "mrledger serve" in out.output


def test_submit_unreadable_or_malformed_files(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["submit", str(tmp_path / "nope.json"), "--hospital", "gz-001"])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    (tmp_path / "bad.json").write_text("{not json")
    bad = runner.invoke(app, ["submit", str(tmp_path / "bad.json"), "--hospital", "gz-001"])
    assert bad.exit_code == 2 and "neither JSON nor JSON Lines" in bad.output
    (tmp_path / "num.json").write_text("[1, 2]")
    num = runner.invoke(app, ["submit", str(tmp_path / "num.json"), "--hospital", "gz-001"])
    assert num.exit_code == 2 and "not a JSON object" in num.output


@pytest.mark.parametrize(("content", "reason"), [
    ("[" * 2_000 + "]" * 2_000, "deeper than 128 levels"),
    ('{"value": 1e-400}', "too small for an IEEE-754 double"),
    ('{"a": 1, "a": 2}', "duplicate JSON key"),
    ('{"a": "\\ud800"}', "lone surrogate"),
], ids=["deep", "underflow", "duplicate-key", "lone-surrogate"])
def test_submit_parses_files_as_strictly_as_the_server(tmp_path: Path, content: str, reason: str) -> None:
    """The CLI reads the user's files with the server's parser (issue 14): a deep file is refused before it
    is decoded, and what the server would refuse is refused here with the same reason, before any upload."""
    (tmp_path / "f.json").write_text(content)
    out = runner.invoke(app, ["submit", str(tmp_path / "f.json"), "--hospital", "gz-001"])
    assert out.exit_code == 2 and "neither JSON nor JSON Lines" in out.output
    assert reason in out.output.replace("\n", " ")


def test_submit_chunks_of_1000_with_the_token(tmp_path: Path, server: str) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"records": [_record(i) for i in range(1500)]}))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(_record(i)) for i in range(1500, 2500)) + "\n")
    _Canned.replies = [_accepted(1000), _accepted(1000), _accepted(500)]
    out = runner.invoke(app, ["submit", str(tmp_path / "a.json"), str(tmp_path / "b.jsonl"), "--hospital", "gz-001",
                              "--api", server], env={"MRL_TOKEN": "mrl_secret"})
    assert out.exit_code == 0, out.output
    assert "2500 accepted" in out.stdout
    sizes = [len(json.loads(body)["records"]) for _, _, _, body in _Canned.seen]
    assert sizes == [1000, 1000, 500]
    assert {(m, p) for m, p, _, _ in _Canned.seen} == {("POST", "/v1/hospitals/gz-001/results")}
    assert all(h.get("Authorization") == "Bearer mrl_secret" for _, _, h, _ in _Canned.seen)


def test_submit_refused_prints_the_problem_and_exits_1(tmp_path: Path, server: str) -> None:
    (tmp_path / "r.json").write_text(json.dumps([_record(i) for i in range(1200)]))
    _Canned.replies = [_accepted(1000), _problem(422, "A record is not valid", "records[3].issued: bad date")]
    out = runner.invoke(app, ["submit", str(tmp_path / "r.json"), "--hospital", "gz-001", "--api", server + "/v1"])
    assert out.exit_code == 1
    assert "A record is not valid" in out.output and "records[3].issued: bad date" in out.output
    assert "after 1000 of 1200" in out.output


def test_receipt_pending_refused_and_saved(tmp_path: Path, server: str) -> None:
    receipt = b'{"format":"mrl-receipt/1"}'
    _Canned.replies = [_problem(409, "Not anchored yet", "batch 3 is sealed, not yet anchored"),
                       _problem(404, "Not found", "no result X"),
                       (200, "application/json", receipt)]
    pending = runner.invoke(app, ["receipt", "gz-001", "R1", "--api", server, "--token", "mrl_t"])
    assert pending.exit_code == 3 and "Not anchored yet" in pending.output
    missing = runner.invoke(app, ["receipt", "gz-001", "X", "--api", server])
    assert missing.exit_code == 1 and "no result X" in missing.output
    saved = runner.invoke(app, ["receipt", "gz-001", "R/1", "--version", "2", "--api", server,
                                "--out", str(tmp_path / "r.json")])
    assert saved.exit_code == 0, saved.output
    assert (tmp_path / "r.json").read_bytes() == receipt  # byte for byte as issued
    assert _Canned.seen[2][1] == "/v1/hospitals/gz-001/results/R%2F1/receipt?version=2"
    assert _Canned.seen[0][2].get("Authorization") == "Bearer mrl_t"


def test_receipt_without_a_server(tmp_path: Path) -> None:
    out = runner.invoke(app, ["receipt", "gz-001", "R1", "--api", f"http://127.0.0.1:{free_port()}"])
    assert out.exit_code == 2 and "no mrledger API answers" in out.output


def test_client_helpers(tmp_path: Path) -> None:
    assert api_root("http://h:1") == api_root("http://h:1/") == api_root("http://h:1/v1/") == "http://h:1/v1"
    (tmp_path / "one.json").write_text(json.dumps(_record(1)))
    assert load_records([tmp_path / "one.json"]) == [_record(1)]
