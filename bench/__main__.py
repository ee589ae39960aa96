"""``python -m bench [--smoke] [--soak SECONDS]``: run, print the table, write the JSON."""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.run import PACED, Plan, Results, Run
from integration.app import get_settings

#: The Redis batch figure's target ratio to send_task; the table also turns it into a CPU
#: budget per message.
BATCH_TARGET = 10.0
#: (figure, baseline, target ratio or None, what it means). The ratio is taken per round,
#: then the median over rounds is reported.
RATIOS: list[tuple[str, str, float | None, str]] = [
    ("submit_per_s", "send_task_per_s", 2.0, "single submit vs raw send_task"),
    ("submit_per_s", "hello_post_per_s", 0.6, "single submit vs Flask hello-world POST"),
    ("submit_per_s", "naive_post_per_s", None, "single submit vs naive pydantic+send_task"),
    ("submit_per_s", "guarded_post_per_s", None,
     "single submit vs hello-world behind JWT + Redis rate limit"),
    ("guarded_post_per_s", "hello_post_per_s", None,
     "  (hello-world behind JWT + Redis rate limit vs hello-world)"),
    ("guarded_post_per_s", "send_task_per_s", None,
     "  (hello-world behind JWT + Redis rate limit vs send_task)"),
    ("batch_redis_msgs_per_s", "send_task_per_s", BATCH_TARGET,
     "batch (Redis) vs raw send_task"),
    ("submit_replica_wait_per_s", "submit_per_s", None,
     "single submit, replica wait on (WAIT 1) vs off"),
    ("batch_redis_replica_wait_msgs_per_s", "batch_redis_msgs_per_s", None,
     "batch (Redis), replica wait on (WAIT 1) vs off"),
    ("batch_amqp_msgs_per_s", "kombu_batch_amqp_msgs_per_s", 1.0,
     "batch (RabbitMQ) vs kombu batched producer, confirms"),
    ("e2e_event_msgs_per_s", "e2e_raw_worker_msgs_per_s", 0.9,
     "end to end (event, task events on) vs raw no-op worker"),
    ("e2e_event_no_task_events_msgs_per_s", "e2e_raw_worker_msgs_per_s", None,
     "  (the same without task events, nobody watching)"),
    ("e2e_inline_consumer_msgs_per_s", "e2e_raw_worker_msgs_per_s", 0.7,
     "end to end with one consumer (inline) vs raw no-op worker"),
    ("e2e_consumer_msgs_per_s", "e2e_raw_worker_msgs_per_s", None,
     "  (the consumer delivered as a message of its own)"),
    ("e2e_event_2_workers_msgs_per_s", "e2e_raw_worker_msgs_per_s", None,
     "end to end (event), two worker instances vs raw no-op worker"),
]
#: (figure, limit, meaning): absolute limits.
LIMITS: list[tuple[str, float, str]] = [
    ("submit_p99_ms", 10.0, "p99 latency at half of peak (ms)"),
]
RSS_LIMIT_MB = 120.0
GROUPS = ("submit", "batch", "e2e")


def summarise(results: Results) -> dict[str, Any]:
    rounds = results.rounds
    names = sorted({name for r in rounds for name in r})
    medians = {n: statistics.median([r[n] for r in rounds if n in r]) for n in names}
    ratios = []
    for figure, baseline, target, meaning in RATIOS:
        per_round = [r[figure] / r[baseline] for r in rounds
                     if figure in r and baseline in r and r[baseline]]
        if not per_round:
            continue
        ratio = statistics.median(per_round)
        ratios.append({"figure": figure, "baseline": baseline, "meaning": meaning,
                       "value": medians[figure], "baseline_value": medians[baseline],
                       "ratio": ratio, "per_round": per_round, "target": target,
                       "met": None if target is None else ratio >= target})
    limits = [{"figure": f, "meaning": m, "value": medians[f], "limit": limit,
               "met": medians[f] <= limit} for f, limit, m in LIMITS if f in medians]
    rss = results.notes.get("rss_peak_mb", {})
    if "gateway" in rss:
        limits.append({"figure": "gateway_rss_peak_mb", "meaning": "peak RSS of a gateway "
                       "worker process (MB)", "value": rss["gateway"], "limit": RSS_LIMIT_MB,
                       "met": rss["gateway"] <= RSS_LIMIT_MB})
    return {"medians": medians, "ratios": ratios, "limits": limits}


def table(summary: dict[str, Any], notes: dict[str, Any]) -> str:
    # "rounds": the lowest and highest per-round ratio, so a reader sees how much of a
    # difference between runs is the machine's own noise.
    lines = [f"{'figure':<58} {'ours':>10} {'baseline':>10} {'ratio':>7} {'target':>7}  met"
             f"  rounds"]
    for row in summary["ratios"]:
        target = f">={row['target']:g}" if row["target"] is not None else ""
        met = {True: "yes", False: "NO", None: ""}[row["met"]]
        spread = f"{min(row['per_round']):.2f}-{max(row['per_round']):.2f}"
        lines.append(f"{row['meaning']:<58} {row['value']:>10.0f} "
                     f"{row['baseline_value']:>10.0f} {row['ratio']:>7.2f} {target:>7}  "
                     f"{met:<3}  {spread}")
    for row in summary["limits"]:
        lines.append(f"{row['meaning']:<58} {row['value']:>10.1f} {'':>10} {'':>7} "
                     f"{'<=' + format(row['limit'], 'g'):>7}  {'yes' if row['met'] else 'NO'}")
    limited = {figure for figure, _, _ in LIMITS}  # already in the table above
    latencies = (f"{run}_{figure}" for run in PACED
                 for figure in ("p50_ms", "p99_ms", "p999_ms", "paced_rate"))
    for name in latencies:
        if name in summary["medians"] and name not in limited:
            lines.append(f"{name:<58} {summary['medians'][name]:>10.1f}")
    medians = summary["medians"]
    if "batch_redis_cpu_machine_us" in medians and medians.get("send_task_per_s"):
        # At the target rate, the machine's cores give each message this much CPU time.
        budget = notes["cores"] * 1e6 / (BATCH_TARGET * medians["send_task_per_s"])
        parts = ", ".join(f"{name} {medians[f'batch_redis_cpu_{name}_us']:.0f}"
                          for name in ("gateway", "redis", "loadgen", "machine"))
        lines.append(f"batch (Redis) CPU us per message: {parts}; at {BATCH_TARGET:g}x "
                     f"send_task the {notes['cores']} cores allow {budget:.0f}")
    lines += _e2e_cpu(medians)
    rss = notes.get("rss_peak_mb", {})
    if "worker" in rss:
        lines.append(f"{'peak RSS of a worker process (MB)':<58} {rss['worker']:>10.1f}")
    soak = notes.get("soak")
    if soak:
        lines.append(f"{'soak: gateway RSS first/last tenth (MB)':<58} "
                     f"{soak['gateway_rss_first_tenth_mb']:>10.1f} "
                     f"{soak['gateway_rss_last_tenth_mb']:>10.1f}")
    return "\n".join(lines)


#: The parts of an end-to-end figure's CPU, in the order of a message's path.
E2E_PARTS = ("loadgen", "gateway", "redis", "worker_main", "worker_pool", "machine")


def _e2e_cpu(medians: dict[str, float]) -> list[str]:
    """µs of CPU per message of each part of the end-to-end figures (the parts add up to
    the machine's but for other processes), where a shortfall against the raw worker is."""
    lines = []
    for figure in ("e2e_raw", "e2e_event", "e2e_inline_consumer", "e2e_consumer"):
        parts = [f"{name} {medians[f'{figure}_cpu_{name}_us']:.0f}" for name in E2E_PARTS
                 if f"{figure}_cpu_{name}_us" in medians]
        if parts:
            lines.append(f"{figure} CPU us per message: {', '.join(parts)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="one tiny round (seconds): checks that the benchmark still runs")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=float, help="seconds per throughput figure")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="then submit at half of peak this long, watching gateway RSS")
    parser.add_argument("--out", default=".bench", help="folder of the JSON results")
    parser.add_argument("--only", action="append", choices=GROUPS, metavar="GROUP",
                        help="measure only this group of figures (repeatable): "
                             + ", ".join(GROUPS))
    args = parser.parse_args(argv)
    plan = Plan.smoke() if args.smoke else Plan()
    plan = replace(plan, soak_seconds=args.soak,
                   rounds=args.rounds or plan.rounds, seconds=args.seconds or plan.seconds,
                   groups=tuple(args.only or plan.groups))
    # SIGTERM (Ctrl-C's cousin from a supervisor or a test's timeout) still stops every
    # process the run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="integration-bench-") as workdir:
        results = Run(plan, get_settings(), Path(workdir)).execute()
    summary = summarise(results)
    print()
    print(table(summary, results.notes))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(started))
    path = out / f"results-{stamp}{'-smoke' if args.smoke else ''}.json"
    document = {"started": started, "seconds": round(time.time() - started, 1),
                "smoke": args.smoke, **results.notes, **summary, "rounds": results.rounds}
    path.write_text(json.dumps(document, indent=2, default=_finite))
    print(f"\nwritten to {path}")
    return 0


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


if __name__ == "__main__":
    sys.exit(main())
