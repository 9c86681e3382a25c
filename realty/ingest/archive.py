"""What the data API answered, kept whatever it was (``raw_data.source_responses``), and the
batch numbers a stream skipped (``raw_data.source_gaps``).

A call of ``GET /data`` may advance the source's counter whatever comes back, so its answer is
committed, durably, before anything reads it: a body that turns out unreadable, truncated or of
another stream is kept as received (quarantined, with the reason), and a 200 archived by a fetch
that was then interrupted is read and landed by the next fetch (``Archive.pending``) instead of
being lost. Once a body's batch is landed, ``raw_batches`` holds the same bytes and the copy here
is dropped.

A failed call the source had counted shows in the next batch's number: ``record_gap`` writes the
numbers skipped, with the calls that went wrong since the batch before; ``source_record`` says
which gaps are still open and what was quarantined (the ``source_lossless`` asset check and
``realty status`` show it).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pyarrow as pa

from realty.ingest.data_api import SourceResponse, batch_key, day_slug

log = logging.getLogger(__name__)

BODY_ENCODING = "zstd"
_BODY_CODEC = pa.Codec(BODY_ENCODING, compression_level=1)  # 4x smaller, 0.1 s per 28 MB
DELIVERED = ("landed", "resent")  # outcomes whose body raw_batches holds


def stored_form(body: bytes) -> tuple[str, bytes]:
    """The body's sha256 and the body as RAW stores it (``BODY_ENCODING``)."""
    return hashlib.sha256(body).hexdigest(), _BODY_CODEC.compress(body, asbytes=True)


def stored_body(body: bytes, encoding: str) -> bytes:
    """A response body as delivered, from a stored body and its encoding."""
    if encoding == "identity":
        return body
    return pa.CompressedInputStream(pa.BufferReader(body), encoding).read()


def stream_keys(group_number: int, day: str) -> str:
    """A LIKE pattern matching the batch keys of one group and day (slugs are [a-z0-9]+)."""
    return f"g{group_number}-{day_slug(day)}-b%"


@dataclass
class Archive:
    """The answers of one fetch of a stream, archived as they come (call it with each
    response); ``last_id`` is the newest one's, ``settle`` records what became of it."""

    conn: psycopg.Connection
    group_number: int
    day: str
    last_id: int | None = None
    last_settled: bool = False

    def __call__(self, response: SourceResponse) -> None:
        payload_hash, body = stored_form(response.body)
        # A call answered with no batch and worth repeating is settled now: nothing reads it.
        outcome = "failed" if response.retryable else None
        with self.conn.transaction():
            self.conn.execute("SET LOCAL synchronous_commit = on")  # archived means on disk
            (self.last_id,) = self.conn.execute(
                """
                INSERT INTO source_responses (group_number, day, url, received_at, seconds,
                    status_code, error, body_bytes, payload_hash, body, outcome, reason)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %b, %s, %s)
                RETURNING response_id
                """,
                (
                    self.group_number, self.day, response.url, datetime.now(UTC),
                    response.seconds, response.status_code, response.error, len(response.body),
                    payload_hash, body, outcome, response.problem() if outcome else None,
                ),
            ).fetchone()  # fmt: skip
        self.last_settled = outcome is not None

    def pending(self) -> SourceResponse | None:
        """The stream's oldest answer archived but never read (its fetch was interrupted), as
        the newest of this archive; None when there is none."""
        row = self.conn.execute(
            """
            SELECT response_id, url, status_code, body, error, seconds FROM source_responses
            WHERE group_number = %s AND day = %s AND outcome IS NULL
            ORDER BY response_id LIMIT 1
            """,
            (self.group_number, self.day),
        ).fetchone()
        if row is None:
            return None
        self.last_id, url, status_code, body, error, seconds = row
        log.warning("answer %d of %s was archived but never read: reading it", self.last_id, url)
        return SourceResponse(url, status_code, stored_body(body, BODY_ENCODING), error, seconds)

    def settle(self, outcome: str, reason: str | None = None, batch_key: str | None = None) -> None:
        """What became of the newest answer; a delivered one's copy of the body is dropped."""
        self.conn.execute(
            """
            UPDATE source_responses SET outcome = %(o)s, reason = %(r)s, batch_key = %(k)s,
                body = CASE WHEN %(o)s = ANY(%(delivered)s) THEN NULL ELSE body END
            WHERE response_id = %(id)s
            """,
            {"o": outcome, "r": reason, "k": batch_key, "delivered": list(DELIVERED),
             "id": self.last_id},
        )  # fmt: skip
        self.last_settled = True
        if outcome == "quarantined":
            log.warning("answer %d quarantined: %s", self.last_id, reason)


def record_gap(
    conn: psycopg.Connection, group_number: int, day: str, batch_number: int, response_id: int
) -> str | None:
    """Record the batch numbers skipped before ``batch_number``, just landed from answer
    ``response_id``, when it is the stream's newest batch and the one before it is not
    ``batch_number - 1``; the gap's description, or None when there is none. (A batch below the
    newest fills an older gap, which is recorded already.)"""
    below, above = conn.execute(
        """
        SELECT max(batch_number) FILTER (WHERE batch_number < %(n)s),
               count(*) FILTER (WHERE batch_number > %(n)s)
        FROM raw_batches WHERE batch_key LIKE %(keys)s
        """,
        {"n": batch_number, "keys": stream_keys(group_number, day)},
    ).fetchone()
    first = (below or 0) + 1
    if above or first == batch_number:
        return None
    reason = (
        f"batches {first}-{batch_number - 1} never arrived: batch {batch_number} came where "
        f"{first} was expected; {_calls_since(conn, group_number, day, below, response_id)}"
    )
    conn.execute(
        """
        INSERT INTO source_gaps (group_number, day, first_batch, last_batch, found_at,
                                 response_id, reason)
        VALUES (%s, %s, %s, %s, now(), %s, %s) ON CONFLICT DO NOTHING
        """,
        (group_number, day, first, batch_number - 1, response_id, reason),
    )
    log.error("group %s day %s: %s", group_number, day, reason)
    return reason


def _calls_since(
    conn: psycopg.Connection, group_number: int, day: str, below: int | None, response_id: int
) -> str:
    """What went wrong between the answer that delivered batch ``below`` and ``response_id``."""
    since = "the first batch" if below is None else f"batch {below}"
    counts = conn.execute(
        """
        SELECT outcome, count(*) FROM source_responses
        WHERE group_number = %(g)s AND day = %(d)s AND response_id < %(id)s
          AND outcome NOT IN ('landed', 'resent')
          AND response_id > coalesce((SELECT max(response_id) FROM source_responses
                                      WHERE group_number = %(g)s AND day = %(d)s
                                        AND batch_key = %(below)s), 0)
        GROUP BY outcome ORDER BY outcome
        """,
        {
            "g": group_number,
            "d": day,
            "id": response_id,
            "below": None if below is None else batch_key(group_number, day, below),
        },
    ).fetchall()
    if not counts:
        return f"no call failed since {since}: the source skipped them, or another client took them"
    return f"since {since}: " + ", ".join(f"{count} {outcome}" for outcome, count in counts)


@dataclass(frozen=True)
class Gap:
    first_batch: int
    last_batch: int
    missing: int  # of its batches, how many are still not landed
    reason: str


@dataclass(frozen=True)
class Quarantined:
    response_id: int
    received_at: datetime
    status_code: int
    body_bytes: int
    reason: str


@dataclass(frozen=True)
class SourceRecord:
    """What a stream lost and kept apart: gaps still open, answers quarantined, failed calls."""

    open_gaps: list[Gap]
    quarantined: list[Quarantined]
    failed_calls: int

    @property
    def missing_batches(self) -> int:
        return sum(gap.missing for gap in self.open_gaps)


def source_record(conn: psycopg.Connection, group_number: int, day: str) -> SourceRecord:
    stream = {"g": group_number, "d": day, "keys": stream_keys(group_number, day)}
    gaps = [
        Gap(first, last, last - first + 1 - landed, reason)
        for first, last, reason, landed in conn.execute(
            """
            SELECT first_batch, last_batch, reason,
                   (SELECT count(*) FROM raw_batches WHERE batch_key LIKE %(keys)s
                      AND batch_number BETWEEN first_batch AND last_batch)
            FROM source_gaps WHERE group_number = %(g)s AND day = %(d)s ORDER BY first_batch
            """,
            stream,
        )
    ]
    quarantined = [
        Quarantined(*row)
        for row in conn.execute(
            """
            SELECT response_id, received_at, status_code, body_bytes, reason
            FROM source_responses
            WHERE group_number = %(g)s AND day = %(d)s AND outcome = 'quarantined'
            ORDER BY response_id
            """,
            stream,
        )
    ]
    (failed,) = conn.execute(
        "SELECT count(*) FROM source_responses "
        "WHERE group_number = %(g)s AND day = %(d)s AND outcome = 'failed'",
        stream,
    ).fetchone()
    return SourceRecord([gap for gap in gaps if gap.missing], quarantined, failed)
