"""``python -m bench [--smoke] [--soak SECONDS]``: run, print the table, write the JSON."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.report import GROUPS, summarise, table
from bench.run import Plan, Run
from integration.app import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="one tiny round (seconds): checks that the benchmark still runs")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, help="seconds per throughput figure")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="then submit at half of peak this long, watching gateway RSS")
    parser.add_argument("--out", default=".bench", help="folder of the JSON results")
    parser.add_argument("--only", action="append", choices=GROUPS, metavar="GROUP",
                        help="measure only this group of figures (repeatable): "
                             + ", ".join(GROUPS))
    parser.add_argument("--variants", action="store_true",
                        help="also the end-to-end figures without task events and with two "
                             "worker instances")
    args = parser.parse_args(argv)
    plan = Plan.smoke() if args.smoke else Plan()
    if args.variants:
        plan = replace(plan, variants=True, queued_consumer=True)
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
