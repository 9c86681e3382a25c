"""The one harness of the tests and the benchmarks: isolated local servers on free ports, real
serving processes, and small real models.

``temporary_stack`` starts services of the embedded stack in a temporary home;
``StackProcess`` runs ``realty up`` itself, to break its services; ``ServingProcess`` runs
``realty serve`` (uvicorn with the ``serving.main:create_app`` factory) as a child process on
a free port, configured through ``REALTY_*`` variables from a ``Settings``.
``register_price_model`` and ``register_digits_model`` put real, quickly trained versions into
an MLflow registry the same way the learning loop does (``train_and_register`` and the
``digits_model`` asset), so the service has something to load."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import uvicorn
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from realty.ingest.cleaning import clean_batch
from realty.model import rollout
from realty.schema import LISTING_COLUMNS
from realty.settings import REPO_ROOT, SECRET_SETTINGS, Settings
from realty_ops.stack import Stack, http_ok, read_state, service_env, state_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_settings(home: Path, **overrides: object) -> Settings:
    """Settings for an isolated stack under ``home`` on free ports."""
    ports = {
        "pg_port": free_port(),
        "mlflow_port": free_port(),
        "dagster_port": free_port(),
        "source_port": free_port(),
        "serving_port": free_port(),
        "ui_port": free_port(),
    }
    return Settings(home=home, **{**ports, **overrides})


def process_groups_of_home(home: Path) -> set[int]:
    """The process groups holding a process that runs with REALTY_HOME=``home`` (ours aside)."""
    groups = set()
    for process in psutil.process_iter():
        try:
            if process.environ().get("REALTY_HOME") == str(home):
                groups.add(os.getpgid(process.pid))
        except (psutil.Error, ProcessLookupError):
            continue  # gone, or a zombie
    return groups - {os.getpgrp()}


def end_process_groups_of_home(home: Path, also: set[int] = frozenset()) -> set[int]:
    """SIGTERM, and after 15 s SIGKILL, the groups of ``process_groups_of_home`` and ``also``:
    what a stack left behind must not outlive a test. The groups that were still running."""
    leftover = process_groups_of_home(home) | set(also)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in process_groups_of_home(home) | set(also):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        deadline = time.monotonic() + 15
        while process_groups_of_home(home) and time.monotonic() < deadline:
            time.sleep(0.5)
    return leftover


@contextmanager
def temporary_stack(
    services: tuple[str, ...] = ("postgres",), prefix: str = "realty-sandbox-"
) -> Iterator[Settings]:
    """``services`` of the stack (its service names: postgres, mlflow, ...) started in a
    temporary home on free ports; their settings while the block runs, then stopped and the
    home deleted. With MLflow among them, ``MLFLOW_TRACKING_URI`` points at it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as home:
        settings = make_settings(Path(home))
        stack = Stack(settings, only=services)
        stack.start()
        try:
            if "mlflow" in services:
                os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_url
            yield settings
        finally:
            stack.stop()


class SimulatorProcess:
    """`realty source` as a real child process on a free port."""

    def __init__(self, home: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REALTY_HOME": str(home),
            "REALTY_SOURCE_PORT": str(self.port),
            "REALTY_SOURCE_STATE_FILE": str(home / "source-state.json"),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> SimulatorProcess:
        """Start it and wait up to ``timeout`` seconds for its health route to answer."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "realty_ops", "source"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not http_ok(f"{self.url}/health"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator did not start")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


REALTOR_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "realtor" / "realtor_sample.csv.gz"
START_TIMEOUT_S = 600.0  # imports and model loads took 6 minutes on a 2-core machine at load 15
STACK_UP_TIMEOUT_S = 1800.0  # the whole stack took over 15 minutes to start at load 24 on 2 cores


@contextmanager
def app_in_thread(app: object) -> Iterator[str]:
    """``app`` served by real uvicorn in a thread of this process on a free port; its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``REALTY_*`` variables that recreate it in a child process."""
    values = settings.model_dump()
    for name in SECRET_SETTINGS & values.keys():  # SecretStr: its str() is the mask
        values[name] = values[name] and values[name].get_secret_value()
    env = {
        f"REALTY_{name.upper()}": str(value) for name, value in values.items() if value is not None
    }
    return {**service_env(settings), **env}


def start_realty(
    command: str, env: dict[str, str], log_file: Path, **popen: Any
) -> subprocess.Popen[bytes]:
    """`realty <command>` as a child process, its output appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "realty_ops", command],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            **popen,
        )


class ServingProcess:
    """`realty serve` as a real child process on a free port (``url``); ``stop()`` ends it."""

    def __init__(self, settings: Settings, log_file: Path | None = None, **env: str) -> None:
        self.port = free_port()
        self.settings = settings.model_copy(update={"serving_port": self.port})
        self.url = self.settings.serving_url
        self.env = {**settings_env(self.settings), **env}
        self.log_file = log_file or settings.home / "logs" / f"serving-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServingProcess:
        self.process = start_realty("serve", self.env, self.log_file)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not http_ok(f"{self.url}/health"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the serving API did not start; its log ends:\n{tail}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServingProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def real_clean_listings(rows: int | None = None) -> pd.DataFrame:
    """The realtor sample's listings after the platform's cleaning (first ``rows`` raw rows)."""
    with gzip.open(REALTOR_SAMPLE, "rt") as handle:
        raw = pd.read_csv(handle, dtype=str, keep_default_na=False, nrows=rows)
    raw = raw.replace("", None)
    raw.insert(0, "row_index", range(len(raw)))
    return clean_batch(raw[["row_index", *LISTING_COLUMNS]]).clean


def register_price_model(
    settings: Settings,
    listings: pd.DataFrame,
    key: str = "sandbox",
    iterations: int = 60,
    promote: bool = True,
) -> str:
    """Train the candidates on ``listings`` (clean rows) with a tiny budget through
    ``train_and_register``, register the best as a new version of ``settings.price_model_name``
    and (``promote``) point ``production`` at it. Returns the version."""
    from realty.model.training import snapshot, split_for_training
    from realty.model.versions import TrainingData, train_and_register

    listings = listings.assign(batch_key=key)
    train, evaluation = split_for_training(listings, key, 0.2, settings.train_seed)
    small = settings.model_copy(update={"train_iterations": iterations, "train_max_seconds": 30.0})
    client = MlflowClient(settings.mlflow_url)
    data = TrainingData(train, evaluation, snapshot(listings))
    trained = train_and_register(small, client, data, key, "sandbox", ["a sandbox model"])
    version = trained.version.version
    if promote:
        rollout.promote(settings, client, settings.price_model_name, version, "sandbox", "sandbox")
    return version


def copy_version(client: MlflowClient, name: str, source_name: str, version: str) -> str:
    """A new version of ``name`` holding the same logged model as ``source_name`` v``version``
    (a real, distinct version without training again)."""
    source = client.get_model_version(source_name, version)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    model_id = source.source.removeprefix("models:/")  # MLflow 3: models:/<logged model id>
    copy = client.create_model_version(name, source.source, run_id=source.run_id, model_id=model_id)
    return copy.version


def register_digits_model(settings: Settings) -> str:
    """Materialise the ``digits_model`` asset (trains, registers, promotes); returns the version."""
    import dagster as dg

    from realty_assets.assets.digits import digits_model
    from realty_assets.resources import MlflowResource

    resource = MlflowResource(settings_json=settings.public_json())
    result = dg.materialize([digits_model], resources={"mlflow": resource})
    metadata = result.asset_materializations_for_node("digits_model")[0].metadata
    return str(metadata["version"].value)


class StackProcess:
    """`realty up` as a real child process in a session of its own, running the stack of
    ``settings``; what it records in its state file, and helpers to break it."""

    def __init__(self, settings: Settings, **env: str) -> None:
        self.settings = settings
        self.env = {**settings_env(settings), **env}
        self.log_file = settings.home / "realty-up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StackProcess:
        # A session of its own, as a user's shell would give it: our signals are not its.
        self.process = start_realty("up", self.env, self.log_file, start_new_session=True)
        return self

    def state(self) -> dict | None:
        return read_state(state_file(self.settings))

    def pids(self) -> dict[str, int | None]:
        state = self.state() or {"services": []}
        return {entry["name"]: entry["pid"] for entry in state["services"]}

    def wait_up(self, timeout_s: float = STACK_UP_TIMEOUT_S) -> None:
        """Until every service runs under the supervisor and answers its readiness probe."""
        from realty_ops.status import service_statuses

        deadline = time.monotonic() + timeout_s
        while True:
            rows = service_statuses(self.settings)
            if all(row.up and row.supervisor_state == "running" for row in rows):
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                down = [row.name for row in rows if not row.up]
                raise RuntimeError(f"the stack is not up ({down} down); see {self.log_file}")
            time.sleep(0.5)

    def kill(self, name: str, timeout_s: float = 600.0) -> float:
        """kill -9 a service; seconds until the supervisor has it answering again."""
        from realty_ops.status import service_statuses

        old = self.pids()[name]
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < timeout_s:
            row = next(r for r in service_statuses(self.settings) if r.name == name)
            if self.pids()[name] != old and row.up and row.supervisor_state == "running":
                return time.monotonic() - killed
            time.sleep(0.2)
        raise RuntimeError(f"{name} was not back {timeout_s:.0f} s after kill -9")

    def stop(self) -> set[int]:
        """SIGTERM `realty up` and wait for it; then end whatever still runs with its home.
        The process groups that had to be ended that way (none if it stopped its stack)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=180)
        running = {self.process.pid} if self.process.poll() is None else set()
        leftover = end_process_groups_of_home(self.settings.home, running)
        self.process.wait(timeout=30)
        return leftover
