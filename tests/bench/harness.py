"""Benchmark harness: every result is a ratio against a baseline measured in the same process and run.

Absolute times on a 2-core shared machine are noise; ratios are what we track. Not part of the test command.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BenchRow:
    name: str
    measured_s: float
    baseline_s: float
    target: float  # the ratio must be <= target
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.measured_s / self.baseline_s if self.baseline_s > 0 else float("inf")

    @property
    def passed(self) -> bool:
        return self.ratio <= self.target and not self.extra.get("violations")


def best_of(*fns: Callable[[], Any], repeat: int = 5) -> tuple[float, ...]:
    """The fastest of several runs of each function (the least disturbed by the other tenant of the machine).
    The functions take turns, one run of each per round, so that a busy spell of the machine falls on all of
    them instead of on whichever was being timed during it."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, samples in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return tuple(min(samples) for samples in times)


def cpu_mark() -> tuple[int, int] | None:
    """The machine's stolen and total CPU time so far (``/proc/stat``, in clock ticks); None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if fields[:1] != ["cpu"] or len(fields) < 9:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


def stolen_since(mark: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time since ``mark`` that the hypervisor gave to another guest (steal): the
    cores this run was measured on were not there for it."""
    now = cpu_mark()
    if mark is None or now is None or now[1] <= mark[1]:
        return None
    return (now[0] - mark[0]) / (now[1] - mark[1])


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def machine() -> str:
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def render(rows: list[BenchRow]) -> str:
    head = "| benchmark | measured | baseline | ratio | target | result | notes |\n|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        # Two decimals, or three where two would print the target itself for a ratio just over or under it.
        ratio = f"{r.ratio:.2f}" if f"{r.ratio:.2f}" != f"{r.target:.2f}" else f"{r.ratio:.3f}"
        lines.append(
            f"| {r.name} | {r.measured_s:.3f} s | {r.baseline_s:.3f} s | {ratio}× | ≤ {r.target:g}× | "
            f"{'pass' if r.passed else 'FAIL'} | {r.notes} |"
        )
    return "\n".join(lines)


def write_results(rows: list[BenchRow], path: Path) -> None:
    payload = {
        "machine": machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [asdict(r) | {"ratio": r.ratio, "passed": r.passed} for r in rows],
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
