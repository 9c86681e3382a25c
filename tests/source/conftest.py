"""A real simulator: ``create_app`` under uvicorn in a child process on a free port.

A child process (not a thread) so that a test can stop it and start a new one on the same state
file, as a restart of the real service would. Reusable from other test packages:
``from tests.source.conftest import SimulatorServer``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from realty_ops.sandbox import free_port
from source.app import SimulatorConfig
from source.faults import Faults

# The child: the config as JSON and the port on the command line, nothing else.
SERVE = """
import sys
import uvicorn
from source.app import SimulatorConfig, create_app
config = SimulatorConfig.model_validate_json(sys.argv[1])
uvicorn.run(create_app(config), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""
START_TIMEOUT_S = 30


class SimulatorServer:
    """One simulator process; ``restart()`` replaces it with a new one on the same state file."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SimulatorServer:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, self.config.model_dump_json(), str(self.port)],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"the simulator exited: {self.process.stderr.read().decode()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulator did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def set_faults(self, **faults: object) -> None:
        response = httpx.post(f"{self.url}/admin/faults", json=Faults(**faults).model_dump())
        response.raise_for_status()

    def get(self, path: str, group_number: int = 1, day: str = "Tuesday") -> httpx.Response:
        params = {"group_number": group_number, "day": day}
        return httpx.get(f"{self.url}{path}", params=params, timeout=60)


@pytest.fixture(scope="session")
def _shared_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorServer]:
    state_file = tmp_path_factory.mktemp("simulator") / "state.json"
    server = SimulatorServer(SimulatorConfig(state_file=state_file, rows_per_batch=500))
    yield server.start()
    server.stop()


@pytest.fixture
def simulator(_shared_simulator: SimulatorServer) -> Iterator[SimulatorServer]:
    """The shared generator-mode simulator (500 rows a batch, 10 batches, list rows). Tests
    keep out of each other's way by using their own day; faults are cleared afterwards."""
    yield _shared_simulator
    if _shared_simulator.process is not None and _shared_simulator.process.poll() is None:
        _shared_simulator.set_faults()


@pytest.fixture
def launch_simulator(tmp_path: Path) -> Iterator[Callable[..., SimulatorServer]]:
    """Start simulators with their own config (``state_file`` defaults to one in tmp_path);
    all are stopped after the test."""
    started: list[SimulatorServer] = []

    def launch(**config: object) -> SimulatorServer:
        config.setdefault("state_file", tmp_path / "state.json")
        server = SimulatorServer(SimulatorConfig(**config)).start()
        started.append(server)
        return server

    yield launch
    for server in started:
        server.stop()
