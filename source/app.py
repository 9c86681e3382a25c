"""The data-API simulator: the course API's routes, messages and status codes, plus ``/health``
and fault modes for tests.

- ``GET /data?group_number=N&day=D`` delivers the next batch of that group and day (1-based
  ``batch_number``) and counts it; once all are delivered it answers 400 with the course API's
  exact Spanish message.
- ``GET /restart_data_generation?group_number=N&day=D`` starts that group and day over.
- Batches come from the built-in generator (``source.generator``) or, with ``csv`` set, from
  consecutive slices of a real file (``source.csv_slices``). Both are deterministic, so a batch
  delivered again after a restart is byte-for-byte the same.
- Counters live in a JSON file (``source.state``) and survive a restart of the simulator.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Literal

import orjson
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from realty.schema import LISTING_COLUMNS
from realty.settings import Settings
from source.csv_slices import CsvSlices
from source.faults import UNSTORABLE, Faults, FaultState, garble, with_value
from source.generator import generate_batch, seed_for
from source.state import CounterStore

log = logging.getLogger(__name__)

EXHAUSTED_DETAIL = "Ya se recolectó toda la información mínima necesaria"
BAD_GROUP_DETAIL = "Número de grupo inválido"
FAILURE_DETAIL = "Falla transitoria simulada"
GARBLE_SALT = 0x5EED  # malformed rows are not placed where the generator's draws are


class SimulatorConfig(BaseModel):
    state_file: Path
    csv: Path | None = Field(None, description="Serve this CSV in slices instead of generating")
    rows_per_batch: int = Field(20_000, ge=0, description="Rows of a generated batch")
    batches: int = Field(10, ge=1, description="Batches per group and day")
    groups: int = Field(10, ge=1, description="Valid group numbers are 1..groups")
    row_format: Literal["list", "object"] = "list"
    faults: Faults = Field(default_factory=Faults)

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulatorConfig:
        return cls(
            state_file=settings.simulator_state_file,
            csv=settings.source_csv,
            rows_per_batch=settings.source_rows_per_batch,
            batches=settings.source_batches,
        )


class Simulator:
    """The state behind the routes: counters, faults and where rows come from."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.counters = CounterStore(config.state_file)
        self.faults = FaultState(config.faults)
        # Read the file now: a bad file fails the start, not the first call.
        self.csv_slices = CsvSlices(config.csv, config.batches) if config.csv else None

    def next_body(self, group_number: int, day: str) -> bytes:
        """The JSON body of the next batch; raises the HTTP errors the course API answers."""
        if self.faults.count_call_and_fail():
            log.info("simulated failure for group %s day %s", group_number, day)
            raise HTTPException(self.faults.faults.fail_status, FAILURE_DETAIL)
        batch_number = self.counters.take_next(group_number, day, self.config.batches)
        if batch_number is None:
            raise HTTPException(400, EXHAUSTED_DETAIL)
        rows = self.rows(group_number, day, batch_number)
        log.info("group %s day %s: batch %d, %d rows", group_number, day, batch_number, len(rows))
        payload = {
            "group_number": group_number,
            "day": day,
            "batch_number": batch_number,
            "data": rows,
        }
        return self._faulty(payload)

    def _faulty(self, payload: dict) -> bytes:
        """The body of a counted batch, with the faults that apply after counting."""
        faults = self.faults
        if faults.take("relabel_next"):
            payload |= faults.faults.relabel
        if faults.take("unstorable_next"):
            rows = payload["data"]
            for column, text in UNSTORABLE.items():
                rows[:2] = [with_value(row, column, text) for row in rows[:2]]
            body = json.dumps(payload).encode()  # orjson refuses a lone surrogate
        else:
            body = orjson.dumps(payload)
        if faults.take("advance_and_fail_next"):
            log.info("simulated failure after counting batch %s", payload["batch_number"])
            raise HTTPException(faults.faults.fail_status, FAILURE_DETAIL)
        if faults.take("truncate_next"):
            return body[: len(body) // 2]
        return body

    def rows(self, group_number: int, day: str, batch_number: int) -> list:
        """The rows of a batch in the configured format, with the configured faults."""
        if self.faults.take("empty_next"):
            return []
        if self.csv_slices is not None:
            rows = self.csv_slices.rows(batch_number)
        else:
            rows = generate_batch(
                group_number, day, batch_number, self.config.rows_per_batch, self.config.batches
            )
        if self.config.row_format == "object":
            rows = [dict(zip(LISTING_COLUMNS, row, strict=True)) for row in rows]
        fraction = self.faults.faults.malformed_fraction
        if fraction:
            rows = garble(rows, fraction, seed_for(group_number, day, batch_number) ^ GARBLE_SALT)
        return rows


def create_app(config: SimulatorConfig) -> FastAPI:
    simulator = Simulator(config)
    app = FastAPI(
        title="realty data-API simulator",
        version="1.0",
        description="The course data API: batches of realtor.com listings per group and day.",
    )
    app.state.simulator = simulator

    def check_group(group_number: int) -> None:
        if not 1 <= group_number <= config.groups:
            raise HTTPException(400, BAD_GROUP_DETAIL)

    @app.get("/data")
    async def data(
        group_number: int = Query(..., description=f"1..{config.groups}"),
        day: str = Query(..., min_length=1, pattern=r"\S", description="e.g. Tuesday"),
    ) -> Response:
        """The next batch of this group and day; 400 once every batch was delivered."""
        check_group(group_number)
        latency = simulator.faults.faults.latency_s
        if latency:
            await asyncio.sleep(latency)
        # Generating and serialising 300k rows takes a second: keep the event loop free.
        body = await run_in_threadpool(simulator.next_body, group_number, day)
        return Response(body, media_type="application/json")

    @app.get("/restart_data_generation")
    def restart(
        group_number: int = Query(...), day: str = Query(..., min_length=1, pattern=r"\S")
    ) -> dict:
        """Start this group and day over from batch 1."""
        check_group(group_number)
        simulator.counters.reset(group_number, day)
        log.info("restarted group %s day %s", group_number, day)
        return {
            "ok": True,
            "group_number": group_number,
            "day": day,
            "message": f"Generación de datos reiniciada para el grupo {group_number} ({day})",
        }

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "mode": "csv" if config.csv else "generator",
            "csv": config.csv.name if config.csv else None,
            "batches": config.batches,
            "rows_per_batch": None if config.csv else config.rows_per_batch,
            "groups": config.groups,
            "row_format": config.row_format,
        }

    @app.get("/admin/faults")
    def get_faults() -> Faults:
        return simulator.faults.faults

    @app.post("/admin/faults")
    def set_faults(faults: Faults) -> Faults:
        """Replace the fault modes of the running simulator (and restart their call count)."""
        simulator.faults.set(faults)
        log.info("faults set: %s", faults.model_dump())
        return faults

    return app


def serve(settings: Settings) -> None:
    """Run the simulator on ``settings.host:settings.source_port`` until interrupted."""
    config = SimulatorConfig.from_settings(settings)
    uvicorn.run(create_app(config), host=settings.host, port=settings.source_port, log_level="info")
