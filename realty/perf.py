"""Small performance helpers for the bulk paths."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of small acyclic objects.

    Decoding a 300k-row payload allocates 4M objects; every generation-0 threshold crossing
    would re-scan all the survivors, tripling the time (0.3 s → 0.9 s measured)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
