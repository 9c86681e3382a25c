"""Drift of a batch of CLEAN listings against the reference the production model was trained on.

``ReferenceProfile.from_frame`` summarises the training frame compactly (JSON round trip via
``to_dict``/``from_dict``); ``drift_report`` compares a batch with it and decides whether to
retrain. Only effect sizes (PSI, Wasserstein, missing-rate change, unseen shares, median shift,
error increase) trigger a retrain; p-values are information. Pure and vectorised; docs/drift.md
defines every number and threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from realty.model_error import PerformanceDrift, RealizedError

NUMERIC_FEATURES: tuple[str, ...] = ("bed", "bath", "acre_lot", "house_size", "prev_sold_date")
CATEGORICAL_FEATURES: tuple[str, ...] = ("status", "state", "city", "zip_code")
GEOGRAPHY: tuple[str, ...] = ("state", "city", "zip_code")
TARGET = "price"
BINS = 10  # numeric bins: reference deciles
TOP_K = 20  # categories kept per categorical; the rest share one "other" bin
SKETCH_LEVELS = np.linspace(0.0, 1.0, 101)  # quantiles kept for the Wasserstein estimate
PSI_EPSILON = 1e-4  # an empty bin counts as this share so that ln(b / r) stays finite
TOP_NAMES = 5  # unseen values named per geography level
FORMAT = 1  # version of ReferenceProfile.to_dict
INITIAL_BASELINE = "initial baseline"  # the reason of a batch judged with nothing in production
_SEEN = {"states": "state", "cities": "city", "zip_codes": "zip_code"}  # profile field: level
_NOUNS = {
    "state": ("state", "states"),
    "city": ("city", "cities"),
    "zip_code": ("zip code", "zip codes"),
}


@dataclass(frozen=True)
class DriftThresholds:
    """Effect sizes at or above which a batch asks for a retrain (docs/drift.md says why)."""

    psi: float = 0.25  # per feature, and of log price
    missing_rate_change: float = 0.10  # absolute change of a feature's missing share
    wasserstein: float | None = 1.0  # numerics, in reference IQRs; None: reported only
    unseen_share: float = 0.10  # share of rows from states never seen in training
    unseen_city_share: float = 0.20  # ... from (state, city) pairs never seen
    unseen_zip_share: float = 0.30  # ... with zip codes never seen
    median_price_change: float = 0.15  # |relative change| of the median price
    mae_increase: float = 0.20  # relative rise of production MAE over the MAE expected there
    min_rows: int = 1_000  # below: distribution drift is reported, not acted on


@dataclass(frozen=True)
class NumericProfile:
    edges: tuple[float, ...]  # interior bin edges: reference deciles, deduplicated
    shares: tuple[float, ...]  # per bin (e[i-1], e[i]], then the missing bin
    quantiles: tuple[float, ...]  # SKETCH_LEVELS of the present values; () if none
    scale: float  # reference IQR (std, then 1, if the IQR is 0): the Wasserstein unit

    @classmethod
    def build(cls, values: np.ndarray, bins: int = BINS) -> NumericProfile:
        ordered = _present(values)
        edges, quantiles, scale = np.array([]), np.array([]), 1.0
        if ordered.size:
            edges = np.unique(_quantiles(ordered, np.linspace(0, 1, bins + 1)[1:-1]))
            quantiles = _quantiles(ordered, SKETCH_LEVELS)
            scale = float(quantiles[75] - quantiles[25]) or float(ordered.std()) or 1.0
        shares = _bin_shares(ordered, len(values), edges)
        return cls(_floats(edges), _floats(shares), _floats(quantiles), scale)


@dataclass(frozen=True)
class CategoricalProfile:
    categories: tuple[str, ...]  # the top_k most frequent by reference rows
    shares: tuple[float, ...]  # per category, then "other", then missing

    @classmethod
    def build(cls, counts: pd.Series, rows: int, top_k: int = TOP_K) -> CategoricalProfile:
        top = counts.sort_index().sort_values(ascending=False, kind="stable").head(top_k)
        categories = tuple(str(name) for name in top.index)
        return cls(categories, _floats(_category_shares(counts, categories, rows)))


@dataclass(frozen=True)
class ReferenceProfile:
    """What drift needs of a training frame: bins, sketches, top categories, seen geography."""

    rows: int
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    target: NumericProfile  # of ln(price)
    median_price: float
    states: frozenset[str]
    cities: frozenset[str]  # "City, State": a city means something only with its state
    zip_codes: frozenset[str]

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, bins: int = BINS, top_k: int = TOP_K
    ) -> ReferenceProfile:
        _require(frame)
        if frame.empty:
            raise ValueError("a reference profile needs at least one listing")
        rows, counts = len(frame), {name: _counts(frame, name) for name in CATEGORICAL_FEATURES}
        return cls(
            rows=rows,
            numeric={n: NumericProfile.build(_values(frame, n), bins) for n in NUMERIC_FEATURES},
            categorical={
                n: CategoricalProfile.build(counts[n], rows, top_k) for n in CATEGORICAL_FEATURES
            },
            target=NumericProfile.build(_log_price(frame), bins),
            median_price=float(np.nanmedian(_values(frame, TARGET))),
            **{key: frozenset(counts[level].index) for key, level in _SEEN.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; cities are grouped by state to keep it compact."""
        cities: dict[str, list[str]] = {}
        for label in sorted(self.cities):
            city, state = label.rsplit(", ", 1)  # no state name holds ", "
            cities.setdefault(state, []).append(city)
        profiles = {
            "numeric": {name: asdict(p) for name, p in self.numeric.items()},
            "categorical": {name: asdict(p) for name, p in self.categorical.items()},
        }
        return {
            "format": FORMAT,
            "rows": self.rows,
            **profiles,
            "target": asdict(self.target),
            "median_price": self.median_price,
            "states": sorted(self.states),
            "cities": cities,
            "zip_codes": sorted(self.zip_codes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        if data.get("format") != FORMAT:
            raise ValueError(f"reference profile format {data.get('format')!r} is not {FORMAT}")
        return cls(
            rows=int(data["rows"]),
            numeric={n: _numeric_profile(p) for n, p in data["numeric"].items()},
            categorical={
                n: CategoricalProfile(tuple(p["categories"]), tuple(p["shares"]))
                for n, p in data["categorical"].items()
            },
            target=_numeric_profile(data["target"]),
            median_price=float(data["median_price"]),
            states=frozenset(data["states"]),
            cities=frozenset(f"{c}, {s}" for s, names in data["cities"].items() for c in names),
            zip_codes=frozenset(data["zip_codes"]),
        )


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str  # "numeric" or "categorical"
    psi: float
    distance: float | None  # numeric: Wasserstein / reference IQR; categorical: Jensen-Shannon
    missing_rate_ref: float
    missing_rate_batch: float
    p_value: float | None  # numerics: KS at the reference bin edges; information only
    shift: str  # the biggest visible move, e.g. "median 1800 → 2300" or "Texas 2.0% → 20%"
    drifted: bool


@dataclass(frozen=True)
class UnseenValues:
    level: str  # state, city (as "City, State") or zip_code
    share: float  # of the batch's rows
    values: int  # distinct unseen values
    top: tuple[tuple[str, int], ...]  # the TOP_NAMES unseen values with most rows, and rows
    drifted: bool


@dataclass(frozen=True)
class TargetDrift:
    psi: float  # of ln(price) on the reference decile bins
    distance: float | None  # Wasserstein of ln(price) / its reference IQR
    p_value: float | None
    median_ref: float
    median_batch: float
    median_change: float  # median_batch / median_ref - 1
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    retrain: bool
    reasons: list[
        str
    ]  # most severe first: realized error, performance, geography, target, features
    rows: int
    reference_rows: int | None
    features: list[FeatureDrift] = field(default_factory=list)
    unseen: dict[str, UnseenValues] = field(default_factory=dict)
    target: TargetDrift | None = None
    performance: PerformanceDrift | None = None
    notes: list[str] = field(default_factory=list)
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    realized: RealizedError | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN and infinities become null), e.g. for a jsonb column."""
        performance = self.performance.to_dict() if self.performance else None
        return _jsonable({**asdict(self), "performance": performance})

    def to_markdown(self) -> str:
        return _markdown(self)


def retrain_trigger(reasons: list[str]) -> str:
    """The trigger a retrain verdict's training is tagged with: the first model, or drift."""
    return "initial" if reasons == [INITIAL_BASELINE] else "drift"


def drift_report(
    reference: ReferenceProfile | None,
    batch: pd.DataFrame,
    thresholds: DriftThresholds = DriftThresholds(),
    performance: PerformanceDrift | None = None,
    realized: RealizedError | None = None,
) -> DriftReport:
    """Compare ``batch`` (CLEAN listings) with ``reference`` and decide whether to retrain;
    ``realized`` is production's error on the sales labelled so far, where there are enough."""
    rows, t = len(batch), thresholds
    if reference is None:  # nothing in production yet: the first model is the baseline
        return DriftReport(
            True, [INITIAL_BASELINE], rows, None, performance=performance, thresholds=t
        )
    _require(batch)
    if rows == 0:
        return DriftReport(False, [], 0, reference.rows, notes=["empty batch"], thresholds=t)
    act = rows >= t.min_rows  # a small batch's PSI is mostly sampling noise
    counts = {name: _counts(batch, name) for name in CATEGORICAL_FEATURES}
    features = [
        _numeric_drift(n, reference.numeric[n], _values(batch, n), reference.rows, t, act)
        for n in NUMERIC_FEATURES
    ] + [
        _categorical_drift(n, reference.categorical[n], counts[n], rows, t, act)
        for n in CATEGORICAL_FEATURES
    ]
    limits = {"state": t.unseen_share, "city": t.unseen_city_share, "zip_code": t.unseen_zip_share}
    seen = {level: getattr(reference, key) for key, level in _SEEN.items()}
    unseen = {g: _unseen(g, counts[g], seen[g], rows, limits[g]) for g in GEOGRAPHY}
    target = _target_drift(reference, batch, t, act)
    if performance is not None:
        performance = replace(performance, unseen_zip_share=unseen["zip_code"].share)
        rise = performance.change.get(performance.metric or "", 0.0)
        performance = replace(performance, drifted=rise >= t.mae_increase)
    if realized is not None:
        realized = replace(realized, drifted=realized.change >= t.mae_increase)
    reasons = [realized.sentence()] if realized and realized.drifted else []
    reasons += _reasons(performance, list(unseen.values()), target, features, t)
    notes = [] if act else [f"{rows:,} rows < {t.min_rows:,}: distribution drift not acted on"]
    if realized is not None and not realized.drifted:
        notes.append(realized.sentence())
    parts = {"features": features, "unseen": unseen, "target": target, "notes": notes}
    return DriftReport(
        bool(reasons), reasons, rows, reference.rows, **parts, performance=performance,
        thresholds=t, realized=realized,
    )  # fmt: skip


def _reasons(
    performance: PerformanceDrift | None,
    unseen: list[UnseenValues],
    target: TargetDrift,
    features: list[FeatureDrift],
    t: DriftThresholds,
) -> list[str]:
    """Most severe first: the model's own errors, then geography it never saw, then prices,
    then features by how many times their threshold they reach."""
    reasons = [_performance_reason(performance)] if performance and performance.drifted else []
    reasons += [_unseen_reason(u) for u in unseen if u.drifted]
    reasons += [_target_reason(target)] if target.drifted else []
    drifted = sorted((f for f in features if f.drifted), key=lambda f: -_severity(f, t))
    return reasons + [_feature_reason(f, t) for f in drifted]


def _numeric_drift(
    name: str, ref: NumericProfile, values: np.ndarray, ref_rows: int, t: DriftThresholds, act: bool
) -> FeatureDrift:
    ordered = _present(values)
    shares = _bin_shares(ordered, len(values), np.asarray(ref.edges))
    distance, shift = None, "no values"
    if ordered.size and ref.quantiles:
        ours, theirs = _quantiles(ordered, SKETCH_LEVELS), np.asarray(ref.quantiles)
        # Wasserstein-1 is the mean gap between the quantile functions; the 0% and 100%
        # quantiles are left out so that one 50,000-acre lot cannot dominate it.
        distance = float(np.abs(ours - theirs)[1:-1].mean() / ref.scale)
        shift = f"median {_number(theirs[50])} → {_number(ours[50])}"
    p_value = _ks_p_value(np.asarray(ref.shares), shares, ref_rows, len(values))
    return _feature(name, "numeric", ref.shares, shares, distance, p_value, shift, t, act)


def _categorical_drift(
    name: str, ref: CategoricalProfile, counts: pd.Series, rows: int, t: DriftThresholds, act: bool
) -> FeatureDrift:
    shares, theirs = _category_shares(counts, ref.categories, rows), np.asarray(ref.shares)
    biggest = int(np.argmax(np.abs(shares - theirs)))
    label = [*ref.categories, "other", "missing"][biggest]
    shift = f"{label} {_percent(theirs[biggest])} → {_percent(shares[biggest])}"
    others = counts.drop(list(ref.categories), errors="ignore")
    if label == "other" and len(others):  # name what "other" now holds
        shift += f", mostly {others.idxmax()}"
    distance = _jensen_shannon(theirs, shares)
    return _feature(name, "categorical", ref.shares, shares, distance, None, shift, t, act)


def _feature(
    name: str,
    kind: str,
    ref: tuple[float, ...],
    shares: np.ndarray,
    distance: float | None,
    p_value: float | None,
    shift: str,
    t: DriftThresholds,
    act: bool,
) -> FeatureDrift:
    psi, missing = _psi(ref, shares), (ref[-1], float(shares[-1]))
    drift = FeatureDrift(name, kind, psi, distance, *missing, p_value, shift, False)
    return replace(drift, drifted=act and _severity(drift, t) >= 1)


def _target_drift(
    ref: ReferenceProfile, batch: pd.DataFrame, t: DriftThresholds, act: bool
) -> TargetDrift:
    log = _numeric_drift(TARGET, ref.target, _log_price(batch), ref.rows, t, act)
    prices = _values(batch, TARGET)
    median = float(np.nanmedian(prices)) if np.isfinite(prices).any() else math.nan
    change = median / ref.median_price - 1
    drifted = act and (log.psi >= t.psi or abs(change) >= t.median_price_change)
    return TargetDrift(
        log.psi, log.distance, log.p_value, ref.median_price, median, change, drifted
    )


def _unseen(
    level: str, counts: pd.Series, seen: frozenset[str], rows: int, limit: float
) -> UnseenValues:
    new = np.fromiter((value not in seen for value in counts.index), bool, len(counts))
    unseen = counts[new].sort_index().sort_values(ascending=False, kind="stable")
    share = float(unseen.sum() / rows)
    top = tuple((name, int(n)) for name, n in unseen.head(TOP_NAMES).items())
    return UnseenValues(level, share, len(unseen), top, share > 0 and share >= limit)


def _require(frame: pd.DataFrame) -> None:
    missing = [c for c in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, TARGET) if c not in frame]
    if missing:
        raise ValueError(f"listings lack the columns {missing}")


def _values(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for missing; dates as decimal years (2019.5)."""
    column = frame[name]
    if name == "prev_sold_date":
        days = (pd.to_datetime(column, errors="coerce") - pd.Timestamp(0)) / pd.Timedelta(days=1)
        return days.to_numpy(dtype="float64", na_value=np.nan) / 365.2425 + 1970
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _log_price(frame: pd.DataFrame) -> np.ndarray:
    price = _values(frame, TARGET)
    return np.log(np.where(price > 0, price, np.nan))


def _counts(frame: pd.DataFrame, name: str) -> pd.Series:
    """Rows per present value as text; cities as "City, State", since a city needs its state."""
    if name == "city":
        pairs = frame.groupby(["city", "state"], dropna=True, observed=True, sort=False).size()
        counts = pairs.set_axis([f"{city}, {state}" for city, state in pairs.index])
    else:
        counts = frame[name].value_counts(dropna=True)
        counts = counts.set_axis(counts.index.astype(str))
    return counts[counts > 0]


def _present(values: np.ndarray) -> np.ndarray:
    """The finite values, sorted: quantiles and bin counts then cost a lookup each."""
    return np.sort(values[np.isfinite(values)])


def _quantiles(ordered: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """numpy's default (linear) quantiles of a sorted array."""
    position = levels * (len(ordered) - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def _bin_shares(ordered: np.ndarray, rows: int, edges: np.ndarray) -> np.ndarray:
    """Shares of the bins (e[i-1], e[i]] of the sorted present values, then of the missing."""
    at_most = np.searchsorted(ordered, edges, side="right")
    counts = np.diff(np.concatenate([[0], at_most, [len(ordered)]]))
    return np.append(counts, rows - len(ordered)) / max(rows, 1)


def _category_shares(counts: pd.Series, categories: tuple[str, ...], rows: int) -> np.ndarray:
    top = counts.reindex(list(categories), fill_value=0).to_numpy(dtype="float64")
    present = float(counts.sum())
    return np.append(top, [present - top.sum(), rows - present]) / max(rows, 1)


def _psi(ref: tuple[float, ...] | np.ndarray, batch: np.ndarray) -> float:
    r = np.maximum(np.asarray(ref, dtype="float64"), PSI_EPSILON)
    b = np.maximum(batch, PSI_EPSILON)
    return float(np.sum((b - r) * np.log(b / r)))


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Square root of the base-2 Jensen-Shannon divergence: 0 equal, 1 disjoint."""
    m = (p + q) / 2
    kl = [float(np.sum(a[a > 0] * np.log2(a[a > 0] / m[a > 0]))) for a in (p, q)]
    return math.sqrt(max(sum(kl) / 2, 0.0))


def _ks_p_value(ref: np.ndarray, batch: np.ndarray, ref_rows: int, rows: int) -> float | None:
    """Two-sample KS of the present values, its statistic taken at the reference bin edges."""
    r, b = ref[:-1], batch[:-1]
    n, m = ref_rows * r.sum(), rows * b.sum()
    if len(r) < 2 or n < 1 or m < 1:
        return None
    d = float(np.abs(np.cumsum(r / r.sum()) - np.cumsum(b / b.sum()))[:-1].max())
    root = math.sqrt(n * m / (n + m))
    lam = (root + 0.12 + 0.11 / root) * d  # Stephens' small-sample correction
    if lam < 0.2:  # the series does not converge there, and the p-value is 1 to 9 digits
        return 1.0
    k = np.arange(1, 101)
    return float(np.clip(2 * np.sum((-1.0) ** (k - 1) * np.exp(-2 * (k * lam) ** 2)), 0, 1))


def _severity(f: FeatureDrift, t: DriftThresholds) -> float:
    """The feature's worst effect in units of its threshold: 1 or more is drift."""
    wasserstein = (f.distance or 0) / t.wasserstein if t.wasserstein and f.kind == "numeric" else 0
    missing = abs(f.missing_rate_batch - f.missing_rate_ref) / t.missing_rate_change
    return max(f.psi / t.psi, missing, wasserstein)


def _performance_reason(p: PerformanceDrift) -> str:
    name = p.metric or ""
    now, before = p.batch[name], p.expected[name]
    if name == "mae_usd":
        what, values = "MAE", f"${now:,.0f} vs ${before:,.0f}"
    else:
        what, values = "MAE (log price)", f"{now:.3f} vs {before:.3f}"
        if "mae_usd" in p.change:
            values += f"; in dollars ${p.batch['mae_usd']:,.0f} vs ${p.validation['mae_usd']:,.0f}"
    against = f"its validation {what}"
    if before != p.validation[name]:  # the expectation at the batch's share of unseen zips
        against = f"the {what} expected with {p.unseen_zip_share:.0%} unseen zip codes"
        values += f"; validation {p.validation[name]:.3f}"
    return f"production {what} on this batch is {p.change[name]:.0%} above {against} ({values})"


def _unseen_reason(u: UnseenValues) -> str:
    noun = _NOUNS[u.level][u.values != 1]
    names = ("; " if u.level == "city" else ", ").join(name for name, _ in u.top)
    more = f" and {u.values - len(u.top):,} more" if u.values > len(u.top) else ""
    what = f"{u.values:,} {noun} never seen in training"
    return f"{_percent(u.share)} of rows come from {what} ({names}{more})"


def _target_reason(t: TargetDrift) -> str:
    median = f"median price {t.median_change:+.0%}: ${t.median_batch:,.0f} vs ${t.median_ref:,.0f}"
    return f"price PSI {t.psi:.2f} ({median})"


def _feature_reason(f: FeatureDrift, t: DriftThresholds) -> str:
    parts = [f"PSI {f.psi:.2f}"] if f.psi >= t.psi else []
    if f.kind == "numeric" and t.wasserstein and (f.distance or 0) >= t.wasserstein:
        parts.append(f"Wasserstein {f.distance:.2f} IQR")
    if abs(f.missing_rate_batch - f.missing_rate_ref) >= t.missing_rate_change:
        parts.append(f"missing {_percent(f.missing_rate_ref)} → {_percent(f.missing_rate_batch)}")
    return f"{f.feature} {', '.join(parts)} ({f.shift})"


def _markdown(r: DriftReport) -> str:
    of = f" vs a reference of {r.reference_rows:,}" if r.reference_rows is not None else ""
    lines = [f"**Verdict: {'retrain' if r.retrain else 'no retrain'}** ({r.rows:,} rows{of})"]
    bullets = [f"- {reason}" for reason in r.reasons] + [f"- note: {n}" for n in r.notes]
    lines += ["", *bullets] if bullets else []
    if r.target:
        t, change = r.target, f"{r.target.median_change:+.1%}"
        median = f"median ${t.median_ref:,.0f} → ${t.median_batch:,.0f} ({change})"
        lines += ["", f"Target: price PSI {t.psi:.3f}, {median}"]
    p = r.performance
    changes = p.change.items() if p else []
    lines += _table(
        "metric | expected | batch | change",
        [f"{m} | {_number(p.expected[m])} | {_number(p.batch[m])} | {c:+.1%}" for m, c in changes],
    )
    lines += _table(
        "unseen | share of rows | distinct | most rows", [_unseen_row(u) for u in r.unseen.values()]
    )
    lines += _table(
        "feature | kind | PSI | distance | missing ref → batch | KS p | shift | drifted",
        [_feature_row(f) for f in r.features],
    )
    return "\n".join(lines)


def _unseen_row(u: UnseenValues) -> str:
    top = "; ".join(f"{name} ({n:,})" for name, n in u.top)
    return f"{u.level} | {_percent(u.share)} | {u.values:,} | {top}"


def _feature_row(f: FeatureDrift) -> str:
    missing = f"{_percent(f.missing_rate_ref)} → {_percent(f.missing_rate_batch)}"
    return (
        f"{f.feature} | {f.kind} | {f.psi:.3f} | {_cell(f.distance)} | {missing} | "
        f"{_cell(f.p_value)} | {f.shift} | {'yes' if f.drifted else ''}"
    )


def _table(header: str, rows: list[str]) -> list[str]:
    if not rows:
        return []
    rule = "|" + "---|" * (header.count("|") + 1)
    return ["", f"| {header} |", rule, *(f"| {row} |" for row in rows)]


def _numeric_profile(data: Mapping[str, Any]) -> NumericProfile:
    return NumericProfile(
        tuple(data["edges"]), tuple(data["shares"]), tuple(data["quantiles"]), data["scale"]
    )


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def _percent(x: float) -> str:
    if x == 0 or abs(x) >= 0.095:
        return f"{x:.0%}"
    if abs(x) < 0.0005:
        return "<0.1%"
    return f"{x:.1%}"


def _cell(x: float | None) -> str:
    return "" if x is None else f"{x:.3g}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value
