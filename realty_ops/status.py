"""What `realty status` reports: services up or down, their restarts under `realty up`, what
has been ingested, and what the configured stream of the source lost or sent unusable."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from realty.ingest.archive import source_record
from realty.settings import Settings
from realty.store.db import connect
from realty.store.ledger import batch_history
from realty_ops.stack import build_services, port_in_use, read_state, state_file


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    up: bool  # answers its readiness probe now
    url: str
    restarts: int | None  # by the running stack's supervisor; None: no stack recorded it
    supervisor_state: str | None  # running, restarting, given up; None: as restarts


def service_statuses(settings: Settings) -> list[ServiceStatus]:
    state = read_state(state_file(settings)) or {"services": []}
    supervised = {entry["name"]: entry for entry in state["services"]}
    rows = []
    for service in build_services(settings):
        if service.port is not None:
            up = port_in_use(settings.host, service.port) and service.ready()
        else:
            up = service.ready()
        entry = supervised.get(service.name, {})
        rows.append(
            ServiceStatus(
                service.name, up, service.url or "", entry.get("restarts"), entry.get("state")
            )
        )
    return rows


def ingestion_counts(settings: Settings) -> dict[str, int]:
    with (
        connect("raw_data", settings, connect_timeout=3) as raw,
        connect("clean_data", settings, connect_timeout=3) as clean,
    ):
        history = batch_history(raw, clean)
        source = source_record(raw, settings.group_number, settings.day)
    cleaned = [record for record in history if record.rows_clean is not None]
    return {
        "batches_landed": len(history),
        "batches_cleaned": len(cleaned),
        "raw_rows": sum(record.rows_landed for record in history),
        "clean_rows": sum(record.rows_clean for record in cleaned),
        "rejected_rows": sum(record.rows_rejected for record in cleaned),
        # of the configured stream (group and day): what never arrived, or was kept apart
        "missing_batches": source.missing_batches,
        "open_gaps": len(source.open_gaps),
        "quarantined_answers": len(source.quarantined),
        "failed_calls": source.failed_calls,
    }


def ingestion_summary(settings: Settings) -> str:
    try:
        counts = ingestion_counts(settings)
    except psycopg.Error as error:
        return f"ingestion: unknown (PostgreSQL not reachable: {str(error).splitlines()[0]})"
    return (
        f"ingestion: {counts['batches_landed']} batches landed ({counts['raw_rows']:,} rows), "
        f"{counts['batches_cleaned']} cleaned ({counts['clean_rows']:,} clean, "
        f"{counts['rejected_rows']:,} rejected)\n"
        f"source (group {settings.group_number}, {settings.day}): "
        f"{counts['missing_batches']} batches never arrived ({counts['open_gaps']} gaps), "
        f"{counts['quarantined_answers']} answers quarantined, {counts['failed_calls']} failed "
        "calls (raw_data.source_responses, source_gaps)"
    )
