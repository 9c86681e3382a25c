"""Inference logging: every answered prediction goes to ``raw_data.inference_log``.

The request path only appends records to a bounded in-memory buffer (``submit``); a background
thread writes them in batches with COPY. Nothing is lost while the database is away: rows the
thread cannot write, and rows that do not fit in the buffer, are appended to a local spool
(JSON lines, ``$REALTY_HOME/spool/inference-*.jsonl``) that the thread replays once the database
answers again, and at start. A batch is COPYed as JSON lines (orjson) into a staging table,
spread into columns by PostgreSQL (``jsonb_populate_record``) and inserted ``ON CONFLICT
(request_id, item, role) DO NOTHING``, so replaying a batch that had in fact been committed before
its connection broke never duplicates a row. Leaving the columns to PostgreSQL keeps the
writer's share of the GIL small: formatting the COPY row by row, Python spent ~10 ms on every
500 rows, time the serving requests waited for.

Each spool file is held with an exclusive ``flock`` by the writer appending to it, so several
serving processes can share one spool directory; a file left by a crashed process (the kernel
released its lock) is replayed by the next writer that starts.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO

import orjson
import psycopg

from realty.settings import Settings
from realty.store.db import connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceRecord:
    """One answered prediction. ``request_id`` must be unique per request (the serving API makes
    it; an id chosen by a client belongs in ``details``): (request_id, item, role) is the key that
    makes replays idempotent, so a reused id would drop the later rows."""

    request_id: str
    item: int  # position of the listing within the request (0 for non-price routes)
    logged_at: datetime  # timezone-aware UTC
    route: str  # e.g. "/v1/price/predict", "/v1/detect", "/predict/"
    model_name: str | None
    model_version: str | None
    latency_ms: float
    listing: dict | None  # the listing fields as received (price routes)
    prediction: float | None
    details: dict | None  # metadata for vision/digits: counts, labels, predicted class...
    # The price's interval; None for other routes, models without a calibration and records
    # spooled before intervals existed.
    interval_level: float | None = None
    interval_low: float | None = None
    interval_high: float | None = None
    # Who answered (realty.model.rollout): "production" or "canary" answered the client;
    # "shadow" scored the same item off the response path, unseen (docs/rollout.md).
    role: str = "production"
    listing_key: str | None = None  # realty.schema.listing_identity of ``listing``


COLUMNS = tuple(field.name for field in fields(InferenceRecord))
# A batch is COPYed as JSON lines into a one-column staging table and spread into columns by
# PostgreSQL. The CSV delimiter and quote are control characters, which orjson always escapes
# inside strings, so every line arrives verbatim as one jsonb value.
STAGING_TABLE = "inference_log_incoming"
CREATE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} (record jsonb) ON COMMIT DELETE ROWS"
)
COPY_LINES = (
    f"COPY {STAGING_TABLE} (record) FROM STDIN (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')"
)
INSERT_NEW = (
    f"INSERT INTO inference_log SELECT columns.* FROM {STAGING_TABLE}, "
    "jsonb_populate_record(NULL::inference_log, record) AS columns "
    "ON CONFLICT (request_id, item, role) DO NOTHING"
)
CONNECT_TIMEOUT_S = 5
# Errors that belong to the records of a batch (a value the encoder or the database refuses),
# not to the database being away: the batch is retried record by record and the refused
# records are set aside. Any other error means "database unavailable": spool and retry later.
RECORD_ERRORS = (psycopg.DataError, psycopg.IntegrityError, TypeError, ValueError)


_encode_json = json.JSONEncoder(default=str).encode  # built once: it is on the per-row path


def _json_lines(records: list[InferenceRecord]) -> bytes:
    """One JSON object per record, keyed by column (dataclasses, datetimes and ``None`` are
    orjson's own; anything else is written as its text, as in the spool)."""
    return b"".join(
        orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE) for record in records
    )


def to_spool_line(record: InferenceRecord) -> str:
    values = {name: getattr(record, name) for name in COLUMNS}
    values["logged_at"] = record.logged_at.isoformat()
    return _encode_json(values) + "\n"


def from_spool_line(line: str) -> InferenceRecord:
    values = json.loads(line)
    values["logged_at"] = datetime.fromisoformat(values["logged_at"])
    return InferenceRecord(**values)


def _chunks(records: Iterable[InferenceRecord], size: int) -> Iterator[list[InferenceRecord]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Spool:
    """Append-only JSON-lines files of records waiting for the database.

    Records are appended to one file per writer and flushed on every append, so a crash of the
    process loses nothing already spooled; a line torn by a crash is skipped when replayed.
    Records that can never be written (the database refuses them) go to ``rejected-*.jsonl``
    in the same directory, for a person to look at; they are not replayed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._active: IO[str] | None = None

    def append(self, records: Iterable[InferenceRecord]) -> int:
        """Append ``records``; return how many were spooled (the others could not be encoded
        and were set aside). Raises OSError if the spool cannot be written."""
        lines = []
        for record in records:
            try:
                lines.append(to_spool_line(record))
            except (TypeError, ValueError) as error:
                self.reject(record, error)
        with self._lock:
            if self._active is None:
                self._active = self._open_new()
            try:
                self._active.write("".join(lines))
                self._active.flush()
            except OSError:
                # A partial line may be on disk: end this file there (its torn line is skipped
                # on replay) rather than glue the next record onto it.
                self._close_active()
                raise
        return len(lines)

    def _open_new(self) -> IO[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"inference-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        # Created under a hidden name and renamed only once locked: a replayer never sees (and
        # deletes) a file whose writer has not locked it yet.
        hidden = self.directory / f".{name}"
        file = hidden.open("x", encoding="utf-8")
        fcntl.flock(file, fcntl.LOCK_EX)
        hidden.rename(self.directory / name)
        return file

    def _close_active(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None

    def seal(self) -> None:
        """Close (and unlock) the file being appended to so it can be replayed; the next
        record starts a new file."""
        with self._lock:
            self._close_active()

    def files(self) -> list[Path]:
        """Spool files, oldest first (by name), including ones other writers still hold."""
        return sorted(self.directory.glob("inference-*.jsonl"))

    def replay(self, path: Path, write: Callable[[list[InferenceRecord]], None], rows: int) -> int:
        """Feed the records of spool file ``path`` to ``write`` in chunks of ``rows``, then
        delete the file; return how many records were read.

        A file another writer holds is left alone (0). If ``write`` raises, the file stays for
        the next attempt, and the rows already written are skipped by the key then."""
        try:
            file = path.open(encoding="utf-8")
        except FileNotFoundError:  # another process replayed it meanwhile
            return 0
        with file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer is still appending to it
                return 0
            replayed = 0
            for chunk in _chunks(_read_records(path, file), rows):
                write(chunk)
                replayed += len(chunk)
            path.unlink(missing_ok=True)
        return replayed

    def reject(self, record: InferenceRecord, error: Exception) -> None:
        """Keep a record that can never be written, with the reason, out of the replay path."""
        log.error("inference log: record %s/%s refused: %s", record.request_id, record.item, error)
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"error": str(error), "record": repr(record)}) + "\n"
        with self._lock, (self.directory / f"rejected-{os.getpid()}.jsonl").open("a") as file:
            file.write(line)


def _read_records(path: Path, file: IO[str]) -> Iterator[InferenceRecord]:
    for number, line in enumerate(file, start=1):
        if not line.strip():
            continue
        try:
            record = from_spool_line(line)
        except (ValueError, KeyError, TypeError) as error:
            log.warning(
                "inference log: skipping unreadable line %d of %s (%s): %.80r",
                number,
                path,
                error,
                line,
            )
            continue
        yield record


class InferenceLogWriter:
    """Batches submitted records into ``raw_data.inference_log`` from a background thread.

    ``submit`` only touches memory (or, when the buffer is full, appends to the spool file);
    the thread owns the database connection. Counters for /metrics come from ``stats``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.inference_log_spool_dir or settings.home / "spool")
        self._buffer: deque[InferenceRecord] = deque()
        self._ready = threading.Condition()  # guards _buffer and _stopping
        self._stopping = False
        self._in_flight: list[InferenceRecord] = []  # the batch the thread is writing
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._retry_at = 0.0  # monotonic time before which the database is not tried again
        self._away = False  # the database failed last time: log its return
        self._spool_waiting = threading.Event()  # something may be in the spool to replay
        self._spool_waiting.set()  # a previous run may have left files
        self._counts: Counter[str] = Counter(
            dict.fromkeys(("rows_written", "rows_spooled", "rows_replayed", "rows_dropped"), 0)
        )
        self._counts_lock = threading.Lock()

    def start(self) -> None:
        """Start the background writer; it replays any spool before writing new records."""
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def submit(self, records: list[InferenceRecord]) -> None:
        """Queue ``records`` for the writer; if they do not fit in the buffer (or the writer is
        closed) append them to the spool instead. Never waits for the database."""
        with self._ready:
            fits = (
                not self._stopping
                and len(self._buffer) + len(records) <= self.settings.inference_log_queue_rows
            )
            if fits:
                self._buffer.extend(records)
                if len(self._buffer) >= self.settings.inference_log_batch_rows:
                    self._ready.notify()
        if not fits:
            self._spool(records)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued (to the spool if the database is away) and stop.

        If the writer is still busy after ``timeout`` (a database that hangs), what it has not
        written yet, the batch in flight included, goes to the spool: replaying a row that did
        get written after all is a no-op."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or self._thread.is_alive():
            if self._thread is not None:
                log.warning("inference log: writer still busy after %.1f s; spooling", timeout)
            with self._ready:
                leftovers = [*self._in_flight, *self._buffer]
                self._buffer.clear()
            if leftovers:
                self._spool(leftovers)
        self.spool.seal()

    def stats(self) -> dict[str, int]:
        with self._counts_lock:
            counts = dict(self._counts)
        return {"queue_depth": len(self._buffer), **counts}

    # The background thread.

    def _run(self) -> None:
        self._replay_spool()
        while True:
            batch, stopping = self._take_batch()
            if batch:
                self._store(batch)
            if self._spool_waiting.is_set() and time.monotonic() >= self._retry_at:
                self._replay_spool()
            if stopping and not batch:
                break
        self._disconnect()

    def _take_batch(self) -> tuple[list[InferenceRecord], bool]:
        """Wait for a full batch (or the flush interval, or close) and take up to a batch."""
        rows = self.settings.inference_log_batch_rows
        with self._ready:
            self._ready.wait_for(
                lambda: self._stopping or len(self._buffer) >= rows,
                timeout=self.settings.inference_log_flush_interval_s,
            )
            batch = [self._buffer.popleft() for _ in range(min(rows, len(self._buffer)))]
            self._in_flight = batch
            return batch, self._stopping

    def _store(self, batch: list[InferenceRecord]) -> None:
        if time.monotonic() < self._retry_at:  # the database was away a moment ago
            self._spool(batch)
        else:
            try:
                self._count("rows_written", self._write(batch, replay=False))
            except Exception as error:  # the thread must survive anything: the rows are spooled
                self._database_away(error)
                self._spool(batch)
        self._in_flight = []

    def _replay_spool(self) -> None:
        # Cleared first: a record spooled while this pass runs sets it again.
        self._spool_waiting.clear()
        if not self.spool.files():
            return
        try:
            self._connection()  # seal (and start a new file) only once the database answers
            self.spool.seal()
            for path in self.spool.files():
                replayed = self.spool.replay(
                    path,
                    lambda chunk: self._count("rows_replayed", self._write(chunk, replay=True)),
                    self.settings.inference_log_batch_rows,
                )
                if replayed:
                    log.info("inference log: replayed %d records from %s", replayed, path.name)
        except Exception as error:  # the file stays; the next pass resumes it
            self._database_away(error)
            self._spool_waiting.set()

    def _spool(self, records: list[InferenceRecord]) -> None:
        try:
            spooled = self.spool.append(records)
        except OSError:
            log.exception("inference log: could not spool %d records; they are lost", len(records))
            self._count("rows_dropped", len(records))
            return
        self._count("rows_spooled", spooled)
        self._count("rows_dropped", len(records) - spooled)
        self._spool_waiting.set()

    def _write(self, records: list[InferenceRecord], replay: bool) -> int:
        """Store ``records`` (keys already stored are skipped); return how many are stored now.

        A batch with a value the database refuses is retried record by record and the refused
        records are set aside, so one bad record never holds up the others."""
        conn = self._connection()
        try:
            self._insert(conn, records, replay)
            return len(records)
        except RECORD_ERRORS as error:
            log.warning(
                "inference log: batch of %d refused (%s); retrying record by record",
                len(records),
                error,
            )
        stored = 0
        for record in records:
            try:
                self._insert(conn, [record], replay)
                stored += 1
            except RECORD_ERRORS as error:
                self.spool.reject(record, error)
                self._count("rows_dropped", 1)
        return stored

    def _insert(
        self, conn: psycopg.Connection, records: list[InferenceRecord], replay: bool
    ) -> None:
        """Add ``records`` to the table, skipping keys that are stored already (a replayed
        batch may have committed before it was spooled; a client may reuse a request id)."""
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(COPY_LINES) as copy:
                copy.write(_json_lines(records))
            cur.execute(INSERT_NEW)
            skipped = len(records) - cur.rowcount
        if skipped and not replay:
            log.warning(
                "inference log: %d of %d records were stored already (same request_id and "
                "item); the stored rows are kept",
                skipped,
                len(records),
            )

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = connect(
                "raw_data",
                self.settings,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
            )
            try:
                conn.execute(CREATE_STAGING)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            if self._away:
                log.info("inference log: the database is back")
                self._away = False
        return self._conn

    def _database_away(self, error: Exception) -> None:
        retry_s = self.settings.inference_log_retry_s
        if not self._away:
            log.warning(
                "inference log: database unavailable (%s); spooling, retrying every %.0f s",
                error,
                retry_s,
            )
        self._away = True
        self._retry_at = time.monotonic() + retry_s
        self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _count(self, name: str, rows: int) -> None:
        with self._counts_lock:
            self._counts[name] += rows
