"""Where the CPU of a single submit and of a worker's message goes, by component.

The total is each process's own CPU time (user + system, from /proc through psutil) over a
window of steady load, per request or message. The components divide that total by the
share of the process's samples each got over the same window (bench/profiler.py, a timer
on the process's CPU time), so the components and the unattributed rest ("other": stacks of
the standard library alone) add up to the measured total. ``sampled`` says how much of the
measured CPU the samples covered (samples × interval / CPU), a check of the sampler.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.profiler import INTERVAL, SEPARATOR, read_counts
from bench.stack import CpuMeter

Pids = Callable[[], list[int]]
#: Modules kept in the JSON per component.
TOP_MODULES = 5


@dataclass(frozen=True)
class Group:
    """One group of sampled processes (a gateway's workers, a worker's main process)."""

    total_us: float
    parts: dict[str, float]
    samples: int
    sampled: float
    #: The modules whose frames decided the most samples of each component, with µs.
    modules: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Breakdown:
    what: str
    units: int
    #: Units per second over the window (beside the unsampled figure: the sampler's cost).
    per_second: float
    groups: dict[str, Group]
    #: redis-server's CPU per unit over the same window (the server side of the Redis calls).
    redis_us: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Window:
    """The samples and CPU of groups of sampled processes, and of Redis, between ``start``
    and ``stop``."""

    def __init__(self, directory: Path, groups: dict[str, Pids], redis: Pids) -> None:
        self.directory = directory
        self.groups = groups
        self.meter = CpuMeter({**groups, "redis": redis})
        self._before: dict[str, Counter[str]] = {}
        self._started = 0.0

    def _counts(self) -> dict[str, Counter[str]]:
        return {name: read_counts(self.directory, pids()) for name, pids in self.groups.items()}

    def start(self) -> None:
        self.meter.start()
        self._before = self._counts()
        self._started = time.perf_counter()

    def stop(self, what: str, units: int) -> Breakdown:
        cpu = self.meter.stop()
        elapsed = time.perf_counter() - self._started
        after = self._counts()
        per = 1e6 / max(units, 1)
        groups = {}
        for name in self.groups:
            counts = after[name] - self._before.get(name, Counter())
            samples = counts.total()
            us = cpu[name] * per / samples if samples else 0.0  # per sample
            parts: Counter[str] = Counter()
            modules: dict[str, Counter[str]] = {}
            for key, n in counts.items():
                part, _, module = key.partition(SEPARATOR)
                parts[part] += n
                modules.setdefault(part, Counter())[module] += n
            groups[name] = Group(
                total_us=cpu[name] * per,
                parts={part: n * us for part, n in parts.most_common()},
                samples=samples,
                sampled=samples * INTERVAL / cpu[name] if cpu[name] else 0.0,
                modules={part: {m: n * us for m, n in found.most_common(TOP_MODULES)}
                         for part, found in modules.items()})
        return Breakdown(what, units, units / elapsed, groups, cpu["redis"] * per)


def table(breakdowns: list[dict[str, Any]]) -> list[str]:
    """µs of CPU per unit by component (rows) and process group (columns), with the
    measured total, the sum of the named components and the unattributed rest."""
    lines = []
    for item in breakdowns:
        groups: dict[str, dict[str, Any]] = item["groups"]
        names = list(groups)
        components = sorted({c for g in groups.values() for c in g["parts"]} - {"other"},
                            key=lambda c: -sum(g["parts"].get(c, 0.0) for g in groups.values()))
        width = max(12, *(len(n) for n in names))
        lines.append(f"\n{item['what']} ({item['units']} measured, "
                     f"{item['per_second']:.0f}/s under the sampler), CPU us:")
        lines.append(f"  {'component':<26}" + "".join(f"{n:>{width + 2}}" for n in names)
                     + f"{'all':>10}  mostly in")

        def row(label: str, values: list[float], width: int = width) -> str:
            return (f"  {label:<26}" + "".join(f"{v:>{width + 2}.0f}" for v in values)
                    + f"{sum(values):>10.0f}")

        for component in components:
            modules: Counter[str] = Counter()
            for g in groups.values():
                modules.update(g.get("modules", {}).get(component, {}))
            top = ", ".join(f"{m} {us:.0f}" for m, us in modules.most_common(2))
            lines.append(row(component, [g["parts"].get(component, 0.0)
                                         for g in groups.values()]) + f"  {top}")
        named = [sum(v for c, v in g["parts"].items() if c != "other") for g in groups.values()]
        lines.append(row("= sum of the components", named))
        lines.append(row("+ unattributed (other)", [g["parts"].get("other", 0.0)
                                                    for g in groups.values()]))
        lines.append(row("= measured (process CPU)", [g["total_us"] for g in groups.values()]))
        lines.append(f"  {'Redis server':<26}{'':>{(width + 2) * len(names)}}"
                     f"{item['redis_us']:>10.0f}")
        lines.append("  samples " + ", ".join(
            f"{n} {g['samples']} ({g['sampled']:.0%} of its CPU)" for n, g in groups.items()))
    return lines
