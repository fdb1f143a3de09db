"""The figures of one slice of a KPI report (hospital, category, month, or all) and the rates and growth computed
from them (definitions: docs/kpis.md), and one slot's counted sums folded into slices: kept apart from the report's
assembly (``service/kpis.py``) so that each stays one screen of code.

Figures are sums of integer counts, so a slice may be built from parts in any order and corrected by negative
counts (an open batch taken out of the confirmed sums and put back under its status) and stay exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mrledger.store.kpi_levels import run_categories
from mrledger.store.kpi_read import SlotSums
from mrledger.store.kpi_rollup import Key, Sums

#: Reorders without a reason (allowed when the programme itself said reorder) are counted under this key.
UNSPECIFIED = "unspecified"
DIGITS = 6


def rate(numerator: int, denominator: int, none: str) -> dict[str, Any]:
    """A rate with what it was computed from; null with ``none`` as the reason when nothing was counted."""
    if denominator == 0:
        return {"value": None, "numerator": numerator, "denominator": 0, "reason": none}
    return {"value": round(numerator / denominator, DIGITS), "numerator": numerator, "denominator": denominator,
            "reason": None}


_K = TypeVar("_K")
_V = TypeVar("_V")


def entry(table: dict[_K, _V], key: _K, make: Callable[[], _V]) -> _V:
    """``table[key]``, made on first use. Not ``setdefault(key, Figures())``: that builds (and drops) a value per
    call, and a year's report looks slices up tens of thousands of times (cProfile: a fifth of the report)."""
    found = table.get(key)
    if found is None:
        found = table[key] = make()
    return found


@dataclass
class Figures:
    """The counts behind every KPI of one slice (hospital, category, month, or all)."""

    encounters: int = 0
    retrieved: int = 0
    decisions: int = 0
    recognisable: int = 0
    recognised: int = 0
    reordered: int = 0
    reordered_recognisable: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    tests_avoided: int = 0
    amount_minor: int = 0

    def add_counts(self, key: Key, sums: Sums) -> None:
        """Add ``sums.n`` decisions or encounters that share ``key`` (``n`` negative: take them out)."""
        self.add_row(key.kind, key.decision, key.recognition, key.reason, sums.n, sums.retrieved, sums.tests,
                     sums.amount_minor)

    def add_row(self, kind: str, decision: str, recognition: str, reason: str, n: int, retrieved: int, tests: int,
                amount_minor: int) -> None:
        """``add_counts`` on the columns of a sums row: a year's report adds tens of thousands of them."""
        if kind == "e":
            self.encounters += n
            self.retrieved += retrieved
            return
        self.decisions += n
        recognisable = n if recognition == "recognise" else 0
        self.recognisable += recognisable
        if decision == "recognised":
            self.recognised += n
        else:
            self.reordered += n
            self.reordered_recognisable += recognisable
            self.reasons[reason or UNSPECIFIED] += n
        self.tests_avoided += tests
        self.amount_minor += amount_minor

    def merge(self, other: Figures) -> None:
        """Add every count of ``other`` (which is left as it is)."""
        self.encounters += other.encounters
        self.retrieved += other.retrieved
        self.decisions += other.decisions
        self.recognisable += other.recognisable
        self.recognised += other.recognised
        self.reordered += other.reordered
        self.reordered_recognisable += other.reordered_recognisable
        for code, n in other.reasons.items():
            self.reasons[code] += n  # item by item: Counter.update and += drop or keep negatives inconsistently
        self.tests_avoided += other.tests_avoided
        self.amount_minor += other.amount_minor

    @property
    def counted(self) -> int:
        """Decisions and encounters counted: 0 exactly when nothing is in this slice (counts are never negative
        once every correction is added)."""
        return self.encounters + self.decisions

    def tidy(self) -> None:
        """Drop reasons that corrections brought back to zero (a report lists only reasons counted or known)."""
        for code in [c for c, n in self.reasons.items() if not n]:
            del self.reasons[code]

    @property
    def retrieval(self) -> dict[str, Any]:
        return rate(self.retrieved, self.encounters, "no encounters reported")

    @property
    def recognition(self) -> dict[str, Any]:
        return rate(self.recognised, self.recognisable, "no decisions on results the programme recognises")

    def obj(self, reasons: Iterable[str]) -> dict[str, Any]:
        codes = list(dict.fromkeys([*reasons, UNSPECIFIED, *sorted(self.reasons)]))
        return {"encounters": self.encounters, "retrieved": self.retrieved, "retrieval_rate": self.retrieval,
                "decisions": self.decisions, "recognisable": self.recognisable, "recognised": self.recognised,
                "reordered": self.reordered, "reordered_recognisable": self.reordered_recognisable,
                "recognition_rate": self.recognition, "reorders_by_reason": {c: self.reasons[c] for c in codes},
                "tests_avoided": self.tests_avoided, "money_saved": self.amount_minor / 100,
                "money_saved_minor": self.amount_minor}


def _change(now: float | None, before: float | None, *, relative: bool) -> dict[str, Any]:
    if now is None:
        return {"value": None, "reason": "no value in this period"}
    if before is None:
        return {"value": None, "reason": "no value in the previous period"}
    if relative:
        if before == 0:
            return {"value": None, "reason": "zero in the previous period"}
        return {"value": round((now - before) / before, DIGITS), "reason": None}
    return {"value": round(now - before, DIGITS), "reason": None}


def growth(now: Figures, before: Figures) -> dict[str, Any]:
    """Rates: the difference (0.012 = up 1.2 percentage points); counts and money: the relative change."""
    return {"retrieval_rate": _change(now.retrieval["value"], before.retrieval["value"], relative=False),
            "recognition_rate": _change(now.recognition["value"], before.recognition["value"], relative=False),
            "tests_avoided": _change(now.tests_avoided, before.tests_avoided, relative=True),
            "money_saved": _change(now.amount_minor, before.amount_minor, relative=True)}


def filed_under(key: Key, category: str | None) -> tuple[str, ...] | None:
    """The categories a count is reported under; None when the category filter excludes it."""
    cats = run_categories(key.kind, key.categories)[1:]  # the categories kpi_runs files it under, less ``*``
    if category is None:
        return cats
    if key.kind == "e":
        return (category,) if category in cats else None
    return cats if key.categories == category else None


@dataclass
class Part:
    """One slot's counted sums folded into the slices of a report (under one category filter): what a year's
    report would otherwise fold again from ~2,000 rows per month on every request. Kept with the slot's sums
    (``kpi_cache``) under their token; never changed once built."""

    total: Figures = field(default_factory=Figures)
    hospitals: dict[str, Figures] = field(default_factory=dict)
    categories: dict[str, Figures] = field(default_factory=dict)


def fold(sums: SlotSums, category: str | None) -> Part:
    part = Part()
    for (hid, kind, cats, decision, recognition, reason), (n, retrieved, tests, amount) in sums.sums.items():
        names = filed_under(Key(hid, kind, cats, decision, recognition, reason), category)
        if names is None:
            continue
        entry(part.hospitals, hid, Figures).add_row(kind, decision, recognition, reason, n, retrieved, tests, amount)
        for name in names:
            entry(part.categories, name, Figures).add_row(kind, decision, recognition, reason, n, retrieved, tests,
                                                          amount)
    for f in part.hospitals.values():
        part.total.merge(f)
    return part


__all__ = ["DIGITS", "UNSPECIFIED", "Figures", "Part", "entry", "filed_under", "fold", "growth", "rate"]
