"""The regional KPIs (JSON and CSV) and the audit check that ties them to the anchored event streams.

Auditor and admin tokens: the figures drive money, and they name hospitals. Every read is access-logged like
the other audit reads (``kpis``, ``kpis-csv``, ``audit-decisions``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import Problem
from mrledger.http.schemas import PARAM_422, problems
from mrledger.ledger.records import HOSPITAL_ID_PATTERN
from mrledger.ledger.status import BatchStatus
from mrledger.service.kpi_audit import audit
from mrledger.service.kpis import KpiError, Period, period, report, to_csv
from mrledger.service.ledger import Services
from mrledger.store.events import is_event_stream

router = APIRouter(prefix="/v1", tags=["kpis"])

ROLES = ("auditor", "admin")
_LAST_DAY = dt.date(9000, 12, 31)  # far enough for any report, early enough that day arithmetic cannot overflow


# -- response models (docs/kpis.md) ---------------------------------------------------------------------


class Rate(BaseModel):
    value: float | None = Field(description="numerator / denominator, 6 decimals; null when the denominator is 0")
    numerator: int
    denominator: int
    reason: str | None = Field(description="Why the value is null (nothing to divide by); null otherwise.")


class Change(BaseModel):
    value: float | None = Field(description="Rates: difference in rate (0.012 = +1.2 points); counts and money: "
                                            "relative change ((now − before) / before).")
    reason: str | None


class Growth(BaseModel):
    retrieval_rate: Change
    recognition_rate: Change
    tests_avoided: Change
    money_saved: Change


class Figures(BaseModel):
    encounters: int = Field(description="Encounters reported (patients with recognisable results).")
    retrieved: int = Field(description="...of which the results were retrieved (verified).")
    retrieval_rate: Rate = Field(description="retrieved / encounters")
    decisions: int = Field(description="Decisions recorded after a verification.")
    recognisable: int = Field(description="...on results the programme recognised (verdict recognise).")
    recognised: int = Field(description="...recognised by the doctor.")
    reordered: int
    reordered_recognisable: int = Field(description="Reorders of results the programme recognised.")
    recognition_rate: Rate = Field(description="recognised / recognisable (post-retrieval recognition rate)")
    reorders_by_reason: dict[str, int] = Field(description="Every reorder by reason; `unspecified`: reorders of "
                                                           "results the programme did not recognise, no reason given.")
    tests_avoided: int = Field(description="Catalogue items of recognised results.")
    money_saved: float = Field(description="Their prices when decided, in `currency`.")
    money_saved_minor: int = Field(description="The same in minor units (fen), exact.")


class PeriodOut(BaseModel):
    from_: dt.date = Field(alias="from")
    to: dt.date
    tz: str
    days: int


class KpiTotals(BaseModel):
    current: Figures
    previous: Figures
    growth: Growth


class HospitalKpi(BaseModel):
    hospital_id: str = Field(description="The acting hospital (where the doctor decided / the patient was seen).")
    stream: str
    rank: int = Field(description="By growth of the recognition rate, then of tests avoided (1 = most).")
    current: Figures
    previous: Figures
    growth: Growth
    batches: list[list[int]] = Field(description="Batches of `stream` holding the current period's records, as "
                                                  "runs `[first_seq, last_seq]` (inclusive) of consecutive seqs.")


class CategoryKpi(BaseModel):
    category: str
    current: Figures
    previous: Figures
    growth: Growth


class MonthKpi(BaseModel):
    month: str = Field(description="YYYY-MM in the report's time zone")
    from_: dt.date = Field(alias="from")
    to: dt.date
    figures: Figures


class HospitalMonthKpi(BaseModel):
    hospital_id: str
    month: str
    figures: Figures


class BatchRun(BaseModel):
    """Batches ``first_seq``..``last_seq`` of ``stream`` (every one of them holds records counted), all with
    ``anchor_status``: a year of 5-second batches is a few runs per stream, not millions of entries."""

    stream: str
    first_seq: int
    last_seq: int
    anchor_status: BatchStatus


class Sources(BaseModel):
    records: int = Field(description="Decisions and encounters counted.")
    confirmed: int = Field(description="...of which in batches whose anchor is confirmed.")
    unconfirmed: int
    unsealed: int = Field(description="...not sealed into a batch yet.")
    batch_count: int = Field(description="Batches holding the records counted (the seqs in `batches`).")
    batches: list[BatchRun]


class Filters(BaseModel):
    hospital: str | None
    category: str | None
    anchored_only: bool


_F: dict[str, Any] = {
    "encounters": 100, "retrieved": 97,
    "retrieval_rate": {"value": 0.97, "numerator": 97, "denominator": 100, "reason": None},
    "decisions": 97, "recognisable": 90, "recognised": 87, "reordered": 10, "reordered_recognisable": 3,
    "recognition_rate": {"value": 0.966667, "numerator": 87, "denominator": 90, "reason": None},
    "reorders_by_reason": {"condition-changed": 2, "emergency": 1, "unspecified": 7}, "tests_avoided": 131,
    "money_saved": 2145.0, "money_saved_minor": 214500}
_G: dict[str, Any] = {
    "retrieval_rate": {"value": 0.012, "reason": None}, "recognition_rate": {"value": -0.004, "reason": None},
    "tests_avoided": {"value": 0.25, "reason": None},
    "money_saved": {"value": None, "reason": "zero in the previous period"}}


class KpiReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [{
        "period": {"from": "2024-05-01", "to": "2024-05-31", "tz": "Asia/Shanghai", "days": 31},
        "previous_period": {"from": "2024-03-31", "to": "2024-04-30", "tz": "Asia/Shanghai", "days": 31},
        "filters": {"hospital": None, "category": None, "anchored_only": False}, "currency": "CNY",
        "reorder_reasons": ["condition-changed", "emergency"],
        "totals": {"current": _F, "previous": _F, "growth": _G},
        "by_hospital": [{"hospital_id": "qd-002", "stream": "qd-002.events", "rank": 1, "current": _F,
                         "previous": _F, "growth": _G, "batches": [[3, 4]]}],
        "by_category": [{"category": "clinical-biochemistry", "current": _F, "previous": _F, "growth": _G}],
        "by_month": [{"month": "2024-05", "from": "2024-05-01", "to": "2024-05-31", "figures": _F}],
        "by_hospital_month": [{"hospital_id": "qd-002", "month": "2024-05", "figures": _F}],
        "sources": {"records": 197, "confirmed": 190, "unconfirmed": 7, "unsealed": 7, "batch_count": 2,
                    "batches": [{"stream": "qd-002.events", "first_seq": 3, "last_seq": 4,
                                 "anchor_status": "confirmed"}]},
        "previous_sources": {"records": 0, "confirmed": 0, "unconfirmed": 0, "unsealed": 0, "batch_count": 0,
                             "batches": []}}]})

    period: PeriodOut
    previous_period: PeriodOut = Field(description="Equal length, ending the day before `period` starts.")
    filters: Filters
    currency: str
    reorder_reasons: list[str] = Field(description="The configured reasons (the catalogue's reorder_reasons).")
    totals: KpiTotals
    by_hospital: list[HospitalKpi] = Field(description="Ranked by growth (see `rank`).")
    by_category: list[CategoryKpi] = Field(description="A decision counts under its result's category; an "
                                                       "encounter under each category it names.")
    by_month: list[MonthKpi]
    by_hospital_month: list[HospitalMonthKpi] = Field(description="Months with data, per hospital (charts).")
    sources: Sources = Field(description="The records and batches (runs of seqs per stream and anchor status) the "
                                         "current figures count.")
    previous_sources: Sources


class AuditProblem(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["leaf-mismatch", "root-mismatch", "not-on-chain", "chain-mismatch", "altered", "unindexed",
                  "not-in-stream", "rollup-mismatch"]
    stream: str
    detail: str


class StreamSummary(BaseModel):
    stream: str
    records: int
    decisions: int
    encounters: int
    batches: int
    confirmed_batches: int
    unanchored_records: int = Field(description="Records not in a confirmed batch (checked against the database "
                                                "only).")
    chain_checked: bool = Field(description="The batches were compared with the registry on chain.")


class DecisionAudit(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "ok": False, "checked_records": 2,
        "streams": [{"stream": "qd-002.events", "records": 2, "decisions": 1, "encounters": 1, "batches": 1,
                     "confirmed_batches": 1, "unanchored_records": 0, "chain_checked": True}],
        "problems": [{"kind": "altered", "stream": "qd-002.events", "detail": "the KPI row differs from the "
                      "anchored record", "verification_id": "01JD3S4V6Q8E2N7W0X5K9C1B2A",
                      "result_id": "decision:01JD3S4V6Q8E2N7W0X5K9C1B2A", "seq": 1, "fields": ["data.decision"]}]}]})

    ok: bool = Field(description="No problem found: the KPI tables hold exactly the committed records.")
    checked_records: int
    streams: list[StreamSummary]
    problems: list[AuditProblem]


# -- routes ---------------------------------------------------------------------------------------------

FromQuery = Annotated[dt.date | None, Query(alias="from", description="First day (inclusive); default: 30 days "
                                                                       "before `to`.")]
ToQuery = Annotated[dt.date | None, Query(description="Last day (inclusive); default: today in `tz`.")]
HospitalQuery = Annotated[str | None, Query(pattern=f"^{HOSPITAL_ID_PATTERN}$",
                                            description="Only this (acting) hospital.")]
CategoryQuery = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9-]{0,63}$", description="Only this category.")]
TzQuery = Annotated[str, Query(min_length=1, max_length=64, description="IANA time zone of the days and months.")]
AnchoredQuery = Annotated[bool, Query(description="Count only records in batches whose anchor is confirmed.")]

KPI_DESCRIPTION = """
Retrieval rate, post-retrieval recognition rate, reorders by reason, tests avoided and money saved for the
period (days `from`..`to` in `tz`, both inclusive), in total and per acting hospital, category and month, with
growth against the previous period of equal length. Definitions: docs/kpis.md. A rate with nothing to divide by
is null with a `reason`. `sources` names the event-stream batches (runs of seqs per stream) the figures were
counted from; `GET /v1/audit/decisions` proves those batches and the KPI tables agree.
"""


def _checked(ledger: Services, start: dt.date | None, end: dt.date | None, tz: str, hospital: str | None,
             category: str | None) -> Period:
    if (start and start > _LAST_DAY) or (end and end > _LAST_DAY):
        raise Problem(422, "validation", "Request does not match the schema", f"dates after {_LAST_DAY} are refused")
    try:
        p = period(start, end, tz, ledger.clock())
    except KpiError as exc:
        raise Problem(422, "validation", "Request does not match the schema", str(exc)) from exc
    if hospital is not None and (is_event_stream(hospital) or hospital not in dict(ledger.store.hospitals())):
        raise Problem(404, "unknown-hospital", "Unknown hospital", f"unknown hospital {hospital!r}")
    if category is not None and category not in ledger.catalogue.categories:
        raise Problem(422, "unknown-category", "Not a catalogue category",
                      f"{category!r} is not one of {sorted(ledger.catalogue.categories)}")
    return p


_KPI_ERRORS = problems(401, 403, 404, 422, s404=("unknown-hospital", "Unknown hospital", "unknown hospital 'xx-9'",
                                                  {}), s422=PARAM_422)


@router.get("/kpis", response_model=KpiReport, summary="Recognition KPIs (auditor, admin)",
            description=KPI_DESCRIPTION, responses=_KPI_ERRORS)
def kpis(ledger: ServicesDep, principal: PrincipalDep, start: FromQuery = None, to: ToQuery = None,
         hospital: HospitalQuery = None, category: CategoryQuery = None, tz: TzQuery = "UTC",
         anchored_only: AnchoredQuery = False) -> Any:
    authorize(principal, *ROLES)
    p = _checked(ledger, start, to, tz, hospital, category)
    ledger.access_log.log(principal, "kpis", hospital_id=hospital)
    return report(ledger, p, hospital=hospital, category=category, anchored_only=anchored_only)


_CSV_EXAMPLE = ("scope,period,hospital_id,category,month,from,to,encounters,retrieved,retrieval_rate,…\n"
                "total,current,,,,2024-05-01,2024-05-31,100,97,0.97,…\n")


@router.get("/kpis.csv", summary="Recognition KPIs as CSV (auditor, admin)", response_class=Response,
            description="The report of `GET /v1/kpis` as one table: a row per slice (total, hospital, category, "
                        "month, hospital-month) and period, growth on the current rows, `reorders_<reason>` "
                        "columns, and the batches counted (`stream:seq` or `stream:first-last`) on total and "
                        "hospital rows.",
            responses={200: {"description": "The report as CSV (UTF-8, header row)",
                             "content": {"text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE}}},
                       **_KPI_ERRORS})
def kpis_csv(ledger: ServicesDep, principal: PrincipalDep, start: FromQuery = None, to: ToQuery = None,
             hospital: HospitalQuery = None, category: CategoryQuery = None, tz: TzQuery = "UTC",
             anchored_only: AnchoredQuery = False) -> Response:
    authorize(principal, *ROLES)
    p = _checked(ledger, start, to, tz, hospital, category)
    ledger.access_log.log(principal, "kpis-csv", hospital_id=hospital)
    body = to_csv(report(ledger, p, hospital=hospital, category=category, anchored_only=anchored_only))
    name = f"mrledger-kpis-{p.start}-{p.end}.csv"
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/audit/decisions", response_model=DecisionAudit,
            summary="Check the KPI tables against the anchored event streams (auditor, admin)",
            description="Re-derives every decision's and encounter's leaf from its KPI row and compares it with "
                        "the record in its batch, the batch with its root and the root with the registry on chain "
                        "(when this node has one): proves no decision or encounter was added, changed or dropped "
                        "after anchoring. One hash per record and one registry read per batch: an audit, not a poll.",
            responses={**problems(401, 403, 404, 422, 503, s404=("unknown-hospital", "Unknown hospital",
                                                                 "unknown hospital 'xx-9'", {}), s422=PARAM_422)})
def audit_decisions(ledger: ServicesDep, principal: PrincipalDep, hospital: HospitalQuery = None) -> Any:
    authorize(principal, *ROLES)
    if hospital is not None and (is_event_stream(hospital) or hospital not in dict(ledger.store.hospitals())):
        raise Problem(404, "unknown-hospital", "Unknown hospital", f"unknown hospital {hospital!r}")
    try:
        out = audit(ledger, hospital)
    except Exception:
        ledger.access_log.log(principal, "audit-decisions", hospital_id=hospital, verdict="error")
        raise
    ledger.access_log.log(principal, "audit-decisions", hospital_id=hospital,
                          verdict="ok" if out["ok"] else "problems")
    return out
