"""The table of a run: each figure's median over the rounds with its spread (the lowest and
highest round), ratios to the baselines measured in the same rounds, the server comparison,
and the CPU by component."""

from __future__ import annotations

import statistics
from typing import Any

from bench import breakdown
from bench.run import PACED, Results
from bench.servers import SERVERS

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
    ("submit_tracing_per_s", "submit_per_s", None,
     "single submit, tracing on (OTLP export) vs off"),
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
    values = {n: [r[n] for r in rounds if n in r] for n in names}
    medians = {n: statistics.median(v) for n, v in values.items()}
    spreads = {n: [min(v), max(v)] for n, v in values.items()}
    ratios = []
    for figure, baseline, target, meaning in [*RATIOS, *_server_ratios()]:
        per_round = _per_round(rounds, figure, baseline)
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
    return {"medians": medians, "spreads": spreads, "ratios": ratios, "limits": limits}


def _per_round(rounds: list[dict[str, float]], figure: str, baseline: str) -> list[float]:
    return [r[figure] / r[baseline] for r in rounds
            if figure in r and baseline in r and r[baseline]]


def _server_figures(server: str) -> tuple[str, str]:
    """The single-submit and hello-world figures under ``server``."""
    if server == SERVERS[0]:
        return "submit_per_s", "hello_post_per_s"
    return f"submit_{server}_per_s", f"hello_{server}_post_per_s"


def _server_ratios() -> list[tuple[str, str, float | None, str]]:
    """Under each other server: single submit against hello-world and send_task, and both
    against production's server (gunicorn gevent)."""
    found: list[tuple[str, str, float | None, str]] = []
    for server in SERVERS[1:]:
        submit, hello = _server_figures(server)
        found += [(submit, hello, None, f"{server}: single submit vs hello-world"),
                  (submit, "send_task_per_s", None, f"{server}: single submit vs send_task"),
                  (submit, "submit_per_s", None, f"{server}: single submit vs gevent's"),
                  (hello, "hello_post_per_s", None, f"{server}: hello-world vs gevent's")]
    return found


def table(summary: dict[str, Any], notes: dict[str, Any]) -> str:
    # "rounds": the lowest and highest per-round ratio, so a reader sees how much of a
    # difference between runs is the machine's own noise.
    lines = [f"{'figure':<58} {'ours':>10} {'baseline':>10} {'ratio':>7} {'target':>7}  met"
             f"  rounds"]
    server_ratios = {meaning for *_, meaning in _server_ratios()}
    for row in summary["ratios"]:
        if row["meaning"] in server_ratios:
            continue  # in the server table below
        target = f">={row['target']:g}" if row["target"] is not None else ""
        met = {True: "yes", False: "NO", None: ""}[row["met"]]
        lines.append(f"{row['meaning']:<58} {row['value']:>10.0f} "
                     f"{row['baseline_value']:>10.0f} {row['ratio']:>7.2f} {target:>7}  "
                     f"{met:<3}  {_spread(row['per_round'])}")
    medians, spreads = summary["medians"], summary["spreads"]
    for row in summary["limits"]:
        spread = spreads.get(row["figure"])
        lines.append(f"{row['meaning']:<58} {row['value']:>10.1f} {'':>10} {'':>7} "
                     f"{'<=' + format(row['limit'], 'g'):>7}  {'yes' if row['met'] else 'NO ':<3}"
                     f"  {_spread(spread, 1) if spread else ''}")
    limited = {figure for figure, _, _ in LIMITS}  # already in the table above
    latencies = (f"{run}_{figure}" for run in PACED
                 for figure in ("p50_ms", "p99_ms", "p999_ms", "paced_rate"))
    for name in latencies:
        if name in medians and name not in limited:
            lines.append(f"{name:<58} {medians[name]:>10.1f} {'':>10} {'':>7} {'':>7}  "
                         f"{'':<3}  {_spread(spreads[name], 1)}")
    lines += _servers(summary)
    lines += _reconciler(medians, spreads)
    if "batch_redis_cpu_machine_us" in medians and medians.get("send_task_per_s"):
        # At the target rate, the machine's cores give each message this much CPU time.
        budget = notes["cores"] * 1e6 / (BATCH_TARGET * medians["send_task_per_s"])
        parts = ", ".join(f"{name} {medians[f'batch_redis_cpu_{name}_us']:.0f}"
                          for name in ("gateway", "redis", "loadgen", "machine"))
        lines.append(f"batch (Redis) CPU us per message: {parts}; at {BATCH_TARGET:g}x "
                     f"send_task the {notes['cores']} cores allow {budget:.0f}")
    lines += _e2e_cpu(medians)
    lines += breakdown.table(notes.get("cpu_breakdown", []))
    rss = notes.get("rss_peak_mb", {})
    if "worker" in rss:
        lines.append(f"{'peak RSS of a worker process (MB)':<58} {rss['worker']:>10.1f}")
    soak = notes.get("soak")
    if soak:
        lines.append(f"{'soak: gateway RSS first/last tenth (MB)':<58} "
                     f"{soak['gateway_rss_first_tenth_mb']:>10.1f} "
                     f"{soak['gateway_rss_last_tenth_mb']:>10.1f}")
    return "\n".join(lines)


def _spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _servers(summary: dict[str, Any]) -> list[str]:
    """Single submit and hello-world under each server, in the same rounds: the rates, and
    per-round ratios (submit/hello, submit/send_task, and each against gevent's)."""
    medians = summary["medians"]
    ratios = {(r["figure"], r["baseline"]): r for r in summary["ratios"]}
    present = [s for s in SERVERS if _server_figures(s)[0] in medians]
    if len(present) < 2:
        return []
    lines = ["", "REST under each server (the WebSocket needs gevent): median (rounds)",
             f"  {'server':<16}{'submit/s':>10}{'hello/s':>10}{'submit/hello':>20}"
             f"{'submit/send_task':>20}{'submit vs gevent':>20}{'hello vs gevent':>20}"]
    for server in present:
        submit, hello = _server_figures(server)
        cells = [f"{medians[submit]:>10.0f}", f"{medians.get(hello, 0.0):>10.0f}"]
        for figure, baseline in ((submit, hello), (submit, "send_task_per_s"),
                                 (submit, "submit_per_s"), (hello, "hello_post_per_s")):
            row = ratios.get((figure, baseline))
            if figure == baseline:
                cells.append("1")
            else:
                cells.append(f"{row['ratio']:.2f} ({_spread(row['per_round'])})" if row else "")
        lines.append(f"  {server:<16}" + "".join(f"{c:>20}" if i > 1 else c
                                                 for i, c in enumerate(cells)))
    return lines


def _reconciler(medians: dict[str, float], spreads: dict[str, list[float]]) -> list[str]:
    if "reconciler_records" not in medians:
        return []
    return [f"reconciler survey: {medians['reconciler_records']:.0f} unfinished records, "
            f"{medians['reconciler_pass_cpu_ms']:.0f} ms CPU a pass "
            f"({_spread(spreads['reconciler_pass_cpu_ms'], 0)}); per record "
            f"{medians['reconciler_cpu_us_per_record']:.1f} us in the reconciler, "
            f"{medians['reconciler_redis_us_per_record']:.1f} us in Redis"]


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
