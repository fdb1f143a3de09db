"""A new decision in one PostgreSQL statement: its record, the record's pending leaf, the verification it names and
its index row.

Why: every decision is a one-record submission to its hospital's event stream with its index row, and through
``Store.submit`` (with ``EventIndex.indexing`` as its ``within``) that was eight round trips — BEGIN, the hospital,
the held versions of the record's key, the record, its pending leaf, the verification, the index row, COMMIT —
each costing the API process ~60 µs of psycopg's Python and PostgreSQL a statement of its own. A 5,000-verification
city replay's statement log counted roughly twenty statement executions a verification, eight of them the
decision's (issue 20).

The common case — a record new to its stream, whose key is the verification's id — needs no read first: one INSERT
whose WITH clauses insert the record (``ON CONFLICT DO NOTHING`` on its unique key, returning its id), its pending
leaf and, when this process answered the verification lately, the verification row (skipped if the buffer wrote it
first); its top level inserts the index row from the record's id. Run in autocommit, the statement is its own
transaction: all of it commits, or nothing. Every other case goes to ``Store.submit`` as before, unchanged: the
record's key is held already (the statement inserts nothing and returns no row: a retry, a duplicate, a conflict),
or the statement fails on a constraint and writes nothing (the index row's key: the verification decided in another
stream; a foreign key). PostgreSQL only (data-modifying WITH): SQLite keeps ``Store.submit``.

The rows are the ones ``Store.submit`` would write: the record's from ``Submission.first_version``, the others from
the same column mappings as ``EventIndex`` (``tests/store/test_decision_write.py`` compares them).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, exists, insert, select
from sqlalchemy.dialects import postgresql

from mrledger.store.bulk import DriverInsert
from mrledger.store.models import Decision, PendingLeaf, RecordVersion, Verification
from mrledger.store.submission import VERSION_COLUMNS

_VERSIONS = cast(Table, RecordVersion.__table__)
_PENDING = cast(Table, PendingLeaf.__table__)
_DECISIONS = cast(Table, Decision.__table__)
_VERIFICATIONS = cast(Table, Verification.__table__)
#: The index row's columns but the record's id, which the statement takes from the record it inserts.
DECISION_FIELDS = tuple(c.name for c in _DECISIONS.columns if c.name != "record_version_id")
#: Prefixes of the bind names of the record's and the verification's columns (the tables share column names).
RECORD, VERIFICATION = "r_", "v_"


def _binds(table: Table, columns: tuple[str, ...], prefix: str = "") -> list[Any]:
    return [bindparam(prefix + c, type_=table.c[c].type) for c in columns]


def _statement(verification_columns: tuple[str, ...] | None) -> Insert:
    record = (postgresql.insert(_VERSIONS).values(dict(zip(VERSION_COLUMNS, _binds(_VERSIONS, VERSION_COLUMNS, RECORD),
                                                           strict=True)))
              .on_conflict_do_nothing().returning(_VERSIONS.c.id, _VERSIONS.c.hospital_id, _VERSIONS.c.accepted_at)
              .cte("new_record"))
    pending = insert(_PENDING).from_select(["record_version_id", "hospital_id", "accepted_at"],
                                           select(record.c.id, record.c.hospital_id, record.c.accepted_at)
                                           ).cte("new_pending")
    top = insert(_DECISIONS).from_select(
        [*DECISION_FIELDS, "record_version_id"],
        select(*_binds(_DECISIONS, DECISION_FIELDS), record.c.id)).returning(_DECISIONS.c.verification_id)
    top = top.add_cte(pending)
    if verification_columns is not None:
        verification = (postgresql.insert(_VERIFICATIONS).from_select(
            list(verification_columns),
            select(*_binds(_VERIFICATIONS, verification_columns, VERIFICATION)).where(exists(select(record.c.id))))
            .on_conflict_do_nothing().cte("new_verification"))
        top = top.add_cte(verification)
    return top


def _names(verification_columns: tuple[str, ...] | None) -> tuple[str, ...]:
    return (*(RECORD + c for c in VERSION_COLUMNS), *DECISION_FIELDS,
            *(VERIFICATION + c for c in verification_columns or ()))


def decision_alone(verification_columns: tuple[str, ...] | None) -> DriverInsert:
    """The statement, with the verification's row (``verification_columns``) or without (None); its bind names
    are the record's columns prefixed ``RECORD``, the index row's ``DECISION_FIELDS`` and the verification's
    columns prefixed ``VERIFICATION``. It returns the index row's key, or no row when the record's key was held."""
    return DriverInsert(_statement(verification_columns), _names(verification_columns))


__all__ = ["DECISION_FIELDS", "RECORD", "VERIFICATION", "decision_alone"]
