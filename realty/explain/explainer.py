"""``explain``: exact TreeSHAP of a fitted price model on a bounded, seeded sample of rows
(the package docstring says which algorithm each tree estimator gets)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from realty.explain.ranking import rank_features
from realty.explain.results import Chunk, Explanation, ExplanationError, is_numeric
from realty.explain.treeshap import hgb_chunk, hgb_has_categorical_splits, hgb_tables, is_hgb

log = logging.getLogger(__name__)
DEFAULT_MAX_SECONDS = 60.0
ADDITIVITY_TOLERANCE = 1e-6
"""Allowed |base + sum(SHAP) - raw prediction|, relative to max(1, max |raw prediction|)."""
_WARM_UP_ROWS = 2  # first call: numba cache load, shap set-up; not used to plan
_CALIBRATION_ROWS = 100  # second call: measures seconds per row
_CHUNK_ROWS = 500
_CATBOOST_CHUNK_ROWS = 5000  # CatBoost prepares ~2.5 s per call for 1,000 depth-6 trees
_SAFETY = 0.9  # share of the remaining budget the next chunks may plan to use


def explain(
    estimator: Any,
    features: pd.DataFrame,
    sample_size: int = 2000,
    seed: int = 0,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    *,
    output: str = "model output",
) -> Explanation:
    """Explain ``estimator`` on a seeded sample of at most ``sample_size`` rows of ``features``.

    ``estimator`` is the fitted tree model (CatBoostRegressor, HistGradientBoostingRegressor, any
    shap-supported tree model), or a Pipeline/TransformedTargetRegressor ending in one;
    ``features`` is the frame it is called with (``estimator.predict(features)`` must work).
    Stops taking rows when ``max_seconds`` would be exceeded (``truncated``; at least the
    first chunk is always explained).
    ``output`` names the prediction's units, for plots and text (e.g. "log price").
    """
    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")
    if len(features) == 0:
        raise ValueError("no rows to explain: the feature frame is empty")
    started = time.perf_counter()
    target = _resolve(estimator, features)
    n = min(sample_size, len(features))
    sample = features.sample(n=n, random_state=seed)

    chunks: list[Chunk] = []
    done = 0
    truncated = False
    timed_seconds = 0.0  # chunks after the warm-up: their rate sizes the next chunk
    timed_rows = 0
    plan = target.chunk_plan
    while done < n:
        size = plan[min(len(chunks), len(plan) - 1)]
        if chunks:
            left = max_seconds - (time.perf_counter() - started)
            if timed_rows:
                size = min(size, int(left * _SAFETY * timed_rows / max(timed_seconds, 1e-9)))
            if left <= 0 or size < 1:
                truncated = True
                break
        rows = sample.iloc[done : min(done + size, n)]
        chunk_started = time.perf_counter()
        chunks.append(target.explain(rows))
        if len(chunks) > 1 or not target.warm_up:
            timed_seconds += time.perf_counter() - chunk_started
            timed_rows += len(rows)
        done += len(rows)
    if truncated:
        log.warning(
            "SHAP: explained %d of %d sampled rows to stay within %.0f s",
            done,
            n,
            max_seconds,
        )
    sample = sample.iloc[:done]
    model_phi = np.vstack([c.phi for c in chunks])
    raw = target.raw_prediction(sample)
    base = chunks[0].base
    error = float(np.max(np.abs(base + model_phi.sum(axis=1) - raw)))
    scale = max(1.0, float(np.max(np.abs(raw))))
    if not error <= ADDITIVITY_TOLERANCE * scale:
        raise ExplanationError(
            f"{target.method}: base value + sum of SHAP values differs from the model's raw "
            f"prediction by up to {error:.3g}; the SHAP values would be wrong"
        )
    values = target.group(model_phi)
    shown = target.sample_frame(sample)
    seconds = time.perf_counter() - started
    ranking = rank_features(
        target.feature_names, values, shown, target.categorical, base, target.method, output
    )
    log.info(
        "SHAP: %d rows x %d features with %s in %.2f s",
        done,
        values.shape[1],
        target.method,
        seconds,
    )
    return Explanation(
        feature_names=target.feature_names,
        values=values,
        base_value=float(base),
        sample=shown,
        ranking=ranking,
        categorical=target.categorical,
        method=target.method,
        output=output,
        seconds=seconds,
        rows_available=len(features),
        sample_size=sample_size,
        seed=seed,
        truncated=truncated,
        additivity_error=error,
        notes=tuple(target.notes),
    )


@dataclass
class _Target:
    """The tree model to explain and how original rows reach it."""

    model: Any
    kind: Literal["catboost", "hgb", "shap"]
    pre: Any  # what turns original rows into the model's input (None: nothing)
    owner: list[str]  # the reported feature of each model input column
    categorical: frozenset[str]
    method: str
    notes: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.owner))

    def transform(self, rows: pd.DataFrame) -> Any:
        if self.pre is None:
            return rows
        x = self.pre.transform(rows)
        return x.toarray() if hasattr(x, "toarray") else x  # sparse encoder output

    @property
    def warm_up(self) -> bool:
        """Whether the first call is slower than the rest (numba cache load, shap set-up)."""
        return self.kind != "catboost"

    @property
    def chunk_plan(self) -> tuple[int, ...]:
        """Rows per call (the last size repeats)."""
        if self.kind == "catboost":  # a fixed preparation per call: few, large calls
            return (_CATBOOST_CHUNK_ROWS,)
        return (_WARM_UP_ROWS, _CALIBRATION_ROWS, _CHUNK_ROWS)

    def explain(self, rows: pd.DataFrame) -> Chunk:
        x = self.transform(rows)
        if self.kind == "catboost":
            return _catboost_chunk(self.model, x, self.state)
        if self.kind == "hgb":
            return hgb_chunk(self.model, x, self.state)
        return _shap_chunk(x, self.state)

    def raw_prediction(self, rows: pd.DataFrame) -> np.ndarray:
        """The model's prediction before any link function, to check additivity against."""
        x = self.transform(rows)
        if self.kind == "catboost":
            from catboost import Pool

            pool = Pool(x, cat_features=self.state["cat_features"] or None)
            raw = self.model.predict(pool, prediction_type="RawFormulaVal")
        elif is_hgb(self.model):
            # one thread: OpenMP start-up on a busy machine costs more than 2,000 rows do
            raw = self.model._raw_predict(x, n_threads=1)
        else:
            data = x if isinstance(x, pd.DataFrame) else np.asarray(x, dtype=float)
            raw = self.state["explainer"].model.predict(np.asarray(data, dtype=float))
        return np.asarray(raw, dtype=float).reshape(-1)

    def group(self, phi: np.ndarray) -> np.ndarray:
        names = self.feature_names
        if list(names) == self.owner:
            return phi
        out = np.zeros((phi.shape[0], len(names)))
        index = {name: i for i, name in enumerate(names)}
        for j, name in enumerate(self.owner):
            out[:, index[name]] += phi[:, j]
        return out

    def sample_frame(self, sample: pd.DataFrame) -> pd.DataFrame:
        """One column per reported feature: original values where there is an original column."""
        columns: dict[str, Any] = {}
        transformed = None
        for j, name in enumerate(self.owner):
            if name in columns:
                continue
            if name in sample.columns:
                columns[name] = sample[name]
                continue
            if transformed is None:
                transformed = self.transform(sample)
            if isinstance(transformed, pd.DataFrame) and name in transformed.columns:
                columns[name] = transformed[name].set_axis(sample.index)
            else:
                columns[name] = pd.Series(np.asarray(transformed)[:, j], index=sample.index)
        return pd.DataFrame(columns, index=sample.index)


def _resolve(estimator: Any, features: pd.DataFrame) -> _Target:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline

    notes: list[str] = []
    model = estimator
    pre = None
    while isinstance(model, TransformedTargetRegressor | Pipeline):
        if isinstance(model, TransformedTargetRegressor):
            notes.append(
                "explained the TransformedTargetRegressor's regressor: SHAP values are in the "
                "transformed target's units"
            )
            model = model.regressor_
        else:
            steps = model[:-1]
            pre = steps if pre is None else Pipeline([("outer", pre), ("inner", steps)])
            model = model[-1]

    model_input = features if pre is None else pre.transform(features.iloc[:5])
    input_columns = _column_names(model_input, model, pre, features)
    if pre is None:
        missing = [c for c in input_columns if c not in features.columns]
        if missing:
            raise ExplanationError(f"the feature frame lacks the model's columns {missing}")
        if list(features.columns) != input_columns:
            pre = _Select(input_columns)
        owner = input_columns
    else:
        owner = _owners(input_columns, list(features.columns))
        counts = pd.Series(owner).value_counts(sort=False)
        grouped = [f"{count} into {name}" for name, count in counts.items() if count > 1]
        if grouped:
            notes.append("summed the SHAP values of encoded columns: " + ", ".join(grouped))
        unmapped = [c for c in owner if c not in features.columns]
        if unmapped:
            notes.append(
                "reported under their own names, as no single input column matches them "
                f"(added by a pipeline step): {', '.join(unmapped)}"
            )
    categorical = {
        name for name in owner if name in features.columns and not is_numeric(features[name])
    }

    state: dict[str, Any] = {}
    if type(model).__module__.startswith("catboost"):
        kind = "catboost"
        method = "CatBoost ShapValues (exact TreeSHAP)"
        state["cat_features"] = list(model.get_cat_feature_indices())
        categorical |= {owner[i] for i in state["cat_features"]}
    elif is_hgb(model) and hgb_has_categorical_splits(model):
        kind = "hgb"
        method = "TreeSHAP for HistGradientBoosting categorical splits (realty.explain, numba)"
        state.update(hgb_tables(model))
    else:
        import shap  # slow import, only when needed

        kind = "shap"
        method = f"shap.TreeExplainer on {type(model).__name__} (tree_path_dependent)"
        try:
            state["explainer"] = shap.TreeExplainer(
                model, feature_perturbation="tree_path_dependent"
            )
        except Exception as exc:  # shap raises plain Exception for unsupported models
            raise ExplanationError(
                f"cannot explain {type(model).__name__}: shap.TreeExplainer says {exc}"
            ) from exc
    return _Target(model, kind, pre, owner, frozenset(categorical), method, notes, state)


class _Select:
    """Selects the model's columns, in the model's order."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[self.columns]


def _column_names(model_input: Any, model: Any, pre: Any, features: pd.DataFrame) -> list[str]:
    """Names of the tree model's input columns."""
    names = getattr(model, "feature_names_", None)  # CatBoost
    if names is None:
        names = getattr(model, "feature_names_in_", None)  # sklearn fitted on a frame
    width = np.shape(model_input)[1]
    if names is None and pre is not None:
        names = _names_out(pre, features, width)
    if names is None and isinstance(model_input, pd.DataFrame):
        names = model_input.columns
    if names is not None and pre is None:  # the model's own names select from the frame
        return [str(c) for c in names]
    if names is None or len(names) != width:
        if width == features.shape[1]:
            log.warning("SHAP: no feature names for the model's input; assuming 1:1 by position")
            return [str(c) for c in features.columns]
        return [f"x{i}" for i in range(width)]
    return [str(c) for c in names]


def _names_out(pre: Any, features: pd.DataFrame, width: int) -> Any:
    """``get_feature_names_out`` of the steps before the tree model, or of the longest run of
    first steps that has it when a later step (a dtype cast) does not but keeps the width."""
    from sklearn.pipeline import Pipeline

    candidates = [pre]
    if isinstance(pre, Pipeline):
        candidates += [pre[:k] for k in range(len(pre) - 1, 0, -1)]
    for candidate in candidates:
        for arguments in ((), (list(features.columns),)):
            try:
                names = candidate.get_feature_names_out(*arguments)
            except Exception:  # no get_feature_names_out, or names it was not fitted with
                continue
            if len(names) == width:
                return names
    return None


def _owners(columns: list[str], inputs: list[str]) -> list[str]:
    """The input feature each encoded column came from (``name__col``, one-hot ``col_value``)."""
    input_set = set(inputs)
    by_length = sorted(inputs, key=len, reverse=True)
    owners = []
    for column in columns:
        candidates = [column]
        if "__" in column:
            candidates.append(column.split("__", 1)[1])
        owner = next((c for c in candidates if c in input_set), None)
        if owner is None:
            owner = next(
                (i for c in candidates for i in by_length if c.startswith(f"{i}_")), column
            )
        owners.append(owner)
    return owners


# --- CatBoost ------------------------------------------------------------------------------


def _catboost_chunk(model: Any, x: Any, state: dict[str, Any]) -> Chunk:
    from catboost import Pool

    pool = Pool(x, cat_features=state["cat_features"] or None)
    shap_values = model.get_feature_importance(data=pool, type="ShapValues")
    if shap_values.ndim != 2:
        raise ExplanationError("multi-output CatBoost models are not supported")
    return Chunk(shap_values[:, :-1], float(shap_values[0, -1]))


# --- shap.TreeExplainer ------------------------------------------------------------------


def _shap_chunk(x: Any, state: dict[str, Any]) -> Chunk:
    explainer = state["explainer"]
    data = x if isinstance(x, pd.DataFrame) else np.asarray(x, dtype=float)
    values = explainer.shap_values(data, check_additivity=False)
    if isinstance(values, list) or np.ndim(values) != 2:
        raise ExplanationError("multi-output models are not supported")
    return Chunk(np.asarray(values, dtype=float), float(np.ravel(explainer.expected_value)[0]))
