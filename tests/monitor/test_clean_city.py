"""Issue 19's "silent on a clean run": a node with 10,000 signed results across 20 hospitals, anchored on a v2
registry, and one full pass of a fresh monitor (a child process, with the dev CA as trust anchor) names no
problem and checks every batch. Runs ``scripts/bench_monitor.py`` once: the benchmark's own assertions (every
batch checked) and its ``problems`` figure are the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.anvil
REPO = Path(__file__).resolve().parents[2]


def test_a_clean_city_of_10000_results_is_silent() -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_monitor.py"), "--hospitals", "20",
                          "--results", "10000", "--batch", "100", "--runs", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert (figures["hospitals"], figures["results"], figures["batches"]) == (20, 10_000, 100)
    assert figures["registry_version"] == 2 and figures["problems"] == 0
