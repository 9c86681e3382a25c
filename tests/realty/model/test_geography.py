"""The zip-code tables come from installed packages, with no network."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest

from realty.model import geography
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
    assert geography.UNKNOWN_PLACE[len(PLACE_NUMBERS) :] == (None, None)
