"""PostgreSQL helpers: connections, database creation, schema migration and COPY in and out.

Bulk writes always go through COPY, streamed or in bounded chunks: never row-by-row INSERTs or
``DataFrame.to_sql`` (an order of magnitude slower; see bench/ingest.py).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from importlib import resources

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from realty.settings import DATABASES, Settings, get_settings

log = logging.getLogger(__name__)

COPY_CHUNK_ROWS = 50_000


def connect(database: str, settings: Settings | None = None, **kwargs) -> psycopg.Connection:
    """A connection to one of the platform's databases; ``kwargs`` go to ``psycopg.connect``."""
    settings = settings or get_settings()
    return connect_server(settings.server_url, database, **kwargs)


def connect_server(server_url: str, database: str, **kwargs) -> psycopg.Connection:
    """The one place realty opens a PostgreSQL connection (``connect`` and the Dagster
    resource, which knows the server's URL only, both come here)."""
    return psycopg.connect(f"{server_url}/{database}", **kwargs)


def ensure_databases(settings: Settings | None = None) -> list[str]:
    """Create the platform's databases if missing and migrate their schemas; return created."""
    settings = settings or get_settings()
    created = []
    with connect("postgres", settings, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in existing:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
    for name in ("raw_data", "clean_data"):
        migrate(name, settings)
    return created


def migrate(database: str, settings: Settings | None = None) -> None:
    """Apply ``realty/store/sql/<database>.sql`` (idempotent DDL)."""
    ddl = resources.files("realty.store").joinpath("sql", f"{database}.sql").read_text()
    with connect(database, settings) as conn:
        # One server-wide advisory lock: concurrent migrators (services starting together) queue.
        conn.execute("SELECT pg_advisory_xact_lock(4242)")
        conn.execute(ddl)


def _csv_copy_statement(table: str, columns: Sequence[str]) -> sql.Composed:
    # CSV format: an unquoted empty field is NULL; pyarrow quotes every string, empty included.
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _arrow_csv(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for index, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type):  # our timestamps are dates; PostgreSQL wants ISO
            table = table.set_column(index, column.name, table.column(index).cast(pa.date32()))
    buffer = io.BytesIO()
    # "needed" quotes every string, so an empty string ("") never reads back as NULL.
    pa_csv.write_csv(
        table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    )
    return buffer.getvalue()


def copy_frame(
    cur: psycopg.Cursor, table: str, frame: pd.DataFrame, chunk_rows: int = COPY_CHUNK_ROWS
) -> None:
    """COPY a DataFrame (NaN/None/NA = NULL) into ``table``, columns matched by name.

    pyarrow renders the CSV (about 10x faster than ``DataFrame.to_csv``)."""
    with cur.copy(_csv_copy_statement(table, list(frame.columns))) as copy:
        for start in range(0, len(frame), chunk_rows):
            copy.write(_arrow_csv(frame.iloc[start : start + chunk_rows]))


def copy_query_to_frame(
    conn: psycopg.Connection,
    query: sql.Composable,
    column_types: dict[str, pa.DataType] | None = None,
) -> pd.DataFrame:
    """Run ``query`` through COPY TO STDOUT into a DataFrame.

    Columns named in ``column_types`` are read as those types (pandas nullable/arrow dtypes);
    every other column comes back as arrow-backed text, where only an unquoted empty field is
    NULL: "NA", "null" and "" stay text, as delivered."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
    buffer = io.BytesIO()
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for data in copy:
            buffer.write(data)
    buffer.seek(0)
    types = column_types or {}
    table = pa_csv.read_csv(
        buffer,
        convert_options=pa_csv.ConvertOptions(
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            column_types=types,
        ),
    )
    schema = pa.schema(
        [pa.field(name, types.get(name, pa.string())) for name in table.column_names]
    )
    mapping = {pa.string(): pd.StringDtype("pyarrow"), pa.int64(): pd.Int64Dtype()}
    return table.cast(schema).to_pandas(types_mapper=mapping.get, date_as_object=True)
