"""Plain functions that turn form values into requests and answers into text and tables."""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from realty.ingest.cleaning import CleaningRules
from ui.client import ModelVersion

# The form's listing fields in the order the tabs show them; price is what gets predicted.
LISTING_FIELDS: tuple[str, ...] = (
    "status", "state", "city", "zip_code", "bed", "bath", "house_size", "acre_lot",
    "prev_sold_date", "brokered_by", "street",
)  # fmt: skip
REQUIRED_FIELDS: tuple[str, ...] = ("status", "state", "city")
_RULES = CleaningRules()  # the form accepts what CLEAN accepts


@dataclass(frozen=True)
class NumberField:
    label: str  # as the form names it
    low: float
    high: float | None
    whole: bool


NUMBER_FIELDS: dict[str, NumberField] = {
    "bed": NumberField("Bedrooms", 0, _RULES.max_rooms, whole=True),
    "bath": NumberField("Bathrooms", 0, _RULES.max_rooms, whole=True),
    "house_size": NumberField(
        "Living area", _RULES.min_house_size, _RULES.max_house_size, whole=False
    ),
    "acre_lot": NumberField("Lot", 0, _RULES.max_acre_lot, whole=False),
    "brokered_by": NumberField("Broker id", 0, None, whole=True),
    "street": NumberField("Street id", 0, None, whole=True),
}
_ZIP = re.compile(r"^\d{5}$")
_DIFF_SECTION = re.compile(r"^## Changes since the previous version\n(.*?)(?=^## |\Z)", re.M | re.S)


def dollars(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"${value:,.0f}"


def listing_from_form(values: dict[str, Any]) -> dict[str, Any]:
    """The listing to post: empty fields left out, numbers read and checked, text trimmed.

    Raises ValueError with a sentence for the person filling the form."""
    listing: dict[str, Any] = {}
    for name in LISTING_FIELDS:
        value = values.get(name)
        if isinstance(value, str):
            value = value.strip().replace(",", "") if name in NUMBER_FIELDS else value.strip()
        if value is None or value == "":
            continue
        listing[name] = _number(NUMBER_FIELDS[name], value) if name in NUMBER_FIELDS else value
    missing = [name.replace("_", " ") for name in REQUIRED_FIELDS if name not in listing]
    if missing:
        raise ValueError(f"Please fill in: {', '.join(missing)}.")
    if "zip_code" in listing and not _ZIP.match(str(listing["zip_code"])):
        raise ValueError("The zip code has 5 digits, e.g. 95136 (or leave it empty).")
    if "prev_sold_date" in listing:
        try:
            date.fromisoformat(str(listing["prev_sold_date"]))
        except ValueError:
            raise ValueError(
                "The last sale date is a date like 2021-11-16 (or leave it empty)."
            ) from None
    return listing


def _number(field: NumberField, value: Any) -> int | float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{field.label} is a number (or leave it empty).") from None
    above = field.high is not None and number > field.high
    if not math.isfinite(number) or number < field.low or above:
        if field.high is None:
            raise ValueError(f"{field.label} is {field.low:,.0f} or more.")
        raise ValueError(f"{field.label} is between {field.low:,.0f} and {field.high:,.0f}.")
    if field.whole:
        if not number.is_integer():
            raise ValueError(f"{field.label} is a whole number.")
        return int(number)
    return number


def form_from_listing(listing: dict[str, Any]) -> list[str]:
    """The form's values (``LISTING_FIELDS`` order) for a listing; absent fields are empty."""
    return ["" if listing.get(name) is None else str(listing[name]) for name in LISTING_FIELDS]


def model_line(model: dict[str, Any]) -> str:
    return f"{model.get('name', '?')} version {model.get('version', '?')}"


def price_markdown(
    price: float,
    model: dict[str, Any],
    listed_price: float | None,
    interval: dict[str, float] | None = None,
) -> str:
    """The answer of the Price tab; ``interval`` is serving's ``{level, low, high}`` (None from
    a version without intervals)."""
    lines = [f"## Predicted price: {dollars(price)}"]
    if interval:
        lines.append(
            f"{interval['level']:.0%} interval: **{dollars(interval['low'])} to "
            f"{dollars(interval['high'])}** (conformal, calibrated on the version's evaluation "
            "listings of this state, or of all states)"
        )
    if listed_price:
        lines.append(f"The real listing's price was {dollars(listed_price)}.")
    lines.append(f"Answered by **{model_line(model)}**.")
    return "\n\n".join(lines)


def contributions(explanation: dict[str, Any]) -> list[tuple[str, float, Any]]:
    """(feature, SHAP value, the feature's value) of an explain answer, largest effect first."""
    items = [
        (item["feature"], float(item["shap"]), item.get("value"))
        for item in explanation.get("contributions", [])
    ]
    return sorted(items, key=lambda item: abs(item[1]), reverse=True)


def markdown_table(columns: tuple[str, ...], rows: list[list[Any]]) -> str:
    """A Markdown table (long cells wrap, unlike a data grid's)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in rows),
    ]
    return "\n".join(lines)


ROLLOUT_EVENT_COLUMNS = ("#", "when", "move", "by", "after", "why")
ARM_COLUMNS = ("arm", "listings", "errors", "p99 latency")


def rollout_markdown(view: dict[str, Any]) -> str:
    """The rollout: where it stands, the live figures per arm and the guardrails, the moves."""
    state, figures = view["state"], view["figures"]
    lines = [f"**Rollout**: {view['summary']}."]
    if figures:
        challenger_arm = "canary" if state["stage"] == "canary" else "shadow"
        rows = [
            [f"production v{state['production']}", figures["production_rows"], "-",
             _milliseconds(figures["production_p99_ms"])],
            [f"{challenger_arm} v{state['challenger']}", figures["challenger_rows"],
             f"{figures['error_rate']:.1%}", _milliseconds(figures["canary_p99_ms"])],
        ]  # fmt: skip
        lines.append(markdown_table(ARM_COLUMNS, rows))
        divergence = figures["divergence"]
        shown = "-" if divergence is None else f"{divergence:.3f}"
        failing = "; ".join(view["guardrails"]) or "none"
        lines.append(f"Divergence (median \\|log ratio\\| on the same listings): {shown}. "
                     f"{_realized(figures)}Failing guardrails: {failing}.")  # fmt: skip
    if view["events"]:
        rows = [
            [e["event_id"], str(e["applied_at"] or "interrupted")[:19], e["action"], e["actor"],
             _after(e["after"]), _short(e["reason"])]
            for e in view["events"]
        ]  # fmt: skip
        lines.append(markdown_table(ROLLOUT_EVENT_COLUMNS, rows))
    return "\n\n".join(lines)


def _realized(figures: dict[str, Any]) -> str:
    """The arms' realized error where sold prices came back, else nothing."""
    if not figures.get("labelled_sales"):
        return ""
    return (f"Realized MAE (log) on {figures['labelled_sales']} sold listings both priced: "
            f"challenger {figures['challenger_realized_mae']:.3f}, "
            f"production {figures['production_realized_mae']:.3f}. ")  # fmt: skip


def _after(state: dict[str, Any]) -> str:
    if state["challenger"] is None:
        return f"production v{state['production']}"
    where = "shadow" if state["stage"] == "shadow" else f"canary {state['share']:.0%}"
    return f"v{state['production']}, v{state['challenger']} in {where}"


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def when(milliseconds: int) -> str:
    moment = datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


VERSION_COLUMNS: tuple[str, ...] = (
    "version", "created", "alias", "trained because", "training data", "MAE $", "R² (log)",
    "gate's decision",
)  # fmt: skip


def version_rows(versions: list[ModelVersion]) -> list[list[Any]]:
    """One row per version for the Models table (``VERSION_COLUMNS``)."""
    rows = []
    for v in versions:
        tags, metrics = v.tags, v.metrics
        candidate = tags.get("candidate")
        decision = tags.get("gate.decision", "not decided")
        reason = tags.get("gate.reason")
        rows.append(
            [
                f"v{v.version} ({candidate})" if candidate else f"v{v.version}",
                when(v.created_ms),
                ", ".join(v.aliases) or "-",
                "; ".join(v.reasons) or tags.get("trigger", "-"),
                _training_data(tags),
                dollars(metrics.get("mae_usd")),
                f"{metrics['r2_log']:.3f}" if "r2_log" in metrics else "-",
                f"{decision}: {reason}" if reason else decision,
            ]
        )
    return rows


def _training_data(tags: dict[str, str]) -> str:
    """E.g. "40,000 rows of 2 batches (g1-tuesday-b001..g1-tuesday-b002)"."""
    rows, count, batch_range = tags.get("rows"), tags.get("batches"), tags.get("batch_range")
    if not (rows and count and batch_range):
        return "-"
    plural = "" if count == "1" else "es"
    return f"{_thousands(rows)} rows of {count} batch{plural} ({batch_range})"


def _thousands(value: str | None) -> str:
    return f"{int(value):,}" if value and value.isdigit() else "-"


def recorded_diff(markdown: str) -> str:
    """The "Changes since the previous version" section of a SHAP report (explanation.md)."""
    match = _DIFF_SECTION.search(markdown)
    return match.group(1).strip() if match else ""


BATCH_COLUMNS: tuple[str, ...] = (
    "batch", "landed", "clean", "rejected", "verdict", "reasons", "judged against", "trained",
    "gate", "production after",
)  # fmt: skip


def batch_rows(batches: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per batch for the Data & drift table (``BATCH_COLUMNS``)."""
    rows = []
    for b in batches:
        rows.append(
            [
                b["batch_key"],
                f"{b['rows_landed']:,}",
                _count(b.get("rows_clean")),
                _count(b.get("rows_rejected")),
                b.get("verdict") or "not judged yet",
                "; ".join(_short(reason) for reason in b.get("reasons") or []) or "-",
                _version(b.get("compared_with_version")),
                _trained(b),
                {True: "promoted", False: "rejected", None: "-"}[b.get("promoted")],
                _version(b.get("production_version")),
            ]
        )
    return rows


def _short(text: str, most: int = 90) -> str:
    """The start of a long reason (the table stays readable; the words say enough)."""
    return text if len(text) <= most else text[: most - 1].rstrip() + "…"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _version(value: str | None) -> str:
    return f"v{value}" if value else "-"


def _trained(batch: dict[str, Any]) -> str:
    if not batch.get("trained"):
        return "no"
    return f"v{batch.get('candidate_version')} ({batch.get('trigger')})"


DETECTION_COLUMNS: tuple[str, ...] = ("#", "object", "confidence", "box (x1, y1, x2, y2)")


def detection_rows(counted: dict[str, Any]) -> list[list[Any]]:
    return [
        [i, d["label"], f"{float(d['confidence']):.2f}", ", ".join(str(int(c)) for c in d["box"])]
        for i, d in enumerate(counted.get("detections", []), start=1)
    ]


def count_markdown(counted: dict[str, Any]) -> str:
    what = counted.get("object") or "object"
    plural = "" if counted["count"] == 1 else "s"
    noun = what if what.endswith("s") or not plural else f"{what}{plural}"
    return (
        f"## {counted['count']} {noun} found\n\n"
        f"{counted['model']} at confidence ≥ {float(counted['confidence']):.2f}"
    )


def annotate(image: bytes, detections: list[dict[str, Any]]) -> Image.Image:
    """The photo with a labelled box per detection."""
    picture = Image.open(io.BytesIO(image)).convert("RGB")
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 300))
    for d in detections:
        x1, y1, x2, y2 = (int(c) for c in d["box"])
        draw.rectangle((x1, y1, x2, y2), outline=(0, 200, 0), width=width)
        label = f"{d['label']} {float(d['confidence']):.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 200, 0))
        draw.text((x1, y1), label, fill=(0, 0, 0))
    return picture


def sketch_png(sketch: dict[str, Any] | np.ndarray | None) -> bytes | None:
    """A drawing (Gradio sketchpad value) as a PNG of dark ink on white; None when blank."""
    layer = sketch.get("composite") if isinstance(sketch, dict) else sketch
    if layer is None:
        return None
    pixels = np.asarray(layer)
    if pixels.ndim == 3 and pixels.shape[2] == 4:  # transparent where nothing was drawn
        alpha = pixels[..., 3:4].astype(np.float32) / 255
        pixels = pixels[..., :3] * alpha + 255 * (1 - alpha)
    picture = Image.fromarray(pixels.astype(np.uint8)).convert("L")
    if np.asarray(picture).min() > 200:  # nothing darker than paper: nothing drawn
        return None
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


WINDOW_COLUMNS: tuple[str, ...] = (
    "hour (UTC)", "version", "listings", "error rate", "p50", "p99", "median price",
    "drift",
)  # fmt: skip
ALERT_COLUMNS: tuple[str, ...] = (
    "raised (UTC)", "state", "check", "partition", "what", "webhook",
)  # fmt: skip
REALIZED_COLUMNS: tuple[str, ...] = (
    "version", "answered as", "sales", "MAE $", "MAPE", "MAE (log)", "interval coverage",
    "last sale labelled (UTC)",
)  # fmt: skip


def windows_table(windows: list[dict[str, Any]]) -> str:
    """The Monitoring tab's table of served windows, newest first."""
    if not windows:
        return "Nothing served in the period (or served_traffic has not run yet)."
    return markdown_table(WINDOW_COLUMNS, window_rows(windows))


def realized_table(realized: list[dict[str, Any]]) -> str:
    """The Monitoring tab's realized error: per version and role, on the sales come back."""
    if not realized:
        return "No sale has come back yet for a listing the model priced."
    rows = [
        [f"v{r['version']}", r["role"], f"{r['sales']:,}", dollars(r["mae_usd"]),
         f"{r['mape']:.1%}", f"{r['mae_log']:.3f}",
         "-" if r["coverage"] is None else f"{r['coverage']:.1%} of {r['coverage_n']:,}",
         r["last_labelled_at"][:16].replace("T", " ")]
        for r in realized
    ]  # fmt: skip
    return markdown_table(REALIZED_COLUMNS, rows)


def alerts_table(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "No alert yet."
    return markdown_table(ALERT_COLUMNS, alert_rows(alerts))


def window_rows(windows: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per served window and version, newest first (``WINDOW_COLUMNS``)."""
    return [
        [
            w["window_start"][:16].replace("T", " "),
            f"v{w['version']}",
            f"{w['listings']:,}",
            f"{w['error_rate']:.1%}",
            _milliseconds(w["latency_ms"].get("p50")),
            _milliseconds(w["latency_ms"].get("p99")),
            dollars(w["predictions"]["p50"]) if "p50" in w["predictions"] else "-",
            "; ".join(_short(reason) for reason in w["drift_reasons"]) or "none",
        ]
        for w in reversed(windows)
    ]


def alert_rows(alerts: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per alert, newest first (``ALERT_COLUMNS``)."""
    return [
        [
            a["raised_at"][:19].replace("T", " "),
            a["state"],
            f"{a['asset']} / {a['check_name']}",
            a["partition"] or "-",
            a["description"] or "-",
            _delivery(a),
        ]
        for a in alerts
    ]


def _delivery(alert: dict[str, Any]) -> str:
    if alert["delivered_at"]:
        return "delivered"
    if alert["attempts"]:
        return f"not delivered ({alert['attempts']} calls: {alert['last_error']})"
    return "not sent (no webhook set, or not yet)"


def firing_checks(alerts: list[dict[str, Any]]) -> list[str]:
    """The checks (and partitions) whose newest alert is ``firing``: failing now."""
    newest: dict[tuple[str, str, str], str] = {}
    for a in alerts:  # newest first
        newest.setdefault((a["asset"], a["check_name"], a["partition"]), a["state"])
    return [
        f"{check}" + (f" [{partition}]" if partition else "")
        for (_, check, partition), state in newest.items()
        if state == "firing"
    ]
