"""What a SHAP run produces: per-row values (``Explanation``) and the ranking of features
by mean |SHAP| (``Ranking``); the raw values of one chunk of rows (``Chunk``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Kind = Literal["numeric", "categorical"]


class ExplanationError(RuntimeError):
    """The model cannot be explained, or its SHAP values do not add up to its predictions."""


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


@dataclass
class Chunk:
    phi: np.ndarray  # (rows, model input columns)
    base: float


def is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not isinstance(
        column.dtype, pd.CategoricalDtype
    )


def format_number(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"


def format_signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"
