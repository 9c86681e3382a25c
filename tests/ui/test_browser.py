"""The web app in real headless Chromium, against real serving (uvicorn), MLflow and PostgreSQL
on loopback. Every test leaves a screenshot in var/test-artifacts/."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.conftest import SHARED
from tests.ui.conftest import dead_url

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORANGES = SHARED / "data" / "images" / "oranges.jpg"
DIGIT = SHARED / "data" / "images" / "digit2.jpg"  # an 8
PRICE = re.compile(r"Predicted price: \$([\d,]+)")
INTERVAL = re.compile(r"90% interval: \$([\d,]+) to \$([\d,]+)")  # as inner_text reads it


@pytest.fixture(scope="module")
def live_ui(serving_server, production_models, tmp_path_factory) -> str:
    """The web app for the test stack: serving_server's API and the test MLflow server."""
    from realty_ops.sandbox import free_port
    from ui.app import launch

    settings = production_models.settings.model_copy(
        update={"ui_serving_url": serving_server.url, "ui_port": free_port()}
    )
    app = launch(settings, block=False)
    yield settings.ui_url
    app.close()


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in the Gradio dropdown ``#elem_id``."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    options = page.locator(f"[id='{box.get_attribute('aria-controls')}']")
    options.get_by_role("option", name=option, exact=True).click()


def wait_for_text(page, elem_id: str, pattern: str) -> str:
    locator = page.locator(f"#{elem_id}")
    locator.filter(has_text=re.compile(pattern)).wait_for()
    return locator.inner_text()


def test_price_form_gives_a_dollar_price_and_the_production_version(
    live_ui: str, page, production_models
) -> None:
    page.goto(live_ui)
    choose(page, "price-state", "Texas")
    page.locator("#price-city textarea").fill("Houston")
    page.get_by_label("Bedrooms").fill("3")
    page.get_by_label("Bathrooms").fill("2")
    page.get_by_label("Living area").fill("1,800")  # the other fields stay empty
    page.locator("#price-predict").click()

    answer = wait_for_text(page, "price-answer", r"Predicted price|serving")
    price = PRICE.search(answer)
    assert price, answer
    assert 10_000 < int(price.group(1).replace(",", "")) < 10_000_000
    assert f"realty-price version {production_models.price_version}" in answer
    low, high = (int(v.replace(",", "")) for v in INTERVAL.search(answer).groups())
    assert low < int(price.group(1).replace(",", "")) < high
    expect(page.get_by_label("Lot")).to_have_value("")  # left empty, sent as unknown
    # the SHAP chart of this prediction is drawn
    page.locator("#price-chart img").wait_for()


def test_a_preset_fills_the_form_and_compares_with_the_real_price(live_ui: str, page) -> None:
    page.goto(live_ui)
    choose(page, "price-preset", "Staten Island, New York: 4 bed for sale")
    expect(page.locator("#price-city textarea")).to_have_value("Staten Island")
    page.locator("#price-predict").click()
    answer = wait_for_text(page, "price-answer", r"real listing's price")
    assert "$1,299,000" in answer and PRICE.search(answer)


def test_object_counter_counts_the_oranges_and_draws_them(live_ui: str, page) -> None:
    page.goto(live_ui)
    page.get_by_role("tab", name="Object counter").click()
    page.locator("#counter-photo input[type=file]").set_input_files(str(ORANGES))
    page.locator("#counter-photo img").wait_for()
    page.locator("#counter-run").click()

    answer = wait_for_text(page, "counter-answer", r"found|serving")
    count = re.search(r"(\d+) objects? found", answer)
    assert count and int(count.group(1)) >= 2, answer
    assert "orange" in page.locator("#counter-table").inner_text()
    annotated = page.locator("#counter-image img")
    annotated.wait_for()
    assert annotated.evaluate("img => img.naturalWidth") > 100


@pytest.fixture(scope="module")
def explained_version(production_models) -> str:
    """The production price version with its SHAP report logged, as `shap_report` does."""
    from mlflow import MlflowClient

    from realty.explain.versions import explain_and_log

    settings = production_models.settings.model_copy(update={"shap_sample_rows": 200})
    client = MlflowClient(settings.mlflow_url)
    version = client.get_model_version(settings.price_model_name, production_models.price_version)
    if explain_and_log(settings, client, version, production_models.listings) is None:
        pytest.fail(f"v{version.version} ({version.tags.get('candidate')}) has no SHAP report")
    return version.version


def test_models_tab_lists_the_versions_and_compares_their_shap(
    live_ui: str, page, explained_version: str
) -> None:
    version = f"v{explained_version}"
    page.goto(live_ui)
    page.get_by_role("tab", name="Models").click()
    wait_for_text(page, "models-note", r"production is")
    table = page.locator("#models-table").inner_text()
    assert version in table and "production" in table
    wait_for_text(page, "models-rollout", r"Rollout: production v\d+, no rollout")

    choose(page, "models-first", version)
    choose(page, "models-second", version)
    page.locator("#models-compare").click()
    notes = wait_for_text(page, "models-diff", "as recorded")
    assert version in notes
    page.locator("#models-importance img").wait_for()


def test_data_and_drift_tab_shows_each_batch_and_the_scores(
    live_ui: str, page, production_models
) -> None:
    from tests.serving.test_history import forget_batches, land_and_judge

    landed = land_and_judge(production_models.settings, production_models.price_version)
    try:
        page.goto(live_ui)
        page.get_by_role("tab", name="Data & drift").click()
        wait_for_text(page, "drift-note", r"batches landed")
        table = page.locator("#drift-table").inner_text()
    finally:
        forget_batches(production_models.settings, landed["keys"])
    first, second, third = landed["keys"]
    assert re.search(rf"{first}\s+600\s+\d+\s+\d+\s+retrain\s+initial baseline", table), table
    assert re.search(rf"{third}\s+600\s+-\s+-\s+not judged yet", table), table
    assert second in table
    page.locator("#drift-chart img").wait_for()


def test_monitoring_tab_shows_the_served_hours_and_the_alerts(
    live_ui: str, page, production_models, dagster_instance
) -> None:
    from tests.realty.model.test_guardrails import insert_labels
    from tests.serving.test_monitoring import profiled_hour

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    profiled_hour(production_models, dagster_instance, hour)
    settings, sold_version = production_models.settings, f"8{random.randrange(10**6)}"
    sold = [(f"ui-{sold_version}", i, "canary", sold_version, 1.5e5, "sale", 1e5) for i in range(7)]
    insert_labels(settings, settings.price_model_name, sold)
    page.goto(live_ui)
    page.get_by_role("tab", name="Monitoring").click()
    note = wait_for_text(page, "monitoring-note", r"version-hours served")
    assert f"firing: served_traffic_healthy [{hour:%Y-%m-%d-%H:%M}]" in note
    windows = page.locator("#monitoring-windows").inner_text()
    version = production_models.price_version
    assert re.search(rf"{hour:%Y-%m-%d %H:%M}\s+v{version}\s+300\s+0\.0%", windows), windows
    realized = page.locator("#monitoring-realized").inner_text()
    assert re.search(rf"v{sold_version}\s+canary\s+7\s+\$50,000\s+50\.0%", realized), realized
    alerts = page.locator("#monitoring-alerts").inner_text()
    assert "served_traffic / served_traffic_healthy" in alerts and "firing" in alerts
    assert "p99 latency 400 ms" in alerts
    page.locator("#monitoring-chart img").wait_for()


def test_digits_tab_reads_an_uploaded_digit(live_ui: str, page, production_models) -> None:
    page.goto(live_ui)
    page.get_by_role("tab", name="Digits").click()
    page.locator("#digits-upload input[type=file]").set_input_files(str(DIGIT))
    page.locator("#digits-run").click()
    answer = wait_for_text(page, "digits-answer", r"Prediction|serving")
    assert "Prediction: 8" in answer
    assert f"digits version {production_models.digits_version}" in answer


def test_a_stopped_backend_is_said_in_plain_words_and_the_rest_works(
    start_ui, page, production_models
) -> None:
    settings = production_models.settings.model_copy(update={"ui_serving_url": dead_url()})
    page.goto(start_ui(settings))
    choose(page, "price-preset", "Concord, Ohio: 3 bed for sale")
    page.locator("#price-predict").click()
    answer = wait_for_text(page, "price-answer", r"not reachable")
    assert "serving API" in answer and "Traceback" not in answer

    page.get_by_role("tab", name="Data & drift").click()
    assert "not reachable" in wait_for_text(page, "drift-note", r"not reachable")

    page.get_by_role("tab", name="Models").click()  # MLflow is up: this tab still works
    wait_for_text(page, "models-note", r"production is")
    assert f"v{production_models.price_version}" in page.locator("#models-table").inner_text()
    page.get_by_role("tab", name="Price").click()  # the screenshot shows the message
    expect(page.locator("#price-answer")).to_contain_text("not reachable")
