"""The monitor re-derives every batch's status map (issues 18 and 19): from the previous map it derived and the
map change the node publishes for each leaf, the root must be the one the batch committed. A result withdrawn in
SQL without a new leaf, or a map root the leaves do not give, is ``status-map``; a clean history with corrections
and withdrawals is silent. Real node and anvil (the ``world`` of test_monitor.py)."""

from __future__ import annotations

import pytest

from mrledger.ledger import hospital_key
from mrledger.monitor.state import State
from tests.monitor.test_monitor import GZ, QD, World, kinds, world
from tests.store.test_repository import rec

__all__ = ["world"]
pytestmark = [pytest.mark.anvil, pytest.mark.parametrize("engine", ["sqlite"], indirect=True)]

def test_a_clean_history_with_corrections_and_withdrawals_is_silent(world: World) -> None:
    monitor, found = world.monitor(token=world.api.tokens["auditor"], require_signatures=False)
    assert monitor.run_once().problems == []
    world.api.ledger.intake.submit(GZ, [rec(0, GZ, version=2, value=8.0), rec(1, GZ, version=2,
                                                                              status="entered-in-error")])
    world.api.ledger.store.seal(GZ, 100)
    world.api.anchor_all()
    assert monitor.run_once().problems == [] and found == []
    state = State(world.tmp / "monitor.db")
    try:
        assert state.map_seq(hospital_key(GZ)) == 3 and state.map_seq(hospital_key(QD)) == 2
        statuses = sorted(v.status for v in state.map_entries(hospital_key(GZ)).values())
        assert statuses.count("withdrawn") == 1 and len(statuses) == 4
    finally:
        state.close()

def test_a_result_withdrawn_in_sql_without_a_leaf_is_a_status_map_problem(world: World) -> None:
    world.sql("UPDATE record_versions SET status = 'entered-in-error' WHERE id = (SELECT record_version_id FROM "
              "batch_leaves WHERE hospital_id = :g AND seq = 1 AND leaf_index = 0)", g=GZ)
    monitor, _ = world.monitor(token=world.api.tokens["auditor"])
    result = monitor.run_once()
    assert kinds(result.problems) == {("status-map", GZ, 1)}
    assert "the node committed" in result.problems[0].detail
    # Without the auditor token the maps are not re-derived: the same history passes (documented).
    blind, _ = world.monitor(state=world.tmp / "blind.db")
    assert blind.run_once().problems == []

def test_a_map_root_its_leaves_do_not_give_is_a_status_map_problem(world: World) -> None:
    world.sql("UPDATE batches SET map_root = :r WHERE hospital_id = :q AND seq = 2", r=b"\x07" * 32, q=QD)
    monitor, _ = world.monitor(token=world.api.tokens["auditor"])
    assert kinds(monitor.run_once().problems) == {("status-map", QD, 2)}
