"""The listing schema of the realtor.com "USA Real Estate" data, shared by every component,
and the one parser of each field (docs/cleaning.md#one-parser-per-field).

A listing's value reaches realty three ways: as delivered text (RAW → CLEAN), as typed CLEAN
values (training), and as whatever a client posts (serving: numbers for text, text for
numbers). Each ``*_value`` function below reads one value of one field in all those forms,
and cleaning (over a batch's distinct values), feature preparation (over a column's distinct
values) and serving (value by value) all call it, so the three cannot read a field two ways.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime

import numpy as np
import pandas as pd

# Column order of the data API and of the Kaggle file (newer schema).
LISTING_COLUMNS: tuple[str, ...] = (
    "brokered_by",
    "status",
    "price",
    "bed",
    "bath",
    "acre_lot",
    "street",
    "city",
    "state",
    "zip_code",
    "house_size",
    "prev_sold_date",
)

STATUS_VALUES: tuple[str, ...] = ("for_sale", "sold", "ready_to_build")

# A zip code as delivered or posted: 601 or 601.0 (a float lost the leading zeros of "00601"),
# 00601, or ZIP+4 02134-1234; its digits, padded to five, are the zip. The one rule cleaning,
# training and serving read zip codes by (each applies it vectorised its own way).
ZIP_CODE_PATTERN = r"^(?P<digits>\d{1,5})(?:\.0*|-\d{4})?$"

# States and territories that appear in the dataset (50 states, DC and 5 territories).
US_STATES: tuple[str, ...] = (
    "Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado", "Connecticut",
    "Delaware", "District of Columbia", "Florida", "Georgia", "Hawaii", "Idaho", "Illinois",
    "Indiana", "Iowa", "Kansas", "Kentucky", "Louisiana", "Maine", "Maryland", "Massachusetts",
    "Michigan", "Minnesota", "Mississippi", "Missouri", "Montana", "Nebraska", "Nevada",
    "New Hampshire", "New Jersey", "New Mexico", "New York", "North Carolina", "North Dakota",
    "Ohio", "Oklahoma", "Oregon", "Pennsylvania", "Rhode Island", "South Carolina",
    "South Dakota", "Tennessee", "Texas", "Utah", "Vermont", "Virginia", "Washington",
    "West Virginia", "Wisconsin", "Wyoming",
    "Puerto Rico", "Virgin Islands", "Guam", "New Brunswick",
)  # fmt: skip

STATE_BY_KEY = {state.lower(): state for state in US_STATES}
# Text that means "no value": empty, and what a float NaN or a null becomes when written out.
NULL_TEXTS = frozenset(["", "nan", "NaN", "NAN", "None", "<NA>"])
MAX_ID = 2**53  # float64 holds every whole number up to here exactly
_WHITESPACE = re.compile(r"\s+")
# Number-shaped text: 3, -2.5, .5, 1.5e5 (ASCII digits only: float() also reads "٣").
NUMBER_PATTERN = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_NUMBER = re.compile(NUMBER_PATTERN, re.ASCII)
_ZIP_CODE = re.compile(ZIP_CODE_PATTERN, re.ASCII)
# YYYY-MM-DD, alone or with a time of day (JSON clients send timestamps), which is ignored.
_ISO_DATE = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
    re.ASCII,
)
# Dates pandas' datetime64[ns] can hold: the same listing gives the same date in a frame.
OLDEST_DATE = pd.Timestamp.min.ceil("D").date()
NEWEST_DATE = pd.Timestamp.max.floor("D").date()


def is_number(value: object) -> bool:
    """An int or float (numpy's too), not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def text_value(value: object) -> str | None:
    """Text stripped, with runs of whitespace folded to one space; None for null or
    ``NULL_TEXTS``. Status, city and street names are read by it."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    text = _WHITESPACE.sub(" ", str(value).strip())
    return None if text in NULL_TEXTS else text


def status_value(value: object) -> str | None:
    """The status in lower case (``STATUS_VALUES`` are the known ones)."""
    text = text_value(value)
    return text.lower() if text is not None else None


def number_value(value: object) -> float:
    """A finite number, or number-shaped text (``NUMBER_PATTERN``: "1.5e5", " 3 "); NaN
    otherwise (a bool too)."""
    if is_number(value):
        number = float(value)
    elif isinstance(value, bool | np.bool_):
        return math.nan
    else:
        text = text_value(value)
        number = float(text) if text is not None and _NUMBER.match(text) else math.nan
    return number if math.isfinite(number) else math.nan


def id_value(value: object) -> str | None:
    """A whole number from 0 to ``MAX_ID`` as its decimal text ("103378.0" → "103378")."""
    number = number_value(value)
    if 0 <= number < MAX_ID and math.floor(number) == number:
        return str(int(number))
    return None


def state_value(value: object) -> str | None:
    """The state as spelled in ``US_STATES`` whatever its case or spacing; None if not one."""
    text = text_value(value)
    return STATE_BY_KEY.get(text.lower()) if text is not None else None


def zip_code_value(value: object) -> str | None:
    """Five-digit zip text: 601, 601.0, "00601" and ZIP+4 "00601-1234" are "00601"; anything
    else, and "00000", is None."""
    text = text_value(id_value(value) if is_number(value) else value)
    match = _ZIP_CODE.match(text) if text is not None else None
    if match is None:
        return None
    digits = match.group("digits").zfill(5)
    return None if digits == "00000" else digits


def date_value(value: object) -> date | None:
    """A date, a timestamp (its wall-clock date) or YYYY-MM-DD text (a time of day after it is
    ignored), within ``OLDEST_DATE``..``NEWEST_DATE``; None otherwise ("2019-6-1" too)."""
    if value is pd.NaT:  # a datetime whose .date() is not a date
        return None
    if isinstance(value, datetime):
        parsed = value.date()
    elif isinstance(value, date):
        parsed = value
    else:
        text = text_value(value)
        match = _ISO_DATE.fullmatch(text) if text is not None else None
        try:
            parsed = date.fromisoformat(match.group(1)) if match else None
        except ValueError:  # 2019-02-30
            return None
    return parsed if parsed is not None and OLDEST_DATE <= parsed <= NEWEST_DATE else None


def listing_identity(listing: object) -> str | None:
    """The place a listing is, as one key: street id, city (lower case), state and zip code,
    each read by its parser; None without a street, city and state (too vague to be one house).
    A prediction and the sale that comes back later are joined by it (realty/labels.py)."""
    get = listing.get  # a dict of fields, or a row of a frame
    street, city, state = (
        id_value(get("street")),
        text_value(get("city")),
        state_value(get("state")),
    )
    if street is None or city is None or state is None:
        return None
    return f"{street}|{city.lower()}|{state}|{zip_code_value(get('zip_code')) or ''}"
