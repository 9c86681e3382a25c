"""SHAP reports for the house-price models: explain, rank, plot, compare, write.

Takes the fitted model and the feature frame it sees, so it does not depend on the training
code's classes. Three ways to exact (path-dependent) TreeSHAP, picked by the tree estimator
found after unwrapping ``TransformedTargetRegressor`` and ``Pipeline`` layers:

| tree estimator | how |
|---|---|
| ``CatBoostRegressor`` | ``get_feature_importance(Pool(cat_features=...), type="ShapValues")``: |
|   | CatBoost's own exact TreeSHAP, native categoricals, ~3x faster than shap's wrapper |
| ``HistGradientBoostingRegressor`` with categorical splits | the numba TreeSHAP below: |
|   | shap.TreeExplainer ignores HGB's category bitsets and returns wrong values silently |
| any other tree model shap knows (HGB without categorical splits, forests, ...) | |
|   | ``shap.TreeExplainer`` (tree_path_dependent) |

For a ``Pipeline(encoder, ..., tree)`` the tree is explained on the encoder's output and each
output column is mapped back to the input column it came from (by ``get_feature_names_out``):
1:1 encoders (Ordinal, Target, scalers, passthrough) keep the feature; one-hot columns of one
feature are summed into it (SHAP values are additive). Every result is checked: base value +
sum of SHAP values must equal the model's raw prediction row by row, else ``ExplanationError``.

Time is bounded by the sample (at most ``sample_size`` rows, seeded; 2,000 take seconds, see
docs/explain.md) and by a deadline: rows go in chunks and the seconds per row measured so far
decide how many more fit in ``max_seconds``; the sample is cut there (``Explanation.truncated``).
CatBoost gets chunks of 5,000 rows (so 2,000 rows are one call) because each call pays a fixed
preparation (trees x leaves) that small chunks would repeat.

Plots draw on ``matplotlib.figure.Figure`` with an explicit Agg canvas: headless, thread-safe
(no pyplot state), and nothing to leak or close.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

RANKING_SCHEMA = "realty.explain.ranking/1"
DIRECTION_MIN_CORRELATION = 0.2
"""|Spearman rho| between a numeric feature and its SHAP values below which its direction is 0."""
MATERIAL_SHARE = 0.05
"""compare() reports features whose mean |SHAP| is at least this share of the top feature's."""
MIN_RELATIVE_CHANGE = 0.10
"""compare() reports a rank change when the feature's own mean |SHAP| moved at least this much."""
DEFAULT_MAX_SECONDS = 60.0
ADDITIVITY_TOLERANCE = 1e-6
"""Allowed |base + sum(SHAP) - raw prediction|, relative to max(1, max |raw prediction|)."""

_WARM_UP_ROWS = 2  # first call: numba cache load, shap set-up; not used to plan
_CALIBRATION_ROWS = 100  # second call: measures seconds per row
_CHUNK_ROWS = 500
_CATBOOST_CHUNK_ROWS = 5000  # CatBoost prepares ~2.5 s per call for 1,000 depth-6 trees
_SAFETY = 0.9  # share of the remaining budget the next chunks may plan to use

Kind = Literal["numeric", "categorical"]


class ExplanationError(RuntimeError):
    """The model cannot be explained, or its SHAP values do not add up to its predictions."""


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FeatureRank:
    """One feature's place in a ranking by mean |SHAP|.

    ``direction`` (numeric features only): +1 when higher values push the prediction up, -1
    when they push it down, 0 when neither (|Spearman rho of value vs SHAP| < 0.2: flat,
    U-shaped or too few distinct values). ``correlation`` is that rho.
    """

    feature: str
    rank: int
    mean_abs_shap: float
    mean_shap: float
    kind: Kind
    direction: int | None = None
    correlation: float | None = None


@dataclass(frozen=True)
class Ranking:
    """Features ordered by mean |SHAP| (rank 1 = most important); JSON via ``ranking_to_dict``."""

    features: tuple[FeatureRank, ...]
    base_value: float = float("nan")
    rows: int = 0
    method: str = ""
    output: str = "model output"

    def __iter__(self) -> Iterator[FeatureRank]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, feature: str) -> FeatureRank:
        for item in self.features:
            if item.feature == feature:
                return item
        raise KeyError(feature)

    def __contains__(self, feature: object) -> bool:
        return any(item.feature == feature for item in self.features)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(item.feature for item in self.features)

    def top(self, n: int) -> tuple[FeatureRank, ...]:
        return self.features[:n]


@dataclass(frozen=True, eq=False)
class Explanation:
    """SHAP values of ``rows`` sampled rows: ``values[i, j]`` is row i's SHAP for feature j.

    SHAP values are in the model's raw output units (``output``; log price for the realty-price
    models, so 0.1 is about +10.5 %): ``base_value + values.sum(axis=1)`` is the raw prediction.
    ``sample`` holds the explained rows' feature values (original, pre-encoding values, one
    column per feature, same order as ``feature_names``).
    """

    feature_names: tuple[str, ...]
    values: np.ndarray
    base_value: float
    sample: pd.DataFrame
    ranking: Ranking
    categorical: frozenset[str]
    method: str
    output: str
    seconds: float
    rows_available: int
    sample_size: int
    seed: int
    truncated: bool
    additivity_error: float
    notes: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def values_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, columns=list(self.feature_names), index=self.sample.index)


# --------------------------------------------------------------------------------------------
# explain()


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

    chunks: list[_Chunk] = []
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
    ranking = _rank(
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
class _Chunk:
    phi: np.ndarray  # (rows, model input columns)
    base: float


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

    def explain(self, rows: pd.DataFrame) -> _Chunk:
        x = self.transform(rows)
        if self.kind == "catboost":
            return _catboost_chunk(self.model, x, self.state)
        if self.kind == "hgb":
            return _hgb_chunk(self.model, x, self.state)
        return _shap_chunk(x, self.state)

    def raw_prediction(self, rows: pd.DataFrame) -> np.ndarray:
        """The model's prediction before any link function, to check additivity against."""
        x = self.transform(rows)
        if self.kind == "catboost":
            from catboost import Pool

            pool = Pool(x, cat_features=self.state["cat_features"] or None)
            raw = self.model.predict(pool, prediction_type="RawFormulaVal")
        elif _is_hgb(self.model):
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
        name for name in owner if name in features.columns and not _is_numeric(features[name])
    }

    state: dict[str, Any] = {}
    if type(model).__module__.startswith("catboost"):
        kind = "catboost"
        method = "CatBoost ShapValues (exact TreeSHAP)"
        state["cat_features"] = list(model.get_cat_feature_indices())
        categorical |= {owner[i] for i in state["cat_features"]}
    elif _is_hgb(model) and _hgb_has_categorical_splits(model):
        kind = "hgb"
        method = "TreeSHAP for HistGradientBoosting categorical splits (realty.explain, numba)"
        state.update(_hgb_tables(model))
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


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not isinstance(
        column.dtype, pd.CategoricalDtype
    )


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


def _catboost_chunk(model: Any, x: Any, state: dict[str, Any]) -> _Chunk:
    from catboost import Pool

    pool = Pool(x, cat_features=state["cat_features"] or None)
    shap_values = model.get_feature_importance(data=pool, type="ShapValues")
    if shap_values.ndim != 2:
        raise ExplanationError("multi-output CatBoost models are not supported")
    return _Chunk(shap_values[:, :-1], float(shap_values[0, -1]))


# --- shap.TreeExplainer ------------------------------------------------------------------


def _shap_chunk(x: Any, state: dict[str, Any]) -> _Chunk:
    explainer = state["explainer"]
    data = x if isinstance(x, pd.DataFrame) else np.asarray(x, dtype=float)
    values = explainer.shap_values(data, check_additivity=False)
    if isinstance(values, list) or np.ndim(values) != 2:
        raise ExplanationError("multi-output models are not supported")
    return _Chunk(np.asarray(values, dtype=float), float(np.ravel(explainer.expected_value)[0]))


# --- HistGradientBoosting with categorical splits: TreeSHAP in numba ----------------------
#
# Algorithm 2 of Lundberg et al. (2018), "Consistent Individualized Feature Attribution for Tree
# Ensembles", written iteratively like shap's tree_shap.h; the only change is the split test,
# which follows sklearn's _predictor.pyx (NaN and unknown categories go the missing way, known
# categories are looked up in the node's bitset). Checked against shap on numeric trees and by
# additivity on categorical ones (tests/realty/test_explain.py).


def _is_hgb(model: Any) -> bool:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return isinstance(model, HistGradientBoostingRegressor)


def _hgb_has_categorical_splits(model: Any) -> bool:
    return any(
        bool(np.any(predictor.nodes["is_categorical"]))
        for iteration in model._predictors
        for predictor in iteration
    )


def _hgb_tables(model: Any) -> dict[str, Any]:
    if model.n_trees_per_iteration_ != 1:
        raise ExplanationError("multi-output HistGradientBoosting models are not supported")
    predictors = [iteration[0] for iteration in model._predictors]
    trees = len(predictors)
    width = max(len(p.nodes) for p in predictors)
    left = np.full((trees, width), -1, dtype=np.int64)
    right = np.full((trees, width), -1, dtype=np.int64)
    feature = np.zeros((trees, width), dtype=np.int64)
    threshold = np.zeros((trees, width))
    missing_left = np.zeros((trees, width), dtype=np.bool_)
    is_categorical = np.zeros((trees, width), dtype=np.bool_)
    bitset = np.zeros((trees, width), dtype=np.int64)
    cover = np.zeros((trees, width))
    value = np.zeros((trees, width))
    bitsets = []
    offset = 0
    depth = 0
    expected = float(np.ravel(model._baseline_prediction)[0])
    for t, predictor in enumerate(predictors):
        nodes = predictor.nodes
        n = len(nodes)
        leaf = nodes["is_leaf"].astype(bool)
        left[t, :n] = np.where(leaf, -1, nodes["left"].astype(np.int64))
        right[t, :n] = np.where(leaf, -1, nodes["right"].astype(np.int64))
        feature[t, :n] = nodes["feature_idx"]
        threshold[t, :n] = nodes["num_threshold"]
        missing_left[t, :n] = nodes["missing_go_to_left"].astype(bool)
        is_categorical[t, :n] = nodes["is_categorical"].astype(bool)
        bitset[t, :n] = nodes["bitset_idx"].astype(np.int64) + offset
        cover[t, :n] = nodes["count"]
        value[t, :n] = nodes["value"]
        depth = max(depth, int(nodes["depth"].max()))
        bitsets.append(np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32))
        offset += bitsets[-1].shape[0]
        expected += float((nodes["value"][leaf] * nodes["count"][leaf]).sum() / nodes["count"][0])
    raw_bitsets = np.concatenate(bitsets) if offset else np.zeros((1, 8), dtype=np.uint32)
    known, feature_map = model._bin_mapper.make_known_categories_bitsets()
    known = np.asarray(known, dtype=np.uint32)
    if known.shape[0] == 0:
        known = np.zeros((1, 8), dtype=np.uint32)
    # HGB reorders its input (categorical columns first) when it encodes categories itself.
    order = np.arange(model.n_features_in_)
    preprocessor = getattr(model, "_preprocessor", None)
    if preprocessor is not None:
        order = np.empty(model.n_features_in_, dtype=np.int64)
        for name, _, columns in preprocessor.transformers_:
            if name in preprocessor.output_indices_ and name != "remainder":
                selected = np.arange(model.n_features_in_)[columns]
                order[preprocessor.output_indices_[name]] = selected
    tables = (
        depth + 1,
        left,
        right,
        feature,
        threshold,
        missing_left,
        is_categorical,
        bitset,
        np.ascontiguousarray(raw_bitsets),
        np.ascontiguousarray(known),
        np.asarray(feature_map, dtype=np.int64),
        cover,
        value,
    )
    return {"tables": tables, "expected": expected, "order": order}


def _hgb_chunk(model: Any, x: Any, state: dict[str, Any]) -> _Chunk:
    internal = np.ascontiguousarray(model._preprocess_X(x, reset=False), dtype=np.float64)
    # the kernel releases the GIL: rows are split over threads (one per CPU, >= 64 rows each)
    workers = min(_cpus(), 8, max(1, len(internal) // 64))
    if workers == 1:
        phi_internal = _tree_shap(internal, *state["tables"])
    else:
        parts = np.array_split(internal, workers)
        with ThreadPoolExecutor(workers, thread_name_prefix="treeshap") as pool:
            done = pool.map(lambda part: _tree_shap(part, *state["tables"]), parts)
            phi_internal = np.vstack(list(done))
    phi = np.zeros_like(phi_internal)
    phi[:, state["order"]] = phi_internal
    return _Chunk(phi, state["expected"])


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@numba.njit(cache=True, nogil=True)
def _extend(path_feature, path_zero, path_one, path_weight, at, depth, zero, one, feature):
    path_feature[at + depth] = feature
    path_zero[at + depth] = zero
    path_one[at + depth] = one
    path_weight[at + depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        path_weight[at + i + 1] += one * path_weight[at + i] * (i + 1) / (depth + 1)
        path_weight[at + i] = zero * path_weight[at + i] * (depth - i) / (depth + 1)


@numba.njit(cache=True, nogil=True)
def _unwind(path_feature, path_zero, path_one, path_weight, at, depth, k):
    one = path_one[at + k]
    zero = path_zero[at + k]
    next_one = path_weight[at + depth]
    for i in range(depth - 1, -1, -1):
        if one != 0.0:
            previous = path_weight[at + i]
            path_weight[at + i] = next_one * (depth + 1) / ((i + 1) * one)
            next_one = previous - path_weight[at + i] * zero * (depth - i) / (depth + 1)
        else:
            path_weight[at + i] = path_weight[at + i] * (depth + 1) / (zero * (depth - i))
    for i in range(k, depth):
        path_feature[at + i] = path_feature[at + i + 1]
        path_zero[at + i] = path_zero[at + i + 1]
        path_one[at + i] = path_one[at + i + 1]


@numba.njit(cache=True, nogil=True)
def _unwound_sum(path_zero, path_one, path_weight, at, depth, k):
    one = path_one[at + k]
    zero = path_zero[at + k]
    next_one = path_weight[at + depth]
    total = 0.0
    if one != 0.0:
        for i in range(depth - 1, -1, -1):
            part = next_one * (depth + 1) / ((i + 1) * one)
            total += part
            next_one = path_weight[at + i] - part * zero * (depth - i) / (depth + 1)
    elif zero != 0.0:
        for i in range(depth - 1, -1, -1):
            total += path_weight[at + i] * (depth + 1) / (zero * (depth - i))
    return total


@numba.njit(cache=True, nogil=True)
def _goes_left(
    value, t, node, threshold, missing_left, is_categorical, bitset, raw_bits, known_bits, known_row
):
    if np.isnan(value):
        return missing_left[t, node]
    if is_categorical[t, node]:
        if value < 0.0 or value >= 256.0:
            return missing_left[t, node]
        category = int(value)
        if (raw_bits[bitset[t, node], category >> 5] >> (category & 31)) & 1:
            return True
        if (known_bits[known_row, category >> 5] >> (category & 31)) & 1:
            return False
        return missing_left[t, node]  # a category unseen in training counts as missing
    return value <= threshold[t, node]


@numba.njit(cache=True, nogil=True)
def _tree_shap(
    x,
    max_depth,
    left,
    right,
    feature,
    threshold,
    missing_left,
    is_categorical,
    bitset,
    raw_bits,
    known_bits,
    feature_map,
    cover,
    value,
):
    rows, columns = x.shape
    phi = np.zeros((rows, columns))
    size = (max_depth + 3) * (max_depth + 4) // 2 + 4
    path_feature = np.full(size, -1, dtype=np.int64)
    path_zero = np.zeros(size)
    path_one = np.zeros(size)
    path_weight = np.zeros(size)
    stack = 2 * max_depth + 4
    stack_node = np.zeros(stack, dtype=np.int64)
    stack_depth = np.zeros(stack, dtype=np.int64)
    stack_at = np.zeros(stack, dtype=np.int64)
    stack_zero = np.zeros(stack)
    stack_one = np.zeros(stack)
    stack_feature = np.zeros(stack, dtype=np.int64)
    for r in range(rows):
        for t in range(left.shape[0]):
            stack_node[0] = 0
            stack_depth[0] = 0
            stack_at[0] = 0
            stack_zero[0] = 1.0
            stack_one[0] = 1.0
            stack_feature[0] = -1
            top = 1
            while top > 0:
                top -= 1
                node = stack_node[top]
                depth = stack_depth[top]
                parent_at = stack_at[top]
                at = parent_at + depth + 1
                for i in range(depth + 1):
                    path_feature[at + i] = path_feature[parent_at + i]
                    path_zero[at + i] = path_zero[parent_at + i]
                    path_one[at + i] = path_one[parent_at + i]
                    path_weight[at + i] = path_weight[parent_at + i]
                _extend(
                    path_feature,
                    path_zero,
                    path_one,
                    path_weight,
                    at,
                    depth,
                    stack_zero[top],
                    stack_one[top],
                    stack_feature[top],
                )
                if left[t, node] < 0:
                    leaf_value = value[t, node]
                    for i in range(1, depth + 1):
                        w = _unwound_sum(path_zero, path_one, path_weight, at, depth, i)
                        phi[r, path_feature[at + i]] += (
                            w * (path_one[at + i] - path_zero[at + i]) * leaf_value
                        )
                    continue
                f = feature[t, node]
                known_row = feature_map[f] if f < feature_map.shape[0] else 0
                if _goes_left(
                    x[r, f],
                    t,
                    node,
                    threshold,
                    missing_left,
                    is_categorical,
                    bitset,
                    raw_bits,
                    known_bits,
                    known_row,
                ):
                    hot = left[t, node]
                    cold = right[t, node]
                else:
                    hot = right[t, node]
                    cold = left[t, node]
                incoming_zero = 1.0
                incoming_one = 1.0
                k = 0
                while k <= depth:
                    if path_feature[at + k] == f:
                        break
                    k += 1
                if k != depth + 1:
                    incoming_zero = path_zero[at + k]
                    incoming_one = path_one[at + k]
                    _unwind(path_feature, path_zero, path_one, path_weight, at, depth, k)
                    depth -= 1
                cold_zero = cover[t, cold] / cover[t, node] * incoming_zero
                if cold_zero > 0.0:
                    stack_node[top] = cold
                    stack_depth[top] = depth + 1
                    stack_at[top] = at
                    stack_zero[top] = cold_zero
                    stack_one[top] = 0.0
                    stack_feature[top] = f
                    top += 1
                stack_node[top] = hot
                stack_depth[top] = depth + 1
                stack_at[top] = at
                stack_zero[top] = cover[t, hot] / cover[t, node] * incoming_zero
                stack_one[top] = incoming_one
                stack_feature[top] = f
                top += 1
    return phi


# --------------------------------------------------------------------------------------------
# Ranking


def _rank(
    names: Sequence[str],
    values: np.ndarray,
    sample: pd.DataFrame,
    categorical: frozenset[str],
    base: float,
    method: str,
    output: str,
) -> Ranking:
    mean_abs = np.abs(values).mean(axis=0)
    mean = values.mean(axis=0)
    order = sorted(range(len(names)), key=lambda j: (-mean_abs[j], names[j]))
    items = []
    for rank, j in enumerate(order, start=1):
        name = names[j]
        numeric = name not in categorical and _is_numeric(sample[name])
        rho = _spearman(sample[name], values[:, j]) if numeric else None
        direction = None
        if rho is not None:
            direction = 0 if abs(rho) < DIRECTION_MIN_CORRELATION else int(np.sign(rho))
        items.append(
            FeatureRank(
                feature=name,
                rank=rank,
                mean_abs_shap=float(mean_abs[j]),
                mean_shap=float(mean[j]),
                kind="numeric" if numeric else "categorical",
                direction=direction,
                correlation=rho,
            )
        )
    return Ranking(tuple(items), float(base), int(values.shape[0]), method, output)


def _spearman(x: pd.Series, shap_values: np.ndarray) -> float:
    """Spearman rho of a feature's values and its SHAP values (0 when undefined)."""
    values = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values)
    if keep.sum() < 3:
        return 0.0
    a = pd.Series(values[keep]).rank().to_numpy()
    b = pd.Series(shap_values[keep]).rank().to_numpy()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def ranking_to_dict(ranking: Ranking | Explanation) -> dict[str, Any]:
    """A JSON-ready dict (``json.dumps`` works; NaN becomes null)."""
    if isinstance(ranking, Explanation):
        ranking = ranking.ranking
    return {
        "schema": RANKING_SCHEMA,
        "method": ranking.method,
        "output": ranking.output,
        "rows": ranking.rows,
        "base_value": _finite_or_none(ranking.base_value),
        "features": [
            {
                "feature": item.feature,
                "rank": item.rank,
                "mean_abs_shap": item.mean_abs_shap,
                "mean_shap": item.mean_shap,
                "kind": item.kind,
                "direction": item.direction,
                "correlation": _finite_or_none(item.correlation),
            }
            for item in ranking.features
        ],
    }


def ranking_from_dict(data: Mapping[str, Any]) -> Ranking:
    """Read back ``ranking_to_dict`` output (e.g. a previous version's ranking.json)."""
    if not isinstance(data, Mapping) or data.get("schema") != RANKING_SCHEMA:
        schema = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"not a {RANKING_SCHEMA} ranking (schema: {schema!r})")
    try:
        items = tuple(
            FeatureRank(
                feature=str(item["feature"]),
                rank=int(item["rank"]),
                mean_abs_shap=float(item["mean_abs_shap"]),
                mean_shap=float(item["mean_shap"]),
                kind=item["kind"],
                direction=None if item.get("direction") is None else int(item["direction"]),
                correlation=None if item.get("correlation") is None else float(item["correlation"]),
            )
            for item in data["features"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed ranking: {exc!r}") from exc
    base = data.get("base_value")
    return Ranking(
        features=tuple(sorted(items, key=lambda item: item.rank)),
        base_value=float("nan") if base is None else float(base),
        rows=int(data.get("rows", 0)),
        method=str(data.get("method", "")),
        output=str(data.get("output", "model output")),
    )


def ranking_to_json(ranking: Ranking | Explanation) -> str:
    return json.dumps(ranking_to_dict(ranking), indent=2, allow_nan=False)


def ranking_from_json(text: str | bytes) -> Ranking:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ranking is not valid JSON: {exc}") from exc
    return ranking_from_dict(data)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _as_ranking(value: Ranking | Explanation | Mapping[str, Any] | None) -> Ranking | None:
    if value is None or isinstance(value, Ranking):
        return value
    if isinstance(value, Explanation):
        return value.ranking
    return ranking_from_dict(value)


# --------------------------------------------------------------------------------------------
# compare()


@dataclass(frozen=True)
class RankChange:
    feature: str
    old_rank: int
    new_rank: int
    old_mean_abs_shap: float
    new_mean_abs_shap: float


@dataclass(frozen=True)
class SignFlip:
    feature: str
    old_direction: int
    new_direction: int
    old_correlation: float | None
    new_correlation: float | None


@dataclass(frozen=True)
class ExplanationDiff:
    """How the current ranking differs from the previous version's (None: first version)."""

    current: Ranking
    previous: Ranking | None
    top_n: int
    rank_changes: tuple[RankChange, ...] = ()
    sign_flips: tuple[SignFlip, ...] = ()
    entered_top: tuple[str, ...] = ()
    left_top: tuple[str, ...] = ()
    new_features: tuple[str, ...] = ()
    removed_features: tuple[str, ...] = ()

    @property
    def first_version(self) -> bool:
        return self.previous is None

    @property
    def changed(self) -> bool:
        return bool(
            self.rank_changes
            or self.sign_flips
            or self.entered_top
            or self.left_top
            or self.new_features
            or self.removed_features
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_version": self.first_version,
            "top_n": self.top_n,
            "rank_changes": [vars(change) for change in self.rank_changes],
            "sign_flips": [vars(flip) for flip in self.sign_flips],
            "entered_top": list(self.entered_top),
            "left_top": list(self.left_top),
            "new_features": list(self.new_features),
            "removed_features": list(self.removed_features),
        }

    def to_markdown(self) -> str:
        """A few sentences for people: what moved, what flipped, what is new."""
        top = ", ".join(
            f"{item.feature} ({_num(item.mean_abs_shap)})" for item in self.current.top(self.top_n)
        )
        if self.previous is None:
            return (
                "First explained version: there is no previous ranking to compare with.\n\n"
                f"Top features by mean |SHAP|: {top}."
            )
        lines = []
        for change in self.rank_changes:
            shap_move = (
                f"mean |SHAP| {_num(change.old_mean_abs_shap)} → {_num(change.new_mean_abs_shap)}"
            )
            if change.feature in self.entered_top:
                what = (
                    f"entered the top {self.top_n} (#{change.old_rank} → #{change.new_rank}, "
                    f"{shap_move})"
                )
            elif change.feature in self.left_top:
                what = (
                    f"dropped out of the top {self.top_n} (#{change.old_rank} → "
                    f"#{change.new_rank}, {shap_move})"
                )
            else:
                verb = "rose" if change.new_rank < change.old_rank else "fell"
                what = f"{verb} from #{change.old_rank} to #{change.new_rank} ({shap_move})"
            lines.append(f"- **{change.feature}** {what}")
        for flip in self.sign_flips:
            now = "raise" if flip.new_direction > 0 else "lower"
            before = "raised" if flip.old_direction > 0 else "lowered"
            lines.append(
                f"- **{flip.feature}**'s effect flipped sign: higher values now {now} the "
                f"prediction (they {before} it; Spearman {_signed(flip.old_correlation)} → "
                f"{_signed(flip.new_correlation)})"
            )
        for name in self.new_features:
            item = self.current[name]
            lines.append(
                f"- **{name}** is new in this model (#{item.rank}, mean |SHAP| "
                f"{_num(item.mean_abs_shap)})"
            )
        for name in self.removed_features:
            assert self.previous is not None
            lines.append(f"- **{name}** is no longer used (was #{self.previous[name].rank})")
        if not lines:
            lines.append(
                f"- No change: same top-{self.top_n} order as the previous version and no "
                "feature's effect changed direction."
            )
        return "\n".join([*lines, "", f"Top features by mean |SHAP|: {top}."])


def compare(
    current: Explanation | Ranking | Mapping[str, Any],
    previous: Ranking | Explanation | Mapping[str, Any] | None,
    top_n: int = 5,
    material_share: float = MATERIAL_SHARE,
    min_change: float = MIN_RELATIVE_CHANGE,
) -> ExplanationDiff:
    """What changed between the previous version's ranking and this one.

    Only *material* features are reported: those whose mean |SHAP| is at least
    ``material_share`` (5 %) of the top feature's in either version, so reshuffles among
    negligible features stay out. For those: rank changes (so also entering or leaving the top
    ``top_n``) of features in the top ``top_n`` of either version whose own mean |SHAP| changed
    by at least ``min_change`` (10 %; sampling noise at 2,000 rows is a few percent, and a
    feature that only moved because a neighbour changed is not news), and sign flips (a clear
    direction in both versions, |Spearman rho| >= 0.2, with opposite signs). Features new to
    the model or no longer in it are always reported.
    """
    now = _as_ranking(current)
    assert now is not None
    before = _as_ranking(previous)
    if before is None:
        return ExplanationDiff(now, None, top_n)
    top_now = set(now.names[:top_n])
    top_before = set(before.names[:top_n])
    material = _material(now, material_share) | _material(before, material_share)
    changes = []
    flips = []
    for item in now:
        if item.feature not in before or item.feature not in material:
            continue
        old = before[item.feature]
        in_top = item.feature in top_now or item.feature in top_before
        changed = abs(item.mean_abs_shap - old.mean_abs_shap) >= min_change * old.mean_abs_shap
        if in_top and old.rank != item.rank and changed:
            changes.append(
                RankChange(item.feature, old.rank, item.rank, old.mean_abs_shap, item.mean_abs_shap)
            )
        if item.direction and old.direction and item.direction != old.direction:
            flips.append(
                SignFlip(
                    item.feature, old.direction, item.direction, old.correlation, item.correlation
                )
            )
    moved = {change.feature for change in changes}
    return ExplanationDiff(
        current=now,
        previous=before,
        top_n=top_n,
        rank_changes=tuple(changes),
        sign_flips=tuple(flips),
        entered_top=tuple(n for n in now.names[:top_n] if n not in top_before and n in moved),
        left_top=tuple(n for n in before.names[:top_n] if n not in top_now and n in moved),
        new_features=tuple(n for n in now.names if n not in before),
        removed_features=tuple(n for n in before.names if n not in now),
    )


def _material(ranking: Ranking, share: float) -> set[str]:
    if not ranking.features:
        return set()
    floor = share * ranking.features[0].mean_abs_shap
    return {item.feature for item in ranking if item.mean_abs_shap >= floor}


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


# --------------------------------------------------------------------------------------------
# Plots


def beeswarm_png(explanation: Explanation, path: str | Path, max_display: int = 12) -> Path:
    """Beeswarm summary: one row per feature (most important on top), one dot per sampled row
    at its SHAP value, coloured by the feature's value (grey: categorical or missing)."""
    path = Path(path)
    ranking = explanation.ranking.top(max_display)
    fig = Figure(figsize=(8.5, 0.5 * len(ranking) + 1.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = _colormap()
    rng = np.random.default_rng(explanation.seed)
    index = {name: j for j, name in enumerate(explanation.feature_names)}
    for row, item in enumerate(ranking):
        y0 = len(ranking) - 1 - row
        phi = explanation.values[:, index[item.feature]]
        colors = _colors(explanation, item.feature, cmap)
        offsets = _swarm(phi, rng)
        ax.scatter(phi, y0 + offsets, c=colors, s=9, linewidths=0, alpha=0.85, rasterized=True)
    ax.axvline(0.0, color="#999999", linewidth=0.8, zorder=0)
    ax.set_yticks(range(len(ranking)))
    ax.set_yticklabels([item.feature for item in reversed(ranking)])
    ax.set_ylim(-0.7, len(ranking) - 0.3)
    ax.set_xlabel(f"SHAP value (impact on {explanation.output})")
    ax.set_title(f"SHAP values of {explanation.rows:,} sampled rows", fontsize=10)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    mappable = _scalar_mappable(cmap)
    bar = fig.colorbar(mappable, ax=ax, ticks=[0, 1], aspect=40, pad=0.02)
    bar.set_ticklabels(["low", "high"])
    bar.set_label("feature value (grey: categorical or missing)")
    bar.outline.set_visible(False)
    return _save(fig, path)


def dependence_pngs(explanation: Explanation, directory: str | Path, top: int = 3) -> list[Path]:
    """``dependence_<feature>.png`` for the ``top`` most important features: SHAP against the
    feature's value (numeric: scatter + binned mean; categorical: per-category strips)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    used: set[str] = set()
    for item in explanation.ranking.top(top):
        stem = _slug(item.feature)
        while stem in used:
            stem += "_"
        used.add(stem)
        path = directory / f"dependence_{stem}.png"
        if item.kind == "numeric":
            paths.append(_numeric_dependence(explanation, item, path))
        else:
            paths.append(_categorical_dependence(explanation, item, path))
    return paths


def _numeric_dependence(explanation: Explanation, item: FeatureRank, path: Path) -> Path:
    j = explanation.feature_names.index(item.feature)
    x = pd.to_numeric(explanation.sample[item.feature], errors="coerce").to_numpy(dtype=float)
    phi = explanation.values[:, j]
    keep = np.isfinite(x)
    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    note = ""
    if keep.any():
        lo, hi = np.percentile(x[keep], [1, 99])
        inside = keep & (x >= lo) & (x <= hi)
        if inside.sum() < keep.sum():
            note = " (1st-99th percentile shown)"
        ax.scatter(x[inside], phi[inside], s=8, alpha=0.45, linewidths=0, color="#1f77b4")
        xs, ys = _binned_mean(x[inside], phi[inside])
        ax.plot(xs, ys, color="#d62728", linewidth=2, label="binned mean")
        ax.legend(loc="best", frameon=False, fontsize=8)
    if (~keep).any():
        note += f"; {(~keep).sum()} missing"
    ax.axhline(0.0, color="#999999", linewidth=0.8, zorder=0)
    ax.set_xlabel(f"{item.feature}{note}")
    ax.set_ylabel(f"SHAP value ({explanation.output})")
    direction = {1: "higher → up", -1: "higher → down", 0: "no single direction"}.get(
        item.direction or 0
    )
    ax.set_title(
        f"#{item.rank} {item.feature}: mean |SHAP| {_num(item.mean_abs_shap)}, "
        f"{direction} (Spearman {_signed(item.correlation)})",
        fontsize=10,
    )
    return _save(fig, path)


def _categorical_dependence(
    explanation: Explanation, item: FeatureRank, path: Path, categories: int = 20
) -> Path:
    j = explanation.feature_names.index(item.feature)
    values = explanation.sample[item.feature].astype("string").fillna("<missing>")
    phi = pd.Series(explanation.values[:, j], index=values.index)
    counts = values.value_counts()
    shown = counts.index[:categories]
    groups = {c: phi[values == c].to_numpy() for c in shown}
    order = sorted(shown, key=lambda c: float(np.mean(groups[c])))
    fig = Figure(figsize=(7, 0.32 * len(order) + 1.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rng = np.random.default_rng(explanation.seed)
    for y0, category in enumerate(order):
        points = groups[category]
        jitter = rng.uniform(-0.25, 0.25, size=len(points))
        ax.scatter(points, y0 + jitter, s=8, alpha=0.45, linewidths=0, color="#1f77b4")
        ax.plot([np.mean(points)] * 2, [y0 - 0.35, y0 + 0.35], color="#d62728", linewidth=2)
    ax.axvline(0.0, color="#999999", linewidth=0.8, zorder=0)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([f"{str(c)[:28]} (n={counts[c]})" for c in order], fontsize=8)
    ax.set_xlabel(f"SHAP value ({explanation.output}); red: mean")
    more = (
        f", {len(shown)} most frequent of {len(counts)} values" if len(counts) > len(shown) else ""
    )
    ax.set_title(
        f"#{item.rank} {item.feature}: mean |SHAP| {_num(item.mean_abs_shap)}{more}", fontsize=10
    )
    return _save(fig, path)


def _colormap() -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("shap", ["#008bfb", "#ff0051"])


def _scalar_mappable(cmap: Any) -> Any:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    return ScalarMappable(norm=Normalize(0, 1), cmap=cmap)


def _colors(explanation: Explanation, feature: str, cmap: Any) -> np.ndarray:
    grey = np.array([0.6, 0.6, 0.6, 1.0])
    column = explanation.sample[feature]
    colors = np.tile(grey, (len(column), 1))
    if feature in explanation.categorical or not _is_numeric(column):
        return colors
    x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(x)
    if not keep.any():
        return colors
    lo, hi = np.percentile(x[keep], [5, 95])
    if hi <= lo:
        lo, hi = float(np.min(x[keep])), float(np.max(x[keep]))
    scaled = np.clip((x[keep] - lo) / (hi - lo), 0, 1) if hi > lo else np.full(keep.sum(), 0.5)
    colors[keep] = cmap(scaled)
    return colors


def _swarm(phi: np.ndarray, rng: np.random.Generator, bins: int = 100, width: float = 0.4) -> Any:
    """Vertical offsets that pile up dots of similar SHAP value, like shap's beeswarm."""
    if len(phi) == 0:
        return np.zeros(0)
    lo, hi = float(np.min(phi)), float(np.max(phi))
    cell = np.zeros(len(phi), dtype=int)
    if hi > lo:
        cell = np.clip(((phi - lo) / (hi - lo) * bins).astype(int), 0, bins - 1)
    order = np.lexsort((rng.random(len(phi)), cell))
    position = np.zeros(len(phi))
    start = 0
    for count in np.bincount(cell[order], minlength=bins):
        k = np.arange(count)
        position[order[start : start + count]] = ((k + 1) // 2) * np.where(k % 2 == 0, 1, -1)
        start += count
    peak = max(1.0, float(np.max(np.abs(position))))
    return position * (width / peak)


def _binned_mean(x: np.ndarray, y: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    if len(x) == 0:
        return np.zeros(0), np.zeros(0)
    distinct = np.unique(x)
    if len(distinct) <= bins:  # a discrete feature (rooms): one point per value
        means = pd.Series(y).groupby(x).mean()
        return means.index.to_numpy(dtype=float), means.to_numpy(dtype=float)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    xs, ys = [], []
    for b in range(len(edges) - 1):
        inside = which == b
        if inside.any():
            xs.append(float(x[inside].mean()))
            ys.append(float(y[inside].mean()))
    return np.array(xs), np.array(ys)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    fig.clear()
    return path


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "feature"


# --------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class ReportFiles:
    """What ``write_report`` wrote; ``markdown`` is explanation.md's text."""

    directory: Path
    ranking_json: Path
    beeswarm_png: Path
    dependence_pngs: tuple[Path, ...]
    markdown_path: Path
    markdown: str
    diff: ExplanationDiff

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.ranking_json, self.beeswarm_png, *self.dependence_pngs, self.markdown_path)

    def markdown_with_inline_images(self) -> str:
        """explanation.md with its images as data: URIs (for Dagster MetadataValue.md)."""
        text = self.markdown
        for image in (self.beeswarm_png, *self.dependence_pngs):
            text = text.replace(f"]({image.name})", f"]({png_data_uri(image)})")
        return text


def png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def write_report(
    explanation: Explanation,
    previous_ranking: Ranking | Mapping[str, Any] | None,
    directory: str | Path,
    top: int = 3,
    top_n: int = 5,
) -> ReportFiles:
    """Write ranking.json, beeswarm.png, dependence_<feature>.png and explanation.md."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    diff = compare(explanation, _as_ranking(previous_ranking), top_n=top_n)
    ranking_json = directory / "ranking.json"
    ranking_json.write_text(ranking_to_json(explanation) + "\n", encoding="utf-8")
    beeswarm = beeswarm_png(explanation, directory / "beeswarm.png")
    dependence = dependence_pngs(explanation, directory, top=top)
    markdown = _report_markdown(explanation, diff, beeswarm, dependence)
    markdown_path = directory / "explanation.md"
    markdown_path.write_text(markdown, encoding="utf-8")
    return ReportFiles(
        directory, ranking_json, beeswarm, tuple(dependence), markdown_path, markdown, diff
    )


def _report_markdown(
    explanation: Explanation, diff: ExplanationDiff, beeswarm: Path, dependence: list[Path]
) -> str:
    cut = " (cut short by the time limit)" if explanation.truncated else ""
    lines = [
        "# What drives the predictions (SHAP)",
        "",
        f"{explanation.rows:,} of {explanation.rows_available:,} rows{cut}, sampled with seed "
        f"{explanation.seed}, explained with {explanation.method} in {explanation.seconds:.1f} s. "
        f"SHAP values are in {explanation.output} units; the base value (average prediction) "
        f"is {_num(explanation.base_value)}.",
        "",
        "## Changes since the previous version",
        "",
        diff.to_markdown(),
        "",
        "## Ranking",
        "",
        "| # | feature | mean abs SHAP | mean SHAP | higher value → |",
        "|---|---|---|---|---|",
    ]
    for item in explanation.ranking:
        if item.kind == "categorical":
            effect = "categorical"
        else:
            effect = {1: "up", -1: "down", 0: "mixed"}[item.direction or 0]
            effect += f" (rho {_signed(item.correlation)})"
        lines.append(
            f"| {item.rank} | {item.feature} | {_num(item.mean_abs_shap)} | "
            f"{_num(item.mean_shap)} | {effect} |"
        )
    lines += ["", f"![SHAP beeswarm]({beeswarm.name})", ""]
    lines += [f"![{p.stem}]({p.name})" for p in dependence]
    if explanation.notes:
        lines += ["", *[f"Note: {note}." for note in explanation.notes]]
    return "\n".join(lines) + "\n"
