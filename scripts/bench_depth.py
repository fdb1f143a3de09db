"""What bounding JSON nesting before decoding costs (``mrledger.ledger.canonical.check_depth``). Not a test.

Usage:  python scripts/bench_depth.py [--records 1000] [--json]

Figures, each the median of ``--rounds`` timed runs in this process:

* ``submission_*``: a ``POST …/results`` body of ``--records`` records (the records of scripts/bench_api.py,
  as that benchmark sends them): the scan alone, ``json.loads`` alone, and ``parse_json`` whole (which
  runs the scan, the strict decode and its hooks). ``scan_share`` is scan / parse_json.
* ``receipt_*``: the same for one ``POST /v1/verify`` receipt body (the verification path, p99 < 10 ms).
* ``worst_ms_per_mib``: the slowest input found for the scan per MiB — nested arrays just under the limit
  (every pass of the peeling removes little, so the exact count runs over nearly all of it) — next to
  ``json.loads`` of the same bytes: the scan costs less than decoding what it lets through.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_api import record  # noqa: E402

from mrledger.ledger.canonical import MAX_JSON_DEPTH, check_depth, parse_json  # noqa: E402


def timed(fn: Callable[[], Any], rounds: int) -> float:
    """Median seconds of ``fn()`` over ``rounds`` runs."""
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = parser.parse_args()

    body = json.dumps({"records": [record("gz-001", i) for i in range(args.records)]}).encode()
    receipt = json.loads((ROOT / "tests/vectors/receipt/ok_anchored.json").read_text())["receipt"]
    verify_body = json.dumps({"receipt": receipt}).encode()
    out: dict[str, Any] = {"records": args.records, "submission_bytes": len(body)}
    for name, data, rounds in (("submission", body, args.rounds), ("receipt", verify_body, args.rounds * 20)):
        scan = timed(lambda data=data: check_depth(data), rounds)
        loads = timed(lambda data=data: json.loads(data), rounds)
        parse = timed(lambda data=data: parse_json(data), rounds)
        out[f"{name}_scan_us"] = round(scan * 1e6, 1)
        out[f"{name}_json_loads_us"] = round(loads * 1e6, 1)
        out[f"{name}_parse_json_us"] = round(parse * 1e6, 1)
        out[f"{name}_scan_share"] = round(scan / parse, 3)
    mountain = b"[" * (MAX_JSON_DEPTH - 2) + b"]" * (MAX_JSON_DEPTH - 2)
    worst = b"[" + b",".join([mountain] * (4 * 1024 * 1024 // len(mountain))) + b"]"
    mib = len(worst) / 2**20
    out["worst_scan_ms_per_mib"] = round(timed(lambda: check_depth(worst), 3) * 1e3 / mib, 1)
    out["worst_json_loads_ms_per_mib"] = round(timed(lambda: json.loads(worst), 3) * 1e3 / mib, 1)
    deep = b"[" * 80_000
    out["deep_80000_refused_us"] = round(timed(lambda: _refused(deep), args.rounds) * 1e6, 1)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:32} {value}")


def _refused(data: bytes) -> None:
    try:
        check_depth(data)
    except ValueError:
        return
    raise AssertionError("not refused")


if __name__ == "__main__":
    main()
