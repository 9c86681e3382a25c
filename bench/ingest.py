"""Landing benchmark: a 300k-row batch through realty's landing + clean path vs pandas ``to_sql``.

Both paths start from the same parsed payload and write into the same PostgreSQL server in the
same run; each runs in its own process so that its peak RSS is its own. The two paths alternate
(platform, to_sql, platform, ...) so that load from other processes hits both alike; min and
median of each, and the ratio of the medians, come from the same run. The landing's CPU seconds
(client, and the server backend it talks to) are reported too: load from other processes
changes them far less than wall time. Writes ``bench/results/ingest.json``.

    python bench/ingest.py [--rows 300000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
TO_SQL_TABLE = "raw_listings_to_sql"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process on this machine (the server's backend)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_platform(settings, body: bytes, key_suffix: str) -> dict:
    """Land the payload with its rows in RAW, clean it into CLEAN."""
    from dataclasses import replace

    from realty.ingest.data_api import parse_body
    from realty.ingest.landing import land_payload
    from realty.store.clean import clean_landed_batch
    from realty.store.db import connect

    batch = parse_body(body)
    batch = replace(batch, day=f"{batch.day}{key_suffix}")  # a fresh key per repeat
    with connect("raw_data", settings) as raw, connect("clean_data", settings) as clean:
        backend = raw.info.backend_pid
        server_cpu, client_cpu = cpu_seconds(backend), time.process_time()
        start = time.perf_counter()
        land_payload(raw, batch, "bench")
        landed = time.perf_counter()
        # CPU time is what load from other processes changes least: the landing's own cost.
        server_cpu, client_cpu = cpu_seconds(backend) - server_cpu, time.process_time() - client_cpu
        account = clean_landed_batch(raw, clean, batch.key)
        done = time.perf_counter()
    return {
        "rows": len(batch.data),
        "landing_seconds": landed - start,
        "landing_client_cpu_seconds": client_cpu,
        "landing_server_cpu_seconds": server_cpu,
        "landing_clean_seconds": done - start,
        "clean_rows": account.clean_rows,
    }


def run_to_sql(settings, body: bytes) -> dict:
    """The baseline: the same rows as a DataFrame, ``DataFrame.to_sql`` into a table defined
    like ``raw_listings`` (its columns; like each batch's partition, no index) on the same
    server."""
    import pandas as pd
    import sqlalchemy

    from realty.ingest.data_api import parse_body
    from realty.schema import LISTING_COLUMNS

    batch = parse_body(body)
    engine = sqlalchemy.create_engine(
        settings.database_url("raw_data").replace("postgresql://", "postgresql+psycopg://", 1)
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TO_SQL_TABLE}")
        conn.exec_driver_sql(f"CREATE TABLE {TO_SQL_TABLE} (LIKE raw_listings INCLUDING ALL)")
    start = time.perf_counter()
    frame = pd.DataFrame(batch.delivered_rows(), columns=list(LISTING_COLUMNS))
    frame.insert(0, "batch_key", batch.key)
    frame.insert(1, "row_index", range(len(frame)))
    frame.to_sql(TO_SQL_TABLE, engine, if_exists="append", index=False)
    seconds = time.perf_counter() - start
    engine.dispose()
    return {"rows": len(batch.data), "seconds": seconds}


def child(path: str, body_file: Path, settings_json: str, key_suffix: str) -> None:
    from realty.settings import Settings

    settings = Settings.from_public_json(settings_json)
    body = body_file.read_bytes()
    result = (
        run_platform(settings, body, key_suffix)
        if path == "platform"
        else run_to_sql(settings, body)
    )
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result))


def in_child(path: str, body_file: Path, settings, key_suffix: str = "") -> dict:
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            path,
            str(body_file),
            settings.public_json(),
            key_suffix,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def fetch_body(settings, rows: int) -> bytes:
    from realty.ingest.data_api import DataApiClient
    from realty_ops.sandbox import SimulatorProcess

    simulator = SimulatorProcess(settings.home, REALTY_SOURCE_ROWS_PER_BATCH=str(rows)).start()
    try:
        client = DataApiClient(simulator.url, settings.group_number, "bench", 300.0, 2, 1.0)
        return client.fetch_next().body
    finally:
        simulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from realty_ops.sandbox import temporary_stack

    with temporary_stack(("postgres",), prefix="realty-bench-ingest-") as settings:
        body_file = settings.home / "payload.json"
        body_file.write_bytes(fetch_body(settings, args.rows))
        platform, to_sql = [], []
        for repeat in range(args.repeats):
            platform.append(in_child("platform", body_file, settings, f"r{repeat}"))
            to_sql.append(in_child("to_sql", body_file, settings))
            landed, to_sql_s = platform[-1], to_sql[-1]["seconds"]
            print(
                f"run {repeat + 1}/{args.repeats}: landing {landed['landing_seconds']:.3f} s "
                f"(CPU: client {landed['landing_client_cpu_seconds']:.3f} s, "
                f"server {landed['landing_server_cpu_seconds']:.3f} s), to_sql {to_sql_s:.3f} s",
                flush=True,
            )

    rows = platform[0]["rows"]
    landing = [p["landing_seconds"] for p in platform]
    full = [p["landing_clean_seconds"] for p in platform]
    baseline = [t["seconds"] for t in to_sql]
    landing_s, full_s, to_sql_s = map(statistics.median, (landing, full, baseline))
    result = {
        "rows": rows,
        "platform_rows_per_s": round(rows / landing_s),
        "platform_landing_clean_rows_per_s": round(rows / full_s),
        "to_sql_rows_per_s": round(rows / to_sql_s),
        "ratio": round(to_sql_s / landing_s, 1),  # of the medians
        "ratio_of_minimums": round(min(baseline) / min(landing), 1),
        "platform_peak_rss_mb": max(p["peak_rss_mb"] for p in platform),
        "to_sql_peak_rss_mb": max(t["peak_rss_mb"] for t in to_sql),
        "platform_landing_seconds": round(landing_s, 3),
        "platform_landing_seconds_min": round(min(landing), 3),
        "platform_landing_clean_seconds": round(full_s, 3),
        "platform_landing_clean_seconds_min": round(min(full), 3),
        "to_sql_seconds": round(to_sql_s, 3),
        "to_sql_seconds_min": round(min(baseline), 3),
        "runs": {
            "landing_seconds": [round(s, 3) for s in landing],
            "landing_client_cpu_seconds": [
                round(p["landing_client_cpu_seconds"], 3) for p in platform
            ],
            "landing_server_cpu_seconds": [
                round(p["landing_server_cpu_seconds"], 3) for p in platform
            ],
            "landing_clean_seconds": [round(s, 3) for s in full],
            "to_sql_seconds": [round(s, 3) for s in baseline],
        },
        "repeats": args.repeats,
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
