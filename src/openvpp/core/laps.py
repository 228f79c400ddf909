"""Seconds of the steps of a long service call, for benchmarks and profiling (no effect otherwise)."""

from __future__ import annotations

import time


class Laps:
    """Seconds between successive calls, by name, added into ``profile`` (nothing when it is None).

    ``lap = Laps(profile); ...; lap("read"); ...; lap("store")`` — each call books the time since the
    previous one (or since creation) under its name.
    """

    def __init__(self, profile: dict[str, float] | None):
        self.profile = profile
        self.t = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.profile is not None:
            now = time.perf_counter()
            self.profile[name] = self.profile.get(name, 0.0) + now - self.t
            self.t = now
