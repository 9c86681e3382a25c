"""The images run the tested code: each platform image's command, started here on the host as
its container would start it (its port variable, REALTY_HOST), answers the image's own
HEALTHCHECK (docker/healthcheck.py); and `realty migrate`, compose's and Kubernetes' first
step, creates the platform's tables on a real PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from realty.sandbox import free_port
from realty.settings import Settings
from tests.ship.shipping import DOCKER, exec_form, final_stages, healthcheck_command

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180.0


def host_env(settings: Settings, home: Path) -> dict[str, str]:
    """The container's environment, on the host: the test PostgreSQL server, and an MLflow
    address where nothing listens (serving then starts degraded, as it must)."""
    return {
        **os.environ,
        "REALTY_HOME": str(home),
        "REALTY_HOST": "127.0.0.1",
        "REALTY_PG_PORT": str(settings.pg_port),
        "REALTY_MLFLOW_PORT": str(free_port()),
    }


def port_variable(target: str) -> tuple[str, str]:
    """The image's port setting and its value (ENV REALTY_<X>_PORT=<port>)."""
    stage = final_stages(DOCKER / "Dockerfile")[target]
    assignments = [a for kw, args in stage.instructions if kw == "ENV" for a in args.split()]
    [(name, port)] = [
        a.split("=") for a in assignments if a.startswith("REALTY_") and "_PORT=" in a
    ]
    return name, port


@pytest.mark.parametrize("target", ["source", "serving", "ui"])
def test_the_image_command_answers_its_healthcheck(
    target: str, pg_settings: Settings, tmp_path: Path
) -> None:
    stage = final_stages(DOCKER / "Dockerfile")[target]
    program, *args = exec_form(stage.last("CMD"))
    _, url = healthcheck_command(stage)
    name, image_port = port_variable(target)
    port = free_port()
    assert f"127.0.0.1:{image_port}/" in url
    url = url.replace(f":{image_port}/", f":{port}/")
    log = tmp_path / f"{target}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [BIN / program, *args],
            env={**host_env(pg_settings, tmp_path), name: str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            probe = subprocess.run(
                [sys.executable, DOCKER / "healthcheck.py", url], capture_output=True
            )
            if probe.returncode == 0:
                break
            assert process.poll() is None, f"{target} exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{url} never answered: {log.read_text()[-2000:]}"
            time.sleep(1.0)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_healthcheck_fails_where_nothing_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    probe = subprocess.run([sys.executable, DOCKER / "healthcheck.py", url], capture_output=True)
    assert probe.returncode == 1


def test_realty_migrate_prepares_the_databases(pg_settings: Settings, tmp_path: Path) -> None:
    """Idempotent: on the session's server (already migrated) it must succeed and leave every
    table in place; the databases are shared with the other tests, so none is dropped."""
    result = subprocess.run(
        [BIN / "realty", "migrate"],
        env=host_env(pg_settings, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "databases ready" in result.stdout
    for database, expected in {
        "raw_data": {"raw_batches", "raw_listings", "inference_log"},
        "clean_data": {"clean_listings", "drift_reports", "model_decisions"},
    }.items():
        with psycopg.connect(pg_settings.database_url(database)) as conn:
            tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
        assert expected <= tables, database
