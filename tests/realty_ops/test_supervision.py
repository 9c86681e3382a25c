"""The stack's supervisor on real processes: process groups stopped whole, PostgreSQL restarted
after kill -9 with its data, a service that cannot come back given up on alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psycopg

from realty_ops.sandbox import make_settings
from realty_ops.stack import (
    CRASHES_TO_GIVE_UP,
    Stack,
    group_members,
    read_state,
    state_file,
    stop_group,
)
from realty_ops.status import service_statuses

SUPERVISE_TIMEOUT_S = 300.0


def test_a_group_that_ignores_sigterm_gets_sigkill_after_the_grace_period() -> None:
    # The shell and its sleep both ignore SIGTERM (an ignored signal stays ignored across exec).
    stubborn = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 600 & wait"], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while len(group_members(stubborn.pid)) < 2:  # the sleep has started
        assert time.monotonic() < deadline
        time.sleep(0.05)
    began = time.monotonic()
    assert stop_group(stubborn.pid, signal.SIGTERM, 1.0, stubborn) is True
    assert time.monotonic() - began >= 1.0
    assert group_members(stubborn.pid) == []
    assert stubborn.returncode == -signal.SIGKILL  # reaped: no zombie left


def supervise_until(stack: Stack, done, timeout_s: float = SUPERVISE_TIMEOUT_S) -> None:
    """Run the supervisor as `realty up` does until ``done()``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, [s.describe() for s in stack.services]
        stack.supervise()
        time.sleep(0.2)


def postmasters(data_dir: Path) -> list[int]:
    """Processes running the postgres binary on ``data_dir`` whose parent is not one (backends
    are children of their postmaster)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = process.info["cmdline"] or []
        if str(data_dir) in cmdline and cmdline[0].endswith("postgres"):
            parent = psutil.Process(process.info["ppid"]).cmdline()
            if not (parent and parent[0].endswith("postgres")):
                found.append(process.pid)
    return found


def test_postgres_restarts_on_its_data_and_a_service_that_cannot_come_back_is_given_up_alone(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    stack = Stack(settings, only=("postgres", "source"), state_path=state_file(settings))
    stack.start()
    postgres, source = stack.services
    try:
        with psycopg.connect(settings.database_url("raw_data"), autocommit=True) as conn:
            # Durable, as the landing's commits are (the server's default is asynchronous).
            conn.execute("SET synchronous_commit TO on")
            conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        # A connection open at the kill: its backend must be gone before the new postmaster.
        held = psycopg.connect(settings.database_url("raw_data"))
        before, source_pid = postgres.process.pid, source.process.pid
        os.kill(before, signal.SIGKILL)
        supervise_until(stack, lambda: postgres.restarts == 1)
        held.close()

        assert postgres.process.pid != before and postgres.state == "running"
        assert postmasters(settings.pg_data_dir) == [postgres.process.pid]
        with psycopg.connect(settings.database_url("raw_data")) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
        assert source.process.pid == source_pid  # the other service was left alone

        # The source's port taken by someone else: every restart fails at once, so after
        # CRASHES_TO_GIVE_UP crashes within a minute the supervisor stops trying.
        os.kill(source_pid, signal.SIGKILL)
        source.process.wait()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
            squatter.bind((settings.host, settings.source_port))
            squatter.listen()
            supervise_until(stack, lambda: source.given_up, timeout_s=120)
        assert len(source.crashes) == CRASHES_TO_GIVE_UP and source.restarts == 0
        assert postgres.process.pid != before and postgres.process.poll() is None
        recorded = {entry["name"]: entry for entry in read_state(state_file(settings))["services"]}
        assert recorded["source"]["state"] == "given up"
        assert (recorded["postgres"]["state"], recorded["postgres"]["restarts"]) == ("running", 1)
        statuses = {row.name: row for row in service_statuses(settings)}
        assert statuses["postgres"].up and statuses["postgres"].restarts == 1
        assert not statuses["source"].up and statuses["source"].supervisor_state == "given up"
    finally:
        stack.stop()
    assert not state_file(settings).exists()
    assert group_members(postgres.process.pid) == []
    stack.stop()  # again: nothing left to do, no error


def test_mlflow_and_serving_killed_come_back_and_leave_the_others_alone(tmp_path: Path) -> None:
    """kill -9 under the supervisor, as `realty up` runs it: MLflow (the course spec asks it to
    restart by itself) and serving, each back up while the other services keep their PIDs."""
    settings = make_settings(tmp_path)
    stack = Stack(settings, only=("postgres", "mlflow", "serving"), state_path=state_file(settings))
    stack.start()
    services = {service.name: service for service in stack.services}
    try:
        for victim in ("mlflow", "serving"):
            pids = {name: s.process.pid for name, s in services.items()}
            os.kill(pids[victim], signal.SIGKILL)
            services[victim].process.wait()
            if victim == "mlflow":  # serving answers while the registry is away
                assert httpx.get(f"{settings.serving_url}/health").status_code == 200
            supervise_until(stack, lambda v=victim: services[v].restarts == 1 and _up(services[v]))
            assert services[victim].process.pid != pids[victim]
            others = {name: s.process.pid for name, s in services.items() if name != victim}
            assert others == {name: pid for name, pid in pids.items() if name != victim}
            assert httpx.get(f"{settings.serving_url}/health").status_code == 200
        statuses = {row.name: row for row in service_statuses(settings)}
        assert (statuses["mlflow"].restarts, statuses["serving"].restarts) == (1, 1)
    finally:
        stack.stop()
    assert not state_file(settings).exists()


def _up(service) -> bool:
    return service.state == "running" and service.ready()
