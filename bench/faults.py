"""Fault benchmark: how the stack takes what the issue of hardening throws at it.

Kills: `realty up` in a temporary home on free ports; once every service answers, each one in
turn (PostgreSQL last) gets SIGKILL and the clock runs until the supervisor has it answering
its readiness probe again (and, after PostgreSQL, until every service does). Target: every
kill restarted within 30 s.

Writes ``bench/results/faults.json`` (``kills``, ``restarted``, ``max_restart_seconds`` and the
seconds per service, plus the load average around the run).

    python bench/faults.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "faults.json"
# PostgreSQL last: the services on it may fail while it is away, and must come back too.
KILL_ORDER = (
    "mlflow", "source", "dagster-webserver", "dagster-daemon", "serving", "ui", "postgres"
)  # fmt: skip
RESTART_TARGET_S = 30.0
GIVE_UP_S = 600.0  # a kill not back by then counts as not restarted


def kill_section() -> dict[str, object]:
    """kill -9 of each service of a running stack: how many came back and how fast."""
    from realty_ops.sandbox import StackProcess, make_settings

    seconds: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="realty-bench-faults-") as home:
        stack = StackProcess(make_settings(Path(home) / "home")).start()
        try:
            stack.wait_up()
            for name in KILL_ORDER:
                began = time.monotonic()
                try:
                    seconds[name] = round(stack.kill(name, timeout_s=GIVE_UP_S), 2)
                except RuntimeError:
                    seconds[name] = None
                stack.wait_up(timeout_s=GIVE_UP_S)  # every service, before the next kill
                everything_s = round(time.monotonic() - began, 2)
                print(f"{name}: back after {seconds[name]} s, all up after {everything_s} s")
        finally:
            leftover = stack.stop()
    restarted = [s for s in seconds.values() if s is not None]
    return {
        "kills": len(seconds),
        "restarted": len(restarted),
        "max_restart_seconds": max(restarted, default=None),
        "restart_seconds": seconds,
        "kills_within_target": sum(s <= RESTART_TARGET_S for s in restarted),
        "all_up_after_postgres_kill_seconds": everything_s,
        "left_running_after_stop": len(leftover),
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    load_before = os.getloadavg()[0]
    result = {
        **kill_section(),
        "restart_target_seconds": RESTART_TARGET_S,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cores": len(os.sched_getaffinity(0)),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
