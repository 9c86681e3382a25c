"""The cleaning rules: every row accounted for, each rule rejecting what it should."""

from __future__ import annotations

import gzip
import re
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realty.ingest.cleaning import (
    CLEAN_COLUMNS,
    REJECT_COLUMNS,
    CleaningRules,
    CleanResult,
    clean_batch,
    dedupe_against,
)
from realty.schema import LISTING_COLUMNS, STATUS_VALUES, US_STATES
from tests.conftest import require_sample

GOOD = {
    "brokered_by": "103378", "status": "for_sale", "price": "105000", "bed": "3", "bath": "2",
    "acre_lot": "0.12", "street": "1962661", "city": "Adjuntas", "state": "Puerto Rico",
    "zip_code": "00601", "house_size": "920", "prev_sold_date": "2019-06-01",
}  # fmt: skip
TODAY = date(2024, 6, 30)
RULES = CleaningRules(today=TODAY)
CLEAN_DTYPES = {
    "row_index": "int64", "brokered_by": "Int64", "status": "object", "price": "float64",
    "bed": "Int64", "bath": "Int64", "acre_lot": "float64", "street": "Int64", "city": "object",
    "state": "object", "zip_code": "object", "house_size": "float64", "prev_sold_date": "object",
    "row_hash": "object",
}  # fmt: skip
REJECT_DTYPES = {"row_index": "int64", "reason": "object", "detail": "object"}
REASONS = {
    "missing_price", "unparseable_number", "implausible_price", "unknown_status",
    "unknown_state", "missing_city", "invalid_id", "absurd_bed", "absurd_bath",
    "absurd_house_size", "absurd_acre_lot", "future_date", "implausible_date",
    "unparseable_date", "duplicate_in_batch",
}  # fmt: skip


def frame(*rows: dict[str, str | None]) -> pd.DataFrame:
    """A raw batch of GOOD listings with the given changes, as the RAW store hands it over."""
    records = [{**GOOD, **row} for row in rows]
    raw = pd.DataFrame(records, columns=list(LISTING_COLUMNS)).astype(object)
    raw.insert(0, "row_index", range(len(raw)))
    return raw


def clean(*rows: dict[str, str | None]) -> CleanResult:
    return clean_batch(frame(*rows), RULES)


def only_reject(**change: str | None) -> tuple[str, str]:
    rejects = clean(change).rejects
    assert len(rejects) == 1, rejects
    return rejects.iloc[0]["reason"], rejects.iloc[0]["detail"]


def assert_layout(result: CleanResult) -> None:
    assert tuple(result.clean.columns) == CLEAN_COLUMNS
    assert tuple(result.rejects.columns) == REJECT_COLUMNS
    assert {c: str(t) for c, t in result.clean.dtypes.items()} == CLEAN_DTYPES
    assert {c: str(t) for c, t in result.rejects.dtypes.items()} == REJECT_DTYPES


def test_a_good_row_is_typed_as_clean_listings_stores_it() -> None:
    result = clean({})
    assert result.rejects.empty
    assert_layout(result)
    row = result.clean.iloc[0]
    assert row["price"] == 105000.0 and row["bed"] == 3 and row["bath"] == 2
    assert row["brokered_by"] == 103378 and row["street"] == 1962661
    assert row["acre_lot"] == 0.12 and row["house_size"] == 920.0
    assert (row["status"], row["city"], row["state"]) == ("for_sale", "Adjuntas", "Puerto Rico")
    assert row["zip_code"] == "00601"
    assert type(row["prev_sold_date"]) is date and row["prev_sold_date"] == date(2019, 6, 1)
    assert re.fullmatch(r"[0-9a-f]{32}", row["row_hash"])


def test_optional_fields_may_be_missing() -> None:
    optional = {c: None for c in LISTING_COLUMNS if c not in ("status", "price", "city", "state")}
    result = clean(optional)
    assert result.rejects.empty
    row = result.clean.iloc[0]
    assert all(pd.isna(row[c]) for c in optional)
    assert row["zip_code"] is None and row["prev_sold_date"] is None


def test_layout_holds_for_empty_and_all_rejected_batches() -> None:
    assert_layout(clean_batch(frame().iloc[:0]))
    everything_rejected = clean({"price": None}, {"city": None})
    assert_layout(everything_rejected)
    assert everything_rejected.clean.empty


REJECTIONS = [
    ("missing_price", {"price": None}, "price is missing"),
    ("missing_price", {"price": "   "}, "price is missing"),
    ("missing_price", {"price": "nan"}, "price is missing"),
    ("unparseable_number", {"price": "$425,000"}, "price '$425,000' is not a number"),
    ("unparseable_number", {"bed": "three"}, "bed 'three' is not a number"),
    ("unparseable_number", {"acre_lot": "inf"}, "acre_lot 'inf' is not a number"),
    ("unparseable_number", {"house_size": "1e999"}, "house_size '1e999' is not a number"),
    ("implausible_price", {"price": "1"}, "price '1' is below the 1,000 USD minimum"),
    ("implausible_price", {"price": "999.99"}, "price '999.99' is below the 1,000 USD minimum"),
    ("implausible_price", {"price": "2e8"}, "price '2e8' is above the 100,000,000 USD maximum"),
    ("unknown_status", {"status": "pending"}, "status 'pending' is not one of for_sale, sold"),
    ("unknown_status", {"status": None}, "status is missing"),
    ("unknown_state", {"state": "Atlantis"}, "state 'Atlantis' is not a US state or territory"),
    ("unknown_state", {"state": "MA"}, "state 'MA' is not a US state or territory"),
    ("unknown_state", {"state": ""}, "state is missing"),
    ("missing_city", {"city": "  "}, "city is missing"),
    ("invalid_id", {"brokered_by": "1.5"}, "brokered_by '1.5' is not a whole number from 0"),
    ("invalid_id", {"street": "-3"}, "street '-3' is not a whole number from 0"),
    ("invalid_id", {"street": "1e20"}, "street '1e20' is not a whole number from 0"),
    ("absurd_bed", {"bed": "31"}, "bed '31' is not a whole number from 0 to 30"),
    ("absurd_bed", {"bed": "-1"}, "bed '-1' is not a whole number from 0 to 30"),
    ("absurd_bed", {"bed": "2.5"}, "bed '2.5' is not a whole number from 0 to 30"),
    ("absurd_bath", {"bath": "198"}, "bath '198' is not a whole number from 0 to 30"),
    ("absurd_house_size", {"house_size": "99"}, "house_size '99' is outside 100-50,000 sq ft"),
    ("absurd_house_size", {"house_size": "99999"}, "house_size '99999' is outside 100-50,000"),
    ("absurd_acre_lot", {"acre_lot": "-0.5"}, "acre_lot '-0.5' is outside 0-50,000 acres"),
    ("absurd_acre_lot", {"acre_lot": "100000"}, "acre_lot '100000' is outside 0-50,000 acres"),
    ("future_date", {"prev_sold_date": "2024-07-01"}, "'2024-07-01' is after 2024-06-30"),
    ("future_date", {"prev_sold_date": "2999-01-01"}, "'2999-01-01' is after 2024-06-30"),
    ("implausible_date", {"prev_sold_date": "1899-12-31"}, "'1899-12-31' is before 1900-01-01"),
    ("unparseable_date", {"prev_sold_date": "28-02-2020"}, "'28-02-2020' is not a YYYY-MM-DD"),
    ("unparseable_date", {"prev_sold_date": "2020-02-30"}, "'2020-02-30' is not a YYYY-MM-DD"),
    ("unparseable_date", {"prev_sold_date": "2019-6-1"}, "'2019-6-1' is not a YYYY-MM-DD"),
]


@pytest.mark.parametrize(("code", "change", "detail"), REJECTIONS, ids=[r[2] for r in REJECTIONS])
def test_each_rule_rejects_with_its_code_and_names_the_value(
    code: str, change: dict[str, str | None], detail: str
) -> None:
    reason, message = only_reject(**change)
    assert reason == code
    assert detail in message
    assert message.startswith(next(iter(change)))


def test_a_long_value_is_shortened_in_the_detail() -> None:
    _, detail = only_reject(state="x" * 500)
    assert detail == f"state '{'x' * 40}…' is not a US state or territory"


@pytest.mark.parametrize(
    "change",
    [
        {"price": "1000"},
        {"price": "100000000"},
        {"bed": "0", "bath": "30"},
        {"house_size": "100"},
        {"house_size": "50000"},
        {"acre_lot": "50000"},
        {"brokered_by": "0", "street": str(2**53)},
        {"prev_sold_date": "2024-06-30"},
        {"prev_sold_date": "1900-01-01"},
    ],
)
def test_thresholds_are_inclusive(change: dict[str, str]) -> None:
    assert clean(change).rejects.empty


def test_thresholds_come_from_the_rules() -> None:
    strict = CleaningRules(min_price=200_000, max_rooms=2, today=date(2019, 1, 1))
    result = clean_batch(frame({}, {"price": "300000"}, {"price": "300000", "bed": "2"}), strict)
    assert result.rejects_by_reason == {"implausible_price": 1, "absurd_bed": 1, "future_date": 1}
    assert CleaningRules().reference_date == date.today()  # not frozen at import time


# One failing change per rule, each on its own column, in the documented order.
ORDERED_FAILURES = [
    ("missing_price", {"price": None}),
    ("unparseable_number", {"bed": "x"}),
    ("unknown_status", {"status": "pending"}),
    ("unknown_state", {"state": "Atlantis"}),
    ("missing_city", {"city": None}),
    ("invalid_id", {"street": "1.5"}),
    ("absurd_bath", {"bath": "99"}),
    ("absurd_house_size", {"house_size": "5"}),
    ("absurd_acre_lot", {"acre_lot": "-1"}),
    ("unparseable_date", {"prev_sold_date": "someday"}),
]


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, len(ORDERED_FAILURES) - 1), min_size=1))
def test_the_first_failing_rule_in_documented_order_names_the_reason(failing: set[int]) -> None:
    change = {k: v for i in failing for k, v in ORDERED_FAILURES[i][1].items()}
    assert only_reject(**change)[0] == ORDERED_FAILURES[min(failing)][0]


def test_rules_on_one_field_apply_in_order() -> None:
    assert only_reject(price="abc", bed="x")[1].startswith("price")  # columns in documented order
    assert only_reject(price="1", status="pending")[0] == "implausible_price"
    assert only_reject(bed="50", bath="50")[0] == "absurd_bed"


def test_normalisations_are_not_rejections() -> None:
    result = clean(
        {
            "status": " SOLD ",
            "state": "  puerto   RICO ",
            "city": " San  Juan\t",
            "zip_code": "601.0",
            "bed": "3.0",
            "bath": " 2 ",
            "brokered_by": "103378.0",
            "price": "1.05e5",
            "acre_lot": "0",
            "house_size": "nan",
        }
    )
    assert result.rejects.empty
    row = result.clean.iloc[0]
    assert (row["status"], row["state"], row["city"]) == ("sold", "Puerto Rico", "San Juan")
    assert (row["zip_code"], row["bed"], row["bath"]) == ("00601", 3, 2)
    assert (row["brokered_by"], row["price"]) == (103378, 105000.0)
    assert np.isnan(row["acre_lot"]) and np.isnan(row["house_size"])


def test_states_keep_their_canonical_spelling() -> None:
    rows = [{"state": state.upper()} for state in US_STATES]
    assert list(clean(*rows).clean["state"]) == list(US_STATES)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("601", "00601"), ("601.0", "00601"), ("00601", "00601"), (" 2139 ", "02139"),
     ("99501.00", "99501"), ("ABCDE", None), ("123456", None), ("6.5", None), ("0", None),
     ("-601", None), ("02134-1234", "02134"), ("02134-12", None)],
)  # fmt: skip
def test_zip_codes_are_padded_or_dropped(given: str, expected: str | None) -> None:
    result = clean({"zip_code": given})
    assert result.rejects.empty
    assert result.clean.iloc[0]["zip_code"] == expected


def test_duplicates_within_the_batch_keep_the_first() -> None:
    result = clean({}, {"price": "200000"}, {}, {"status": "FOR_SALE", "zip_code": "601"})
    assert list(result.clean["row_index"]) == [0, 1]
    assert list(result.rejects["row_index"]) == [2, 3]
    assert set(result.rejects["reason"]) == {"duplicate_in_batch"}
    assert set(result.rejects["detail"]) == {"listing repeats row 0 of this batch"}


def test_only_clean_rows_count_as_originals() -> None:
    # Row 0 fails a rule; row 1 has the same clean values but stays, not a duplicate of a reject.
    result = clean({"bed": "abc"}, {"bed": None})
    assert result.rejects_by_reason == {"unparseable_number": 1}
    assert list(result.clean["row_index"]) == [1]


def test_row_hash_is_pinned() -> None:
    # CLEAN holds hashes of earlier batches: changing the hash silently breaks de-duplication.
    required_only = {c: None for c in ("brokered_by", "bed", "bath", "acre_lot", "street",
                                       "zip_code", "house_size", "prev_sold_date")}  # fmt: skip
    assert list(clean({}, required_only).clean["row_hash"]) == [
        "e82b15fab85e4dcdedd8bc78491e1fcc",
        "d2d8642e6f57aec4528426150090c109",
    ]


def test_row_hash_ignores_row_index_and_spelling() -> None:
    first = clean({}).clean["row_hash"].iloc[0]
    respelled = frame({"status": "For_Sale ", "zip_code": "601.0", "price": "1.05e5"})
    respelled["row_index"] = [41]
    assert clean_batch(respelled, RULES).clean["row_hash"].iloc[0] == first


VALUE_CHOICES = {
    "brokered_by": [None, "1", "2", "103378"], "status": list(STATUS_VALUES),
    "price": ["1000", "1000.5", "105000"], "bed": [None, "0", "1", "2"], "bath": [None, "1", "2"],
    "acre_lot": [None, "0.12", "0.13", "1"], "street": [None, "1", "2"], "city": ["A", "B", "a"],
    "state": ["Texas", "Ohio"], "zip_code": [None, "00601", "00602"],
    "house_size": [None, "920", "920.5"],
    "prev_sold_date": [None, "2019-06-01", "2019-06-02", "1970-01-01"],
}  # fmt: skip
listings = st.fixed_dictionaries({c: st.sampled_from(v) for c, v in VALUE_CHOICES.items()})


def clean_values(result: CleanResult) -> list[tuple]:
    values = result.clean[list(LISTING_COLUMNS)].astype(object)
    return [tuple(None if pd.isna(v) else v for v in row) for row in values.itertuples(index=False)]


@settings(max_examples=60, deadline=None)
@given(st.lists(listings, min_size=1, max_size=30), st.lists(listings, min_size=1, max_size=30))
def test_row_hashes_are_equal_exactly_when_listings_are(one: list[dict], two: list[dict]) -> None:
    first, second = clean(*one), clean(*two)
    for hash_a, values_a in zip(first.clean["row_hash"], clean_values(first), strict=True):
        for hash_b, values_b in zip(second.clean["row_hash"], clean_values(second), strict=True):
            assert (hash_a == hash_b) == (values_a == values_b)


@settings(max_examples=30, deadline=None)
@given(listings, st.sampled_from(sorted(VALUE_CHOICES)), st.data())
def test_changing_any_one_field_changes_the_hash(listing: dict, column: str, data) -> None:
    other = data.draw(st.sampled_from([v for v in VALUE_CHOICES[column] if v != listing[column]]))
    hashes = clean(listing).clean["row_hash"], clean({**listing, column: other}).clean["row_hash"]
    assert hashes[0].iloc[0] != hashes[1].iloc[0]


def test_dedupe_against_moves_listings_of_earlier_batches() -> None:
    batch = clean({}, {"price": "200000"}, {"price": "300000"}).clean
    kept, rejects = dedupe_against(batch, {batch["row_hash"].iloc[1], "0" * 32})
    assert list(kept["row_index"]) == [0, 2]
    assert tuple(kept.columns) == CLEAN_COLUMNS and str(kept["bed"].dtype) == "Int64"
    assert {c: str(t) for c, t in rejects.dtypes.items()} == REJECT_DTYPES
    assert list(rejects["row_index"]) == [1]
    assert rejects.iloc[0]["reason"] == "duplicate_of_earlier_batch"
    assert batch["row_hash"].iloc[1] in rejects.iloc[0]["detail"]


def test_dedupe_against_nothing_or_everything() -> None:
    batch = clean({}, {"price": "200000"}).clean
    kept, rejects = dedupe_against(batch, set())
    assert kept.equals(batch) and rejects.empty
    assert tuple(rejects.columns) == REJECT_COLUMNS
    kept, rejects = dedupe_against(batch, set(batch["row_hash"]))
    assert kept.empty and len(rejects) == 2


def test_non_text_cells_clean_like_their_text() -> None:
    # A frame read with pandas' default types: floats, NaN and ints instead of str and None.
    as_text = frame({"bed": None})
    as_numbers = as_text.copy()
    as_numbers["bed"] = np.nan
    as_numbers["bath"] = 2
    as_numbers["zip_code"] = 601.0
    expected = clean_batch(as_text, RULES).clean
    assert clean_batch(as_numbers, RULES).clean.equals(expected)


def test_raw_frame_is_left_untouched_and_columns_are_checked() -> None:
    raw = frame({"status": " SOLD "}, {"price": None})
    before = raw.copy()
    clean_batch(raw, RULES)
    pd.testing.assert_frame_equal(raw, before)
    with pytest.raises(ValueError, match="city"):
        clean_batch(raw.drop(columns="city"), RULES)


messy_text = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "nan", "0", "1", "3", "3.0", "-2", "2.5", "1e9", "1.5e5", "inf",
                     "abc", "$1,000", "00601", "601.0", "2019-06-01", "2020-02-30", "2999-01-01",
                     "1850-01-01", "for_sale", " SOLD ", "Texas", " texas ", "Atlantis"]),
    st.text(max_size=8),
)  # fmt: skip
mostly_good = {c: st.one_of(st.just(v), messy_text) for c, v in GOOD.items()}


def assert_clean_rows_obey_the_rules(result: CleanResult) -> None:
    rows = result.clean
    assert rows["price"].between(1_000, 100_000_000).all()
    assert rows["status"].isin(STATUS_VALUES).all() and rows["state"].isin(US_STATES).all()
    assert rows["city"].map(lambda city: isinstance(city, str) and city.strip() == city != "").all()
    for column in ("bed", "bath"):
        assert rows[column].dropna().between(0, 30).all()
    assert rows["house_size"].dropna().between(100, 50_000).all()
    assert rows["acre_lot"].dropna().between(0, 50_000, inclusive="right").all()
    assert rows["zip_code"].dropna().str.fullmatch(r"\d{5}").all()
    dates = rows["prev_sold_date"].dropna()
    assert dates.map(lambda d: type(d) is date and date(1900, 1, 1) <= d <= TODAY).all()
    assert rows["row_hash"].is_unique and rows["row_hash"].str.fullmatch(r"[0-9a-f]{32}").all()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.fixed_dictionaries(mostly_good), max_size=40),
    st.lists(st.fixed_dictionaries({c: messy_text for c in LISTING_COLUMNS}), max_size=10),
)
def test_every_row_is_either_clean_or_rejected(good_ish: list[dict], garbage: list[dict]) -> None:
    raw = frame(*good_ish, *garbage)
    result = clean_batch(raw, RULES)
    clean_ids, reject_ids = result.clean["row_index"], result.rejects["row_index"]
    assert len(result.clean) + len(result.rejects) == len(raw)
    assert sorted([*clean_ids, *reject_ids]) == list(raw["row_index"])
    assert_layout(result)
    assert set(result.rejects["reason"]) <= REASONS
    assert result.rejects["detail"].map(lambda d: isinstance(d, str) and d != "").all()
    assert sum(result.rejects_by_reason.values()) == len(result.rejects)
    assert_clean_rows_obey_the_rules(result)


def test_the_real_sample_cleans_with_a_plausible_reject_rate() -> None:
    with gzip.open(require_sample(), "rt") as handle:
        raw = pd.read_csv(handle, dtype=str, keep_default_na=False).replace("", None)
    raw.insert(0, "row_index", range(len(raw)))
    result = clean_batch(raw, RULES)
    assert len(result.clean) + len(result.rejects) == len(raw)
    assert set(result.clean["row_index"]).isdisjoint(result.rejects["row_index"])
    assert 0.0005 * len(raw) < len(result.rejects) < 0.01 * len(raw)
    reasons = result.rejects_by_reason
    assert {"missing_price", "implausible_price", "missing_city", "absurd_bed"} <= set(reasons)
    assert_layout(result)
    assert_clean_rows_obey_the_rules(result)
    # The sample's fillers and placeholders are the rows the bounds were chosen for.
    price, acre_lot = raw.set_index("row_index")["price"], raw.set_index("row_index")["acre_lot"]
    rejected = set(result.rejects["row_index"])
    assert set(price[price.isin(["1", "10", "445"])].index) <= rejected
    assert set(acre_lot[acre_lot.isin(["99999", "100000"])].index) <= rejected
