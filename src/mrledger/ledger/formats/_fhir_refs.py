"""Reference resolution inside one FHIR input, and folding a report's bundled Observations into it.

Why fold: a DiagnosticReport's meaning is its results. If the report were committed with only
``"result": [{"reference": "Observation/r1"}]``, the commitment would prove a pointer, not a glucose
value. Observations the report references and that travel in the same Bundle are therefore moved into
the report's ``contained`` (the FHIR way of carrying a resource inside another), and the references are
rewritten to ``#local-id``, so the committed projection is one self-contained, valid FHIR resource.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from mrledger.ledger.formats._common import FormatError

#: ``Type/id`` at the end of a relative or absolute literal reference, optionally with a version.
_TYPED_REF = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")

Resource = dict[str, Any]


def reference_type(reference: str) -> str | None:
    """The resource type a literal reference names (``Patient/1``, ``http://x/fhir/Patient/1``), or None
    for references that do not say (``urn:uuid:…``, ``#local``)."""
    m = _TYPED_REF.search(reference)
    return m["type"] if m else None


def without_history(reference: str) -> str:
    """``Patient/1/_history/2`` names a version of the patient's record, not another patient."""
    return reference.split("/_history/", 1)[0]


class Index:
    """The resources of one input, findable by fullUrl and by ``Type/id``."""

    def __init__(self, entries: list[tuple[str | None, Resource]]) -> None:
        self.entries = entries
        self._by_url: dict[str, int] = {}
        self._by_key: dict[tuple[str, str], int] = {}
        for i, (full_url, resource) in enumerate(entries):
            if full_url:
                self._by_url.setdefault(full_url, i)
            if isinstance(resource.get("id"), str):
                self._by_key.setdefault((resource["resourceType"], resource["id"]), i)

    def find(self, reference: str) -> int | None:
        """Entry position of the resource a reference points to, or None when it is not in this input.

        Relative and absolute references are matched on their ``Type/id`` tail as well as on the exact
        fullUrl: real bundles (``Bundle-lri-example``) use fullUrls that do not end in ``Type/id``."""
        if reference in self._by_url:
            return self._by_url[reference]
        m = _TYPED_REF.search(reference)
        if m:
            return self._by_key.get((m["type"], m["id"]))
        return None


def contained(resource: Resource, reference: str) -> Resource | None:
    if not reference.startswith("#"):
        return None
    for item in resource.get("contained", []):
        if isinstance(item, dict) and item.get("id") == reference[1:]:
            return item
    return None


def _references(value: Any) -> Iterator[dict[str, Any]]:
    """Every FHIR Reference object in a JSON value (an object with a string ``reference``)."""
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _pulled(report: Resource, index: Index) -> list[int]:
    """Bundle positions of the Observations a report carries: its ``result`` references and, depth
    first, their ``hasMember`` (a panel's members belong to the panel)."""
    order: list[int] = []
    stack = [r["reference"] for r in reversed(report.get("result", [])) if isinstance(r.get("reference"), str)]
    while stack:
        pos = index.find(stack.pop())
        if pos is None or pos in order or index.entries[pos][1]["resourceType"] != "Observation":
            continue
        order.append(pos)
        members = index.entries[pos][1].get("hasMember", [])
        stack.extend(m["reference"] for m in reversed(members) if isinstance(m.get("reference"), str))
    return order


def report_observations(index: Index) -> dict[int, list[int]]:
    """For each DiagnosticReport of the input (by position), the Observations folded into it."""
    return {
        i: _pulled(resource, index)
        for i, (_, resource) in enumerate(index.entries)
        if resource["resourceType"] == "DiagnosticReport"
    }


def fold(report: Resource, pulled: list[int], index: Index, where: str) -> Resource:
    """The report with the given bundle Observations moved into ``contained`` and every reference to them
    (from the report or between them) rewritten to ``#local-id``. Local ids are the Observations' own ids
    where unique, else ``obs<n>`` in order of first reference: deterministic for the same bundle."""
    if not pulled:
        return report
    report = deep_copy(report)
    taken = {c.get("id") for c in report.get("contained", []) if isinstance(c, dict)}
    local: dict[int, str] = {}
    for n, pos in enumerate(pulled, start=1):
        own = index.entries[pos][1].get("id")
        name = own if isinstance(own, str) and own not in taken else f"obs{n}"
        while name in taken:
            name += "-1"
        taken.add(name)
        local[pos] = name
    moved: list[Resource] = []
    for pos in pulled:
        observation = index.entries[pos][1]
        if observation.get("contained"):
            raise FormatError(
                f"Observation {observation.get('id', pos)} has contained resources of its own; FHIR does not "
                "allow them nested inside the report that references it. Send it with its contained resources "
                "as separate bundle entries",
                where=where,
            )
        moved.append(deep_copy({**observation, "id": local[pos]}))
    report["contained"] = [*report.get("contained", []), *moved]
    for ref in _references(report):
        target = index.find(ref["reference"])
        if target is not None and target in local:
            ref["reference"] = f"#{local[target]}"
    return report


def deep_copy(value: Any) -> Any:
    """JSON-only deep copy (cheaper and stricter than ``copy.deepcopy``); ``fold`` mutates references."""
    if isinstance(value, dict):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value
