"""The data API client against real simulators on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from realty.ingest.data_api import (
    REPLACEMENT,
    DataApiClient,
    DataApiError,
    UnusablePayload,
    batch_key,
    normalise_row,
    parse_batch_key,
    parse_body,
    value_text,
)
from realty.schema import LISTING_COLUMNS
from realty_ops.sandbox import free_port
from source.app import SimulatorConfig
from tests.source.conftest import SimulatorServer


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SimulatorServer]]:
    """The same generated batches served as lists and as objects (each its own counters)."""
    home = tmp_path_factory.mktemp("data-api")
    started = {
        row_format: SimulatorServer(
            SimulatorConfig(
                state_file=home / f"{row_format}.json", rows_per_batch=500, row_format=row_format
            )
        ).start()
        for row_format in ("list", "object")
    }
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def server(servers: dict[str, SimulatorServer]) -> Iterator[SimulatorServer]:
    yield servers["list"]
    servers["list"].set_faults()


DAYS = itertools.count()


def client(server: SimulatorServer, day: str, **options: float) -> DataApiClient:
    settings = {"timeout_s": 10.0, "retries": 2, "backoff_s": 0.01, **options}
    return DataApiClient(server.url, 1, day, **settings)


@pytest.mark.parametrize(
    ("group", "day", "number", "key"),
    [
        (1, "Tuesday", 3, "g1-tuesday-b003"),
        (10, "Wednesday", 12, "g10-wednesday-b012"),
        (2, " Two Words! ", 1000, "g2-twowords-b1000"),
    ],
)
def test_batch_keys(group: int, day: str, number: int, key: str) -> None:
    assert batch_key(group, day, number) == key
    assert parse_batch_key(key) == (group, key.split("-")[1], number)


def test_batch_key_of_a_day_without_ascii_letters_is_still_a_slug() -> None:
    key = batch_key(1, "火曜日", 1)
    assert key == batch_key(1, "火曜日", 1) != batch_key(1, "水曜日", 1)
    assert parse_batch_key(key)[0] == 1


@pytest.mark.parametrize("key", ["g1-tuesday", "tuesday-b001", "g1-Tue-b001", "g-x-b1"])
def test_parse_batch_key_refuses_other_text(key: str) -> None:
    with pytest.raises(ValueError, match="not a batch key"):
        parse_batch_key(key)


@pytest.mark.parametrize(
    ("value", "column", "text"),
    [
        (103378.0, "brokered_by", "103378"),
        ("103378.0", "street", "103378"),
        (1962661, "street", "1962661"),
        (601.0, "zip_code", "00601"),
        ("601.0", "zip_code", "00601"),
        (601, "zip_code", "00601"),
        ("02127", "zip_code", "02127"),
        (1.5, "bath", "1.5"),
        (3.0, "bed", "3"),
        (0.28, "acre_lot", "0.28"),
        (239800, "price", "239800"),
        ("call for price", "price", "call for price"),
        (math.nan, "price", None),
        ("", "city", None),
        ("   ", "city", None),
        ("NaN", "house_size", None),
        (None, "state", None),
        ("Adjuntas", "city", "Adjuntas"),
        ([1, 2], "price", "[1,2]"),
    ],
)
def test_values_become_text(value: object, column: str, text: str | None) -> None:
    assert value_text(value, column) == text


def test_malformed_rows_are_kept_with_what_could_be_read() -> None:
    full = ["1", "for_sale", 100000, 3, 2, 0.5, "9", "Boston", "Massachusetts", 2127, 1500, None]
    row, well_formed = normalise_row(full)
    assert well_formed and row["zip_code"] == "02127" and row["price"] == "100000"
    short, well_formed = normalise_row(full[:5])
    assert not well_formed and short["bath"] == "2" and short["city"] is None
    long, well_formed = normalise_row([*full, "extra"])
    assert not well_formed and list(long) == list(LISTING_COLUMNS)
    partial, well_formed = normalise_row({"price": 5, "state": "Ohio", "other": 1})
    assert not well_formed and (partial["price"], partial["bed"]) == ("5", None)
    nothing, well_formed = normalise_row("#N/A")
    assert not well_formed and set(nothing.values()) == {None}


def test_parse_body_reads_what_json_libraries_write() -> None:
    body = b'{"batch_number": 2, "data": [[NaN, "sold", 1.0]]}'  # Python's json writes NaN
    batch = parse_body(body, group_number=4, day="Friday")
    assert (batch.key, batch.malformed, batch.body) == ("g4-friday-b002", (0,), body)
    assert batch.rows[0]["brokered_by"] is None and batch.rows[0]["price"] == "1"
    for bad in (b"<html>busy</html>", b'{"data": []}', b"[1, 2]", b"[" * 100_000):
        with pytest.raises(UnusablePayload, match="not a /data batch"):
            parse_body(bad, 1, "Friday")


@pytest.mark.parametrize("number", ["-1", "0", '"3"', "2.0", "true", "null", str(2**31)])
def test_a_batch_number_that_is_not_one_two_three_is_refused(number: str) -> None:
    body = f'{{"batch_number": {number}, "data": []}}'.encode()
    with pytest.raises(UnusablePayload, match=r"batch_number .* is not a whole number"):
        parse_body(body, 1, "Friday")


def test_text_postgresql_cannot_store_is_replaced_and_counted() -> None:
    body = (
        b'{"batch_number": 1, "data": [["a\\u0000b", "\\ud800", ["\\uDC00"], '
        b'"\\ud83c\\udfe0", "\\\\u0000"], {"city": "x\\u0000"}]}'
    )
    batch = parse_body(body, 1, "Friday")
    assert batch.data == [
        [f"a{REPLACEMENT}b", REPLACEMENT, [REPLACEMENT], "\U0001f3e0", "\\u0000"],
        {"city": f"x{REPLACEMENT}"},
    ]
    assert batch.sanitized == 4 and batch.body == body  # the body stays as delivered
    assert parse_body(b'{"batch_number": 1, "data": [["\\u00e9"]]}', 1, "F").sanitized == 0


def test_lists_and_objects_give_the_same_rows(servers: dict[str, SimulatorServer]) -> None:
    as_lists = client(servers["list"], "Formats").fetch_next()
    as_objects = client(servers["object"], "Formats").fetch_next()
    assert as_lists.key == as_objects.key == "g1-formats-b001"
    assert as_lists.rows == as_objects.rows
    assert len(as_lists.rows) == 500 and as_lists.malformed == ()
    assert orjson.loads(as_objects.body)["data"][0].keys() == set(LISTING_COLUMNS)


def test_float_ids_and_zips_are_normalised(server: SimulatorServer) -> None:
    batch = client(server, "Floats").fetch_next()
    delivered = orjson.loads(batch.body)["data"]
    floats = [i for i, row in enumerate(delivered) if isinstance(row[9], float)]
    assert floats  # the generator sends some, as pandas-written files do
    for index in floats:
        row = batch.rows[index]
        assert len(row["zip_code"]) == 5 and row["zip_code"].isdigit()
        assert row["brokered_by"] is None or row["brokered_by"].isdigit()
    assert all(r["zip_code"] is None or len(r["zip_code"]) == 5 for r in batch.rows)


def test_exhaustion_is_none_and_restart_starts_over(server: SimulatorServer) -> None:
    api = client(server, "Exhaustion")
    numbers = [api.fetch_next().batch_number for _ in range(10)]
    assert numbers == list(range(1, 11))
    assert api.fetch_next() is None
    assert api.fetch_next() is None
    api.restart()
    assert api.fetch_next().key == "g1-exhaustion-b001"


def test_bad_group_is_an_error_with_the_message(server: SimulatorServer) -> None:
    api = DataApiClient(server.url, 11, "Tuesday", retries=3, backoff_s=5)
    started = time.perf_counter()
    with pytest.raises(DataApiError, match="400: Número de grupo inválido"):
        api.fetch_next()
    with pytest.raises(DataApiError, match="Número de grupo inválido"):
        api.restart()
    assert time.perf_counter() - started < 2  # a 400 is not retried


def test_transient_failures_are_called_again_and_every_response_archived(
    server: SimulatorServer,
) -> None:
    server.set_faults(fail_next=2)
    archived = []
    batch = client(server, "Retry", retries=2).fetch_next(archived.append)
    assert batch.batch_number == 1
    assert [r.status_code for r in archived] == [503, 503, 200]
    assert archived[-1].body == batch.body and archived[0].retryable


@pytest.mark.parametrize(
    ("relabel", "problem"),
    [
        ({"batch_number": -1}, "batch_number -1 is not a whole number"),
        ({"group_number": 2}, "batch 1 of group 2 day 'Stream', not of the stream asked for"),
        ({"day": "Monday"}, "day 'Monday', not of the stream asked for"),
    ],
)
def test_a_batch_of_another_stream_is_unusable(server: SimulatorServer, relabel, problem) -> None:
    server.set_faults(relabel_next=1, relabel=relabel)
    day = f"Stream{next(DAYS)}"
    with pytest.raises(UnusablePayload, match=problem.replace("Stream", day)):
        client(server, day).fetch_next()
    assert client(server, day).fetch_next().batch_number == 2


def test_a_truncated_body_is_unusable(server: SimulatorServer) -> None:
    server.set_faults(truncate_next=1)
    archived = []
    with pytest.raises(UnusablePayload, match=r"answered 200 with .* bytes that are not a /data"):
        client(server, "Truncated").fetch_next(archived.append)
    assert [r.status_code for r in archived] == [200] and archived[0].body.startswith(b"{")


def test_no_answer_is_a_response_too() -> None:
    response = DataApiClient(f"http://127.0.0.1:{free_port()}", 1, "Tuesday", 1.0).get_data()
    assert (response.status_code, response.body) == (None, b"")
    assert response.retryable and response.error.startswith("ConnectError")


def test_gives_up_after_the_retries_without_losing_a_batch(server: SimulatorServer) -> None:
    server.set_faults(fail_next=10)
    with pytest.raises(DataApiError, match="failed 3 times: HTTP 503"):
        client(server, "GiveUp", retries=2).fetch_next()
    server.set_faults()
    assert client(server, "GiveUp").fetch_next().batch_number == 1


def test_a_slow_source_times_out(server: SimulatorServer) -> None:
    server.set_faults(latency_s=1.5)
    started = time.perf_counter()
    with pytest.raises(DataApiError, match="failed 2 times: ReadTimeout"):
        client(server, "Slow", timeout_s=0.3, retries=1).fetch_next()
    assert time.perf_counter() - started < 1.5


def test_an_absent_source_is_an_error() -> None:
    api = DataApiClient(f"http://127.0.0.1:{free_port()}", 1, "Tuesday", 1.0, 1, 0.01)
    with pytest.raises(DataApiError, match="failed 2 times: ConnectError"):
        api.fetch_next()


def test_malformed_rows_do_not_stop_the_batch(server: SimulatorServer) -> None:
    server.set_faults(malformed_fraction=0.3)
    batch = client(server, "Sloppy").fetch_next()
    assert len(batch.rows) == 500
    assert 75 < len(batch.malformed) < 200
    assert all(list(row) == list(LISTING_COLUMNS) for row in batch.rows)
    assert any(batch.rows[i]["price"] == "call for price" for i in range(500))


@pytest.mark.slow
def test_three_hundred_thousand_rows(tmp_path: Path) -> None:
    config = SimulatorConfig(state_file=tmp_path / "state.json", rows_per_batch=300_000)
    server = SimulatorServer(config).start()
    try:
        batch = client(server, "Big").fetch_next()
    finally:
        server.stop()
    assert len(batch.rows) == 300_000
    assert len(batch.body) > 20_000_000
