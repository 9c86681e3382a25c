"""Price routes against real uvicorn and the real registry; the fast path equals the pyfunc."""

from __future__ import annotations

import copy
import inspect
import math

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from realty.model import registry, rollout
from realty.model.features import feature_frame, feature_rows, prepare_features
from realty.model.hgb_rows import HgbRows
from realty.model.price_model import HGB_ROWS_MAX, client_example, log_price_model
from realty.model.versions import CALIBRATION_ARTIFACT
from realty_ops.sandbox import ServingProcess, real_clean_listings
from serving.routes import price
from serving.schemas import EXAMPLE_LISTING, Listing

CANDIDATES = ("catboost", "hist_gradient_boosting", "baseline_median")
BEFORE_INTERVALS = "realty-price-before-intervals"


@pytest.fixture(scope="module")
def client_listings() -> list[dict]:
    """5,000 real listings (beyond the 3,000 the models trained on) as a client sends them,
    after the route's validation."""
    rows = client_example(real_clean_listings(8_000).iloc[3_000:])
    return [Listing(**row).fields() for row in rows.to_dict("records")]


ODD_LISTINGS = pd.DataFrame(
    {
        "status": ["for_sale", "SOLD ", None, "for_sale", "x", "sold", "", "for_sale"],
        "city": [" New  York ", "nan", None, "", "Boston", "x", "y", "z"],
        "state": ["new york", "Ohio", None, "Atlantis", "MASSACHUSETTS", "ohio ", "  ", "PR"],
        "zip_code": ["601", 601.0, "02134-1234", "ABC", "00000", 1e5, "12345.00", " 2134 "],
        "bed": [3, "3", " 4 ", "three", None, True, "1e1", "1_0"],
        "bath": [float("inf"), -1, 2.5, "2", None, 0, "0x1", "+2"],
        "prev_sold_date": [
            "2020-01-05",
            "2020-1-5",
            "1900-01-01",
            "2020-13-01",
            "2020-02-29T10:00",
            None,
            "yesterday",
            "2262-04-11",
        ],
        "house_size": [0, -5, "1500", 1e9, None, "nan", 1.5, "2,000"],
        "acre_lot": [0, 0.25, "1e-3", None, -1, "big", 10, 5e4],
        "brokered_by": [1.0, "22611", "22611.0", -3, 2**60, None, "x", 1.5],
    }
)


def test_feature_rows_read_odd_values_as_prepare_features_does() -> None:
    """Text numbers, float zip codes, ZIP+4, bad dates, unknown states: value for value."""
    records = ODD_LISTINGS.astype(object).where(ODD_LISTINGS.notna(), None).to_dict("records")
    expected = prepare_features(pd.DataFrame(records))
    pd.testing.assert_frame_equal(feature_frame(*feature_rows(records)), expected, check_exact=True)
    for record in records:  # one at a time, as a lone request
        alone = prepare_features(pd.DataFrame([record]))
        pd.testing.assert_frame_equal(
            feature_frame(*feature_rows([record])), alone, check_exact=True
        )


def candidate_model(settings, candidate: str) -> mlflow.pyfunc.PyFuncModel:
    """The pyfunc model the loop logged for ``candidate``, loaded as serving loads it."""
    runs = mlflow.search_runs(
        experiment_names=[settings.price_model_name],
        filter_string=f"tags.candidate = '{candidate}'",
        output_format="list",
    )
    return mlflow.pyfunc.load_model(f"runs:/{runs[0].info.run_id}/model")


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_the_fast_path_prices_exactly_as_the_pyfunc_model(
    production_models, client_listings, candidate
) -> None:
    """Every candidate kind the loop can promote, loaded from MLflow as serving loads it."""
    pyfunc = candidate_model(production_models.settings, candidate)
    through_pyfunc = pyfunc.predict(pd.DataFrame(client_listings))
    fast = pyfunc.unwrap_python_model().predict_rows(client_listings)
    assert len(fast) == len(client_listings)
    np.testing.assert_allclose(fast, through_pyfunc, rtol=1e-9, atol=0)
    one_by_one = [pyfunc.unwrap_python_model().predict_rows([x])[0] for x in client_listings[:50]]
    np.testing.assert_allclose(one_by_one, through_pyfunc[:50], rtol=1e-9, atol=0)


def test_hgb_rows_give_the_hist_gradient_boosting_pipelines_numbers(
    production_models, client_listings
) -> None:
    """HistGradientBoosting's fast path (dict look-ups for its encoders, one numpy walk of
    all trees) against the fitted scikit-learn pipeline: the same log prices to the last bit,
    for 5,000 real listings and the odd ones (unknown states and statuses take the trees'
    missing-value branches)."""
    model = candidate_model(production_models.settings, "hist_gradient_boosting")
    model = model.unwrap_python_model()
    assert HgbRows.supports(model.estimator)
    odd = ODD_LISTINGS.astype(object).where(ODD_LISTINGS.notna(), None).to_dict("records")
    listings = client_listings + odd
    numbers, categories = feature_rows(listings, model.config)
    fast = HgbRows(model.estimator).predict_log(numbers, categories)
    through_sklearn = model.estimator.predict(feature_frame(numbers, categories))
    np.testing.assert_array_equal(fast, through_sklearn)
    served = model.predict_rows(listings[:HGB_ROWS_MAX])  # the batch size that takes HgbRows
    np.testing.assert_array_equal(served, np.exp(fast[:HGB_ROWS_MAX]))


def test_the_predict_route_runs_nothing_in_a_worker_thread() -> None:
    """FastAPI runs a plain ``def`` route or dependency in a worker thread: two thread wake-ups
    per request, which cost the hot path more than its prediction on a busy machine."""
    route = next(r for r in price.router.routes if r.path == "/v1/price/predict")
    calls = [route.endpoint, *(dependency.call for dependency in route.dependant.dependencies)]
    assert len(calls) > 1
    assert all(inspect.iscoroutinefunction(call) for call in calls), calls


def test_predict_names_the_version_and_matches_the_registered_model(
    serving_server, production_models, client_listings
) -> None:
    listings = client_listings[:3]
    response = httpx.post(f"{serving_server.url}/v1/price/predict", json={"listings": listings})
    assert response.status_code == 200, response.text
    body = response.json()
    version = production_models.price_version
    assert body["model"] == {"name": "realty-price", "version": version, "arm": "production"}
    assert response.headers["X-Model-Version"] == version
    assert response.headers["X-Model-Arm"] == "production"
    assert {(p["version"], p["arm"]) for p in body["predictions"]} == {(version, "production")}
    assert len(body["request_id"]) == 32
    expected = mlflow.pyfunc.load_model(f"models:/realty-price/{version}").predict(
        pd.DataFrame(listings)
    )
    prices = [p["price"] for p in body["predictions"]]
    np.testing.assert_allclose(prices, expected, rtol=1e-9)
    # Each price with its interval, as the registered model's calibration gives it.
    model = registry.load_price_model("realty-price", version)
    bounds = model.price_frame(pd.DataFrame(listings), 0.9)
    assert [p["interval"]["level"] for p in body["predictions"]] == [0.9] * 3
    np.testing.assert_allclose([p["interval"]["low"] for p in body["predictions"]], bounds.low)
    np.testing.assert_allclose([p["interval"]["high"] for p in body["predictions"]], bounds.high)
    assert all(
        p["interval"]["low"] < p["price"] < p["interval"]["high"] for p in body["predictions"]
    )


def test_the_version_carries_its_calibration_and_its_eval_coverage(production_models) -> None:
    """Trained by train_and_register on ~3,000 listings: calibrated on its ~600 eval rows."""
    client = MlflowClient(production_models.settings.mlflow_url)
    version = client.get_model_version("realty-price", production_models.price_version)
    coverage = float(version.tags["metric.interval_coverage"])
    assert 0.85 <= coverage <= 0.95  # 0.9 nominal, +- ~2.5 points on ~600 rows
    run = client.get_run(version.run_id)
    assert run.data.metrics["interval_coverage"] == pytest.approx(coverage, rel=1e-5)
    described = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{CALIBRATION_ARTIFACT}")
    model = registry.load_price_model("realty-price", version.version)
    assert described == model.calibration.describe()
    assert described["rows"] == int(version.tags["eval_rows"]) > 500
    assert described["min_group_rows"] == 100
    assert all(rows >= 100 for rows in described["groups"].values())


@pytest.fixture(scope="module")
def version_before_intervals(production_models) -> str:
    """The production model logged as models were before intervals: no calibration."""
    settings = production_models.settings
    model = copy.copy(registry.load_price_model("realty-price", production_models.price_version))
    del model.__dict__["calibration"]
    client = MlflowClient(settings.mlflow_url)
    mlflow.set_experiment(BEFORE_INTERVALS)
    with mlflow.start_run(run_name="before intervals"):
        info = log_price_model(model, "model", production_models.listings.head(5))
    version = registry.register(client, BEFORE_INTERVALS, info, {}, "no calibration").version
    rollout.promote(settings, client, BEFORE_INTERVALS, version, "test", "old")
    return version


def test_a_version_logged_before_intervals_serves_without_them(
    production_models, version_before_intervals
) -> None:
    settings = production_models.settings.model_copy(update={"price_model_name": BEFORE_INTERVALS})
    with ServingProcess(settings) as server:
        predicted = httpx.post(
            f"{server.url}/v1/price/predict", json={"listings": [EXAMPLE_LISTING]}
        ).json()
        explained = httpx.post(
            f"{server.url}/v1/price/explain", json={"listing": EXAMPLE_LISTING}, timeout=60
        ).json()
    assert predicted["model"]["version"] == version_before_intervals
    assert predicted["predictions"][0]["interval"] is None
    assert predicted["predictions"][0]["price"] > 0
    assert explained["interval"] is None and explained["price"] > 0


def test_the_interval_level_is_a_setting(production_models) -> None:
    listings = [EXAMPLE_LISTING, {"status": "sold", "state": "Atlantis", "city": "x"}]
    model = registry.load_price_model("realty-price", production_models.price_version)
    with ServingProcess(production_models.settings, REALTY_PRICE_INTERVAL_LEVEL="0.5") as server:
        predicted = httpx.post(f"{server.url}/v1/price/predict", json={"listings": listings})
        explained = httpx.post(
            f"{server.url}/v1/price/explain", json={"listing": EXAMPLE_LISTING}, timeout=60
        )
    half, ninety = model.price_rows(listings, 0.5), model.price_rows(listings, 0.9)
    intervals = [p["interval"] for p in predicted.json()["predictions"]]
    assert [i["level"] for i in intervals] == [0.5, 0.5]
    np.testing.assert_allclose([i["low"] for i in intervals], half.low)
    np.testing.assert_allclose([i["high"] for i in intervals], half.high)
    assert (half.high < ninety.high).all() and (half.low > ninety.low).all()
    assert explained.json()["interval"]["high"] == pytest.approx(half.high[0])


def test_unknown_places_and_missing_fields_still_get_a_price(serving_server) -> None:
    listings = [
        {"status": "sold", "city": "Atlantis", "state": "Nowhere", "zip_code": 99999},
        {"status": "ready_to_build"},
        {**EXAMPLE_LISTING, "zip_code": 2134.0, "brokered_by": "22611", "bed": "3"},
    ]
    response = httpx.post(f"{serving_server.url}/v1/price/predict", json={"listings": listings})
    assert response.status_code == 200, response.text
    prices = [p["price"] for p in response.json()["predictions"]]
    assert all(math.isfinite(p) and p > 0 for p in prices)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"listings": []}, "at least 1"),
        ({"listings": [EXAMPLE_LISTING] * 1001}, "at most 1000"),
        ({"listings": [{**EXAMPLE_LISTING, "status": "rented"}]}, "for_sale"),
        ({"listings": [{**EXAMPLE_LISTING, "bed": -1}]}, "greater than or equal to 0"),
        ({"listings": [{**EXAMPLE_LISTING, "bed": "three"}]}, "valid number"),
        ({"listings": [{**EXAMPLE_LISTING, "house_size": 1e9}]}, "less than or equal"),
        ({"listings": [{**EXAMPLE_LISTING, "prev_sold_date": "yesterday"}]}, "date"),
        ({"listings": [{**EXAMPLE_LISTING, "colour": "blue"}]}, "Extra inputs"),
        ({"listings": [{"city": "Boston"}]}, "Field required"),
        ({"listing": EXAMPLE_LISTING}, "Field required"),
    ],
)
def test_bad_listings_are_422_with_the_reason(serving_server, body, fragment) -> None:
    response = httpx.post(f"{serving_server.url}/v1/price/predict", json=body)
    assert response.status_code == 422
    assert fragment in response.text


def test_not_json_is_a_4xx(serving_server) -> None:
    response = httpx.post(
        f"{serving_server.url}/v1/price/predict",
        content=b"listings=1",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "JSON" in response.text


def test_explain_adds_up_to_the_price_of_the_same_version(
    serving_server, production_models
) -> None:
    response = httpx.post(
        f"{serving_server.url}/v1/price/explain", json={"listing": EXAMPLE_LISTING}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == production_models.price_version
    shap = [c["shap"] for c in body["contributions"]]
    assert abs(shap[0]) == max(abs(s) for s in shap)
    assert body["log_price"] == pytest.approx(body["base_value"] + sum(shap), abs=1e-9)
    assert math.log(body["price"]) == pytest.approx(body["log_price"], abs=1e-4)
    assert body["interval"]["level"] == 0.9
    assert body["interval"]["low"] < body["price"] < body["interval"]["high"]
    features = {c["feature"]: c["value"] for c in body["contributions"]}
    assert features["state"] == "Massachusetts"
    assert features["zip_code"] == "02134"
