"""The doctors of ``scripts/simulate_city.py``: verification load from processes of its own (closed loop, seeded
chunks of 1,000 verifications, each followed by its decision and encounter), counted in constant memory
(``Histogram``, ``Tally``). Spawned by the replay; apart from it so each stays readable."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from scripts import httpload, sim_kpis
from scripts.city_data import CHUNK


class Histogram:
    """Latencies in 1 % log buckets: constant memory for any number of requests."""

    STEP = math.log(1.01)

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: Counter[int] = Counter(counts or {})

    def add(self, ms: float) -> None:
        self.counts[round(math.log(max(ms, 0.01)) / self.STEP)] += 1

    def quantile(self, q: float) -> float | None:
        total = sum(self.counts.values())
        if not total:
            return None
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= q * total:
                return round(math.exp(bucket * self.STEP), 2)
        return None


@dataclass
class Tally:
    """What the doctors were told; every field but ``latency`` and ``errors`` is identical for a seed."""

    verdicts: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    forms: Counter[str] = field(default_factory=Counter)
    scenarios: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    items_recognised: int = 0
    unexpected: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    latency: Histogram = field(default_factory=Histogram)
    #: Each decision's round trip (``POST /v1/decisions``), retries included: in the loop's time per verification.
    decide_latency: Histogram = field(default_factory=Histogram)
    #: Decisions recorded and encounters reported after the verifications (scripts/sim_kpis.py).
    kpi: sim_kpis.KpiTally = field(default_factory=sim_kpis.KpiTally)

    def merge(self, other: Tally) -> None:
        for mine, theirs in ((self.verdicts, other.verdicts), (self.decisions, other.decisions),
                             (self.reasons, other.reasons), (self.forms, other.forms)):
            mine.update(theirs)
        for name, counters in other.scenarios.items():
            into = self.scenarios.setdefault(name, {k: Counter() for k in counters})
            for k, c in counters.items():
                into[k].update(c)
        self.items_recognised += other.items_recognised
        self.unexpected += other.unexpected
        self.examples = (self.examples + other.examples)[:5]
        self.errors += other.errors
        self.error_examples = (self.error_examples + other.error_examples)[:5]
        self.latency.counts.update(other.latency.counts)
        self.decide_latency.counts.update(other.decide_latency.counts)
        self.kpi.merge(other.kpi)


@dataclass(frozen=True, slots=True)
class _Entry:
    receipt_body: bytes
    record_body: bytes
    hospital_index: int
    scenario: str
    verdict: str
    reasons: frozenset[str]
    label: str
    patient: dict[str, str]  # the record's subject: what the doctor's hospital reports (hashed by the node)


def _schedule(seed: int, chunk: int, count: int, pool: int, hospitals: int, record_share: float,
              issuer: list[int]) -> Iterator[tuple[int, bool, int]]:
    """Verifications ``chunk * CHUNK`` ..: (pool entry, record form?, doctor's hospital index), seeded per
    chunk so the schedule does not depend on how chunks are spread over processes."""
    rng = random.Random(f"{seed}:verify:{chunk}")
    for _ in range(chunk * CHUNK, min(count, (chunk + 1) * CHUNK)):
        entry = rng.randrange(pool)
        record_form = rng.random() < record_share
        doctor = rng.randrange(hospitals - 1)
        yield entry, record_form, doctor + (doctor >= issuer[entry])


def verify_worker(wid: int, workers: int, api: str, pool_path: str, doctor_tokens: list[str], seed: int,
                   count: int, concurrency: int, record_share: float, progress: Any,
                   kpi: tuple[list[str], list[str], dict[str, int]] | None = None) -> None:
    """One load process: ``concurrency`` connections, closed loop (a request is sent when one is answered),
    over the chunks ``wid, wid + workers, …`` of the schedule. A separate process so the generator's CPU is
    not the parent's, and several of them so one Python event loop is not the bottleneck. On a 2-core machine
    the server, anvil and the generator share the cores, so the measured rate is a floor for a real node.

    With ``kpi`` (hospital ids, hospital tokens, item prices) each answered verification is followed by the
    doctor's decision and its encounter report (scripts/sim_kpis.py), in the same closed loop: the verification
    rate then includes that traffic, as a node in service would carry it; the latencies are the verifications'."""
    from mrledger.node.background import die_with_parent

    # Killed with the simulation, however it ends: a simulation stopped with SIGTERM left its load processes
    # sending to a dead port at ~5 % of a core each, under the next measurement (stop 38).
    if not die_with_parent(os.getppid()):
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    entries = []
    with open(pool_path, "rb") as handle:
        for line in handle:
            e = json.loads(line)
            r = e["receipt"]
            rec = r["record"]
            entries.append(_Entry(
                json.dumps({"receipt": r}, separators=(",", ":")).encode(),
                json.dumps({"hospital_id": rec["hospital_id"], "result_id": rec["result_id"],
                            "version": rec["version"], "record": rec}, separators=(",", ":")).encode(),
                e["hospital_index"], e["scenario"], e["verdict"], frozenset(e["reasons"]),
                f"{rec['hospital_id']}/{rec['result_id']} v{rec['version']}",
                {k: v for k, v in rec["subject"].items() if k in ("system", "value")}))
    issuer = [e.hospital_index for e in entries]
    tally = Tally()
    done = 0

    async def run() -> None:
        nonlocal done
        work: asyncio.Queue[tuple[int, bool, int, int, float, float] | None] = asyncio.Queue(maxsize=concurrency * 4)
        reports: dict[int, list[dict[str, Any]]] = {}  # encounters waiting to be reported, per doctor's hospital
        conns = [httpload.Conn(api) for _ in range(concurrency)]  # one keep-alive connection per sender
        async def sender(client: httpload.Conn) -> None:
            nonlocal done
            while (item := await work.get()) is not None:
                index, record_form, doctor, number, u, v = item
                entry = entries[index]
                headers = {"content-type": "application/json"}
                if record_form:
                    headers["authorization"] = f"Bearer {doctor_tokens[doctor]}"
                body = entry.record_body if record_form else entry.receipt_body
                answer = None
                for attempt in range(3):
                    t0 = time.perf_counter()
                    try:
                        r = await client.post("/verify", content=body, headers=headers)
                    except httpload.TRANSPORT_ERRORS as exc:
                        problem = f"{type(exc).__name__}: {exc}"
                    else:
                        if r.status_code == 200:
                            tally.latency.add((time.perf_counter() - t0) * 1000)
                            answer = r.json()
                            break
                        problem = f"{r.status_code} {r.text[:200]}"
                    await asyncio.sleep(0.2 * (attempt + 1))
                done += 1
                if answer is None:
                    tally.errors += 1
                    if len(tally.error_examples) < 5:
                        tally.error_examples.append(problem)
                    continue
                _count(tally, entry, "record" if record_form else "receipt", answer)
                if kpi is not None:
                    t0 = time.perf_counter()
                    await sim_kpis.decide(client, tally.kpi, answer, doctor_tokens[doctor], u, doctor, kpi[2])
                    tally.decide_latency.add((time.perf_counter() - t0) * 1000)
                    waiting = reports.setdefault(doctor, [])
                    waiting += sim_kpis.encounters(answer, number, seed, v, entry.patient)
                    if len(waiting) >= sim_kpis.FLUSH:
                        batch, reports[doctor] = waiting, []
                        await sim_kpis.report(client, tally.kpi, kpi[0][doctor], doctor, kpi[1][doctor], batch)

        senders = [asyncio.create_task(sender(c)) for c in conns]
        for chunk in range(wid, math.ceil(count / CHUNK), workers):
            # The doctors' decisions draw from their own generator: the verification schedule stays as it was.
            decide = random.Random(f"{seed}:decide:{chunk}")
            for k, item in enumerate(_schedule(seed, chunk, count, len(entries), len(doctor_tokens), record_share,
                                               issuer)):
                await work.put((*item, chunk * CHUNK + k, decide.random(), decide.random()))
        for _ in senders:
            await work.put(None)
        await asyncio.gather(*senders)
        if kpi is not None:
            for doctor, batch in sorted(reports.items()):
                if batch:
                    await sim_kpis.report(conns[0], tally.kpi, kpi[0][doctor], doctor, kpi[1][doctor], batch)
        for c in conns:
            c.close()

    stop = threading.Event()

    def report() -> None:
        sent = 0
        while not stop.wait(0.25):
            now = done
            progress.put(("progress", wid, now - sent))
            sent = now

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        asyncio.run(run())
    finally:
        stop.set()
        reporter.join()
    progress.put(("done", wid, done, tally))


def _count(tally: Tally, entry: _Entry, form: str, answer: dict[str, Any]) -> None:
    verdict = answer["verdict"]
    recognition = answer.get("recognition") or {}
    decision = recognition.get("decision", "none")
    codes = frozenset(r["code"] for r in recognition.get("reasons", []))
    tally.verdicts[verdict] += 1
    tally.decisions[decision] += 1
    tally.reasons.update(codes)
    tally.forms[form] += 1
    s = tally.scenarios.setdefault(entry.scenario, {"verifications": Counter(), "verdicts": Counter(),
                                                    "decisions": Counter(), "reasons": Counter()})
    s["verifications"]["n"] += 1
    s["verdicts"][verdict] += 1
    s["decisions"][decision] += 1
    s["reasons"].update(codes)
    if decision == "recognise":
        tally.items_recognised += len(recognition.get("items") or [])
    if verdict != entry.verdict or codes != entry.reasons:
        tally.unexpected += 1
        if len(tally.examples) < 5:
            tally.examples.append({"result": entry.label, "form": form, "verdict": verdict,
                                   "failed_check": answer.get("failed_check"),
                                   "detail": next((c["detail"] for c in answer.get("checks", []) if not c["ok"]), None),
                                   "expected_verdict": entry.verdict, "reasons": sorted(codes),
                                   "expected_reasons": sorted(entry.reasons)})
