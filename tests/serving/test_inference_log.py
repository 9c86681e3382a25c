"""The inference-log writer against real PostgreSQL servers: batching, spool, replay."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from realty.settings import Settings
from realty_ops.sandbox import free_port, make_settings
from realty_ops.stack import Stack
from serving.inference_log import (
    COLUMNS,
    InferenceLogWriter,
    InferenceRecord,
    Spool,
    from_spool_line,
    to_spool_line,
)


@pytest.fixture
def writer_settings(pg_settings: Settings, tmp_path: Path) -> Settings:
    """The session server, a private spool, and short intervals so tests do not wait."""
    return pg_settings.model_copy(
        update={
            "home": tmp_path,
            "inference_log_flush_interval_s": 0.05,
            "inference_log_retry_s": 0.2,
        }
    )


def price_records(request_id: str, listings: int = 1) -> list[InferenceRecord]:
    now = datetime.now(UTC)
    return [
        InferenceRecord(
            request_id=request_id,
            item=item,
            logged_at=now,
            route="/v1/price/predict",
            model_name="realty-price",
            model_version="3",
            latency_ms=1.25,
            listing={"status": "for_sale", "bed": 3, "city": "Añasco", "house_size": None},
            prediction=250_000.0 + item,
            details=None,
            interval_level=0.9,
            interval_low=180_000.0 + item,
            interval_high=340_000.0 + item,
        )
        for item in range(listings)
    ]


def stored_rows(settings: Settings, prefix: str) -> int:
    with psycopg.connect(settings.database_url("raw_data")) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM inference_log WHERE request_id LIKE %s", (f"{prefix}%",)
        ).fetchone()
    return count


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_records_from_many_threads_are_written_once_each(writer_settings: Settings) -> None:
    prefix = f"threads-{uuid.uuid4().hex}"
    writer = InferenceLogWriter(writer_settings)
    writer.start()

    def client(number: int) -> None:
        for request in range(50):
            writer.submit(price_records(f"{prefix}-{number}-{request}", listings=4))

    clients = [threading.Thread(target=client, args=(number,)) for number in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    writer.close()

    assert stored_rows(writer_settings, prefix) == 8 * 50 * 4
    assert writer.stats() == {
        "queue_depth": 0,
        "rows_written": 1600,
        "rows_spooled": 0,
        "rows_replayed": 0,
        "rows_dropped": 0,
    }


def test_fields_round_trip(writer_settings: Settings) -> None:
    request_id = f"fields-{uuid.uuid4().hex}"
    sent = InferenceRecord(
        request_id=request_id,
        item=0,
        logged_at=datetime(2026, 11, 23, 14, 30, 5, 123456, tzinfo=UTC),
        route="/v1/count",
        model_name="yolov3-tiny",
        model_version=None,
        latency_ms=12.345678,
        listing=None,
        prediction=None,
        details={"count": 2, "labels": ["orange", "orange"], "confidence": 0.2},
    )
    price = price_records(request_id, listings=2)[1]
    writer = InferenceLogWriter(writer_settings)
    writer.start()
    writer.submit([sent, price])
    writer.close()

    with psycopg.connect(writer_settings.database_url("raw_data")) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM inference_log WHERE request_id = %s ORDER BY item",
            (request_id,),
        ).fetchall()
    assert [InferenceRecord(*row) for row in rows] == [sent, price]
    assert (price.interval_level, price.interval_low, price.interval_high) == (
        0.9,
        180_001,
        340_001,
    )


# The table as it was before intervals (2026-12-02).
OLD_INFERENCE_LOG = """
CREATE TABLE inference_log (
    request_id text NOT NULL, item integer NOT NULL, logged_at timestamptz NOT NULL,
    route text NOT NULL, model_name text, model_version text,
    latency_ms double precision NOT NULL, listing jsonb, prediction double precision,
    details jsonb, PRIMARY KEY (request_id, item)
)
"""


def test_an_inference_log_from_before_intervals_gains_their_columns(pg_settings) -> None:
    database = f"raw_before_intervals_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_settings.database_url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    ddl = resources.files("realty.store").joinpath("sql", "raw_data.sql").read_text()
    try:
        with psycopg.connect(pg_settings.database_url(database), autocommit=True) as conn:
            conn.execute(OLD_INFERENCE_LOG)
            conn.execute(
                "INSERT INTO inference_log VALUES ('old', 0, now(), '/v1/price/predict',"
                " 'realty-price', '1', 1.0, '{}', 250000, NULL)"
            )
            conn.execute(ddl)
            conn.execute(ddl)
            row = conn.execute(
                "SELECT prediction, interval_level, interval_low, interval_high FROM inference_log"
            ).fetchall()
            assert row == [(250_000.0, None, None, None)]
    finally:
        with psycopg.connect(pg_settings.database_url("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {database}")


def test_a_record_spooled_before_intervals_replays_without_them() -> None:
    (record,) = price_records("spooled-before-intervals")
    values = json.loads(to_spool_line(record))
    for name in ("interval_level", "interval_low", "interval_high"):
        del values[name]
    replayed = from_spool_line(json.dumps(values))
    assert replayed.interval_low is None and replayed.prediction == record.prediction


def test_text_that_looks_like_copy_syntax_is_stored_as_sent(writer_settings: Settings) -> None:
    request_id = f"syntax-{uuid.uuid4().hex}"
    tricky = 'a,b;"c"\\d\ne\tf\x1eg\x1fh\\.\n\\N NULL ü €'
    (record,) = price_records(request_id)
    sent = InferenceRecord(**{**vars(record), "listing": {"street": tricky, tricky: [tricky]}})
    writer = InferenceLogWriter(writer_settings)
    writer.start()
    writer.submit([sent])
    writer.close()

    with psycopg.connect(writer_settings.database_url("raw_data")) as conn:
        (listing,) = conn.execute(
            "SELECT listing FROM inference_log WHERE request_id = %s", (request_id,)
        ).fetchone()
    assert listing == sent.listing
    assert writer.stats()["rows_written"] == 1


def test_close_flushes_what_is_queued(writer_settings: Settings) -> None:
    # The timer alone would wait a minute and the batch never fills: only close() writes.
    settings = writer_settings.model_copy(
        update={"inference_log_flush_interval_s": 60.0, "inference_log_batch_rows": 10_000}
    )
    prefix = f"close-{uuid.uuid4().hex}"
    writer = InferenceLogWriter(settings)
    writer.start()
    for request in range(100):
        writer.submit(price_records(f"{prefix}-{request}"))
    writer.close()

    assert stored_rows(settings, prefix) == 100
    assert writer.stats()["rows_spooled"] == 0


def test_full_queue_spills_to_the_spool_while_the_database_is_blocked(
    writer_settings: Settings,
) -> None:
    settings = writer_settings.model_copy(
        update={"inference_log_queue_rows": 20, "inference_log_batch_rows": 10}
    )
    prefix = f"full-{uuid.uuid4().hex}"
    writer = InferenceLogWriter(settings)
    with psycopg.connect(settings.database_url("raw_data")) as locker:
        # Until this transaction ends, the writer's database calls wait.
        locker.execute("LOCK TABLE inference_log IN ACCESS EXCLUSIVE MODE")
        writer.start()
        writer.submit(price_records(f"{prefix}-0", listings=10))
        wait_until(lambda: writer.stats()["queue_depth"] == 0)  # taken, stuck on the lock
        writer.submit(price_records(f"{prefix}-1", listings=20))  # fills the queue
        writer.submit(price_records(f"{prefix}-2", listings=15))  # does not fit: spooled
        stats = writer.stats()
        assert (stats["queue_depth"], stats["rows_spooled"], stats["rows_written"]) == (20, 15, 0)
        assert len(writer.spool.files()) == 1
    writer.close()

    assert stored_rows(settings, prefix) == 45
    assert writer.spool.files() == []
    assert writer.stats()["rows_dropped"] == 0


def test_close_timeout_spools_the_batch_in_flight_and_replay_adds_no_duplicate(
    writer_settings: Settings,
) -> None:
    prefix = f"inflight-{uuid.uuid4().hex}"
    writer = InferenceLogWriter(writer_settings)
    with psycopg.connect(writer_settings.database_url("raw_data")) as locker:
        locker.execute("LOCK TABLE inference_log IN ACCESS EXCLUSIVE MODE")
        writer.start()
        writer.submit(price_records(f"{prefix}-0", listings=10))
        wait_until(lambda: writer.stats()["queue_depth"] == 0)
        writer.submit(price_records(f"{prefix}-1", listings=5))
        writer.close(timeout=0.3)
        # The batch stuck on the lock is spooled too: the process could exit now and lose nothing.
        assert writer.stats()["rows_spooled"] == 15
    # The lock is gone: the stuck batch commits, then the spool (holding it again) is replayed.
    restarted = InferenceLogWriter(writer_settings)
    restarted.start()
    restarted.close()
    wait_until(lambda: restarted.spool.files() == [])

    assert stored_rows(writer_settings, prefix) == 15
    assert writer.stats()["rows_dropped"] == restarted.stats()["rows_dropped"] == 0


def spool_while_database_is_down(settings: Settings, records: list[InferenceRecord]) -> Path:
    """Submit ``records`` to a writer whose database does not answer; return its spool file."""
    down = settings.model_copy(update={"pg_port": free_port()})  # nothing listens there
    writer = InferenceLogWriter(down)
    writer.start()
    writer.submit(records)
    writer.close()
    assert writer.stats()["rows_spooled"] == len(records)
    (spool_file,) = writer.spool.files()
    return spool_file


def test_restarted_writer_replays_a_leftover_spool(writer_settings: Settings) -> None:
    prefix = f"restart-{uuid.uuid4().hex}"
    spool_while_database_is_down(writer_settings, price_records(prefix, listings=20))

    writer = InferenceLogWriter(writer_settings)
    writer.start()
    writer.close()

    assert stored_rows(writer_settings, prefix) == 20
    assert writer.stats()["rows_replayed"] == 20
    assert writer.spool.files() == []


def test_torn_spool_line_is_skipped(
    writer_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"torn-{uuid.uuid4().hex}"
    spool_file = spool_while_database_is_down(writer_settings, price_records(prefix, listings=3))
    with spool_file.open("a") as file:  # a crash in the middle of an append
        file.write('{"request_id": "' + prefix + '-torn", "item": 0, "logged_')

    caplog.set_level(logging.WARNING, logger="serving.inference_log")
    writer = InferenceLogWriter(writer_settings)
    writer.start()
    writer.close()

    assert stored_rows(writer_settings, prefix) == 3
    assert f"skipping unreadable line 4 of {spool_file}" in caplog.text
    assert writer.spool.files() == []


def test_a_record_the_database_refuses_is_set_aside(writer_settings: Settings) -> None:
    prefix = f"refused-{uuid.uuid4().hex}"
    good = price_records(prefix, listings=3)
    # jsonb cannot hold \u0000: PostgreSQL refuses this record, whatever happens to the others.
    bad = InferenceRecord(**{**vars(good[0]), "item": 99, "listing": {"street": "a\x00b"}})
    writer = InferenceLogWriter(writer_settings)
    writer.start()
    writer.submit([good[0], bad, *good[1:]])
    writer.close()

    assert stored_rows(writer_settings, prefix) == 3
    assert writer.stats()["rows_dropped"] == 1
    (rejected,) = writer.spool.directory.glob("rejected-*.jsonl")
    (line,) = rejected.read_text().splitlines()
    assert "item=99" in json.loads(line)["record"]


def test_a_stored_key_is_kept_not_overwritten(
    writer_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    (first,) = price_records(f"reused-{uuid.uuid4().hex}")
    again = InferenceRecord(**{**vars(first), "prediction": 1.0})
    (other,) = price_records(f"{first.request_id}-other")
    caplog.set_level(logging.WARNING, logger="serving.inference_log")
    writer = InferenceLogWriter(writer_settings)
    writer.start()
    writer.submit([first])
    writer.close()
    writer = InferenceLogWriter(writer_settings)
    writer.start()
    writer.submit([again, other])  # a reused request id in a batch: the batch still lands
    writer.close()

    assert writer.stats()["rows_dropped"] == 0
    assert "1 of 2 records were stored already" in caplog.text
    with psycopg.connect(writer_settings.database_url("raw_data")) as conn:
        rows = conn.execute(
            "SELECT request_id, prediction FROM inference_log WHERE request_id LIKE %s"
            " ORDER BY request_id",
            (f"{first.request_id}%",),
        ).fetchall()
    assert rows == [(first.request_id, first.prediction), (other.request_id, other.prediction)]


def test_spool_files_held_by_a_live_writer_are_not_replayed(tmp_path: Path) -> None:
    holder = Spool(tmp_path)
    holder.append(price_records("held"))
    replayer = Spool(tmp_path)
    (held,) = replayer.files()
    assert replayer.replay(held, lambda chunk: None, rows=10) == 0
    holder.seal()
    replayed: list[InferenceRecord] = []
    assert replayer.replay(held, replayed.extend, rows=10) == 1
    assert [record.request_id for record in replayed] == ["held"]
    assert replayer.files() == []


def test_database_stopped_mid_run_spools_then_replays(tmp_path: Path) -> None:
    """A dedicated server (the session one stays up for the other tests) stops and comes back."""
    settings = make_settings(
        tmp_path,
        inference_log_flush_interval_s=0.05,
        inference_log_retry_s=0.2,
        inference_log_queue_rows=100,
        inference_log_batch_rows=50,
    )
    server = Stack(settings, only=("postgres",))
    server.start()
    writer = InferenceLogWriter(settings)
    writer.start()
    try:
        for request in range(20):
            writer.submit(price_records(f"run-{request}", listings=5))
        wait_until(lambda: stored_rows(settings, "run-") == 100)

        server.stop()
        for request in range(20, 50):
            writer.submit(price_records(f"run-{request}", listings=5))
        writer.submit(price_records("run-burst", listings=300))  # beyond the queue: spooled now
        assert writer.stats()["rows_spooled"] >= 300  # returned with the database down
        wait_until(lambda: writer.stats()["rows_spooled"] == 450)
        assert writer.spool.files()

        server = Stack(settings, only=("postgres",))
        server.start()
        wait_until(lambda: stored_rows(settings, "run-") == 550)
        wait_until(lambda: writer.spool.files() == [])
    finally:
        writer.close()
        server.stop()
    stats = writer.stats()
    assert (stats["rows_written"], stats["rows_replayed"], stats["rows_dropped"]) == (100, 450, 0)
