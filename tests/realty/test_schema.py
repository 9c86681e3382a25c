"""One parser per field: whatever text a batch delivers, CLEAN stores what the field's
realty.schema parser reads, and training's and serving's features read the same from it and
from the raw text."""

from __future__ import annotations

import math

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from realty.model.features import feature_rows, prepare_features
from realty.schema import date_value, number_value, state_value, text_value, zip_code_value
from tests.realty.ingest.test_cleaning import TODAY, clean

# Text that looks like each field, right or wrong, and some that does not.
ZIP_TEXTS = st.one_of(st.from_regex(r"\A\s?\d{1,6}(\.0{0,2}|-\d{3,5})?\s?\Z"), st.text(max_size=8))
DATE_TEXTS = st.one_of(
    st.from_regex(r"\A\d{4}-\d{1,2}-\d{1,2}([T ]\d{2}:\d{2}(:\d{2})?Z?)?\Z"), st.text(max_size=12)
)
STATE_TEXTS = st.one_of(
    st.sampled_from(["texas", " New  York ", "PUERTO RICO", "Atlantis", "district of columbia"]),
    st.text(max_size=10),
)
NUMBER_TEXTS = st.one_of(
    st.from_regex(r"\A[+-]?\d{0,3}(\.\d{0,2})?([eE][+-]?\d)?\Z"), st.sampled_from(["inf", "nan"])
)


@settings(max_examples=150, deadline=None)
@given(ZIP_TEXTS, DATE_TEXTS, STATE_TEXTS, NUMBER_TEXTS, st.text(max_size=10))
def test_clean_training_and_serving_read_a_field_alike(zip_code, sold, state, bed, city) -> None:
    raw = {"zip_code": zip_code, "prev_sold_date": sold, "state": state, "bed": bed, "city": city}
    result = clean(raw)
    if result.clean.empty:  # a rejected row: its reason names a value the parser refuses
        [reason] = result.rejects["reason"]
        assert reason in _refusals(raw), (reason, raw)
        return
    [row] = result.clean.to_dict(orient="records")
    assert _none(row["zip_code"]) == zip_code_value(zip_code)
    assert _none(row["prev_sold_date"]) == date_value(sold)
    assert row["state"] == state_value(state) and row["city"] == text_value(city)
    assert _same(float(row["bed"]) if not pd.isna(row["bed"]) else math.nan, number_value(bed))

    listing = {**row, **raw}  # serving gets the raw text, training the clean row
    from_clean = prepare_features(pd.DataFrame([row]))
    numbers, [categories] = feature_rows([listing])
    assert from_clean["zip_code"].iloc[0] == categories[3]
    assert (
        from_clean["state"].iloc[0] == categories[1] and from_clean["city"].iloc[0] == categories[2]
    )
    assert _same(float(from_clean["years_since_sold"].iloc[0]), float(numbers[0, 4]))
    assert _same(float(from_clean["bed"].iloc[0]), float(numbers[0, 0]))


def _refusals(raw: dict[str, str]) -> set[str]:
    """The reasons CLEAN may give for ``raw``, by the parsers' reading of it."""
    reasons = set()
    if state_value(raw["state"]) is None:
        reasons.add("unknown_state")
    if text_value(raw["city"]) is None:
        reasons.add("missing_city")
    if text_value(raw["bed"]) is not None:
        reasons.add(
            "absurd_bed" if math.isfinite(number_value(raw["bed"])) else "unparseable_number"
        )
    if text_value(raw["prev_sold_date"]) is not None:
        if (sold := date_value(raw["prev_sold_date"])) is None:
            reasons |= {"unparseable_date", "future_date"}  # 2999-01-01: beyond datetime64
        else:
            reasons.add("future_date" if sold > TODAY else "implausible_date")
    return reasons


def _none(value: object) -> object:
    return None if value is None or pd.isna(value) else value


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b
