"""The embedded stack: PostgreSQL, MLflow, the data-API simulator and Dagster, supervised by one
process on 127.0.0.1. Each service is started only after the one before it answers.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import yaml

from realty.settings import REPO_ROOT, Settings
from realty.store.db import connect, ensure_databases
from realty_ops import postgres
from realty_ops.dagster_roles import daemon_command, webserver_command

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 300.0  # MLflow took over 120 s to answer on 2 cores at load 12
STOP_TIMEOUT_S = 20.0


class StackError(RuntimeError):
    """A service could not start or stopped unexpectedly; the message says which and what to do."""


@dataclass
class Service:
    name: str
    command: list[str]
    ready: Callable[[], bool]
    port: int | None = None
    port_setting: str | None = None  # the variable that moves it
    url: str | None = None
    stop_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def postgres_ready(settings: Settings) -> bool:
    try:
        with connect("postgres", settings, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def dagster_daemon_ready(settings: Settings) -> bool:
    query = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
    try:
        response = httpx.post(f"{settings.dagster_url}/graphql", json={"query": query}, timeout=5.0)
        statuses = response.json()["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return False
    return all(s["healthy"] for s in statuses if s["required"])


def service_env(settings: Settings) -> dict[str, str]:
    """The environment every child gets: ours plus the derived locations they must agree on."""
    env = {
        **os.environ,
        "REALTY_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        "REALTY_DAGSTER_PG_URL": settings.database_url("dagster"),
        "MLFLOW_TRACKING_URI": settings.mlflow_url,
        # mlflow server forks job runners and many workers by default (about 2 GB); we need one.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
    }
    if settings.s3_endpoint_url:
        # Where MLflow's S3 artifact store (boto3) sends its requests: MinIO or moto, not AWS.
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


def s3_compute_logs(settings: Settings) -> dict[str, object]:
    """dagster-aws's compute log manager: run logs go to the bucket instead of DAGSTER_HOME."""
    config: dict[str, object] = {"bucket": settings.s3_bucket, "prefix": "dagster/compute-logs"}
    if settings.s3_endpoint_url:
        config["endpoint_url"] = settings.s3_endpoint_url
    return {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": config,
    }


def prepare_dagster_home(settings: Settings) -> None:
    """DAGSTER_HOME/dagster.yaml: the repository's, plus S3 compute logs with the S3 switch; and
    the repository's workspace.yaml beside it, where `realty dagster <role>` reads it."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "workspace.yaml", settings.dagster_home / "workspace.yaml")
    instance_yaml = (REPO_ROOT / "dagster.yaml").read_text()
    if settings.s3_bucket:
        compute_logs = yaml.safe_dump({"compute_logs": s3_compute_logs(settings)}, sort_keys=False)
        instance_yaml += "\n" + compute_logs
    (settings.dagster_home / "dagster.yaml").write_text(instance_yaml)


def mlflow_command(settings: Settings) -> list[str]:
    backend = settings.database_url("mlflow").replace("postgresql://", "postgresql+psycopg2://", 1)
    port = settings.mlflow_port
    return [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", settings.mlflow_artifacts_destination,
        "--serve-artifacts",
        "--host", settings.host, "--port", str(port),
        "--workers", "1",
        "--allowed-hosts", f"{settings.host},{settings.host}:{port},localhost,localhost:{port}",
    ]  # fmt: skip


def build_services(settings: Settings) -> list[Service]:
    host = settings.host
    services = []
    if not settings.pg_url:
        services.append(
            Service(
                "postgres",
                postgres.server_command(settings.pg_data_dir, host, settings.pg_port),
                lambda: postgres_ready(settings),
                port=settings.pg_port,
                port_setting="REALTY_PG_PORT",
                url=settings.server_url,
                stop_signal=signal.SIGINT,  # "fast" shutdown: roll back clients, checkpoint, exit
            )
        )
    if not settings.mlflow_tracking_uri:
        services.append(
            Service(
                "mlflow",
                mlflow_command(settings),
                lambda: http_ok(f"{settings.mlflow_url}/health"),
                port=settings.mlflow_port,
                port_setting="REALTY_MLFLOW_PORT",
                url=settings.mlflow_url,
            )
        )
    if not settings.source_url:
        services.append(
            Service(
                "source",
                [sys.executable, "-m", "realty_ops", "source"],
                lambda: http_ok(f"{settings.simulator_url}/health"),
                port=settings.source_port,
                port_setting="REALTY_SOURCE_PORT",
                url=settings.simulator_url,
            )
        )
    services += [
        Service(
            "dagster-webserver",
            webserver_command(settings, settings.dagster_home),
            lambda: http_ok(f"{settings.dagster_url}/server_info"),
            port=settings.dagster_port,
            port_setting="REALTY_DAGSTER_PORT",
            url=settings.dagster_url,
        ),
        Service(
            "dagster-daemon",
            daemon_command(settings.dagster_home),
            lambda: dagster_daemon_ready(settings),
        ),
        Service(
            "serving",
            [sys.executable, "-m", "realty_ops", "serve"],
            lambda: http_ok(f"{settings.serving_url}/health"),
            port=settings.serving_port,
            port_setting="REALTY_SERVING_PORT",
            url=settings.serving_url,
        ),
        Service(
            "ui",
            [sys.executable, "-m", "realty_ops", "ui"],
            lambda: http_ok(settings.ui_url),
            port=settings.ui_port,
            port_setting="REALTY_UI_PORT",
            url=settings.ui_url,
        ),
    ]
    return services


class Stack:
    """Starts the services in order, watches them, stops them in reverse order."""

    def __init__(self, settings: Settings, only: tuple[str, ...] | None = None) -> None:
        self.settings = settings
        self.services = [s for s in build_services(settings) if only is None or s.name in only]
        self.env = service_env(settings)

    @property
    def urls(self) -> dict[str, str]:
        return {s.name: s.url for s in self.services if s.url}

    def log_file(self, service: Service) -> Path:
        return self.settings.logs_dir / f"{service.name}.log"

    def start(self, on_ready: Callable[[Service], None] | None = None) -> None:
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        prepare_dagster_home(self.settings)
        try:
            if self.settings.pg_url:
                if not postgres_ready(self.settings):
                    raise StackError(
                        f"postgres: cannot connect to REALTY_PG_URL ({self.settings.server_url}); "
                        "check that the server is up and the URL is right"
                    )
                ensure_databases(self.settings)
            for service in self.services:
                self._start(service)
                if service.name == "postgres":
                    ensure_databases(self.settings)
                if on_ready:
                    on_ready(service)
        except BaseException:
            self.stop()
            raise

    def _start(self, service: Service) -> None:
        if service.port is not None and port_in_use(self.settings.host, service.port):
            raise StackError(
                f"{service.name}: port {service.port} on {self.settings.host} is already taken; "
                "stop what uses it (`realty down` if it is an earlier stack) or choose another "
                f"port with {service.port_setting}"
            )
        if service.name == "postgres":
            postgres.initialise(self.settings.pg_data_dir, self.settings.pg_user)
            postgres.clear_stale_pid(self.settings.pg_data_dir)
        executable = service.command[0]
        if not Path(executable).exists() and shutil.which(executable) is None:
            raise StackError(f"{service.name}: {executable} not found; run `make install` first")
        log_path = self.log_file(service)
        with log_path.open("ab") as out:
            service.process = subprocess.Popen(
                service.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO_ROOT,
                start_new_session=True,  # our Ctrl-C is ours to relay, in order
                **(postgres.as_server_user() if service.name == "postgres" else {}),
            )
        self._wait_ready(service)

    def _wait_ready(self, service: Service) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._raise_if_exited(service)
            if service.ready():
                log.info("%s is ready", service.name)
                return
            time.sleep(0.3)
        raise StackError(
            f"{service.name}: not ready after {READY_TIMEOUT_S:.0f} s; see {self.log_file(service)}"
        )

    def _raise_if_exited(self, service: Service) -> None:
        code = service.process.poll() if service.process else None
        if code is not None:
            tail = self.log_file(service).read_text(errors="replace").strip().splitlines()[-3:]
            raise StackError(
                f"{service.name}: exited with code {code}; see {self.log_file(service)}"
                + (f"\n  last log lines: {' | '.join(tail)}" if tail else "")
            )

    def check(self) -> None:
        """Raise StackError if any service has died."""
        for service in self.services:
            self._raise_if_exited(service)

    def stop(self) -> None:
        for service in reversed(self.services):
            process = service.process
            if process is None or process.poll() is not None:
                continue
            try:
                os.killpg(process.pid, service.stop_signal)
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", service.name, STOP_TIMEOUT_S)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
            log.info("%s stopped", service.name)
