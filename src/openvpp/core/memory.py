"""Keeping the cyclic garbage collector off what lives for the whole process.

A full (generation 2) collection walks every container object the interpreter tracks. An API
process holds about 200,000 of them once its libraries are imported (functions, types, module
dicts: pandas, SQLAlchemy, pydantic...), and such a pass takes about 90 ms on this machine, during
which no request moves: measured as the p99 spikes of ``benchmarks/api_load.py``. What is alive
once the process has started and built its caches will stay alive, so it is moved out of the
collector's view (``gc.freeze``, as pre-fork servers do); objects freed later by reference
counting are still freed, only cyclic garbage among the frozen objects would be kept.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()


def freeze_long_lived() -> int:
    """Collect once, then freeze everything alive now; returns the number of frozen objects."""
    with _lock:
        gc.collect()
        gc.freeze()
        return gc.get_freeze_count()
