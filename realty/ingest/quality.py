"""Data-quality checks of a cleaned batch, run on what CLEAN holds (not on what we meant to write).

Each check returns a ``CheckOutcome``; the Dagster asset turns them into asset-check results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from realty.schema import STATUS_VALUES, US_STATES

# Upper bounds of the null fraction per optional column in a clean batch: about twice the rate
# seen in the real data, so a source that stops sending a field fails loudly.
MAX_NULL_FRACTION: dict[str, float] = {
    "brokered_by": 0.9,
    "bed": 0.5,
    "bath": 0.5,
    "acre_lot": 0.6,
    "street": 0.9,
    "zip_code": 0.05,
    "house_size": 0.6,
    "prev_sold_date": 0.9,
}
REQUIRED_COLUMNS = ("status", "price", "city", "state")

EXPECTED_TYPES: dict[str, str] = {
    "batch_key": "text", "row_index": "integer", "brokered_by": "bigint", "status": "text",
    "price": "double precision", "bed": "smallint", "bath": "smallint",
    "acre_lot": "double precision", "street": "bigint", "city": "text", "state": "text",
    "zip_code": "text", "house_size": "double precision", "prev_sold_date": "date",
    "row_hash": "text",
}  # fmt: skip


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, object] = field(default_factory=dict)


def check_schema(conn: psycopg.Connection, key: str) -> CheckOutcome:
    columns = dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'clean_listings'"
        ).fetchall()
    )
    mismatched = {c: columns.get(c) for c, t in EXPECTED_TYPES.items() if columns.get(c) != t}
    (bad_domain,) = conn.execute(
        """
        SELECT count(*) FROM clean_listings WHERE batch_key = %s AND (
            status <> ALL(%s) OR state <> ALL(%s) OR zip_code !~ '^[0-9]{5}$')
        """,
        (key, list(STATUS_VALUES), list(US_STATES)),
    ).fetchone()
    passed = not mismatched and bad_domain == 0
    return CheckOutcome(
        "schema",
        passed,
        "column types as declared; status, state and zip code in their domains",
        {"mismatched_columns": str(mismatched), "rows_outside_domain": bad_domain},
    )


def check_null_fractions(conn: psycopg.Connection, key: str) -> CheckOutcome:
    selects = ", ".join(f"avg(({c} IS NULL)::int)" for c in (*REQUIRED_COLUMNS, *MAX_NULL_FRACTION))
    row = conn.execute(
        f"SELECT count(*), {selects} FROM clean_listings WHERE batch_key = %s", (key,)
    ).fetchone()
    rows, fractions = (
        row[0],
        dict(zip((*REQUIRED_COLUMNS, *MAX_NULL_FRACTION), row[1:], strict=True)),
    )
    bounds = {**dict.fromkeys(REQUIRED_COLUMNS, 0.0), **MAX_NULL_FRACTION}
    over = {c: round(float(f), 4) for c, f in fractions.items() if f is not None and f > bounds[c]}
    return CheckOutcome(
        "null_fractions",
        rows > 0 and not over,
        "every column's null fraction within its bound (and the batch is not empty)",
        {"rows": rows, "over_bound": str(over) if over else "none"},
    )


def check_value_ranges(conn: psycopg.Connection, key: str) -> CheckOutcome:
    (violations,) = conn.execute(
        """
        SELECT count(*) FROM clean_listings WHERE batch_key = %s AND (
            price <= 0 OR bed < 0 OR bath < 0 OR acre_lot <= 0 OR house_size <= 0
            OR prev_sold_date > now()::date)
        """,
        (key,),
    ).fetchone()
    return CheckOutcome(
        "value_ranges",
        violations == 0,
        "prices, rooms, lot and house sizes positive; no sale dates in the future",
        {"violations": violations},
    )


def check_unique_keys(conn: psycopg.Connection, key: str) -> CheckOutcome:
    (duplicates,) = conn.execute(
        """
        SELECT count(*) FROM (
            SELECT row_hash FROM clean_listings
            WHERE row_hash IN (SELECT row_hash FROM clean_listings WHERE batch_key = %s)
            GROUP BY row_hash HAVING count(*) > 1) d
        """,
        (key,),
    ).fetchone()
    return CheckOutcome(
        "unique_keys",
        duplicates == 0,
        "no listing of this batch appears twice anywhere in CLEAN",
        {"duplicated_listings": duplicates},
    )


def check_reconciliation(
    raw_conn: psycopg.Connection, clean_conn: psycopg.Connection, key: str
) -> CheckOutcome:
    (raw_rows,) = raw_conn.execute(
        "SELECT count(*) FROM raw_listings WHERE batch_key = %s", (key,)
    ).fetchone()
    clean_rows, rejected_rows, overlap = clean_conn.execute(
        """
        SELECT (SELECT count(*) FROM clean_listings WHERE batch_key = %(k)s),
               (SELECT count(*) FROM rejected_listings WHERE batch_key = %(k)s),
               (SELECT count(*) FROM clean_listings c JOIN rejected_listings r
                  USING (batch_key, row_index) WHERE batch_key = %(k)s)
        """,
        {"k": key},
    ).fetchone()
    return CheckOutcome(
        "reconciliation",
        raw_rows == clean_rows + rejected_rows and overlap == 0,
        "raw rows = clean rows + rejected rows, and no row is both",
        {"raw_rows": raw_rows, "clean_rows": clean_rows, "rejected_rows": rejected_rows},
    )


def run_checks(
    raw_conn: psycopg.Connection, clean_conn: psycopg.Connection, key: str
) -> list[CheckOutcome]:
    return [
        check_schema(clean_conn, key),
        check_null_fractions(clean_conn, key),
        check_value_ranges(clean_conn, key),
        check_unique_keys(clean_conn, key),
        check_reconciliation(raw_conn, clean_conn, key),
    ]


CHECK_NAMES = ("schema", "null_fractions", "value_ranges", "unique_keys", "reconciliation")
