"""Feature preparation: one frame layout whatever form the listing fields arrive in."""

from __future__ import annotations

import pickle
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realty.ingest.cleaning import CleaningRules, clean_batch
from realty.model.features import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    LOCATION_COLUMNS,
    MISSING,
    NUMERIC_FEATURES,
    REQUIRED_FIELDS,
    FeatureConfig,
    LocationEncoder,
    feature_rows,
    prepare_features,
)
from realty.schema import LISTING_COLUMNS

RAW = [
    {
        "brokered_by": "103378", "status": "for_sale", "price": "105000", "bed": "3",
        "bath": "2", "acre_lot": "0.12", "street": "1962661", "city": "Adjuntas",
        "state": "Puerto Rico", "zip_code": "00601", "house_size": "920",
        "prev_sold_date": "2019-06-01",
    },
    {
        "brokered_by": None, "status": "sold", "price": "450000", "bed": None, "bath": "1",
        "acre_lot": "0", "street": None, "city": "Fall River", "state": "Massachusetts",
        "zip_code": "02720", "house_size": None, "prev_sold_date": None,
    },
    {
        "brokered_by": "22611", "status": "ready_to_build", "price": "1250000", "bed": "5",
        "bath": "4", "acre_lot": None, "street": "5", "city": "Austin", "state": "Texas",
        "zip_code": None, "house_size": "3400", "prev_sold_date": "1999-12-31",
    },
]  # fmt: skip
CONFIG = FeatureConfig(reference_date=date(2024, 1, 1))
# Every numeric feature but the count of unknown facts is unknown when its fields are.
KNOWN_ONLY_FROM_FIELDS = [name for name in NUMERIC_FEATURES if name != "facts_missing"]


def raw_frame(rows: list[dict] = RAW) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(LISTING_COLUMNS))


def clean_frame() -> pd.DataFrame:
    raw = raw_frame()
    raw.insert(0, "row_index", range(len(raw)))
    result = clean_batch(raw, CleaningRules(today=date(2024, 6, 30)))
    assert len(result.clean) == len(raw)
    return result.clean


def test_the_frame_has_the_documented_columns_and_dtypes() -> None:
    features = prepare_features(clean_frame(), CONFIG)
    assert tuple(features.columns) == FEATURE_COLUMNS == NUMERIC_FEATURES + CATEGORICAL_FEATURES
    assert all(features[c].dtype == np.float32 for c in NUMERIC_FEATURES)
    assert all(features[c].dtype == object for c in CATEGORICAL_FEATURES)
    assert features[list(CATEGORICAL_FEATURES)].map(lambda v: isinstance(v, str)).all().all()


def test_values_are_the_documented_transformations() -> None:
    features = prepare_features(clean_frame(), CONFIG)
    first, second, third = (features.iloc[i] for i in range(3))
    assert first["log_house_size"] == pytest.approx(np.log(920), rel=1e-6)
    assert first["log_acre_lot"] == pytest.approx(np.log1p(0.12), rel=1e-6)
    years = (date(2024, 1, 1) - date(2019, 6, 1)).days / 365.25
    assert first["years_since_sold"] == pytest.approx(years, rel=1e-6)
    assert third["years_since_sold"] == pytest.approx(24.0, abs=0.01)
    assert (first["zip_code"], first["zip3"], first["zip_number"]) == ("00601", "006", 601.0)
    assert first["city"] == "Puerto Rico|Adjuntas"
    assert first["brokered_by"] == "103378"
    assert first["facts_missing"] == 0
    # A 0-acre lot is unknown (as CLEAN stores it); unknown facts are NaN and counted.
    unknown = ["bed", "log_house_size", "log_acre_lot", "years_since_sold"]
    assert np.isnan(second[unknown].astype(float)).all()
    assert second["facts_missing"] == 3
    assert second["brokered_by"] == MISSING
    assert (third["zip_code"], third["zip3"]) == (MISSING, MISSING)
    assert np.isnan(third["zip_number"])


def test_the_reference_date_comes_from_the_config() -> None:
    later = FeatureConfig(reference_date=date(2026, 1, 1))
    a = prepare_features(clean_frame(), CONFIG)["years_since_sold"]
    b = prepare_features(clean_frame(), later)["years_since_sold"]
    assert b.iloc[0] - a.iloc[0] == pytest.approx(2.0, abs=0.01)


def test_clean_rows_raw_text_and_client_numbers_give_identical_features() -> None:
    from_clean = prepare_features(clean_frame(), CONFIG)
    from_text = prepare_features(raw_frame(), CONFIG)
    # What a JSON client or pandas.read_csv sends: ids, zips and rooms as floats, dates as
    # date objects, text in another case and spacing, the price and extra keys along.
    client = raw_frame().drop(columns=["price"])
    for name in ("brokered_by", "bed", "bath", "acre_lot", "street", "house_size"):
        client[name] = pd.to_numeric(client[name]).astype("float64")
    client["zip_code"] = [601.0, 2720.0, np.nan]
    client["prev_sold_date"] = [date(2019, 6, 1), None, pd.Timestamp("1999-12-31 10:30")]
    client["state"] = ["  puerto rico", "MASSACHUSETTS", "texas "]
    client["city"] = ["Adjuntas ", "Fall   River", " Austin"]
    client["status"] = ["FOR_SALE", " Sold", "ready_to_build"]
    client["extra"] = "ignored"
    from_client = prepare_features(client, CONFIG)
    pd.testing.assert_frame_equal(from_clean.reset_index(drop=True), from_text)
    pd.testing.assert_frame_equal(from_text, from_client)


def test_optional_fields_may_be_left_out_but_required_ones_may_not() -> None:
    minimal = pd.DataFrame([{"status": "for_sale", "city": "Austin", "state": "Texas"}])
    features = prepare_features(minimal, CONFIG)
    assert tuple(features.columns) == FEATURE_COLUMNS
    assert features[KNOWN_ONLY_FROM_FIELDS].isna().all().all()
    assert features.loc[0, "facts_missing"] == 4
    assert features.loc[0, "city"] == "Texas|Austin"
    for field in REQUIRED_FIELDS:
        with pytest.raises(ValueError, match=field):
            prepare_features(minimal.drop(columns=[field]), CONFIG)


def test_unreadable_values_count_as_unknown() -> None:
    garbage = pd.DataFrame(
        [
            {
                "status": None, "city": "  ", "state": "Atlantis", "bed": "three",
                "bath": "inf", "house_size": "-5", "acre_lot": "lots", "zip_code": "ABC",
                "brokered_by": "1.5", "prev_sold_date": "28-02-2020",
            }
        ]
    )  # fmt: skip
    features = prepare_features(garbage, CONFIG)
    assert features[KNOWN_ONLY_FROM_FIELDS].isna().all().all()
    row = features.iloc[0]
    assert row["state"] == "Atlantis"  # an unknown category, not an error
    assert (row["status"], row["city"], row["zip_code"], row["brokered_by"]) == (MISSING,) * 4


def test_an_empty_frame_keeps_the_layout() -> None:
    empty = prepare_features(raw_frame([]).astype(object), CONFIG)
    assert empty.empty
    assert tuple(empty.columns) == FEATURE_COLUMNS
    assert all(empty[c].dtype == np.float32 for c in NUMERIC_FEATURES)


numbers = st.one_of(
    st.none(), st.integers(0, 30).map(float), st.floats(0.01, 5_000, allow_nan=False)
)


@settings(max_examples=40, deadline=None)
@given(
    bed=numbers,
    size=numbers,
    lot=numbers,
    zip_code=st.one_of(st.none(), st.integers(1, 99_999)),
    broker=st.one_of(st.none(), st.integers(0, 2**40)),
    sold=st.one_of(st.none(), st.dates(date(1901, 1, 1), date(2024, 1, 1))),
)
def test_numbers_and_their_text_give_the_same_features(bed, size, lot, zip_code, broker, sold):
    typed = {
        "status": "sold", "city": "Austin", "state": "Texas", "bed": bed, "house_size": size,
        "acre_lot": lot, "zip_code": None if zip_code is None else float(zip_code),
        "brokered_by": None if broker is None else float(broker), "prev_sold_date": sold,
    }  # fmt: skip
    as_text = {
        k: v.isoformat() if isinstance(v, date) else v if v is None else str(v)
        for k, v in typed.items()
    }
    pd.testing.assert_frame_equal(
        prepare_features(pd.DataFrame([typed]), CONFIG),
        prepare_features(pd.DataFrame([as_text]), CONFIG),
    )


# ---------------------------------------------------------------- LocationEncoder


def location_frame() -> tuple[pd.DataFrame, np.ndarray]:
    places = [
        ("02720", "Fall River", "Massachusetts", 12.0),
        ("02720", "Fall River", "Massachusetts", 12.2),
        ("02721", "Fall River", "Massachusetts", 12.4),
        ("02134", "Boston", "Massachusetts", 13.5),
        ("73301", "Austin", "Texas", 12.9),
        ("73301", "Austin", "Texas", 13.1),
    ]
    frame = pd.DataFrame(places, columns=["zip_code", "city", "state", "log_price"])
    frame = frame.assign(status="sold", house_size=1_500, price=np.exp(frame["log_price"]))
    return prepare_features(frame, CONFIG), np.log(frame["price"].to_numpy())


def test_location_encoding_falls_back_to_coarser_places() -> None:
    features, log_price = location_frame()
    encoder = LocationEncoder(smoothing=1.0).fit(features, log_price)
    new = prepare_features(
        pd.DataFrame(
            [
                {"status": "sold", "city": "Fall River", "state": "Massachusetts",
                 "zip_code": "02720"},
                {"status": "sold", "city": "Fall River", "state": "Massachusetts",
                 "zip_code": "02799"},
                {"status": "sold", "city": "Nowhere", "state": "Massachusetts",
                 "zip_code": "99999"},
                {"status": "sold", "city": "Nowhere", "state": "Atlantis"},
            ]
        ),
        CONFIG,
    )  # fmt: skip
    encoded = encoder.transform(new)
    assert list(encoded.columns) == [*FEATURE_COLUMNS, *LocationEncoder.ADDED_COLUMNS]
    known_zip, known_city, known_state, unknown = encoded["loc_log_price"]
    # An unseen zip code keeps its city's level; an unseen city its state's; else national.
    assert known_zip < known_city < known_state  # Fall River is cheaper than Boston
    assert unknown == pytest.approx(np.mean(log_price), abs=1e-5)
    assert encoded["loc_rows"].tolist() == [2, 0, 0, 0]
    assert np.isfinite(encoded["loc_log_ppsf"]).all()


def test_training_rows_are_encoded_without_their_own_price() -> None:
    features, log_price = location_frame()
    features = pd.concat([features] * 4, ignore_index=True)
    log_price = np.concatenate([log_price + shift for shift in (0.0, 0.1, -0.1, 0.05)])
    encoder = LocationEncoder(smoothing=1.0, cv=4)
    out_of_fold = encoder.fit_transform(features, log_price)
    in_sample = encoder.transform(features)
    assert not np.allclose(out_of_fold["loc_log_price"], in_sample["loc_log_price"])
    again = LocationEncoder(smoothing=1.0, cv=4).fit_transform(features, log_price)
    pd.testing.assert_frame_equal(out_of_fold, again)  # seeded folds: reproducible


def test_a_new_zip_code_borrows_the_price_level_of_the_zip_codes_around_it() -> None:
    """Cambridge (02139) and Bangor (04401) are unseen: each is priced like its neighbours,
    wherever the city and zip-code levels know nothing."""
    rows = [("02138", "Cambridge", 14.0), ("02140", "Cambridge", 14.2)]
    rows += [("04401", "Bangor", 11.9), ("04412", "Brewer", 12.1)]
    frame = pd.DataFrame(rows, columns=["zip_code", "city", "log_price"])
    frame = frame.assign(status="sold", state="Massachusetts", price=np.exp(frame["log_price"]))
    frame.loc[2:, "state"] = "Maine"
    encoder = LocationEncoder(neighbours=2).fit(prepare_features(frame, CONFIG), frame["log_price"])
    new = pd.DataFrame(
        [
            {"status": "sold", "city": "Somerville", "state": "Massachusetts", "zip_code": "02143"},
            {"status": "sold", "city": "Orono", "state": "Maine", "zip_code": "04473"},
            {"status": "sold", "city": "Nowhere", "state": "Maine", "zip_code": "00000"},
        ]
    )
    encoded = encoder.transform(prepare_features(new, CONFIG))
    near_boston, near_bangor, nowhere = encoded["nearby_log_price"]
    assert near_boston == pytest.approx(14.1, abs=1e-5)  # the two Cambridge zip codes
    assert near_bangor == pytest.approx(12.0, abs=1e-5)
    assert nowhere == pytest.approx(frame["log_price"].mean(), abs=1e-5)  # no place: national
    km = encoded["nearest_km"].to_numpy()
    assert 0 < km[0] < 5 and 0 < km[1] < 20 and np.isnan(km[2])
    numbers, categories = feature_rows(new.to_dict("records"), CONFIG)
    expected = encoded[list(encoder.added_columns)].to_numpy()
    np.testing.assert_array_equal(encoder.encode_rows(numbers, categories), expected)
    # Again, now from the places remembered, in another order with a repeat; and once more
    # after a pickle round trip, which carries no memo.
    order = [2, 1, 1, 0]
    again = encoder.encode_rows(numbers[order], [categories[row] for row in order])
    np.testing.assert_array_equal(again, expected[order])
    unpickled = pickle.loads(pickle.dumps(encoder))
    assert not hasattr(unpickled.tables_["nearby"], "_memo")
    np.testing.assert_array_equal(unpickled.encode_rows(numbers, categories), expected)


def test_an_encoder_without_neighbours_adds_the_location_columns_only() -> None:
    features, log_price = location_frame()
    encoded = LocationEncoder(neighbours=0).fit_transform(features, log_price)
    assert list(encoded.columns) == [*FEATURE_COLUMNS, *LOCATION_COLUMNS]
