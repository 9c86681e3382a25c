"""Operations routes of the serving API, against real uvicorn, MLflow and PostgreSQL: health,
metrics, loaded models, the admin reload, no production version, the registry going away."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from realty_ops.sandbox import ServingProcess, free_port
from serving.schemas import EXAMPLE_LISTING
from tests.serving.test_digits_routes import DIGIT_EIGHT

TOKEN = "test-admin-token"


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port`` until ``close()``: a registry that can be
    made unreachable without stopping the session's MLflow server. The Host header is rewritten
    to the target's (MLflow refuses hosts it was not started for)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.connections += [client, upstream]
            host = (
                f"Host: 127.0.0.1:{self.port}".encode(),
                f"Host: 127.0.0.1:{self.target_port}".encode(),
            )
            for source, sink, rewrite in ((client, upstream, host), (upstream, client, None)):
                args = (source, sink, rewrite)
                threading.Thread(target=self._pipe, args=args, daemon=True).start()

    @staticmethod
    def _pipe(
        source: socket.socket, sink: socket.socket, rewrite: tuple[bytes, bytes] | None
    ) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data.replace(*rewrite) if rewrite else data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        # shutdown, not just close: close() does not wake a thread blocked in accept() or recv()
        # (the socket would live on), shutdown() does, and sends the FIN.
        for sock in (self.server, *self.connections):
            with contextlib.suppress(OSError):  # already closed by its pipe
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_health_models_and_metrics_of_a_healthy_service(serving_server, production_models):
    health = httpx.get(f"{serving_server.url}/health").json()
    assert health["status"] == "ok", health
    ready = httpx.get(f"{serving_server.url}/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "missing": {}}
    assert health["models"]["realty-price"] == {
        "status": "ok",
        "version": production_models.price_version,
        "reason": None,
        "rollout": None,
    }
    assert health["models"]["digits"]["version"] == production_models.digits_version

    models = {m["name"]: m for m in httpx.get(f"{serving_server.url}/v1/models").json()["models"]}
    price = models["realty-price"]
    assert price["loaded"]["version"] == production_models.price_version
    assert price["loaded"]["alias"] == "production"
    assert len(price["loaded"]["run_id"]) == 32
    assert price["last_attempt"]["outcome"] in ("loaded", "unchanged")

    for _ in range(3):
        httpx.post(f"{serving_server.url}/v1/price/predict", json={"listings": [EXAMPLE_LISTING]})
    httpx.post(f"{serving_server.url}/v1/price/predict", json={"listings": []})
    metrics = httpx.get(f"{serving_server.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    version = production_models.price_version
    lines = metrics.text.splitlines()
    ok = (
        f'realty_requests_total{{arm="production",method="POST",model_version="{version}",'
        f'route="/v1/price/predict",status="200"}}'
    )
    assert any(line.startswith(ok) and float(line.split()[-1]) >= 3 for line in lines)
    assert any('route="/v1/price/predict",status="422"' in line for line in lines)
    assert any(
        line.startswith("realty_request_seconds_bucket") and f'model_version="{version}"' in line
        for line in lines
    )
    for name in ("queue_depth", "rows_written_total", "rows_spooled_total", "rows_dropped_total"):
        assert any(line.startswith(f"realty_inference_log_{name} ") for line in lines), name
    assert f'realty_model_loaded{{model="realty-price",version="{version}"}} 1.0' in lines
    for name in ("scored", "failed", "dropped"):
        assert any(line.startswith(f"realty_shadow_{name}_total ") for line in lines), name
    [memory] = [line for line in lines if line.startswith("process_resident_memory_bytes ")]
    assert float(memory.split()[-1]) > 100e6  # a real process with the models loaded
    assert any(line.startswith("process_cpu_seconds_total ") for line in lines)
    assert any(line.startswith("process_open_fds ") for line in lines)


def test_metrics_add_up_the_workers_of_one_server(production_models) -> None:
    """With 2 uvicorn workers a scrape reaches one of them and still counts both's requests."""
    settings = production_models.settings
    with ServingProcess(settings, REALTY_SERVING_WORKERS="2") as server:
        files = settings.home / "metrics"
        sent = 0
        # New connections until both workers' counter files hold a price request.
        while sent < 400 and not _each_worker_answered(files, b"/v1/price/predict"):
            with httpx.Client() as client:
                client.post(f"{server.url}/v1/price/predict", json={"listings": [EXAMPLE_LISTING]})
            sent += 1
        assert _each_worker_answered(files, b"/v1/price/predict"), "one worker took every request"
        version = production_models.price_version
        for _ in range(8):  # each scrape is answered by either worker
            lines = httpx.get(f"{server.url}/metrics").text.splitlines()
            answered = [
                float(line.split()[-1])
                for line in lines
                if line.startswith("realty_requests_total{")
                and 'route="/v1/price/predict",status="200"' in line
            ]
            assert sum(answered) == sent
            assert f'realty_model_loaded{{model="realty-price",version="{version}"}} 1.0' in lines
        time.sleep(1.5)  # a mirror tick: each worker's resident memory is in the files
        lines = httpx.get(f"{server.url}/metrics").text.splitlines()
        [memory] = [line for line in lines if line.startswith("process_resident_memory_bytes ")]
        assert float(memory.split()[-1]) > 200e6  # two processes with the models loaded


def _each_worker_answered(files, route: bytes) -> bool:
    counters = list(files.glob("counter_*.db"))
    return len(counters) == 2 and all(route in path.read_bytes() for path in counters)


def test_the_admin_reload_needs_the_token(serving_server) -> None:
    # The session server has no token configured: the route is disabled.
    response = httpx.post(f"{serving_server.url}/v1/admin/reload")
    assert response.status_code == 403
    assert "REALTY_SERVING_ADMIN_TOKEN" in response.json()["detail"]


@pytest.fixture(scope="module")
def proxied_server(production_models) -> Iterator[tuple[ServingProcess, TcpProxy]]:
    """A server that reaches the registry through a proxy the test can cut; admin token set."""
    settings = production_models.settings
    proxy = TcpProxy(settings.mlflow_port)
    server = ServingProcess(
        settings.model_copy(update={"mlflow_port": proxy.port}),
        REALTY_SERVING_ADMIN_TOKEN=TOKEN,
        REALTY_SERVING_POLL_INTERVAL_S="0.5",
    )
    with server:
        yield server, proxy
    proxy.close()


def test_registry_down_keeps_the_loaded_version_and_says_degraded(
    proxied_server, production_models
) -> None:
    server, proxy = proxied_server
    url = server.url
    assert httpx.post(f"{url}/v1/admin/reload").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{url}/v1/admin/reload", headers=wrong).status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    reloaded = httpx.post(f"{url}/v1/admin/reload", headers=right, timeout=60)
    assert reloaded.status_code == 200
    attempts = reloaded.json()["attempts"]
    assert attempts["realty-price"]["outcome"] == "unchanged", attempts

    proxy.close()
    deadline = time.monotonic() + 60
    while (health := httpx.get(f"{url}/health").json())["status"] == "ok":
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    assert "registry unreachable" in health["reason"]
    assert health["models"]["realty-price"]["version"] == production_models.price_version
    answer = httpx.post(f"{url}/v1/price/predict", json={"listings": [EXAMPLE_LISTING]})
    assert answer.status_code == 200
    assert answer.headers["X-Model-Version"] == production_models.price_version
    # The poller tries the slots one after the other: the second fails a retry later.
    while _outcomes(url) != {"registry error"}:
        assert time.monotonic() < deadline, _outcomes(url)
        time.sleep(0.2)


def _outcomes(url: str) -> set[str]:
    """The outcomes of the last reload attempt of each model, from /v1/models."""
    return {m["last_attempt"]["outcome"] for m in httpx.get(f"{url}/v1/models").json()["models"]}


def test_without_a_production_version_only_the_price_routes_answer_503(production_models):
    settings = production_models.settings.model_copy(
        update={"price_model_name": "never-registered"}
    )
    with ServingProcess(settings) as server:
        response = httpx.post(
            f"{server.url}/v1/price/predict", json={"listings": [EXAMPLE_LISTING]}
        )
        assert response.status_code == 503
        assert "no production version of 'never-registered'" in response.json()["detail"]
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 200  # alive: no restart would load a missing model
        health = health.json()
        assert health["status"] == "degraded"
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 503  # not ready: no traffic until a version is promoted
        assert ready.json()["ready"] is False
        assert "never-registered" in ready.json()["missing"]
        assert health["models"]["never-registered"]["status"] == "unavailable"
        assert health["models"]["digits"]["status"] == "ok"
        image = base64.b64encode(DIGIT_EIGHT.read_bytes()).decode()
        digit = httpx.post(
            f"{server.url}/v1/digits/predict", json={"request_id": "1", "image": image}
        )
        assert digit.json()["prediction"] == 8
