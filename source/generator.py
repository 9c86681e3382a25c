"""The built-in batch generator: realistic listings without shipping the data.

Every batch is a pure function of (group, day, batch number), so a restarted source delivers
the same bytes again and the platform can recognise a batch it already landed.

Rows follow ``source.calibration`` (measured on the real sample): state shares, $/sq ft and lot
sizes per state, bed/bath/size/lot/price relations, status mix, missing rates, dates and dirt.

Drift mirrors the real source, which serves consecutive slices of the Kaggle file. That file is
ordered by state (Puerto Rico and the Virgin Islands first, then New England, ...) and, judging
by the sample, lists the for-sale listings first and the sold ones after them: its first 12,830
rows are 99.8% for sale although 36% of the file is sold. So a batch is drawn from its slice
of a virtual file laid out that way; early batches hold a few north-eastern states for sale,
later ones move south and west, and the last ones are mostly sold listings.
"""

from __future__ import annotations

import hashlib

import numpy as np

from realty.schema import LISTING_COLUMNS
from source import calibration as cal

COLUMN = {name: index for index, name in enumerate(LISTING_COLUMNS)}
STATUSES = np.array(["for_sale", "sold", "ready_to_build"], dtype=object)
FOR_SALE, SOLD, READY_TO_BUILD = range(3)

# Neighbouring states interleave in the file (the sample's first rows switch between
# Massachusetts and Connecticut every few rows): a row's place in the file is its slice
# position plus this much noise, as a share of the whole file.
INTERLEAVE = 0.005
MAX_BROKER = 110_110  # the largest brokered_by and street ids in the sample
MAX_STREET = 2_001_025
MAX_PRICE = 60_000_000  # the sample's dearest listing

# Dirt the sample cannot measure, because its sources dropped such rows: small chosen rates.
FLOAT_NUMBER_RATE = 0.05  # ids and zips as the floats pandas writes (103378.0, 601.0)
UNKNOWN_STATUS_RATE = 0.0002
BAD_DATE_RATE = 0.0002
UNKNOWN_STATUSES = np.array(["pending", "under_contract", "coming_soon"], dtype=object)


def _segments() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The virtual file: every state for sale in file order, then every state sold.
    Returns each segment's state index, whether it is the sold part, and its end (0..1]."""
    counts = np.array([cal.STATES[s][0] for s in cal.FILE_ORDER], dtype=float)
    sold = np.array([cal.STATES[s][1] for s in cal.FILE_ORDER])
    weights = np.concatenate([counts * (1 - sold), counts * sold])
    ends = np.cumsum(weights) / weights.sum()
    ends[-1] = 1.0
    states = np.tile(np.arange(len(counts)), 2)
    return states, np.repeat([False, True], len(counts)), ends


def _cities() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cities of every state flattened: a search key (state index + cumulative share), the
    city names, their zip codes (padded to 3 by repetition) and how many zips each has."""
    keys, names, zips, counts = [], [], [], []
    for index, state in enumerate(cal.FILE_ORDER):
        cities = cal.CITIES[state]
        shares = np.cumsum([share for _, share, _ in cities])
        keys.extend(index + shares / shares[-1])
        for city, _, codes in cities:
            names.append(city)
            zips.append([codes[i % len(codes)] for i in range(3)])
            counts.append(len(codes))
    return (
        np.array(keys),
        np.array(names, dtype=object),
        np.array(zips, dtype=object),
        np.array(counts),
    )


STATE_NAMES = np.array(cal.FILE_ORDER, dtype=object)
LOG_PPSF = np.log([cal.STATES[s][2] for s in cal.FILE_ORDER])
LOG_LOT = np.log([cal.STATES[s][3] for s in cal.FILE_ORDER])
SEGMENT_STATE, SEGMENT_SOLD, SEGMENT_END = _segments()
CITY_KEY, CITY_NAME, CITY_ZIPS, CITY_ZIP_COUNT = _cities()
BED_CUMULATIVE = np.cumsum(list(cal.BED_SHARES.values())) / sum(cal.BED_SHARES.values())
BATH_CUMULATIVE = np.array([np.cumsum(row) / sum(row) for row in cal.BATH_GIVEN_BED.values()])
READY_SHARE = cal.STATUS_SHARES["ready_to_build"] / (
    cal.STATUS_SHARES["ready_to_build"] + cal.STATUS_SHARES["for_sale"]
)
DATE_LEVELS = np.linspace(0, 1, len(cal.DATE_QUANTILES["sold"]))
DATE_DAYS = {
    status: np.array(days, dtype="datetime64[D]").astype(np.int64)
    for status, days in cal.DATE_QUANTILES.items()
}
FIRST_DAY = min(days[0] for days in DATE_DAYS.values())
# ISO text of every day in range, looked up instead of formatted per row (5x faster).
DAY_TEXT = (
    np.arange(FIRST_DAY, max(days[-1] for days in DATE_DAYS.values()) + 1)
    .astype("datetime64[D]")
    .astype(str)
    .astype(object)
)


def seed_for(group_number: int, day: str, batch_number: int) -> int:
    """A stable seed per batch; the day is compared without case or surrounding blanks."""
    text = f"{group_number}|{day.strip().casefold()}|{batch_number}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def generate_batch(
    group_number: int, day: str, batch_number: int, rows: int, batches: int
) -> list[list]:
    """Batch ``batch_number`` (1-based) of ``batches`` for a group and day: ``rows`` listings
    as lists of JSON-ready values in ``LISTING_COLUMNS`` order, None for a missing value."""
    if not 1 <= batch_number <= batches:
        raise ValueError(f"batch_number must be in 1..{batches}, not {batch_number}")
    rng = np.random.default_rng(seed_for(group_number, day, batch_number))
    state, status = _places_in_file(rng, rows, batch_number, batches)
    land = rng.random(rows) < np.array([cal.LAND_SHARES[s] for s in STATUSES])[status]
    rooms = bed, bath, size = _rooms_and_size(rng, rows)
    lot = _lots(rng, state, size, land)
    table = np.empty((rows, len(LISTING_COLUMNS)), dtype=object)
    table[:, COLUMN["brokered_by"]] = rng.integers(1, MAX_BROKER + 1, rows).astype(object)
    table[:, COLUMN["status"]] = STATUSES[status]
    table[:, COLUMN["price"]] = _prices(rng, state, status, rooms, lot, land).astype(object)
    table[:, COLUMN["bed"]] = bed.astype(object)
    table[:, COLUMN["bath"]] = bath.astype(object)
    table[:, COLUMN["acre_lot"]] = lot.astype(object)
    table[:, COLUMN["street"]] = rng.integers(1, MAX_STREET + 1, rows).astype(object)
    table[:, COLUMN["state"]] = STATE_NAMES[state]
    _place_cities(rng, table, state)
    table[:, COLUMN["house_size"]] = size.astype(object)
    table[:, COLUMN["prev_sold_date"]] = _dates(rng, status)
    _blank_missing(rng, table, land)
    _add_dirt(rng, table)
    return table.tolist()


def _places_in_file(
    rng: np.random.Generator, rows: int, batch_number: int, batches: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's state index and status code, from where it falls in the virtual file."""
    position = (batch_number - 1 + rng.random(rows)) / batches
    position = np.clip(position + rng.normal(0, INTERLEAVE, rows), 0, np.nextafter(1, 0))
    segment = np.searchsorted(SEGMENT_END, position, side="right")
    ready = rng.random(rows) < READY_SHARE
    status = np.where(SEGMENT_SOLD[segment], SOLD, np.where(ready, READY_TO_BUILD, FOR_SALE))
    return SEGMENT_STATE[segment], status


def _rooms_and_size(
    rng: np.random.Generator, rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bedrooms, bathrooms given bedrooms, and living area given both."""
    bed = 1 + np.searchsorted(BED_CUMULATIVE, rng.random(rows), side="right")
    bed = np.minimum(bed, len(BED_CUMULATIVE))
    bath_cumulative = BATH_CUMULATIVE[bed - 1]
    bath = 1 + (rng.random(rows)[:, None] >= bath_cumulative).sum(axis=1)
    bath = np.minimum(bath, bath_cumulative.shape[1])
    bed = bed + np.where(bed == 8, rng.geometric(0.6, rows) - 1, 0)  # "8 or more"
    bath = bath + np.where(bath == 8, rng.geometric(0.6, rows) - 1, 0)
    model = cal.SIZE_MODEL
    log_size = (
        model["intercept"]
        + model["per_bed"] * np.minimum(bed, 8)
        + model["per_bath"] * np.minimum(bath, 8)
        + rng.normal(0, model["sd"], rows)
    )
    return bed, bath, np.round(np.exp(log_size)).astype(np.int64)


def _lots(
    rng: np.random.Generator, state: np.ndarray, size: np.ndarray, land: np.ndarray
) -> np.ndarray:
    """Acres: a house's lot follows its state and its size; land lots are larger and wider."""
    model = cal.LOT_MODEL
    house = (
        LOG_LOT[state]
        + model["per_log_size"] * (np.log(size) - model["mean_log_size"])
        + rng.normal(0, model["sd"], len(state))
    )
    bare = rng.normal(model["land_median_log"], model["land_sd"], len(state))
    return np.round(np.exp(np.where(land, bare, house)).clip(0.01, 50_000), 2)


def _prices(
    rng: np.random.Generator,
    state: np.ndarray,
    status: np.ndarray,
    rooms: tuple[np.ndarray, np.ndarray, np.ndarray],
    lot: np.ndarray,
    land: np.ndarray,
) -> np.ndarray:
    """Price from the state's $/sq ft, the rooms, the size and the lot (land: the lot alone),
    with fat-tailed noise, rounded the way asking prices are."""
    model = cal.PRICE_MODEL
    bed, bath, size = rooms
    noise = rng.standard_t(model["noise_df"], len(state)).clip(-6, 6)  # no $1e12 plot of land
    house = (
        LOG_PPSF[state]
        + np.log(size)
        + model["intercept"]
        + model["per_log_size"] * np.log(size / 1_800)
        + model["per_log_lot"] * np.log(lot)
        + model["per_bed"] * (np.minimum(bed, 8) - 3)
        + model["per_bath"] * (np.minimum(bath, 8) - 2)
        + model["sold"] * (status == SOLD)
        + model["ready_to_build"] * (status == READY_TO_BUILD)
        + model["scale"] * noise
    )
    bare = (
        LOG_PPSF[state]
        + model["land_intercept"]
        + model["land_per_log_lot"] * np.log(lot)
        + model["land_scale"] * noise
    )
    price = np.exp(np.where(land, bare, house)).clip(1_000, MAX_PRICE)
    return np.where(price < 1_000_000, np.round(price, -2), np.round(price, -3)).astype(np.int64)


def _place_cities(rng: np.random.Generator, table: np.ndarray, state: np.ndarray) -> None:
    """A city of the row's state (by its share) and one of that city's zip codes."""
    city = np.searchsorted(CITY_KEY, state + rng.random(len(state)), side="right")
    which = (rng.random(len(state)) * CITY_ZIP_COUNT[city]).astype(np.int64)
    table[:, COLUMN["city"]] = CITY_NAME[city]
    table[:, COLUMN["zip_code"]] = CITY_ZIPS[city, which]


def _dates(rng: np.random.Generator, status: np.ndarray) -> np.ndarray:
    """prev_sold_date: the sale for sold rows, an earlier sale for half the for-sale rows,
    none for ready_to_build; ISO strings."""
    rows = len(status)
    sold_days = np.interp(rng.random(rows), DATE_LEVELS, DATE_DAYS["sold"])
    earlier_days = np.interp(rng.random(rows), DATE_LEVELS, DATE_DAYS["for_sale"])
    days = np.where(status == SOLD, sold_days, earlier_days).astype(np.int64)
    dates = DAY_TEXT[days - FIRST_DAY]
    unsold_missing = rng.random(rows) < cal.MISSING_RATES["prev_sold_date_for_sale"]
    dates[(status == READY_TO_BUILD) | ((status == FOR_SALE) & unsold_missing)] = None
    return dates


def _blank(
    rng: np.random.Generator, table: np.ndarray, column: str, rate: float, among: np.ndarray
) -> None:
    chosen = among & (rng.random(len(table)) < rate)
    table[chosen, COLUMN[column]] = None


def _blank_missing(rng: np.random.Generator, table: np.ndarray, land: np.ndarray) -> None:
    """Empty fields at the real rates; land listings have no rooms and no living area."""
    every = np.ones(len(table), dtype=bool)
    for column, rate in cal.MISSING_RATES["any"].items():
        _blank(rng, table, column, rate, every)
    for column, rate in cal.MISSING_RATES["house"].items():
        _blank(rng, table, column, rate, ~land)
    _blank(rng, table, "acre_lot", cal.MISSING_RATES["land"]["acre_lot"], land)
    for column in ("bed", "bath", "house_size"):
        table[land, COLUMN[column]] = None


def _pick(rng: np.random.Generator, rows: int, rate: float) -> np.ndarray:
    return np.flatnonzero(rng.random(rows) < rate)


def _add_dirt(rng: np.random.Generator, table: np.ndarray) -> None:
    """What real rows carry at small rates: placeholder prices, 0-acre lots, absurd room
    counts, unknown statuses, non-ISO dates, floats for ids and zips, exact duplicates."""
    rows = len(table)
    rates = cal.DIRT_RATES
    chosen = _pick(rng, rows, rates["placeholder_price"])
    table[chosen, COLUMN["price"]] = rng.integers(0, 2, len(chosen)).astype(object)
    table[_pick(rng, rows, rates["zero_lot"]), COLUMN["acre_lot"]] = 0.0
    chosen = _pick(rng, rows, rates["absurd_rooms"])
    table[chosen, COLUMN["bed"]] = rng.integers(20, 50, len(chosen)).astype(object)
    table[chosen, COLUMN["bath"]] = rng.integers(20, 60, len(chosen)).astype(object)
    chosen = _pick(rng, rows, UNKNOWN_STATUS_RATE)
    table[chosen, COLUMN["status"]] = rng.choice(UNKNOWN_STATUSES, len(chosen))
    _garble_dates(table, _pick(rng, rows, BAD_DATE_RATE))
    _floats_for_ids(table, _pick(rng, rows, FLOAT_NUMBER_RATE))
    copies = _pick(rng, rows, rates["duplicate"])
    copies = copies[copies > 0]
    table[copies] = table[copies - 1 - rng.integers(0, np.minimum(copies, 50))]


def _garble_dates(table: np.ndarray, chosen: np.ndarray) -> None:
    """A day-first date (28-02-2020), as some copies of the file have."""
    column = COLUMN["prev_sold_date"]
    for index in chosen:
        date = table[index, column] or "2020-02-28"
        table[index, column] = "-".join(reversed(date.split("-")))


def _floats_for_ids(table: np.ndarray, chosen: np.ndarray) -> None:
    for column in ("brokered_by", "street", "zip_code"):
        for index in chosen:
            value = table[index, COLUMN[column]]
            if value is not None:
                table[index, COLUMN[column]] = float(value)
