"""A lossless source on a real PostgreSQL server and a real simulator: every answer archived before
it is read, bad answers quarantined, skipped batch numbers recorded as gaps (issue 14 §3)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest

from realty.ingest.archive import Archive, source_record, stored_body
from realty.ingest.data_api import REPLACEMENT, DataApiClient, DataApiError, SourceResponse
from realty.ingest.landing import PayloadQuarantined, land_next_batch
from source.app import SimulatorConfig
from tests.source.conftest import SimulatorServer

DAY_PREFIX = "archivetest"
_days = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        state_file=tmp_path_factory.mktemp("archive") / "state.json", rows_per_batch=50, batches=4
    )
    started = SimulatorServer(config).start()
    yield started
    started.stop()


@pytest.fixture
def raw(pg_settings, server: SimulatorServer) -> Iterator[psycopg.Connection]:
    """RAW in autocommit mode; what the test wrote is removed after it."""
    with psycopg.connect(pg_settings.database_url("raw_data"), autocommit=True) as conn:
        yield conn
        server.set_faults()
        pattern = f"g1-{DAY_PREFIX}%"
        conn.execute("DELETE FROM raw_listings WHERE batch_key LIKE %s", (pattern,))
        conn.execute("DELETE FROM raw_batches WHERE batch_key LIKE %s", (pattern,))
        for table in ("source_responses", "source_gaps", "source_progress"):
            conn.execute(f"DELETE FROM {table} WHERE day LIKE %s", (f"{DAY_PREFIX}%",))


def stream(server: SimulatorServer) -> DataApiClient:
    return DataApiClient(server.url, 1, f"{DAY_PREFIX}{next(_days)}", 10.0, 2, 0.01)


def responses(conn: psycopg.Connection, client: DataApiClient) -> list[tuple]:
    return conn.execute(
        "SELECT status_code, outcome, batch_key, body IS NOT NULL FROM source_responses "
        "WHERE day = %s ORDER BY response_id",
        (client.day,),
    ).fetchall()


def landed(conn: psycopg.Connection, client: DataApiClient) -> list[tuple[int, int]]:
    """(batch number, rows in raw_listings) of every batch of the stream."""
    return conn.execute(
        "SELECT b.batch_number, (SELECT count(*) FROM raw_listings l WHERE l.batch_key = "
        "b.batch_key) FROM raw_batches b WHERE b.day = %s ORDER BY b.batch_number",
        (client.day,),
    ).fetchall()


def test_every_answer_is_archived_and_a_landed_body_kept_once(raw, server) -> None:
    client = stream(server)
    server.set_faults(fail_next=1)
    assert land_next_batch(raw, client).batch_number == 1
    assert responses(raw, client) == [
        (503, "failed", None, True),  # the error page is kept
        (200, "landed", f"g1-{client.day}-b001", False),  # raw_batches holds its body
    ]
    assert source_record(raw, 1, client.day).failed_calls == 1


def test_a_batch_counted_then_failed_is_a_gap_a_restart_fills(raw, server) -> None:
    """The source counts batch 1 and answers 503; the call again gets batch 2: a gap, not a
    silent skip. After a restart of the source batch 1 lands, batch 2 comes again: 0 lost,
    0 duplicated."""
    client = stream(server)
    server.set_faults(advance_and_fail_next=1)
    assert land_next_batch(raw, client).batch_number == 2
    [gap] = source_record(raw, 1, client.day).open_gaps
    assert (gap.first_batch, gap.last_batch, gap.missing) == (1, 1, 1)
    assert gap.reason == (
        "batches 1-1 never arrived: batch 2 came where 1 was expected; "
        "since the first batch: 1 failed"
    )
    client.restart()
    assert land_next_batch(raw, client).batch_number == 1
    assert land_next_batch(raw, client).new is False  # batch 2 again: already landed
    assert source_record(raw, 1, client.day).open_gaps == []
    assert landed(raw, client) == [(1, 50), (2, 50)]


def test_a_truncated_answer_is_quarantined_and_the_loop_goes_on(raw, server) -> None:
    client = stream(server)
    server.set_faults(truncate_next=1)
    with pytest.raises(PayloadQuarantined, match=r"quarantined .* not a /data batch"):
        land_next_batch(raw, client)
    [(body, size)] = raw.execute(
        "SELECT body, body_bytes FROM source_responses WHERE day = %s", (client.day,)
    ).fetchall()
    kept = stored_body(body, "zstd")
    assert len(kept) == size and kept.startswith(b'{"group_number":1')
    assert land_next_batch(raw, client).batch_number == 2
    record = source_record(raw, 1, client.day)
    assert [q.status_code for q in record.quarantined] == [200]
    assert "not a /data batch: JSONDecodeError" in record.quarantined[0].reason
    assert [(g.first_batch, g.missing) for g in record.open_gaps] == [(1, 1)]
    assert "since the first batch: 1 quarantined" in record.open_gaps[0].reason


@pytest.mark.parametrize(
    ("relabel", "reason"),
    [
        ({"batch_number": -1}, "batch_number -1 is not a whole number"),
        ({"batch_number": "2"}, "batch_number '2' is not a whole number"),
        ({"group_number": 3}, "group 3"),
        ({"day": "elsewhere"}, "day 'elsewhere', not of the stream asked for"),
    ],
)
def test_an_answer_of_another_stream_is_quarantined(raw, server, relabel, reason) -> None:
    client = stream(server)
    server.set_faults(relabel_next=1, relabel=relabel)
    with pytest.raises(PayloadQuarantined, match=reason):
        land_next_batch(raw, client)
    assert land_next_batch(raw, client).batch_number == 2
    assert responses(raw, client)[0][1:] == ("quarantined", None, True)
    assert raw.execute(
        "SELECT count(*) FROM raw_batches WHERE batch_key NOT LIKE 'g%%-%%-b%%'"
    ).fetchone() == (0,)  # no key like g1-tuesday-b-01


def test_text_postgresql_cannot_store_lands_replaced(raw, server) -> None:
    client = stream(server)
    server.set_faults(unstorable_next=1)
    batch = land_next_batch(raw, client)
    assert batch.new and landed(raw, client) == [(1, 50)]
    cities = raw.execute(
        "SELECT city, street FROM raw_listings WHERE batch_key = %s ORDER BY row_index LIMIT 2",
        (batch.key,),
    ).fetchall()
    assert cities == [(f"Nul{REPLACEMENT}City", f"Lone {REPLACEMENT} Street")] * 2
    [(body,)] = raw.execute(
        "SELECT body FROM raw_batches WHERE batch_key = %s", (batch.key,)
    ).fetchall()
    delivered = stored_body(body, "zstd")  # the body as delivered
    assert b'"Nul\\u0000City"' in delivered and b'"Lone \\ud800 Street"' in delivered


def test_an_answer_archived_by_an_interrupted_fetch_is_landed_first(raw, server) -> None:
    """A fetch that archived its answer and died before landing it: the next fetch lands that
    answer without asking the source (which counted it), so nothing is skipped."""
    client = stream(server)
    Archive(raw, 1, client.day)(client.get_data())  # archived, never read
    assert responses(raw, client) == [(200, None, None, True)]
    assert land_next_batch(raw, client).batch_number == 1
    assert land_next_batch(raw, client).batch_number == 2
    assert source_record(raw, 1, client.day).open_gaps == []
    assert [r[1] for r in responses(raw, client)] == ["landed", "landed"]


def test_an_answer_that_cannot_be_landed_is_quarantined_not_retried_forever(raw, server) -> None:
    """A row value nested 1000 deep reads (orjson goes to 1024) but cannot be written as text."""
    client = stream(server)
    nested = b"[" * 1000 + b"]" * 1000
    body = b'{"batch_number": 1, "data": [[' + nested + b"]]}"
    Archive(raw, 1, client.day)(SourceResponse("http://source/data", 200, body, None, 0.1))
    with pytest.raises(PayloadQuarantined, match="RecursionError"):
        land_next_batch(raw, client)
    assert land_next_batch(raw, client).batch_number == 1  # the loop goes on
    assert [r[1] for r in responses(raw, client)] == ["quarantined", "landed"]


def test_a_refusal_is_archived_and_raised(raw, server) -> None:
    client = DataApiClient(server.url, 99, f"{DAY_PREFIX}{next(_days)}", 10.0, 2, 0.01)
    with pytest.raises(DataApiError, match="Número de grupo inválido"):
        land_next_batch(raw, client)
    [(status, outcome, reason)] = raw.execute(
        "SELECT status_code, outcome, reason FROM source_responses WHERE day = %s", (client.day,)
    ).fetchall()
    assert (status, outcome) == (400, "refused") and "inválido" in reason


def test_an_exhausted_source_is_archived_too(raw, server) -> None:
    client = stream(server)
    assert [land_next_batch(raw, client).batch_number for _ in range(4)] == [1, 2, 3, 4]
    assert land_next_batch(raw, client) is None
    assert responses(raw, client)[-1][:2] == (400, "exhausted")
    assert land_next_batch(raw, client) is None  # asks no more
    assert len(responses(raw, client)) == 5


def test_an_open_transaction_is_refused(pg_settings, server) -> None:
    with (
        psycopg.connect(pg_settings.database_url("raw_data")) as conn,
        pytest.raises(ValueError, match="autocommit"),
    ):
        land_next_batch(conn, stream(server))
