"""Vacuuming the tables the node itself churns, and analysing the others, on PostgreSQL, when autovacuum has not.

Why the node does this at all: its queues (``pending_leaves``, ``anchor_todo``, ``kpi_todo``, ``kpi_open``) take a
row and delete it for every result, batch or event it moves along, and a few small tables (``anchors``' states, the
KPI sums and revisions) are updated all day. PostgreSQL frees the dead rows only when the table is vacuumed. A
server whose autovacuum is off, or lags behind (this machine's PostgreSQL runs with ``autovacuum = off``), keeps
every row ever deleted: in a city replay ``pending_leaves`` held ~1,500 live rows in an 88 MB heap after 336,000
verifications, and the sealer's two reads of it (``due_hospitals``, the batch's leaves) slowed with every leaf
ever written (3.8 ms and 6.2 ms a call, growing; ``pg_stat_statements``, issue 20).

What it does: every ``UPKEEP_EVERY`` seconds the leader's sealer asks the statistics which of ``CHURNED`` have more
dead rows than autovacuum's own rule allows (``50 + 0.2 × live rows``, PostgreSQL's default threshold and scale
factor) and vacuums those, with ``ANALYZE`` (the queues' statistics then say they are small). ``SKIP_LOCKED``: a
table autovacuum is working on is left to it. With a healthy autovacuum the rule is rarely met and this costs one
read of the statistics; the big tables (records, verifications, decisions, the access log) are never vacuumed
here: they are only inserted into (and pruned past their retention), and their vacuum is the operator's
(docs/scaling.md §6). SQLite reuses a deleted row's page without help: nothing to do there.

Every other table is *analysed* (``ANALYZE``: a sample of its rows for the planner's statistics, no vacuum) by
autovacuum's analyze rule (``50 + 0.1 × live rows`` rows changed since the last one), for the same reason: without
statistics the planner guessed that one hospital's rows were few, and the read of a report's 500 keys in an event
stream (``hospital_id = $1 AND result_hmac IN (…)``) became a scan of that stream's whole heap — 10,500 pages,
30–110 ms, every report, growing with the stream — where with statistics it is 500 probes of the unique index
(1,500 pages, 1.3 ms; ``EXPLAIN (ANALYZE, BUFFERS)`` on a city replay's schema at 300,000 verifications, issue 20).
The blocks PostgreSQL read from outside its buffers grew from 0.4 to 25 a verification over that replay.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, TextClause, bindparam, text

log = logging.getLogger("mrledger.store.upkeep")

#: Tables whose rows the node deletes or updates as part of its work (see the module's docstring).
CHURNED = ("pending_leaves", "anchor_todo", "kpi_todo", "kpi_open", "anchors", "anchor_txs", "kpi_sums", "kpi_runs",
           "kpi_revs")
#: Seconds between the leader's checks.
UPKEEP_EVERY = 30.0
#: Autovacuum's default rule: vacuum once dead rows exceed ``THRESHOLD + SCALE × live rows``.
THRESHOLD, SCALE = 50, 0.2
#: Autovacuum's default analyze rule: analyse once rows changed since the last analysis exceed
#: ``ANALYZE_THRESHOLD + ANALYZE_SCALE × live rows``.
ANALYZE_THRESHOLD, ANALYZE_SCALE = 50, 0.1

_DUE = text(
    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname IN :names "
    "AND n_dead_tup > :threshold + :scale * n_live_tup ORDER BY relname"
).bindparams(bindparam("names", expanding=True))


_STALE = text(
    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname NOT IN :names "
    "AND n_mod_since_analyze > :threshold + :scale * n_live_tup ORDER BY relname"
).bindparams(bindparam("names", expanding=True))


def upkeep(engine: Engine) -> tuple[list[str], list[str]]:
    """The leader's periodic upkeep: (tables vacuumed, tables analysed). A no-op on SQLite."""
    return vacuum_churned(engine), analyze_stale(engine)


def analyze_stale(engine: Engine) -> list[str]:
    """Analyse the tables not in ``CHURNED`` whose statistics are stale by autovacuum's analyze rule (see the
    module's docstring); return their names. A no-op on SQLite."""
    return _maintain(engine, _STALE, ANALYZE_THRESHOLD, ANALYZE_SCALE, "ANALYZE (SKIP_LOCKED)")


def vacuum_churned(engine: Engine) -> list[str]:
    """Vacuum (and analyse) those of ``CHURNED`` past autovacuum's rule; return their names. A no-op on SQLite."""
    return _maintain(engine, _DUE, THRESHOLD, SCALE, "VACUUM (ANALYZE, SKIP_LOCKED)")


def _maintain(engine: Engine, due_query: TextClause, threshold: int, scale: float, command: str) -> list[str]:
    """Run ``command`` on the tables ``due_query`` names (its threshold and scale bound); their names."""
    if engine.dialect.name != "postgresql":
        return []
    # VACUUM cannot run inside a transaction block: a connection of its own, in autocommit.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        due = [r[0] for r in conn.execute(due_query, {"names": list(CHURNED), "threshold": threshold,
                                                      "scale": scale})]
        if due:
            quoted = ", ".join(conn.dialect.identifier_preparer.quote(name) for name in due)
            conn.exec_driver_sql(f"{command} {quoted}")
            log.debug("%s %s", command, ", ".join(due))
    return due


__all__ = ["ANALYZE_SCALE", "ANALYZE_THRESHOLD", "CHURNED", "UPKEEP_EVERY", "analyze_stale", "upkeep",
           "vacuum_churned"]
