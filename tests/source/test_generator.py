"""The built-in generator: deterministic, shaped like the real data, drifting like the source."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from realty.schema import LISTING_COLUMNS, US_STATES
from source import calibration as cal
from source.calibrate import measure, render
from source.generator import generate_batch
from tests.conftest import require_sample

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def frame(rows: list[list]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(LISTING_COLUMNS), dtype=object)  # values as made


def numbers(data: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(data[column], errors="coerce")


@pytest.fixture(scope="module")
def ten_batches() -> pd.DataFrame:
    """All ten batches of one group and day, 5,000 rows each, with their batch number."""
    return pd.concat(
        frame(generate_batch(1, "Tuesday", b, 5_000, 10)).assign(batch=b) for b in range(1, 11)
    )


@pytest.fixture(scope="module")
def big_batch() -> tuple[list[list], float]:
    started = time.perf_counter()
    rows = generate_batch(3, "Wednesday", 4, 300_000, 10)
    return rows, time.perf_counter() - started


def test_same_group_and_day_give_the_same_batch() -> None:
    assert generate_batch(1, "Tuesday", 2, 1_000, 10) == generate_batch(1, "Tuesday", 2, 1_000, 10)
    # Days are compared without case or surrounding blanks, as the batch keys do.
    assert generate_batch(1, " tuesday", 2, 1_000, 10) == generate_batch(1, "Tuesday", 2, 1_000, 10)


def test_other_day_group_or_batch_give_other_rows() -> None:
    batch = generate_batch(1, "Tuesday", 2, 1_000, 10)
    assert generate_batch(1, "Wednesday", 2, 1_000, 10) != batch
    assert generate_batch(2, "Tuesday", 2, 1_000, 10) != batch
    assert generate_batch(1, "Tuesday", 3, 1_000, 10) != batch


def test_batch_number_outside_the_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match=r"1\.\.10"):
        generate_batch(1, "Tuesday", 11, 10, 10)


def test_rows_have_the_listing_shape(ten_batches: pd.DataFrame) -> None:
    assert set(ten_batches.state) <= set(US_STATES)
    prices = ten_batches.price.dropna()
    assert prices.map(type).eq(int).all()
    assert ten_batches.zip_code.dropna().map(lambda z: isinstance(z, float) or len(z) == 5).all()
    dates = ten_batches.prev_sold_date.dropna()
    assert dates.map(lambda d: bool(ISO_DATE.fullmatch(d))).mean() > 0.99
    cities = ten_batches.groupby("state").city.unique()
    assert set(cities["Massachusetts"]) <= {city for city, _, _ in cal.CITIES["Massachusetts"]}


def test_missing_rates_follow_the_calibration(ten_batches: pd.DataFrame) -> None:
    status, land = cal.STATUS_SHARES, cal.LAND_SHARES
    land_share = sum(status[s] * land[s] for s in status)
    house = cal.MISSING_RATES["house"]
    expected = {
        **cal.MISSING_RATES["any"],
        "bed": land_share + (1 - land_share) * house["bed"],
        "bath": land_share + (1 - land_share) * house["bath"],
        "house_size": land_share + (1 - land_share) * house["house_size"],
        "prev_sold_date": status["ready_to_build"]
        + status["for_sale"] * cal.MISSING_RATES["prev_sold_date_for_sale"],
    }
    observed = ten_batches[list(LISTING_COLUMNS)].isna().mean()
    for column, rate in expected.items():
        assert observed[column] == pytest.approx(rate, abs=0.01 if rate > 0.05 else 0.003), column
    assert observed.state == observed.status == 0


def test_status_mix_follows_the_calibration(ten_batches: pd.DataFrame) -> None:
    shares = ten_batches.status.value_counts(normalize=True)
    for status, share in cal.STATUS_SHARES.items():
        assert shares[status] == pytest.approx(share, abs=0.02)


def test_prices_follow_each_state(ten_batches: pd.DataFrame) -> None:
    houses = ten_batches.assign(price=numbers(ten_batches, "price"))
    houses = houses[houses.house_size.notna() & houses.price.gt(1_000)]
    per_sqft = (houses.price / houses.house_size.astype(float)).groupby(houses.state).median()
    median = houses.price.groupby(houses.state).median()
    crowded = houses.state.value_counts()
    for state in crowded[crowded >= 300].index:
        assert per_sqft[state] == pytest.approx(cal.STATES[state][2], rel=0.35), state
        assert 4.5 < np.log10(median[state]) < 6.5, state  # hundreds of thousands of dollars
    assert median.get("California", 0) > 1.5 * median.get("Ohio", np.inf)


def test_rooms_size_and_price_move_together(ten_batches: pd.DataFrame) -> None:
    data = ten_batches[["bed", "bath", "house_size", "price"]].apply(pd.to_numeric)
    data = data[data.price.gt(1_000) & data.bed.lt(20)].dropna()
    logs = np.log(data)
    assert logs.house_size.corr(logs.bed) > 0.5
    assert logs.house_size.corr(logs.bath) > 0.6
    assert 0.35 < logs.price.corr(logs.house_size) < 0.8


def test_batches_drift_across_states_and_status(ten_batches: pd.DataFrame) -> None:
    mix = pd.crosstab(ten_batches.batch, ten_batches.state, normalize="index")
    first, last = mix.loc[1], mix.loc[10]
    assert (first - last).abs().sum() / 2 > 0.8  # total variation distance
    north_east = {"New York", "New Jersey", "Connecticut", "Massachusetts", "Puerto Rico"}
    assert first[list(north_east & set(mix.columns))].sum() > 0.4
    assert first.nlargest(5).sum() > 0.7  # a few states at a time
    sold = ten_batches.status.eq("sold").groupby(ten_batches.batch).mean()
    assert sold[1] < 0.05 and sold[10] > 0.9  # for-sale listings first, sold ones last


def test_dirt_is_present_at_small_rates(big_batch: tuple[list[list], float]) -> None:
    data = frame(big_batch[0])
    rows = len(data)
    price = numbers(data, "price")
    share = {
        "placeholder price": price.le(1).mean(),
        "zero lot": numbers(data, "acre_lot").eq(0).mean(),
        "absurd baths": numbers(data, "bath").ge(20).mean(),
        "unknown status": (~data.status.isin(cal.STATUS_SHARES)).mean(),
        "bad date": data.prev_sold_date.dropna().map(lambda d: not ISO_DATE.fullmatch(d)).sum()
        / rows,
        "float ids": data.brokered_by.map(lambda v: isinstance(v, float)).mean(),
        "duplicates": data.astype(str).duplicated().mean(),
    }
    for kind, value in share.items():
        assert 0 < value < 0.06, kind
    assert share["duplicates"] == pytest.approx(cal.DIRT_RATES["duplicate"], abs=0.002)
    assert data.zip_code.map(lambda z: isinstance(z, float)).mean() > 0.04


def test_three_hundred_thousand_rows_in_a_few_seconds(
    big_batch: tuple[list[list], float],
) -> None:
    rows, seconds = big_batch
    assert len(rows) == 300_000 and all(len(row) == len(LISTING_COLUMNS) for row in rows)
    assert seconds < 6  # about 0.8 s on 2 cores; generous for loaded CI machines


def test_calibration_is_what_the_script_measures_on_the_sample() -> None:
    """source/calibration.py is generated, not hand-tuned: rerunning the script on the real
    sample writes it again byte for byte."""
    assert render(measure(require_sample())) == Path(cal.__file__).read_text()
