"""A plain Celery producer on ``celeryconfig`` (as a direct caller or beat publishes):
``python -m tests.support.celery_publish QUEUE STOP_FILE REPORT_FILE`` sends a task to QUEUE
every few milliseconds until STOP_FILE exists, then writes how many were sent, how many
failed, and the longest send (JSON) to REPORT_FILE."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from celery import Celery


def main(queue: str, stop: Path, report: Path) -> None:
    app = Celery("probe")
    app.config_from_object("celeryconfig")
    sent = failed = 0
    longest = 0.0
    while not stop.exists():
        started = time.monotonic()
        try:
            app.send_task("probe.nothing", args=[sent], queue=queue)
            sent += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            failed += 1
            print(f"send failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        longest = max(longest, time.monotonic() - started)
        time.sleep(0.02)
    report.write_text(json.dumps({"sent": sent, "failed": failed, "longest": longest}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
