"""Client of the course data API (``GET /data``, ``GET /restart_data_generation``).

What the source does, and what the client makes of it:

Every call of ``GET /data`` is a ``SourceResponse`` (status and body byte for byte, or the
transport error when there was no answer), handed to the caller's ``archive`` before anything
reads it. Then:

- 200: a batch. Its rows are kept as decoded (``data``), shaped to the 12 columns for RAW
  (``delivered_rows``) and read into dicts of text on demand (``rows``); text PostgreSQL cannot
  store (NUL, lone surrogates) is replaced by U+FFFD and counted (``sanitized``). A 200 whose
  body is not a batch of the stream asked for (unreadable or truncated JSON, a batch number that
  is not 1, 2, ..., another group or day) is an ``UnusablePayload``, for the caller to quarantine.
- 400 with the fixed Spanish message "Ya se recolectó toda la información mínima necesaria":
  every batch was delivered. That is "no more batches" (``fetch_next`` returns None), not an
  error. Any other 400 (a bad group number) or 4xx is a ``DataApiError`` carrying the message.
- 5xx, 429, timeouts and connection errors are called again with exponential backoff, a
  bounded number of times, then raised as ``DataApiError``. A failed call may still have
  advanced the source's counter; the next batch's number shows it, and realty.ingest.landing
  records the batches it skipped as a gap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import httpx
import orjson

from realty.perf import paused_gc
from realty.schema import LISTING_COLUMNS
from realty.settings import Settings

log = logging.getLogger(__name__)

EXHAUSTED_DETAIL = "Ya se recolectó toda la información mínima necesaria"
ID_COLUMNS = frozenset({"brokered_by", "street"})
MAX_BACKOFF_S = 30.0
_WIDTH = len(LISTING_COLUMNS)
_NAN_TEXTS = frozenset({"nan", "NaN", "NAN"})
_WHOLE_NUMBER = re.compile(r"(\d+)\.0*")
_KEY = re.compile(r"g(\d+)-([a-z0-9]+)-b(\d+)")
MAX_BATCH_NUMBER = 2**31 - 1  # raw_batches.batch_number is an integer
# In a JSON body, text PostgreSQL cannot store can only be spelled as an escape (raw NUL bytes
# and surrogates are not valid JSON text): \u0000 and \ud800-\udfff. A body without one needs
# no look at its values (a valid surrogate pair, e.g. an escaped emoji, only costs that look).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


class DataApiError(RuntimeError):
    """The data API could not be reached, kept failing, or refused the request."""


class UnusablePayload(ValueError):
    """A body that is not a batch of the stream asked for: kept (quarantined), never landed."""


def day_slug(day: str) -> str:
    """The day as it appears in batch keys: lowercase ASCII letters and digits only. A day
    with none of those (e.g. in another script) gets a short stable hash instead."""
    slug = re.sub(r"[^a-z0-9]+", "", day.strip().casefold())
    return slug or "d" + hashlib.sha1(day.strip().casefold().encode()).hexdigest()[:8]


def batch_key(group_number: int, day: str, batch_number: int) -> str:
    """The partition key of a batch, e.g. ``g1-tuesday-b003``."""
    return f"g{group_number}-{day_slug(day)}-b{batch_number:03d}"


def parse_batch_key(key: str) -> tuple[int, str, int]:
    """``g1-tuesday-b003`` → ``(1, "tuesday", 3)``; the day comes back as its slug."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"not a batch key: {key!r} (expected e.g. g1-tuesday-b003)")
    return int(match[1]), match[2], int(match[3])


@dataclass(frozen=True)
class FetchedBatch:
    group_number: int
    day: str
    batch_number: int
    body: bytes = field(repr=False)  # the response body exactly as delivered
    data: list = field(repr=False)  # its rows as decoded, text made storable (see storable)
    sanitized: int = 0  # NUL characters and lone surrogates replaced in data

    @property
    def key(self) -> str:
        return batch_key(self.group_number, self.day, self.batch_number)

    @cached_property
    def rows(self) -> list[dict[str, str | None]]:
        """Every row as a dict of normalised text (see ``normalise_row``)."""
        return [normalise_row(row)[0] for row in self.data]

    @cached_property
    def malformed(self) -> tuple[int, ...]:
        """Indices of rows that were not a 12-field list or object."""
        return tuple(i for i, row in enumerate(self.data) if not _well_formed(row))

    def delivered_rows(self) -> Iterator[list]:
        """Rows as lists of the values as delivered, shaped to the 12 columns.

        The fast path for RAW: no per-value work, which would cost seconds on 300k rows."""
        for row in self.data:
            if type(row) is list and len(row) == _WIDTH:
                yield row
            elif isinstance(row, dict):
                yield [row.get(column) for column in LISTING_COLUMNS]
            elif isinstance(row, list | tuple):
                yield [*row[:_WIDTH], *[None] * (_WIDTH - len(row))]
            else:
                yield [None] * _WIDTH


def _well_formed(row: object) -> bool:
    if isinstance(row, dict):
        return all(column in row for column in LISTING_COLUMNS)
    return isinstance(row, list | tuple) and len(row) == _WIDTH


# One converter per column (see value_text); type() checks first, as this runs 3.6 million
# times for a 300k-row batch.
def _plain_text(value: object) -> str | None:
    kind = type(value)
    if kind is str:
        return value if value and not value.isspace() and value not in _NAN_TEXTS else None
    if kind is int:
        return str(value)
    if value is None:
        return None
    if kind is float:
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if kind is bool:
        return "true" if value else "false"
    return orjson.dumps(value).decode()  # a list or object where a value belongs


def _id_text(value: object) -> str | None:
    if type(value) is str:
        text = value.strip()
        if text.isdigit() or not text:
            return text or None
        match = _WHOLE_NUMBER.fullmatch(text)
        return match[1] if match else text
    return _plain_text(value)


def _zip_text(value: object) -> str | None:
    text = _id_text(value)
    return text.zfill(5) if text is not None and len(text) < 5 and text.isdigit() else text


_CONVERTERS = tuple(
    _zip_text if c == "zip_code" else _id_text if c in ID_COLUMNS else _plain_text
    for c in LISTING_COLUMNS
)


def value_text(value: object, column: str) -> str | None:
    """One delivered value as text, None when missing.

    Numbers lose float noise: ids and streets that arrive as floats (103378.0) become
    "103378", zip codes (601.0, 601, "601.0") become "00601", whole floats elsewhere lose
    ".0" (3.0 → "3") and other floats keep their shortest form (1.5 → "1.5"). NaN and empty
    or blank strings are missing. Anything else is kept as delivered, for cleaning to judge.
    """
    return _CONVERTERS[LISTING_COLUMNS.index(column)](value)


def normalise_row(row: object) -> tuple[dict[str, str | None], bool]:
    """A delivered row as a dict of text (see ``value_text``), and whether it was well formed.

    Lists (in ``LISTING_COLUMNS`` order) and objects are both accepted. A malformed row (too
    few or too many fields, missing keys, not a list or object at all) does not stop the batch:
    it is kept with what could be read (missing fields None, extra fields dropped), so that the
    cleaning step rejects it with a reason instead of it silently vanishing here.
    """
    if isinstance(row, dict):
        values = [row.get(column) for column in LISTING_COLUMNS]
    elif isinstance(row, list | tuple):
        values = [*row[:_WIDTH], *[None] * (_WIDTH - len(row))]
    else:
        values = [None] * _WIDTH
    text = dict(zip(LISTING_COLUMNS, map(operator.call, _CONVERTERS, values), strict=True))
    return text, _well_formed(row)


def storable(data: list) -> tuple[list, int]:
    """``data`` with every NUL and lone surrogate in its text (keys too, at any depth) replaced
    by U+FFFD, which PostgreSQL text and jsonb can hold, and how many were replaced. The body
    keeps the values as delivered."""
    replaced = 0

    def fix(value: object) -> object:
        nonlocal replaced
        if isinstance(value, str):
            text, count = _UNSTORABLE_TEXT.subn(REPLACEMENT, value)
            replaced += count
            return text
        if isinstance(value, list):
            return [fix(item) for item in value]
        if isinstance(value, dict):
            return {fix(key): fix(item) for key, item in value.items()}
        return value

    return fix(data), replaced


def _counter(value: object, low: int = 1) -> bool:
    """Whether a payload field is a whole number that fits an integer column (not a bool, a
    float or text)."""
    return type(value) is int and low <= value <= MAX_BATCH_NUMBER


def _decode(body: bytes) -> dict:
    with paused_gc():
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return json.loads(body)  # also reads NaN and Infinity, which orjson refuses


def parse_body(
    body: bytes, group_number: int | None = None, day: str | None = None
) -> FetchedBatch:
    """A ``/data`` response body as a batch. ``group_number`` and ``day`` are used when the
    body does not echo them. Raises UnusablePayload when the body is not a batch."""
    try:
        payload = _decode(body)
        batch_number = payload["batch_number"]
        group_number = payload.get("group_number", group_number)
        day = payload.get("day", day)
        data = payload.get("data") or []
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        # RecursionError: JSON nested deeper than the decoder goes
        raise UnusablePayload(f"not a /data batch: {type(error).__name__}: {error}") from error
    if not _counter(batch_number):
        raise UnusablePayload(
            f"not a /data batch: batch_number {batch_number!r} is not a whole number "
            f"from 1 to {MAX_BATCH_NUMBER}"
        )
    if not _counter(group_number, low=0):
        raise UnusablePayload(f"not a /data batch: group_number {group_number!r} is not a number")
    if not isinstance(day, str) or not day.strip() or not isinstance(data, list):
        raise UnusablePayload("not a /data batch: no day, or data is not a list")
    # "in" first: 0.03 s on 28 MB where the pattern takes 0.1 s, and most bodies have no escape
    unstorable = b"\\u" in body and _UNSTORABLE_ESCAPE.search(body) is not None
    data, sanitized = storable(data) if unstorable else (data, 0)
    return FetchedBatch(group_number, day, batch_number, body, data, sanitized)


def _same_day(one: str, other: str) -> bool:
    """Days are one stream without regard to case or surrounding blanks, as the source counts
    them."""
    return one.strip().casefold() == other.strip().casefold()


@dataclass(frozen=True)
class SourceResponse:
    """One ``GET /data`` as it went: the answer's status and body byte for byte, or the
    transport error when there was no answer."""

    url: str
    status_code: int | None  # None: no answer (timeout, connection error)
    body: bytes = field(repr=False)
    error: str | None  # what went wrong when there was no answer
    seconds: float

    @property
    def retryable(self) -> bool:
        """No answer, 5xx or 429: worth calling again (what the source may have counted is
        told by the next batch's number)."""
        return self.status_code is None or self.status_code >= 500 or self.status_code == 429

    def problem(self) -> str:
        return self.error or f"HTTP {self.status_code}: {_detail(self.body)}"


def _detail(body: bytes) -> str:
    text = body.decode(errors="replace")
    try:
        return str(json.loads(text).get("detail", text))
    except (ValueError, AttributeError, RecursionError):
        return text


def _folded(text: str) -> str:
    """Without accents and case: "mínima" and "minima" are the same message."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def _is_exhausted(response: SourceResponse) -> bool:
    """Whether the source says every batch of this group and day was delivered."""
    return response.status_code == 400 and _folded(_detail(response.body)) == _folded(
        EXHAUSTED_DETAIL
    )


def _retryable(status_code: int) -> bool:
    return status_code >= 500 or status_code == 429


class DataApiClient:
    """One group and day of the course data API."""

    def __init__(
        self,
        base_url: str,
        group_number: int,
        day: str,
        timeout_s: float = 60.0,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.group_number = group_number
        self.day = day
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    @classmethod
    def from_settings(cls, settings: Settings) -> DataApiClient:
        return cls(
            settings.data_api_url,
            settings.group_number,
            settings.day,
            settings.source_timeout_s,
            settings.source_retries,
            settings.source_backoff_s,
        )

    def fetch_next(
        self, archive: Callable[[SourceResponse], None] = lambda response: None
    ) -> FetchedBatch | None:
        """The next batch, or None once the source has delivered every batch.

        Every call's response goes to ``archive`` before anything reads it. No answer, 5xx and
        429 are called again (``retries`` times, backoff doubling from ``backoff_s``), then a
        ``DataApiError``; see ``read`` for the rest."""
        attempts = max(self.retries, 0) + 1
        for attempt in range(1, attempts + 1):
            response = self.get_data()
            archive(response)
            if not response.retryable:
                return self.read(response)
            if attempt < attempts:
                delay = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
                log.warning(
                    "GET %s attempt %d/%d failed (%s); calling again in %.2f s",
                    response.url, attempt, attempts, response.problem(), delay,
                )  # fmt: skip
                time.sleep(delay)
        raise DataApiError(f"GET {response.url} failed {attempts} times: {response.problem()}")

    def get_data(self) -> SourceResponse:
        """One ``GET /data``, whatever happens: never raises, never calls again."""
        url = httpx.URL(f"{self.base_url}/data", params=self._params())
        started = time.perf_counter()
        try:
            with httpx.Client(timeout=self.timeout_s) as http:
                answer = http.get(url)
        except httpx.TransportError as error:
            problem = f"{type(error).__name__}: {error}"
            return SourceResponse(str(url), None, b"", problem, time.perf_counter() - started)
        return SourceResponse(
            str(url), answer.status_code, answer.content, None, time.perf_counter() - started
        )

    def read(self, response: SourceResponse) -> FetchedBatch | None:
        """What an answer says: a batch of this group and day, or None when the source has
        delivered every batch. Any other status is a ``DataApiError``; a 200 that is not a batch
        of this stream an ``UnusablePayload``."""
        if _is_exhausted(response):
            log.info("data API: group %s day %s is exhausted", self.group_number, self.day)
            return None
        if response.status_code != 200:
            raise DataApiError(f"{response.url} answered {response.problem()}")
        try:
            batch = parse_body(response.body, self.group_number, self.day)
        except UnusablePayload as error:
            raise UnusablePayload(
                f"{response.url} answered 200 with {len(response.body):,} bytes that are {error}"
            ) from error
        if batch.group_number != self.group_number or not _same_day(batch.day, self.day):
            raise UnusablePayload(
                f"{response.url} answered batch {batch.batch_number} of group "
                f"{batch.group_number} day {batch.day!r}, not of the stream asked for"
            )
        if batch.malformed:
            log.warning("%s: %d malformed rows kept for cleaning", batch.key, len(batch.malformed))
        if batch.sanitized:
            log.warning("%s: %d NUL or lone surrogate characters replaced by U+FFFD",
                        batch.key, batch.sanitized)  # fmt: skip
        log.info(
            "fetched %s: %d rows, %d bytes in %.2f s",
            batch.key, len(batch.data), len(batch.body), response.seconds,
        )  # fmt: skip
        return batch

    def restart(self) -> None:
        """Ask the source to deliver this group and day from batch 1 again."""
        self._raise_unless_ok(self._get("/restart_data_generation"))
        log.info("data API: restarted group %s day %s", self.group_number, self.day)

    def _params(self) -> dict[str, int | str]:
        return {"group_number": self.group_number, "day": self.day}

    def _raise_unless_ok(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise DataApiError(
                f"{response.request.url} answered {response.status_code}: "
                f"{_detail(response.content)}"
            )

    def _get(self, path: str) -> httpx.Response:
        """GET with bounded retries and exponential backoff on 5xx, 429 and network errors
        (for ``/restart_data_generation``, which is safe to repeat)."""
        url = f"{self.base_url}{path}"
        params = self._params()
        attempts = max(self.retries, 0) + 1
        with httpx.Client(timeout=self.timeout_s) as http:
            for attempt in range(1, attempts + 1):
                try:
                    response = http.get(url, params=params)
                except httpx.TransportError as error:
                    problem = f"{type(error).__name__}: {error}"
                else:
                    if not _retryable(response.status_code):
                        return response
                    problem = f"HTTP {response.status_code}: {_detail(response.content)}"
                if attempt == attempts:
                    break
                delay = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
                log.warning(
                    "GET %s attempt %d/%d failed (%s); retrying in %.2f s",
                    url, attempt, attempts, problem, delay,
                )  # fmt: skip
                time.sleep(delay)
        raise DataApiError(f"GET {url} failed {attempts} times: {problem}")
