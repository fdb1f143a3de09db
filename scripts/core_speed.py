"""How fast the cores were while a benchmark ran: a fixed pure-Python loop, timed in its own CPU time every second,
beside the benchmark's own counter.

Why: this machine's two cores are shared with other tenants' work on the same physical cores, and that does not
show as steal time. During a 300,000-verification city replay on a freshly started PostgreSQL (stop 39), a
200,000-pass loop's CPU time swung between 9.5 and 15 ms within a minute, and the replay's decisions per 10 s
between 429 and 202 in step with it, with the processes' shares of the cores unchanged and steal under 1 %: 345.6/s
in the windows whose loop took <= 10.5 ms, 224.2/s where it took > 12.5 ms. Stop 38's unexplained slowdown (large
replays at ~8 ms of CPU a verification, 20,000-verification ones the same evening at ~6.4 ms) is what that looks
like when the runs compared are minutes apart. A figure is then a figure about the neighbours as much as about the node,
unless the run says how fast its cores were while it was taken: ``SpeedProbe.summary``.

The loop's CPU time (``time.thread_time``) does not count waiting for a core or for the GIL, only how long the
same instructions took on whatever core ran them: a slower figure is a slower core, not a busier machine. It is
not a normaliser — the node's work is heavier on memory than the loop and slowed ~2× where the loop slowed
1.5× — so runs report measured figures only: the probe's spread, and the rate in the windows whose cores were
as fast as the run's fastest (``fast_windows``), beside the rate over the whole run.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

#: The loop's size: ~1.7 ms of one of this machine's cores when they are fast (1.6-1.9 ms medians on quiet
#: minutes, 3-4 ms on busy ones; stop 39), well above the clock's resolution; at a sample a second the probe
#: costs under 0.4 % of a core.
LOOPS = 50_000
#: Samples per window: a window's probe is the median of its samples, so one sample that caught a core at an
#: odd moment does not make the window fast or slow (one sample per 5 s windows correlated poorly, stop 39).
WINDOW = 10
#: A window counts as "fast" when its probe is within this factor of the phase's fast probe: the tenth
#: percentile of its windows' probes (not the single fastest, which one lucky window would set).
FAST = 1.10


def probe_ms(loops: int = LOOPS) -> float:
    """CPU milliseconds of one pass of the fixed loop on this thread."""
    start = time.thread_time()
    s = 0
    for i in range(loops):
        s += i * i % 7
    return (time.thread_time() - start) * 1000


class SpeedProbe:
    """Samples ``probe_ms`` every ``every`` seconds on a daemon thread; with ``count`` (a callable returning the
    benchmark's running total, e.g. verifications answered) each sample also records the total, so that every
    ``window`` consecutive samples make a window of (rate, probe). ``mark`` names the start of a phase."""

    def __init__(self, every: float = 1.0, count: Callable[[], int] | None = None, window: int = WINDOW) -> None:
        self.every, self.count, self.window = every, count, window
        self.samples: list[tuple[float, float, int]] = []  # (monotonic time, probe ms, count)
        self.marks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speed-probe", daemon=True)

    def start(self) -> SpeedProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def mark(self, phase: str) -> None:
        """The samples from now on belong to ``phase`` (until the next mark)."""
        self.marks.pop(phase, None)  # marked again: it now ends where the marks made after this one begin
        self.marks[phase] = len(self.samples)

    def _run(self) -> None:
        while True:
            ms = probe_ms()
            self.samples.append((time.monotonic(), ms, self.count() if self.count is not None else 0))
            if self._stop.wait(self.every):
                return

    def phase(self, name: str) -> list[tuple[float, float, int]]:
        """The samples taken during ``name``: from its mark to the mark made after it (two marks made between the
        same two samples leave the first phase empty)."""
        names = list(self.marks)
        if name not in names:
            return []
        after = names.index(name) + 1
        end = self.marks[names[after]] if after < len(names) else len(self.samples)
        return self.samples[self.marks[name]:end]

    def summary(self, name: str | None = None) -> dict[str, Any]:
        """The probe's spread over the phase ``name`` (every sample without one). For a phase, with a counter,
        the rate in its windows of ``window`` samples as well: over all of them, over the fast ones (probe
        within ``FAST`` of the phase's fast probe) — the rate the benchmark kept while its cores were as fast as
        they got — and over the others; and how closely the windows' rates followed the cores' speed (Pearson's
        r between a window's rate and 1 / its probe)."""
        samples = self.samples if name is None else self.phase(name)
        if not samples:
            return {"samples": 0}
        ms = [s[1] for s in samples]
        out: dict[str, Any] = {"samples": len(ms), "probe_ms_min": round(min(ms), 2),
                               "probe_ms_median": round(statistics.median(ms), 2), "probe_ms_max": round(max(ms), 2)}
        if name is None or self.count is None:
            return out
        # (seconds, counted, probe): from one window's first sample to the next one's; its probe is the median of
        # its samples.
        starts = range(0, len(samples) - self.window, self.window)
        windows = [(samples[i + self.window][0] - samples[i][0], samples[i + self.window][2] - samples[i][2],
                    statistics.median(s[1] for s in samples[i:i + self.window])) for i in starts]
        if len(windows) < 2:
            return out
        probes = [w[2] for w in windows]
        reference = statistics.quantiles(probes, n=10)[0] if len(probes) >= 10 else min(probes)
        fast = [w[2] <= reference * FAST for w in windows]
        rates, speeds = [w[1] / w[0] for w in windows], [1 / w[2] for w in windows]
        out.update({
            "fast_probe_ms": round(reference, 2), "windows": len(windows), "fast_windows": sum(fast),
            "rate_per_s": _rate(windows),
            "fast_rate_per_s": _rate([w for w, f in zip(windows, fast, strict=True) if f]),
            "slow_rate_per_s": _rate([w for w, f in zip(windows, fast, strict=True) if not f]),
            "rate_speed_r": round(statistics.correlation(rates, speeds), 3)
            if len(set(rates)) > 1 and len(set(speeds)) > 1 else None,
        })
        return out


def _rate(windows: list[tuple[float, int, float]]) -> float | None:
    """Counted per second over ``windows`` (None for none)."""
    span = sum(w[0] for w in windows)
    return round(sum(w[1] for w in windows) / span, 1) if span else None


__all__ = ["FAST", "LOOPS", "SpeedProbe", "probe_ms"]
