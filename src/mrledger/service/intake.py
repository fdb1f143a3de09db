"""Intake of real formats (FHIR R4, HL7 v2) with result lineage: which version a received result becomes.

Why this lives in the service layer: a FHIR resource or an HL7 message carries no ledger version number,
only a status (``amended``, OBX-11 ``C``, ``entered-in-error``, …). Only the ledger knows what it already
holds for (hospital, result_id), so the adapters build every record with a provisional version and
``plan`` renumbers them against the stored lineage (docs/formats.md, "HTTP and CLI intake"):

* nothing held → version 1, unless the result is an amendment/correction (the record rules forbid one at
  version 1, and there is nothing it could correct): ``UnknownCorrectionError`` (422);
* the same content as a held version (any spelling of the same resource or message) → that version again,
  a duplicate with the same leaf: feeds resend, and a replayed original must not read as a reversion;
* changed and ``amended``/``corrected`` (HL7 ``C``) → latest + 1, superseding the latest;
* changed and ``entered-in-error`` (HL7 ``D``/``W``) → latest + 1, a revocation superseding the latest;
* changed, ``preliminary`` held and ``final``/``preliminary`` received → latest + 1 (a preliminary result
  is expected to change until it is final);
* any other change (final → final, final → preliminary, a re-issue after a revocation that is not sent
  as a correction) → ``UnannouncedChangeError`` (409): a silently changed result is exactly what the
  ledger exists to expose, so the sender must say that it changed.

All or nothing per request: the whole plan goes to the store in one ``submit`` call. Two requests racing
for the same result both plan version n + 1; the store accepts one and answers the other 409 (a retry
then resolves against the winner).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal, Protocol, TypeVar

from mrledger.ledger import ResultRecord
from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.formats import FormatError, from_hl7v2
from mrledger.ledger.formats import _fhir_policy as fhir_policy
from mrledger.ledger.formats._fhir_policy import Skipped
from mrledger.ledger.formats.fhir import FhirResults
from mrledger.ledger.formats.fhir import read_fhir as _read_fhir
from mrledger.ledger.formats.hl7v2 import legacy_result_id
from mrledger.ledger.ids import check_ids
from mrledger.ledger.records import Status
from mrledger.service.fhir_match import aliases, same_content
from mrledger.store import Accepted, Store, Within
from mrledger.store.changes import identity_differs
from mrledger.store.errors import ConflictError, IdentityChangeError, LineageError, NotFoundError

T = TypeVar("T")
AMENDMENTS = frozenset({"amended", "corrected"})
REVOCATION = "entered-in-error"
#: The version the adapters are asked to build before ``plan`` renumbers: 2, because at version 1 the
#: record rules refuse an ``amended``/``corrected`` result before the ledger could say which version it is.
#: No record leaves this module with it; every one is rebuilt through ``ResultRecord.model_copy``.
PROVISIONAL_VERSION = 2


class UnknownCorrectionError(LineageError):
    """An amendment or correction of a result this ledger never received (422 ``lineage``)."""


class UnannouncedChangeError(ConflictError):
    """A result that differs from the held one without saying it was amended or corrected (409)."""


@dataclass(frozen=True, slots=True)
class IntakeOutcome:
    """One received result: the version it became, its leaf, and whether this request created it."""

    result_id: str
    version: int
    supersedes: int | None
    result_status: Status
    leaf_hash: bytes
    status: Literal["accepted", "duplicate"]


# -- lineage (pure) ----------------------------------------------------------------------------------


def same_version(candidate: ResultRecord, versions: Sequence[ResultRecord]) -> ResultRecord | None:
    """The newest of ``versions`` that says the same as ``candidate`` (version and supersedes aside; equal
    instants however spelt, a date-only time in any zone: ``mrledger.service.fhir_match.same_content``), or None.
    Shared by intake (a resend is a duplicate) and verification (which held version a FHIR resource a doctor holds is),
    so both answer the same question the same way."""
    return next((v for v in reversed(versions) if same_content(candidate, v)), None)


def plan(candidates: Sequence[ResultRecord], held: Mapping[str, Sequence[ResultRecord]]) -> list[ResultRecord]:
    """The records to store for ``candidates`` (adapter output, any version) given the ``held`` versions of
    each result id (ascending). A duplicate is returned as the held record itself, so the store answers it
    with its original leaf. Records of one request are planned in order, each seeing those before it: a
    Bundle holding a result and then its correction yields versions n + 1 and n + 2."""
    lineage = {rid: list(versions) for rid, versions in held.items()}
    out: list[ResultRecord] = []
    for candidate in candidates:
        versions = lineage.setdefault(candidate.result_id, [])
        same = same_version(candidate, versions)
        if same is None:
            same = _next_version(candidate, versions)
            versions.append(same)
        out.append(same)
    return out


def _next_version(candidate: ResultRecord, versions: Sequence[ResultRecord]) -> ResultRecord:
    rid, status = candidate.result_id, candidate.status
    if not versions:
        if status in AMENDMENTS:
            raise UnknownCorrectionError(
                f"result {rid!r} is sent as {status}, a correction of a result this ledger never received: "
                "send the original result first")
        # final and preliminary are first versions; so is entered-in-error, which the record rules allow
        # at version 1 and which tells every later verifier that this result id is void.
        return candidate.model_copy(update={"version": 1, "supersedes": None})
    differs = identity_differs(versions[0], candidate)
    if differs:
        raise IdentityChangeError(_identity_reason(candidate, versions[0], differs),
                                  [(candidate.hospital_id, rid, versions[0].version)], differs)
    latest = versions[-1]
    reason = _refusal(status, latest.status)
    if reason is not None:
        raise UnannouncedChangeError(
            f"result {rid!r} differs from version {latest.version} ({latest.status}) held by this ledger, "
            f"but is sent as {status}: {reason}", [(candidate.hospital_id, rid, latest.version)])
    return candidate.model_copy(update={"version": latest.version + 1, "supersedes": latest.version})


def _identity_reason(candidate: ResultRecord, first: ResultRecord, differs: list[str]) -> str:
    """The real reason a received result cannot be a version of the held one (issue 16: the old answer,
    "send as amended or corrected", was wrong advice for another patient's other test)."""
    what = {"subject": "another patient", "code": "another test"}
    parts = [what[d] for d in differs]
    detail = []
    if "subject" in differs:
        detail.append("the patient identifier differs")
    if "code" in differs:
        detail.append(f"test {first.code.system}|{first.code.code} held, "
                      f"{candidate.code.system}|{candidate.code.code} received")
    return (f"result {candidate.result_id!r} received is for {' and '.join(parts)} than the result held under "
            f"that id ({'; '.join(detail)}): it is a different result reusing the id, not a new version, and no "
            "status makes it one. Give it an id of its own (HL7: the filler's namespace or universal id in "
            "OBR-3.2/3.3; FHIR: an identifier with a system)")


def _refusal(new: str, held: str) -> str | None:
    """Why ``new`` may not follow ``held`` as a changed version, or None when it may."""
    if new in AMENDMENTS or new == REVOCATION:
        return None
    if held == "preliminary":
        return None  # preliminary → preliminary (an update) or → final (the result is complete)
    if held == REVOCATION:
        return ("the result was entered in error; a re-issue must be sent as corrected "
                "(FHIR status corrected, HL7 OBX-11/OBR-25 'C')")
    if new == "preliminary":
        return "a result held as final cannot become preliminary again; send a correction"
    return "a changed result must be sent as amended or corrected (FHIR status amended/corrected, HL7 'C')"


# -- the store ---------------------------------------------------------------------------------------


def held_versions(store: Store, hospital_id: str, result_ids: Sequence[str]) -> dict[str, list[ResultRecord]]:
    """Every held version of each result id (ascending). Results normally have one to three versions,
    so reading them whole is cheaper than being clever about which ones a comparison needs."""
    out: dict[str, list[ResultRecord]] = {}
    for rid in dict.fromkeys(result_ids):
        try:
            infos = store.versions(hospital_id, rid)
        except NotFoundError:
            continue
        out[rid] = [store.record(hospital_id, rid, info.version) for info in infos]
    return out


def continue_legacy(candidates: Sequence[ResultRecord], held: Mapping[str, Sequence[ResultRecord]],
                    legacy: Callable[[str], str]) -> list[ResultRecord]:
    """Candidates whose result id changed scheme keep the lineage they already have. HL7 result ids now carry
    the filler's authority (``EM-811^LIS``, mrledger.ledger.formats.hl7v2); results stored before under the bare
    number (``EM-811``) keep that id, since it is inside their leaves and receipts. A later message for such a
    result — nothing held under the new id, the old id held for the *same patient and test* — continues under
    the old id (a resend is a duplicate, a correction its next version). One for another patient or test
    keeps the new id and becomes a result of its own: the collision the new scheme exists to prevent."""
    out = []
    for candidate in candidates:
        old = legacy(candidate.result_id)
        versions = held.get(old, [])
        if (old != candidate.result_id and not held.get(candidate.result_id) and versions
                and not identity_differs(versions[0], candidate)):
            candidate = candidate.model_copy(update={"result_id": old})
        out.append(candidate)
    return out


# -- the formats -------------------------------------------------------------------------------------


class _ZoneNeeded(MrLedgerError):
    """Raised from inside an adapter when a time has no UTC offset and the caller named no zone. Not a
    ValueError on purpose: the adapters turn ValueErrors into "not a valid date/time", which this is not."""


class ZoneRequired(tzinfo):
    """The ``default_tz`` of a request that named no zone: harmless while every time carries its offset,
    a clear refusal as soon as one does not (guessing the sender's zone would shift results by hours)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        shown = dt.replace(tzinfo=None).isoformat() if dt is not None else "a time"
        raise _ZoneNeeded(f"{shown} has no UTC offset; name the sender's time zone with the 'tz' parameter "
                          "(an IANA name such as America/New_York)")

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def _adapt(build: Callable[[], T]) -> T:
    try:
        return build()
    except _ZoneNeeded as exc:
        raise FormatError(str(exc)) from exc


#: ``include`` that maps every Observation category (verification: a doctor may hold what a hospital chose to
#: commit with ``include``).
EVERY_CATEGORY = fhir_policy.EVERY_CATEGORY


def read_fhir(hospital_id: str, data: bytes | dict[str, Any], tz: tzinfo | None = None,
              include: Collection[str] = (), fhir_version: str | None = None) -> FhirResults:
    """A FHIR R4 resource or Bundle as intake maps it (provisional version; ``plan`` renumbers), with the Bundle
    entries skipped. Without ``tz``, bare FHIR dates are read in UTC (the adapter's default: a FHIR dateTime
    with a time must carry an offset, so only dates can lack one). ``include``: Observation categories that are
    not results, committed anyway (ledger/formats/_fhir_policy.py)."""
    return _adapt(lambda: _read_fhir(data, hospital_id, version=PROVISIONAL_VERSION, default_tz=tz or UTC,
                                     include=include, fhir_version=fhir_version))


def fhir_records(hospital_id: str, data: bytes | dict[str, Any], tz: tzinfo | None = None,
                 include: Collection[str] = ()) -> list[ResultRecord]:
    """``read_fhir``'s records. Public so that verification projects a resource a doctor holds exactly as the
    hospital's submission was."""
    return read_fhir(hospital_id, data, tz, include).records


class ChainRegistrar(Protocol):
    """Puts a hospital on the chain's registry (``ChainContext.register_hospital``): named by what intake uses."""

    def register_hospital(self, hospital_id: str, name: str, submitters: Sequence[str] = ()) -> bool: ...


class IntakeService:
    """Where every result and event enters the ledger: hospitals, raw records, and the real formats.

    Depends on the store and, when this node puts hospitals on chain itself, the chain registrar; ``registered``
    is called after each registration (the verifier drops its cache of hospital names)."""

    def __init__(self, store: Store, chain: ChainRegistrar | None = None, *,
                 registered: Callable[[], None] = lambda: None) -> None:
        self.store, self._chain, self._registered = store, chain, registered

    def register_hospital(self, hospital_id: str, name: str, submitters: Sequence[str] = ()) -> bool:
        """Register in the database and, when this process holds the registry's admin key (a library user, a
        test), on chain with the node's anchoring account as submitter. Returns whether it was registered on
        chain now. Under ``mrledger serve`` the API holds no admin key: the leader's sealer puts the hospital
        and the ``submitters`` stored with it on chain, before it seals the hospital's first batch."""
        self.store.register_hospital(hospital_id, name, submitters)
        self._registered()
        return self._chain is not None and self._chain.register_hospital(hospital_id, name, submitters)

    def submit(self, hospital_id: str, records: Sequence[ResultRecord],
               aliases: Mapping[str, Sequence[str]] | None = None, within: Within | None = None) -> list[Accepted]:
        """Every intake path (JSON, FHIR, HL7 v2, DICOM fingerprints, events) ends here: new ids must be visible.
        ``within``: see ``Store.submit``."""
        for i, record in enumerate(records):
            check_ids(record, f"records[{i}]" if len(records) > 1 else "")
        return self.store.submit(hospital_id, records, aliases, within)

    def submit_planned(self, hospital_id: str, candidates: Sequence[ResultRecord],
                       legacy: Callable[[str], str] | None = None) -> list[IntakeOutcome]:
        """Plan ``candidates`` against the stored lineage and store them in one unit of work. ``legacy`` maps a
        result id to the one the same result had under an earlier id scheme (``continue_legacy``)."""
        ids = [c.result_id for c in candidates]
        if legacy is not None:
            old = held_versions(self.store, hospital_id, [legacy(i) for i in ids if legacy(i) != i])
            if old:
                candidates = continue_legacy(candidates, {**old, **held_versions(self.store, hospital_id, ids)},
                                             legacy)
        planned = plan(candidates, held_versions(self.store, hospital_id, [c.result_id for c in candidates]))
        # Observations folded into a report stay findable by their own ids (a doctor may hold one alone).
        names = {r.result_id: found for r in planned if (found := aliases(r))}
        accepted = self.submit(hospital_id, planned, names)
        return [IntakeOutcome(r.result_id, r.version, r.supersedes, r.status, a.leaf_hash, a.status)
                for r, a in zip(planned, accepted, strict=True)]

    def submit_fhir(self, hospital_id: str, data: bytes, tz: tzinfo | None = None,
                    include: Collection[str] = (), fhir_version: str | None = None
                    ) -> tuple[list[IntakeOutcome], list[Skipped]]:
        """A FHIR R4 resource or Bundle (``read_fhir``): what was stored, and what was skipped and why."""
        found = read_fhir(hospital_id, data, tz, include, fhir_version)
        return self.submit_planned(hospital_id, found.records), found.skipped

    def submit_hl7v2(self, hospital_id: str, data: bytes, tz: tzinfo | None = None,
                     encoding: str = "utf-8") -> list[IntakeOutcome]:
        """One or more ORU^R01 messages (batch wrappers allowed). Without ``tz`` every time must carry its
        offset; HL7 times usually do not, and the sender's zone is the integrator's knowledge, not ours."""
        zone = tz if tz is not None else ZoneRequired()
        records = _adapt(lambda: from_hl7v2(data, hospital_id, default_tz=zone, version=PROVISIONAL_VERSION,
                                            encoding=encoding))
        return self.submit_planned(hospital_id, records, legacy=legacy_result_id)
