"""A chart of served windows (clean_data.served_windows): per version and hour, the listings
answered, the p99 latency and the median price. The web app's Monitoring tab and the
served_traffic asset's metadata both draw it."""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from matplotlib import dates
from matplotlib.figure import Figure

HALF_HOUR = timedelta(minutes=30)
PANELS = (
    ("listings", "listings answered", lambda p: p["listings"]),
    ("p99", "p99 latency (ms)", lambda p: p["latency_ms"].get("p99")),
    ("median", "median price ($)", lambda p: p["predictions"].get("p50")),
)


def served_figure(windows: list[tuple[datetime, dict[str, Any]]]) -> Figure:
    """One line per version in each panel; ``windows`` are (window start, profile) pairs."""
    by_version: dict[str, list[tuple[datetime, dict[str, Any]]]] = defaultdict(list)
    for start, profile in windows:
        by_version[profile["version"]].append((start, profile))
    figure = Figure(figsize=(10, 3.2), layout="constrained")
    for column, (_, title, value) in enumerate(PANELS, start=1):
        axes = figure.add_subplot(1, len(PANELS), column)
        for version, points in sorted(by_version.items(), key=lambda item: int(item[0])):
            values = [value(profile) for _, profile in points]
            axes.plot([start for start, _ in points], values, marker="o", markersize=3,
                      label=f"v{version}")  # fmt: skip
        axes.set_title(title, fontsize=10)
        if windows:  # half an hour of room each side, so a single window is not a year wide
            starts = [start for start, _ in windows]
            axes.set_xlim(min(starts) - HALF_HOUR, max(starts) + HALF_HOUR)
        axes.xaxis.set_major_formatter(dates.DateFormatter("%m-%d %H:%M"))
        axes.tick_params(axis="x", labelrotation=45, labelsize=7)
        axes.tick_params(axis="y", labelsize=8)
    if by_version:
        figure.axes[0].legend(fontsize=8)
    else:
        figure.axes[1].text(
            0.5, 0.5, "nothing served", ha="center", transform=figure.axes[1].transAxes
        )
    return figure


def figure_png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode()
