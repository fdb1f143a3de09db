"""scripts/core_speed.py: the probe's windows, the fast and slow rates and the correlation, on samples whose
answer is known; and a real probe thread that samples and stops."""

from __future__ import annotations

import threading

import pytest

from scripts.core_speed import SpeedProbe, probe_ms


def _probe(samples: list[tuple[float, float, int]]) -> SpeedProbe:
    probe = SpeedProbe(count=lambda: 0)
    probe.mark("run")
    probe.samples = samples
    return probe


def test_fast_and_slow_windows_are_told_apart() -> None:
    # 10 s windows: fast cores (10 ms) count 3,000 a window, slow ones (15 ms) 2,000.
    ms = [10, 10, 10, 15, 15, 15, 10, 10, 15, 15, 15, 10]
    samples, total = [], 0
    for i, m in enumerate(ms):
        if i:
            total += 3000 if (m + ms[i - 1]) / 2 == 10 else 2000 if (m + ms[i - 1]) / 2 == 15 else 2500
        samples.append((10.0 * i, float(m), total))
    out = _probe(samples).summary("run")
    assert out["samples"] == 12 and out["windows"] == 11
    assert (out["probe_ms_min"], out["probe_ms_median"], out["probe_ms_max"]) == (10, 12.5, 15)
    assert out["fast_probe_ms"] == 10 and out["fast_windows"] == 3  # the windows between two 10 ms samples
    assert out["fast_rate_per_s"] == 300.0
    assert out["rate_per_s"] == pytest.approx(total / 110, abs=0.1)
    assert out["slow_rate_per_s"] == pytest.approx((total - 9000) / 80, abs=0.1)
    assert out["rate_speed_r"] == pytest.approx(1.0, abs=0.05)  # these rates follow the cores exactly


def test_a_rate_that_ignores_the_cores_has_no_correlation() -> None:
    samples = [(10.0 * i, 10.0 + (i % 2) * 5, 2500 * i) for i in range(20)]  # same count in every window
    out = _probe(samples).summary("run")
    assert out["rate_per_s"] == 250.0
    assert out["rate_speed_r"] is None  # every window's rate is the same: no correlation to compute


def test_phases_split_the_samples() -> None:
    probe = SpeedProbe(count=lambda: 0)
    probe.samples = [(0.0, 10.0, 0), (1.0, 11.0, 0)]
    probe.mark("b")
    probe.samples += [(2.0, 20.0, 0), (3.0, 21.0, 0), (4.0, 22.0, 0)]
    assert [s[1] for s in probe.phase("b")] == [20.0, 21.0, 22.0]
    assert probe.summary()["samples"] == 5 and "rate_per_s" not in probe.summary()
    assert probe.summary("b")["probe_ms_median"] == 21.0
    assert probe.summary("never") == {"samples": 0}


def test_a_real_probe_samples_until_stopped() -> None:
    counter = [0]
    probe = SpeedProbe(every=0.01, count=lambda: counter[0]).start()
    probe.mark("work")
    done = threading.Event()
    while len(probe.samples) < 5 and not done.wait(0.01):
        counter[0] += 1
    probe.stop()
    n = len(probe.samples)
    assert n >= 5 and not probe._thread.is_alive()
    assert all(s[1] > 0 for s in probe.samples)
    assert probe.samples[-1][2] >= probe.samples[0][2]
    assert probe_ms(1000) > 0
