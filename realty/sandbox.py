"""Isolated local servers on free ports, for the tests and the benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from realty.settings import Settings
from realty.stack import Stack, http_ok


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

    def start(self) -> SimulatorProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "realty", "source"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not http_ok(f"{self.url}/health"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
