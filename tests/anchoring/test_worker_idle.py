"""The anchoring worker's pace when it has nothing to do (``AnchorWorker.run`` with ``idle`` and ``wake``, as
``mrledger serve`` runs it): few steps on an idle node, none of its anchors later than before — a sealed batch
wakes it at once, batches waiting for ``send_every`` go when they are due, and anything in flight is watched at
``interval``. Against a real anvil node (and Hardhat Network), like the rest of the worker's tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mrledger.anchoring.worker import AnchorWorker, StepReport
from mrledger.node.background import Sealer
from mrledger.node.settings import Settings
from tests.anchoring.chain import Env, submit, wait_until

pytestmark = pytest.mark.anvil
INTERVAL, IDLE = 0.05, 20.0  # IDLE far above what any step here takes, even on a loaded CI machine


@pytest.mark.parametrize(("report", "expected"), [
    (StepReport(in_flight=True), (INTERVAL, False)),
    (StepReport(in_flight=True, send_in=1.0), (INTERVAL, False)),
    (StepReport(waiting=["gz-001/3"], send_in=0.0), (INTERVAL, False)),
    (StepReport(), (IDLE, True)),
    (StepReport(send_in=1.5), (1.5, False)),
    (StepReport(send_in=0.0), (INTERVAL, False)),
    (StepReport(send_in=60.0), (IDLE, False)),
], ids=["in-flight", "in-flight-and-sealed", "waiting-on-registry", "nothing", "sealed-not-due", "sealed-due",
        "sealed-due-late"])
def test_the_pause_after_a_step_that_changed_nothing(report: StepReport, expected: tuple[float, bool]) -> None:
    assert report.pause(INTERVAL, IDLE) == expected


class Counted:
    """The worker's steps, counted, with the time of each."""

    def __init__(self, worker: AnchorWorker) -> None:
        self.times: list[float] = []
        step = worker.step

        def counted() -> StepReport:
            self.times.append(time.monotonic())
            return step()
        worker.step = counted  # type: ignore[method-assign]


@contextmanager
def running(worker: AnchorWorker, wake: threading.Event | None) -> Iterator[threading.Event]:
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,),
                              kwargs={"interval": INTERVAL, "idle": IDLE, "wake": wake}, daemon=True)
    runner.start()
    try:
        yield stop
    finally:
        stop.set()
        if wake is not None:
            wake.set()  # as serve does: stop ends a wait on wake too
        runner.join(timeout=10)
        assert not runner.is_alive(), "the worker did not stop"


def test_an_idle_worker_steps_rarely_and_a_sealed_batch_wakes_it(env: Env) -> None:
    worker = env.worker(confirmations=1)
    steps = Counted(worker)
    wake = threading.Event()
    with running(worker, wake):
        time.sleep(1.5)
        # Nothing sealed, nothing in flight: one step, then a wait of IDLE (at INTERVAL it would be ~30 steps).
        assert len(steps.times) == 1
        submit(env, 3)
        assert env.seal_all() == 3
        sealed = time.monotonic()
        wake.set()  # what the sealer does after each batch
        wait_until(lambda: env.settled() and not env.store.pending_count(), timeout=30, tick=0.05)
        # Anchored and confirmed well inside IDLE: the seal ended the wait, nobody waited for the next round.
        assert time.monotonic() - sealed < IDLE
        assert any(t >= sealed for t in steps.times)
    env.assert_exactly_once_and_confirmed()


def test_without_wake_the_worker_steps_at_interval_as_before(env: Env) -> None:
    worker = env.worker(confirmations=1)
    steps = Counted(worker)
    with running(worker, None):
        time.sleep(1.0)
    assert len(steps.times) >= 5  # INTERVAL 0.05: the library default pace, unchanged


def test_sealed_batches_wait_for_send_every_and_go_when_due(env: Env) -> None:
    """After an anchor, batches sealed meanwhile go out when ``send_every`` has passed — not one idle round later,
    and not woken early by each seal."""
    send_every = 1.5
    worker = env.worker(confirmations=1, send_every=send_every)
    submit(env, 2)
    env.seal_all()
    assert worker.step().sent == 3  # the first transaction: send_every counts from here
    first = worker._last_send
    steps = Counted(worker)
    wake = threading.Event()
    with running(worker, wake):
        submit(env, 2, start=2)
        env.seal_all()
        wake.set()

        def sent_again() -> bool:
            env.mine()
            return worker._last_send > first
        wait_until(sent_again, timeout=30, tick=0.05)
        gap = worker._last_send - first
        assert send_every <= gap < send_every + 3.0  # due, then one step: not IDLE later
        # While the second round waited for its due time the worker did not spin: a few steps, not gap / INTERVAL.
        waiting = [t for t in steps.times if t < worker._last_send - 0.1]
        assert len(waiting) < 10
        # Confirmed while the worker still runs: it is the worker that marks them (stopped first, this waited for
        # nobody whenever the second transaction was not confirmed yet — a CI failure on a loaded machine).
        wait_until(env.settled, timeout=30)
    env.assert_exactly_once_and_confirmed()


def test_the_sealer_sets_wake_when_it_seals_and_only_then(env: Env, tmp_path: Path) -> None:
    class Chain:  # what the sealer reads of the chain context when it holds no admin key
        chain_id, contract, admin = 31337, env.contract, None

    sealer = Sealer(env.store, Chain(), Settings(data_dir=tmp_path / "data", batch_interval=0.001,  # type: ignore[arg-type]
                                                  sign_batches=False))
    sealer.step()
    assert not sealer.sealed.is_set()  # nothing pending, nothing sealed: the worker sleeps on
    submit(env, 2)

    def sealed_all() -> bool:  # due once its oldest result is older than the interval, by the store's clock
        sealer.step()
        return env.store.pending_count() == 0
    wait_until(sealed_all, timeout=30)
    assert sealer.sealed.is_set()
