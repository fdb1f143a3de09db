"""anchoring/_flight.py: callers asking for a read while the same one is in flight share it, on threads and on
an event loop; a caller after it ended reads again; an error is every sharer's and is not kept. Then the
worker-thread path of ``CachedReader`` on a real anvil: a shallow anchor read once for the threads that ask
meanwhile, and again after."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from mrledger.anchoring import readers
from mrledger.anchoring._flight import LoopFlights, ThreadFlights
from mrledger.anchoring.chain import CachedReader
from mrledger.anchoring.verify import verify_on_chain
from mrledger.ledger import hospital_key
from tests.anchoring.test_verify_cache import DEPTH, Chain, chain  # noqa: F401  (the fixture)

FOLLOWERS = 7


def _gated(flights: ThreadFlights, key: str, fn: Any) -> tuple[list[Any], list[int]]:
    """A leader thread held inside its read of ``key`` until FOLLOWERS more threads have asked for it (each
    joined the leader's read, or started its own, which ``calls`` counts); then the read runs ``fn``."""
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []
    out: list[Any] = []

    def read() -> Any:
        calls.append(1)
        entered.set()
        release.wait(10)
        return fn()

    def ask() -> None:
        try:
            out.append(flights.read(key, read))
        except Exception as exc:  # the test compares what each thread got
            out.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(FOLLOWERS + 1)]
    threads[0].start()
    assert entered.wait(10)
    for t in threads[1:]:
        t.start()
    _until(lambda: flights.joined + len(calls) - 1 >= FOLLOWERS)
    release.set()
    for t in threads:
        t.join(10)
    return out, calls


def _until(condition: Any, timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("timed out")


def test_threads_asking_during_a_read_share_it_and_the_next_one_reads_again() -> None:
    flights = ThreadFlights()
    out, calls = _gated(flights, "k", lambda: object())
    assert len(calls) == 1 and flights.sent == 1 and flights.joined == FOLLOWERS and len(flights) == 0
    assert len(out) == FOLLOWERS + 1 and all(o is out[0] for o in out)  # the very same answer
    assert flights.read("k", lambda: "again") == "again" and flights.sent == 2
    assert flights.read("other", lambda: 1) == 1 and flights.sent == 3


def test_a_failed_read_fails_every_sharer_and_is_not_kept() -> None:
    flights = ThreadFlights()

    def boom() -> None:
        raise OSError("node gone")

    out, calls = _gated(flights, "k", boom)
    assert len(calls) == 1 and len(out) == FOLLOWERS + 1
    assert all(isinstance(o, OSError) and str(o) == "node gone" for o in out)
    assert len(flights) == 0 and flights.read("k", lambda: 5) == 5


def test_coroutines_share_a_read_and_one_that_goes_away_does_not_cancel_it() -> None:
    flights = LoopFlights()
    calls: list[int] = []

    async def slow() -> str:
        calls.append(1)
        await asyncio.sleep(0.05)
        return "facts"

    async def run() -> tuple[list[Any], str]:
        first = asyncio.ensure_future(flights.read("k", slow))
        await asyncio.sleep(0)  # the read is in flight
        rest = [asyncio.ensure_future(flights.read("k", slow)) for _ in range(5)]
        await asyncio.sleep(0)
        first.cancel()  # its client hung up
        got = await asyncio.gather(*rest)
        return list(got), await flights.read("k", slow)

    got, again = asyncio.run(run())
    assert got == ["facts"] * 5 and again == "facts"
    assert calls == [1, 1] and flights.sent == 2 and flights.joined == 5 and len(flights) == 0


def test_worker_threads_share_a_shallow_anchors_reads_and_read_it_again_after(
        chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The held-record path (a verification on a worker thread) reads a shallow anchor's block and registry
    entry from the node; threads asking meanwhile share those reads, a later one reads again and sees a
    reorg."""
    [receipt, *_] = chain.anchor()
    reader = CachedReader(chain.w3, final_depth=DEPTH, chain_id=chain.w3.eth.chain_id)
    reader.head()
    number = receipt["anchor"]["block_number"]
    real = readers._fetch_block
    entered, release = threading.Event(), threading.Event()

    def held(w3: Any, n: int) -> Any:  # the real read, held open until the other threads have asked
        entered.set()
        release.wait(10)
        return real(w3, n)

    monkeypatch.setattr(readers, "_fetch_block", held)
    got: list[Any] = []
    first = threading.Thread(target=lambda: got.append(reader.block(number)))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=lambda: got.append(reader.block(number))) for _ in range(FOLLOWERS)]
    for t in others:
        t.start()
    _until(lambda: reader.flights.joined >= FOLLOWERS)
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert reader.flights.sent == 1 and len(got) == FOLLOWERS + 1
    assert all(b is not None and b.hash == receipt["anchor"]["block_hash"] for b in got)
    assert len(reader._blocks) == 0  # shallow: kept by no cache
    monkeypatch.setattr(readers, "_fetch_block", real)
    hk, seq = hospital_key("gz-001"), receipt["batch"]["seq"]
    assert reader.batch(receipt["anchor"]["contract"], hk, seq) is not None
    sent = reader.flights.sent
    assert verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"
    assert reader.flights.sent > sent  # read again, not kept
    chain.reorg(1)
    after = verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False)
    assert after.failed == "anchor-root", after.to_obj()
