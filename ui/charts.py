"""The web app's charts, as matplotlib figures (Gradio renders them to images on the server, so
the browser needs no charting library from the internet)."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure

from ui.formatting import dollars

UP, DOWN = "#c0392b", "#2471a3"  # raises the price / lowers it
SHOWN_FEATURES = 10


def _value_label(feature: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{feature} (unknown)"
    if isinstance(value, float):
        value = f"{value:,.4g}"
    return f"{feature} = {value}"


def contribution_figure(
    items: list[tuple[str, float, Any]], base_value: float | None, price: float
) -> Figure:
    """This prediction's SHAP contributions (log price) as a waterfall from the average
    prediction to this one, largest effect at the top; the rest are summed in one bar."""
    shown, rest = items[:SHOWN_FEATURES], items[SHOWN_FEATURES:]
    labels = [_value_label(feature, value) for feature, _, value in shown]
    effects = [effect for _, effect, _ in shown]
    if rest:
        labels.append(f"{len(rest)} other features")
        effects.append(sum(effect for _, effect, _ in rest))
    start = base_value if base_value is not None else math.log(price) - sum(effects)
    figure = Figure(figsize=(8, 0.45 * len(labels) + 1.6), layout="constrained")
    axes = figure.add_subplot()
    level = start
    for row, effect in enumerate(effects):
        axes.barh(row, effect, left=level, color=UP if effect > 0 else DOWN)
        percent = math.expm1(effect) * 100
        axes.text(
            level + effect, row, f" {percent:+.1f}% ", va="center",
            ha="left" if effect > 0 else "right", fontsize=8,
        )  # fmt: skip
        level += effect
    axes.set_yticks(range(len(labels)), labels, fontsize=9)
    axes.invert_yaxis()
    axes.axvline(start, color="grey", linewidth=0.8, linestyle=":")
    axes.axvline(level, color="black", linewidth=0.8)
    ticks = axes.get_xticks()
    axes.set_xticks(ticks, [dollars(math.exp(t)) for t in ticks], fontsize=8)
    axes.margins(x=0.15)
    axes.set_xlabel("price (log scale)")
    axes.set_title(
        f"From the average prediction {dollars(math.exp(start))} to this one {dollars(price)}",
        fontsize=10,
    )
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
    figure = Figure(figsize=(8, 0.4 * len(features) + 1.6), layout="constrained")
    axes = figure.add_subplot()
    height = 0.8 / max(len(scores), 1)
    for i, (label, by_feature) in enumerate(scores.items()):
        rows = [row + i * height for row in range(len(features))]
        axes.barh(rows, [by_feature.get(f, 0.0) for f in features], height=height, label=label)
    axes.set_yticks(
        [row + height * (len(scores) - 1) / 2 for row in range(len(features))], features
    )
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
    for key, label in DRIFT_LINES:
        values = [b["scores"].get(key) for b in judged]
        if any(v is not None for v in values):
            points = [math.nan if v is None else v for v in values]
            axes.plot(numbers, points, marker="o", markersize=4, label=label)
    if psi_threshold is not None:
        axes.axhline(psi_threshold, color="grey", linestyle=":", label="PSI that retrains")
    for b in batches:
        if b.get("trained"):
            promoted = b.get("promoted")
            axes.axvline(
                b["batch_number"], color="green" if promoted else "orange", alpha=0.5,
                linewidth=3 if promoted else 2,
            )  # fmt: skip
            tag = f"v{b.get('candidate_version')}" + (" promoted" if promoted else "")
            axes.annotate(
                tag, (b["batch_number"], 1.0), xycoords=("data", "axes fraction"),
                rotation=90, va="top", ha="right", fontsize=8,
            )  # fmt: skip
    axes.set_xlabel("batch")
    axes.set_ylabel("score")
    axes.set_title(
        "Drift scores per batch (green: retrained and promoted, orange: retrained, kept)",
        fontsize=10,
    )
    if numbers:
        axes.set_xticks(sorted({b["batch_number"] for b in batches}))
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure
