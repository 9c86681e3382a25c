"""The ``hist_gradient_boosting`` price pipeline on plain rows: serving's fast path for it.

``realty.model.training`` fits ``LocationEncoder`` → ``ColumnTransformer`` (passthrough numerics,
``TargetEncoder``, ``OrdinalEncoder``) → float32 → ``HistGradientBoostingRegressor``. Through
scikit-learn one listing costs tens of milliseconds: the encoders check every known category
on each call, and the booster enters one OpenMP region per tree. ``HgbRows`` reads the fitted
steps once into dict look-ups and flat node arrays, then walks all trees of all rows together
with numpy. It does the same arithmetic in the same order (float32 features, float64 leaf
values added tree after tree to the baseline), so it gives the same numbers; the tests compare
it with the pipeline on thousands of real listings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, TargetEncoder

from realty.model.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES, LocationEncoder

PIPELINE_STEPS = ["location", "encode", "float32", "hgb"]
_NUMERIC_INPUTS = (*NUMERIC_FEATURES, *LocationEncoder.ADDED_COLUMNS)


def _part(kind: Any, columns: list[str]) -> tuple[str, list[int], list] | None:
    """One fitted ColumnTransformer part as (how, input positions, per-column look-ups of
    category → value with the value of an unknown one); None if ``HgbRows`` cannot copy it."""
    if isinstance(kind, str) or kind is None:
        return ("drop", [], []) if kind == "drop" else None
    if isinstance(kind, FunctionTransformer) and kind.func is None:  # fitted "passthrough"
        if not set(columns) <= set(_NUMERIC_INPUTS):
            return None
        return "numeric", [_NUMERIC_INPUTS.index(c) for c in columns], []
    if not set(columns) <= set(CATEGORICAL_FEATURES):
        return None
    positions = [CATEGORICAL_FEATURES.index(c) for c in columns]
    if isinstance(kind, TargetEncoder) and kind.target_type_ == "continuous":
        lookups = [  # unknown → the training mean
            (dict(zip(categories.tolist(), encodings.tolist(), strict=True)), kind.target_mean_)
            for categories, encodings in zip(kind.categories_, kind.encodings_, strict=True)
        ]
        return "lookup", positions, lookups
    if (
        isinstance(kind, OrdinalEncoder)
        and kind.handle_unknown == "use_encoded_value"
        and np.isnan(kind.unknown_value)
        and not kind._infrequent_enabled
    ):  # a category's position, unknown → NaN
        lookups = [({c: float(i) for i, c in enumerate(cats)}, np.nan) for cats in kind.categories_]
        return "lookup", positions, lookups
    return None


class _Trees:
    """Every tree's nodes in one set of arrays (child indices point into them)."""

    def __init__(self, predictors: Sequence[Any], known_cat_bitsets: np.ndarray, f_idx_map):
        offsets = np.cumsum([0] + [len(p.nodes) for p in predictors[:-1]])
        nodes = np.concatenate([p.nodes for p in predictors])
        shift = np.repeat(offsets, [len(p.nodes) for p in predictors])
        self.leaf = nodes["is_leaf"].astype(bool)
        self.roots = offsets
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"]
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.categorical = nodes["is_categorical"].astype(bool)
        self.left = nodes["left"].astype(np.intp) + shift
        self.right = nodes["right"].astype(np.intp) + shift
        self.value = nodes["value"]
        # Per categorical node, its 256 possible codes: goes left / is a known category.
        bitset_rows = np.concatenate([p.raw_left_cat_bitsets for p in predictors])
        bitset_shift = np.repeat(
            np.cumsum([0] + [len(p.raw_left_cat_bitsets) for p in predictors[:-1]]),
            [len(p.nodes) for p in predictors],
        )
        codes = np.arange(256)
        words, bits = codes // 32, codes % 32
        self.cat_row = np.zeros(len(nodes), dtype=np.intp)
        categorical = np.flatnonzero(self.categorical)
        self.cat_row[categorical] = np.arange(len(categorical))
        left_sets = bitset_rows[nodes["bitset_idx"][categorical] + bitset_shift[categorical]]
        known_sets = known_cat_bitsets[f_idx_map[self.feature[categorical]]]
        self.cat_left = (left_sets[:, words] >> bits) & 1 == 1
        self.cat_known = (known_sets[:, words] >> bits) & 1 == 1

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """(rows, trees) leaf values of float64 features ``X``, as ``_predictor.pyx`` walks:
        one step down for every (row, tree) not on a leaf yet, until all are."""
        at = np.tile(self.roots, len(X))  # the node of each (row, tree), row after row
        row = np.repeat(np.arange(len(X)), len(self.roots))
        walking = np.flatnonzero(~self.leaf[at])
        while walking.size:
            node = at[walking]
            value = X[row[walking], self.feature[node]]
            missing = np.isnan(value)
            go_left = value <= self.threshold[node]
            categorical = self.categorical[node]
            if categorical.any():
                valid = categorical & ~missing & (value >= 0) & (value < 256)
                code = np.where(valid, value, 0).astype(np.intp)  # <uint8>data_val
                cat = self.cat_row[node]
                in_left = valid & self.cat_left[cat, code]
                known = valid & self.cat_known[cat, code]
                go_left = np.where(categorical, in_left, go_left)
                missing |= categorical & ~in_left & ~known  # negative or unknown: as missing
            go_left = np.where(missing, self.missing_left[node], go_left)
            at[walking] = node = np.where(go_left, self.left[node], self.right[node])
            walking = walking[~self.leaf[node]]
        return self.value[at].reshape(len(X), len(self.roots))


class HgbRows:
    """A fitted ``PIPELINE_STEPS`` pipeline's predictions from ``feature_rows`` output."""

    def __init__(self, pipeline: Any) -> None:
        steps = pipeline.named_steps
        self.location = steps["location"]
        self.parts = [_part(kind, columns) for _, kind, columns in steps["encode"].transformers_]
        booster = steps["hgb"]
        self.booster_categorical = np.flatnonzero(booster.is_categorical_)
        self.booster_numeric = np.flatnonzero(~booster.is_categorical_)
        # The booster's own OrdinalEncoder: a categorical column's value → its position among
        # the values seen in fit (NaN and unseen values → NaN); those columns come first.
        encoder = booster._preprocessor.named_transformers_["encoder"]
        self.booster_codes = [
            {float(value): float(i) for i, value in enumerate(values) if not np.isnan(value)}
            for values in encoder.categories_
        ]
        self.baseline = float(np.asarray(booster._baseline_prediction).ravel()[0])
        self.trees = _Trees(
            [tree for (tree,) in booster._predictors],
            *booster._bin_mapper.make_known_categories_bitsets(),
        )

    @staticmethod
    def supports(pipeline: Any) -> bool:
        """Whether ``pipeline`` has the shape this class reproduces exactly."""
        steps = getattr(pipeline, "named_steps", {})
        if list(steps) != PIPELINE_STEPS:
            return False
        booster = steps["hgb"]
        inner = booster._preprocessor  # present when the booster has categorical features
        return (
            booster.n_trees_per_iteration_ == 1
            and booster.loss == "squared_error"  # identity link: predict = raw prediction
            and inner is not None
            and list(inner.named_transformers_)[:2] == ["encoder", "numerical"]
            and all(_part(kind, columns) for _, kind, columns in steps["encode"].transformers_)
        )

    def predict_log(self, numbers: np.ndarray, categories: list[tuple[str, ...]]) -> np.ndarray:
        """Log prices (float64) of ``feature_rows``'s ``numbers`` and ``categories``."""
        numeric = np.hstack([numbers, self.location.encode_rows(numbers, categories)])  # float32
        columns = []
        for how, positions, lookups in self.parts:
            if how == "numeric":
                columns.append(numeric[:, positions])
            elif how == "lookup":
                encoded = np.empty((len(categories), len(positions)), dtype=np.float32)
                for column, (position, (lookup, unknown)) in enumerate(
                    zip(positions, lookups, strict=True)
                ):
                    encoded[:, column] = [lookup.get(row[position], unknown) for row in categories]
                columns.append(encoded)
        X = self._booster_input(np.hstack(columns).astype(np.float32))
        leaves = self.trees.leaf_values(X)
        # Tree after tree onto the baseline, in float64, as HistGradientBoosting adds them.
        start = np.full((len(X), 1), self.baseline)
        return np.cumsum(np.hstack([start, leaves]), axis=1)[:, -1]

    def _booster_input(self, X: np.ndarray) -> np.ndarray:
        """What the booster's ``_preprocess_X`` makes of the pipeline's float32 matrix."""
        codes = np.empty((len(X), len(self.booster_categorical)), dtype=np.float64)
        for column, (position, lookup) in enumerate(
            zip(self.booster_categorical, self.booster_codes, strict=True)
        ):
            codes[:, column] = [lookup.get(value, np.nan) for value in X[:, position].tolist()]
        return np.hstack([codes, X[:, self.booster_numeric].astype(np.float64)])
