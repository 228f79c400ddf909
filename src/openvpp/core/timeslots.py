"""Time slots: a day is 96 slots of 15 minutes (24 hourly for market products).

Storage is UTC; the day, its slots and the tariff periods are Asia/Shanghai
(UTC+8, no daylight saving), so the local day starts at 16:00 UTC the day before.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

TZ = ZoneInfo("Asia/Shanghai")
UTC = UTC
SLOT_MINUTES = 15
SLOTS_PER_DAY = 96
SLOTS_PER_HOUR = 4
HOURS_PER_DAY = 24
SLOT_H = SLOT_MINUTES / 60.0


def local_midnight_utc(day: date) -> datetime:
    """UTC instant of 00:00 Asia/Shanghai on ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=TZ).astimezone(UTC)


def slot_start_utc(day: date, slot: int) -> datetime:
    """UTC start of local slot ``slot`` (0..95) of ``day``."""
    if not 0 <= slot < SLOTS_PER_DAY:
        raise ValueError(f"slot must be in 0..95, got {slot}")
    return local_midnight_utc(day) + timedelta(minutes=SLOT_MINUTES * slot)


def slot_of(ts: datetime) -> tuple[date, int]:
    """Local day and slot index of an aware timestamp."""
    if ts.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    local = ts.astimezone(TZ)
    return local.date(), (local.hour * 60 + local.minute) // SLOT_MINUTES


def year_slots_utc(year: int) -> np.ndarray:
    """All 15-minute slot starts of a local calendar year, as datetime64[m] UTC (35040 or 35136)."""
    start = np.datetime64(local_midnight_utc(date(year, 1, 1)).replace(tzinfo=None), "m")
    end = np.datetime64(local_midnight_utc(date(year + 1, 1, 1)).replace(tzinfo=None), "m")
    return np.arange(start, end, np.timedelta64(SLOT_MINUTES, "m"))


def slot_label(slot: int) -> str:
    """'HH:MM' local start of a slot."""
    return f"{slot // 4:02d}:{(slot % 4) * 15:02d}"
