"""The KPI audit as a job (http/routes/audit_jobs.py, service/audit_jobs.py), through the HTTP app on SQLite and
PostgreSQL: a clean ledger is ok with the right counts, a KPI row edited with SQL is found, progress is visible
while it runs, a second start while one runs is a 409 naming it, a job lost to a restart says so, and the
synchronous ``GET /v1/audit/decisions`` refuses ledgers over its limit instead of hanging."""

from __future__ import annotations

import fcntl
import gc
import json
import struct
import tempfile
import threading
from typing import Any

import pytest

from mrledger.service import audit_jobs, kpi_audit
from mrledger.service.audit_jobs import AuditJobs
from mrledger.service.decisions import new_id, result_ref
from mrledger.store.decisions import VerificationRow
from tests.harness import Api
from tests.service.test_kpi_audit import GLUCOSE, doctor, encounter, recognised, sql


def ledger_of(api: Api, decisions: int = 3, encounters: int = 4, sealed: bool = True) -> int:
    """Decisions and encounters of qd-002, sealed in batches of 2 (so a job ranges over several) when ``sealed``;
    how many records."""
    for _ in range(decisions):
        recognised(api)
    for i in range(encounters):
        encounter(api, f"E{i}")
    if sealed:
        while api.ledger.store.seal("qd-002.events", 2) is not None:
            pass
    return decisions + encounters


def use_jobs(api: Api, jobs: AuditJobs) -> AuditJobs:
    api.client.app.state.audit_jobs = jobs  # type: ignore[attr-defined]
    return jobs


def jobs_of(api: Api) -> AuditJobs:
    jobs: AuditJobs = api.client.app.state.audit_jobs  # type: ignore[attr-defined]
    return jobs


def start(api: Api, role: str = "auditor", **params: str) -> dict[str, Any]:
    r = api.client.post("/v1/audit/decisions/jobs", params=params, headers=api.auth(role))
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    assert r.headers["Location"] == f"/v1/audit/decisions/jobs/{body['id']}"
    assert body["state"] == "running"
    return body


def finished(api: Api, job_id: str, **params: Any) -> dict[str, Any]:
    jobs_of(api).wait(job_id, timeout=60)
    r = api.client.get(f"/v1/audit/decisions/jobs/{job_id}", params=params, headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["state"] == "done", body
    return body


def test_a_job_over_a_clean_ledger_is_ok_with_the_counts(api: Api) -> None:
    use_jobs(api, AuditJobs(chunk=2))
    n = ledger_of(api)
    recognised(api)  # one more, not sealed: checked against the database only
    body = finished(api, start(api)["id"])
    assert body["ok"] is True and body["problem_count"] == 0 and body["problems"] == []
    assert body["progress"] == {"records_total": n + 1, "records_checked": n + 1, "streams_total": 1,
                                "streams_done": 1, "batches_checked": 4}
    assert body["checked_records"] == n + 1 and body["finished_at"] is not None
    (stream,) = body["streams"]
    assert (stream["stream"], stream["records"], stream["decisions"], stream["encounters"], stream["batches"],
            stream["unanchored_records"], stream["chain_checked"]) == ("qd-002.events", n + 1, 4, 4, 4, n + 1, False)
    # The same answer as the one-request check.
    sync = api.client.get("/v1/audit/decisions", headers=api.auth("auditor")).json()
    assert sync["streams"] == body["streams"] and sync["ok"] is True
    # One hospital: only its stream; another hospital has none.
    assert finished(api, start(api, hospital="qd-002")["id"])["checked_records"] == n + 1
    assert finished(api, start(api, "admin", hospital="gz-001")["id"])["progress"]["streams_total"] == 0


def test_a_tampered_kpi_row_is_found_by_the_job(api: Api) -> None:
    use_jobs(api, AuditJobs(chunk=3))
    vid = recognised(api)
    ledger_of(api)
    sql(api, "UPDATE decisions SET decision = 'reordered', reason = 'emergency' WHERE verification_id = :v", v=vid)
    sql(api, "UPDATE encounters SET retrieved = :f WHERE encounter_ref = (SELECT min(encounter_ref) FROM encounters)",
        f=False)
    body = finished(api, start(api)["id"])
    assert body["ok"] is False and body["problem_count"] == 2
    assert body["problems_by_kind"] == {"altered": 2}
    by_field = {tuple(p["fields"]): p for p in body["problems"]}
    assert by_field[("data.decision", "data.reason")]["verification_id"] == vid
    assert by_field[("data.retrieved",)]["seq"] >= 1
    # Problems are paged.
    page = finished(api, body["id"], problems_offset=1, problems_limit=1)
    assert page["problems"] == body["problems"][1:] and page["problems_offset"] == 1


def test_progress_is_visible_and_a_second_job_while_one_runs_is_a_409(api: Api) -> None:
    ledger_of(api, decisions=4, encounters=4)
    gate, seen = threading.Event(), threading.Event()
    states: list[dict[str, Any]] = []

    def after_write(state: dict[str, Any]) -> None:
        states.append(state)
        if state["state"] == "running" and state["progress"]["records_checked"] > 0 and not seen.is_set():
            seen.set()
            assert gate.wait(30)  # hold the job here, mid-way, until the test has looked

    use_jobs(api, AuditJobs(chunk=2, after_write=after_write))
    job = start(api)
    assert seen.wait(30)
    r = api.client.get(f"/v1/audit/decisions/jobs/{job['id']}", headers=api.auth("auditor"))
    now = r.json()
    assert now["state"] == "running" and 0 < now["progress"]["records_checked"] < now["progress"]["records_total"] == 8
    second = api.client.post("/v1/audit/decisions/jobs", headers=api.auth("admin"))
    assert second.status_code == 409, second.text
    assert second.headers["content-type"].startswith("application/problem+json")
    assert second.json()["job_id"] == job["id"]
    assert second.headers["Location"] == f"/v1/audit/decisions/jobs/{job['id']}"
    gate.set()
    assert finished(api, job["id"])["ok"] is True
    checked = [s["progress"]["records_checked"] for s in states]
    assert checked == sorted(checked) and checked[-1] == 8
    start(api)  # the lock is free again


def test_a_job_lost_to_a_restart_says_so(api: Api) -> None:
    jobs = jobs_of(api)
    job_id = "01JD3S4V6Q8E2N7W0X5K9C1B2A"
    (jobs.directory / f"{job_id}.json").write_text(json.dumps({  # what a job's file says when its process died
        "id": job_id, "state": "running", "hospital": None, "started_at": "2024-05-01T00:00:00.000Z",
        "updated_at": "2024-05-01T00:00:01.000Z", "finished_at": None,
        "progress": {"records_total": 10, "records_checked": 2, "streams_total": 1, "streams_done": 0,
                     "batches_checked": 1},
        "ok": None, "checked_records": 0, "streams": [], "problem_count": 0, "problems_by_kind": {}, "problems": [],
        "problems_truncated": False, "error": None}))
    body = api.client.get(f"/v1/audit/decisions/jobs/{job_id}", headers=api.auth("auditor")).json()
    assert body["state"] == "lost" and "start another" in body["error"]
    unknown = api.client.get("/v1/audit/decisions/jobs/01JD3S4V6Q8E2N7W0X5K9C1B2B", headers=api.auth("auditor"))
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("unknown-audit-job")


def test_who_may_run_and_read_jobs(api: Api) -> None:
    ledger_of(api, 1, 1)
    job = start(api)
    for role in ("doctor", "hospital:qd-002"):
        assert api.client.post("/v1/audit/decisions/jobs", headers=api.auth(role)).status_code == 403
        assert api.client.get(f"/v1/audit/decisions/jobs/{job['id']}", headers=api.auth(role)).status_code == 403
    doctor(api)
    assert api.client.post("/v1/audit/decisions/jobs", headers=api.auth("doctor:qd-002")).status_code == 403
    assert api.client.post("/v1/audit/decisions/jobs").status_code == 401
    assert api.client.get(f"/v1/audit/decisions/jobs/{job['id']}").status_code == 401
    assert api.client.post("/v1/audit/decisions/jobs", params={"hospital": "nope"},
                           headers=api.auth("auditor")).status_code == 404
    finished(api, job["id"])


def test_the_one_request_check_refuses_a_ledger_over_its_limit(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    n = ledger_of(api, 2, 2)
    monkeypatch.setattr(kpi_audit, "MAX_SYNC_RECORDS", n - 1)
    r = api.client.get("/v1/audit/decisions", headers=api.auth("auditor"))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("audit-too-large") and (body["records"], body["limit"]) == (n, n - 1)
    assert "/v1/audit/decisions/jobs" in body["detail"]
    assert finished(api, start(api)["id"])["checked_records"] == n  # the job has no such limit


@pytest.mark.anvil
@pytest.mark.parametrize("version", [1, 2])
def test_a_job_checks_the_registry_and_finds_a_rewritten_batch(engine: Any, version: int) -> None:
    from tests.harness import chain_api_on

    with chain_api_on(engine, version) as api:
        use_jobs(api, AuditJobs(chunk=2))
        n = ledger_of(api, 3, 3)
        api.anchor_all()
        body = finished(api, start(api)["id"])
        assert body["ok"] is True, body["problems"]
        (stream,) = body["streams"]
        assert stream["chain_checked"] is True
        assert stream["confirmed_batches"] == 3 == body["progress"]["batches_checked"]
        assert stream["records"] == n and stream["unanchored_records"] == 0
        sql(api, "UPDATE batches SET root = :r WHERE hospital_id = 'qd-002.events' AND seq = 2", r=b"\x00" * 32)
        after = finished(api, start(api)["id"])
        assert sorted((p["kind"], p["seq"]) for p in after["problems"]) == [("chain-mismatch", 2),
                                                                            ("root-mismatch", 2)]


def test_a_poll_at_the_moment_of_a_start_does_not_refuse_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking whether a job runs (every poll of a job's state does) must not take the job lock, even for a moment:
    a start at that moment was refused with a 409 naming a job that had ended. Any lock call of the polling
    thread that takes the lock is held open here until the start has been tried."""
    ledger_of(api, decisions=1, encounters=1)
    jobs = jobs_of(api)
    finished(api, start(api)["id"])  # a job has run and ended: ``current`` names it
    holding, release = threading.Event(), threading.Event()
    poller: list[threading.Thread] = []
    real_flock, real_fcntl = fcntl.flock, fcntl.fcntl

    def pause_if_taken(taken: bool) -> None:
        if taken and threading.current_thread() in poller:
            holding.set()
            release.wait(10)

    def flock(fd: Any, op: int) -> None:
        real_flock(fd, op)
        pause_if_taken(op & fcntl.LOCK_EX != 0)

    def fcntl_(fd: Any, cmd: int, arg: Any = 0) -> Any:
        out = real_fcntl(fd, cmd, arg)
        pause_if_taken(cmd == fcntl.F_OFD_SETLK and struct.unpack("h", arg[:2])[0] == fcntl.F_WRLCK)
        return out

    monkeypatch.setattr(audit_jobs.fcntl, "flock", flock)
    monkeypatch.setattr(audit_jobs.fcntl, "fcntl", fcntl_)
    held: list[bool] = []
    poller.append(threading.Thread(target=lambda: held.append(jobs._held())))
    poller[0].start()
    holding.wait(1)  # set only by a poll that took the lock
    try:
        second = api.client.post("/v1/audit/decisions/jobs", headers=api.auth("auditor"))
    finally:
        release.set()
        poller[0].join(10)
    assert second.status_code == 202, second.text
    assert held == [False]  # the poll answered: no job was running when it asked
    assert finished(api, second.json()["id"])["ok"] is True


class _Threads:
    """A ``Splitter`` in this process: each stream's part built on a thread of its own, handed back in the reverse
    of the order asked (processes finish in any order). What node/audit_pool.py does with processes."""

    processes = 2

    def __init__(self, api: Api) -> None:
        self.api, self.asked = api, list[tuple[str, ...]]()

    def parts(self, streams: Any, chunk: int, keep: int) -> Any:
        self.asked.append(tuple(streams))
        parts: dict[str, dict[str, Any]] = {}

        def one(stream: str) -> None:
            parts[stream] = kpi_audit.DecisionAudit(self.api.ledger, chunk=chunk, keep=keep).part(stream)

        threads = [threading.Thread(target=one, args=(s,)) for s in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for stream in reversed(streams):
            yield json.loads(json.dumps(parts[stream]))  # plain data, as it crosses a pipe


def two_streams(api: Api) -> str:
    """Decisions in two event streams (a doctor of qd-002 and one of gz-001) and qd-002's encounters; the
    verification id of gz-001's decision."""
    ledger_of(api, decisions=2, encounters=2)
    now = api.ledger.clock()
    vid = new_id(now)
    api.ledger.events.remember(VerificationRow(vid, now, None, None, "qd-002",
                                               result_ref(api.ledger.regional_key, "qd-002", "R9"), 1, "authentic",
                                               "recognise", (), "clinical-biochemistry", (GLUCOSE,)))
    r = api.client.post("/v1/decisions", json={"verification_id": vid, "decision": "recognised"},
                        headers=doctor(api, "gz-001"))
    assert r.status_code == 201, r.text
    return vid


def test_a_job_over_its_split_size_merges_the_streams_checked_elsewhere(api: Api) -> None:
    splitter = _Threads(api)
    vid = two_streams(api)
    use_jobs(api, AuditJobs(chunk=2, split=splitter, split_records=5))
    body = finished(api, start(api)["id"])
    assert splitter.asked == [("gz-001.events", "qd-002.events")] and body["processes"] == 2
    sync = api.client.get("/v1/audit/decisions", headers=api.auth("auditor")).json()
    # The same answer as one process checking the streams in order: summaries in the listed order, counts summed.
    assert body["ok"] is True and body["streams"] == sync["streams"]
    assert [s["stream"] for s in body["streams"]] == ["gz-001.events", "qd-002.events"]
    assert body["checked_records"] == sync["checked_records"] == 5 == body["progress"]["records_checked"]
    assert body["progress"]["streams_done"] == 2 and body["progress"]["batches_checked"] == 2
    # A job under the size stays in its thread.
    assert finished(api, start(api, hospital="qd-002")["id"])["processes"] == 1 and len(splitter.asked) == 1
    # Problems found elsewhere are the job's: counted, kept and by kind.
    sql(api, "UPDATE decisions SET decision = 'reordered', reason = 'emergency' WHERE verification_id = :v", v=vid)
    sql(api, "UPDATE encounters SET retrieved = :f WHERE encounter_ref = (SELECT min(encounter_ref) FROM encounters)",
        f=False)
    tampered = finished(api, start(api)["id"])
    assert tampered["ok"] is False and tampered["problem_count"] == 2 and tampered["problems_by_kind"] == {"altered": 2}
    assert {p["stream"] for p in tampered["problems"]} == {"gz-001.events", "qd-002.events"}
    assert any(p.get("verification_id") == vid for p in tampered["problems"])


def test_merged_findings_count_everything_and_keep_the_first() -> None:
    found = kpi_audit.Findings(keep=3)
    found.add({"kind": "altered"})
    found.merge([{"kind": "unindexed", "n": i} for i in range(4)], 7, {"unindexed": 5, "altered": 2})
    assert found.count == 8 and found.by_kind == {"altered": 3, "unindexed": 5}
    assert found.kept == [{"kind": "altered"}, {"kind": "unindexed", "n": 0}, {"kind": "unindexed", "n": 1}]
    every = kpi_audit.Findings()
    every.merge([{"kind": "x"}] * 2, 2, {"x": 2})
    assert every.count == 2 and len(every.kept) == 2


def test_a_private_jobs_directory_is_made_on_first_use_and_removed_with_its_jobs(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every app built without a node's directory made one in /tmp and left it there (the test suite left ~900).
    A private one is now made when a job needs it and removed when its ``AuditJobs`` goes; a node's own
    directory is never removed."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    jobs = AuditJobs()
    assert list(tmp.iterdir()) == []
    assert jobs.get("0" * 26) is None  # a poll for a job: the directory is used
    assert jobs.directory.parent == tmp and jobs.directory.is_dir()
    del jobs
    gc.collect()
    assert list(tmp.iterdir()) == []
    node = tmp_path / "data" / "audit-jobs"
    assert AuditJobs(node).get("0" * 26) is None
    gc.collect()
    assert node.is_dir()
