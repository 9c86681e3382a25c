"""Promotions under load: the service swaps versions without a failed request, refuses a version
that fails its smoke prediction, and logs every answered listing to raw_data.inference_log."""

from __future__ import annotations

import re
import threading
import time

import httpx
import mlflow
import psycopg
from mlflow import MlflowClient
from sklearn.dummy import DummyRegressor

from realty.model import registry, rollout
from realty.model.price_model import PriceModel
from realty_ops.sandbox import ServingProcess, copy_version
from serving.schemas import EXAMPLE_LISTING

SWAP_MODEL = "realty-price-swap"  # its own name: the session's realty-price stays as it is
CLIENTS = 16


def unfitted_version(client: MlflowClient, name: str) -> str:
    """A version that loads but cannot predict (its estimator was never fitted)."""
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name="broken"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=PriceModel(DummyRegressor()), pip_requirements=[]
        )
    return registry.register(client, name, info, {}, "never fitted").version


class Hammer:
    """``CLIENTS`` threads posting one listing at a time until stopped; they record the version
    of every answer, in order, and every failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.versions: list[list[str]] = [[] for _ in range(CLIENTS)]
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CLIENTS)]

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json={"listings": [EXAMPLE_LISTING]})
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                    continue
                self.versions[index].append(response.json()["model"]["version"])

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def answered(self) -> int:
        return sum(len(v) for v in self.versions)

    def wait_for(self, version: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(v and v[-1] == version for v in self.versions):
            assert time.monotonic() < deadline, f"v{version} never answered"
            time.sleep(0.1)


def inference_log_rows(settings, model_name: str) -> int:
    with psycopg.connect(settings.database_url("raw_data")) as conn:
        return conn.execute(
            "SELECT count(*) FROM inference_log WHERE model_name = %s AND route = %s",
            (model_name, "/v1/price/predict"),
        ).fetchone()[0]


def test_promotions_under_load_swap_without_a_failed_request(production_models) -> None:
    settings = production_models.settings
    client = MlflowClient(settings.mlflow_url)
    source = ("realty-price", production_models.price_version)
    first = copy_version(client, SWAP_MODEL, *source)
    rollout.promote(settings, client, SWAP_MODEL, first, "test", "first")
    server = ServingProcess(
        settings.model_copy(update={"price_model_name": SWAP_MODEL}),
        REALTY_SERVING_POLL_INTERVAL_S="0.5",
    )
    with server:
        url = f"{server.url}/v1/price/predict"
        with Hammer(url) as hammer:
            hammer.wait_for(first)
            second = copy_version(client, SWAP_MODEL, *source)
            rollout.promote(settings, client, SWAP_MODEL, second, "test", "second")
            hammer.wait_for(second)
            time.sleep(1.0)  # everyone is on the new version now

            broken = unfitted_version(client, SWAP_MODEL)
            rollout.promote(settings, client, SWAP_MODEL, broken, "test", "broken")
            deadline = time.monotonic() + 60
            while True:
                models = httpx.get(f"{server.url}/v1/models").json()["models"]
                slot = next(m for m in models if m["name"] == SWAP_MODEL)
                if slot["last_failure"] and slot["last_failure"]["version"] == broken:
                    break
                assert time.monotonic() < deadline, slot
                time.sleep(0.2)
            time.sleep(1.0)

        assert hammer.failures == []
        assert hammer.answered() > 50
        for seen in hammer.versions:  # each client: the old version, then only the new one
            assert seen, "a client got no answer"
            switched = seen.index(second) if second in seen else len(seen)
            assert set(seen[:switched]) <= {first}
            assert set(seen[switched:]) <= {second}
        assert any(second in seen for seen in hammer.versions)

        assert slot["loaded"]["version"] == second  # the broken version was not swapped in
        assert "NotFittedError" in slot["last_failure"]["message"]
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "degraded"
        assert f"v{broken}" in health["models"][SWAP_MODEL]["reason"]
        metrics = httpx.get(f"{server.url}/metrics").text
        # At least once: the poller retries the broken version with backoff while it is the alias.
        failed = re.search(rf'model="{SWAP_MODEL}",outcome="failed"}} (\S+)', metrics)
        assert failed and float(failed.group(1)) >= 1.0, metrics
        assert f'realty_model_reloads_total{{model="{SWAP_MODEL}",outcome="loaded"}} 2.0' in metrics
    # Stopping the server flushed the inference log: one row per answered listing.
    assert inference_log_rows(settings, SWAP_MODEL) == hammer.answered()
