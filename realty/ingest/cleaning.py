"""Cleaning rules: raw listing rows (text as delivered) → typed CLEAN rows + rejects with reasons.

Every raw row ends in exactly one of the two outputs, so raw = clean + rejected always holds.
A row is rejected by the first rule it fails, in this order (docs/cleaning.md says why):

| # | code | rejects a row whose ... |
|---|---|---|
| 1 | missing_price | price is empty |
| 2 | unparseable_number | price, brokered_by, bed, bath, acre_lot, street or house_size |
|   |                    | (checked in that order) is not a finite number |
| 3 | implausible_price | price is below min_price (1,000 USD) or above max_price (100M USD) |
| 4 | unknown_status | status is empty or not for_sale, sold or ready_to_build |
| 5 | unknown_state | state is empty or not in ``realty.schema.US_STATES`` |
| 6 | missing_city | city is empty |
| 7 | invalid_id | brokered_by or street is not a whole number from 0 to 2**53 |
| 8 | absurd_bed | bed is not a whole number from 0 to max_rooms (30) |
| 9 | absurd_bath | bath is not a whole number from 0 to max_rooms (30) |
| 10 | absurd_house_size | house_size is outside min_house_size-max_house_size (100-50,000 sq ft) |
| 11 | absurd_acre_lot | acre_lot is negative or above max_acre_lot (50,000 acres) |
| 12 | future_date | prev_sold_date (YYYY-MM-DD) is after the rules' today |
| 13 | implausible_date | prev_sold_date (YYYY-MM-DD) is before min_sold_date (1900-01-01) |
| 14 | unparseable_date | prev_sold_date is not a YYYY-MM-DD calendar date (a time may follow) |
| 15 | duplicate_in_batch | its twelve clean values equal an earlier clean row's in the batch |

``dedupe_against`` adds ``duplicate_of_earlier_batch`` for listings an earlier batch delivered.

Normalised, never rejected: surrounding whitespace; empty or "nan" text → missing; status lower
case; state spelled as in US_STATES whatever its case or spacing; runs of whitespace in city →
one space; zip code "601", "601.0" or ZIP+4 "00601-1234" → "00601", any other zip → null;
whole floats for ids and rooms ("3.0" → 3); a 0-acre lot → null (the source writes 0 for
condos and unknown lots). Optional fields (all but status, price, city, state) may be missing.
Each field is read by its realty.schema parser (docs/cleaning.md#one-parser-per-field).

``row_hash`` identifies a listing by its twelve clean values (not row_index): 128 bits folded
from per-value fingerprints with splitmix64's finaliser, the same in every batch, process and
library version (docs/cleaning.md defines it).

Pure (no I/O, no state) and vectorised with pyarrow compute and numpy. Each column is
dictionary-encoded once and every rule judges each distinct value once, since a batch repeats
its statuses, states, cities, zip codes, room counts and dates; rows then look their verdicts up.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from realty.schema import (
    LISTING_COLUMNS,
    MAX_ID,
    NULL_TEXTS,
    NUMBER_PATTERN,
    STATUS_VALUES,
    date_value,
    state_value,
    status_value,
    text_value,
    zip_code_value,
)

CLEAN_COLUMNS: tuple[str, ...] = ("row_index", *LISTING_COLUMNS, "row_hash")
REJECT_COLUMNS: tuple[str, ...] = ("row_index", "reason", "detail")

NUMERIC_COLUMNS = ("price", "brokered_by", "bed", "bath", "acre_lot", "street", "house_size")
INTEGER_COLUMNS = ("brokered_by", "bed", "bath", "street")
ID_COLUMNS = ("brokered_by", "street")
TEXT_COLUMNS = ("status", "city", "state", "zip_code")

_MISSING_TEXTS = pa.array(sorted(NULL_TEXTS))
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
_STATUSES = pa.array(STATUS_VALUES)
_SHOWN_CHARS = 40  # a reject's detail quotes the offending value up to this length
# row_hash: two 64-bit lanes, each folding the twelve values' fingerprints in column order.
_SEEDS = (0x243F6A8885A308D3, 0x13198A2E03707344)  # digits of pi: nothing up the sleeve
_LANE_KEY = 0xA4093822299F31D0  # makes a number's second-lane fingerprint differ from its first
_NULL_INTEGER = -(2**63)


@dataclass(frozen=True)
class CleaningRules:
    min_price: float = 1_000
    max_price: float = 100_000_000
    max_rooms: int = 30
    min_house_size: float = 100
    max_house_size: float = 50_000
    max_acre_lot: float = 50_000
    # Dates parse to datetime64[ns], which starts in 1678: a lower bound must stay above it.
    min_sold_date: date = date(1900, 1, 1)
    today: date | None = None  # None: the day clean_batch runs

    @property
    def reference_date(self) -> date:
        return self.today or date.today()


@dataclass(frozen=True)
class CleanResult:
    clean: pd.DataFrame
    rejects: pd.DataFrame

    @property
    def rejects_by_reason(self) -> dict[str, int]:
        counts = self.rejects["reason"].value_counts()
        return {str(reason): int(count) for reason, count in counts.items()}


class _Column(NamedTuple):
    """A raw column as its distinct trimmed values (null: missing) and each row's position
    among them, so that rules judge each distinct value once."""

    distinct: pa.Array
    rows: np.ndarray


class _Check(NamedTuple):
    code: str
    column: str
    fails: np.ndarray  # per distinct value of the column
    why: str


def _arrow_text(values: pd.Series) -> pa.Array:
    try:
        return pa.array(values.to_numpy(dtype=object), type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # not all str or None (NaN, numbers)
        return pa.array(values.astype("string"), type=pa.string())


def _column(values: pd.Series) -> _Column:
    text = _arrow_text(values)
    if values.name in ID_COLUMNS:  # nearly one value per row: encoding would cost, not save
        distinct, rows = text, np.arange(len(text))
    else:
        encoded = pc.dictionary_encode(text, null_encoding="encode")
        distinct, rows = encoded.dictionary, encoded.indices.to_numpy()
    distinct = pc.utf8_trim_whitespace(distinct)
    return _Column(pc.if_else(pc.is_in(distinct, _MISSING_TEXTS), None, distinct), rows)


def _mask(condition: pa.Array) -> np.ndarray:
    return pc.fill_null(condition, False).to_numpy(zero_copy_only=False)


def _numbers(text: pa.Array) -> np.ndarray:
    """float64 of number-shaped text (1.5e5 too), NaN otherwise; "inf" stays infinite."""
    try:
        numbers = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:  # one bad value fails the whole cast: keep only number shapes
        numbers = pc.cast(
            pc.if_else(pc.match_substring_regex(text, NUMBER_PATTERN), text, None), pa.float64()
        )
    return numbers.to_numpy(zero_copy_only=False)


def _each(distinct: pa.Array, parse: Callable[[object], object], kind: pa.DataType) -> pa.Array:
    """A realty.schema parser applied to each distinct value of a column (null stays null)."""
    return pa.array([parse(v) if v is not None else None for v in distinct.to_pylist()], kind)


@dataclass(frozen=True)
class _Parsed:
    """Per column, its distinct values as delivered, as numbers and as CLEAN would store them."""

    columns: dict[str, _Column]
    numbers: dict[str, np.ndarray]  # NUMERIC_COLUMNS as float64; NaN if missing or unparseable
    values: dict[str, pa.Array]  # typed clean value; null if missing (or failing a rule)


def _clean_numbers(name: str, numbers: np.ndarray) -> pa.Array:
    if name in INTEGER_COLUMNS:
        whole = np.where(_whole_between(numbers, MAX_ID), numbers, np.nan)
        return pa.array(whole, from_pandas=True).cast(pa.int64())
    if name == "acre_lot":
        # The source writes 0 acres for condos and for lots it does not know: neither is a size.
        return pa.array(np.where(numbers == 0, np.nan, numbers), from_pandas=True)
    return pa.array(numbers, from_pandas=True)


def _parse(raw: pd.DataFrame) -> _Parsed:
    columns = {name: _column(raw[name]) for name in LISTING_COLUMNS}
    distinct = {name: column.distinct for name, column in columns.items()}
    numbers = {name: _numbers(distinct[name]) for name in NUMERIC_COLUMNS}
    values = {
        **{name: _clean_numbers(name, numbers[name]) for name in NUMERIC_COLUMNS},
        "status": _each(distinct["status"], status_value, pa.string()),
        "city": _each(distinct["city"], text_value, pa.string()),
        "state": _each(distinct["state"], state_value, pa.string()),
        "zip_code": _each(distinct["zip_code"], zip_code_value, pa.string()),
        "prev_sold_date": _each(distinct["prev_sold_date"], date_value, pa.date32()),
    }
    return _Parsed(columns, numbers, values)


def _whole_between(values: np.ndarray, largest: float) -> np.ndarray:
    """True for whole numbers from 0 to ``largest`` and for missing values."""
    return np.isnan(values) | ((values >= 0) & (values <= largest) & (np.floor(values) == values))


def _checks(parsed: _Parsed, rules: CleaningRules) -> list[_Check]:
    """Every rule, in the documented order: the first failure names the reason."""
    present = {c: _mask(pc.is_valid(parsed.columns[c].distinct)) for c in LISTING_COLUMNS}
    text, numbers = parsed.values, parsed.numbers
    price, size, lot = numbers["price"], numbers["house_size"], numbers["acre_lot"]
    return [
        _Check("missing_price", "price", ~present["price"], "is missing"),
        *(
            _Check(
                "unparseable_number", c, present[c] & ~np.isfinite(numbers[c]), "is not a number"
            )
            for c in NUMERIC_COLUMNS
        ),
        _Check(
            "implausible_price",
            "price",
            price < rules.min_price,
            f"is below the {rules.min_price:,.0f} USD minimum",
        ),
        _Check(
            "implausible_price",
            "price",
            price > rules.max_price,
            f"is above the {rules.max_price:,.0f} USD maximum",
        ),
        _Check(
            "unknown_status",
            "status",
            ~_mask(pc.is_in(text["status"], _STATUSES)),
            f"is not one of {', '.join(STATUS_VALUES)}",
        ),
        _Check(
            "unknown_state",
            "state",
            ~_mask(pc.is_valid(text["state"])),
            "is not a US state or territory",
        ),
        _Check("missing_city", "city", ~present["city"], "is missing"),
        *(
            _Check(
                "invalid_id",
                c,
                ~_whole_between(numbers[c], MAX_ID),
                f"is not a whole number from 0 to {MAX_ID:,}",
            )
            for c in ID_COLUMNS
        ),
        *(
            _Check(
                f"absurd_{c}",
                c,
                ~_whole_between(numbers[c], rules.max_rooms),
                f"is not a whole number from 0 to {rules.max_rooms}",
            )
            for c in ("bed", "bath")
        ),
        _Check(
            "absurd_house_size",
            "house_size",
            (size < rules.min_house_size) | (size > rules.max_house_size),
            f"is outside {rules.min_house_size:,.0f}-{rules.max_house_size:,.0f} sq ft",
        ),
        _Check(
            "absurd_acre_lot",
            "acre_lot",
            (lot < 0) | (lot > rules.max_acre_lot),
            f"is outside 0-{rules.max_acre_lot:,.0f} acres",
        ),
        *_date_checks(parsed, rules),
    ]


def _date_checks(parsed: _Parsed, rules: CleaningRules) -> list[_Check]:
    # YYYY-MM-DD text sorts like the date it spells, so the range is judged on the text: a year
    # datetime64[ns] cannot hold (2999) is still in the future, not unparseable.
    sold = parsed.columns["prev_sold_date"].distinct
    iso = _mask(pc.match_substring_regex(sold, _ISO_DATE))
    today, oldest = rules.reference_date.isoformat(), rules.min_sold_date.isoformat()
    return [
        _Check(
            "future_date",
            "prev_sold_date",
            iso & _mask(pc.greater(sold, today)),
            f"is after {today}",
        ),
        _Check(
            "implausible_date",
            "prev_sold_date",
            iso & _mask(pc.less(sold, oldest)),
            f"is before {oldest}",
        ),
        _Check(
            "unparseable_date",
            "prev_sold_date",
            _mask(pc.is_valid(sold)) & _mask(pc.is_null(parsed.values["prev_sold_date"])),
            "is not a YYYY-MM-DD date",
        ),
    ]


class _Verdicts:
    """The first failing rule per row, with a detail naming the column and value."""

    def __init__(self, rows: int) -> None:
        self.reason = np.full(rows, None, dtype=object)
        self.detail = np.full(rows, None, dtype=object)
        self.pending = np.ones(rows, dtype=bool)

    def reject(self, check: _Check, column: _Column) -> None:
        new = check.fails[column.rows] & self.pending
        if not new.any():
            return
        self.reason[new] = check.code
        self.detail[new] = _details(check.column, column.distinct.take(column.rows[new]), check.why)
        self.pending &= ~new


def _details(column: str, values: pa.Array, why: str) -> np.ndarray:
    short = pc.utf8_slice_codeunits(values, 0, _SHOWN_CHARS)
    short = pc.if_else(pc.equal(short, values), short, pc.binary_join_element_wise(short, "…", ""))
    quoted = pc.binary_join_element_wise(f"{column} '", short, f"' {why}", "")
    return pc.fill_null(quoted, f"{column} is missing").to_numpy(zero_copy_only=False)


def _judge(parsed: _Parsed, rules: CleaningRules, rows: int) -> _Verdicts:
    verdicts = _Verdicts(rows)
    for check in _checks(parsed, rules):
        verdicts.reject(check, parsed.columns[check.column])
    return verdicts


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 where each input bit moves every output bit."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    return x ^ (x >> 31)


def _fingerprints(values: pa.Array) -> np.ndarray:
    """Two uint64 per clean value, equal exactly when the values are (md5 aside for text)."""
    if values.type == pa.string():
        # "" never survives cleaning (it is missing), so md5("") can stand for null.
        digests = b"".join(hashlib.md5((v or "").encode()).digest() for v in values.to_pylist())
        return np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    if values.type == pa.float64():
        # + 0.0 folds -0.0 into 0.0; null is NaN, which no clean float is.
        bits = (values.to_numpy(zero_copy_only=False) + 0.0).view("<u8")
    else:  # integers, and dates as days since 1970; no clean value is int64's minimum
        integers = values.view(pa.int32()) if values.type == pa.date32() else values
        bits = pc.fill_null(integers.cast(pa.int64()), _NULL_INTEGER).to_numpy().view("<u8")
    return np.column_stack([bits, _mix(bits ^ _LANE_KEY)])


def _row_hashes(parsed: _Parsed, keep: np.ndarray) -> np.ndarray:
    """128-bit hex digest of each kept listing's twelve clean values (docs/cleaning.md)."""
    state = np.tile(np.array(_SEEDS, dtype="<u8"), (int(keep.sum()), 1))
    for name in LISTING_COLUMNS:
        fingerprints = _fingerprints(parsed.values[name])
        state = _mix(state ^ fingerprints[parsed.columns[name].rows[keep]])
    hexes = np.frombuffer(binascii.hexlify(state.astype(">u8").tobytes()), dtype="S32")
    return pa.array(hexes).cast(pa.string()).to_numpy(zero_copy_only=False)


def _frame(
    parsed: _Parsed, keep: np.ndarray, row_index: np.ndarray, hashes: np.ndarray
) -> pd.DataFrame:
    """The kept rows as CLEAN stores them."""
    values = {
        name: parsed.values[name].take(parsed.columns[name].rows[keep]) for name in LISTING_COLUMNS
    }
    frame = pa.table(values).to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype()}.get, date_as_object=True
    )
    frame.insert(0, "row_index", row_index[keep])
    frame["row_hash"] = hashes
    return frame


def _rejects(row_index: np.ndarray, reason: np.ndarray, detail: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_index": np.asarray(row_index, dtype="int64"),
            "reason": np.asarray(reason, dtype=object),
            "detail": np.asarray(detail, dtype=object),
        }
    )


def _repeats(row_index: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """Mark listings repeated within the batch (the first stays) and reject the repeats."""
    listing, _ = pd.factorize(hashes)
    _, first = np.unique(listing, return_index=True)  # the first row of every distinct listing
    repeated = np.ones(len(listing), dtype=bool)
    repeated[first] = False
    originals = row_index[first[listing[repeated]]]
    rejects = _rejects(
        row_index[repeated],
        np.full(len(originals), "duplicate_in_batch", dtype=object),
        np.array(
            [f"listing repeats row {index} of this batch" for index in originals], dtype=object
        ),
    )
    return repeated, rejects


def clean_batch(raw: pd.DataFrame, rules: CleaningRules = CleaningRules()) -> CleanResult:
    """Split ``raw`` (row_index + LISTING_COLUMNS, text or None) into clean rows and rejects."""
    missing = [c for c in ("row_index", *LISTING_COLUMNS) if c not in raw.columns]
    if missing:
        raise ValueError(f"raw rows lack the columns {missing}")
    row_index = raw["row_index"].to_numpy(dtype="int64")
    parsed = _parse(raw)
    verdicts = _judge(parsed, rules, len(raw))
    keep = verdicts.pending
    hashes = _row_hashes(parsed, keep)
    repeated, repeats = _repeats(row_index[keep], hashes)
    unique = keep.copy()
    unique[keep] = ~repeated
    clean = _frame(parsed, unique, row_index, hashes[~repeated])
    rejected = ~keep
    rejects = pd.concat(
        [
            _rejects(row_index[rejected], verdicts.reason[rejected], verdicts.detail[rejected]),
            repeats,
        ],
        ignore_index=True,
    )
    return CleanResult(
        clean=clean, rejects=rejects.sort_values("row_index", kind="stable", ignore_index=True)
    )


def dedupe_against(clean: pd.DataFrame, seen_hashes: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move rows whose listing an earlier batch delivered (``seen_hashes``) to rejects."""
    seen = clean["row_hash"].isin(seen_hashes).to_numpy()
    hashes = clean["row_hash"].to_numpy()[seen]
    rejects = _rejects(
        clean["row_index"].to_numpy()[seen],
        np.full(len(hashes), "duplicate_of_earlier_batch", dtype=object),
        np.array(
            [f"listing {digest} was delivered by an earlier batch" for digest in hashes],
            dtype=object,
        ),
    )
    return clean[~seen].reset_index(drop=True), rejects
