"""The embedded stack: PostgreSQL, MLflow, the data-API simulator and Dagster, supervised by one
process on 127.0.0.1. Each service is started only after the one before it answers.

Each service runs in a process group of its own. A service whose process exits is restarted
with backoff, once whatever its group left behind (workers, PostgreSQL backends) is gone; one
that keeps crashing is given up on while the others keep running. Stopping stops every group,
SIGKILL after a grace period, and a state file (``Stack.state_path``) lets ``realty down``
stop a stack whose supervising process died.
"""

from __future__ import annotations

import contextlib
import functools
import json
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
import psutil
import psycopg
import yaml

from realty.settings import REPO_ROOT, Settings
from realty.store.db import connect, ensure_databases
from realty_ops import postgres
from realty_ops.dagster_roles import daemon_command, webserver_command

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 300.0  # MLflow took over 120 s to answer on 2 cores at load 12
STOP_TIMEOUT_S = 20.0  # after the stop signal, the group gets SIGKILL
GROUP_GONE_TIMEOUT_S = 10.0  # for a SIGKILLed group to be gone
RESTART_FIRST_DELAY_S = 0.5  # doubled per crash within CRASH_WINDOW_S, at most RESTART_MAX_DELAY_S
RESTART_MAX_DELAY_S = 16.0
CRASH_WINDOW_S = 60.0
CRASHES_TO_GIVE_UP = 5  # within CRASH_WINDOW_S


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
    started_at: float | None = None  # wall clock, of the current process
    restarts: int = 0
    crashes: list[float] = field(default_factory=list)  # monotonic, within CRASH_WINDOW_S
    restart_at: float | None = None  # monotonic; set while a restart waits for its backoff
    given_up: bool = False

    @property
    def state(self) -> str:
        if self.given_up:
            return "given up"
        if self.process is None:
            return "not started"
        return "running" if self.process.poll() is None else "restarting"

    def record_crash(self, now: float) -> None:
        self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW_S] + [now]
        self.given_up = len(self.crashes) >= CRASHES_TO_GIVE_UP
        delay = min(RESTART_FIRST_DELAY_S * 2 ** (len(self.crashes) - 1), RESTART_MAX_DELAY_S)
        self.restart_at = None if self.given_up else now + delay

    def describe(self) -> dict[str, object]:
        """Its entry in the state file; its process group is its pid (a session of its own)."""
        pid = self.process.pid if self.process else None
        return {
            "name": self.name,
            "pid": pid,
            "pgid": pid,
            "port": self.port,
            "url": self.url,
            "stop_signal": int(self.stop_signal),
            "state": self.state,
            "restarts": self.restarts,
            "started_at": self.started_at,
        }


def group_members(pgid: int) -> list[psutil.Process]:
    """The processes of a process group that still run (a zombie holds no port or memory)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (psutil.Error, ProcessLookupError):
            continue  # gone meanwhile
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing of it is left
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout_s: float, leader: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if leader is not None:
            leader.poll()  # reap our child, so that it is not left a zombie
        if not group_members(pgid):
            if leader is not None:
                leader.wait(timeout=GROUP_GONE_TIMEOUT_S)  # a zombie now: reap it
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_group(
    pgid: int, first_signal: int, grace_s: float, leader: subprocess.Popen | None = None
) -> bool:
    """Send ``first_signal`` to the group, SIGKILL what is left after ``grace_s``, and wait until
    nothing of it runs. True if it took SIGKILL. ``leader``: the group's leader if it is our
    child (it is reaped)."""
    _signal_group(pgid, first_signal)
    if _wait_group_gone(pgid, grace_s, leader):
        return False
    _signal_group(pgid, signal.SIGKILL)
    if not _wait_group_gone(pgid, GROUP_GONE_TIMEOUT_S, leader):
        raise StackError(f"process group {pgid} outlived kill -9 by {GROUP_GONE_TIMEOUT_S:.0f} s")
    return True


def state_file(settings: Settings) -> Path:
    """Where `realty up` keeps its state file."""
    return settings.home / "stack.json"


def read_state(path: Path) -> dict | None:
    """The state file a running stack keeps (None: no stack recorded one)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def process_alive(pid: int, create_time: float) -> bool:
    """Whether the process that had this pid at ``create_time`` still runs (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        return (
            abs(process.create_time() - create_time) < 1.0
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def _of_home(process: psutil.Process, home: str) -> bool:
    try:
        return process.environ().get("REALTY_HOME") == home
    except psutil.Error:
        return False


def stop_recorded(state: dict) -> list[str]:
    """Stop, in reverse start order, the services of a state file whose process groups still
    run (what a stack whose supervisor died leaves behind); only processes that carry the
    stack's REALTY_HOME count, so a reused pid is never signalled. The names stopped."""
    stopped = []
    for entry in reversed(state["services"]):
        pgid = entry["pgid"]
        if pgid is None or not any(_of_home(p, state["home"]) for p in group_members(pgid)):
            continue
        if stop_group(pgid, entry["stop_signal"], STOP_TIMEOUT_S):
            log.warning("%s did not stop in %.0f s; killed it", entry["name"], STOP_TIMEOUT_S)
        stopped.append(entry["name"])
    return stopped


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@functools.cache
def _probe_client() -> httpx.Client:
    """One client for every readiness probe: a new one per probe costs ~70 ms of CPU (its SSL
    context), a quarter of a core at a probe every 0.3 s while a service starts."""
    return httpx.Client()


def http_ok(url: str) -> bool:
    try:
        return _probe_client().get(url, timeout=2.0).status_code == 200
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
        response = _probe_client().post(
            f"{settings.dagster_url}/graphql", json={"query": query}, timeout=5.0
        )
        statuses = response.json()["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return False
    return all(s["healthy"] for s in statuses if s["required"])


SERVICE_ADDRESSES = (
    "host", "pg_port", "mlflow_port", "dagster_port", "source_port", "serving_port", "ui_port"
)  # fmt: skip


def service_env(settings: Settings) -> dict[str, str]:
    """The environment every child gets: ours plus the derived locations they must agree on."""
    env = {
        **os.environ,
        "REALTY_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        "REALTY_DAGSTER_PG_URL": settings.database_url("dagster"),
        "MLFLOW_TRACKING_URI": settings.mlflow_url,
        # `mlflow server` reads its store from here: on its command line the URL's password
        # would show in `ps` and in our logs.
        "MLFLOW_BACKEND_STORE_URI": settings.database_url("mlflow").replace(
            "postgresql://", "postgresql+psycopg2://", 1
        ),
        # mlflow server forks job runners and many workers by default (about 2 GB); we need one.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
        # Where every service listens, so that a child (`realty source`, `serve`, `ui`) uses
        # these settings' ports even when they did not come from the environment.
        **{f"REALTY_{name.upper()}": str(getattr(settings, name)) for name in SERVICE_ADDRESSES},
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
    port = settings.mlflow_port
    return [
        str(BIN / "mlflow"), "server",  # the store: MLFLOW_BACKEND_STORE_URI of service_env
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
    """Starts the services in order, restarts those that exit, stops them in reverse order.

    With ``state_path`` it keeps a state file there (its pid, each service's process group,
    port, state and restarts) while it runs: `realty status` reads it, `realty down` stops a
    stack with it."""

    def __init__(
        self,
        settings: Settings,
        only: tuple[str, ...] | None = None,
        state_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.services = [s for s in build_services(settings) if only is None or s.name in only]
        self.env = service_env(settings)
        self.state_path = state_path

    @property
    def urls(self) -> dict[str, str]:
        return {s.name: s.url for s in self.services if s.url}

    def log_file(self, service: Service) -> Path:
        return self.settings.logs_dir / f"{service.name}.log"

    def start(self, on_ready: Callable[[Service], None] | None = None) -> None:
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        prepare_dagster_home(self.settings)
        self._write_state()
        try:
            if self.settings.pg_url:
                if not postgres_ready(self.settings):
                    raise StackError(
                        "postgres: cannot connect to REALTY_PG_URL "
                        f"({self.settings.server_url_masked}); "
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
                start_new_session=True,  # a process group of its own: stopped and reaped whole
                **(postgres.as_server_user() if service.name == "postgres" else {}),
            )
        service.started_at = time.time()
        self._write_state()
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
            raise StackError(f"{service.name}: exited with code {code}; {self._log_tail(service)}")

    def _log_tail(self, service: Service) -> str:
        tail = self.log_file(service).read_text(errors="replace").strip().splitlines()[-3:]
        return f"see {self.log_file(service)}" + (
            f"\n  last log lines: {' | '.join(tail)}" if tail else ""
        )

    def supervise(self) -> None:
        """Restart each service whose process exited, once its backoff has passed; called
        about once a second by whoever runs the stack."""
        for service in self.services:
            process = service.process
            if service.given_up or process is None or process.poll() is None:
                continue
            if service.restart_at is None:
                self._crashed(service)
            elif time.monotonic() >= service.restart_at:
                self._restart(service)

    def _crashed(self, service: Service) -> None:
        """A service's process is gone: end what its group left, then schedule a restart (or
        give up on it after CRASHES_TO_GIVE_UP fast crashes)."""
        code = service.process.returncode
        # Its workers or backends would hold the port (PostgreSQL's, its shared memory: a new
        # postmaster starts only once every process of the old one is gone).
        stop_group(service.process.pid, signal.SIGKILL, 0.0, service.process)
        service.record_crash(time.monotonic())
        if service.given_up:
            log.error(
                "%s exited with code %s, %d times within %.0f s; given up on (the other services "
                "keep running); %s",
                service.name, code, len(service.crashes), CRASH_WINDOW_S, self._log_tail(service),
            )  # fmt: skip
        else:
            delay = service.restart_at - time.monotonic()
            log.warning(
                "%s exited with code %s; restarting it in %.1f s; %s",
                service.name, code, max(delay, 0.0), self._log_tail(service),
            )  # fmt: skip
        self._write_state()

    def _restart(self, service: Service) -> None:
        service.restart_at = None
        began = time.monotonic()
        try:
            self._start(service)
        except StackError as error:
            # Counted as its next crash by the next supervise().
            log.warning("%s: restart failed: %s", service.name, error)
            if service.process.poll() is None:
                stop_group(service.process.pid, signal.SIGKILL, 0.0, service.process)
            return
        service.restarts += 1
        log.warning(
            "%s restarted (restart %d, ready %.1f s after its start)",
            service.name, service.restarts, time.monotonic() - began,
        )  # fmt: skip
        self._write_state()

    def stop(self) -> None:
        """Stop every service's process group in reverse order (SIGKILL after STOP_TIMEOUT_S);
        safe to call again, and the state file goes once all are gone."""
        for service in reversed(self.services):
            process = service.process
            if process is None or (process.poll() is not None and not group_members(process.pid)):
                continue
            if stop_group(process.pid, service.stop_signal, STOP_TIMEOUT_S, process):
                log.warning("%s did not stop in %.0f s; killed it", service.name, STOP_TIMEOUT_S)
            log.info("%s stopped", service.name)
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)

    def _write_state(self) -> None:
        if self.state_path is None:
            return
        me = psutil.Process()
        state = {
            "pid": me.pid,
            "create_time": me.create_time(),
            "home": str(self.settings.home),
            "services": [service.describe() for service in self.services],
        }
        partial = self.state_path.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(self.state_path)  # a reader never sees half a file
