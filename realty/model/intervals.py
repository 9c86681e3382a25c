"""Price intervals: split conformal, Mondrian by state (docs/training.md#price-intervals).

A candidate is calibrated on its evaluation split (rows it was not fitted on): the absolute
residuals of its log-price predictions, sorted, for every state with at least
``MIN_GROUP_ROWS`` eval rows and pooled over all eval rows. The interval at a level (say 0.9)
of a prediction ŷ is ``exp(log ŷ ± q)``, where q is the finite-sample conformal quantile of the
residuals of the listing's state, or of the pooled residuals for a state with fewer rows (or
none): the ⌈(n + 1) level⌉-th smallest of the n residuals. For listings exchangeable with the
eval rows it covers the true price with probability at least the level, within each state.

The listings a model is served are not exchangeable with its eval split: the data API delivers
the country in slices, so a new batch brings places the model barely saw, and eval residuals
are too small for them (81.6 % coverage of the next batch at 90 %, bench/intervals.py). Once
the loop has them, a candidate is calibrated instead on the residuals of the production models
before it on each batch they had not yet trained on (``UnseenResiduals``, recorded by every
drift verdict): errors on data exactly as new as the next batch will be.

Hand-written rather than MAPIE or crepes: serving needs one dict look-up and two ``exp`` per
listing, and the sorted residuals (not a fitted library object) are all the logged model has
to carry to give an interval at any level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_GROUP_ROWS = 100  # eval rows a state needs for its own quantile
DEFAULT_LEVEL = 0.9
_RANK_SLACK = 1e-9  # (n + 1) * level is 90.00000000000001 for n = 99, level 0.9


def conformal_quantile(sorted_residuals: np.ndarray, level: float) -> float:
    """The ⌈(n + 1) level⌉-th smallest of n sorted residuals; inf when that rank exceeds n
    (too few residuals to bound an interval at ``level``)."""
    if not 0 < level < 1:
        raise ValueError(f"an interval level is between 0 and 1, not {level}")
    n = len(sorted_residuals)
    rank = math.ceil((n + 1) * level - _RANK_SLACK)
    return float(sorted_residuals[rank - 1]) if rank <= n else math.inf


@dataclass(frozen=True)
class UnseenResiduals:
    """Absolute log-price residuals of listings the model that priced them had not trained on
    (production on each batch before it was trained on), with each listing's group (state)."""

    groups: list[str]
    residuals: np.ndarray
    batches: int = 1

    def __len__(self) -> int:
        return len(self.residuals)


@dataclass(frozen=True)
class IntervalTable:
    """Half-widths in log price of the intervals at one level: per state, else pooled."""

    level: float
    pooled: float
    by_group: dict[str, float]

    def half_widths(self, groups: Sequence[str]) -> np.ndarray:
        return np.array([self.by_group.get(group, self.pooled) for group in groups], "float64")


class ConformalCalibration:
    """Sorted absolute log-price residuals of an eval split: pooled, and per group (state)
    for the groups with at least ``min_group_rows`` of them."""

    def __init__(
        self, pooled: np.ndarray, by_group: dict[str, np.ndarray], min_group_rows: int
    ) -> None:
        self.pooled = pooled
        self.by_group = by_group
        self.min_group_rows = min_group_rows

    @classmethod
    def fit(
        cls,
        groups: Sequence[str],
        log_true: np.ndarray,
        log_pred: np.ndarray,
        min_group_rows: int = MIN_GROUP_ROWS,
    ) -> ConformalCalibration:
        residuals = np.abs(np.asarray(log_true, "float64") - np.asarray(log_pred, "float64"))
        return cls.from_residuals(groups, residuals, min_group_rows)

    @classmethod
    def from_residuals(
        cls, groups: Sequence[str], residuals: np.ndarray, min_group_rows: int = MIN_GROUP_ROWS
    ) -> ConformalCalibration:
        """From absolute log-price residuals, one per group value."""
        residuals = np.asarray(residuals, "float64")
        if residuals.size == 0 or len(groups) != residuals.size:
            raise ValueError(f"need a group per residual, got {len(groups)} and {residuals.size}")
        keys = np.asarray(groups, dtype=object)
        by_group = {}
        for group in dict.fromkeys(keys.tolist()):
            own = residuals[keys == group]
            if own.size >= min_group_rows:
                by_group[group] = np.sort(own)
        return cls(np.sort(residuals), by_group, min_group_rows)

    @property
    def rows(self) -> int:
        return len(self.pooled)

    def table(self, level: float) -> IntervalTable | None:
        """The half-widths at ``level``; None when even the pooled residuals are too few for
        it (fewer than 1 / (1 - level) - 1). A group too small for it uses the pooled one."""
        pooled = conformal_quantile(self.pooled, level)
        if math.isinf(pooled):
            return None
        own = {group: conformal_quantile(r, level) for group, r in self.by_group.items()}
        return IntervalTable(level, pooled, {g: q for g, q in own.items() if math.isfinite(q)})

    def describe(self) -> dict[str, object]:
        """Rows of the calibration and of each group with its own quantile (MLflow params)."""
        return {
            "rows": self.rows,
            "min_group_rows": self.min_group_rows,
            "groups": {group: len(r) for group, r in sorted(self.by_group.items())},
        }


def covered(
    table: IntervalTable, groups: Sequence[str], log_true: np.ndarray, log_pred: np.ndarray
) -> np.ndarray:
    """Whether each true log price lies in its interval (bounds included)."""
    error = np.abs(np.asarray(log_true, "float64") - np.asarray(log_pred, "float64"))
    return error <= table.half_widths(groups)


def cross_fit_coverage(
    groups: Sequence[str],
    log_true: np.ndarray,
    log_pred: np.ndarray,
    level: float,
    min_group_rows: int = MIN_GROUP_ROWS,
    seed: int = 0,
) -> float | None:
    """Coverage on an eval split where no row calibrates its own interval: the rows are cut
    into two random halves and each half's intervals are calibrated on the other half (so a
    state needs ``min_group_rows`` rows within a half for its own quantile). None when a half
    is too small for intervals at ``level``. (The coverage of a calibration on its own rows
    would be at least ``level`` by construction, so it would measure nothing.)"""
    keys = np.asarray(groups, dtype=object)
    log_true, log_pred = np.asarray(log_true, "float64"), np.asarray(log_pred, "float64")
    half = np.random.default_rng(seed).permutation(len(keys)) % 2 == 0
    if half.all():  # one row
        return None
    hits = 0
    for calibrate, measure in ((half, ~half), (~half, half)):
        calibration = ConformalCalibration.fit(
            keys[calibrate].tolist(), log_true[calibrate], log_pred[calibrate], min_group_rows
        )
        table = calibration.table(level)
        if table is None:
            return None
        hits += int(
            covered(table, keys[measure].tolist(), log_true[measure], log_pred[measure]).sum()
        )
    return hits / len(keys)


def interval_scores(
    calibration: ConformalCalibration,
    groups: Sequence[str],
    log_true: np.ndarray,
    log_pred: np.ndarray,
    level: float,
    calibrated_on_these: bool = True,
) -> dict[str, float]:
    """What a candidate's run and version record of its intervals on its eval split:
    ``interval_coverage`` and ``interval_half_width_log`` (the mean half-width the calibration
    gives those rows; a half-width h is a price range of exp(-h) to exp(h) times the
    prediction). The coverage is ``cross_fit_coverage`` when ``calibration`` was fitted on
    these rows, else their share inside their interval. Empty when the split is too small
    for ``level``."""
    table = calibration.table(level)
    if calibrated_on_these:
        coverage = cross_fit_coverage(groups, log_true, log_pred, level, calibration.min_group_rows)
    elif table is not None:
        coverage = float(covered(table, groups, log_true, log_pred).mean())
    if table is None or coverage is None:
        return {}
    return {
        "interval_coverage": coverage,
        "interval_half_width_log": float(table.half_widths(groups).mean()),
    }
