"""`realty demo` end to end: the real stack, the Dagster daemon's sensor ticks and runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from realty_ops.sandbox import end_process_groups_of_home, make_settings
from realty_ops.stack import port_in_use

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
DEMO_TIMEOUT_S = 900
GRACE_S = 60  # for the demo to stop its own stack, in order, after SIGTERM


def run_demo(env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    """`realty demo` in a session of its own. If it fails, hangs or the test is interrupted,
    everything it started is stopped, so no stack outlives the test."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "realty_ops", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = demo.communicate(timeout=DEMO_TIMEOUT_S)
    except BaseException:  # the timeout, or pytest's own timeout or Ctrl-C
        stop_started_processes(demo, home)
        raise
    if demo.returncode != 0:
        stop_started_processes(demo, home)
    return subprocess.CompletedProcess(demo.args, demo.returncode, stdout, stderr)


def stop_started_processes(demo: subprocess.Popen, home: Path) -> None:
    """SIGTERM the demo (it stops its stack), then end the process group of every process still
    running with this test's REALTY_HOME: each service runs in a session of its own and
    outlives a killed demo."""
    if demo.poll() is None:
        os.killpg(demo.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(timeout=GRACE_S)
    end_process_groups_of_home(home, {demo.pid} if demo.poll() is None else set())
    demo.wait(timeout=10)


def test_demo_runs_every_batch_through_the_loop_and_exits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    env = {
        **os.environ,
        "REALTY_HOME": str(settings.home),
        "REALTY_PG_PORT": str(settings.pg_port),
        "REALTY_MLFLOW_PORT": str(settings.mlflow_port),
        "REALTY_DAGSTER_PORT": str(settings.dagster_port),
        "REALTY_SOURCE_PORT": str(settings.source_port),
        "REALTY_SERVING_PORT": str(settings.serving_port),
        "REALTY_UI_PORT": str(settings.ui_port),
        "REALTY_SOURCE_ROWS_PER_BATCH": "3000",
        "REALTY_SOURCE_BATCHES": "3",
        "REALTY_SENSOR_INTERVAL_S": "1",
        "REALTY_TRAIN_ITERATIONS": "60",
        "REALTY_TRAIN_MAX_SECONDS": "20",
        "DEMO_EXIT": "1",
        "COLUMNS": "160",
    }
    result = run_demo(env, settings.home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    summary = json.loads((settings.home / "demo" / "summary.json").read_text())
    batches = summary["batches"]
    assert [b["batch_number"] for b in batches] == [1, 2, 3]
    for batch in batches:
        assert batch["raw_rows"] == 3000
        assert batch["raw_rows"] == batch["clean_rows"] + batch["rejected_rows"]
        assert 0 < batch["rejected_rows"] < batch["raw_rows"] * 0.2
        assert batch["seconds"] > 0
        # A retrain verdict trains in its batch's ingest run; a kept batch has a scoring run.
        assert (batch["follow_up_seconds"] > 0) == (not batch["trained"])
        assert batch["drift"]["retrain"] == bool(batch["drift"]["reasons"])
        assert batch["trained"] == batch["drift"]["retrain"]
        assert batch["production_version"] is not None
        assert set(batch["metrics"]) == {"mae_usd", "rmse_log", "r2_log"}
    first = batches[0]
    assert first["drift"]["reasons"] == ["initial baseline"]
    assert (first["candidate_version"], first["promoted"], first["production_version"]) == (
        "1",
        True,
        "1",
    )
    assert summary["production"]["version"] == batches[-1]["production_version"]
    assert summary["production"]["name"] == "realty-price"
    assert summary["services"] == {
        "dagster": settings.dagster_url,
        "mlflow": settings.mlflow_url,
        "source": settings.simulator_url,
        "serving": settings.serving_url,
        "ui": settings.ui_url,
    }
    # The serving API priced listings of the last batch with the final production version.
    answer = summary["serving_examples"]["answer"]
    production = summary["production"]["version"]
    assert answer["model"] == {"name": "realty-price", "version": production, "arm": "production"}
    assert len(answer["predictions"]) == 3 and all(p["price"] > 0 for p in answer["predictions"])
    # Every route of the serving API answered, the digit routes too: digits_model was
    # materialized by its automation (the admin route is disabled without a token).
    not_ok = {call: code for call, code in summary["routes"].items() if code != 200}
    assert not_ok == {"POST /v1/admin/reload": None}
    assert summary["routes"]["POST /predict/"] == 200
    assert settings.serving_url in result.stdout
    assert settings.ui_url in result.stdout
    assert summary["source"]["exhausted"] is True
    assert "Dagster" in result.stdout and settings.dagster_url in result.stdout

    # Every service was stopped, and each wrote its log.
    for port in (
        settings.pg_port,
        settings.mlflow_port,
        settings.dagster_port,
        settings.source_port,
        settings.serving_port,
        settings.ui_port,
    ):
        assert not port_in_use(settings.host, port)
    for name in (
        "postgres",
        "mlflow",
        "source",
        "dagster-webserver",
        "dagster-daemon",
        "serving",
        "ui",
    ):
        assert (settings.logs_dir / f"{name}.log").stat().st_size > 0

    # A second demo over the same state resumes: nothing is fetched or cleaned twice.
    again = run_demo(env, settings.home)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads((settings.home / "demo" / "summary.json").read_text())["batches"] == batches
    assert_no_duplicates(settings)


def assert_no_duplicates(settings) -> None:
    from realty_ops.stack import Stack

    stack = Stack(settings, only=("postgres",))
    stack.start()
    try:
        with psycopg.connect(settings.database_url("raw_data")) as conn:
            assert conn.execute("SELECT count(*) FROM raw_batches").fetchone() == (3,)
            assert conn.execute("SELECT count(*) FROM raw_listings").fetchone() == (9000,)
        with psycopg.connect(settings.database_url("clean_data")) as conn:
            (total,) = conn.execute(
                "SELECT sum(clean_rows) + sum(rejected_rows) FROM clean_batches"
            ).fetchone()
            assert total == 9000
    finally:
        stack.stop()
