"""The zip-code tables come from installed packages, with no network."""

from __future__ import annotations

import math
import socket

import numpy as np
import pandas as pd
import pytest

from realty.model.features import (
    CATEGORICAL_FEATURES,
    MISSING,
    NUMERIC_FEATURES,
    feature_rows,
    prepare_features,
)
from realty.model.geography import PLACE_CODES, PLACE_NUMBERS, place_lookup, zip_places


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Fresh tables, built while any socket refuses to open."""

    def refuse(*args, **kwargs):
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    zip_places.cache_clear()
    place_lookup.cache_clear()
    yield
    zip_places.cache_clear()
    place_lookup.cache_clear()


def test_every_zip_code_has_a_place_read_offline(no_network) -> None:
    places = zip_places()
    assert list(places.columns) == [*PLACE_NUMBERS, *PLACE_CODES]
    assert len(places) > 40_000 and places.index.str.fullmatch(r"\d{5}").all()
    concord = places.loc["03301"]  # Concord, New Hampshire: Merrimack County, Concord CBSA
    assert concord["lat"] == pytest.approx(43.2, abs=0.1)
    assert concord["lon"] == pytest.approx(-71.5, abs=0.1)
    assert (concord["county"], concord["cbsa"]) == ("33013", "18180")
    # County codes keep their leading zero: Los Angeles County is 06037, not 6037.
    assert places.loc["90012", "county"] == "06037"
    wages = np.exp(places["log_county_wage"].dropna())
    assert wages.min() > 300 and wages.max() < 5_000  # dollars a week
    assert places.loc["90012", "log_county_jobs"] > places.loc["03301", "log_county_jobs"]
    assert places[["lat", "lon"]].notna().all().all()
    assert places["log_county_wage"].notna().mean() > 0.9


def test_the_lookup_holds_the_tables_values(no_network) -> None:
    places, lookup = zip_places(), place_lookup()
    assert set(lookup) == set(places.index)
    for zip_code in ("03301", "00601", "99501", "00544"):
        row = places.loc[zip_code]
        expected = (*row[list(PLACE_NUMBERS)].astype(float), *row[list(PLACE_CODES)])
        for value, want in zip(lookup[zip_code], expected, strict=True):
            assert value == want or (math.isnan(value) and math.isnan(want))


def test_a_zip_code_the_tables_do_not_know_has_no_place(no_network) -> None:
    """Both preparations give an unknown zip code NaN numbers and MISSING codes."""
    listing = {"status": "sold", "city": "Nowhere", "state": "Maine", "zip_code": "00000"}
    assert "00000" not in place_lookup()
    numbers, [categories] = feature_rows([listing])
    frame = prepare_features(pd.DataFrame([listing]))
    for name in PLACE_NUMBERS:
        assert np.isnan(numbers[0, NUMERIC_FEATURES.index(name)]) and frame[name].isna().all()
    for name in PLACE_CODES:
        assert categories[CATEGORICAL_FEATURES.index(name)] == MISSING == frame[name].iloc[0]
