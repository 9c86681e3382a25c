"""The embedded PostgreSQL server and the schema migrations, on a real server."""

from __future__ import annotations

import psycopg
import pytest

from realty.settings import DATABASES, Settings
from realty.store.db import ensure_databases
from realty_ops.sandbox import make_settings, temporary_stack
from realty_ops.stack import Stack, StackError


def test_databases_exist_and_migrations_are_idempotent(pg_settings: Settings) -> None:
    with psycopg.connect(pg_settings.database_url("postgres")) as conn:
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert set(DATABASES) <= names
    assert ensure_databases(pg_settings) == []  # second run creates nothing and does not fail
    with psycopg.connect(pg_settings.database_url("clean_data")) as conn:
        tables = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    assert {"clean_batches", "clean_listings", "rejected_listings"} <= tables


def test_server_listens_on_tcp_loopback(pg_settings: Settings) -> None:
    with psycopg.connect(pg_settings.database_url("raw_data")) as conn:
        (address,) = conn.execute("SELECT inet_server_addr()::text").fetchone()
    assert address.startswith("127.0.0.1")


def test_taken_port_is_a_clear_error(pg_settings: Settings, tmp_path) -> None:
    clashing = make_settings(tmp_path, pg_port=pg_settings.pg_port)
    with pytest.raises(
        StackError, match=r"postgres: port \d+ on 127.0.0.1 is already taken.*REALTY_PG_PORT"
    ):
        Stack(clashing, only=("postgres",)).start()


def test_restart_keeps_data(tmp_path) -> None:
    settings = make_settings(tmp_path)
    stack = Stack(settings, only=("postgres",))
    stack.start()
    with psycopg.connect(settings.database_url("raw_data"), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    stack.stop()
    stack = Stack(settings, only=("postgres",))
    stack.start()
    try:
        with psycopg.connect(settings.database_url("raw_data")) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        stack.stop()


def test_temporary_stack_serves_while_open_then_stops_and_leaves_nothing() -> None:
    with (
        temporary_stack(("postgres",)) as settings,
        psycopg.connect(settings.database_url("raw_data")) as conn,
    ):
        assert conn.execute("SELECT to_regclass('raw_batches')::text").fetchone() == (
            "raw_batches",
        )
    assert not settings.home.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(settings.database_url("raw_data"), connect_timeout=5)
