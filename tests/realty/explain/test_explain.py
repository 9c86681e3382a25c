"""realty.explain on small CatBoost and scikit-learn models with planted effects."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostRegressor
from matplotlib import pyplot as plt
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, TargetEncoder

from realty.explain import explainer
from realty.explain.compare import compare
from realty.explain.explainer import explain
from realty.explain.plots import beeswarm_png, dependence_pngs
from realty.explain.ranking import (
    RANKING_SCHEMA,
    ranking_from_dict,
    ranking_from_json,
    ranking_to_dict,
    ranking_to_json,
)
from realty.explain.report import write_report
from realty.explain.results import Explanation, ExplanationError
from realty.explain.treeshap import hgb_tables, tree_shap

log = logging.getLogger(__name__)
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # shap's colormaps

CATEGORICAL = ["state", "city", "status"]
NUMERIC = ["log_house_size", "bath", "bed", "acre_lot"]
STATES = ["CA", "NY", "TX", "FL", "WA", "MA", "OH", "NV"]
STATE_EFFECT = dict(zip(STATES, [1.2, 0.9, -0.6, -0.2, 0.5, 0.8, -1.3, -0.4], strict=True))


def make_frame(rows: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "state": rng.choice(STATES, rows),
            "city": [f"city{i}" for i in rng.integers(0, 40, rows)],
            "status": rng.choice(["for_sale", "sold"], rows),
            "log_house_size": rng.normal(7.4, 0.5, rows),
            "bath": rng.integers(1, 5, rows).astype(float),
            "bed": rng.integers(1, 6, rows).astype(float),
            "acre_lot": rng.exponential(0.3, rows),
        }
    )


def target(
    frame: pd.DataFrame, size: float = 2.0, bath: float = 0.1, state: float = 1.0, seed: int = 1
) -> np.ndarray:
    """log price: size and state dominate by default; ``bath`` plants a (signed) bath effect."""
    rng = np.random.default_rng(seed)
    size_z = (frame["log_house_size"] - 7.4) / 0.5
    bath_z = (frame["bath"] - 2.5) / 1.1
    return (
        12.0
        + size * size_z
        + bath * bath_z
        + state * frame["state"].map(STATE_EFFECT)
        + 0.02 * frame["bed"]
        + rng.normal(0, 0.1, len(frame))
    ).to_numpy()


def fit_catboost(frame: pd.DataFrame, y: np.ndarray) -> CatBoostRegressor:
    model = CatBoostRegressor(
        iterations=100, depth=4, thread_count=2, random_seed=0, verbose=0, allow_writing_files=False
    )
    return model.fit(frame, y, cat_features=CATEGORICAL)


def fit_hgb_target(frame: pd.DataFrame, y: np.ndarray) -> Pipeline:
    encoder = ColumnTransformer([("cat", TargetEncoder(), CATEGORICAL)], remainder="passthrough")
    model = HistGradientBoostingRegressor(max_iter=100, random_state=0)
    return Pipeline([("encode", encoder), ("hgb", model)]).fit(frame, y)


def fit_hgb_native(frame: pd.DataFrame, y: np.ndarray) -> Pipeline:
    """OrdinalEncoder + HGB categorical splits (the case shap.TreeExplainer gets wrong)."""
    encoder = ColumnTransformer(
        [
            (
                "cat",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1
                ),
                CATEGORICAL,
            )
        ],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    model = HistGradientBoostingRegressor(
        max_iter=100, random_state=0, categorical_features=CATEGORICAL
    )
    return Pipeline([("encode", encoder), ("hgb", model)]).fit(frame, y)


FITTERS = {"catboost": fit_catboost, "hgb_target": fit_hgb_target, "hgb_native": fit_hgb_native}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def models(frame: pd.DataFrame) -> dict[str, object]:
    y = target(frame)
    return {name: fit(frame, y) for name, fit in FITTERS.items()}


@pytest.fixture(scope="module")
def explanations(models: dict[str, object], frame: pd.DataFrame) -> dict[str, Explanation]:
    return {name: explain(model, frame, sample_size=500) for name, model in models.items()}


@pytest.mark.parametrize("kind", FITTERS)
def test_the_planted_features_rank_first(kind: str, explanations: dict) -> None:
    explanation = explanations[kind]
    assert set(explanation.ranking.names[:2]) == {"log_house_size", "state"}
    assert explanation.feature_names == tuple(make_frame(5).columns)  # original names, 1:1
    size = explanation.ranking["log_house_size"]
    assert (size.kind, size.direction) == ("numeric", 1) and size.correlation > 0.9
    assert explanation.ranking["state"].kind == "categorical"
    assert explanation.ranking["state"].direction is None


@pytest.mark.parametrize("kind", FITTERS)
def test_shap_values_add_up_to_the_prediction(kind: str, models: dict, explanations: dict) -> None:
    explanation = explanations[kind]
    predicted = models[kind].predict(explanation.sample)  # identity link: raw == prediction
    reconstructed = explanation.base_value + explanation.values.sum(axis=1)
    np.testing.assert_allclose(reconstructed, predicted, atol=1e-8)
    assert explanation.additivity_error < 1e-8


def test_methods_per_model_kind(explanations: dict) -> None:
    assert explanations["catboost"].method.startswith("CatBoost ShapValues")
    assert explanations["hgb_target"].method.startswith("shap.TreeExplainer")
    assert "categorical splits" in explanations["hgb_native"].method


def test_numba_treeshap_equals_shap_on_numeric_trees(frame: pd.DataFrame) -> None:
    import shap

    numeric = frame[NUMERIC].copy()
    numeric.loc[::7, "bath"] = np.nan  # missing values take the learned default branch
    model = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(numeric, target(frame))
    tables = hgb_tables(model)
    x = numeric.iloc[:300].to_numpy(dtype=float)
    ours = tree_shap(np.ascontiguousarray(x), *tables["tables"])
    theirs = shap.TreeExplainer(model).shap_values(x)
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    np.testing.assert_allclose(
        tables["expected"] + ours.sum(axis=1), model.predict(numeric.iloc[:300]), atol=1e-10
    )


def test_categorical_hgb_with_unseen_categories_and_missing_values(
    models: dict, frame: pd.DataFrame
) -> None:
    odd = make_frame(400, seed=5)
    odd.loc[::3, "city"] = "Atlantis"  # unseen in training: HGB treats it as missing
    odd.loc[::4, "log_house_size"] = np.nan
    explanation = explain(models["hgb_native"], odd, sample_size=400)
    reconstructed = explanation.base_value + explanation.values.sum(axis=1)
    np.testing.assert_allclose(
        reconstructed, models["hgb_native"].predict(explanation.sample), atol=1e-8
    )


def test_one_hot_columns_are_summed_into_their_feature(frame: pd.DataFrame) -> None:
    encoder = ColumnTransformer(
        [("onehot", OneHotEncoder(sparse_output=False), ["state", "status"])],
        remainder="passthrough",
    )
    pipeline = Pipeline(
        [("encode", encoder), ("hgb", HistGradientBoostingRegressor(max_iter=50))]
    ).fit(frame.drop(columns="city"), target(frame))
    explanation = explain(pipeline, frame, sample_size=200)
    assert explanation.feature_names == ("state", "status", *NUMERIC)
    assert set(explanation.ranking.names[:2]) == {"log_house_size", "state"}
    assert any("8 into state" in note for note in explanation.notes)
    np.testing.assert_allclose(
        explanation.base_value + explanation.values.sum(axis=1),
        pipeline.predict(explanation.sample),
        atol=1e-8,
    )


class AddSizePerBath(TransformerMixin, BaseEstimator):
    """Adds a column derived from two inputs (like realty.model.features.LocationEncoder does)."""

    def fit(self, X: pd.DataFrame, y: object = None) -> AddSizePerBath:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return X.assign(size_per_bath=X["log_house_size"] - np.log(X["bath"]))

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray([*self.feature_names_in_, "size_per_bath"], dtype=object)


class Float32(BaseEstimator):
    """A cast step without get_feature_names_out (as in realty.model.training)."""

    def fit(self, X: object, y: object = None) -> Float32:
        return self

    def transform(self, X: object) -> np.ndarray:
        return np.asarray(X, dtype=np.float32)

    def __sklearn_is_fitted__(self) -> bool:
        return True


def test_added_columns_and_steps_without_names(frame: pd.DataFrame) -> None:
    """The shape of realty.model.training's HGB candidate: add columns, encode, cast, boost."""
    encode = ColumnTransformer(
        [
            ("numeric", "passthrough", [*NUMERIC, "size_per_bath"]),
            ("target", TargetEncoder(), ["city"]),
            ("ordinal", OrdinalEncoder(), ["state", "status"]),
        ],
        verbose_feature_names_out=False,
    )
    mask = [False] * 6 + [True, True]
    pipeline = Pipeline(
        [
            ("add", AddSizePerBath()),
            ("encode", encode),
            ("float32", Float32()),
            ("hgb", HistGradientBoostingRegressor(max_iter=50, categorical_features=mask)),
        ]
    ).fit(frame, target(frame))
    explanation = explain(pipeline, frame, sample_size=300)
    assert "categorical splits" in explanation.method
    assert explanation.feature_names == (*NUMERIC, "size_per_bath", "city", "state", "status")
    assert set(explanation.ranking.names[:2]) == {"log_house_size", "state"}
    assert any("size_per_bath" in note for note in explanation.notes)
    np.testing.assert_allclose(
        explanation.sample["size_per_bath"],
        frame.loc[explanation.sample.index, "log_house_size"]
        - np.log(frame.loc[explanation.sample.index, "bath"]),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        explanation.base_value + explanation.values.sum(axis=1),
        pipeline.predict(explanation.sample.drop(columns="size_per_bath")),
        atol=1e-6,
    )


def test_transformed_target_regressor_is_explained_in_log_space(frame: pd.DataFrame) -> None:
    price = np.exp(target(frame))
    model = TransformedTargetRegressor(
        regressor=fit_hgb_target(frame, np.log(price)), func=np.log, inverse_func=np.exp
    ).fit(frame, price)
    explanation = explain(model, frame, sample_size=100, output="log price")
    np.testing.assert_allclose(
        explanation.base_value + explanation.values.sum(axis=1),
        np.log(model.predict(explanation.sample)),
        atol=1e-8,
    )
    assert any("TransformedTargetRegressor" in note for note in explanation.notes)


def test_the_sample_is_seeded_and_bounded(models: dict, frame: pd.DataFrame) -> None:
    model = models["catboost"]
    first = explain(model, frame, sample_size=250, seed=3)
    again = explain(model, frame, sample_size=250, seed=3)
    other = explain(model, frame, sample_size=250, seed=4)
    assert first.rows == 250 and first.values.shape == (250, 7) and not first.truncated
    assert first.sample.index.equals(again.sample.index)
    assert not first.sample.index.equals(other.sample.index)
    assert first.sample.index.isin(frame.index).all() and first.sample.index.is_unique
    everything = explain(model, frame.iloc[:40], sample_size=2000)
    assert everything.rows == 40 and everything.rows_available == 40


def test_the_time_budget_cuts_the_sample(models: dict, frame: pd.DataFrame, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="realty.explain"):
        explanation = explain(models["hgb_native"], frame, sample_size=2000, max_seconds=0.0)
    assert explanation.truncated
    assert 1 <= explanation.rows < 2000
    assert "to stay within" in caplog.text


def test_catboost_chunks_keep_to_the_budget_too(
    models: dict, frame: pd.DataFrame, monkeypatch
) -> None:
    monkeypatch.setattr(explainer, "_CATBOOST_CHUNK_ROWS", 100)
    explanation = explain(models["catboost"], frame, sample_size=1000, max_seconds=0.0)
    assert explanation.truncated and explanation.rows == 100
    explanation = explain(models["catboost"], frame, sample_size=1000, max_seconds=600)
    assert not explanation.truncated and explanation.rows == 1000


def test_report_files(explanations: dict, tmp_path: Path) -> None:
    before = plt.get_fignums()
    report = write_report(explanations["catboost"], None, tmp_path / "shap")
    assert plt.get_fignums() == before  # no pyplot figures left open
    assert report.ranking_json == tmp_path / "shap" / "ranking.json"
    assert [p.name for p in report.dependence_pngs] == [
        f"dependence_{name}.png" for name in explanations["catboost"].ranking.names[:3]
    ]
    for png in (report.beeswarm_png, *report.dependence_pngs):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
    text = report.markdown_path.read_text()
    assert text == report.markdown
    assert "First explained version" in text and "![SHAP beeswarm](beeswarm.png)" in text
    assert "| 1 | " in text
    assert "data:image/png;base64," in report.markdown_with_inline_images()
    assert ranking_from_dict(json.loads(report.ranking_json.read_text())) == report.diff.current


def test_plots_directly(explanations: dict, tmp_path: Path) -> None:
    explanation = explanations["hgb_native"]
    path = beeswarm_png(explanation, tmp_path / "nested" / "b.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    paths = dependence_pngs(explanation, tmp_path / "dep", top=7)
    assert len(paths) == 7 and all(p.exists() for p in paths)


def test_ranking_json_round_trip(explanations: dict) -> None:
    ranking = explanations["hgb_target"].ranking
    text = ranking_to_json(ranking)
    assert ranking_from_json(text) == ranking
    assert ranking_from_dict(json.loads(text)) == ranking
    data = json.loads(text)
    assert data["schema"] == RANKING_SCHEMA
    assert [f["feature"] for f in data["features"]] == list(ranking.names)
    with pytest.raises(ValueError, match=r"not a realty\.explain\.ranking"):
        ranking_from_dict({"features": []})
    with pytest.raises(ValueError, match="malformed"):
        ranking_from_dict({"schema": RANKING_SCHEMA, "features": [{"feature": "x"}]})
    with pytest.raises(ValueError, match="not valid JSON"):
        ranking_from_json("{nope")


def test_compare_finds_a_planted_sign_flip_and_rank_changes(frame: pd.DataFrame) -> None:
    # version 1: size > bath (+) > state; version 2: bath (-) > state > size
    before = fit_catboost(frame, target(frame, size=2.0, bath=1.0, state=0.3))
    after = fit_catboost(frame, target(frame, size=0.3, bath=-2.0, state=1.0))
    old = explain(before, frame, sample_size=600)
    new = explain(after, frame, sample_size=600)
    assert old.ranking.names[:3] == ("log_house_size", "bath", "state")
    assert new.ranking.names[:3] == ("bath", "state", "log_house_size")

    # the previous ranking comes back from ranking.json
    diff = compare(new, json.loads(ranking_to_json(old)), top_n=2)
    assert not diff.first_version and diff.changed
    moves = {c.feature: (c.old_rank, c.new_rank) for c in diff.rank_changes}
    # negligible features (city, bed: < 5 % of the top mean |SHAP|) may swap unreported
    assert moves == {"bath": (2, 1), "state": (3, 2), "log_house_size": (1, 3)}
    assert [(f.feature, f.old_direction, f.new_direction) for f in diff.sign_flips] == [
        ("bath", 1, -1)
    ]
    assert diff.entered_top == ("state",) and diff.left_top == ("log_house_size",)
    assert diff.new_features == () and diff.removed_features == ()
    text = diff.to_markdown()
    log.info("diff markdown:\n%s", text)
    assert "**bath** rose from #2 to #1 (mean |SHAP|" in text
    assert "**bath**'s effect flipped sign: higher values now lower the prediction" in text
    assert "**state** entered the top 2" in text
    assert "**log_house_size** dropped out of the top 2" in text
    assert json.loads(json.dumps(diff.to_dict()))["sign_flips"][0]["feature"] == "bath"


def test_compare_without_change_and_without_history(explanations: dict) -> None:
    ranking = explanations["catboost"].ranking
    same = compare(ranking, ranking)
    assert not same.changed and "No change" in same.to_markdown()
    first = compare(explanations["catboost"], None)
    assert first.first_version and not first.changed
    assert first.to_markdown().startswith("First explained version")


def test_compare_ignores_sampling_noise(models: dict, frame: pd.DataFrame) -> None:
    one = explain(models["hgb_target"], frame, sample_size=2000, seed=1)
    two = explain(models["hgb_target"], frame, sample_size=2000, seed=2)
    diff = compare(two, one)
    assert not diff.changed, diff.to_markdown()


def test_compare_new_and_removed_features(explanations: dict) -> None:
    ranking = explanations["catboost"].ranking
    data = ranking_to_dict(ranking)
    data["features"][-1]["feature"] = "garage"  # previous model had garage, not the last one
    diff = compare(ranking, data)
    assert diff.new_features == (ranking.names[-1],) and diff.removed_features == ("garage",)
    text = diff.to_markdown()
    assert "is no longer used" in text and "is new in this model" in text


def test_errors(models: dict, frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="empty"):
        explain(models["catboost"], frame.iloc[:0])
    with pytest.raises(ExplanationError, match="lacks the model's columns"):
        explain(models["catboost"], frame.drop(columns="bath"))
    with pytest.raises(ExplanationError, match="cannot explain"):
        explain(object(), frame)


@pytest.mark.slow
def test_timing_for_2000_rows(models: dict, record_property) -> None:
    """Reported, not asserted: seconds to explain 2000 rows of each model kind."""
    frame = make_frame(4000, seed=9)
    for kind, model in models.items():
        started = time.perf_counter()
        explanation = explain(model, frame, sample_size=2000, max_seconds=600)
        seconds = time.perf_counter() - started
        assert explanation.rows == 2000 and not explanation.truncated
        record_property(f"shap_seconds_2000_{kind}", round(seconds, 3))
        log.warning("SHAP timing: %s, 2000 rows, %.2f s", kind, seconds)
