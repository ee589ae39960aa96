"""``python -m bench --smoke``: the benchmark still runs end to end and writes its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


# Starting four gunicorn servers and three Celery workers dominates: about 40 s on two idle
# cores, more when the machine is busy.
@pytest.mark.timeout(300)
def test_the_benchmark_runs_in_smoke_mode_and_writes_its_json(tmp_path: Path) -> None:
    """One tiny round measures every figure and writes the table's JSON (so it cannot rot)."""
    # The benchmark starts its own Redis and configures its own processes: nothing of the
    # test session's configuration may leak into them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    run = subprocess.Popen([sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        stdout, stderr = run.communicate(timeout=240)
    finally:
        if run.poll() is None:  # timed out (here or pytest-timeout) or interrupted
            run.terminate()  # SIGTERM: the benchmark stops what it started
            run.wait(60)
    assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
    [written] = tmp_path.glob("results-*-smoke.json")
    document = json.loads(written.read_text())
    figures = document["rounds"][0]
    for name in ("send_task_per_s", "hello_post_per_s", "naive_post_per_s", "submit_per_s",
                 "submit_p99_ms", "hello_at_ours_p99_ms", "guarded_at_ours_p99_ms",
                 "batch_redis_msgs_per_s",
                 "e2e_raw_worker_msgs_per_s", "e2e_event_msgs_per_s",
                 "e2e_consumer_msgs_per_s", "e2e_inline_consumer_msgs_per_s",
                 "batch_redis_cpu_gateway_us", "batch_redis_cpu_redis_us",
                 "reconciler_records", "reconciler_pass_cpu_ms"):
        assert figures[name] > 0, name
    # The whole machine's CPU per batched message is measured too. (How it compares with the
    # gateway's and Redis's is a figure for a full round on a quiet machine: a smoke round's
    # few messages, counted in clock ticks beside other processes, cannot tell.)
    assert figures["batch_redis_cpu_machine_us"] > 0
    assert {r["baseline"] for r in document["ratios"]} >= {"send_task_per_s",
                                                           "hello_post_per_s"}
    assert document["rss_peak_mb"]["gateway"] > 0
    # What was measured: the code, the machine, the versions.
    if (ROOT / ".git").exists():
        assert len(document["commit"]) == 40 and isinstance(document["dirty"], bool)
    assert document["machine"]["cores"] >= 1 and document["machine"]["kernel"]
    assert document["versions"]["celery"] and document["versions"]["redis-server"]
    assert document["versions"]["gunicorn"] and document["versions"]["gevent"]
    assert "load_average_end" in document["machine"]
    # Every figure's median comes with its spread over the rounds.
    assert set(document["spreads"]) == set(document["medians"])
    assert "single submit vs raw send_task" in stdout
    assert "cores allow" in stdout, "the CPU budget line of the batch figure"


@pytest.mark.timeout(180)
def test_the_round_trip_counter_counts_a_real_workers_writes(tmp_path: Path) -> None:
    """``python -m bench.roundtrips``: a worker drains real messages, and each of its
    processes' Redis writes and CPU time are reported per message."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    report_path = tmp_path / "roundtrips.json"
    run = subprocess.run([sys.executable, "-m", "bench.roundtrips", "--messages", "100",
                          "--json", str(report_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    by_caller = report["by_caller"]
    # Every message's delivery begins and finishes with a script call in a pool child, and
    # the main process fetches and acknowledges it.
    scripts = sum(n for key, n in by_caller.items()
                  if key.startswith("child") and "EVALSHA" in key)
    assert scripts >= 2 * 100
    assert any(key.startswith("main") and "BRPOP" in key for key in by_caller)
    cpu = report["cpu_us_per_message"]
    # psutil counts in clock ticks (10 ms): a short drain may show 0 for one process.
    assert "main" in cpu and any(role.startswith("child") for role in cpu)
    assert sum(cpu.values()) > 0
    assert "CPU per message" in run.stdout
    # Redis's side: the enqueue script while pre-filling, the worker's two while draining.
    redis_side = report["redis"]
    assert redis_side["enqueue"]["commands"]["EVALSHA"]["calls"] > 0
    assert redis_side["drain"]["commands"]["EVALSHA"]["calls"] > 1
    assert "Redis per message, drain" in run.stdout
