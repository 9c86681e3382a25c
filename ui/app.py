"""The web app (Gradio): price a listing, browse the model history and the batches' drift, count
objects in a photo, read a handwritten digit. One function per tab builds it and wires its
events; every model answer comes from the serving API and every history from serving or MLflow
(``ui.client``), never from model code or a database.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from realty.schema import STATUS_VALUES, US_STATES
from realty.settings import Settings
from ui import charts, formatting
from ui.client import BackendError, RegistryClient, ServingClient
from ui.presets import COCO_CLASSES, DETECTORS, PRESETS, PRESETS_BY_LABEL

log = logging.getLogger(__name__)

UNEXPLAINABLE = 409  # serving's answer when the version has no trees to explain

INTRO = """# realty
Price a US house listing with the model in production, see how the models and the incoming data
changed batch after batch, and try the vision models on your own pictures.
"""


# History tables: short cells on one line, the long ones (reasons, the gate's) wrap.
CSS = """
#models-table td, #models-table th, #drift-table td, #drift-table th { white-space: nowrap; }
#models-table td:nth-child(4), #models-table td:nth-child(8), #drift-table td:nth-child(6) {
  white-space: normal; min-width: 16em;
}
"""


def _problem(error: Exception) -> str:
    return f"**{error}**"


def price_tab(serving: ServingClient) -> None:
    """A listing form with presets → the price and its interval, the version that answered, its
    SHAP chart."""
    gr.Markdown(
        "Fill in what you know about a listing (status, state and city are required; leave the "
        "rest empty if unknown) or start from a real listing, then **Predict**."
    )
    preset = gr.Dropdown(
        [p.label for p in PRESETS], value=None, label="Start from a real listing",
        elem_id="price-preset",
    )  # fmt: skip
    with gr.Row():
        status = gr.Dropdown(list(STATUS_VALUES), value="for_sale", label="Status")
        state = gr.Dropdown(list(US_STATES), value=None, label="State", elem_id="price-state")
        city = gr.Textbox(label="City", elem_id="price-city")
        zip_code = gr.Textbox(label="Zip code (optional)", max_length=5, placeholder="e.g. 95136")
    with gr.Row():
        bed = _number_box("bed", "e.g. 3")
        bath = _number_box("bath", "e.g. 2")
        house_size = _number_box("house_size", "sq ft, e.g. 1500")
        acre_lot = _number_box("acre_lot", "acres, e.g. 0.25")
    with gr.Row():
        prev_sold_date = gr.Textbox(label="Last sold (optional)", placeholder="YYYY-MM-DD")
        brokered_by = _number_box("brokered_by", "e.g. 22611")
        street = _number_box("street", "e.g. 1758218")
    fields = [
        status, state, city, zip_code, bed, bath, house_size, acre_lot, prev_sold_date,
        brokered_by, street,
    ]  # fmt: skip
    predict = gr.Button("Predict", variant="primary", elem_id="price-predict")
    answer = gr.Markdown(elem_id="price-answer")
    chart = gr.Plot(
        label="Why this price: each feature's contribution (SHAP)", elem_id="price-chart"
    )

    def fill(label: str | None) -> list[Any]:
        if label not in PRESETS_BY_LABEL:
            return [gr.update() for _ in fields]
        return formatting.form_from_listing(PRESETS_BY_LABEL[label].listing)

    def run(label: str | None, *values: Any) -> tuple[str, Any]:
        try:
            listing = formatting.listing_from_form(
                dict(zip(formatting.LISTING_FIELDS, values, strict=True))
            )
        except ValueError as error:
            return _problem(error), None
        listed = _listed_price(label, listing)
        try:  # one request: the price, the version and why, all from the same version
            explained = serving.explain_price(listing)
        except BackendError as error:
            if error.status != UNEXPLAINABLE:
                return _problem(error), None
            return _price_only(serving, listing, listed, str(error))
        price = float(explained["price"])
        figure = charts.contribution_figure(
            formatting.contributions(explained), explained.get("base_value"), price
        )
        answer = formatting.price_markdown(
            price, explained["model"], listed, explained.get("interval")
        )
        return answer, figure

    preset.change(fill, preset, fields)
    predict.click(run, [preset, *fields], [answer, chart])


def _price_only(
    serving: ServingClient, listing: dict[str, Any], listed: float | None, why: str
) -> tuple[str, None]:
    """The price of a version that cannot be explained (e.g. the median baseline)."""
    try:
        predicted = serving.predict_price(listing)
    except BackendError as error:
        return _problem(error), None
    [prediction] = predicted["predictions"]
    text = formatting.price_markdown(
        float(prediction["price"]), predicted["model"], listed, prediction.get("interval")
    )
    return f"{text}\n\nNo chart for this version: {why}", None


def _number_box(name: str, example: str) -> gr.Textbox:
    """An optional number: a text box, because a number box cannot be left empty."""
    field = formatting.NUMBER_FIELDS[name]
    return gr.Textbox(label=f"{field.label} (optional)", placeholder=example)


def _listed_price(label: str | None, listing: dict[str, Any]) -> float | None:
    """The real price of the preset ``label`` if the form still holds that listing unchanged."""
    preset = PRESETS_BY_LABEL.get(label or "")
    if preset is None or formatting.listing_from_form(preset.listing) != listing:
        return None
    return preset.listed_price


def models_tab(
    registry: RegistryClient, serving: ServingClient, model_name: str, demo: gr.Blocks
) -> None:
    """The price model's versions from MLflow; its rollout as serving follows it (actions stay
    in the CLI and Dagster); two versions compared by their SHAP reports."""
    gr.Markdown(
        f"Every version of **{model_name}** in the MLflow registry: why it was trained, on which "
        "batches, how well it scored and what the champion/challenger gate decided."
    )
    refresh = gr.Button("Refresh", size="sm")
    note = gr.Markdown(elem_id="models-note")
    table = gr.Markdown(elem_id="models-table")
    rollout = gr.Markdown(elem_id="models-rollout")
    with gr.Row():
        first = gr.Dropdown([], label="Compare version", elem_id="models-first")
        second = gr.Dropdown([], label="with version", elem_id="models-second")
        compare = gr.Button("Compare", elem_id="models-compare")
    importance = gr.Plot(label="Global SHAP importance", elem_id="models-importance")
    diff = gr.Markdown(elem_id="models-diff")

    def load() -> tuple[Any, ...]:
        try:
            versions = registry.versions(model_name)
        except BackendError as error:
            return _problem(error), "", gr.update(choices=[]), gr.update(choices=[])
        if not versions:
            message = f"No version of {model_name} is registered yet: the first batch trains one."
            return message, "", gr.update(choices=[]), gr.update(choices=[])
        production = next((v for v in versions if "production" in v.aliases), None)
        count = f"{len(versions)} version{'' if len(versions) == 1 else 's'}"
        message = (
            f"{count}; production is **v{production.version}**."
            if production
            else f"{count}; none is in production yet."
        )
        choices = [f"v{v.version}" for v in versions]
        older = choices[1] if len(choices) > 1 else choices[0]
        return (
            message,
            formatting.markdown_table(
                formatting.VERSION_COLUMNS, formatting.version_rows(versions)
            ),
            gr.update(choices=choices, value=older),
            gr.update(choices=choices, value=choices[0]),
        )

    def run_compare(a: str | None, b: str | None) -> tuple[Any, str]:
        if not a or not b:
            return None, "Pick two versions."
        try:
            return _comparison(registry, model_name, [a, b])
        except BackendError as error:
            return None, _problem(error)

    def load_rollout() -> str:
        try:
            return formatting.rollout_markdown(serving.rollout())
        except BackendError as error:
            return f"Rollout: {_problem(error)}"

    outputs = [note, table, first, second]
    for event in (refresh.click, demo.load):
        event(load, None, outputs)
        event(load_rollout, None, rollout)
    compare.click(run_compare, [first, second], [importance, diff])


def _comparison(registry: RegistryClient, model_name: str, labels: list[str]) -> tuple[Any, str]:
    versions = {f"v{v.version}": v for v in registry.versions(model_name)}
    rankings, notes = {}, []
    for label in dict.fromkeys(labels):
        version = versions.get(label)
        if version is None:
            notes.append(f"{label} is not registered.")
            continue
        ranking = registry.artifact(version.run_id, "shap/ranking.json")
        report = registry.artifact(version.run_id, "shap/explanation.md")
        if ranking is None:
            notes.append(f"**{label}** has no SHAP report (a median baseline is not explained).")
            continue
        rankings[label] = json.loads(ranking)
        recorded = formatting.recorded_diff(report.decode()) if report else ""
        notes.append(f"**{label}**, as recorded when it was explained:\n\n{recorded or '-'}")
    figure = charts.importance_figure(rankings) if rankings else None
    return figure, "\n\n".join(notes)


def drift_tab(serving: ServingClient, settings: Settings, demo: gr.Blocks) -> None:
    """Per batch: rows, the drift verdict and reasons, the drift scores with retrains marked."""
    gr.Markdown(
        "Every batch the data API delivered: rows landed, kept clean and rejected, the drift "
        "verdict against the production model of the time, and what the loop did about it."
    )
    refresh = gr.Button("Refresh", size="sm")
    note = gr.Markdown(elem_id="drift-note")
    chart = gr.Plot(label="Drift scores across batches", elem_id="drift-chart")
    table = gr.Markdown(elem_id="drift-table")

    def load() -> tuple[Any, ...]:
        try:
            batches = serving.batches()
        except BackendError as error:
            return _problem(error), None, ""
        if not batches:
            return "No batch has landed yet.", None, ""
        retrained = sum(1 for b in batches if b.get("trained"))
        message = f"{len(batches)} batches landed; {retrained} led to a training."
        figure = charts.drift_figure(batches, settings.drift_psi)
        rows = formatting.batch_rows(batches)
        return message, figure, formatting.markdown_table(formatting.BATCH_COLUMNS, rows)

    refresh.click(load, None, [note, chart, table])
    demo.load(load, None, [note, chart, table])


def monitoring_tab(serving: ServingClient, settings: Settings, demo: gr.Blocks) -> None:
    """What the price model served, hour by hour and per version, and the alerts raised."""
    gr.Markdown(
        "What the price model answered, per hour and version: listings, error rate, latency, "
        "the median price, and drift of what clients sent against the version's training data. "
        "Below, how its prices turned out on the listings that sold since (realized error), "
        "and the alerts: checks that started failing or passed again."
    )
    with gr.Row():
        hours = gr.Dropdown(
            [("last 24 hours", 24), ("last 48 hours", 48), ("last 7 days", 168)],
            value=48, label="Period", elem_id="monitoring-hours", scale=0,
        )  # fmt: skip
        refresh = gr.Button("Refresh", size="sm", scale=0)
    note = gr.Markdown(elem_id="monitoring-note")
    chart = gr.Plot(label="Served traffic", elem_id="monitoring-chart")
    windows = gr.Markdown(elem_id="monitoring-windows")
    realized_chart = gr.Plot(label="Realized error over time", elem_id="monitoring-realized-chart")
    realized = gr.Markdown(elem_id="monitoring-realized")
    alerts = gr.Markdown(elem_id="monitoring-alerts")
    shown = [note, chart, windows, realized_chart, realized, alerts]

    def load(period: int) -> tuple[Any, ...]:
        try:
            record = serving.monitoring(int(period))
        except BackendError as error:
            return _problem(error), None, "", None, "", ""
        served, raised = record["windows"], record["alerts"]
        firing = formatting.firing_checks(raised)
        message = (
            f"{len(served)} version-hours served in the period"
            f" ({sum(w['listings'] for w in served):,} listings); "
            + (f"**firing: {', '.join(firing)}**" if firing else "no check is failing")
        )
        figure = charts.served_figure(served) if served else None
        over_time = record["realized_over_time"]
        return (
            message,
            figure,
            formatting.windows_table(served),
            charts.realized_figure(over_time, settings.price_interval_level) if over_time else None,
            formatting.realized_table(record["realized"]),
            formatting.alerts_table(raised),
        )

    refresh.click(load, hours, shown)
    hours.change(load, hours, shown)
    demo.load(load, hours, shown)


def counter_tab(serving: ServingClient) -> None:
    """A photo → the objects the chosen detector finds, boxed, counted and listed."""
    gr.Markdown("Upload a photo; the detector boxes and counts what it recognises.")
    with gr.Row():
        with gr.Column():
            photo = gr.Image(
                type="filepath", sources=["upload"], label="Photo", elem_id="counter-photo"
            )
            model = gr.Radio(list(DETECTORS), value=DETECTORS[0], label="Detector")
            confidence = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="Minimum confidence")
            wanted = gr.Dropdown(
                ["", *COCO_CLASSES], value="", label="Count only (empty: every object)",
                elem_id="counter-object",
            )  # fmt: skip
            count = gr.Button("Count", variant="primary", elem_id="counter-run")
        with gr.Column():
            answer = gr.Markdown(elem_id="counter-answer")
            annotated = gr.Image(label="Detections", interactive=False, elem_id="counter-image")
    table = gr.Dataframe(
        headers=list(formatting.DETECTION_COLUMNS), interactive=False, elem_id="counter-table"
    )

    def run(path: str | None, detector: str, threshold: float, name: str) -> tuple[Any, ...]:
        if not path:
            return "**Upload a photo first.**", None, []
        image = Path(path).read_bytes()
        try:
            counted = serving.count(image, detector, threshold, name or None)
        except BackendError as error:
            return _problem(error), None, []
        picture = formatting.annotate(image, counted.get("detections", []))
        return formatting.count_markdown(counted), picture, formatting.detection_rows(counted)

    count.click(run, [photo, model, confidence, wanted], [answer, annotated, table])


def digits_tab(serving: ServingClient) -> None:
    """A drawn or uploaded digit → the digits model's answer and version."""
    gr.Markdown("Draw a digit (0-9) large in the box, or upload a picture of one.")
    with gr.Row():
        sketch = gr.Sketchpad(
            label="Draw", canvas_size=(280, 280), fixed_canvas=True, layers=False,
            brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=14),
            type="numpy", elem_id="digits-sketch",
        )  # fmt: skip
        upload = gr.Image(
            type="filepath", sources=["upload"], label="…or upload", height=320,
            elem_id="digits-upload",
        )  # fmt: skip
    read = gr.Button("Read the digit", variant="primary", elem_id="digits-run")
    answer = gr.Markdown(elem_id="digits-answer")

    def run(drawing: dict[str, Any] | None, path: str | None) -> str:
        image = Path(path).read_bytes() if path else formatting.sketch_png(drawing)
        if image is None:
            return "**Draw a digit or upload a picture first.**"
        try:
            result = serving.predict_digit(image)
        except BackendError as error:
            return _problem(error)
        return (
            f"## Prediction: {result['prediction']}\n\n"
            f"Read by **{formatting.model_line(result['model'])}**."
        )

    read.click(run, [sketch, upload], answer)


def build_app(settings: Settings) -> gr.Blocks:
    serving = ServingClient(settings.ui_serving_url or settings.serving_url, settings.ui_timeout_s)
    registry = RegistryClient(settings.ui_mlflow_url or settings.mlflow_url, settings.ui_timeout_s)
    with gr.Blocks(title="realty", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Price", id="price"):
            price_tab(serving)
        with gr.Tab("Models", id="models"):
            models_tab(registry, serving, settings.price_model_name, demo)
        with gr.Tab("Data & drift", id="drift"):
            drift_tab(serving, settings, demo)
        with gr.Tab("Monitoring", id="monitoring"):
            monitoring_tab(serving, settings, demo)
        with gr.Tab("Object counter", id="counter"):
            counter_tab(serving)
        with gr.Tab("Digits", id="digits"):
            digits_tab(serving)
    return demo


def launch(settings: Settings, block: bool = True) -> gr.Blocks:
    """Serve the app on ``settings.host:settings.ui_port``; ``block=False`` returns at once."""
    demo = build_app(settings)
    demo.queue(default_concurrency_limit=4)
    log.info(
        "web app on %s (serving API %s, MLflow %s)",
        settings.ui_url,
        settings.ui_serving_url or settings.serving_url,
        settings.ui_mlflow_url or settings.mlflow_url,
    )
    demo.launch(
        server_name=settings.host,
        server_port=settings.ui_port,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=True,
        footer_links=[],
        css=CSS,
        share=False,
    )
    return demo
