"""RAW landing on a real PostgreSQL server: rows land exactly as psycopg's ``write_row`` (the
path before the fast COPY text) would store them, the body is stored compressed and read back
byte for byte, and a batch lands whole or not at all."""

from __future__ import annotations

import itertools
import math
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import JsonDumper

from realty.ingest import copy_text
from realty.ingest.copy_text import CHUNK_ROWS, _exact_text, _fast_text
from realty.ingest.data_api import FetchedBatch, parse_body
from realty.ingest.landing import (
    PayloadConflict,
    _write_rows,
    ensure_rows,
    land_payload,
    partition_name,
    stored_body,
)
from realty.schema import LISTING_COLUMNS
from source.generator import generate_batch

WIDTH = len(LISTING_COLUMNS)
COLUMNS = ("batch_key", "row_index", *LISTING_COLUMNS)
_keys = itertools.count()
DAY_PREFIX = "landingtest"  # every batch these tests write has a day starting with it


@pytest.fixture(scope="module")
def raw_conn(pg_settings):
    with psycopg.connect(pg_settings.database_url("raw_data"), autocommit=True) as conn:
        yield conn


@pytest.fixture
def raw(raw_conn):
    """The RAW database; what the test landed is removed after it, so that the source sensor
    of other tests on this server does not find these batches."""
    yield raw_conn
    pattern = f"g1-{DAY_PREFIX}%"
    raw_conn.execute("DELETE FROM raw_listings WHERE batch_key LIKE %s", (pattern,))
    raw_conn.execute("DELETE FROM raw_batches WHERE batch_key LIKE %s", (pattern,))


def fresh_day(name: str) -> str:
    return f"{DAY_PREFIX}{name}{next(_keys)}"


def fresh_key(name: str) -> str:
    return f"g1-{fresh_day(name)}-b001"


def batch_of(rows: list, day: str = DAY_PREFIX) -> FetchedBatch:
    """A batch as the client makes it: the rows through JSON and back."""
    body = orjson.dumps({"group_number": 1, "day": day, "batch_number": 1, "data": rows})
    return parse_body(body)


def copy_records(cur: psycopg.Cursor, table: str, columns: tuple[str, ...], records) -> None:
    """The reference writer (RAW's path before ``realty.ingest.copy_text``): psycopg's
    ``write_row``, a dict or list where a scalar belongs (a garbled payload) written as its JSON
    text."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    cur.adapters.register_dumper(dict, JsonDumper)
    cur.adapters.register_dumper(list, JsonDumper)
    with cur.copy(statement) as copy:
        for record in records:
            copy.write_row(record)


def stored_rows(conn: psycopg.Connection, key: str) -> list[tuple]:
    return conn.execute(
        "SELECT * FROM raw_listings WHERE batch_key = %s ORDER BY row_index", (key,)
    ).fetchall()


def land_both_ways(conn: psycopg.Connection, data: list) -> tuple[list[tuple], list[tuple]]:
    """The rows of ``data`` written by the landing path and by psycopg's write_row, each under
    its own key; returned without the key, to compare."""
    batch = FetchedBatch(1, DAY_PREFIX, 1, b"", data)
    new, old = fresh_key("new"), fresh_key("old")
    with conn.transaction():
        _write_rows(conn, new, batch)
        with conn.cursor() as cur:
            records = ((old, i, *row) for i, row in enumerate(batch.delivered_rows()))
            copy_records(cur, "raw_listings", COLUMNS, records)
    return [r[1:] for r in stored_rows(conn, new)], [r[1:] for r in stored_rows(conn, old)]


# Values a payload can hold once decoded: what JSON has, and floats JSON cannot spell (NaN and
# infinities, which Python's json reads). Text without NUL or lone surrogates, which PostgreSQL
# text cannot hold either way.
text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
tricky_text = st.sampled_from(
    ["", "null", "\\N", "\\", "a\tb", "a\nb", "a\r\nb", 'say "hi"', "a,b", "[x]", "{}", "true",
     "e-5", "1e-05", "0.00001", "é ü 中文 🏠", "\x7f\x01\x1f", " ",
     "123456789012345678901234567890"]
)  # fmt: skip
scalar = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    text,
    tricky_text,
)
value = st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(text, scalar, max_size=2))
# Plain values: what real payloads hold, all of which the fast path must take. Text that looks
# like JSON syntax the fast path cannot tell from a value (see copy_text._plain) is not plain.
NOT_PLAIN_TEXT = re.compile(r'[\\",\[{\x00-\x1f]|true|false|null|[0-9]e-|-0\.0000')
plain_value = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x == 0 or abs(x) >= 1e-4),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12).filter(
        lambda s: NOT_PLAIN_TEXT.search(s) is None
    ),
)
row = st.one_of(
    st.lists(value, min_size=WIDTH, max_size=WIDTH),
    st.lists(value, max_size=WIDTH + 2),  # too short or too long
    st.dictionaries(st.sampled_from(LISTING_COLUMNS), value),  # an object, maybe missing keys
    scalar,  # not a row at all
)
db_examples = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@db_examples
@given(data=st.lists(row, min_size=1, max_size=30))
def test_any_rows_land_as_write_row_stores_them(raw, data: list) -> None:
    new, old = land_both_ways(raw, data)
    assert new == old and len(new) == len(data)


@db_examples
@given(data=st.lists(st.lists(plain_value, min_size=WIDTH, max_size=WIDTH), min_size=1))
def test_plain_rows_take_the_fast_path_and_land_as_write_row_stores_them(raw, data) -> None:
    assert _fast_text(0, data) is not None
    new, old = land_both_ways(raw, data)
    assert new == old


def test_awkward_values_land_as_write_row_stores_them(raw) -> None:
    rows = [
        [None, "", "null", "\\N", "tab\there", "new\nline\r", 'a "quote"', "back\\slash",
         "comma, inside", "[bracket]", "{brace}", "ünï©ødé 🏠"],
        [12345678901234567890123, -(2**63), 2**64 - 1, 1e16, 1e-05, 9.9e-05, 1e-300, 0.0001,
         -0.0, 1.7976931348623157e308, 5e-324, 103378.0],
        [True, False, {"a": [1, "é"]}, [1, 2.5], [], {}, "true", "false", "1e-05", "0.00001",
         "103378.0", "e-"],
    ]  # fmt: skip
    new, old = land_both_ways(raw, rows)
    assert new == old
    assert new[0][1:4] == (None, "", "null")  # NULL, empty text and the text "null" stay apart
    assert new[1][1] == "12345678901234567890123" and new[1][5] == "1e-05"
    assert new[2][1:3] == ("t", "f")


def test_nan_and_infinity_from_the_lenient_decoder_land_as_before(raw) -> None:
    body = b'{"batch_number": 1, "day": "d", "data": [[NaN, Infinity, -Infinity, null, 1.5]]}'
    batch = parse_body(body, 1)
    assert math.isnan(batch.data[0][0])
    new, old = land_both_ways(raw, batch.data)
    assert new == old and new[0][1:6] == ("nan", "inf", "-inf", None, "1.5")


def test_generated_batches_take_the_fast_path(raw) -> None:
    """The simulator's payloads (ids as floats, missing values, dirt) never fall back."""
    rows = generate_batch(1, "landing", 1, 3_000, 10)
    batch = batch_of(rows)
    assert _fast_text(0, list(batch.delivered_rows())) is not None
    new, old = land_both_ways(raw, batch.data)
    assert new == old and len(new) == 3_000


def test_chunks_fall_back_one_by_one(raw, monkeypatch) -> None:
    """A chunk that is not plain is written value by value; the others stay fast."""
    exact_chunks = []

    def exact_text(start: int, rows: list[list]) -> bytes:
        exact_chunks.append(start)
        return _exact_text(start, rows)

    monkeypatch.setattr(copy_text, "CHUNK_ROWS", 4)
    monkeypatch.setattr(copy_text, "_exact_text", exact_text)
    rows = [[i, "x", 1.5, None, *[str(i)] * (WIDTH - 4)] for i in range(10)]
    rows[5][1] = "tab\there"  # only the second chunk (rows 4..7) is not plain
    new, old = land_both_ways(raw, rows)
    assert new == old and new[5][2] == "tab\there"
    assert exact_chunks == [4]


def test_landing_stores_the_body_compressed_and_reads_it_back(raw) -> None:
    batch = batch_of(generate_batch(1, "landing", 2, 500, 10), day=fresh_day("body"))
    landed = land_payload(raw, batch, "http://source")
    assert landed.new and landed.row_count == 500
    body, encoding = raw.execute(
        "SELECT body, body_encoding FROM raw_batches WHERE batch_key = %s", (batch.key,)
    ).fetchone()
    assert encoding == "zstd" and len(body) < len(batch.body) / 2
    assert stored_body(body, encoding) == batch.body
    assert ensure_rows(raw, batch.key).respread is False
    assert land_payload(raw, batch, "http://source").new is False  # again: a no-op


def test_rows_are_respread_from_a_body_stored_as_is(raw) -> None:
    """Batches landed before bodies were compressed (body_encoding 'identity')."""
    batch = batch_of(
        [[1, "for_sale", 100000, None, None, 0.5, 7, "A", "Ohio", "43001", None, None]]
    )
    key = fresh_key("identity")
    raw.execute(
        """
        INSERT INTO raw_batches (batch_key, group_number, day, batch_number, fetched_at,
                                 source_url, row_count, payload_hash, body)
        VALUES (%s, 1, %s, 1, now(), 'x', 1, 'h', %s)
        """,
        (key, key, batch.body),
    )
    respread = ensure_rows(raw, key)
    assert respread.respread is True and respread.batch.data == batch.data
    assert stored_rows(raw, key)[0][2:5] == ("1", "for_sale", "100000")


def test_a_batch_lands_whole_or_not_at_all(raw) -> None:
    """A row the server refuses (NUL in text) in the last chunk: no batch row, no rows."""
    rows = generate_batch(1, "landing", 3, CHUNK_ROWS + 10, 10)
    batch = batch_of(rows, day=fresh_day("atomic"))
    batch.data[-1][7] = "bad\x00city"
    with pytest.raises(psycopg.DataError):
        land_payload(raw, batch, "http://source")
    assert raw.execute(
        "SELECT (SELECT count(*) FROM raw_batches WHERE batch_key = %(k)s), "
        "(SELECT count(*) FROM raw_listings WHERE batch_key = %(k)s)",
        {"k": batch.key},
    ).fetchone() == (0, 0)


def test_exact_text_quotes_every_value_but_null() -> None:
    text = _exact_text(7, [['a\\b\tc\nd\re "q",', None, True, {"x": 1}, "null", ""]])
    assert text == b'7,"a\\b\tc\nd\re ""q"",",null,"t","{""x"": 1}","null",""'


def test_rows_that_look_like_copy_syntax_land_as_write_row_stores_them(raw) -> None:
    """What COPY's CSV and text formats read specially, alone and across lines."""
    rows = [["\\.", "x\n\\.\ny", "\\N", '"', '""', ",", "\r\n", "null", "NULL", " null", "", "\\"]]
    new, old = land_both_ways(raw, rows)
    assert new == old and new[0][1:4] == ("\\.", "x\n\\.\ny", "\\N")


def partitions_of(conn: psycopg.Connection, key: str) -> list[tuple[str, int]]:
    """The partitions of raw_listings whose bound names ``key``, with their number of indexes."""
    return conn.execute(
        """
        SELECT c.relname, (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid)
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'raw_listings'::regclass
          AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%%L)', %s::text)
        """,
        (key,),
    ).fetchall()


def test_each_batch_is_a_partition_without_index_and_a_respread_replaces_it(raw) -> None:
    batch = batch_of(generate_batch(1, "landing", 4, 300, 10), day=fresh_day("partition"))
    land_payload(raw, batch, "http://source")
    assert partitions_of(raw, batch.key) == [(partition_name(batch.key), 0)]
    landed = stored_rows(raw, batch.key)
    assert [r[1] for r in landed] == list(range(300))
    raw.execute("DELETE FROM raw_listings WHERE batch_key = %s AND row_index >= 100", (batch.key,))
    assert ensure_rows(raw, batch.key).respread is True
    assert stored_rows(raw, batch.key) == landed
    assert partitions_of(raw, batch.key) == [(partition_name(batch.key), 0)]


def test_concurrent_landings_of_one_batch_land_it_once(raw, pg_settings) -> None:
    batch = batch_of(generate_batch(1, "landing", 5, 2_000, 10), day=fresh_day("concurrent"))

    def land(_: int) -> bool:
        with psycopg.connect(pg_settings.database_url("raw_data"), autocommit=True) as conn:
            return land_payload(conn, batch, "http://source").new

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(land, range(2))) == [False, True]
    assert len(stored_rows(raw, batch.key)) == 2_000


OLD_RAW_LISTINGS = f"""
CREATE TABLE raw_listings (
    batch_key text NOT NULL, row_index integer NOT NULL,
    {", ".join(f"{column} text" for column in LISTING_COLUMNS)},
    PRIMARY KEY (batch_key, row_index)
)
"""


def test_raw_listings_from_before_partitions_becomes_the_default_partition(pg_settings) -> None:
    """An older RAW database: its rows stay readable, a re-spread moves a batch to its own
    partition, new batches land in theirs; migrating again changes nothing."""
    database = f"raw_before_partitions_{next(_keys)}"
    with psycopg.connect(pg_settings.database_url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    ddl = resources.files("realty.store").joinpath("sql", "raw_data.sql").read_text()
    old = batch_of(generate_batch(1, "landing", 6, 50, 10), day="old")
    new = batch_of(generate_batch(1, "landing", 7, 50, 10), day="new")
    with psycopg.connect(pg_settings.database_url(database), autocommit=True) as conn:
        conn.execute(OLD_RAW_LISTINGS)
        with conn.cursor() as cur:
            records = ((old.key, i, *row) for i, row in enumerate(old.delivered_rows()))
            copy_records(cur, "raw_listings", COLUMNS, records)
        conn.execute(ddl)
        conn.execute(ddl)
        assert len(stored_rows(conn, old.key)) == 50
        conn.execute(
            """
            INSERT INTO raw_batches (batch_key, group_number, day, batch_number, fetched_at,
                                     source_url, row_count, payload_hash, body)
            VALUES (%s, 1, 'old', 6, now(), 'x', 51, 'h', %s)
            """,
            (old.key, old.body),
        )  # one row more than it has: re-spread
        assert ensure_rows(conn, old.key).respread is True
        assert conn.execute("SELECT count(*) FROM raw_listings_default").fetchone() == (0,)
        assert partitions_of(conn, old.key) == [(partition_name(old.key), 0)]
        assert land_payload(conn, new, "http://source").new is True
        assert len(stored_rows(conn, new.key)) == 50
    with psycopg.connect(pg_settings.database_url("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {database}")


def test_other_content_under_a_landed_key_is_refused_and_the_first_copy_kept(raw) -> None:
    day = fresh_day("conflict")
    first = batch_of(generate_batch(1, "landing", 8, 20, 10), day=day)
    other = batch_of(generate_batch(1, "landing", 9, 20, 10), day=day)  # same key, other rows
    land_payload(raw, first, "http://source")
    landed = stored_rows(raw, first.key)
    with pytest.raises(PayloadConflict, match="landed before with other content"):
        land_payload(raw, other, "http://source")
    assert ensure_rows(raw, first.key).batch.body == first.body
    assert stored_rows(raw, first.key) == landed
