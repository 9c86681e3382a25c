"""Fault modes for tests: what a slow, flaky or sloppy data API does.

Set them in ``SimulatorConfig.faults`` at start, or on a running simulator with
``POST /admin/faults`` (the JSON of ``Faults``), which also restarts the call count.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from realty.schema import LISTING_COLUMNS

PRICE_TEXTS = ("call for price", "$425,000", "N/A", "")
NOT_ROWS: tuple[object, ...] = ("#N/A", None, 42, {"error": "row lost"})
# Text PostgreSQL cannot store (a NUL, a lone surrogate), put where a city and a street belong.
UNSTORABLE = {"city": "Nul\x00City", "street": "Lone \ud800 Street"}
# The faults that apply to "the next N" batches or calls, counted down as they are used.
COUNTDOWNS = (
    "empty_next",
    "advance_and_fail_next",
    "truncate_next",
    "relabel_next",
    "unstorable_next",
)


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(0.0, ge=0, description="Seconds added before every /data answer")
    fail_next: int = Field(
        0, ge=0, description="Answer the next N /data calls with fail_status; no batch is used"
    )
    fail_every: int = Field(
        0, ge=0, description="Answer every k-th /data call with fail_status (0: never)"
    )
    fail_status: int = Field(503, ge=500, le=599)
    empty_next: int = Field(
        0, ge=0, description='Deliver the next N batches with "data": [] (they still count)'
    )
    advance_and_fail_next: int = Field(
        0,
        ge=0,
        description="Count the next N batches, then answer fail_status: each batch is lost to "
        "the client, as when the source fails after counting",
    )
    truncate_next: int = Field(
        0, ge=0, description="Answer the next N batches 200 with half their body (they count)"
    )
    relabel_next: int = Field(0, ge=0, description="Deliver the next N batches with relabel")
    relabel: dict[str, Any] = Field(
        default_factory=dict,
        description="Payload fields replaced in the relabel_next batches, e.g. "
        '{"batch_number": -1}',
    )
    unstorable_next: int = Field(
        0,
        ge=0,
        description="Deliver the next N batches with a NUL and a lone surrogate in the city and "
        "street of their first rows (JSON escapes, as Python's json writes them)",
    )
    malformed_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of rows garbled: wrong length, missing fields, text prices, non-rows",
    )


class FaultState:
    """The faults in force, with the /data calls and the "next N" faults counted since they
    were set (so "the next N" means from the moment they were set)."""

    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self.set(faults)

    def set(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._calls = 0
            self._left = {name: getattr(faults, name) for name in COUNTDOWNS}

    def count_call_and_fail(self) -> bool:
        """Count one /data call; True when this call must fail."""
        with self._lock:
            self._calls += 1
            every = self.faults.fail_every
            return self._calls <= self.faults.fail_next or (every > 0 and self._calls % every == 0)

    def take(self, countdown: str) -> bool:
        """True when the batch being delivered gets fault ``countdown`` (one of COUNTDOWNS)."""
        with self._lock:
            if self._left[countdown] == 0:
                return False
            self._left[countdown] -= 1
            return True


def garble(rows: list, fraction: float, seed: int) -> list:
    """Corrupt about ``fraction`` of the rows (lists or objects) the ways sloppy payloads do:
    too few fields or missing keys, extra fields, a price that is not a number, something that
    is not a row. Deterministic for a seed, so a re-delivered batch is the same bytes."""
    rng = np.random.default_rng(seed)
    garbled = list(rows)
    for index in np.flatnonzero(rng.random(len(rows)) < fraction):
        kind, row = rng.integers(4), rows[index]
        if kind == 0:
            garbled[index] = _shortened(row, rng)
        elif kind == 1:
            garbled[index] = _lengthened(row)
        elif kind == 2:
            garbled[index] = with_value(row, "price", PRICE_TEXTS[rng.integers(len(PRICE_TEXTS))])
        else:
            garbled[index] = NOT_ROWS[rng.integers(len(NOT_ROWS))]
    return garbled


def _shortened(row: list | dict, rng: np.random.Generator) -> list | dict:
    """A list cut after 1 to 11 fields; an object without 1 to 4 of its keys."""
    if isinstance(row, dict):
        dropped = set(rng.choice(LISTING_COLUMNS, int(rng.integers(1, 5)), replace=False))
        return {k: v for k, v in row.items() if k not in dropped}
    return row[: rng.integers(1, len(LISTING_COLUMNS))]


def _lengthened(row: list | dict) -> list | dict:
    if isinstance(row, dict):
        return {**row, "extra_field": "?"}
    return [*row, "?", "?"]


def with_value(row: object, column: str, value: object) -> object:
    """The row with ``value`` in ``column``; a row too short for it, or not a row, as it was."""
    if isinstance(row, dict):
        return {**row, column: value}
    index = LISTING_COLUMNS.index(column)
    if isinstance(row, list) and len(row) > index:
        return [*row[:index], value, *row[index + 1 :]]
    return row
