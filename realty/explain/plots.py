"""Beeswarm and dependence plots of an explanation, drawn headless (Agg canvas)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from realty.explain.results import (
    Explanation,
    FeatureRank,
    format_number,
    format_signed,
    is_numeric,
)


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
        f"#{item.rank} {item.feature}: mean |SHAP| {format_number(item.mean_abs_shap)}, "
        f"{direction} (Spearman {format_signed(item.correlation)})",
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
        f"#{item.rank} {item.feature}: mean |SHAP| {format_number(item.mean_abs_shap)}{more}",
        fontsize=10,
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
    if feature in explanation.categorical or not is_numeric(column):
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
