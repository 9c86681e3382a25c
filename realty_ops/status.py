"""What `realty status` reports: services up or down, and what has been ingested."""

from __future__ import annotations

import psycopg

from realty.settings import Settings
from realty_ops.stack import build_services, port_in_use


def service_statuses(settings: Settings) -> list[tuple[str, bool, str]]:
    rows = []
    for service in build_services(settings):
        if service.port is not None:
            up = port_in_use(settings.host, service.port) and service.ready()
        else:
            up = service.ready()
        rows.append((service.name, up, service.url or ""))
    return rows


def ingestion_counts(settings: Settings) -> dict[str, int]:
    with psycopg.connect(settings.database_url("raw_data"), connect_timeout=3) as raw:
        landed, raw_rows = raw.execute(
            "SELECT count(*), coalesce(sum(row_count), 0) FROM raw_batches"
        ).fetchone()
    with psycopg.connect(settings.database_url("clean_data"), connect_timeout=3) as clean:
        cleaned, clean_rows, rejected_rows = clean.execute(
            "SELECT count(*), coalesce(sum(clean_rows), 0), coalesce(sum(rejected_rows), 0) "
            "FROM clean_batches"
        ).fetchone()
    return {
        "batches_landed": landed,
        "batches_cleaned": cleaned,
        "raw_rows": raw_rows,
        "clean_rows": clean_rows,
        "rejected_rows": rejected_rows,
    }


def ingestion_summary(settings: Settings) -> str:
    try:
        counts = ingestion_counts(settings)
    except psycopg.Error as error:
        return f"ingestion: unknown (PostgreSQL not reachable: {str(error).splitlines()[0]})"
    return (
        f"ingestion: {counts['batches_landed']} batches landed ({counts['raw_rows']:,} rows), "
        f"{counts['batches_cleaned']} cleaned ({counts['clean_rows']:,} clean, "
        f"{counts['rejected_rows']:,} rejected)"
    )
