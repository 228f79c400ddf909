"""Memory for the whole process: the cyclic garbage collector kept off what lives as long as the process
(:func:`freeze_long_lived`), and freed memory kept for reuse (:func:`retain_freed_memory`).

A full (generation 2) collection walks every container object the interpreter tracks. An API
process holds about 200,000 of them once its libraries are imported (functions, types, module
dicts: pandas, SQLAlchemy, pydantic...), and such a pass takes about 90 ms on this machine, during
which no request moves: measured as the p99 spikes of ``benchmarks/api_load.py``. What is alive
once the process has started and built its caches will stay alive, so it is moved out of the
collector's view (``gc.freeze``, as pre-fork servers do); objects freed later by reference
counting are still freed, only cyclic garbage among the frozen objects would be kept.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading

_lock = threading.Lock()


def freeze_long_lived() -> int:
    """Collect once, then freeze everything alive now; returns the number of frozen objects."""
    with _lock:
        gc.collect()
        gc.freeze()
        return gc.get_freeze_count()


# ---------------------------------------------------------------- freed memory kept for reuse

#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1
_retained: bool | None = None


def retain_freed_memory(enabled: bool | None = None) -> bool:
    """Keep the memory this process frees for its own next allocations instead of handing it back to
    the operating system; returns whether it is now kept.

    An evaluation over a million resources allocates about 2 GB of short-lived arrays (meter data,
    kernel temporaries, result columns). glibc serves each block above 32 MB by a fresh ``mmap`` and
    unmaps it when freed; Arrow's default pool (mimalloc) purges freed pages after a few milliseconds.
    Memory handed back is handed out again as new pages, and on a virtual machine that returns free
    pages to its host (a balloon's free page reporting, as on the development machine) touching them
    again costs about 2 s per GB against 0.07 s for memory the process kept (``benchmarks/README.md``).
    So a long-lived process that evaluates and settles (the API, a worker, the CLI's own run) keeps
    what it frees: glibc without ``mmap`` for large blocks and without trimming its heap below 2 GB
    free, one arena; Arrow on the system allocator. Its resident size stays at its peak.

    ``enabled`` None reads ``OPENVPP_RETAIN_MEMORY`` (default 1; 0 turns it off). Once set in a process
    it stays (glibc keeps no record of the former values); a second call changes nothing. Not glibc
    (musl, macOS): nothing is done and False is returned."""
    global _retained
    with _lock:
        if _retained is not None:
            return _retained
        if enabled is None:
            enabled = os.environ.get("OPENVPP_RETAIN_MEMORY", "1").strip().lower() not in ("0", "false", "no", "off")
        _retained = False
        if not enabled:
            return False
        try:
            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        ok = all(mallopt(p, v) == 1 for p, v in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX),
                                                  (_M_ARENA_MAX, 1)))
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
        _retained = ok
        return ok
