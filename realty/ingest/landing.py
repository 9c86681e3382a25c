"""RAW: persist what the data API delivered, then spread its rows into ``raw_listings``.

RAW keeps values as delivered (103378.0 stays "103378.0"); normalising them is CLEAN's job.
The body is stored zstd-compressed (``body_encoding``): 28 MB of JSON write in about 0.3 s,
its 7 MB compressed in 0.05 s; ``stored_body`` gives it back byte for byte.

A fetch can advance the source's batch counter, so the payload and its rows are committed in
one transaction, durably (``synchronous_commit`` on, whatever the server's default), before
anything else happens with them: there is never a landed batch without its rows, or rows
without their batch. Landing the same batch again is a no-op; ``ensure_rows`` re-spreads a
batch's rows from its stored payload (one transaction) if they are not all there.

Each batch's rows are one partition of ``raw_listings``, without an index (see
realty/store/sql/raw_data.sql): the partition is created, filled by COPY and attached in the landing
transaction. Writers of a batch take a lock on its key first, so concurrent landings of one
batch queue, and the second finds the first's.

``land_next_batch`` archives every answer of the source before reading it (realty.ingest.archive):
an answer that is not a batch of the stream, or other content under a landed key, is quarantined
(``PayloadQuarantined``) and the next fetch goes on; a batch whose number skips some is landed
and the skipped numbers recorded as a gap, in the landing transaction.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from realty.ingest.archive import BODY_ENCODING, Archive, record_gap, stored_body, stored_form
from realty.ingest.copy_text import COPY_OPTIONS, copy_chunks
from realty.ingest.data_api import (
    DataApiClient,
    DataApiError,
    FetchedBatch,
    UnusablePayload,
    parse_body,
)
from realty.perf import paused_gc
from realty.schema import LISTING_COLUMNS

log = logging.getLogger(__name__)

_PARTITION_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, ("row_index", *LISTING_COLUMNS)))
_BATCH_LOCKS = 4243  # advisory lock space (first key) of batch writers; migrations take 4242


@dataclass(frozen=True)
class LandedBatch:
    key: str
    batch_number: int
    row_count: int
    new: bool  # False when this exact batch had been landed before


class PayloadConflict(RuntimeError):
    """The source delivered different content under a batch key that is already landed."""


class PayloadQuarantined(RuntimeError):
    """An answer of the source was kept apart, not landed (source_responses says why)."""


def land_payload(conn: psycopg.Connection, batch: FetchedBatch, source_url: str) -> LandedBatch:
    """Commit the payload to ``raw_batches`` and its rows to ``raw_listings`` (one transaction)."""
    with conn.transaction(), ThreadPoolExecutor(1) as compressor:
        # Compressed (and hashed) while the rows are formatted; both release the GIL.
        stored = compressor.submit(stored_form, batch.body)
        conn.execute("SET LOCAL synchronous_commit = on")  # landed means on disk
        _lock_batch(conn, batch.key)
        known = conn.execute(
            "SELECT payload_hash FROM raw_batches WHERE batch_key = %s", (batch.key,)
        ).fetchone()
        if known is None:
            _write_rows(conn, batch.key, batch)
            _insert_batch_row(conn, batch, source_url, *stored.result())
        elif known[0] != (payload_hash := stored.result()[0]):
            raise PayloadConflict(
                f"batch {batch.key} was landed before with other content "
                f"(sha256 {known[0][:12]} != {payload_hash[:12]}); the first copy is kept"
            )
    log.info("landed %s (%d rows, new=%s)", batch.key, len(batch.data), known is None)
    return LandedBatch(batch.key, batch.batch_number, len(batch.data), new=known is None)


def _insert_batch_row(
    conn: psycopg.Connection, batch: FetchedBatch, source_url: str, payload_hash: str, body: bytes
) -> None:
    conn.execute(
        """
        INSERT INTO raw_batches (batch_key, group_number, day, batch_number, fetched_at,
                                 source_url, row_count, payload_hash, body, body_encoding)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %b, %s)
        """,
        (
            batch.key, batch.group_number, batch.day, batch.batch_number, datetime.now(UTC),
            source_url, len(batch.data), payload_hash, body, BODY_ENCODING,
        ),
    )  # fmt: skip


def _lock_batch(conn: psycopg.Connection, key: str) -> None:
    """Queue behind any other transaction writing batch ``key`` (until this one ends)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_BATCH_LOCKS, key))


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
    """Ask the source for its next batch and land it; None once the source has delivered all.

    Every answer is archived first; an answer archived by an interrupted fetch is landed before
    the source is asked again. Raises ``DataApiError`` when the source fails or refuses, and
    ``PayloadQuarantined`` when its answer was kept apart. ``conn`` must be in autocommit mode:
    in an open transaction an archived answer would only be committed with it, or lost with it."""
    if not conn.autocommit:
        raise ValueError("land_next_batch needs an autocommit connection (see its docstring)")
    if source_exhausted(conn, client.group_number, client.day):
        return None
    archive = Archive(conn, client.group_number, client.day)
    pending = archive.pending()
    try:
        batch = client.read(pending) if pending else client.fetch_next(archive)
    except UnusablePayload as error:
        _quarantine(archive, str(error))
    except DataApiError as error:
        if not archive.last_settled:
            archive.settle("refused", str(error))
        raise
    if batch is None:
        mark_exhausted(conn, client.group_number, client.day)
        archive.settle("exhausted")
        log.info(
            "source group %s day %s has delivered every batch", client.group_number, client.day
        )
        return None
    try:
        with conn.transaction():
            landed = land_payload(conn, batch, client.base_url)
            if landed.new:
                record_gap(
                    conn, client.group_number, client.day, batch.batch_number, archive.last_id
                )
            archive.settle("landed" if landed.new else "resent", batch_key=landed.key)
    except (PayloadConflict, RecursionError) as error:
        # Other content under a landed key, or a value nested deeper than the JSON encoder goes
        # (orjson reads 1024 levels, Python's json writes about 1000): the same answer would
        # fail the same way at every fetch, so it is kept apart instead of blocking the loop.
        _quarantine(archive, f"{type(error).__name__}: {error}")
    return landed


def _quarantine(archive: Archive, reason: str) -> NoReturn:
    archive.settle("quarantined", reason)
    raise PayloadQuarantined(
        f"answer {archive.last_id} of the source is quarantined in "
        f"raw_data.source_responses: {reason}"
    )


def landed_keys(conn: psycopg.Connection) -> list[str]:
    """Every landed batch key in landing order."""
    return [row[0] for row in conn.execute("SELECT batch_key FROM raw_batches ORDER BY seq")]


def partition_name(key: str) -> str:
    """The ``raw_listings`` partition that holds batch ``key``'s rows."""
    return "raw_listings_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _write_rows(conn: psycopg.Connection, key: str, batch: FetchedBatch) -> None:
    """The batch's rows as a new partition of ``raw_listings``, replacing any rows it had."""
    partition, key_value = sql.Identifier(partition_name(key)), sql.Literal(key)
    with conn.cursor() as cur, paused_gc():
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(partition))
        # rows landed before batches had partitions live in the default partition
        cur.execute("DELETE FROM raw_listings WHERE batch_key = %s", (key,))
        # The CHECK spares ATTACH a scan of the rows; the default spares COPY the key per row.
        cur.execute(
            sql.SQL(
                "CREATE TABLE {p} (LIKE raw_listings, CHECK (batch_key = {k}));"
                "ALTER TABLE {p} ALTER COLUMN batch_key SET DEFAULT {k}"
            ).format(p=partition, k=key_value)
        )
        copy_rows = sql.SQL("COPY {} ({}) FROM STDIN {}").format(
            partition, _PARTITION_COLUMNS, sql.SQL(COPY_OPTIONS)
        )
        # A writer thread sends each chunk while the next one is formatted: a plain write of
        # 4 MB returns only once the server has read most of it, which would serialise the two.
        with cur.copy(copy_rows, writer=QueuedLibpqWriter(cur)) as copy:
            for text in copy_chunks(batch):
                copy.write(text)
        cur.execute(
            sql.SQL("ALTER TABLE raw_listings ATTACH PARTITION {} FOR VALUES IN ({})").format(
                partition, key_value
            )
        )


@dataclass(frozen=True)
class RawRows:
    batch: FetchedBatch
    respread: bool  # True when rows were missing and were rewritten from the payload


def ensure_rows(conn: psycopg.Connection, key: str) -> RawRows:
    """Landed batch ``key`` with all its rows in ``raw_listings``, re-spread from the stored
    payload if any are missing (rows deleted by hand, or landed by an older version)."""
    row = conn.execute(
        """
        SELECT body, body_encoding, group_number, day, row_count,
               (SELECT count(*) FROM raw_listings WHERE batch_key = %(k)s)  -- its partition only
        FROM raw_batches WHERE batch_key = %(k)s
        """,
        {"k": key},
    ).fetchone()
    if row is None:
        raise KeyError(f"batch {key} has not been landed")
    body, encoding, group_number, day, row_count, spread = row
    batch = parse_body(stored_body(body, encoding), group_number, day)
    if spread == row_count:
        return RawRows(batch, respread=False)
    log.warning("batch %s has %d of its %d rows in RAW: re-spreading", key, spread, row_count)
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = on")
        _lock_batch(conn, key)
        _write_rows(conn, key, batch)
    return RawRows(batch, respread=True)
