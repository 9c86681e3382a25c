"""RAW: persist what the data API delivered, then spread its rows into ``raw_listings``.

RAW keeps values as delivered (103378.0 stays "103378.0"); normalising them is CLEAN's job.

A fetch can advance the source's batch counter, so the payload is committed before anything
else happens with it. Both steps are idempotent: landing the same batch again is a no-op and
re-spreading a batch replaces its rows in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from realty.data_api import DataApiClient, FetchedBatch, parse_body
from realty.db import copy_records
from realty.perf import paused_gc
from realty.schema import LISTING_COLUMNS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandedBatch:
    key: str
    batch_number: int
    row_count: int
    new: bool  # False when this exact batch had been landed before


class PayloadConflict(RuntimeError):
    """The source delivered different content under a batch key that is already landed."""


def land_payload(conn: psycopg.Connection, batch: FetchedBatch, source_url: str) -> LandedBatch:
    """Commit the payload to ``raw_batches`` (one row, one transaction)."""
    payload_hash = hashlib.sha256(batch.body).hexdigest()
    with conn.transaction():
        inserted = conn.execute(
            """
            INSERT INTO raw_batches (batch_key, group_number, day, batch_number, fetched_at,
                                     source_url, row_count, payload_hash, body)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (batch_key) DO NOTHING
            RETURNING batch_key
            """,
            (
                batch.key, batch.group_number, batch.day, batch.batch_number,
                datetime.now(UTC), source_url, len(batch.data), payload_hash, batch.body,
            ),
        ).fetchone()  # fmt: skip
        if inserted is None:
            (known_hash,) = conn.execute(
                "SELECT payload_hash FROM raw_batches WHERE batch_key = %s", (batch.key,)
            ).fetchone()
            if known_hash != payload_hash:
                raise PayloadConflict(
                    f"batch {batch.key} was landed before with other content "
                    f"(sha256 {known_hash[:12]} != {payload_hash[:12]}); the first copy is kept"
                )
    log.info("landed %s (%d rows, new=%s)", batch.key, len(batch.data), inserted is not None)
    return LandedBatch(batch.key, batch.batch_number, len(batch.data), new=inserted is not None)


def source_exhausted(conn: psycopg.Connection, group_number: int, day: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM source_progress "
        "WHERE group_number = %s AND day = %s AND exhausted_at IS NOT NULL",
        (group_number, day),
    ).fetchone()
    return row is not None


def mark_exhausted(conn: psycopg.Connection, group_number: int, day: str) -> None:
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO source_progress (group_number, day, exhausted_at) VALUES (%s, %s, now())
            ON CONFLICT (group_number, day) DO UPDATE SET exhausted_at = EXCLUDED.exhausted_at
            """,
            (group_number, day),
        )


def land_next_batch(conn: psycopg.Connection, client: DataApiClient) -> LandedBatch | None:
    """Ask the source for its next batch and land it; None once the source has delivered all."""
    if source_exhausted(conn, client.group_number, client.day):
        return None
    batch = client.fetch_next()
    if batch is None:
        mark_exhausted(conn, client.group_number, client.day)
        log.info(
            "source group %s day %s has delivered every batch", client.group_number, client.day
        )
        return None
    return land_payload(conn, batch, client.base_url)


def landed_keys(conn: psycopg.Connection) -> list[str]:
    """Every landed batch key in landing order."""
    return [row[0] for row in conn.execute("SELECT batch_key FROM raw_batches ORDER BY seq")]


def spread_rows(conn: psycopg.Connection, key: str) -> FetchedBatch:
    """(Re)write the rows of landed batch ``key`` into ``raw_listings`` from its stored payload."""
    row = conn.execute(
        "SELECT body, group_number, day FROM raw_batches WHERE batch_key = %s", (key,)
    ).fetchone()
    if row is None:
        raise KeyError(f"batch {key} has not been landed")
    body, group_number, day = row
    batch = parse_body(body, group_number, day)
    with conn.transaction(), conn.cursor() as cur, paused_gc():
        cur.execute("DELETE FROM raw_listings WHERE batch_key = %s", (key,))
        copy_records(
            cur,
            "raw_listings",
            ("batch_key", "row_index", *LISTING_COLUMNS),
            ((key, index, *values) for index, values in enumerate(batch.delivered_rows())),
        )
    return batch
