"""Step 1 of the KPI audit against the chain, for a range of an event stream's batches at once.

Why batched: a city's event streams seal a batch every few seconds, so a year holds hundreds of thousands of
them, and one registry read per batch (``ChainContext.holds``: on a v2 registry a ``lastSeq``, a log search and
a transaction receipt) made the chain, not the records, the audit's cost. Here a range of batches costs:

* on a v1 registry, ``batchOf`` for all of them in JSON-RPC batches pinned to one block (``contract.read_many``);
* on a v2 registry, the stream's ``BatchAnchored`` logs over the blocks its anchors name (one ``eth_getLogs`` per
  ``contract_v2.LOG_WINDOW`` blocks). The commitment each log carries is what the registry anchored for (stream,
  seq); a batch whose log is not where its anchor says (a reorg moved it) is looked for the slow way,
  ``ChainContext.holds``, which searches the whole chain.

Batches are compared with the registry their anchor names (a v1 predecessor after an in-place upgrade), as
before. The chain is read as it is now, never from a cache: this is an audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.chain import ChainContext, Holding
from mrledger.ledger import hospital_key
from mrledger.ledger.status import CONFIRMED, INCLUDED
from mrledger.service.outcome import ChainUnavailableError
from mrledger.store.decisions import AuditBatch


class _StreamBatch(NamedTuple):
    """An event stream's batch as the registry knows it (the stream id is its "hospital" there)."""

    hospital_id: str
    seq: int
    root: bytes
    size: int


def problem(kind: str, stream: str, detail: str, **extra: Any) -> dict[str, Any]:
    """One problem the KPI audit reports (``AuditProblem`` in the API)."""
    return {"kind": kind, "stream": stream, "detail": detail, **extra}


def _windows(blocks: Sequence[int], width: int) -> list[tuple[int, int]]:
    """Block ranges of at most ``width`` blocks covering ``blocks`` (sorted), no range without one of them."""
    out: list[tuple[int, int]] = []
    for b in sorted(set(blocks)):
        if out and b - out[-1][0] < width:
            out[-1] = (out[-1][0], b)
        else:
            out.append((b, b))
    return out


def _v1(chain: ChainContext, contract: str, stream: str, batches: Sequence[AuditBatch]) -> dict[int, Holding]:
    key = hospital_key(stream)
    view = reg.read_many(chain.w3, contract, batches=[(key, b.seq) for b in batches])
    return {b.seq: Holding.of(view.batches.get((key, b.seq)), _StreamBatch(stream, b.seq, b.root, b.size))
            for b in batches}


def _v2(chain: ChainContext, contract: str, stream: str, batches: Sequence[AuditBatch]) -> dict[int, Holding]:
    key = hospital_key(stream)
    logged: dict[int, reg2.AnchoredEventV2] = {}
    for start, end in _windows([b.block_number for b in batches if b.block_number is not None], reg2.LOG_WINDOW):
        for e in reg2.anchored_events(chain.w3, contract, from_block=start, to_block=end, hospital_key=key):
            logged[e.seq] = e
    out = {}
    for b in batches:
        head = _StreamBatch(stream, b.seq, b.root, b.size)
        got = logged.get(b.seq)
        if got is None:  # not where the anchor says: search the chain for it
            out[b.seq] = chain.holds(head, contract, b.map_root, b.block_number)
        else:
            out[b.seq] = Holding.of(reg2.CommitRecord(got.commitment, got.block_number, got.tx_hash, None), head,
                                    b.map_root)
    return out


def chain_problems(chain: ChainContext, stream: str, batches: Sequence[AuditBatch]) -> list[dict[str, Any]]:
    """``not-on-chain`` / ``chain-mismatch`` problems of the batches of ``stream`` the database says are on
    chain (included or confirmed); raises ChainUnavailableError when the chain cannot be read (no verdict)."""
    groups: dict[str, list[AuditBatch]] = {}
    for b in batches:
        if b.status in (INCLUDED, CONFIRMED):
            groups.setdefault(b.contract or chain.contract, []).append(b)
    held: dict[int, Holding] = {}
    try:
        for contract, group in groups.items():
            read = _v2 if reg2.registry_version(chain.w3, contract) == 2 else _v1
            held.update(read(chain, contract, stream, group))
    except Exception as exc:  # no verdict without the chain: the caller reports it and the auditor asks again
        raise ChainUnavailableError(f"cannot read the registry: {type(exc).__name__}: {exc}") from exc
    problems = []
    for b in sorted((b for g in groups.values() for b in g), key=lambda b: b.seq):
        holding = held[b.seq]
        if holding.entry is None:
            problems.append(problem("not-on-chain", stream, f"batch {b.seq} is {b.status} here but not in the "
                                                            "registry", seq=b.seq))
        elif not holding.holds:
            problems.append(problem("chain-mismatch", stream, f"the registry holds {holding.what} for batch {b.seq}, "
                                                              f"the database root {b.root.hex()} size {b.size}",
                                    seq=b.seq))
    return problems


__all__ = ["chain_problems", "problem"]
