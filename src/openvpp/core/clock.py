"""The platform's clock: the wall clock in production, a simulated one in demos and tests.

Every service that reads the time takes a ``clock`` — a callable returning epoch seconds, like
``time.time`` — so a whole event day can run in accelerated time with the same code: the device
simulator stamps its telemetry with it, the telemetry service validates lateness against it, the
live view marks devices offline by it and the operator's system stamps its acknowledgements.

    clock = SimClock.at(datetime(2025, 7, 15, 13, 45, tzinfo=TZ), speed=120)
    clock()                      # epoch seconds of the simulated now
    await clock.sleep(900)       # a simulated quarter of an hour, 7.5 wall seconds
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

Clock = Callable[[], float]

#: the wall clock (epoch seconds)
wall: Clock = time.time


@dataclass
class SimClock:
    """Simulated time: ``start_s`` (epoch seconds) at creation, then ``speed`` simulated seconds per
    wall second. ``speed`` must be > 0."""

    start_s: float
    speed: float = 1.0
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0, got {self.speed!r}")

    @classmethod
    def at(cls, start: datetime, speed: float = 1.0) -> SimClock:
        if start.tzinfo is None:
            raise ValueError("start must carry a time zone")
        return cls(start.timestamp(), speed)

    def __call__(self) -> float:
        return self.start_s + (time.monotonic() - self._t0) * self.speed

    def set_speed(self, speed: float) -> None:
        """Run faster or slower from now on, without a jump (a time-lapse that slows down where
        there is something to watch)."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.start_s, self._t0, self.speed = self(), time.monotonic(), float(speed)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self(), UTC)

    def wall_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(sim_seconds, 0.0) / self.speed)

    async def sleep_until(self, at: datetime) -> None:
        await self.sleep(at.timestamp() - self())


def speed_of(clock: Clock) -> float:
    """Simulated seconds per wall second of ``clock`` (1 for the wall clock)."""
    return float(getattr(clock, "speed", 1.0))


def now_utc(clock: Clock = wall) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)
