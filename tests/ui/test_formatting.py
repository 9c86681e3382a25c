"""The web app's pure parts: form → listing, answers → text, tables and charts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from ui import charts, formatting
from ui.client import ModelVersion
from ui.presets import PRESETS


def form(**values: object) -> dict[str, object]:
    return {"status": "for_sale", "state": "Texas", "city": "Houston", **values}


def test_empty_optional_fields_are_left_out_and_numbers_typed() -> None:
    listing = formatting.listing_from_form(
        form(bed=3.0, bath=None, house_size=1800.5, zip_code=" ", prev_sold_date="", street=12.0)
    )
    assert listing == {
        "status": "for_sale", "state": "Texas", "city": "Houston", "bed": 3,
        "house_size": 1800.5, "street": 12,
    }  # fmt: skip
    assert isinstance(listing["bed"], int)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"city": "  "}, "Please fill in: city."),
        ({"state": None, "status": None}, "Please fill in: status, state."),
        ({"zip_code": "9513"}, "zip code has 5 digits"),
        ({"prev_sold_date": "16/11/2021"}, "date like 2021-11-16"),
        ({"bed": "three"}, "Bedrooms is a number"),
        ({"bath": "2.5"}, "Bathrooms is a whole number"),
        ({"house_size": "20"}, "Living area is between 100 and 50,000"),
        ({"acre_lot": "-1"}, "Lot is between 0 and 50,000"),
        ({"street": "-3"}, "Street id is 0 or more"),
    ],
)
def test_bad_forms_are_explained(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        formatting.listing_from_form(form(**values))


def test_numbers_typed_as_text_are_read() -> None:
    listing = formatting.listing_from_form(form(house_size="1,800", bed=" 3 ", acre_lot="0.25"))
    assert (listing["house_size"], listing["bed"], listing["acre_lot"]) == (1800.0, 3, 0.25)
    assert formatting.form_from_listing(listing)[:7] == [
        "for_sale", "Texas", "Houston", "", "3", "", "1800.0",
    ]  # fmt: skip


def test_every_preset_is_a_valid_listing_that_round_trips_through_the_form() -> None:
    states = set()
    for preset in PRESETS:
        values = formatting.form_from_listing(preset.listing)
        listing = formatting.listing_from_form(
            dict(zip(formatting.LISTING_FIELDS, values, strict=True))
        )
        expected = {k: v for k, v in preset.listing.items() if v is not None}
        assert listing == expected
        assert "price" not in listing and preset.listed_price > 0
        states.add(listing["state"])
    assert len(states) == len(PRESETS)  # one state each


def test_dollars() -> None:
    assert formatting.dollars(1234567.4) == "$1,234,567"
    assert formatting.dollars(None) == formatting.dollars(float("nan")) == "-"


def test_price_markdown_names_the_version_and_the_real_price() -> None:
    model = {"name": "realty-price", "version": "7"}
    text = formatting.price_markdown(2e5, model, 250_000)
    assert "Predicted price: $200,000" in text
    assert "$250,000" in text and "realty-price version 7" in text
    assert "real listing" not in formatting.price_markdown(2e5, model, None)
    assert "interval" not in text  # a version without intervals


def test_price_markdown_shows_the_interval() -> None:
    interval = {"level": 0.9, "low": 151_234.4, "high": 289_999.6}
    text = formatting.price_markdown(2e5, {"name": "realty-price", "version": "7"}, None, interval)
    assert "90% interval: **$151,234 to $290,000**" in text


def version(number: int, **tags: str) -> ModelVersion:
    return ModelVersion(str(number), 1_763_900_000_000, "run", "", tags, ())


def test_version_rows_show_lineage_metrics_and_gate() -> None:
    v2 = version(
        2, candidate="catboost", trigger="drift", reasons=json.dumps(["PSI of bed 0.31"]),
        batch_range="g1-Tuesday-b001..g1-Tuesday-b002", batches="2", rows="40000",
        **{"metric.mae_usd": "201234.5", "metric.r2_log": "0.7712", "gate.decision": "promoted",
           "gate.reason": "beats production"},
    )  # fmt: skip
    v2 = ModelVersion(v2.version, v2.created_ms, "run", "", v2.tags, ("production",))
    (row,) = formatting.version_rows([v2])
    assert dict(zip(formatting.VERSION_COLUMNS, row, strict=True)) == {
        "version": "v2 (catboost)", "created": "2025-11-23 12:13 UTC", "alias": "production",
        "trained because": "PSI of bed 0.31",
        "training data": "40,000 rows of 2 batches (g1-Tuesday-b001..g1-Tuesday-b002)",
        "MAE $": "$201,234", "R² (log)": "0.771", "gate's decision": "promoted: beats production",
    }  # fmt: skip


def test_a_version_without_tags_still_has_a_row() -> None:
    (row,) = formatting.version_rows([version(1)])
    assert row == ["v1", "2025-11-23 12:13 UTC", "-", "-", "-", "-", "-", "not decided"]


def test_markdown_table_keeps_cells_apart() -> None:
    table = formatting.markdown_table(("a", "b"), [["x | y", "two\nlines"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x \\| y | two lines |"]


def test_recorded_diff_is_the_changes_section_of_the_shap_report() -> None:
    report = (
        "# What drives the predictions (SHAP)\n\nintro\n\n"
        "## Changes since the previous version\n\n- bed rose from #4 to #2\n\n"
        "## Ranking\n\n| # | feature |\n"
    )
    assert formatting.recorded_diff(report) == "- bed rose from #4 to #2"
    assert formatting.recorded_diff("# no such section") == ""


BATCHES = [
    {
        "batch_key": "g1-Tuesday-b001", "batch_number": 1, "rows_landed": 3000,
        "rows_clean": 2900, "rows_rejected": 100, "verdict": "retrain",
        "reasons": ["initial baseline"], "compared_with_version": None, "scores": None,
        "trained": True, "trigger": "initial", "candidate_version": "1", "promoted": True,
        "production_version": "1",
    },
    {
        "batch_key": "g1-Tuesday-b002", "batch_number": 2, "rows_landed": 3000,
        "rows_clean": 2950, "rows_rejected": 50, "verdict": "keep", "reasons": [],
        "compared_with_version": "1", "trained": False, "promoted": None,
        "production_version": "1",
        "scores": {"max_feature_psi": 0.04, "target_psi": 0.01, "unseen_city_share": 0.1,
                   "mae_change": 0.05},
    },
    {
        "batch_key": "g1-Tuesday-b003", "batch_number": 3, "rows_landed": 3000,
        "rows_clean": None, "rows_rejected": None, "verdict": None, "reasons": [],
        "scores": None, "trained": False, "promoted": None, "production_version": None,
    },
]  # fmt: skip


def test_batch_rows() -> None:
    first, second, third = formatting.batch_rows(BATCHES)
    assert first[1:10] == [
        "3,000", "2,900", "100", "retrain", "initial baseline", "-", "v1 (initial)",
        "promoted", "v1",
    ]  # fmt: skip
    assert second[4:9] == ["keep", "-", "v1", "no", "-"]
    assert third[2:5] == ["-", "-", "not judged yet"]
    long = {**BATCHES[1], "reasons": ["x" * 200, "short"]}
    (row,) = formatting.batch_rows([long])
    assert row[5] == "x" * 89 + "…; short"


def test_drift_figure_draws_the_scores_and_marks_the_retrains() -> None:
    figure = charts.drift_figure(BATCHES, psi_threshold=0.25)
    (axes,) = figure.axes
    labels = [line.get_label() for line in axes.get_lines()]
    assert {"largest feature PSI", "share of unseen cities", "PSI that retrains"} <= set(labels)
    retrain_marks = [t.get_text() for t in axes.texts]
    assert retrain_marks == ["v1 promoted"]


def test_contribution_figure_is_a_waterfall_ending_at_the_prediction() -> None:
    explanation = {
        "contributions": [
            {"feature": f"f{i}", "shap": 0.01 * (i - 6), "value": i} for i in range(14)
        ]
    }
    items = formatting.contributions(explanation)
    assert [name for name, _, _ in items[:2]] == ["f13", "f0"]  # largest |effect| first
    base = 12.0
    price = float(np.exp(base + sum(effect for _, effect, _ in items)))
    figure = charts.contribution_figure(items, base, price)
    (axes,) = figure.axes
    bars = axes.patches
    assert len(bars) == charts.SHOWN_FEATURES + 1  # ten features and "4 other features"
    end = bars[-1].get_x() + bars[-1].get_width()
    assert end == pytest.approx(np.log(price))
    assert axes.get_yticklabels()[-1].get_text() == "4 other features"


def test_importance_figure_puts_the_versions_side_by_side() -> None:
    ranking = {"features": [{"feature": "bed", "mean_abs_shap": 0.3}]}
    other = {"features": [{"feature": "bath", "mean_abs_shap": 0.2}]}
    figure = charts.importance_figure({"v1": ranking, "v2": other})
    (axes,) = figure.axes
    assert len(axes.patches) == 4  # two features x two versions
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["v1", "v2"]


def test_count_markdown_says_what_was_counted() -> None:
    counted = {"model": "yolov3-tiny", "confidence": 0.5, "object": "orange", "count": 2}
    assert formatting.count_markdown(counted).startswith("## 2 oranges found")
    assert formatting.count_markdown({**counted, "count": 1}).startswith("## 1 orange found")
    everything = {**counted, "object": None, "count": 3}
    assert formatting.count_markdown(everything).startswith("## 3 objects found")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_annotate_draws_a_box_per_detection() -> None:
    photo = png(Image.new("RGB", (200, 100), "white"))
    detection = {"label": "orange", "confidence": 0.9, "box": [20, 30, 120, 90]}
    drawn = np.asarray(formatting.annotate(photo, [detection]))
    assert tuple(drawn[60, 20]) == (0, 200, 0)  # the box's left edge
    assert tuple(drawn[60, 70]) == (255, 255, 255)  # inside stays as it was


def test_sketch_png_is_dark_ink_on_white_and_none_when_blank() -> None:
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)  # transparent: nothing drawn
    assert formatting.sketch_png({"composite": canvas}) is None
    assert formatting.sketch_png(None) is None
    canvas[100:180, 130:150] = (0, 0, 0, 255)  # a black stroke
    picture = Image.open(io.BytesIO(formatting.sketch_png({"composite": canvas})))
    pixels = np.asarray(picture)
    assert picture.mode == "L" and pixels[140, 140] == 0 and pixels[10, 10] == 255


def test_feature_labels_are_in_words() -> None:
    assert charts.feature_label("log_house_size", 7.0) == "living area = 1,097 sq ft"
    assert (
        charts.feature_label("city", "New York|Staten Island") == "city = Staten Island, New York"
    )
    assert charts.feature_label("zip3", "__missing__") == "zip region unknown"
    assert charts.feature_label("bed", None) == "bedrooms unknown"
    assert charts.feature_label("status", "sold") == "status = sold"


def test_a_rollout_shows_each_arm_the_guardrails_and_the_moves() -> None:
    state = {
        "production": "3",
        "previous": "2",
        "challenger": "4",
        "stage": "canary",
        "share": 0.05,
        "step_started_at": "2026-12-03T12:00:00+00:00",
        "paused": False,
    }
    view = {
        "summary": "production v3, challenger v4 in canary 5%",
        "state": state,
        "figures": {"challenger_rows": 120, "challenger_errors": 0, "error_rate": 0.0,
                    "canary_p99_ms": 14.2, "production_p99_ms": 9.8, "divergence": 0.69,
                    "production_rows": 2300},
        "guardrails": ["divergence 0.690 > 0.250 (median |log(challenger / production)|)"],
        "events": [{"event_id": 7, "applied_at": "2026-12-03T12:00:00.123+00:00",
                    "action": "step", "actor": "controller", "after": state,
                    "reason": "shadow held 61 s over 300 listings, guardrails pass"}],
    }  # fmt: skip
    text = formatting.rollout_markdown(view)
    assert "**Rollout**: production v3, challenger v4 in canary 5%." in text
    assert "| canary v4 | 120 | 0.0% | 14 ms |" in text
    assert "| production v3 | 2300 | - | 10 ms |" in text
    assert "Failing guardrails: divergence 0.690" in text
    assert "| 7 | 2026-12-03T12:00:00 | step | controller | v3, v4 in canary 5% |" in text
    assert "Realized MAE" not in text  # no sale has come back yet
    sold = {**view["figures"], "labelled_sales": 41, "challenger_realized_mae": 0.412,
            "production_realized_mae": 0.298}  # fmt: skip
    assert (
        "Realized MAE (log) on 41 sold listings both priced: challenger 0.412, production 0.298."
    ) in formatting.rollout_markdown({**view, "figures": sold})
    quiet = formatting.rollout_markdown({**view, "figures": None, "events": []})
    assert quiet == "**Rollout**: production v3, challenger v4 in canary 5%."


def test_realized_error_is_a_row_per_version_and_role() -> None:
    realized = [
        {"version": "4", "role": "canary", "sales": 1234, "mae_usd": 41_000.4, "mape": 0.183,
         "mae_log": 0.2012, "coverage": 0.894, "coverage_n": 1200,
         "last_labelled_at": "2026-12-04T10:15:00+00:00"},
        {"version": "3", "role": "production", "sales": 9, "mae_usd": 50_000, "mape": 0.25,
         "mae_log": 0.22, "coverage": None, "coverage_n": 0,
         "last_labelled_at": "2026-12-03T09:00:00+00:00"},
    ]  # fmt: skip
    text = formatting.realized_table(realized)
    assert (
        "| v4 | canary | 1,234 | $41,000 | 18.3% | 0.201 | 89.4% of 1,200 | 2026-12-04 10:15 |"
        in text
    )
    assert "| v3 | production | 9 | $50,000 | 25.0% | 0.220 | - |" in text
    assert "No sale has come back" in formatting.realized_table([])


def test_realized_figure_draws_each_arm_over_the_labelling_batches() -> None:
    batches = [
        {"batch_key": f"b{i}", "labelled_at": f"2026-12-0{i}T10:00:00+00:00", "version": version,
         "role": role, "sales": 40, "mae_log": mae, "mape": 0.2, "coverage": coverage}
        for i, version, role, mae, coverage in [
            (1, "3", "production", 0.30, 0.91), (2, "3", "production", 0.35, 0.88),
            (2, "4", "shadow", 0.25, None), (3, "10", "production", 0.28, 0.90),
        ]
    ]  # fmt: skip
    mae, coverage = charts.realized_figure(batches, level=0.9).axes
    lines = {line.get_label(): line for line in mae.get_lines()}
    assert list(lines) == ["v3 production", "v4 shadow", "v10 production"]  # versions by number
    assert list(lines["v3 production"].get_ydata()) == [0.30, 0.35]
    assert [line.get_ydata()[0] for line in coverage.get_lines()][-1] == 0.9  # the nominal level
