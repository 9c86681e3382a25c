"""The images run the tested code: each platform image's command, started here on the host as
its container would start it (its port variable, REALTY_HOST), answers the image's own
HEALTHCHECK (docker/healthcheck.py); Dagster's three roles, as compose starts them from the code
image, answer the checks compose runs; and `realty migrate`, compose's and Kubernetes' first
step, creates the platform's tables on a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from realty.settings import Settings
from realty_ops.sandbox import free_port
from realty_ops.stack import dagster_daemon_ready, port_in_use
from tests.ship.shipping import DOCKER, compose, exec_form, healthcheck_command, image_stage

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


def port_variable(image: str) -> tuple[str, str]:
    """The image's port setting and its value (ENV REALTY_<X>_PORT=<port>)."""
    stage = image_stage(image)
    assignments = [a for kw, args in stage.instructions if kw == "ENV" for a in args.split()]
    [(name, port)] = [
        a.split("=") for a in assignments if a.startswith("REALTY_") and "_PORT=" in a
    ]
    return name, port


@pytest.mark.parametrize("target", ["source", "serving", "ui"])
def test_the_image_command_answers_its_healthcheck(
    target: str, pg_settings: Settings, tmp_path: Path
) -> None:
    stage = image_stage(target)
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


def on_host(argv: list[str], ports: dict[str, int]) -> list[str]:
    """A container's command line as run here: our programs from this environment, the
    container's ports (a `-p` value or a URL's port) replaced by free ones."""
    program, *args = argv
    head = [sys.executable, str(DOCKER / "healthcheck.py")] if program == "healthcheck" else []
    for container, host in ports.items():
        args = [
            str(host) if a == container else a.replace(f":{container}/", f":{host}/") for a in args
        ]
    return (head or [str(BIN / program)]) + args


def dagster_roles() -> dict[str, tuple[list[str], list[str]]]:
    """Each Dagster role of the code image: its command and its healthcheck, as compose runs
    them (the code server's are the image's own CMD and HEALTHCHECK)."""
    services = compose()["services"]
    code = image_stage("code")
    roles = {"code-server": (exec_form(code.last("CMD")), healthcheck_command(code))}
    for role in ("webserver", "daemon"):
        service = services[f"dagster-{role}"]
        roles[role] = (service["command"], service["healthcheck"]["test"][1:])
    return roles


def test_the_dagster_roles_answer_their_healthchecks(tmp_path: Path) -> None:
    """`realty dagster code-server | webserver | daemon`, started together as compose starts
    them, each pass compose's check: the gRPC health check, /server_info, the daemon's liveness
    check. The workspace is compose's, with the code server's address on this host. The instance
    is one of their own (SQLite in a fresh DAGSTER_HOME, no PostgreSQL or source reachable), so
    that the daemon's sensors cannot touch the session's databases."""
    code_port, web_port = free_port(), free_port()
    ports = {"4000": code_port, "3000": web_port}
    home = tmp_path / "dagster"
    home.mkdir()
    workspace = yaml.safe_load((DOCKER / "dagster" / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=code_port)
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    # Compose's roles share a migrated PostgreSQL instance; three processes creating one fresh
    # SQLite instance at once race on its alembic stamps (a CI run's daemon lost that race).
    dg.DagsterInstance.from_config(str(home)).dispose()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "REALTY_HOME": str(tmp_path),
        "REALTY_HOST": "127.0.0.1",
        "REALTY_DAGSTER_CODE_PORT": str(code_port),
        "REALTY_DAGSTER_PORT": str(web_port),
        "REALTY_PG_PORT": str(free_port()),
        "REALTY_SOURCE_URL": f"http://127.0.0.1:{free_port()}",
    }
    roles = dagster_roles()
    processes = {}
    for role, (command, _) in roles.items():
        with (tmp_path / f"{role}.log").open("wb") as out:
            processes[role] = subprocess.Popen(
                on_host(command, ports),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the code server's gRPC child stops with it
            )

    webserver = Settings(host="127.0.0.1", dagster_port=web_port)

    def passes(role: str, check: list[str]) -> bool:
        # A probe of Dagster's own CLI costs seconds of CPU: the code server's only once its
        # port listens, the daemon's once the webserver reports its heartbeats.
        if role == "code-server" and not port_in_use("127.0.0.1", code_port):
            return False
        if role == "daemon" and not dagster_daemon_ready(webserver):
            return False
        return subprocess.run(on_host(check, ports), env=env, capture_output=True).returncode == 0

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for role, (_, check) in roles.items():  # in order: the others need the code server
            while not passes(role, check):
                log = (tmp_path / f"{role}.log").read_text(errors="replace")[-2000:]
                assert processes[role].poll() is None, f"{role} exited: {log}"
                assert time.monotonic() < deadline, f"{role} not healthy in time: {log}"
                time.sleep(1.0)
    finally:
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a busy code server can sit on SIGTERM
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


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
