"""Training the price model: data snapshot and split, candidates, metrics (docs/training.md).

Every candidate predicts the natural log of the price from ``realty.model.features`` and is wrapped
in a ``PriceModel``, so it is scored through the same path serving uses (raw fields in,
dollars out). The candidates:

- ``catboost``: ``LocationEncoder`` then CatBoost with native categoricals.
- ``hist_gradient_boosting``: ``LocationEncoder``, then scikit-learn's ``TargetEncoder`` for
  the many-valued categoricals and native categories for state and status, then
  ``HistGradientBoostingRegressor``, all in one ``Pipeline``.
- ``baseline_median``: the median price of the listing's zip code, else of its state, else of
  every training listing.

Training is bounded (``TrainingBudget``): at most ``max_rows`` rows (a seeded subsample beyond
that), at most ``iterations`` boosting rounds with early stopping on a validation split held
out of the training rows, ``max_seconds`` per candidate, two threads and float32 features, so
that 1M rows train within 4 GB of memory.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from catboost import CatBoostRegressor
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder, TargetEncoder
from threadpoolctl import threadpool_limits

from realty.model.features import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    MISSING,
    FeatureConfig,
    LocationEncoder,
    prepare_features,
)
from realty.model.intervals import (
    DEFAULT_LEVEL,
    MIN_GROUP_ROWS,
    ConformalCalibration,
    UnseenResiduals,
    interval_scores,
)
from realty.model.price_model import INTERVAL_GROUP, PriceModel
from realty.model_error import SEEN_ZIP_MAE, UNSEEN_ZIP_MAE

logger = logging.getLogger(__name__)

CANDIDATES: tuple[str, ...] = ("catboost", "hist_gradient_boosting", "baseline_median")
LOW_CARDINALITY: tuple[str, ...] = ("status", "state")  # native categories in the sklearn model
HIGH_CARDINALITY: tuple[str, ...] = tuple(
    c for c in CATEGORICAL_FEATURES if c not in LOW_CARDINALITY
)
# Permutation importance on 2,000 eval rows, 2 shuffles each: a quarter of the predictions that
# 5,000 rows and 3 shuffles took (HGB spent 22 s there per training on a busy machine).
IMPORTANCE_ROWS = 2_000
IMPORTANCE_REPEATS = 2
_PACE_ROUNDS = 20  # HGB's first chunk of rounds, timed to plan the next ones
# Eval rows each side (seen / unseen zip code) needs for its MAE to be recorded.
ZIP_ERROR_MIN_ROWS = 30


@dataclass(frozen=True)
class TrainingBudget:
    """Bounds on one training run. The defaults train 1M rows within 4 GB RSS on 2 CPUs."""

    max_rows: int = 1_000_000  # a seeded random subsample of the training rows beyond this
    max_seconds: float = 900.0  # per candidate; boosting stops at the deadline, keeping its trees
    iterations: int = 2_000  # most boosting rounds (CatBoost iterations, HGB max_iter)
    learning_rate: float = 0.1
    depth: int = 8  # CatBoost tree depth
    max_leaf_nodes: int = 63  # HGB leaves per tree (about what depth 6 would give)
    early_stopping_rounds: int = 100  # rounds without improvement on the validation split
    validation_fraction: float = 0.1  # of the training rows, held out for early stopping
    thread_count: int = 2  # CatBoost threads
    # HGB's OpenMP threads. OpenMP workers spin while they wait: on 2 CPUs shared with other
    # work, 2 threads made HGB 4x slower than 1 (unless OMP_WAIT_POLICY=PASSIVE is set).
    hgb_threads: int = 1
    used_ram_limit: str = "2gb"  # CatBoost's limit for its categorical statistics
    seed: int = 0


@dataclass
class CandidateResult:
    name: str
    model: PriceModel
    params: dict[str, Any]
    metrics: dict[str, float]  # evaluate() on the eval split
    train_seconds: float
    feature_importances: dict[str, float]  # FEATURE_COLUMNS → share of the importance (sums to 1)
    evaluate_seconds: float = 0.0  # scoring eval and the permutation importances
    train_rows: int = 0
    eval_rows: int = 0


# ---------------------------------------------------------------- data: snapshot and split


def snapshot(frame: pd.DataFrame) -> dict[str, Any]:
    """What identifies the training data: its batches, row count and a content hash.

    ``content_sha256`` is the sha256 of the sorted ``row_hash`` values joined by newlines, so it
    ignores row order and changes when any listing changes, appears or disappears.
    """
    hashes = np.sort(frame["row_hash"].to_numpy(dtype=str))
    digest = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    keys = sorted(str(key) for key in frame["batch_key"].unique())
    return {"batch_keys": keys, "rows": len(frame), "content_sha256": digest}


def split_for_training(
    frame: pd.DataFrame, newest_batch_key: str, eval_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval): ``eval_fraction`` of every batch, drawn at random with ``seed``.

    Stratified by batch: each batch gives ``round(eval_fraction * rows)`` rows to eval, and at
    least one, so eval always holds listings of the newest batch, the world the model is about
    to face (``newest_batch_key`` must have rows).
    The draw ranks each batch's rows by a seeded hash of their ``row_hash``: it does not depend
    on row order, and a listing stays on its side when later batches are added, so successive
    models are evaluated on nested eval sets and never train on an earlier eval row.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1, not {eval_fraction}")
    missing = {"batch_key", "row_hash"} - set(frame.columns)
    if missing:
        raise ValueError(f"the frame lacks the columns {sorted(missing)}")
    batches = frame["batch_key"].astype(str)
    if not (batches == newest_batch_key).any():
        raise ValueError(f"the newest batch {newest_batch_key!r} has no rows in the frame")
    codes, _ = pd.factorize(batches)
    hashes = frame["row_hash"].to_numpy(dtype=str)
    # Rows in order of batch, then seeded draw (row_hash breaks ties): a row's position within
    # its batch in that order decides its side.
    order = np.lexsort((hashes, _seeded_draw(frame["row_hash"], seed), codes))
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(len(frame), dtype="int64")
    position[order] = np.arange(len(frame)) - np.repeat(starts, sizes)
    wanted = np.maximum(np.floor(sizes * eval_fraction + 0.5), 1)
    in_eval = position < wanted[codes]
    return frame[~in_eval].copy(), frame[in_eval].copy()


def _seeded_draw(row_hashes: pd.Series, seed: int) -> np.ndarray:
    """A uniform uint64 per row from its 128-bit hex row_hash and the seed (splitmix64)."""
    high = np.array([int(h[:16], 16) for h in row_hashes.astype(str)], dtype="uint64")
    with np.errstate(over="ignore"):
        x = high ^ np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) % 2**64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def subsample(frame: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """``frame`` itself when it has at most ``max_rows`` rows, else a seeded random subset."""
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed)


# ---------------------------------------------------------------- metrics


def evaluate(y_true_price: Any, y_pred_price: Any) -> dict[str, float]:
    """Errors of predicted prices: in log space (MAE, RMSE, R²) and in dollars (MAE, RMSE)."""
    true = np.asarray(y_true_price, dtype="float64")
    pred = np.asarray(y_pred_price, dtype="float64")
    if true.shape != pred.shape or true.size == 0:
        raise ValueError(f"need equally many prices, got {true.shape} and {pred.shape}")
    log_true, log_pred = np.log(true), np.log(np.clip(pred, 1.0, None))
    return {
        "mae_log": float(mean_absolute_error(log_true, log_pred)),
        "rmse_log": float(np.sqrt(mean_squared_error(log_true, log_pred))),
        "r2_log": float(r2_score(log_true, log_pred)) if true.size > 1 else float("nan"),
        "mae_usd": float(mean_absolute_error(true, pred)),
        "rmse_usd": float(np.sqrt(mean_squared_error(true, pred))),
    }


def zip_errors(
    train_zips: pd.Series, eval_zips: pd.Series, log_true: np.ndarray, log_pred: np.ndarray
) -> dict[str, float]:
    """How much of the eval split is geography training never saw, and the error there.

    ``eval_unseen_zip_share``: the eval rows with a zip code no training row has (counted as
    the drift verdict counts a batch's: an unknown zip is not an unseen one);
    ``mae_log_seen_zip`` / ``mae_log_unseen_zip``: MAE (log price) on either side, when each
    has ``ZIP_ERROR_MIN_ROWS`` rows. The drift verdict mixes the two at a new batch's unseen
    share to know what error to expect there.
    """
    unseen = (~eval_zips.isin(set(train_zips)) & (eval_zips != MISSING)).to_numpy()
    errors = np.abs(np.asarray(log_true, "float64") - np.asarray(log_pred, "float64"))
    result = {"eval_unseen_zip_share": float(unseen.mean())}
    if min(unseen.sum(), (~unseen).sum()) >= ZIP_ERROR_MIN_ROWS:
        result[SEEN_ZIP_MAE] = float(errors[~unseen].mean())
        result[UNSEEN_ZIP_MAE] = float(errors[unseen].mean())
    return result


# ---------------------------------------------------------------- the baseline


class MedianPriceBaseline(RegressorMixin, BaseEstimator):
    """Median log price of the listing's zip code, else of its state, else of all listings.

    A zip code (or state) needs ``min_rows`` training listings to have its own median.
    """

    def __init__(self, min_rows: int = 1) -> None:
        self.min_rows = min_rows

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> MedianPriceBaseline:
        y = pd.Series(np.asarray(y, dtype="float64"), index=X.index)
        self.global_ = float(y.median())
        self.by_zip_ = self._medians(X["zip_code"], y)
        self.by_state_ = self._medians(X["state"], y)
        return self

    def _medians(self, keys: pd.Series, y: pd.Series) -> pd.Series:
        stats = y.groupby(keys.to_numpy()).agg(["median", "count"])
        stats = stats.drop(index=MISSING, errors="ignore")
        return stats.loc[stats["count"] >= self.min_rows, "median"]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        by_zip = X["zip_code"].map(self.by_zip_)
        by_state = X["state"].map(self.by_state_)
        return by_zip.fillna(by_state).fillna(self.global_).to_numpy(dtype="float64")


# ---------------------------------------------------------------- candidates


class _Deadline:
    """A CatBoost callback that stops boosting at a wall-clock deadline (trees so far stay)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.stopped_at: int | None = None

    def after_iteration(self, info: Any) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.stopped_at = int(info.iteration)
        return False


@dataclass
class _Data:
    """Features and log price of the training rows, split for early stopping."""

    features: pd.DataFrame
    log_price: np.ndarray
    fit_rows: np.ndarray
    validation_rows: np.ndarray
    seed: int

    @property
    def fit_log_price(self) -> np.ndarray:
        return self.log_price[self.fit_rows]

    @property
    def validation_log_price(self) -> np.ndarray:
        return self.log_price[self.validation_rows]

    @cached_property
    def located(self) -> tuple[LocationEncoder, pd.DataFrame, pd.DataFrame]:
        """(encoder, fit rows, validation rows) with the location columns: one encoder fitted
        on the fit rows, shared by both boosted candidates (its out-of-fold encoding is a
        second or two of every training)."""
        encoder = LocationEncoder(random_state=self.seed)
        fit_x = encoder.fit_transform(self.features.iloc[self.fit_rows], self.fit_log_price)
        return encoder, fit_x, encoder.transform(self.features.iloc[self.validation_rows])


def _train_catboost(data: _Data, budget: TrainingBudget, deadline: float) -> tuple[Any, dict]:
    encoder, fit_x, val_x = data.located
    fit_y, val_y = data.fit_log_price, data.validation_log_price
    params = {
        "loss_function": "RMSE",
        "iterations": budget.iterations,
        "learning_rate": budget.learning_rate,
        "depth": budget.depth,
        "l2_leaf_reg": 3.0,
        "max_ctr_complexity": 1,  # no combinations of categoricals: 5x faster, R² -0.003
        "border_count": 254,
        "thread_count": budget.thread_count,
        "used_ram_limit": budget.used_ram_limit,
        "random_seed": budget.seed,
        "allow_writing_files": False,
        "verbose": False,
    }
    model = CatBoostRegressor(cat_features=list(CATEGORICAL_FEATURES), **params)
    stop = _Deadline(deadline)
    model.fit(
        fit_x,
        fit_y,
        eval_set=(val_x, val_y),
        early_stopping_rounds=budget.early_stopping_rounds,
        use_best_model=True,
        callbacks=[stop],
    )
    info = {
        **params,
        "early_stopping_rounds": budget.early_stopping_rounds,
        "best_iteration": int(model.get_best_iteration() or 0),
        "trees": int(model.tree_count_),
        "stopped_by_deadline": stop.stopped_at is not None,
        "location_smoothing": encoder.smoothing,
    }
    return Pipeline([("location", encoder), ("catboost", model)]), info


def _hgb_preprocessor(seed: int) -> ColumnTransformer:
    high = list(HIGH_CARDINALITY)
    low = list(LOW_CARDINALITY)
    passthrough = [c for c in FEATURE_COLUMNS if c not in CATEGORICAL_FEATURES]
    return ColumnTransformer(
        [
            ("numeric", "passthrough", [*passthrough, *LocationEncoder.ADDED_COLUMNS]),
            (
                "target",
                TargetEncoder(
                    target_type="continuous", cv=KFold(5, shuffle=True, random_state=seed)
                ),
                high,
            ),
            (
                "ordinal",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                    dtype=np.float32,
                ),
                low,
            ),
        ],
        verbose_feature_names_out=False,
    )


def _train_hgb(data: _Data, budget: TrainingBudget, deadline: float) -> tuple[Any, dict]:
    encoder, fit_x, val_x = data.located
    fit_y, val_y = data.fit_log_price, data.validation_log_price
    preprocessor = _hgb_preprocessor(budget.seed)
    fit_m = preprocessor.fit_transform(fit_x, fit_y)
    val_m = preprocessor.transform(val_x)
    fit_m, val_m = fit_m.astype(np.float32), val_m.astype(np.float32)
    names = list(preprocessor.get_feature_names_out())
    params = {
        "loss": "squared_error",
        "learning_rate": budget.learning_rate,
        "max_leaf_nodes": budget.max_leaf_nodes,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
        "max_bins": 255,
        "categorical_features": [name in LOW_CARDINALITY for name in names],
        "early_stopping": True,
        "n_iter_no_change": budget.early_stopping_rounds,
        "random_state": budget.seed,
    }
    # The validation split is ours (X_val): the rows CatBoost stops on too. HGB has no
    # callback, so the deadline is kept by pace: warm-started fits grow the model in chunks that
    # double (20, 40, 80, ... rounds), each no longer than the time left at the pace of the
    # previous chunk (fit overhead included, so the estimate errs on the safe side).
    model = HistGradientBoostingRegressor(warm_start=True, **params)

    def grow(rounds: int) -> float:
        """Seconds per round of growing the model to ``rounds`` rounds."""
        before = getattr(model, "n_iter_", 0)
        model.set_params(max_iter=min(rounds, budget.iterations))
        started = time.monotonic()
        model.fit(fit_m, fit_y, X_val=val_m, y_val=val_y)
        return (time.monotonic() - started) / max(model.n_iter_ - before, 1)

    pace = grow(_PACE_ROUNDS)
    stopped_early = hit_deadline = False
    while True:
        stopped_early = model.n_iter_ < model.max_iter
        if stopped_early or model.n_iter_ >= budget.iterations:
            break
        affordable = int(0.9 * (deadline - time.monotonic()) / pace)
        if affordable < 1:
            hit_deadline = True
            break
        pace = grow(model.n_iter_ + min(model.n_iter_, affordable))
    info = {
        **{k: v for k, v in params.items() if k != "categorical_features"},
        "max_iter": budget.iterations,
        "threads": budget.hgb_threads,
        "iterations_run": int(model.n_iter_),
        "stopped_early": stopped_early,
        "stopped_by_deadline": hit_deadline,
        "target_encoded": ",".join(HIGH_CARDINALITY),
        "native_categorical": ",".join(LOW_CARDINALITY),
        "location_smoothing": encoder.smoothing,
    }
    pipeline = Pipeline(
        [("location", encoder), ("encode", preprocessor), ("float32", _Float32()), ("hgb", model)]
    )
    return pipeline, info


class _Float32(BaseEstimator):
    """Casts the encoded matrix to float32 (as the booster was trained on) in a Pipeline."""

    def fit(self, X: Any, y: Any = None) -> _Float32:
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=np.float32)

    def __sklearn_is_fitted__(self) -> bool:
        return True


def _train_baseline(data: _Data, budget: TrainingBudget, deadline: float) -> tuple[Any, dict]:
    model = MedianPriceBaseline().fit(data.features, data.log_price)
    return model, {"min_rows": model.min_rows, "fallback": "zip_code>state>global"}


_TRAINERS = {
    "catboost": _train_catboost,
    "hist_gradient_boosting": _train_hgb,
    "baseline_median": _train_baseline,
}


def _importances(
    model: PriceModel, features: pd.DataFrame, log_price: np.ndarray, seed: int
) -> dict[str, float]:
    """Permutation importance on (at most IMPORTANCE_ROWS) eval rows: how much MAE(log) grows
    when one feature's values are shuffled among the rows, averaged over IMPORTANCE_REPEATS
    shuffles, clipped at 0 and scaled to sum to 1 (all 0 when nothing matters).

    Every shuffled copy is scored in one predict call: one pass through the pipeline instead
    of one per feature and repeat.
    """
    rng = np.random.default_rng(seed)
    if len(features) > IMPORTANCE_ROWS:
        rows = np.sort(rng.choice(len(features), IMPORTANCE_ROWS, replace=False))
        features, log_price = features.iloc[rows], log_price[rows]
    features = features.reset_index(drop=True)
    if len(features) < 2:
        return dict.fromkeys(features.columns, 0.0)
    copies = []
    for column in features.columns:
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = features.copy()
            shuffled[column] = features[column].to_numpy()[rng.permutation(len(features))]
            copies.append(shuffled)
    predicted = np.asarray(
        model.estimator.predict(pd.concat([features, *copies], ignore_index=True)), "float64"
    )
    errors = np.abs(predicted - np.tile(log_price, 1 + len(copies))).reshape(-1, len(features))
    mae = errors.mean(axis=1)
    gains = (mae[1:].reshape(len(features.columns), IMPORTANCE_REPEATS) - mae[0]).mean(axis=1)
    gains = np.clip(gains, 0.0, None)
    total = gains.sum()
    shares = gains / total if total > 0 else gains
    return {name: float(share) for name, share in zip(features.columns, shares, strict=True)}


def train_candidates(
    train: pd.DataFrame,
    eval: pd.DataFrame,  # the name for it
    budget: TrainingBudget | None = None,
    candidates: Sequence[str] = CANDIDATES,
    config: FeatureConfig | None = None,
    interval_level: float = DEFAULT_LEVEL,
    unseen: UnseenResiduals | None = None,
) -> list[CandidateResult]:
    """Fit every candidate on ``train``, score it on ``eval``; best (lowest mae_usd) first.

    ``train`` and ``eval`` are CLEAN listing frames (``price`` plus the listing fields). Each
    model is scored through ``PriceModel.predict`` on the eval rows' raw fields, the path
    serving takes. Its intervals are calibrated on ``unseen`` (earlier models' residuals on
    batches they had not trained on) when it holds at least ``MIN_GROUP_ROWS``, else on the
    eval rows (``realty.model.intervals``; the metrics include their coverage on the eval rows
    at ``interval_level``).
    """
    budget = budget or TrainingBudget()
    config = config or FeatureConfig()
    unknown = [name for name in candidates if name not in _TRAINERS]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    if train.empty or eval.empty:
        raise ValueError("train and eval need rows")
    rows_given = len(train)
    train = subsample(train, budget.max_rows, budget.seed)
    data = _data(train, budget, config)
    eval_features = prepare_features(eval, config)
    eval_price = eval["price"].to_numpy(dtype="float64")
    on_unseen = unseen is not None and len(unseen) >= MIN_GROUP_ROWS
    calibrated_on = (
        f"{len(unseen)} residuals on {unseen.batches} unseen batches"
        if on_unseen
        else f"{len(eval)} eval rows"
    )
    common = {
        "interval_calibration": calibrated_on,
        "train_rows": len(train),
        "train_rows_given": rows_given,
        "eval_rows": len(eval),
        "reference_date": config.reference_date.isoformat(),
        "budget": asdict(budget),
    }
    results = []
    for name in candidates:
        started = time.monotonic()
        logger.info("training %s on %d rows", name, len(train))
        # OpenMP (HGB) threads are limited for fit, scoring and importances alike.
        with threadpool_limits(limits=budget.hgb_threads, user_api="openmp"):
            estimator, params = _TRAINERS[name](data, budget, started + budget.max_seconds)
            fitted = time.monotonic()
            model = PriceModel(estimator, config, name=name, params=params)
            predicted = model.predict(None, eval)
            importances = _importances(model, eval_features, np.log(eval_price), budget.seed)
        seconds, evaluate_seconds = fitted - started, time.monotonic() - fitted
        metrics = evaluate(eval_price, predicted)
        metrics |= zip_errors(
            data.features["zip_code"],
            eval_features["zip_code"],
            np.log(eval_price),
            np.log(np.clip(predicted, 1.0, None)),
        )
        groups = eval_features[INTERVAL_GROUP].tolist()
        model.calibration = (
            ConformalCalibration.from_residuals(unseen.groups, unseen.residuals)
            if on_unseen
            else ConformalCalibration.fit(groups, np.log(eval_price), np.log(predicted))
        )
        metrics |= interval_scores(
            model.calibration, groups, np.log(eval_price), np.log(predicted), interval_level,
            calibrated_on_these=not on_unseen,
        )  # fmt: skip
        logger.info("%s: %s in %.1f s", name, metrics, seconds)
        results.append(
            CandidateResult(
                name=name,
                model=model,
                params={**params, **common},
                metrics=metrics,
                train_seconds=seconds,
                feature_importances=importances,
                evaluate_seconds=evaluate_seconds,
                train_rows=len(train),
                eval_rows=len(eval),
            )
        )
    return sorted(results, key=lambda result: result.metrics["mae_usd"])


def _data(train: pd.DataFrame, budget: TrainingBudget, config: FeatureConfig) -> _Data:
    features = prepare_features(train, config)
    log_price = np.log(train["price"].to_numpy(dtype="float64"))
    rows = np.random.default_rng(budget.seed).permutation(len(train))
    held = round(len(train) * budget.validation_fraction) if len(train) >= 10 else 0
    validation_rows, fit_rows = np.sort(rows[:held]), np.sort(rows[held:])
    if held == 0:  # too few rows to hold any out: stop on the training rows themselves
        validation_rows = fit_rows
    return _Data(features, log_price, fit_rows, validation_rows, budget.seed)
