"""The web app's HTTP clients against real servers: a small scripted FastAPI app on loopback for
each kind of failure, and the real MLflow server for the registry."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from realty_ops.sandbox import app_in_thread
from tests.ui.conftest import dead_url
from ui.client import BackendError, RegistryClient, ServingClient


class Listing(BaseModel):
    bed: int = Field(ge=0)


class Listings(BaseModel):
    listings: list[Listing]


def scripted_app() -> FastAPI:
    """Answers the way a serving API does when it is healthy, not ready, strict or slow."""
    app = FastAPI()

    @app.post("/v1/price/predict")
    def predict(body: Listings) -> dict:
        if body.listings[0].bed == 99:
            raise HTTPException(503, "no production model of realty-price yet")
        return {"request_id": "r", "model": {"name": "m", "version": "3"}, "predictions": []}

    @app.get("/v1/models")
    def slow() -> dict:
        time.sleep(2)
        return {}

    @app.get("/v1/batches")
    def broken() -> dict:
        raise RuntimeError("boom")

    return app


@pytest.fixture(scope="module")
def scripted_url() -> Iterator[str]:
    with app_in_thread(scripted_app()) as url:
        yield url


def test_an_answer_is_returned(scripted_url: str) -> None:
    answer = ServingClient(scripted_url).predict_price({"bed": 2})
    assert answer["model"] == {"name": "m", "version": "3"}


def test_not_ready_carries_the_servers_reason(scripted_url: str) -> None:
    with pytest.raises(BackendError, match="not ready: no production model of realty-price yet"):
        ServingClient(scripted_url).predict_price({"bed": 99})


def test_a_refused_input_names_the_field(scripted_url: str) -> None:
    with pytest.raises(BackendError, match=r"refused the request: listings\.0\.bed: ") as error:
        ServingClient(scripted_url).predict_price({"bed": -1})
    assert error.value.status == 422


def test_a_server_error_is_reported_without_a_traceback(scripted_url: str) -> None:
    with pytest.raises(BackendError, match=r"serving API failed \(500\)") as error:
        ServingClient(scripted_url).batches()
    assert "Traceback" not in str(error.value)


def test_a_slow_server_times_out_with_a_plain_message(scripted_url: str) -> None:
    with pytest.raises(BackendError, match="did not answer in time"):
        ServingClient(scripted_url, timeout_s=0.3).models()


def test_a_stopped_server_is_not_reachable() -> None:
    url = dead_url()
    with pytest.raises(BackendError, match=f"serving API at {url} is not reachable") as error:
        ServingClient(url).predict_price({"bed": 2})
    assert error.value.status is None
    with pytest.raises(BackendError, match=r"MLflow server .* is not reachable"):
        RegistryClient(url).versions("realty-price")


@pytest.mark.integration
def test_registry_lists_versions_with_aliases_tags_and_metrics(production_models) -> None:
    settings = production_models.settings
    registry = RegistryClient(settings.mlflow_url)
    versions = registry.versions(settings.price_model_name)
    numbers = [v.number for v in versions]
    assert numbers == sorted(numbers, reverse=True)
    production = next(v for v in versions if v.version == production_models.price_version)
    assert "production" in production.aliases
    assert production.tags["trigger"] == "sandbox" and production.reasons == ["a sandbox model"]
    assert {"mae_usd", "r2_log"} <= set(production.metrics)
    assert production.created_ms > 0 and production.run_id

    snapshot = registry.artifact(production.run_id, "reference/profile.json")
    assert snapshot and snapshot.startswith(b"{")
    assert registry.artifact(production.run_id, "no/such/file.json") is None
    assert registry.versions("no-such-model") == []
