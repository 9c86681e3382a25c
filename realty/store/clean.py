"""CLEAN: read a landed batch's raw rows, apply the cleaning rules, persist the outcome.

A batch is rewritten as a unit (one transaction): its account row in ``clean_batches``, its
listings and its rejects, so a re-run replaces the batch and never duplicates it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql

from realty.ingest.cleaning import (
    CLEAN_COLUMNS,
    REJECT_COLUMNS,
    CleanResult,
    clean_batch,
    dedupe_against,
)
from realty.schema import LISTING_COLUMNS
from realty.store.db import copy_frame, copy_query_to_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchAccount:
    key: str
    raw_rows: int
    clean_rows: int
    rejected_rows: int
    rejects_by_reason: dict[str, int]
    null_fractions: dict[str, float]


def read_raw_rows(raw_conn: psycopg.Connection, key: str) -> pd.DataFrame:
    query = sql.SQL(
        "SELECT row_index, {} FROM raw_listings WHERE batch_key = {} ORDER BY row_index"
    ).format(sql.SQL(", ").join(map(sql.Identifier, LISTING_COLUMNS)), sql.Literal(key))
    frame = copy_query_to_frame(raw_conn, query)
    frame["row_index"] = frame["row_index"].astype("int64")
    return frame


def read_batch_meta(raw_conn: psycopg.Connection, key: str) -> tuple[int, int, str, int]:
    row = raw_conn.execute(
        "SELECT seq, group_number, day, batch_number FROM raw_batches WHERE batch_key = %s", (key,)
    ).fetchone()
    if row is None:
        raise KeyError(f"batch {key} has not been landed")
    return row


def _hashes_in_other_batches(cur: psycopg.Cursor, key: str, hashes: pd.Series) -> set[str]:
    cur.execute("CREATE TEMP TABLE batch_hashes (row_hash text) ON COMMIT DROP")
    copy_frame(cur, "batch_hashes", hashes.to_frame("row_hash"))
    cur.execute(
        """
        SELECT DISTINCT c.row_hash FROM batch_hashes b
        JOIN clean_listings c ON c.row_hash = b.row_hash AND c.batch_key <> %s
        """,
        (key,),
    )
    return {row[0] for row in cur.fetchall()}


def null_fractions(clean: pd.DataFrame) -> dict[str, float]:
    if clean.empty:
        return {column: 0.0 for column in LISTING_COLUMNS}
    return {column: round(float(clean[column].isna().mean()), 4) for column in LISTING_COLUMNS}


def write_clean_batch(
    clean_conn: psycopg.Connection, key: str, meta: tuple[int, int, str, int], result: CleanResult
) -> BatchAccount:
    """Replace batch ``key`` in CLEAN with ``result``, dropping listings other batches hold."""
    seq, group_number, day, batch_number = meta
    raw_rows = len(result.clean) + len(result.rejects)
    with clean_conn.transaction(), clean_conn.cursor() as cur:
        for table in ("clean_batches", "clean_listings", "rejected_listings"):
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE batch_key = %s").format(sql.Identifier(table)), (key,)
            )
        seen = _hashes_in_other_batches(cur, key, result.clean["row_hash"])
        clean, duplicates = dedupe_against(result.clean, seen)
        rejects = pd.concat([result.rejects, duplicates], ignore_index=True)
        account = BatchAccount(
            key=key,
            raw_rows=raw_rows,
            clean_rows=len(clean),
            rejected_rows=len(rejects),
            rejects_by_reason={k: int(v) for k, v in rejects["reason"].value_counts().items()},
            null_fractions=null_fractions(clean),
        )
        cur.execute(
            """
            INSERT INTO clean_batches (batch_key, seq, group_number, day, batch_number, raw_rows,
                clean_rows, rejected_rows, rejects_by_reason, null_fractions)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                key, seq, group_number, day, batch_number, account.raw_rows, account.clean_rows,
                account.rejected_rows, json.dumps(account.rejects_by_reason),
                json.dumps(account.null_fractions),
            ),
        )  # fmt: skip
        copy_frame(cur, "clean_listings", clean[list(CLEAN_COLUMNS)].assign(batch_key=key))
        copy_frame(cur, "rejected_listings", rejects[list(REJECT_COLUMNS)].assign(batch_key=key))
    log.info("cleaned %s: %d clean, %d rejected", key, account.clean_rows, account.rejected_rows)
    return account


def clean_landed_batch(
    raw_conn: psycopg.Connection, clean_conn: psycopg.Connection, key: str
) -> BatchAccount:
    """The whole CLEAN step for one landed batch."""
    meta = read_batch_meta(raw_conn, key)
    return write_clean_batch(clean_conn, key, meta, clean_batch(read_raw_rows(raw_conn, key)))


# How CLEAN listings read back: the dtypes realty.ingest.cleaning produces.
LISTING_TYPES: dict[str, pa.DataType] = {
    "row_index": pa.int64(),
    "brokered_by": pa.int64(),
    "price": pa.float64(),
    "bed": pa.int64(),
    "bath": pa.int64(),
    "acre_lot": pa.float64(),
    "street": pa.int64(),
    "house_size": pa.float64(),
    "prev_sold_date": pa.date32(),
}


def batches_through(clean_conn: psycopg.Connection, key: str) -> list[str]:
    """Keys of the cleaned batches of ``key``'s stream (its source group and day) landed up to
    and including ``key``, in landing order: what a model trained at ``key`` learns from."""
    rows = clean_conn.execute(
        """
        SELECT b.batch_key FROM clean_batches b
        JOIN clean_batches p ON p.batch_key = %s
        WHERE b.group_number = p.group_number AND b.day = p.day AND b.seq <= p.seq
        ORDER BY b.seq
        """,
        (key,),
    ).fetchall()
    if not rows:
        raise KeyError(f"batch {key} has not been cleaned")
    return [row[0] for row in rows]


def read_clean_listings(clean_conn: psycopg.Connection, keys: list[str]) -> pd.DataFrame:
    """The CLEAN listings of batches ``keys`` (typed), with their batch_key and row_hash."""
    query = sql.SQL(
        "SELECT batch_key, row_index, {}, row_hash FROM clean_listings "
        "WHERE batch_key = ANY({}) ORDER BY batch_key, row_index"
    ).format(sql.SQL(", ").join(map(sql.Identifier, LISTING_COLUMNS)), sql.Literal(keys))
    return copy_query_to_frame(clean_conn, query, LISTING_TYPES)


def reclean_from_raw(
    raw_conn: psycopg.Connection, clean_conn: psycopg.Connection, keys: list[str]
) -> pd.DataFrame:
    """The listings of batches ``keys`` as cleaning them again from their RAW rows gives,
    with their batch_key and row_hash; nothing is written.

    The batches are cleaned in landing order, as the pipeline cleans them, and a listing is
    dropped as ``write_clean_batch`` drops it: where an earlier one of ``keys`` delivered it, or
    where a batch outside ``keys`` landed before holds it in CLEAN (a listing is there once)."""
    landed = sorted((read_batch_meta(raw_conn, key)[0], key) for key in keys)
    seen: set[str] = set()
    frames = []
    for seq, key in landed:
        clean = clean_batch(read_raw_rows(raw_conn, key)).clean
        elsewhere = _hashes_landed_before(clean_conn, seq, keys, clean["row_hash"])
        clean, _ = dedupe_against(clean, seen | elsewhere)
        seen.update(clean["row_hash"])
        frames.append(clean.assign(batch_key=key))
    return pd.concat(frames, ignore_index=True)


def _hashes_landed_before(
    clean_conn: psycopg.Connection, seq: int, keys: list[str], hashes: pd.Series
) -> set[str]:
    """Which of ``hashes`` CLEAN holds in batches landed before ``seq``, other than ``keys``."""
    rows = clean_conn.execute(
        """
        SELECT c.row_hash FROM clean_listings c JOIN clean_batches b USING (batch_key)
        WHERE b.seq < %s AND c.batch_key <> ALL(%s) AND c.row_hash = ANY(%s)
        """,
        (seq, keys, hashes.tolist()),
    ).fetchall()
    return {row[0] for row in rows}


def clean_row_hashes(clean_conn: psycopg.Connection, keys: list[str]) -> pd.DataFrame:
    """(batch_key, row_hash) of the CLEAN listings of batches ``keys``."""
    query = sql.SQL("SELECT batch_key, row_hash FROM clean_listings WHERE batch_key = ANY({})")
    return copy_query_to_frame(clean_conn, query.format(sql.Literal(keys)))
