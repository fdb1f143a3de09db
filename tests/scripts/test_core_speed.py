"""scripts/core_speed.py: the probe's windows, the fast and slow rates and the correlation, on samples whose
answer is known; and a real probe thread that samples and stops."""

from __future__ import annotations

import threading

import pytest

from scripts.core_speed import SpeedProbe, probe_ms


def _probe(samples: list[tuple[float, float, int]], window: int = 2) -> SpeedProbe:
    probe = SpeedProbe(count=lambda: 0, window=window)
    probe.mark("run")
    probe.samples = samples
    return probe


def _samples(ms: list[float], per_window: int, fast: int = 3000, slow: int = 2000) -> list[tuple[float, float, int]]:
    """One sample a second; each window of ``per_window`` samples counts ``fast`` a second when its cores were
    fast (10 ms), ``slow`` when they were slow."""
    out, total = [], 0
    for i, m in enumerate(ms):
        if i and i % per_window == 0:
            total += per_window * (fast if ms[i - 1] == 10 else slow)
        out.append((float(i), m, total))
    return out


def test_fast_and_slow_windows_are_told_apart() -> None:
    # 2-sample windows: fast, fast, slow, fast, slow, slow, then the sample that closes the last window.
    ms = [10, 10, 10, 10, 15, 15, 10, 10, 15, 15, 15, 15, 10]
    out = _probe(_samples(ms, 2)).summary("run")
    assert out["samples"] == 13 and out["windows"] == 6
    assert (out["probe_ms_min"], out["probe_ms_median"], out["probe_ms_max"]) == (10, 10, 15)
    assert out["fast_probe_ms"] == 10 and out["fast_windows"] == 3
    assert out["fast_rate_per_s"] == 3000.0 and out["slow_rate_per_s"] == 2000.0
    assert out["rate_per_s"] == 2500.0
    assert out["rate_speed_r"] == pytest.approx(1.0)  # these rates follow the cores exactly


def test_a_window_is_as_fast_as_the_median_of_its_samples() -> None:
    """One odd sample does not make a window slow: its probe is the median of its three samples."""
    ms = [10, 10, 30, 10, 10, 10, 15, 15, 15, 10]  # windows of 3: fast (one odd sample), fast, slow
    out = _probe(_samples(ms, 3), window=3).summary("run")
    assert out["windows"] == 3 and out["fast_windows"] == 2
    assert out["probe_ms_max"] == 30


def test_a_rate_that_ignores_the_cores_has_no_correlation() -> None:
    samples = [(float(i), 10.0 + (i // 2 % 2) * 5, 250 * i) for i in range(21)]  # the same count every second
    out = _probe(samples).summary("run")
    assert out["rate_per_s"] == 250.0 and out["fast_windows"] == 5
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
    probe.mark("c")
    probe.mark("d")  # no sample between the two marks: c is empty, d runs to the end
    probe.samples.append((5.0, 30.0, 0))
    assert probe.phase("c") == [] and [s[1] for s in probe.phase("d")] == [30.0]
    assert [s[1] for s in probe.phase("b")] == [20.0, 21.0, 22.0]


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
