"""clean_data.unseen_residuals on a real PostgreSQL server: written per batch, read per stream."""

from __future__ import annotations

import uuid

import numpy as np
import psycopg
import pytest

from realty.model.intervals import UnseenResiduals
from realty.store.residuals import NEWEST_BATCHES, replace_residuals, residuals_through


def stream(conn: psycopg.Connection, batches: int) -> list[str]:
    """``batches`` cleaned batches of a stream of their own, in landing order."""
    day = f"test-{uuid.uuid4().hex[:8]}"
    keys = [f"g7-{day}-b{n:03d}" for n in range(1, batches + 1)]
    for number, key in enumerate(keys, start=1):
        conn.execute(
            "INSERT INTO clean_batches (batch_key, seq, group_number, day, batch_number, "
            "raw_rows, clean_rows, rejected_rows, rejects_by_reason, null_fractions) "
            "VALUES (%s, nextval('clean_batches_test_seq'), 7, %s, %s, 0, 0, 0, '{}', '{}')",
            (key, day, number),
        )
    return keys


@pytest.fixture
def clean(pg_settings):
    with psycopg.connect(pg_settings.database_url("clean_data"), autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE IF NOT EXISTS clean_batches_test_seq START 1000000000")
        yield conn
        # Other tests read clean_batches whole: leave no stream of these behind.
        made = "SELECT batch_key FROM clean_batches WHERE group_number = 7 AND day LIKE 'test-%'"
        conn.execute(f"DELETE FROM unseen_residuals WHERE batch_key IN ({made})")
        conn.execute(f"DELETE FROM clean_batches WHERE batch_key IN ({made})")


def test_a_stream_reads_the_residuals_of_its_newest_batches(clean) -> None:
    keys = stream(clean, NEWEST_BATCHES + 3)
    for n, key in enumerate(keys[:-1]):  # the newest batch has no verdict with a production
        found = UnseenResiduals([f"S{n}", f"S{n}"], np.array([n, n + 0.5]))
        replace_residuals(clean, key, "price", "1", found)
    replace_residuals(clean, keys[0], "other-model", "1", UnseenResiduals(["X"], np.ones(1)))

    read = residuals_through(clean, keys[-1], "price")

    assert read.batches == NEWEST_BATCHES and len(read) == 2 * NEWEST_BATCHES
    newest = range(len(keys) - 1 - NEWEST_BATCHES, len(keys) - 1)
    assert set(read.groups) == {f"S{n}" for n in newest}  # not the two oldest
    assert sorted(read.residuals) == sorted(v for n in newest for v in (n, n + 0.5))
    assert residuals_through(clean, keys[0], "price").groups == ["S0", "S0"]  # through key only
    assert residuals_through(clean, keys[0], "unknown-model") is None


def test_a_verdict_run_again_replaces_its_batchs_residuals(clean) -> None:
    [key] = stream(clean, 1)
    replace_residuals(clean, key, "price", "1", UnseenResiduals(["A"] * 3, np.zeros(3)))
    replace_residuals(clean, key, "price", "2", UnseenResiduals(["B"], np.array([0.25])))
    read = residuals_through(clean, key, "price")
    assert (read.groups, read.residuals.tolist()) == (["B"], [0.25])
