"""Feature preparation shared by training and serving (docs/training.md explains each feature).

``prepare_features`` turns listing fields, as CLEAN stores them or as a client posts them
(numbers as text, zip codes and ids as floats, keys left out), into the model's feature frame:
``FEATURE_COLUMNS`` in that order, numerics as float32 (NaN when unknown), categoricals as
``str`` (``MISSING`` when unknown). It is stateless: the only setting, the reference date of
``years_since_sold``, lives in ``FeatureConfig``, which every logged model carries.

Where the zip code is and what its county earns come from offline tables shipped in packages
(``realty.model.geography``), so a zip code no listing has come from still has a place.

``LocationEncoder`` is the one fitted step: smoothed mean log price and log price per square
foot of the listing's location, each level (zip code, city, zip3, county, metro area, state)
shrunk towards the next coarser one, and the same means over the nearest zip codes training
has seen. It is fitted on the training rows only and, like scikit-learn's ``TargetEncoder``,
encodes those rows out of fold so that no row sees its own price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import KFold
from sklearn.neighbors import BallTree

from realty.model.geography import (
    PLACE_CODES,
    PLACE_NUMBERS,
    UNKNOWN_PLACE,
    place_lookup,
    zip_places,
)
from realty.schema import (
    LISTING_COLUMNS,
    date_value,
    id_value,
    number_value,
    state_value,
    status_value,
    text_value,
    zip_code_value,
)

# A prediction needs these keys (their values may still be null); every other field may be left
# out. They are the fields a CLEAN row always has, apart from the price being predicted.
REQUIRED_FIELDS: tuple[str, ...] = ("status", "city", "state")
INPUT_FIELDS: tuple[str, ...] = tuple(c for c in LISTING_COLUMNS if c != "price")

NUMERIC_FEATURES: tuple[str, ...] = (
    "bed",  # bedrooms
    "bath",  # bathrooms
    "log_house_size",  # ln(house_size in sq ft)
    "log_acre_lot",  # ln(1 + acre_lot); a 0-acre lot is unknown, as in CLEAN
    "years_since_sold",  # (reference_date - prev_sold_date) in years; NaN if never sold
    "zip_number",  # the zip code as a number: neighbouring zips are neighbouring places
    "facts_missing",  # how many of bed, bath, house_size, acre_lot are unknown (0-4)
    # realty.model.geography, by zip code:
    "lat",  # latitude and longitude (degrees)
    "lon",
    "log_county_wage",  # ln(the county's 2025 average weekly wage, $), BLS QCEW
    "log_county_jobs",  # ln(the county's jobs), BLS QCEW: how urban the place is
)
CATEGORICAL_FEATURES: tuple[str, ...] = (
    "status",  # for_sale, sold, ready_to_build
    "state",  # as spelled in realty.schema.US_STATES
    "city",  # "state|city": the same city name in two states is two places
    "zip_code",  # 5 digits
    "zip3",  # the zip's first 3 digits: the USPS sectional centre, a region
    "brokered_by",  # the broker id as text: brokers work in markets and segments
    "county",  # the county's 5-digit FIPS code (HUD crosswalk)
    "cbsa",  # the metropolitan or micropolitan area's code; 99999 outside any
)
FEATURE_COLUMNS: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES
MISSING = "__missing__"  # a categorical feature's value when the field is unknown

DEFAULT_REFERENCE_DATE = date(2025, 1, 1)
_FACTS = ("bed", "bath", "house_size", "acre_lot")


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of ``prepare_features``; a fitted model keeps the ones it was trained with."""

    # years_since_sold counts from here. Fixed (not "today") so that the same listing gets the
    # same features at training and at every later prediction.
    reference_date: date = DEFAULT_REFERENCE_DATE


def prepare_features(listings: pd.DataFrame, config: FeatureConfig | None = None) -> pd.DataFrame:
    """The model's feature frame (``FEATURE_COLUMNS``, same index) of raw or clean listings.

    Values may be numbers, text or null; fields other than ``REQUIRED_FIELDS`` may be absent
    and columns that are not listing fields (price, batch_key, row_hash, ...) are ignored.
    Whatever cannot be read as its field (``"three"`` beds, zip ``"ABC"``) counts as unknown.
    """
    config = config or FeatureConfig()
    absent = [field for field in REQUIRED_FIELDS if field not in listings.columns]
    if absent:
        raise ValueError(f"listings lack the required fields {absent}")

    def field(name: str) -> pd.Series:
        if name in listings.columns:
            return listings[name]
        return pd.Series(None, index=listings.index, dtype=object)

    facts = {name: _numbers(field(name)) for name in _FACTS}
    facts["house_size"] = facts["house_size"].where(facts["house_size"] > 0)
    facts["acre_lot"] = facts["acre_lot"].where(facts["acre_lot"] > 0)  # CLEAN: 0 acres = null
    sold = _dates(field("prev_sold_date"))
    zip_code = _zip_codes(field("zip_code"))
    state = _states(field("state"))
    city = _texts(field("city"))
    places = zip_places().reindex(zip_code.to_numpy())
    numeric = {
        "bed": facts["bed"],
        "bath": facts["bath"],
        "log_house_size": np.log(facts["house_size"]),
        "log_acre_lot": np.log1p(facts["acre_lot"]),
        "years_since_sold": (pd.Timestamp(config.reference_date) - sold).dt.days / 365.25,
        "zip_number": pd.to_numeric(zip_code, errors="coerce"),
        "facts_missing": sum(facts[name].isna().astype("float64") for name in _FACTS),
        **{name: places[name].to_numpy(dtype="float64") for name in PLACE_NUMBERS},
    }
    categorical = {
        "status": _each(field("status"), status_value).astype("string"),
        "state": state,
        "city": (state.fillna(MISSING) + "|" + city).where(city.notna()),
        "zip_code": zip_code,
        "zip3": zip_code.str.slice(0, 3),
        "brokered_by": _ids(field("brokered_by")),
        **{name: pd.Series(places[name].to_numpy(), index=listings.index) for name in PLACE_CODES},
    }
    frame = pd.DataFrame(index=listings.index)
    for name in NUMERIC_FEATURES:
        frame[name] = pd.Series(numeric[name], index=listings.index).astype("float32")
    for name in CATEGORICAL_FEATURES:
        frame[name] = categorical[name].astype(object).where(categorical[name].notna(), MISSING)
    return frame


def _each(values: pd.Series, parse: Callable[[object], object]) -> pd.Series:
    """``parse`` (a realty.schema parser) applied to each distinct value of ``values`` once
    (a column repeats its cities, zips and dates), as an object series; None where null."""
    codes, distinct = pd.factorize(values, use_na_sentinel=True)
    parsed = np.array([*map(parse, distinct), None], dtype=object)  # code -1 (null) → None
    return pd.Series(parsed[codes], index=values.index, dtype=object)


def _texts(values: pd.Series) -> pd.Series:
    return _each(values, text_value).astype("string")


def _numbers(values: pd.Series) -> pd.Series:
    """float64; NaN for null, unreadable or infinite values."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("Float64").astype("float64")  # typed already: nothing to read
        return numbers.where(np.isfinite(numbers))
    return _each(values, number_value).astype("float64")


def _ids(values: pd.Series) -> pd.Series:
    return _each(values, id_value).astype("string")


def _states(values: pd.Series) -> pd.Series:
    """A state as spelled in US_STATES; other text stays as sent (a place training never saw)."""
    return _each(values, lambda v: state_value(v) or text_value(v)).astype("string")


def _zip_codes(values: pd.Series) -> pd.Series:
    return _each(values, zip_code_value).astype("string")


def _dates(values: pd.Series) -> pd.Series:
    """datetime64 of what ``date_value`` reads; NaT otherwise."""
    return pd.to_datetime(_each(values, date_value)).astype("datetime64[ns]")


# ---------------------------------------------------------------- one listing at a time
# The same preparation as prepare_features, value by value in plain Python, for serving: a
# single listing does not pay for building and parsing pandas frames. Both read each field by
# its realty.schema parser; tests check the two paths agree value for value.

_UNSEEN = (0.0, 0.0, 0.0, 0.0)  # sums and counts of a location value not seen in training


def feature_rows(
    listings: Sequence[Mapping[str, object]], config: FeatureConfig | None = None
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """The features of ``listings`` (dicts of listing fields) as ``prepare_features`` makes
    them, without pandas: (float32 array of ``NUMERIC_FEATURES``, one tuple of
    ``CATEGORICAL_FEATURES`` per listing). A missing key counts as unknown."""
    config = config or FeatureConfig()
    reference = config.reference_date
    places = place_lookup()
    numbers = np.empty((len(listings), len(NUMERIC_FEATURES)), dtype="float64")
    categories = []
    for row, listing in enumerate(listings):
        bed, bath, house_size, acre_lot = (number_value(listing.get(name)) for name in _FACTS)
        house_size = house_size if house_size > 0 else math.nan  # as in CLEAN: 0 = unknown
        acre_lot = acre_lot if acre_lot > 0 else math.nan
        facts = (bed, bath, house_size, acre_lot)
        sold = date_value(listing.get("prev_sold_date"))
        zip_code = zip_code_value(listing.get("zip_code"))
        state = state_value(listing.get("state")) or text_value(listing.get("state"))
        city = text_value(listing.get("city"))
        status = status_value(listing.get("status"))
        lat, lon, wage, jobs, county, cbsa = places.get(zip_code, UNKNOWN_PLACE)
        numbers[row] = (
            bed,
            bath,
            house_size,
            acre_lot,
            (reference - sold).days / 365.25 if sold is not None else math.nan,
            float(zip_code) if zip_code is not None else math.nan,
            float(sum(math.isnan(fact) for fact in facts)),
            lat,
            lon,
            wage,
            jobs,
        )
        categories.append(
            (
                status if status is not None else MISSING,
                state if state is not None else MISSING,
                f"{state or MISSING}|{city}" if city is not None else MISSING,
                zip_code or MISSING,
                zip_code[:3] if zip_code is not None else MISSING,
                id_value(listing.get("brokered_by")) or MISSING,
                county or MISSING,
                cbsa or MISSING,
            )
        )
    # Logarithms of whole columns with numpy's ufuncs, as prepare_features takes them.
    numbers[:, 2] = np.log(numbers[:, 2])
    numbers[:, 3] = np.log1p(numbers[:, 3])
    return numbers.astype("float32"), categories


def feature_frame(numbers: np.ndarray, categories: list[tuple[str, ...]]) -> pd.DataFrame:
    """``feature_rows``'s output as the frame ``prepare_features`` returns."""
    frame = pd.DataFrame(numbers, columns=list(NUMERIC_FEATURES))
    for position, name in enumerate(CATEGORICAL_FEATURES):
        frame[name] = pd.Series([row[position] for row in categories], dtype=object)
    return frame


LOCATION_COLUMNS: tuple[str, ...] = ("loc_log_price", "loc_log_ppsf", "loc_rows")
NEARBY_COLUMNS: tuple[str, ...] = ("nearby_log_price", "nearby_log_ppsf", "nearest_km")
_EARTH_KM = 6371.0
_LAT, _LON = NUMERIC_FEATURES.index("lat"), NUMERIC_FEATURES.index("lon")


class LocationEncoder(TransformerMixin, BaseEstimator):
    """Adds the location's price level to a feature frame: smoothed target encoding.

    For each target (log price, and log price per sq ft on rows with a house size) the
    estimate starts at the training mean and moves, level by level from coarse to fine
    (``levels``), towards the level's mean: ``(sum + smoothing * parent) / (count + smoothing)``.
    A level value never seen in training (or ``MISSING``) keeps its parent's estimate, so an
    unknown zip code falls back to its city, zip3, county, metro area, state or the national
    level.

    Added columns: ``loc_log_price``, ``loc_log_ppsf`` and ``loc_rows`` (training rows that
    share the finest level, a confidence the trees can use); with ``neighbours``, the same
    two means pooled over the training rows of the ``neighbours`` zip codes nearest to the
    listing's (its own included when training had it) and ``nearest_km``, how far the nearest
    one is: a new zip code borrows from the places around it, wherever the state lines are.
    ``fit_transform`` encodes each training row with tables built from the other folds (out of
    fold), as ``TargetEncoder``.
    """

    # An encoder pickled before the nearby columns existed has no ``neighbours``: none.
    neighbours: int = 0

    def __init__(
        self,
        levels: Sequence[str] = ("state", "cbsa", "county", "zip3", "city", "zip_code"),
        smoothing: float = 5.0,
        neighbours: int = 10,
        cv: int = 5,
        random_state: int = 0,
    ) -> None:
        self.levels = levels
        self.smoothing = smoothing
        self.neighbours = neighbours
        self.cv = cv
        self.random_state = random_state

    ADDED_COLUMNS: tuple[str, ...] = LOCATION_COLUMNS + NEARBY_COLUMNS

    @property
    def added_columns(self) -> tuple[str, ...]:
        return self.ADDED_COLUMNS if self.neighbours else LOCATION_COLUMNS

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LocationEncoder:
        self.tables_ = self._tables(X, np.asarray(y, dtype="float64"))
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def fit_transform(self, X: pd.DataFrame, y: np.ndarray, **_: object) -> pd.DataFrame:
        y = np.asarray(y, dtype="float64")
        self.fit(X, y)
        encoded = np.empty((len(X), len(self.added_columns)), dtype="float32")
        if len(X) < 2 * self.cv:  # too few rows to hold any out: encode in sample
            encoded[:] = self._encode(self.tables_, X)
        else:
            folds = KFold(self.cv, shuffle=True, random_state=self.random_state)
            for fit_rows, encode_rows in folds.split(X):
                tables = self._tables(X.iloc[fit_rows], y[fit_rows])
                encoded[encode_rows] = self._encode(tables, X.iloc[encode_rows])
        return self._with(X, encoded)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._with(X, self._encode(self.tables_, X))

    def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray([*names, *self.added_columns], dtype=object)

    def _tables(self, X: pd.DataFrame, y: np.ndarray) -> dict:
        """Training means of both targets and, per level, each value's sums and counts; with
        ``neighbours``, the training zip codes' sums in a ball tree of their places."""
        ppsf = y - X["log_house_size"].to_numpy(dtype="float64")
        sized = ~np.isnan(ppsf)
        means = {
            "price": float(y.mean()),
            "ppsf": float(ppsf[sized].mean()) if sized.any() else float(np.log(200.0)),
        }
        sums = pd.DataFrame(
            {
                "price_sum": y,
                "price_count": 1.0,
                "ppsf_sum": np.where(sized, ppsf, 0.0),
                "ppsf_count": sized.astype("float64"),
            }
        )
        levels = {}
        for level in self.levels:
            stats = sums.groupby(X[level].to_numpy()).sum()
            levels[level] = stats.drop(index=MISSING, errors="ignore")
        tables = {"means": means, "levels": levels}
        if self.neighbours:
            by_zip = sums.groupby(X["zip_code"].to_numpy()).sum()
            tables["nearby"] = _Nearby.build(by_zip.drop(index=MISSING, errors="ignore"))
        return tables

    def _encode(self, tables: dict, X: pd.DataFrame) -> np.ndarray:
        price = np.full(len(X), tables["means"]["price"])
        ppsf = np.full(len(X), tables["means"]["ppsf"])
        rows = np.zeros(len(X))
        m = self.smoothing
        for level in self.levels:
            found = tables["levels"][level].reindex(X[level].to_numpy()).fillna(0.0)
            rows = found["price_count"].to_numpy()
            price = (found["price_sum"].to_numpy() + m * price) / (rows + m)
            ppsf = (found["ppsf_sum"].to_numpy() + m * ppsf) / (found["ppsf_count"].to_numpy() + m)
        columns = [price, ppsf, rows]
        if self.neighbours:
            places = X[["lat", "lon"]].to_numpy(dtype="float64")
            columns += tables["nearby"].encode(places, self.neighbours, tables["means"])
        return np.column_stack(columns).astype("float32")

    def encode_rows(self, numbers: np.ndarray, categories: list[tuple[str, ...]]) -> np.ndarray:
        """``transform``'s added columns (float32, one row per listing) for ``feature_rows``'s
        output: the same arithmetic, with dict look-ups instead of frames."""
        lookups = self._lookups()
        positions = [CATEGORICAL_FEATURES.index(level) for level in self.levels]
        means = self.tables_["means"]
        m = self.smoothing
        encoded = np.empty((len(categories), len(self.added_columns)), dtype="float32")
        for row, values in enumerate(categories):
            price, ppsf, rows = means["price"], means["ppsf"], 0.0
            for lookup, position in zip(lookups, positions, strict=True):
                price_sum, rows, ppsf_sum, ppsf_count = lookup.get(values[position], _UNSEEN)
                price = (price_sum + m * price) / (rows + m)
                ppsf = (ppsf_sum + m * ppsf) / (ppsf_count + m)
            encoded[row, : len(LOCATION_COLUMNS)] = (price, ppsf, rows)
        if self.neighbours:
            places = np.asarray(numbers, dtype="float64")[:, [_LAT, _LON]]
            nearby = self.tables_["nearby"].encode_remembered(places, self.neighbours, means)
            encoded[:, len(LOCATION_COLUMNS) :] = nearby
        return encoded

    def _lookups(self) -> list[dict[str, tuple[float, float, float, float]]]:
        """Per level: value → (price_sum, price_count, ppsf_sum, ppsf_count); built once."""
        if getattr(self, "lookups_", None) is None:
            columns = ["price_sum", "price_count", "ppsf_sum", "ppsf_count"]
            self.lookups_ = [
                dict(zip(table.index, map(tuple, table[columns].to_numpy().tolist()), strict=True))
                for table in (self.tables_["levels"][level] for level in self.levels)
            ]
        return self.lookups_

    def _with(self, X: pd.DataFrame, encoded: np.ndarray) -> pd.DataFrame:
        added = pd.DataFrame(encoded, index=X.index, columns=list(self.added_columns))
        return pd.concat([X, added], axis=1)


@dataclass
class _Nearby:
    """The training zip codes that have a place: their sums, in a ball tree of (lat, lon)."""

    tree: BallTree | None
    sums: np.ndarray  # price_sum, price_count, ppsf_sum, ppsf_count per zip, in tree order

    @classmethod
    def build(cls, by_zip: pd.DataFrame) -> _Nearby:
        places = zip_places()[["lat", "lon"]].reindex(by_zip.index).to_numpy(dtype="float64")
        known = ~np.isnan(places).any(axis=1)
        sums = by_zip[["price_sum", "price_count", "ppsf_sum", "ppsf_count"]].to_numpy()[known]
        tree = BallTree(np.radians(places[known]), metric="haversine") if known.any() else None
        return cls(tree, sums)

    def encode(self, places: np.ndarray, neighbours: int, means: dict) -> list[np.ndarray]:
        """[nearby_log_price, nearby_log_ppsf, nearest_km] of each (lat, lon); the training
        means and NaN km where the place is unknown."""
        price = np.full(len(places), means["price"])
        ppsf = np.full(len(places), means["ppsf"])
        km = np.full(len(places), np.nan)
        known = ~np.isnan(places).any(axis=1)
        if self.tree is not None and known.any():
            k = min(neighbours, len(self.sums))
            # One query per place, not per listing: a training frame has a few listings per
            # zip code, and importances score shuffled copies of the same rows.
            unique, inverse = np.unique(places[known], axis=0, return_inverse=True)
            distance, nearest = self.tree.query(np.radians(unique), k=k)
            pooled = self.sums[nearest].sum(axis=1)[inverse]  # per listing: the 4 sums
            distance = distance[inverse]
            price[known] = pooled[:, 0] / pooled[:, 1]
            sized = pooled[:, 3] > 0  # else no neighbour had a house size: the training mean
            ppsf[known] = np.where(sized, pooled[:, 2] / np.maximum(pooled[:, 3], 1.0), ppsf[known])
            km[known] = distance[:, 0] * _EARTH_KM
        return [price, ppsf, km]

    def encode_remembered(self, places: np.ndarray, neighbours: int, means: dict) -> np.ndarray:
        """``encode``'s columns as one array, each known place's remembered: serving asks for
        the same zip codes again and again, and a tree query costs more than all the other
        features of a listing. At most one entry per zip code of the place table."""
        memo = self.__dict__.setdefault("_memo", {})
        encoded = np.empty((len(places), len(NEARBY_COLUMNS)))
        encoded[:] = (means["price"], means["ppsf"], np.nan)  # unknown places
        keys = [tuple(place) for place in places.tolist()]
        known = [row for row, key in enumerate(keys) if not math.isnan(key[0] + key[1])]
        new = list({keys[row] for row in known} - memo.keys())
        if new:
            columns = self.encode(np.asarray(new), neighbours, means)
            memo.update(zip(new, np.column_stack(columns).tolist(), strict=True))
        for row in known:
            encoded[row] = memo[keys[row]]
        return encoded

    def __getstate__(self) -> dict:
        return {field.name: getattr(self, field.name) for field in fields(self)}  # not the memo
