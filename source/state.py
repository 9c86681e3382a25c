"""Batch counters per group and day, kept in a JSON file so that they survive a restart of the
simulator, as the course API's do (it keeps them in a file too).

Writes go to a temporary file in the same directory, are flushed to disk, and replace the old
file in one ``os.replace``: a crash leaves the old counters or the new ones, never half a file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def counter_key(group_number: int, day: str) -> str:
    """``"1|tuesday"``: days are compared without case or surrounding blanks."""
    return f"{group_number}|{day.strip().casefold()}"


class CounterStore:
    """How many batches each group/day has been delivered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._delivered: dict[str, int] = self._load()

    def _load(self) -> dict[str, int]:
        if not self.path.exists():
            return {}
        try:
            counts = json.loads(self.path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"simulator state file {self.path} is not JSON: {error}") from error
        log.info("simulator counters loaded from %s: %s", self.path, counts)
        return {str(key): int(value) for key, value in counts.items()}

    def delivered(self, group_number: int, day: str) -> int:
        return self._delivered.get(counter_key(group_number, day), 0)

    def take_next(self, group_number: int, day: str, batches: int) -> int | None:
        """Count one more delivered batch and return its 1-based number, or None when all
        ``batches`` were delivered. Check and count are one step, so two concurrent calls can
        never both get the last batch."""
        key = counter_key(group_number, day)
        with self._lock:
            delivered = self._delivered.get(key, 0)
            if delivered >= batches:
                return None
            self._delivered[key] = delivered + 1
            self._save()
            return delivered + 1

    def reset(self, group_number: int, day: str) -> None:
        with self._lock:
            self._delivered.pop(counter_key(group_number, day), None)
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(self._delivered, file, sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
