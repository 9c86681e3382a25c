"""The web app's charts, as matplotlib figures (Gradio renders them to images on the server, so
the browser needs no charting library from the internet)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from matplotlib.figure import Figure

from realty import served_chart
from ui.formatting import dollars

UP, DOWN = "#c0392b", "#2471a3"  # raises the price / lowers it
SHOWN_FEATURES = 10


# What the price model's features mean, for people, and how to show their values.
FEATURE_NAMES: dict[str, tuple[str, Callable[[float], str]]] = {
    "log_house_size": ("living area", lambda v: f"{math.exp(v):,.0f} sq ft"),
    "log_acre_lot": ("lot", lambda v: f"{math.expm1(v):,.2f} acres"),
    "years_since_sold": ("last sold", lambda v: f"{v:.1f} years before 2025"),
    "facts_missing": ("unknown facts", lambda v: f"{v:.0f} of 4"),
    "loc_log_price": ("typical price of the area", lambda v: dollars(math.exp(v))),
    "loc_log_ppsf": ("typical price per sq ft of the area", lambda v: dollars(math.exp(v))),
    "zip_number": ("zip code as a number", lambda v: f"{v:05.0f}"),
    "zip3": ("zip region", str),
    "city": ("city", lambda v: ", ".join(reversed(str(v).split("|", 1)))),  # "state|city"
    "brokered_by": ("broker", str),
    "bed": ("bedrooms", lambda v: f"{v:.0f}"),
    "bath": ("bathrooms", lambda v: f"{v:.0f}"),
}


def feature_label(feature: str, value: Any) -> str:
    """``feature = value`` in words, e.g. "living area = 1,442 sq ft"."""
    name, show = FEATURE_NAMES.get(feature, (feature.replace("_", " "), str))
    if value is None or value == "__missing__" or (isinstance(value, float) and math.isnan(value)):
        return f"{name} unknown"
    try:
        return f"{name} = {show(value)}"
    except (TypeError, ValueError):  # a category where a number was expected
        return f"{name} = {value}"


TICK_STEPS = ((1, 1.5, 2, 3, 4, 5, 7), (1, 2, 5), (1,))  # finest first


def _dollar_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Round dollar amounts between two log prices, as log prices: the finest steps that give
    at most ``most`` ticks."""
    exponents = range(math.floor(low / math.log(10)), math.ceil(high / math.log(10)) + 1)
    for mantissas in TICK_STEPS:
        ticks = [
            math.log(m * 10**e) for e in exponents for m in mantissas
            if low <= math.log(m * 10**e) <= high
        ]  # fmt: skip
        if len(ticks) <= most:
            return ticks
    return ticks


def contribution_figure(
    items: list[tuple[str, float, Any]], base_value: float | None, price: float
) -> Figure:
    """This prediction's SHAP contributions (log price) as a waterfall from the average
    prediction to this one, largest effect at the top; the rest are summed in one bar."""
    shown, rest = items[:SHOWN_FEATURES], items[SHOWN_FEATURES:]
    labels = [feature_label(feature, value) for feature, _, value in shown]
    effects = [effect for _, effect, _ in shown]
    if rest:
        labels.append(f"{len(rest)} other features")
        effects.append(sum(effect for _, effect, _ in rest))
    start = base_value if base_value is not None else math.log(price) - sum(effects)
    figure = Figure(figsize=(9, 0.42 * len(labels) + 1.6), layout="constrained")
    axes = figure.add_subplot()
    level, levels = start, [start]
    for row, effect in enumerate(effects):
        axes.barh(row, effect, left=level, color=UP if effect > 0 else DOWN)
        axes.text(
            level + effect, row, f" {math.expm1(effect) * 100:+.1f}% ", va="center",
            ha="left" if effect > 0 else "right", fontsize=8,
        )  # fmt: skip
        level += effect
        levels.append(level)
    axes.set_yticks(range(len(labels)), labels, fontsize=9)
    axes.invert_yaxis()
    axes.axvline(start, color="grey", linewidth=0.8, linestyle=":")
    axes.axvline(level, color="black", linewidth=0.8)
    # bars keep autoscaling from adding margins (sticky edges): room for the labels by hand
    pad = 0.15 * (max(levels) - min(levels) or 1.0)
    low, high = min(levels) - pad, max(levels) + pad
    ticks = _dollar_ticks(low, high)
    axes.set_xticks(ticks, [dollars(math.exp(t)) for t in ticks], fontsize=8, parse_math=False)
    axes.set_xlim(low, high)
    axes.set_xlabel("price (log scale); each bar: how much the feature moves the price")
    axes.set_title(
        f"From the average prediction ({dollars(math.exp(start))}, dotted) "
        f"to this listing's ({dollars(price)}, solid)",
        fontsize=10, parse_math=False,
    )  # fmt: skip
    return figure


def importance_figure(rankings: dict[str, dict[str, Any]], top: int = 12) -> Figure:
    """Global SHAP importance (mean |SHAP|) per feature of each version, side by side."""
    scores = {
        label: {f["feature"]: f["mean_abs_shap"] for f in ranking["features"]}
        for label, ranking in rankings.items()
    }
    features = sorted(
        {feature for by_feature in scores.values() for feature in by_feature},
        key=lambda feature: max(by_feature.get(feature, 0.0) for by_feature in scores.values()),
        reverse=True,
    )[:top]
    names = [FEATURE_NAMES.get(feature, (feature,))[0] for feature in features]
    figure = Figure(figsize=(9, 0.4 * len(features) + 1.6), layout="constrained")
    axes = figure.add_subplot()
    height = 0.8 / max(len(scores), 1)
    for i, (label, by_feature) in enumerate(scores.items()):
        rows = [row + i * height for row in range(len(features))]
        axes.barh(rows, [by_feature.get(f, 0.0) for f in features], height=height, label=label)
    axes.set_yticks([row + height * (len(scores) - 1) / 2 for row in range(len(features))], names)
    axes.invert_yaxis()
    axes.set_xlabel("mean |SHAP| (log price)")
    axes.set_title("What drives each version's predictions", fontsize=10)
    axes.legend()
    return figure


DRIFT_LINES: tuple[tuple[str, str], ...] = (
    ("max_feature_psi", "largest feature PSI"),
    ("target_psi", "log price PSI"),
    ("unseen_city_share", "share of unseen cities"),
    ("mae_change", "production MAE change"),
)


def drift_figure(batches: list[dict[str, Any]], psi_threshold: float | None = None) -> Figure:
    """The main drift scores per batch, with the batches that trained a candidate marked."""
    judged = [b for b in batches if b.get("scores")]
    figure = Figure(figsize=(9, 3.8), layout="constrained")
    axes = figure.add_subplot()
    numbers = [b["batch_number"] for b in judged]
    highest = psi_threshold or 0.0
    for key, label in DRIFT_LINES:
        values = [b["scores"].get(key) for b in judged]
        if any(v is not None for v in values):
            points = [math.nan if v is None else v for v in values]
            axes.plot(numbers, points, marker="o", markersize=4, label=label)
            highest = max(highest, *(v for v in values if v is not None))
    if psi_threshold is not None:
        axes.axhline(psi_threshold, color="grey", linestyle=":", label="PSI that retrains")
    axes.set_ylim(min(0.0, axes.get_ylim()[0]), 1.3 * highest or 1.0)  # room for the tags
    for b in batches:
        if b.get("trained"):
            promoted = b.get("promoted")
            axes.axvline(
                b["batch_number"], color="green" if promoted else "orange", alpha=0.5,
                linewidth=3 if promoted else 2,
            )  # fmt: skip
            tag = f"v{b.get('candidate_version')}" + (" promoted" if promoted else "")
            axes.annotate(
                tag, (b["batch_number"], 0.98), xycoords=("data", "axes fraction"),
                rotation=90, va="top", ha="right", fontsize=8,
            )  # fmt: skip
    axes.set_xlabel("batch")
    axes.set_ylabel("score")
    axes.set_title(
        "Drift scores per batch (green: retrained and promoted, orange: retrained, kept)",
        fontsize=10,
    )
    if batches:
        every = sorted({b["batch_number"] for b in batches})
        axes.set_xticks(every)
        axes.set_xlim(every[0] - 0.5, every[-1] + 0.5)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def served_figure(windows: list[dict[str, Any]]) -> Figure:
    """GET /v1/monitoring's windows as realty.served_chart draws them (the asset's chart)."""
    return served_chart.served_figure(
        [(datetime.fromisoformat(w["window_start"]), w) for w in windows]
    )


REALIZED_PANELS = (
    ("mae_log", "realized MAE (log price)"),
    ("coverage", "share of sold prices inside the interval"),
)


def realized_figure(batches: list[dict[str, Any]], level: float | None = None) -> Figure:
    """GET /v1/monitoring's realized_over_time: per version and role, what each labelling
    batch's sales said, in landing order; the interval's nominal ``level`` as a line."""
    arms = sorted({(r["version"], r["role"]) for r in batches}, key=lambda a: (int(a[0]), a[1]))
    figure = Figure(figsize=(10, 3.0), layout="constrained")
    for column, (field, title) in enumerate(REALIZED_PANELS, start=1):
        axes = figure.add_subplot(1, len(REALIZED_PANELS), column)
        for version, role in arms:
            points = [r for r in batches if (r["version"], r["role"]) == (version, role)]
            axes.plot([datetime.fromisoformat(r["labelled_at"]) for r in points],
                      [r[field] for r in points], marker="o", markersize=3,
                      label=f"v{version} {role}")  # fmt: skip
        if field == "coverage" and level is not None:
            axes.axhline(level, color="grey", linestyle="--", linewidth=1)
        axes.set_title(title, fontsize=10)
        axes.tick_params(axis="x", labelrotation=45, labelsize=7)
        axes.tick_params(axis="y", labelsize=8)
    if arms:
        figure.axes[0].legend(fontsize=8)
    return figure
