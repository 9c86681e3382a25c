"""Fault injection against the real platform (issue 14), one section per kind of fault; the
keys of every section run go into bench/results/faults.json.

    python bench/faults.py [--section bad_inputs] [--rounds 5] [--concurrency 16]

Sections (each starts what it needs and returns its keys; add one to SECTIONS):

- ``kills``: `realty up` in a temporary home on free ports; once every service answers, each
  one in turn (PostgreSQL last) gets SIGKILL and the clock runs until the supervisor has it
  answering its readiness probe again (and, after PostgreSQL, until every service does). Keys:
  ``kills``, ``restarted``, ``max_restart_seconds`` and the seconds per service. Target: every
  kill restarted within 30 s.
- ``bad_inputs``: PostgreSQL and MLflow in a temporary home, a price version and the digits
  model registered (realty_ops.sandbox, as the serving tests do), ``realty serve`` with its
  default limits and an admin token. Every hostile request of ``realty_ops.hostile`` is sent
  once alone (its latency timed), then ``--rounds`` times all at once from ``--concurrency``
  threads while the serving process's RSS is sampled every 20 ms. Keys: ``bad_inputs``,
  ``bad_inputs_4xx``, ``server_errors`` (5xx or no answer), ``peak_serving_rss_mb``, and
  beside them the slowest single answer and whether the process is still alive.
  Targets: every bad input a 4xx, 0 server errors, RSS under 1.5 GB, each answer within 1 s.
- ``source``: PostgreSQL in a temporary home and ``realty source``; one fetch per fault of
  ``SOURCE_FAULTS`` (the simulator's hooks: 5xx, a batch counted then failed, timeouts after
  counting, a truncated body, batch number -1, another group, NUL and lone surrogates, an empty
  and a sloppy batch) landed by ``realty.ingest.landing.land_next_batch``, then a restart of the
  source and fetches until it is done. Keys: ``batches_expected``, ``batches_landed``,
  ``duplicated_rows``, and what made each fault visible: ``source_gaps_found``,
  ``source_quarantined_answers``, ``source_failed_calls``, ``source_open_gaps`` (after the
  restart), ``source_fault_outcomes``. Targets: batches_landed == batches_expected, 0
  duplicated rows, every fault visible.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from realty_ops.hostile import HostileRequest, hostile_requests
from realty_ops.memory import RssSampler
from realty_ops.sandbox import (
    ServingProcess,
    real_clean_listings,
    register_digits_model,
    register_price_model,
    temporary_stack,
)

RESULTS = Path(__file__).resolve().parent / "results" / "faults.json"
ADMIN_TOKEN = "bench-faults-token"
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


def answer(client: httpx.Client, case: HostileRequest) -> tuple[int | None, float]:
    """The status of one hostile request (None: no answer) and its seconds."""
    started = time.perf_counter()
    try:
        status: int | None = case.send(client).status_code
    except httpx.HTTPError:
        status = None
    return status, time.perf_counter() - started


def attack(serving: ServingProcess, rounds: int, concurrency: int) -> dict[str, Any]:
    """Every hostile case alone, then ``rounds`` of all of them in parallel."""
    settings = serving.settings
    cases = hostile_requests(settings.serving_max_body_bytes, settings.vision_max_upload_bytes)
    pid = serving.process.pid
    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(base_url=serving.url, timeout=60, limits=limits) as client:
        with RssSampler(pid) as sampler:
            alone = [(case, *answer(client, case)) for case in cases]
            with ThreadPoolExecutor(concurrency) as pool:
                flood = list(pool.map(lambda case: (case, *answer(client, case)), cases * rounds))
        alive = psutil.pid_exists(pid) and client.get("/health").status_code == 200
    results = alone + flood
    statuses = [status for _, status, _ in results]
    # Under load an image request may be told to come back (429): a 4xx all the same.
    wrong = {f"{case.name}: {s}" for case, s, _ in results if s not in (case.expected, 429)}
    slowest, _, slowest_s = max(alone, key=lambda result: result[2])
    return {
        "bad_inputs": len(statuses),
        "bad_inputs_4xx": sum(1 for s in statuses if s is not None and 400 <= s < 500),
        "server_errors": sum(1 for s in statuses if s is None or s >= 500),
        "peak_serving_rss_mb": round(sampler.peak_mb, 1),
        "serving_rss_before_mb": round(sampler.start_mb, 1),
        "bad_input_kinds": len(cases),
        "bad_inputs_429": statuses.count(429),
        "bad_inputs_unexpected": sorted(wrong),
        "slowest_bad_input": slowest.name,
        "slowest_bad_input_seconds": round(slowest_s, 3),
        "serving_alive": alive,
    }


SOURCE_FAULTS: tuple[dict[str, Any], ...] = (
    {"fail_next": 2},
    {"advance_and_fail_next": 1},
    {"latency_s": 1.0},  # with a 0.5 s client timeout: every call times out, and is counted
    {"truncate_next": 1},
    {"relabel_next": 1, "relabel": {"batch_number": -1}},
    {"relabel_next": 1, "relabel": {"group_number": 2}},
    {"unstorable_next": 1},
    {"empty_next": 1},
    {"malformed_fraction": 0.2},
)
SOURCE_DAY = "faults"


def _fetch_once(conn, client) -> str:
    """One fetch as the fetch run makes it, and what it said."""
    from realty.ingest.data_api import DataApiError
    from realty.ingest.landing import PayloadQuarantined, land_next_batch

    try:
        landed = land_next_batch(conn, client)
    except (DataApiError, PayloadQuarantined) as error:
        return f"{type(error).__name__}: {error}"
    return "exhausted" if landed is None else f"{landed.key} new={landed.new}"


def source_section(args: argparse.Namespace) -> dict[str, Any]:
    """The data-API faults through the simulator's hooks: 0 batches lost, 0 rows duplicated."""
    from realty.ingest.archive import source_record
    from realty.ingest.data_api import DataApiClient
    from realty.store.db import connect
    from realty_ops.sandbox import SimulatorProcess

    batches = len(SOURCE_FAULTS) * 2  # the timeouts use up 3
    with temporary_stack(("postgres",), prefix="realty-bench-faults-") as settings:
        env = {"REALTY_SOURCE_ROWS_PER_BATCH": "2000", "REALTY_SOURCE_BATCHES": str(batches)}
        simulator = SimulatorProcess(settings.home, **env).start()
        client = DataApiClient(simulator.url, 1, SOURCE_DAY, 0.5, 2, 0.05)
        outcomes = {}
        try:
            with connect("raw_data", settings, autocommit=True) as conn:
                for fault in SOURCE_FAULTS:
                    httpx.post(f"{simulator.url}/admin/faults", json=fault).raise_for_status()
                    outcomes[json.dumps(fault)] = _fetch_once(conn, client)
                    time.sleep(fault.get("latency_s", 0.0))  # let timed-out calls be counted
                httpx.post(f"{simulator.url}/admin/faults", json={}).raise_for_status()
                before = source_record(conn, 1, SOURCE_DAY)
                client.restart()
                for _ in range(2 * batches):
                    if _fetch_once(conn, client) == "exhausted":
                        break
                after = source_record(conn, 1, SOURCE_DAY)
                landed, rows, distinct = conn.execute(
                    """
                    SELECT (SELECT count(DISTINCT batch_number) FROM raw_batches),
                           count(*), count(DISTINCT (batch_key, row_index))
                    FROM raw_listings
                    """
                ).fetchone()
        finally:
            simulator.stop()
    return {
        "batches_expected": batches,
        "batches_landed": landed,
        "duplicated_rows": rows - distinct,
        "source_gaps_found": len(before.open_gaps),
        "source_missing_before_restart": before.missing_batches,
        "source_quarantined_answers": len(after.quarantined),
        "source_failed_calls": after.failed_calls,
        "source_open_gaps": len(after.open_gaps),
        "source_fault_outcomes": outcomes,
    }


def bad_inputs(args: argparse.Namespace) -> dict[str, Any]:
    with temporary_stack(("postgres", "mlflow"), prefix="realty-bench-faults-") as settings:
        register_price_model(settings, real_clean_listings(3_000))
        register_digits_model(settings)
        with ServingProcess(settings, REALTY_SERVING_ADMIN_TOKEN=ADMIN_TOKEN) as serving:
            return attack(serving, args.rounds, args.concurrency)


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "kills": lambda args: {**kill_section(), "restart_target_seconds": RESTART_TARGET_S},
    "bad_inputs": bad_inputs,
    "source": source_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--rounds", type=int, default=5, help="bad_inputs: parallel rounds")
    parser.add_argument("--concurrency", type=int, default=16, help="bad_inputs: threads")
    args = parser.parse_args()

    # A section run alone keeps the keys the others wrote last time.
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.section or SECTIONS:
        report.update(SECTIONS[name](args))
    report["setup"] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
