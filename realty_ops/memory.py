"""The memory of a serving process while a benchmark or a test drives it: its resident set
size, and the peak of it sampled in a background thread."""

from __future__ import annotations

import threading

import psutil

MB = 1024 * 1024


def rss_mb(process: psutil.Process) -> float:
    """Resident memory of a process and its children (uvicorn may fork), in MB."""
    tree = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in tree) / MB


class RssSampler:
    """The peak RSS of a process tree (``peak_mb``), sampled every ``interval_s`` while the
    block runs, from the RSS at its start (``start_mb``)."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.start_mb = self.peak_mb = rss_mb(self.process)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(self.interval_s):
            try:
                self.peak_mb = max(self.peak_mb, rss_mb(self.process))
            except psutil.NoSuchProcess:
                return  # it died: whoever sampled it reports that

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
