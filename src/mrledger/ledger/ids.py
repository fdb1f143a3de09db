"""Ids as people see them: one spelling per id, and no id that looks like another.

Not consensus-critical: nothing here changes what a record commits to. ``mrledger.ledger.records`` NFC-normalises ids
at construction; ``lookup_id`` does the same to an id a caller names, so that any spelling finds it; and
``check_ids`` refuses new ids holding characters nobody can see, at intake only, so that receipts issued
before the rule keep verifying (docs/receipt.md §3).
"""

from __future__ import annotations

import re
import unicodedata

from mrledger.ledger.errors import RecordError
from mrledger.ledger.records import ImagingStudyContent, ResultRecord

_CONTROL = re.compile("[\x00-\x1f\x7f]")


#: Unicode general categories of characters a reader cannot see, or that reorder what is shown: format
#: (Cf: zero-width space and joiners, bidi embeddings/overrides/isolates, soft hyphen, BOM, tags), control
#: (Cc), line and paragraph separators (Zl, Zp), surrogates (Cs) and unassigned code points (Cn). An id
#: holding one looks exactly like another id, in a list, a report or a log.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zl", "Zp", "Cs", "Cn"})


def invisible_character(value: str) -> str | None:
    """The first character of ``value`` in ``INVISIBLE_CATEGORIES``, named (``U+200B ZERO WIDTH SPACE``),
    or None."""
    if value.isascii():  # only C0 controls and DEL could be: no category lookup per character
        found = _CONTROL.search(value)
        return None if found is None else f"U+{ord(found.group()):04X} (a control character)"
    for ch in value:
        if unicodedata.category(ch) in INVISIBLE_CATEGORIES:
            return f"U+{ord(ch):04X} {unicodedata.name(ch, '(unnamed)')}"
    return None


def lookup_id(value: str) -> str:
    """An id as a caller names it in a URL or a query, made comparable with what ingest stored: NFC (ingest
    normalises, so the NFD spelling of a stored id must find it). ValueError if it holds an invisible
    character: no id accepted at ingest does (``check_ids``), and answering "not found" would hide why."""
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    bad = invisible_character(value)
    if bad is not None:
        raise ValueError(f"ids never hold invisible characters; this one holds {bad}")
    return value


def check_ids(record: ResultRecord, where: str = "") -> None:
    """Refuse (RecordError naming the field) a new record whose identifiers hold a character nobody can
    see (``INVISIBLE_CATEGORIES``): ``LAB-1`` and ``LAB\u200b-1`` would be two results that look like one.
    Called at ingest (``IntakeService.submit``), not at construction: a receipt issued before this rule still
    parses and verifies, since its leaf commits to the id as it was."""
    content = record.content
    if (record.result_id.isascii() and record.subject.value.isascii() and record.code.code.isascii()
            and not isinstance(content, ImagingStudyContent)):
        return  # the common case: ASCII ids hold no control character (refused at construction), so nothing hidden
    ids = [("result_id", record.result_id), ("subject.value", record.subject.value), ("code.code", record.code.code)]
    if isinstance(content, ImagingStudyContent):
        ids += [("content.study_instance_uid", content.study_instance_uid)]
        ids += [("content.accession", content.accession)] if content.accession is not None else []
        ids += [(f"content.instances.{i}.sop_instance_uid", x.sop_instance_uid)
                for i, x in enumerate(content.instances)]
    for name, value in ids:
        bad = invisible_character(value)
        if bad is not None:
            raise RecordError(f"ids never hold invisible characters; this one holds {bad}",
                              field=f"{where}.{name}" if where else name)
