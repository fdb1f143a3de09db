"""The regional KPIs: retrieval rate, post-retrieval recognition rate, reorders by reason, tests avoided and money
saved, per hospital, category and month, with growth against the previous period of equal length.

Every figure is counted from the KPI index of the event streams (``mrledger.store.decisions``), whose rows the audit
check (``service/kpi_audit.py``) proves equal to the anchored records; the report names the batches (stream, seq)
its figures come from. The definitions are in docs/kpis.md; a rate whose denominator is zero is null with a
reason, never an error. The figures are sums of the rollup of sealed event batches
(``mrledger.store.kpi_rollup``): a report's cost grows with the number of batches and dimensions in its periods,
not with the number of decisions and encounters in them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mrledger.ledger.status import CONFIRMED, PENDING
from mrledger.service.kpi_figures import UNSPECIFIED, Figures, Part, entry, filed_under, fold, growth, rate
from mrledger.service.ledger import Services
from mrledger.store.events import events_stream
from mrledger.store.kpi_cache import cache_of
from mrledger.store.kpi_levels import merge_runs
from mrledger.store.kpi_read import Run, SlotSums, counted
from mrledger.store.kpi_rollup import Counted

#: Longest period one report covers (ten years), and the default (the last 30 days).
MAX_DAYS = 3660
DEFAULT_DAYS = 30


class KpiError(ValueError):
    """A KPI query that cannot be answered as asked (→ 422)."""


@dataclass(frozen=True, slots=True)
class Period:
    """Calendar days ``start`` .. ``end`` (both inclusive) in time zone ``tz``."""

    start: date
    end: date
    tz: ZoneInfo

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def bounds(self) -> tuple[datetime, datetime]:
        """[start of ``start``, start of the day after ``end``) in ``tz``, as UTC instants."""
        lo = datetime.combine(self.start, time(), self.tz).astimezone(UTC)
        hi = datetime.combine(self.end + timedelta(days=1), time(), self.tz).astimezone(UTC)
        return lo, hi

    def previous(self) -> Period:
        """The period of equal length that ends the day before this one starts."""
        return Period(self.start - timedelta(days=self.days), self.start - timedelta(days=1), self.tz)

    def months(self) -> list[tuple[str, date, date]]:
        """(``YYYY-MM``, first day, last day) of every month the period touches, clipped to it."""
        out, day = [], self.start
        while day <= self.end:
            nxt = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
            out.append((f"{day.year:04d}-{day.month:02d}", day, min(self.end, nxt - timedelta(days=1))))
            day = nxt
        return out

    def obj(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "tz": self.tz.key, "days": self.days}


def period(start: date | None, end: date | None, tz: str, today: datetime) -> Period:
    """The period a query asks for: ``to`` defaults to today in ``tz``, ``from`` to 30 days before it."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise KpiError(f"tz {tz!r} is not an IANA time zone name (e.g. Asia/Shanghai, UTC)") from exc
    end = end or today.astimezone(zone).date()
    if end < date(1971, 1, 1):  # before subtracting: `to=0001-01-01` overflowed date arithmetic (a 500)
        raise KpiError("the period (or the previous one, for growth) starts before 1971")
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise KpiError(f"from ({start}) is after to ({end})")
    if (end - start).days + 1 > MAX_DAYS:
        raise KpiError(f"the period is longer than {MAX_DAYS} days")
    if start - timedelta(days=(end - start).days + 1) < date(1971, 1, 1):
        raise KpiError("the period (or the previous one, for growth) starts before 1971")
    return Period(start, end, zone)

@dataclass
class _Slice:
    now: Figures = field(default_factory=Figures)
    before: Figures = field(default_factory=Figures)


@dataclass
class _Sources:
    """Where a period's figures come from: records, and the batches (runs of seqs per stream, with their anchor
    status) holding them."""

    records: int = 0
    confirmed: int = 0
    unsealed: int = 0

    def add_confirmed(self, n: int) -> None:
        self.records += n
        self.confirmed += n

    def add(self, c: Counted) -> None:
        self.records += c.sums.n
        self.unsealed += c.sums.n if c.status == PENDING else 0
        self.confirmed += c.sums.n if c.status == CONFIRMED else 0

    def obj(self, runs: list[Run]) -> dict[str, Any]:
        return {"records": self.records, "confirmed": self.confirmed, "unconfirmed": self.records - self.confirmed,
                "unsealed": self.unsealed, "batch_count": sum(r.last - r.first + 1 for r in runs),
                "batches": [{"stream": r.stream, "first_seq": r.first, "last_seq": r.last, "anchor_status": r.status}
                            for r in runs]}


def _part(ledger: Services, sums: SlotSums, category: str | None) -> Part:
    """The slot's sums folded (``kpi_figures.fold``), kept in the store's KPI cache under the sums' token: equal
    tokens are equal sums (``kpi_read.SlotSums``), so a kept fold is never stale; one of an old token is never
    asked for again and ages out of the cache."""
    cache = cache_of(ledger.store)
    key = ("fold", sums.token, category)
    kept = cache.get(key, ())
    if isinstance(kept, Part):
        return kept
    part = fold(sums, category)
    cache.put(key, (), part, len(part.hospitals) + len(part.categories) + 1)
    return part


def report(ledger: Services, p: Period, *, hospital: str | None = None, category: str | None = None,
           anchored_only: bool = False) -> dict[str, Any]:
    """The KPI report of period ``p`` (docs/kpis.md §3 for its shape), summed from the rollup of sealed event
    batches and the few records not in one (``mrledger.store.kpi_rollup``), never from every row."""
    reasons = list(ledger.catalogue.reorder_reasons)
    prev = p.previous()
    months = p.months()
    # Slot 0 is the previous period, slots 1.. the months of this one (contiguous, in time order).
    slots = [prev.bounds()] + [Period(a, b, p.tz).bounds() for _, a, b in months]
    lo, hi = slots[1][0], slots[-1][1]
    tally = counted(ledger.store, slots, hospital, category=category, anchored_only=anchored_only,
                    spans=[(lo, hi), slots[0]])
    total = _Slice()
    hospitals: dict[str, _Slice] = {}
    categories: dict[str, _Slice] = {}
    by_month = {m: Figures() for m, _, _ in months}
    hospital_months: dict[tuple[str, str], Figures] = {}
    sources, previous_sources = _Sources(), _Sources()
    # Every counted batch's counts, slot by slot, folded once per slot and kept (``_part``): a year's report adds
    # 13 slots' slices, not ~27,000 rows (cProfile at 2.5 M events: the fold was half the report).
    for i, sums in enumerate(tally.slots):
        part, now = _part(ledger, sums, category), i > 0
        (sources if now else previous_sources).add_confirmed(part.total.counted)
        (total.now if now else total.before).merge(part.total)
        for hid, f in part.hospitals.items():
            s = entry(hospitals, hid, _Slice)
            (s.now if now else s.before).merge(f)
            if now:
                entry(hospital_months, (hid, months[i - 1][0]), Figures).merge(f)
        for name, f in part.categories.items():
            s = entry(categories, name, _Slice)
            (s.now if now else s.before).merge(f)
        if now:
            by_month[months[i - 1][0]].merge(part.total)
    for c in tally.adjust:  # open batches out and back under their status, records not counted yet: a handful
        cats = filed_under(c.key, category)
        if cats is None:
            continue
        now = c.slot > 0
        hid = c.key.hospital_id
        (sources if now else previous_sources).add(c)
        for s in [total, entry(hospitals, hid, _Slice), *(entry(categories, x, _Slice) for x in cats)]:
            (s.now if now else s.before).add_counts(c.key, c.sums)
        if now:
            month = months[c.slot - 1][0]
            by_month[month].add_counts(c.key, c.sums)
            entry(hospital_months, (hid, month), Figures).add_counts(c.key, c.sums)
    # A slice is in the report when something is counted in it; corrections may have emptied one.
    hospitals = {h: s for h, s in hospitals.items() if s.now.counted or s.before.counted or h == hospital}
    categories = {c: s for c, s in categories.items() if s.now.counted or s.before.counted}
    hospital_months = {k: f for k, f in hospital_months.items() if f.counted}
    for f in [total.now, total.before, *by_month.values(), *hospital_months.values(),
              *(x for s in [*hospitals.values(), *categories.values()] for x in (s.now, s.before))]:
        f.tidy()
    seqs: dict[str, list[tuple[int, int]]] = {}
    for r in tally.batches[0]:
        seqs.setdefault(r.stream, []).append((r.first, r.last))
    if hospital is not None:
        entry(hospitals, hospital, _Slice)
    by_hospital: list[dict[str, Any]] = [
        {"hospital_id": hid, "stream": events_stream(hid), "current": s.now.obj(reasons),
         "previous": s.before.obj(reasons), "growth": growth(s.now, s.before),
         "batches": [list(r) for r in merge_runs(seqs.get(events_stream(hid), ()))]}
        for hid, s in hospitals.items()]
    by_hospital.sort(key=_rank_key)
    for rank, row in enumerate(by_hospital, 1):
        row["rank"] = rank
    span = {m: (a, b) for m, a, b in months}
    return {
        "period": p.obj(), "previous_period": prev.obj(),
        "filters": {"hospital": hospital, "category": category, "anchored_only": anchored_only},
        "currency": ledger.catalogue.currency, "reorder_reasons": reasons,
        "totals": {"current": total.now.obj(reasons), "previous": total.before.obj(reasons),
                   "growth": growth(total.now, total.before)},
        "by_hospital": by_hospital,
        "by_category": [{"category": c, "current": s.now.obj(reasons), "previous": s.before.obj(reasons),
                         "growth": growth(s.now, s.before)} for c, s in sorted(categories.items())],
        "by_month": [{"month": m, "from": span[m][0].isoformat(), "to": span[m][1].isoformat(),
                      "figures": f.obj(reasons)} for m, f in by_month.items()],
        "by_hospital_month": [{"hospital_id": h, "month": m, "figures": f.obj(reasons)}
                              for (h, m), f in sorted(hospital_months.items())],
        "sources": sources.obj(tally.batches[0]), "previous_sources": previous_sources.obj(tally.batches[1]),
    }


def _rank_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Ranked by growth of the recognition rate, then of tests avoided (largest first; unknown last); ties
    (e.g. hospitals new in this period, with no growth to compare) by the current recognition rate, then tests
    avoided, then id."""
    g, now = row["growth"], row["current"]
    rr, ta = g["recognition_rate"]["value"], g["tests_avoided"]["value"]
    cur = now["recognition_rate"]["value"]
    return (rr is None, -(rr or 0.0), ta is None, -(ta or 0.0), cur is None, -(cur or 0.0), -now["tests_avoided"],
            row["hospital_id"])


# -- CSV ----------------------------------------------------------------------------------------------------

_COLUMNS = ["scope", "period", "hospital_id", "category", "month", "from", "to", "encounters", "retrieved",
            "retrieval_rate", "retrieval_rate_null_reason", "decisions", "recognisable", "recognised", "reordered",
            "reordered_recognisable", "recognition_rate", "recognition_rate_null_reason", "tests_avoided",
            "money_saved", "currency", "growth_retrieval_rate", "growth_recognition_rate", "growth_tests_avoided",
            "growth_money_saved", "rank"]


def to_csv(rep: dict[str, Any]) -> str:
    """The report as one CSV table: a row per slice and period, growth on the current rows, the reorders by
    reason as ``reorders_<code>`` columns and, on the total and hospital rows, the batches counted
    (``stream:seq`` separated by spaces)."""
    reasons = list(rep["totals"]["current"]["reorders_by_reason"])
    for part in (rep["by_hospital"], rep["by_category"]):
        for row in part:
            for key in ("current", "previous"):
                reasons += [c for c in row[key]["reorders_by_reason"] if c not in reasons]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_COLUMNS + [f"reorders_{c}" for c in reasons] + ["batches"])
    cur, prev, cy = rep["period"], rep["previous_period"], rep["currency"]

    def emit(scope: str, which: str, span: dict[str, Any], figures: dict[str, Any], *, hospital: str = "",
             category: str = "", month: str = "", g: dict[str, Any] | None = None, rank: int | None = None,
             batches: str = "") -> None:
        rr, rc = figures["retrieval_rate"], figures["recognition_rate"]
        gv = ["" if g is None or g[k]["value"] is None else g[k]["value"]
              for k in ("retrieval_rate", "recognition_rate", "tests_avoided", "money_saved")]
        writer.writerow([scope, which, hospital, category, month, span["from"], span["to"], figures["encounters"],
                         figures["retrieved"], _v(rr["value"]), rr["reason"] or "", figures["decisions"],
                         figures["recognisable"], figures["recognised"], figures["reordered"],
                         figures["reordered_recognisable"], _v(rc["value"]), rc["reason"] or "",
                         figures["tests_avoided"], f"{figures['money_saved_minor'] / 100:.2f}", cy, *gv,
                         "" if rank is None else rank]
                        + [figures["reorders_by_reason"].get(c, 0) for c in reasons] + [batches])

    src = " ".join(f"{b['stream']}:{_span(b['first_seq'], b['last_seq'])}" for b in rep["sources"]["batches"])
    t = rep["totals"]
    emit("total", "current", cur, t["current"], g=t["growth"], batches=src)
    emit("total", "previous", prev, t["previous"])
    for h in rep["by_hospital"]:
        mine = " ".join(f"{h['stream']}:{_span(a, b)}" for a, b in h["batches"])
        emit("hospital", "current", cur, h["current"], hospital=h["hospital_id"], g=h["growth"], rank=h["rank"],
             batches=mine)
        emit("hospital", "previous", prev, h["previous"], hospital=h["hospital_id"])
    for c in rep["by_category"]:
        emit("category", "current", cur, c["current"], category=c["category"], g=c["growth"])
        emit("category", "previous", prev, c["previous"], category=c["category"])
    for m in rep["by_month"]:
        emit("month", "current", m, m["figures"], month=m["month"])
    for hm in rep["by_hospital_month"]:
        emit("hospital-month", "current", {"from": "", "to": ""}, hm["figures"], hospital=hm["hospital_id"],
             month=hm["month"])
    return out.getvalue()


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _v(value: float | None) -> str | float:
    return "" if value is None else value


__all__ = ["MAX_DAYS", "UNSPECIFIED", "Figures", "KpiError", "Period", "growth", "period", "rate", "report",
           "to_csv"]  # Figures, growth, rate, UNSPECIFIED: from kpi_figures, where they live
