"""Training: snapshot and split, candidates and budget, metrics, the logged pyfunc model."""

from __future__ import annotations

import gzip
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest

from realty.drift import ReferenceProfile, drift_report
from realty.ingest.cleaning import CleaningRules, clean_batch
from realty.model.features import FEATURE_COLUMNS, INPUT_FIELDS, prepare_features
from realty.model.intervals import UnseenResiduals, conformal_quantile, covered
from realty.model.price_model import PriceModel, log_price_model
from realty.model.training import (
    CANDIDATES,
    MedianPriceBaseline,
    TrainingBudget,
    evaluate,
    snapshot,
    split_for_training,
    subsample,
    train_candidates,
)
from realty.model_error import PerformanceDrift
from realty.schema import LISTING_COLUMNS
from tests.conftest import require_sample

RULES = CleaningRules(today=date(2024, 6, 30))
SMALL = TrainingBudget(iterations=150, early_stopping_rounds=30, learning_rate=0.2)
# (state, city, zip code, price level): prices follow place, size and rooms, as in the data.
PLACES = [
    ("Massachusetts", "Boston", "02134", 13.4),
    ("Massachusetts", "Boston", "02135", 13.2),
    ("Massachusetts", "Fall River", "02720", 12.3),
    ("Massachusetts", "Fall River", "02721", 12.1),
    ("Texas", "Austin", "78701", 13.0),
    ("Texas", "Austin", "78702", 12.8),
    ("Texas", "El Paso", "79901", 11.8),
    ("Texas", "El Paso", "79902", 11.6),
    ("Puerto Rico", "Adjuntas", "00601", 11.2),
    ("Puerto Rico", "San Juan", "00901", 11.9),
]


def raw_listings(rows: int, seed: int) -> pd.DataFrame:
    """Raw rows (text) as the data API delivers them, with a learnable price."""
    rng = np.random.default_rng(seed)
    place = rng.integers(0, len(PLACES), rows)
    size = np.exp(rng.normal(7.3, 0.4, rows)).round()
    bed = np.clip(np.round(size / 550 + rng.normal(0, 0.7, rows)), 1, 8)
    bath = np.clip(np.round(bed * 0.7 + rng.normal(0, 0.5, rows)), 1, 6)
    level = np.array([PLACES[i][3] for i in place])
    log_price = level + 0.8 * (np.log(size) - 7.3) + 0.05 * bath + rng.normal(0, 0.15, rows)
    return pd.DataFrame(
        {
            "row_index": np.arange(rows),
            "brokered_by": rng.integers(1, 50, rows).astype(str),
            "status": rng.choice(["for_sale", "sold"], rows),
            "price": np.exp(log_price).round().astype(int).astype(str),
            "bed": bed.astype(int).astype(str),
            "bath": bath.astype(int).astype(str),
            "acre_lot": np.round(rng.uniform(0.05, 2, rows), 2).astype(str),
            "street": rng.integers(1, 10**6, rows).astype(str),
            "city": [PLACES[i][1] for i in place],
            "state": [PLACES[i][0] for i in place],
            "zip_code": [PLACES[i][2] for i in place],
            "house_size": size.astype(int).astype(str),
            "prev_sold_date": [
                f"{year}-0{month}-1{day}"
                for year, month, day in zip(
                    rng.integers(1990, 2023, rows),
                    rng.integers(1, 10, rows),
                    rng.integers(0, 10, rows),
                    strict=True,
                )
            ],
        }
    )


def clean_listings(rows: int, seed: int, batch_key: str = "g1-d1-b001") -> pd.DataFrame:
    clean = clean_batch(raw_listings(rows, seed), RULES).clean
    return clean.assign(batch_key=batch_key)


def batches(*sizes: int) -> pd.DataFrame:
    return pd.concat(
        [clean_listings(n, seed=i, batch_key=f"g1-d1-b{i:03d}") for i, n in enumerate(sizes, 1)],
        ignore_index=True,
    )


# ---------------------------------------------------------------- snapshot and split


def test_the_split_takes_a_seeded_fifth_of_every_batch_including_the_newest() -> None:
    frame = batches(400, 300, 50)
    train, eval_ = split_for_training(frame, "g1-d1-b003", eval_fraction=0.2, seed=0)
    assert len(train) + len(eval_) == len(frame)
    assert set(train["row_hash"]).isdisjoint(eval_["row_hash"])
    counts = eval_["batch_key"].value_counts().to_dict()
    sizes = frame["batch_key"].value_counts()
    assert counts == {key: round(0.2 * n) for key, n in sizes.items()}
    assert counts["g1-d1-b003"] == 10

    again = split_for_training(frame.sample(frac=1, random_state=7), "g1-d1-b003", seed=0)[1]
    assert set(again["row_hash"]) == set(eval_["row_hash"])  # row order does not matter
    other = split_for_training(frame, "g1-d1-b003", seed=1)[1]
    assert set(other["row_hash"]) != set(eval_["row_hash"])  # the seed does


def test_a_listing_stays_on_its_side_when_batches_are_added() -> None:
    tiny = clean_listings(2, seed=8, batch_key="g1-d1-b008")  # gives its one eval row
    first = pd.concat([batches(300, 200), tiny])
    grown = pd.concat([first, clean_listings(100, seed=9, batch_key="g1-d1-b009")])
    before = split_for_training(first, "g1-d1-b008")[1]
    after = split_for_training(grown, "g1-d1-b009")[1]
    assert set(before["row_hash"]) <= set(after["row_hash"])
    assert len(after) == len(before) + 20


def test_a_tiny_newest_batch_is_still_represented() -> None:
    frame = pd.concat([batches(200), clean_listings(2, seed=5, batch_key="g1-d1-b099")])
    eval_ = split_for_training(frame, "g1-d1-b099")[1]
    assert (eval_["batch_key"] == "g1-d1-b099").sum() == 1
    with pytest.raises(ValueError, match="no rows"):
        split_for_training(frame, "g1-d1-b777")


def test_the_snapshot_hash_follows_content_not_order() -> None:
    frame = batches(50, 30)
    shot = snapshot(frame)
    assert shot["batch_keys"] == ["g1-d1-b001", "g1-d1-b002"]
    assert shot["rows"] == len(frame)
    assert len(shot["content_sha256"]) == 64
    assert snapshot(frame.iloc[::-1])["content_sha256"] == shot["content_sha256"]

    raw = raw_listings(50, seed=1)
    raw.loc[3, "price"] = str(int(raw.loc[3, "price"]) + 1)  # one listing's price changes
    changed = pd.concat(
        [clean_batch(raw, RULES).clean.assign(batch_key="g1-d1-b001"), frame.iloc[50:]]
    )
    assert snapshot(changed)["content_sha256"] != shot["content_sha256"]
    assert snapshot(frame.iloc[1:])["content_sha256"] != shot["content_sha256"]


# ---------------------------------------------------------------- metrics and baseline


def test_evaluate_reports_log_and_dollar_errors() -> None:
    true = np.array([100_000.0, 200_000.0, 400_000.0])
    assert evaluate(true, true) == {
        "mae_log": 0.0, "rmse_log": 0.0, "r2_log": 1.0, "mae_usd": 0.0, "rmse_usd": 0.0,
    }  # fmt: skip
    metrics = evaluate(true, true * np.e)  # every prediction e times too high
    assert metrics["mae_log"] == pytest.approx(1.0)
    assert metrics["rmse_log"] == pytest.approx(1.0)
    assert metrics["mae_usd"] == pytest.approx((np.e - 1) * true.mean())
    assert metrics["r2_log"] < 0
    with pytest.raises(ValueError):
        evaluate(true, true[:2])


def test_the_baseline_falls_back_from_zip_to_state_to_everyone() -> None:
    train = pd.DataFrame(
        {
            "status": "sold",
            "city": ["Boston", "Boston", "Boston", "Austin", "Austin"],
            "state": ["Massachusetts"] * 3 + ["Texas"] * 2,
            "zip_code": ["02134", "02134", "02135", "78701", None],
            "price": [100_000.0, 300_000.0, 1_000_000.0, 50_000.0, 70_000.0],
        }
    )
    baseline = MedianPriceBaseline().fit(prepare_features(train), np.log(train["price"]))
    asked = pd.DataFrame(
        {
            "status": "sold",
            "city": "Anywhere",
            "state": ["Massachusetts", "Massachusetts", "Texas", "Atlantis", "Texas"],
            "zip_code": ["02134", "02199", "99999", "02135", None],
        }
    )
    predicted = np.exp(baseline.predict(prepare_features(asked)))
    expected = [
        np.sqrt(100_000 * 300_000),  # the zip's median (of logs)
        300_000,  # unknown zip: the state's median
        np.sqrt(50_000 * 70_000),  # unknown zip in Texas: Texas' median
        1_000_000,  # a known zip wins even in an unknown state
        np.sqrt(50_000 * 70_000),  # no zip: the state
    ]
    np.testing.assert_allclose(predicted, expected, rtol=1e-9)
    nowhere = prepare_features(pd.DataFrame([{"status": "sold", "city": "X", "state": "Y"}]))
    assert np.exp(baseline.predict(nowhere))[0] == pytest.approx(100_000)  # everyone's median


# ---------------------------------------------------------------- candidates


@pytest.fixture(scope="module")
def trained() -> tuple[list, pd.DataFrame]:
    frame = batches(1_500, 1_000)
    train, eval_ = split_for_training(frame, "g1-d1-b002")
    return train_candidates(train, eval_, SMALL), eval_


def test_every_candidate_is_trained_scored_and_sorted_best_first(trained) -> None:
    results, eval_ = trained
    assert sorted(r.name for r in results) == sorted(CANDIDATES)
    maes = [r.metrics["mae_usd"] for r in results]
    assert maes == sorted(maes)
    assert results[-1].name == "baseline_median"  # the learners beat it on learnable data
    for result in results:
        assert set(result.metrics) >= {
            "mae_log", "rmse_log", "r2_log", "mae_usd", "rmse_usd",
            "interval_coverage", "interval_half_width_log",
        }  # fmt: skip
        assert isinstance(result.model, PriceModel)
        # Calibrated on the eval split: ~500 rows, so the cross-fit coverage is 0.9 +- ~0.03.
        assert result.model.calibration.rows == len(eval_)
        assert 0.85 <= result.metrics["interval_coverage"] <= 0.95
        assert 0 < result.metrics["interval_half_width_log"] < 3
        assert result.eval_rows == len(eval_) and result.train_rows > 1_500
        assert result.train_seconds >= 0
        assert set(result.feature_importances) == set(FEATURE_COLUMNS)
        assert sum(result.feature_importances.values()) == pytest.approx(1.0)
        assert result.params["train_rows"] == result.train_rows
    best = results[0]
    assert best.metrics["r2_log"] > 0.8
    top = max(best.feature_importances, key=best.feature_importances.get)
    place = {"zip_code", "city", "zip3", "zip_number", "state", "county", "cbsa", "lat", "lon"}
    assert top in place | {"log_county_wage", "log_county_jobs", "log_house_size"}
    baseline = next(r for r in results if r.name == "baseline_median")
    assert set(k for k, v in baseline.feature_importances.items() if v > 0) <= {
        "zip_code",
        "state",
    }


def test_residuals_on_unseen_batches_calibrate_the_intervals_when_enough() -> None:
    frame = batches(600, 400)
    train, eval_ = split_for_training(frame, "g1-d1-b002")
    wide = UnseenResiduals(["Texas"] * 150 + ["Ohio"] * 50, np.linspace(0.0, 2.0, 200), 2)
    [result] = train_candidates(train, eval_, SMALL, ["baseline_median"], unseen=wide)

    table = result.model.interval_table(0.9)
    assert result.model.calibration.rows == 200
    assert table.pooled == pytest.approx(conformal_quantile(np.linspace(0.0, 2.0, 200), 0.9))
    assert set(table.by_group) == {"Texas"}  # Ohio's 50 are too few for a quantile of its own
    assert result.params["interval_calibration"] == "200 residuals on 2 unseen batches"
    # Not fitted on the eval rows, so their coverage is measured directly, not cross-fit.
    log_true = np.log(eval_["price"].to_numpy("float64"))
    log_pred = np.log(result.model.predict(None, eval_))
    groups = result.model.features(eval_)["state"].tolist()
    inside = covered(table, groups, log_true, log_pred).mean()
    assert result.metrics["interval_coverage"] == pytest.approx(inside)

    few = UnseenResiduals(["Texas"] * 99, np.ones(99))
    [fallback] = train_candidates(train, eval_, SMALL, ["baseline_median"], unseen=few)
    assert fallback.model.calibration.rows == len(eval_)
    assert fallback.params["interval_calibration"] == f"{len(eval_)} eval rows"


def test_unknown_categories_and_odd_inputs_do_not_crash(trained) -> None:
    results, _ = trained
    odd = pd.DataFrame(
        [
            {"status": "pending", "city": "Atlantis", "state": "Atlantis", "zip_code": "12345",
             "bed": "2", "house_size": 1200.0, "brokered_by": 99_999_999.0},
            {"status": "sold", "city": None, "state": None},
            {"status": "SOLD", "city": "boston", "state": "massachusetts", "zip_code": 2134.0,
             "bed": "many", "prev_sold_date": "someday"},
        ]
    )  # fmt: skip
    for result in results:
        predicted = result.model.predict(None, odd)
        assert predicted.shape == (3,)
        assert np.isfinite(predicted).all() and (predicted > 0).all()
        assert result.model.predict(None, odd.iloc[:0]).shape == (0,)


def test_the_budget_caps_rows_and_time() -> None:
    frame = clean_listings(1_200, seed=3)
    assert subsample(frame, 2_000) is frame
    capped = subsample(frame, 500, seed=1)
    assert len(capped) == 500 and capped.index.is_unique
    assert capped.index.equals(subsample(frame, 500, seed=1).index)
    assert not capped.index.equals(subsample(frame, 500, seed=2).index)

    train, eval_ = split_for_training(frame, "g1-d1-b001")
    budget = TrainingBudget(max_rows=400, max_seconds=0.0, iterations=5_000)
    results = train_candidates(
        train, eval_, budget, candidates=("catboost", "hist_gradient_boosting")
    )
    for result in results:
        assert result.train_rows == 400
        assert result.params["train_rows_given"] == len(train)
        assert result.params["stopped_by_deadline"] is True
    by_name = {r.name: r.params for r in results}
    assert by_name["catboost"]["trees"] < 5
    assert by_name["hist_gradient_boosting"]["iterations_run"] <= 20


def test_the_logged_model_predicts_what_the_trained_one_does(tmp_path, trained) -> None:
    results, eval_ = trained
    model = next(r.model for r in results if r.name == "catboost")
    raw = eval_[list(INPUT_FIELDS)].head(20).reset_index(drop=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        experiment = mlflow.create_experiment("price", artifact_location=str(tmp_path / "art"))
        with mlflow.start_run(experiment_id=experiment):
            info = log_price_model(model, "price_model", input_example=raw.head(3))
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        np.testing.assert_allclose(loaded.predict(raw), model.predict(None, raw), rtol=1e-9)
        # The intervals' calibration travels inside the logged model.
        unwrapped = loaded.unwrap_python_model()
        rows = raw.to_dict("records")
        again, expected = unwrapped.price_rows(rows, 0.9), model.price_rows(rows, 0.9)
        np.testing.assert_allclose(again.low, expected.low, rtol=1e-12)
        np.testing.assert_allclose(again.high, expected.high, rtol=1e-12)
        assert (again.low < again.price).all() and (again.price < again.high).all()
        # Through MLflow's schema enforcement too: text values and missing optional fields.
        partial = raw.drop(columns=["street", "acre_lot"])
        as_text = partial.astype(str)
        as_text["prev_sold_date"] = as_text["prev_sold_date"].replace("None", None)
        expected = model.predict(None, partial)
        assert not np.allclose(expected, model.predict(None, raw))  # acre_lot matters
        np.testing.assert_allclose(loaded.predict(as_text), expected, rtol=1e-9)
        signature = loaded.metadata.get_input_schema()
        required = {spec.name for spec in signature.inputs if spec.required}
        assert required == {"status", "city", "state"}
        assert loaded.metadata.metadata["candidate"] == "catboost"
    finally:
        mlflow.set_tracking_uri(None)


# ---------------------------------------------------------------- the real sample


def real_clean_sample() -> pd.DataFrame:
    with gzip.open(require_sample(), "rt") as handle:
        raw = pd.read_csv(handle, dtype=str, keep_default_na=False).replace("", None)
    raw.insert(0, "row_index", range(len(raw)))
    return clean_batch(raw[["row_index", *LISTING_COLUMNS]], RULES).clean


@pytest.mark.slow
def test_candidates_beat_the_baseline_on_real_listings() -> None:
    # The sample's first 7,500 rows are a random national sample of the Kaggle file.
    clean = real_clean_sample()
    national = clean[clean["row_index"] < 7_500].assign(batch_key="national")
    train, eval_ = split_for_training(national, "national", seed=0)
    budget = TrainingBudget(iterations=200, learning_rate=0.25, early_stopping_rounds=30)
    results = {r.name: r.metrics for r in train_candidates(train, eval_, budget)}
    baseline = results["baseline_median"]
    for name in ("catboost", "hist_gradient_boosting"):
        assert results[name]["mae_usd"] < 0.85 * baseline["mae_usd"], (name, results)
        assert results[name]["r2_log"] > baseline["r2_log"] + 0.15, (name, results)
        assert results[name]["r2_log"] > 0.6, (name, results)


@pytest.mark.slow
def test_the_verdict_compares_a_batch_with_the_error_its_places_should_have() -> None:
    clean = real_clean_sample()
    national = clean[clean["row_index"] < 7_500].assign(batch_key="national")
    train, eval_ = split_for_training(national, "national", seed=0)
    [result] = train_candidates(train, eval_, SMALL, candidates=["catboost"])
    metrics = result.metrics
    assert 0.2 < metrics["eval_unseen_zip_share"] < 0.9  # a national sample: zips are many
    assert metrics["mae_log_unseen_zip"] > metrics["mae_log_seen_zip"]
    reference = ReferenceProfile.from_frame(train)

    def judged(batch: pd.DataFrame) -> PerformanceDrift:
        scores = evaluate(batch["price"], result.model.predict(None, batch))
        report = drift_report(reference, batch, performance=PerformanceDrift(scores, metrics))
        assert report.performance is not None
        return report.performance

    alike = judged(eval_)  # listings like the training ones, from the same mix of places
    assert alike.expected["mae_log"] == pytest.approx(metrics["mae_log"], rel=0.02)
    assert not alike.drifted
    assert judged(eval_.assign(price=eval_["price"] * 1.8)).drifted  # measurably worse
    # New England listings: mostly zip codes the national sample lacks, so more error expected.
    regional = judged(clean[clean["row_index"] >= 30_000])
    assert regional.unseen_zip_share is not None and regional.unseen_zip_share > 0.5
    assert regional.expected["mae_log"] > metrics["mae_log"]
