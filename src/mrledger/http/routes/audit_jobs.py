"""The KPI audit as a job (service/audit_jobs.py): start it, poll it. Auditor and admin tokens, as
``GET /v1/audit/decisions``; access-logged (``audit-decisions-job`` when started, ``audit-decisions`` with the
verdict when it ends)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import Problem
from mrledger.http.routes.kpis import ROLES, AuditProblem, HospitalQuery, StreamSummary
from mrledger.http.schemas import PARAM_422, problems
from mrledger.service.audit_jobs import MAX_JOB_PROBLEMS, SPLIT_RECORDS, AuditJobRunning, AuditJobs
from mrledger.service.kpi_audit import CHUNK_RECORDS, is_hospital

router = APIRouter(prefix="/v1", tags=["kpis"])


class AuditProgress(BaseModel):
    records_total: int | None = Field(description="Records in the streams audited (null until counted).")
    records_checked: int
    streams_total: int | None
    streams_done: int
    batches_checked: int


class AuditJob(BaseModel):
    id: str = Field(description="A ULID; poll `GET /v1/audit/decisions/jobs/{id}`.")
    state: Literal["running", "done", "failed", "lost"] = Field(
        description="`failed`: see `error` (e.g. the chain could not be read); `lost`: the process running it "
                    "stopped (a restart) — start another.")
    hospital: str | None = Field(description="The one hospital audited; null: all.")
    started_at: str
    updated_at: str
    finished_at: str | None
    progress: AuditProgress
    processes: int = Field(1, description="Processes checking the job's streams (`MRL_AUDIT_PROCESSES`, from "
                                          "`MRL_AUDIT_SPLIT_RECORDS` records; 1: this API process's thread).")
    ok: bool | None = Field(description="When done: no problem found (the KPI tables hold exactly the committed "
                                        "records); null before.")
    checked_records: int
    streams: list[StreamSummary] = Field(description="The streams finished so far.")
    problem_count: int = Field(description="Every problem found so far.")
    problems_by_kind: dict[str, int]
    problems: list[AuditProblem] = Field(description=f"A page of the first {MAX_JOB_PROBLEMS} problems found "
                                                     "(`problems_offset`, `problems_limit`).")
    problems_offset: int
    problems_truncated: bool = Field(description=f"More than {MAX_JOB_PROBLEMS} problems: only the first "
                                                 "ones are kept, all are counted.")
    error: str | None


JOB_DESCRIPTION = f"""
Starts the check of `GET /v1/audit/decisions` (every decision's and encounter's KPI row against its anchored
record, batch root and registry entry) as a job, for ledgers of any size: 202 with `Location:
/v1/audit/decisions/jobs/{{id}}`, which reports progress (records checked of the total, streams done) and, when
done, the summary and the problems. The job reads the ledger {CHUNK_RECORDS:,} records at a time, each range in
short transactions, in a background thread of this API process; its memory does not grow with the ledger. A job
of at least `MRL_AUDIT_SPLIT_RECORDS` records (default {SPLIT_RECORDS:,}) spreads its event streams over
`MRL_AUDIT_PROCESSES` processes started for it (default: as many as `MRL_API_PROCESSES`; `processes` says how
many), each stream checked whole by one of them; progress then moves a stream at a time.

**One job at a time per node**: while one runs, this answers 409 `audit-job-running` with its `job_id` and its
URL in `Location` — poll that one. A restart loses a running job (it then reads `lost`): start another. Job
states are kept for the last 20 jobs, on this node only. Problems: all counted, the first {MAX_JOB_PROBLEMS:,}
kept. Measured: docs/kpis.md §6.
"""


def _jobs(request: Request) -> AuditJobs:
    jobs: AuditJobs = request.app.state.audit_jobs
    return jobs


def _location(job_id: str) -> str:
    return f"/v1/audit/decisions/jobs/{job_id}"


@router.post("/audit/decisions/jobs", status_code=202, response_model=AuditJob,
             summary="Start the KPI audit as a job (auditor, admin)", description=JOB_DESCRIPTION,
             responses={202: {"description": "Started", "headers": {"Location": {
                 "description": "The job's URL", "schema": {"type": "string"}}}},
                 **problems(401, 403, 404, 409, 422, s404=("unknown-hospital", "Unknown hospital",
                                                           "unknown hospital 'xx-9'", {}),
                            s409=("audit-job-running", "An audit job is running",
                                  "audit job 01JD3S4V6Q8E2N7W0X5K9C1B2A is running on this node: poll it",
                                  {"job_id": "01JD3S4V6Q8E2N7W0X5K9C1B2A"}),
                            s422=PARAM_422)})
def start_audit_job(request: Request, response: Response, ledger: ServicesDep, principal: PrincipalDep,
                    hospital: HospitalQuery = None) -> Any:
    authorize(principal, *ROLES)
    if hospital is not None and not is_hospital(ledger, hospital):
        raise Problem(404, "unknown-hospital", "Unknown hospital", f"unknown hospital {hospital!r}")
    log = ledger.access_log

    def ended(state: dict[str, Any]) -> None:
        verdict = "error" if state["state"] != "done" else "ok" if state["ok"] else "problems"
        log.log(principal, "audit-decisions", hospital_id=hospital, verdict=verdict)

    try:
        state = _jobs(request).start(ledger, hospital, on_end=ended)
    except AuditJobRunning as exc:
        problem = Problem(409, "audit-job-running", "An audit job is running",
                          f"audit job {exc.job_id} is running on this node: poll it", job_id=exc.job_id)
        raise problem.with_headers({"Location": _location(exc.job_id)} if exc.job_id else {}) from exc
    log.log(principal, "audit-decisions-job", hospital_id=hospital, verdict="started")
    response.headers["Location"] = _location(state["id"])
    return {**state, "problems_offset": 0}


@router.get("/audit/decisions/jobs/{job_id}", response_model=AuditJob,
            summary="Progress and result of a KPI audit job (auditor, admin)",
            description="Progress while it runs; `ok`, the streams' summaries and a page of the problems when done.",
            responses=problems(401, 403, 404, 422, s404=("unknown-audit-job", "Unknown audit job",
                                                         "no audit job 01JD3S4V6Q8E2N7W0X5K9C1B2A on this node", {}),
                               s422=PARAM_422))
def audit_job(request: Request, principal: PrincipalDep,
              job_id: Annotated[str, Path(min_length=26, max_length=26, pattern="^[0-9A-Z]{26}$")],
              problems_offset: Annotated[int, Query(ge=0, le=MAX_JOB_PROBLEMS)] = 0,
              problems_limit: Annotated[int, Query(ge=1, le=MAX_JOB_PROBLEMS)] = 100) -> Any:
    authorize(principal, *ROLES)
    state = _jobs(request).get(job_id)
    if state is None:
        raise Problem(404, "unknown-audit-job", "Unknown audit job", f"no audit job {job_id} on this node")
    state["problems"] = state["problems"][problems_offset:problems_offset + problems_limit]
    return {**state, "problems_offset": problems_offset}
