"""Verification of a FHIR resource a doctor holds — what the other hospital sent, not this ledger's record.

Why a module of its own: the FHIR form is the one whose answer depends on how a sender grouped a result (a
report with its Observations folded in or referenced, an Observation held alone that was committed inside its
report, issue 16), and that matching is most of its code. It reaches the ledger through what ``Verifier`` gives
it: the store, the verdict on a held version by id, and the last step every verdict goes through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import tzinfo
from typing import Any

from mrledger.ledger import Check, ResultRecord
from mrledger.ledger.formats import FormatError
from mrledger.ledger.formats.fhir import project
from mrledger.service import fhir_match, intake
from mrledger.service.outcome import Outcome, failed
from mrledger.store import Store


@dataclass(frozen=True)
class FhirVerifier:
    """``Verifier.by_fhir``. ``by_record``: the verdict on a held version (hospital, result id, version, record);
    ``conclude``: what every verdict goes through last (recognition, disclosure)."""

    store: Store
    by_record: Callable[[str, str, int | None, Any], Outcome]
    conclude: Callable[[Outcome], Outcome]

    def verify(self, hospital_id: str, resource: Any, tz: tzinfo | None = None) -> Outcome:
        """Verdict on a FHIR resource a doctor holds (what the other hospital sent, not our record).

        Mapped exactly as intake maps it (``intake.fhir_records``, same projection, same ``tz`` rule) and
        matched against every held version of its result id as intake matches a resend
        (``intake.same_version``: equal instants however spelt, date-only times in any zone), so an outdated
        copy answers authentic + ``superseded_by``, never tampered. The matched version is then checked like a
        held record. The same result grouped differently is found too (``_regrouped``): a report held alone
        whose Observations were committed inside it, a report held with Observations it was committed without,
        an Observation held alone that was committed inside its report. Result id held but nothing matches →
        tampered (``content``); the match cannot be decided (Observations the ledger never received) →
        ``cannot-match``; not held → unknown. A Bundle must yield exactly one result: "authentic" for the first
        of several would be read as vouching for the others. Raises FormatError (→ 422) when the resource
        cannot be mapped."""
        try:
            records = intake.fhir_records(hospital_id, resource, tz, include=intake.EVERY_CATEGORY)
        except FormatError:
            # An Observation that is no result on its own (a panel member without a time of its own) may still
            # be one its hospital committed inside a report.
            inside = self._inside_report(hospital_id, resource)
            if inside is None:
                raise
            return inside
        if len(records) != 1:
            ids = ", ".join(r.result_id for r in records[:10]) + (", …" if len(records) > 10 else "")
            raise FormatError(f"the Bundle holds {len(records)} results ({ids}); send one result to verify "
                              "(the DiagnosticReport, or one Observation or ImagingStudy)", where="Bundle")
        candidate = records[0]
        rid = candidate.result_id
        mapped = Check("fhir", True, f"mapped as intake does: result {rid}, status {candidate.status}")
        held = intake.held_versions(self.store, hospital_id, [rid]).get(rid, [])
        same = intake.same_version(candidate, held)
        if same is not None:
            return self._held_match(hospital_id, same, [mapped])
        # ``record`` is the mapped candidate (provisional version, never shown) for the recognition decision,
        # which says "reorder" for anything not authentic.
        base = Outcome("unknown", (), hospital_id=hospital_id, result_id=rid, record=candidate)
        regrouped = self._regrouped(hospital_id, candidate, held, mapped, tz, base)
        if regrouped is not None:
            return regrouped
        if not held:
            outcome = failed(base, "unknown", [mapped], "lookup", "this ledger holds no such result")
        else:  # "does not match", and no more: not which versions this ledger holds
            outcome = failed(base, "tampered", [mapped, Check("lookup", True)], "content",
                                 "the resource differs from every version the hospital committed")
        return self.conclude(outcome)

    def _held_match(self, hospital_id: str, record: ResultRecord, checks: list[Check]) -> Outcome:
        """The verdict on a held version found to say what the doctor holds: checked like a held record."""
        outcome = self.by_record(hospital_id, record.result_id, record.version, record.to_obj())
        return self.conclude(replace(outcome, checks=(*checks, *(c for c in outcome.checks if c.name != "record"))))

    def _regrouped(self, hospital_id: str, candidate: ResultRecord, held: list[ResultRecord], mapped: Check,
                   tz: tzinfo | None, base: Outcome) -> Outcome | None:
        """The same result grouped otherwise than at submission (issue 16, point 5a), or None."""
        if candidate.content.type != "fhir-resource":
            return None
        resource = candidate.content.resource
        report = next((v for v in reversed(held) if fhir_match.same_report(candidate, v)), None)
        if report is not None:
            return self._report_regrouped(hospital_id, candidate, report, mapped, tz, base)
        if held or candidate.content.resource_type != "Observation":
            return None
        return self._inside_report(hospital_id, resource, mapped, base)

    def _inside_report(self, hospital_id: str, resource: Any, mapped: Check | None = None,
                       base: Outcome | None = None) -> Outcome | None:
        """An Observation held alone that its hospital committed inside a report (``result_aliases``, written
        at intake): authentic as that report's version when a folded Observation with one of its ids says the
        same; tampered when one with its id says something else; None when no report holds it."""
        if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
            return None
        try:
            projection = project(resource)
        except FormatError:
            return None
        mapped = mapped or Check("fhir", True, "mapped as intake does: an Observation that is no result of its own")
        changed: ResultRecord | None = None
        for name in fhir_match.observation_ids(projection):
            for target in self.store.alias_targets(hospital_id, name):
                for version in reversed(intake.held_versions(self.store, hospital_id, [target]).get(target, [])):
                    named, same = fhir_match.find_inside(projection, version)
                    if same:
                        return self._held_match(hospital_id, version, [mapped, Check(
                            "grouping", True, f"the Observation is committed inside report {version.result_id} "
                                              f"version {version.version}")])
                    changed = changed or (version if named else None)
        if changed is None:
            return None
        # "Does not match", and no more: not which report holds an Observation of that id.
        base = base or Outcome("unknown", (), hospital_id=hospital_id, record=changed)
        return self.conclude(failed(base, "tampered", [mapped, Check("lookup", True)], "content",
                                         "an Observation with this id was committed with other content"))

    def _report_regrouped(self, hospital_id: str, candidate: ResultRecord, report: ResultRecord, mapped: Check,
                          tz: tzinfo | None, base: Outcome) -> Outcome:
        """A report whose own content matches held ``report``; its Observations are grouped differently."""
        mine = fhir_match.folded_observations(candidate.content.resource)  # type: ignore[union-attr]
        theirs = fhir_match.folded_observations(report.content.resource)  # type: ignore[union-attr]
        where = f"report {report.result_id} version {report.version}"
        if not mine:
            return self._held_match(hospital_id, report, [mapped, Check(
                "grouping", True, f"the report matches {where}; its {len(theirs)} Observation(s) are committed "
                                  "inside it and are not part of what you hold")])
        unvouched: list[str] = []
        for observation in mine:
            name = (fhir_match.observation_ids(observation) or ["an Observation without id"])[0]
            named, same = fhir_match.find_inside(observation, report)
            if same:
                continue
            if named:
                return self.conclude(failed(base, "tampered", [mapped, Check("lookup", True)], "content",
                                                 f"{name} differs from the one committed inside {where}"))
            verdict = self._observation_alone(hospital_id, observation, tz)
            if verdict == "differs":
                return self.conclude(failed(base, "tampered", [mapped, Check("lookup", True)], "content",
                                                 f"{name} differs from the result of that id this hospital "
                                                 "committed"))
            if verdict == "absent":
                unvouched.append(name)
        if unvouched:
            listed = ", ".join(unvouched[:5]) + (", …" if len(unvouched) > 5 else "")
            return self.conclude(failed(
                replace(base, result_id=report.result_id, version=report.version), "cannot-match",
                [mapped, Check("lookup", True)], "grouping",
                f"the report matches {where}, but {len(unvouched)} of the Observations you hold ({listed}) were "
                "committed neither with it nor as results of their own: their values cannot be checked here"))
        return self._held_match(hospital_id, report, [mapped, Check(
            "grouping", True, f"the report matches {where}; each of its {len(mine)} Observation(s) matches what "
                              "the hospital committed")])

    def _observation_alone(self, hospital_id: str, observation: dict[str, Any], tz: tzinfo | None) -> str:
        """An Observation the doctor holds beside a report: ``same`` (committed as a result of its own, same
        content), ``differs``, or ``absent`` (not held, or not mappable alone)."""
        try:
            (record,) = intake.fhir_records(hospital_id, observation, tz, include=intake.EVERY_CATEGORY)
        except (FormatError, ValueError):
            return "absent"
        held = intake.held_versions(self.store, hospital_id, [record.result_id]).get(record.result_id, [])
        if not held:
            return "absent"
        return "same" if intake.same_version(record, held) is not None else "differs"
