"""City simulation: a regional mutual-recognition programme (Guangzhou's 270 institutions, Qingdao's 32
hospitals and 1.16 M retrievals) played against a REAL node, end to end. Not a test; a reproducible scenario.

Usage:  python scripts/simulate_city.py [--hospitals 12] [--results-per-hospital 200] [--verifications 2000]
        [--db postgresql+psycopg://postgres@127.0.0.1:5432/test] [--seed 1] [--json]

What happens, in order (a rich progress bar on stderr for each phase):

1. ``mrledger serve`` starts as a subprocess on a temp data dir and a free port, with its managed anvil: SQLite,
   or with ``--db`` a fresh PostgreSQL schema (``?options=-csearch_path%3D<schema>``, dropped afterwards).
2. The authority registers every hospital (``POST /v1/hospitals``) and grants eligibility per catalogue category
   (``PUT /v1/hospitals/{hid}/eligibility/{category}``). Hospitals have tiers: tertiary ones perform all six
   categories, secondary ones rarely MR, community centres no CT/MR. A hospital is eligible for a category it
   performs unless it failed that category's external quality assessment (``--eqa-fail``, 7 %), so most
   hospitals are eligible for most categories and a minority is not for some.
3. Each hospital's LIS/RIS submits its results through ``POST /v1/hospitals/{hid}/results`` in 1,000-record
   requests: clinical biochemistry, immunology and hematology by catalogue LOINC codes with UCUM units,
   reference ranges and plausible values (single tests and panels; a few tests outside the catalogue), and
   DX/CR, CT and MR imaging studies with modality and body part. Each result has one fate: current; amended
   (version 2, status ``corrected``, superseding 1); entered-in-error (version 2 revokes 1); or expired (issued
   so long ago that its catalogue window has passed). Corrections and revocations are sent after the
   originals, as a second pass, like a LIS correcting results later.
4. The sealer batches, the worker anchors; the run waits until the audit API
   (``GET /v1/audit/hospitals/{hid}/batches``) shows every submitted version in a confirmed batch, then mines
   12 empty blocks (a real chain keeps producing blocks; the managed anvil mines only on transactions).
5. A pool of ``--pool`` patient-held receipts is fetched from the node (each hospital's own token; version 1
   of half the amended results, i.e. a patient holding the superseded report). Doctors at OTHER hospitals
   then verify from a separate process pool (``--workers`` processes x ``--concurrency`` connections, closed
   loop): ``POST /v1/verify`` with the receipt form (no token: anyone holding a receipt may check it) or, for
   ``--record-form`` of them, the record form with the verifying doctor's token. Verifications draw receipts
   from the pool with replacement, so a receipt is verified many times, as a patient shows one result to
   several doctors.

Definitions of the printed numbers (``--json``):

* ``results``: result versions accepted (originals + corrections + revocations); ``result_ids``: distinct
  results. ``anchored``: versions in confirmed batches according to the audit API; must equal ``results``.
* ``verifications``: requests answered 200 (``errors`` counts the rest after 3 tries); each has a verdict.
* ``authentic``: verdict ``authentic``. ``recognised``: recognition decision ``recognise`` (which implies
  authentic). ``recognition_rate`` = recognised / authentic: of the genuine, current-or-superseded results
  shown to a doctor, the share the doctor may accept instead of repeating the test.
* ``reorders_avoided``: catalogue items (tests and exams) not repeated: per recognised verification, the
  number of items its recognition names (one for a single test, a study or the CBC panel item; one per test
  for a lipid or liver panel made of catalogue tests). Every recognised verification avoids at least one.
* ``verify_p99_ms``: 99th percentile of request latency (send to full response, closed loop, 1 % buckets).
  ``verify_rate_per_s``: verifications per second of the verification phase. ``wall_s``: the whole run,
  server start to shutdown. ``ingest_per_s``: versions accepted per second of the two submission passes.
  ``decide_p50_ms``/``decide_p99_ms``: the same for the decision that follows each verification (with
  ``--decisions``); a loop's time per verification is about the two together, so with ``concurrency`` (processes
  x connections) loops the rate is about concurrency / (verify + decide latency). ``api_processes``: the node's
  ``MRL_API_PROCESSES`` (``--api-processes``, default one per core: the production layout, docs/scaling.md).
* ``machine_busy``: the share of the machine's CPU (all cores, every process) busy during the verification
  phase; ``cpu_ms_per_verification``: those busy CPU-ms per verification (with its decision and encounter share:
  node, PostgreSQL, anvil and the generator together); ``cpu_bound_rate_per_s`` = cores / that: the rate at which
  this machine's CPU would be the limit. A run on a shared machine counts its neighbours too.
* ``core_speed``: how fast the cores were (scripts/core_speed.py: a fixed loop's CPU ms every second; more ms is
  a slower core — other tenants on the same physical cores, which steal time does not show). ``verify``: over the
  verification phase, with the verification rate in the 10-second windows whose cores were fast
  (``fast_rate_per_s``), in the others (``slow_rate_per_s``) and Pearson's r between a window's rate and its
  cores' speed (``rate_speed_r``); ``run``: the probe over the whole run. Compare two runs' rates only with their
  ``core_speed`` beside them.
* ``kpis`` (docs/kpis.md; doctors' behaviour in scripts/sim_kpis.py): ``retrieval_rate`` = retrieved /
  encounters the doctors' hospitals reported; ``recognition_rate`` = recognised / decisions on results the
  programme recognised (post-retrieval recognition rate); ``tests_avoided``: catalogue items of recognised
  results; ``money_saved``: their catalogue prices (CNY); ``matches_api``: true only if these four equal what
  ``GET /v1/kpis`` returns for the run's days, after every decision and encounter is in a confirmed batch.
  ``kpi_counts``: what was sent; ``decision_audit``: the audit job (``POST /v1/audit/decisions/jobs``, polled:
  KPI tables vs anchors).
* ``by_scenario``: what each kind of receipt got (current, amended-current, amended-superseded, revoked,
  expired, not-in-catalogue). ``unexpected``: verifications whose verdict or set of reasons differs from what
  the simulation itself predicts from the hospital's eligibility, the catalogue and the result's fate; 0 means
  the node decided every case as the programme's rules say.

Reproducibility: ``--seed`` fixes every random choice (hospitals, eligibility, categories, tests, values, fates,
the receipt pool, which receipt each verification uses, its form and its doctor's hospital; the verification
schedule is split into 1,000-request chunks with their own seeded generators, so the counts do not depend on
``--workers`` either). Salts are the node's and times are relative to the start of the run, so leaves and
receipts differ between runs, but every count (everything except timings, rates and latencies) is identical
for the same seed and arguments.

Memory: nothing grows with ``--verifications``. Records are generated per 1,000-record chunk from a seeded
generator (and generated again for the correction pass rather than kept); only the receipt pool (``--pool``
receipts) is held, and latencies go into a fixed histogram. ``--hospitals 32 --verifications 1160000``
replays Qingdao's 1.16 M retrievals in bounded memory; its wall time is dominated by the verification rate
this machine sustains (see the docstring of ``verify_worker``).

Modules: the city itself — hospitals, catalogue tests and studies, fates and what the rules should answer — is
``scripts/city_data.py``; the doctors' load processes and their counters are ``scripts/city_load.py``; this file
runs the node, the phases and the checks.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import zip_longest
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mrledger.node.settings import Settings  # noqa: E402
from scripts import sim_kpis  # noqa: E402
from scripts.bench_api import Server, stop_on_sigterm  # noqa: E402
from scripts.city_data import (  # noqa: E402
    CATEGORIES,
    CHUNK,
    FINAL_DEPTH,
    LOINC,
    SCENARIOS,
    Catalogue,
    Rates,
    expectation,
    make_chunk,
    plan_city,
)
from scripts.city_load import Tally, verify_worker  # noqa: E402
from scripts.core_speed import SpeedProbe  # noqa: E402

# -------------------------------------------------------------------------------- the run


def _progress(console: Console) -> Progress:
    # Redrawn twice a second, not rich's ten: the bars share the cores with the node under test (the parent drew
    # at 15 % of a core during the verifications).
    return Progress(TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
                    refresh_per_second=2)


class City:
    """One simulation run against one node; phases are methods so each can be timed."""

    def __init__(self, args: argparse.Namespace, server: Server, console: Console) -> None:
        self.args, self.server, self.console = args, server, console
        self.rates = Rates(args.amend_rate, args.revoke_rate, args.expire_rate, args.eqa_fail)
        self.hospitals = plan_city(args.seed, args.hospitals, args.eqa_fail)
        self.admin = (server.data_dir / "admin-token").read_text().strip()
        self.tokens: dict[str, str] = {}
        self.doctors: list[str] = []
        self.now = datetime.now(UTC)
        self.submitted: Counter[str] = Counter()
        #: Per hospital or event stream: (last seq, records) of its batches confirmed from the first (``_confirmed``).
        self._prefix: dict[str, tuple[int, int]] = {}
        self.fates: Counter[str] = Counter()
        self.categories: Counter[str] = Counter()
        self.phases: dict[str, float] = {}
        #: Verifications answered so far (read by the speed probe's thread: windows of rate against core speed).
        self.answered = 0
        #: The machine's (busy, total) CPU seconds when the verifications began and ended (``_machine_cpu``).
        self.cpu: tuple[tuple[float, float] | None, tuple[float, float] | None] = (None, None)
        self.catalogue = Catalogue({}, {})
        self.prices: dict[str, int] = {}
        self.pool_meta: dict[tuple[int, int], dict[str, Any]] = {}
        self.client = httpx.Client(base_url=server.api, timeout=120)

    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def register(self, db_url: str) -> None:
        """Hospitals and eligibility through the API (admin token); tokens in the node's database."""
        cat = self.client.get("/catalogue").raise_for_status().json()
        self.prices = sim_kpis.prices(cat)
        self.catalogue = Catalogue(
            {i["code"]: (i["category"], i["window_days"]) for i in cat["items"] if i["system"] == LOINC},
            {i["code"]: (i["category"], i["window_days"]) for i in cat["items"] if i["system"] != LOINC})
        grants = sum(len(h.eligible) for h in self.hospitals)
        with _progress(self.console) as bar:
            task = bar.add_task("register hospitals", total=len(self.hospitals))
            for h in self.hospitals:
                r = self.client.post("/hospitals", json={"id": h.id, "name": h.name}, headers=self._admin())
                if r.status_code != 201:
                    raise SystemExit(f"cannot register {h.id}: {r.status_code} {r.text[:300]}")
                bar.advance(task)
            task = bar.add_task("grant eligibility", total=grants)
            for h in self.hospitals:
                for c in sorted(h.eligible):
                    r = self.client.put(f"/hospitals/{h.id}/eligibility/{c}", headers=self._admin(),
                                        json={"reference": f"EQA-{self.now.year}-{h.id}-{c}"})
                    if r.status_code != 200:
                        raise SystemExit(f"cannot grant {h.id} {c}: {r.status_code} {r.text[:300]}")
                    bar.advance(task)
        # `mrledger token create` costs a process start (~2 s) per token; 270 hospitals would spend minutes on
        # it, so hospital and doctor tokens are made in-process exactly as that command makes them. The
        # auditor's goes through the CLI (bench_api's helper) so that path is exercised too.
        from mrledger.store import Store
        from mrledger.store.access import Access

        store = Store.open(db_url, master_key=self.server.data_dir / "master.key")  # the node's, made by serve
        try:
            access = Access(store)
            self.tokens = {h.id: access.create_token(f"hospital:{h.id}", "simulated LIS/RIS upload", self.now)
                           for h in self.hospitals}
            # Affiliated doctors (doctor:<hid>): their decisions count for their hospital (docs/kpis.md).
            self.doctors = [access.create_token(f"doctor:{h.id}", f"simulated doctor at {h.id}", self.now)
                            for h in self.hospitals]
        finally:
            store.engine.dispose()
        self.auditor = self.server.token("auditor")

    def _post(self, local: threading.local, hid: str, records: list[dict[str, Any]]) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=self.server.api, timeout=300)
        body = json.dumps({"records": records}, separators=(",", ":")).encode()
        for attempt in range(3):
            try:
                r = client.post(f"/hospitals/{hid}/results", content=body,
                                headers={"Authorization": f"Bearer {self.tokens[hid]}",
                                         "content-type": "application/json"})
            except httpx.TransportError:
                time.sleep(1 + attempt)  # submission is idempotent: resending is safe
                continue
            if r.status_code != 202:
                raise SystemExit(f"submission to {hid} failed: {r.status_code} {r.text[:300]}")
            answer = r.json()
            return int(answer["accepted"]) + int(answer["duplicates"])
        raise SystemExit(f"submission to {hid} failed three times")

    def ingest(self, pool_index: dict[tuple[int, int], int]) -> None:
        """Originals, then corrections and revocations, each hospital in 1,000-record requests interleaved
        across hospitals (many LIS uploading at once)."""
        per = self.args.results_per_hospital
        chunks = math.ceil(per / CHUNK)
        local = threading.local()
        lock = threading.Lock()
        corrections: dict[tuple[int, int], int] = {}

        def originals(job: tuple[int, int]) -> int:
            h, chunk = job
            hospital = self.hospitals[h]
            results = make_chunk(self.args.seed, hospital, chunk, per, self.now, self.catalogue, self.rates)
            accepted = self._post(local, hospital.id, [r.v1 for r in results])
            with lock:
                self.submitted[hospital.id] += accepted
                for r in results:
                    self.fates[r.fate] += 1
                    self.categories[r.category] += 1
                    if (h, r.index) in pool_index:
                        version = 2 if r.fate == "amended" and pool_index[(h, r.index)] % 2 else 1
                        scenario, verdict, reasons = expectation(r, version, hospital)
                        self.pool_meta[(h, r.index)] = {
                            "hospital_index": h, "result_id": r.v1["result_id"], "version": version,
                            "scenario": scenario, "verdict": verdict, "reasons": sorted(reasons)}
                n2 = sum(r.v2 is not None for r in results)
                if n2:
                    corrections[job] = n2
            return len(results)

        def amendments(job: tuple[int, int]) -> int:
            h, chunk = job
            hospital = self.hospitals[h]
            results = make_chunk(self.args.seed, hospital, chunk, per, self.now, self.catalogue, self.rates)
            v2 = [r.v2 for r in results if r.v2 is not None]
            accepted = self._post(local, hospital.id, v2)
            with lock:
                self.submitted[hospital.id] += accepted
            return len(v2)

        jobs = [job for row in zip_longest(*[[(h, c) for c in range(chunks)] for h in range(len(self.hospitals))])
                for job in row if job is not None]
        t0 = time.perf_counter()
        with _progress(self.console) as bar, ThreadPoolExecutor(self.args.ingest_clients) as pool:
            task = bar.add_task("submit results", total=per * len(self.hospitals))
            for n in pool.map(originals, jobs):
                bar.advance(task, n)
            second = sorted(corrections, key=lambda j: (j[1], j[0]))
            task = bar.add_task("submit corrections", total=sum(corrections.values()))
            for n in pool.map(amendments, second):
                bar.advance(task, n)
        self.phases["ingest"] = time.perf_counter() - t0

    def _confirmed(self, hid: str) -> int:
        """Records of ``hid`` (a hospital or an event stream) in confirmed batches. Read from the first batch after
        the stream's confirmed prefix seen so far (``_prefix``: its last seq and records), not from its first batch:
        a confirmed batch stays confirmed on the replay's chain, which nobody reorganises. Paging every stream from
        seq 1 on every poll made the poll the slow part of "anchor decisions" at city size (46 s after the 1.16 M
        replay's verifications, with ~1,000 batches a stream re-read twice a second, against ~5 s at 20,000)."""
        after, anchored = self._prefix.get(hid, (0, 0))
        prefix = True
        while True:
            r = self.client.get(f"/audit/hospitals/{hid}/batches", params={"after_seq": after, "limit": 1000},
                                headers={"Authorization": f"Bearer {self.auditor}"}).raise_for_status().json()
            for b in r["batches"]:
                if b["anchor_status"] != "confirmed":
                    prefix = False
                    continue
                anchored += int(b["size"])
                if prefix:  # every batch so far confirmed: the count is the prefix's
                    self._prefix[hid] = (int(b["seq"]), anchored)
            if r["next_after_seq"] is None:
                return anchored
            after = r["next_after_seq"]

    def wait_anchored(self, timeout: float) -> int:
        """Poll the audit API until every hospital's submitted versions sit in confirmed batches; the count."""
        anchored: dict[str, int] = {}
        total = sum(self.submitted.values())
        deadline = time.monotonic() + timeout
        with _progress(self.console) as bar:
            task = bar.add_task("seal and anchor", total=total)
            while True:
                for h in self.hospitals:
                    if anchored.get(h.id, -1) < self.submitted[h.id]:
                        anchored[h.id] = self._confirmed(h.id)
                bar.update(task, completed=sum(anchored.values()))
                if all(anchored[h.id] >= self.submitted[h.id] for h in self.hospitals):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"anchoring incomplete after {timeout:.0f} s: {sum(anchored.values())} of {total}")
                time.sleep(0.5)
        rpc = json.loads((self.server.data_dir / "serve.json").read_text())["rpc_url"]
        httpx.post(rpc, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": [hex(FINAL_DEPTH)]},
                   timeout=30).raise_for_status()
        time.sleep(1.0)  # the node caches the chain head for 0.5 s
        return sum(anchored.values())

    def fetch_pool(self, path: Path) -> int:
        """The patient-held receipts, written to ``path`` (JSON lines) for the verification processes."""
        local = threading.local()

        def get(key: tuple[int, int]) -> str:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=self.server.api, timeout=60)
            meta = self.pool_meta[key]
            hid = self.hospitals[meta["hospital_index"]].id
            r = client.get(f"/hospitals/{hid}/results/{meta['result_id']}/receipt",
                           params={"version": meta["version"]}, headers={"Authorization": f"Bearer {self.tokens[hid]}"})
            if r.status_code != 200:
                raise SystemExit(f"receipt {hid}/{meta['result_id']}: {r.status_code} {r.text[:300]}")
            return json.dumps({**meta, "receipt": r.json()}, separators=(",", ":"))

        keys = sorted(self.pool_meta)
        with _progress(self.console) as bar, ThreadPoolExecutor(4) as pool, open(path, "w") as out:
            task = bar.add_task("fetch receipts", total=len(keys))
            for line in pool.map(get, keys):
                out.write(line + "\n")
                bar.advance(task)
        return len(keys)

    def _warm_up(self, path: Path) -> None:
        """One uncounted verification of each form, one after the other, before the load starts. The node
        caches the chain head and, while one request refreshes it, lets concurrent ones use the old number
        however old it is: after the idle minutes of ingest the first burst of record-form verifications
        saw a head from before the anchors and answered ``pending`` (0 confirmations) for confirmed results.
        A node in service is never idle that long; the warm-up keeps the counts reproducible."""
        with open(path) as handle:
            receipt = json.loads(handle.readline())["receipt"]
        rec = receipt["record"]
        self.client.post("/verify", json={"receipt": receipt}).raise_for_status()
        self.client.post("/verify", json={"hospital_id": rec["hospital_id"], "result_id": rec["result_id"],
                                          "record": rec},
                         headers={"Authorization": f"Bearer {self.doctors[0]}"}).raise_for_status()

    def check_kpis(self, k: sim_kpis.KpiTally, timeout: float) -> dict[str, Any]:
        """Once every decision and encounter is anchored (the event streams' batches confirmed), compare the
        simulation's own figures with ``GET /v1/kpis`` for the run's days and run the audit check."""
        streams = {f"{self.hospitals[h].id}.events": n for h, n in k.records.items()}
        deadline = time.monotonic() + timeout
        with _progress(self.console) as bar:
            task = bar.add_task("anchor decisions", total=sum(streams.values()))
            done = dict.fromkeys(streams, -1)
            while True:
                done.update({s: self._confirmed(s) for s, n in streams.items() if done[s] < n})
                bar.update(task, completed=sum(done.values()))
                if all(done[s] >= n for s, n in streams.items()):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"decisions not anchored after {timeout:.0f} s: {done} of {streams}")
                time.sleep(0.5)
        auditor = {"Authorization": f"Bearer {self.auditor}"}
        period = {"from": self.now.date().isoformat(), "to": datetime.now(UTC).date().isoformat()}
        api = self.client.get("/kpis", params=period, headers=auditor).raise_for_status().json()
        mine = sim_kpis.figures(k)
        audit = self.audit_job(auditor, timeout)
        return {
            "kpis": {**mine, "matches_api": sim_kpis.matches(mine, api)},
            "kpi_counts": {"decisions": k.decisions, "recognisable": k.recognisable, "recognised": k.recognised,
                           "reordered": k.reordered, "reorder_reasons": dict(sorted(k.reasons.items())),
                           "encounters": k.encounters, "retrieved": k.retrieved,
                           "anchored_records": api["sources"]["confirmed"], "errors": k.errors,
                           "error_examples": k.error_examples},
            "decision_audit": {"ok": audit["ok"], "records": audit["checked_records"],
                               "problems": audit["problem_count"],
                               "chain_checked": all(x["chain_checked"] for x in audit["streams"])},
        }

    def audit_job(self, auditor: dict[str, str], timeout: float) -> dict[str, Any]:
        """The KPI audit as a job (``POST /v1/audit/decisions/jobs``, docs/kpis.md §6): started (or, if one runs
        already, that one), polled until done, with a progress bar; its final state."""
        r = self.client.post("/audit/decisions/jobs", headers=auditor)
        job_id = r.json()["job_id"] if r.status_code == 409 else r.raise_for_status().json()["id"]
        deadline = time.monotonic() + timeout
        with _progress(self.console) as bar:
            task = bar.add_task("audit decisions", total=None)
            while True:
                job = self.client.get(f"/audit/decisions/jobs/{job_id}", headers=auditor).raise_for_status().json()
                bar.update(task, total=job["progress"]["records_total"], completed=job["progress"]["records_checked"])
                if job["state"] == "done":
                    return dict(job)
                if job["state"] != "running":
                    raise SystemExit(f"audit job {job_id} {job['state']}: {job['error']}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"audit job {job_id} not done after {timeout:.0f} s: {job['progress']}")
                time.sleep(0.5)

    def verify(self, path: Path) -> Tally:
        """Doctors verify from ``--workers`` processes; the parent only draws the progress bar and merges."""
        ctx = mp.get_context("spawn")
        progress: Any = ctx.Queue()
        workers = max(1, min(self.args.workers, math.ceil(self.args.verifications / CHUNK)))
        kpi = ([h.id for h in self.hospitals], [self.tokens[h.id] for h in self.hospitals], self.prices) \
            if self.args.decisions else None
        procs = [ctx.Process(target=verify_worker, daemon=True, args=(
            w, workers, self.server.api, str(path), self.doctors, self.args.seed, self.args.verifications,
            self.args.concurrency, self.args.record_form, progress, kpi)) for w in range(workers)]
        self._warm_up(path)
        tally = Tally()
        finished = 0
        before = _machine_cpu()
        with _progress(self.console) as bar:
            task = bar.add_task("doctors verify", total=self.args.verifications)
            for p in procs:
                p.start()
            while finished < workers:
                try:
                    msg = progress.get(timeout=1.0)
                except queue.Empty:
                    if any(p.exitcode not in (None, 0) for p in procs):
                        raise SystemExit("a verification process failed") from None
                    continue
                if msg[0] == "progress":
                    bar.advance(task, msg[2])
                    self.answered += msg[2]
                else:
                    finished += 1
                    tally.merge(msg[3])
            bar.update(task, completed=self.args.verifications)
        self.cpu = (before, _machine_cpu())
        for p in procs:
            p.join()
        return tally


def _machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux ``/proc/stat``), or None.

    Why the whole machine: the node is several processes (API, sealer and anchoring, anvil) and PostgreSQL's
    backends, and the generator runs beside them; what one verification with its decision costs all of them
    together is what bounds the rate on these cores (``cpu_ms_per_verification``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


def _pg_schema(url: str) -> tuple[str, str]:
    """A fresh schema in the PostgreSQL at ``url`` and the URL that puts the node in it (tests/conftest.py)."""
    from sqlalchemy import create_engine, text

    schema = f"sim_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return schema, f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def _drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def simulate(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    start = time.perf_counter()
    city: City | None = None
    # How fast the cores were, beside how many verifications were answered (scripts/core_speed.py): on this
    # shared machine a rate is a figure about the neighbours too unless the run says so.
    probe = SpeedProbe(count=lambda: city.answered if city is not None else 0).start()
    tmp = Path(tempfile.mkdtemp(prefix="mrl-city-"))
    server = Server(tmp / "data", args.batch_interval, api_processes=args.api_processes, anchor_every=args.anchor_every)
    if args.api_threads is not None:
        server.env["MRL_API_THREADS"] = str(args.api_threads)
    # The simulated doctors of a whole city verify receipts anonymously from this one address, closed loop:
    # the per-address limit of anonymous verification is switched off here, not in the node's defaults.
    server.env["MRL_VERIFY_RATE_LIMIT"] = "0"
    schema = None
    db_url = f"sqlite:///{(tmp / 'data' / 'mrledger.db').resolve()}"
    if args.db:
        schema, db_url = _pg_schema(args.db)
        server.env["MRL_DATABASE_URL"] = db_url
        # A node on PostgreSQL must be given the region's key (docs/kpis.md §4): a fresh one for this run, in a
        # file beside the data dir (so a node can be started again on what --keep keeps).
        regional = tmp / "regional-key"
        regional.write_text(uuid.uuid4().hex * 2)
        regional.chmod(0o600)
        server.env["MRL_REGIONAL_KEY_FILE"] = str(regional)
    try:
        t = time.perf_counter()
        with console.status("starting mrledger serve (API, sealer, worker, anvil)"):
            server.start()
        city = City(args, server, console)
        city.phases["start"] = time.perf_counter() - t
        t = time.perf_counter()
        city.register(db_url)
        city.phases["register"] = time.perf_counter() - t
        total = args.hospitals * args.results_per_hospital
        rng = random.Random(f"{args.seed}:pool")
        picks = rng.sample(range(total), min(args.pool, total))
        per = args.results_per_hospital
        city.ingest({(p // per, p % per): n for n, p in enumerate(picks)})
        t = time.perf_counter()
        anchored = city.wait_anchored(timeout=600 + total / 50)
        city.phases["anchor"] = time.perf_counter() - t
        t = time.perf_counter()
        pool = city.fetch_pool(tmp / "pool.jsonl")
        city.phases["receipts"] = time.perf_counter() - t
        t = time.perf_counter()
        probe.mark("verify")
        tally = city.verify(tmp / "pool.jsonl")
        probe.mark("after")
        city.phases["verify"] = time.perf_counter() - t
        kpis: dict[str, Any] | None = None
        if args.decisions:
            t = time.perf_counter()
            # The audit job checks two records per verification (decision, encounter) at >= 1,000 records/s
            # on the slowest day measured here (docs/scaling.md): 300 s plus that, so a full replay can finish.
            kpis = city.check_kpis(tally.kpi, timeout=300 + 2 * args.verifications / 1000)
            city.phases["kpis"] = time.perf_counter() - t
    finally:
        probe.stop()
        code = server.stop()
        if schema is not None and args.db and not args.keep:
            _drop_schema(args.db, schema)
        if args.keep:  # the node can be started again on both: MRL_DATA_DIR=<tmp>/data, MRL_DATABASE_URL=<url>,
            # MRL_REGIONAL_KEY_FILE=<tmp>/regional-key
            console.print(f"kept {tmp}" + (f" and the schema {schema} ({db_url})" if schema is not None else ""))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code not in (0, None):
        console.print(f"[yellow]serve exited with {code}")
    verified = sum(tally.verdicts.values())
    cpu: dict[str, Any] = {}
    before, after = city.cpu
    if before is not None and after is not None and verified and after[1] > before[1]:
        busy = after[0] - before[0]
        per = busy / verified * 1000
        cpu = {"machine_busy": round(busy / (after[1] - before[1]), 3), "cpu_ms_per_verification": round(per, 2),
               "cpu_bound_rate_per_s": round((os.cpu_count() or 1) * 1000 / per, 1)}
    authentic, recognised = tally.verdicts["authentic"], tally.decisions["recognise"]
    results = sum(city.submitted.values())
    scenarios = {name: {"verifications": c["verifications"]["n"], "verdicts": dict(sorted(c["verdicts"].items())),
                        "decisions": dict(sorted(c["decisions"].items())),
                        "reasons": dict(sorted(c["reasons"].items()))}
                 for name, c in sorted(tally.scenarios.items(), key=lambda kv: SCENARIOS.index(kv[0]))}
    return {
        "hospitals": args.hospitals, "results": results, "anchored": anchored, "verifications": verified,
        "authentic": authentic, "recognised": recognised,
        "recognition_rate": round(recognised / authentic, 4) if authentic else None,
        "reorders_avoided": tally.items_recognised, "verify_p99_ms": tally.latency.quantile(0.99),
        "wall_s": round(time.perf_counter() - start, 1),
        "verify_p50_ms": tally.latency.quantile(0.50),
        "decide_p50_ms": tally.decide_latency.quantile(0.50), "decide_p99_ms": tally.decide_latency.quantile(0.99),
        "verify_rate_per_s":
            round(verified / city.phases["verify"], 1) if city.phases["verify"] else None,
        "ingest_per_s": round(results / city.phases["ingest"], 1), **cpu,
        "result_ids": total, "fates": dict(sorted(city.fates.items())),
        "categories": {c: city.categories[c] for c in CATEGORIES},
        "eligibility": {"grants": sum(len(h.eligible) for h in city.hospitals),
                        "performed_not_eligible": sum(len(set(h.performs) - h.eligible) for h in city.hospitals),
                        "hospitals_not_eligible_somewhere": sum(bool(set(h.performs) - h.eligible)
                                                                for h in city.hospitals)},
        "pool": pool, "verdicts": dict(sorted(tally.verdicts.items())),
        "decisions": dict(sorted(tally.decisions.items())), "reasons": dict(sorted(tally.reasons.items())),
        "forms": dict(sorted(tally.forms.items())), "by_scenario": scenarios,
        **(kpis or {}),
        "unexpected": tally.unexpected, "unexpected_examples": tally.examples,
        "errors": tally.errors, "error_examples": tally.error_examples,
        "phases_s": {k: round(v, 1) for k, v in city.phases.items()},
        "database": "postgresql" if args.db else "sqlite", "seed": args.seed, "cores": os.cpu_count(),
        "api_processes": args.api_processes, "concurrency": args.workers * args.concurrency,
        "core_speed": {"verify": probe.summary("verify"), "run": probe.summary()},
        "serve_exit": code,
    }


def _table(result: dict[str, Any]) -> Table:
    table = Table(title="City simulation", show_header=True)
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, dict | list):
            value = json.dumps(value) if len(json.dumps(value)) < 100 else json.dumps(value, indent=1)
        table.add_row(key, str(value))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--hospitals", type=int, default=12)
    ap.add_argument("--results-per-hospital", type=int, default=200)
    ap.add_argument("--verifications", type=int, default=2000)
    ap.add_argument("--db", default=None, help="PostgreSQL URL (a fresh schema is created and dropped); "
                                               "default: SQLite in the temp data dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--pool", type=int, default=2000, help="patient-held receipts fetched and verified repeatedly")
    ap.add_argument("--record-form", type=float, default=0.2, help="share of verifications by the record form")
    ap.add_argument("--amend-rate", type=float, default=0.03)
    ap.add_argument("--revoke-rate", type=float, default=0.01)
    ap.add_argument("--expire-rate", type=float, default=0.12)
    ap.add_argument("--eqa-fail", type=float, default=0.07, help="chance a hospital is not eligible for a "
                                                                 "category it performs")
    ap.add_argument("--workers", type=int, default=2, help="verification processes")
    ap.add_argument("--concurrency", type=int, default=8, help="connections per verification process")
    ap.add_argument("--ingest-clients", type=int, default=4)
    ap.add_argument("--batch-interval", type=float, default=Settings.model_fields["batch_interval"].default,
                    help="MRL_BATCH_INTERVAL of the node (default: the node's own)")
    ap.add_argument("--anchor-every", type=float, default=None,
                    help="MRL_ANCHOR_EVERY of the node (default: the node's own)")
    ap.add_argument("--api-processes", type=int, default=os.cpu_count() or 1,
                    help="MRL_API_PROCESSES of the node: one per core, the production layout (docs/scaling.md)")
    ap.add_argument("--api-threads", type=int, default=None, help="MRL_API_THREADS of the node (default: its own)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir (and the PostgreSQL schema)")
    ap.add_argument("--decisions", action=argparse.BooleanOptionalAction, default=True,
                    help="doctors record a decision and hospitals report the encounter after each verification "
                         "(scripts/sim_kpis.py); the JSON gets kpis, kpi_counts and decision_audit")
    args = ap.parse_args()
    stop_on_sigterm()
    if args.hospitals < 2:
        ap.error("--hospitals must be at least 2 (doctors verify other hospitals' results)")
    if min(args.results_per_hospital, args.verifications, args.pool) < 1:
        ap.error("--results-per-hospital, --verifications and --pool must be positive")
    if args.amend_rate + args.revoke_rate + args.expire_rate > 1:
        ap.error("the fate rates add up to more than 1")
    console = Console(stderr=True)
    result = simulate(args, console)
    if args.json:
        print(json.dumps(result))
    else:
        Console().print(_table(result))


if __name__ == "__main__":
    main()
