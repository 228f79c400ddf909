"""Chinese working-day calendar: public holidays and make-up working days (调休).

Baselines compare an event day with *similar* days (GB/T 32127-2015 practice,
``domain/RULES.md``), so every day is classified as one of:

=========  =====  ==========================================================
kind       value  meaning
=========  =====  ==========================================================
WORKING    0      a working day, including a make-up Saturday or Sunday
REST       1      an ordinary weekend rest day
HOLIDAY    2      a day of a public-holiday break (法定节假日 and the rest
                  days joined to it, as the State Council notice lists them)
=========  =====  ==========================================================

The facts live in ``holidays_cn.json`` next to this module, generated once by
``scripts/gen_holidays.py`` from the State Council's yearly notices; the runtime
needs no third-party package. Dates outside the covered years raise
:class:`~openvpp.core.errors.InvalidInput` unless ``strict=False``, which falls
back to the plain Monday-Friday rule there: a holiday is then taken for a working
day. That must not pass unseen: ``with_fallback=True`` also returns the dates so
classified, and :func:`calendar_record` gives what a computation records with its
inputs (the data's source, the covered years and those dates). The data stops at
the last year the State Council has announced; later years are added by
``scripts/gen_holidays.py`` once ``chinese_calendar`` knows them, never guessed.
"""

from __future__ import annotations

import json
from enum import IntEnum
from functools import lru_cache
from importlib import resources
from typing import Literal, NamedTuple, overload

import numpy as np

from openvpp.core.errors import InvalidInput, Violation

DATA_FILE = "holidays_cn.json"


class DayKind(IntEnum):
    WORKING = 0
    REST = 1
    HOLIDAY = 2


@lru_cache(maxsize=1)
def _table() -> tuple[np.datetime64, np.ndarray, dict]:
    """(first day covered, kind per day from it as int8, raw data)."""
    raw = json.loads((resources.files("openvpp.core") / DATA_FILE).read_text(encoding="utf-8"))
    first = np.datetime64(f"{raw['first_year']:04d}-01-01", "D")
    end = np.datetime64(f"{raw['last_year'] + 1:04d}-01-01", "D")
    kinds = _weekday_kinds(np.arange(first, end))
    for key, kind in (("holidays", DayKind.HOLIDAY), ("workdays", DayKind.WORKING)):
        offset = (np.array(sorted(raw[key]), dtype="datetime64[D]") - first).astype(np.int64)
        kinds[offset] = kind
    kinds.setflags(write=False)
    return first, kinds, raw


def _weekday_kinds(days: np.ndarray) -> np.ndarray:
    """REST on Saturday and Sunday, WORKING otherwise (1970-01-01 was a Thursday)."""
    weekday = (days.astype("datetime64[D]").astype(np.int64) + 3) % 7  # Monday = 0
    return (weekday >= 5).astype(np.int8)


def coverage() -> tuple[int, int]:
    """First and last calendar year the packaged data covers."""
    raw = _table()[2]
    return int(raw["first_year"]), int(raw["last_year"])


class DayKinds(NamedTuple):
    """``day_kinds(..., with_fallback=True)``: the kinds, and the dates the Monday-Friday rule classified."""

    kinds: np.ndarray           # int8, same shape as the dates
    fallback_days: np.ndarray   # datetime64[D], sorted and unique: outside coverage(), holidays unknown


@overload
def day_kinds(dates: np.ndarray, strict: bool = ..., with_fallback: Literal[False] = ...) -> np.ndarray: ...
@overload
def day_kinds(dates: np.ndarray, strict: bool = ..., *, with_fallback: Literal[True]) -> DayKinds: ...


def day_kinds(dates: np.ndarray, strict: bool = True, with_fallback: bool = False) -> np.ndarray | DayKinds:
    """Kind of each day (0 working, 1 weekend rest, 2 public holiday).

    Parameters
    ----------
    dates : array-like of datetime64[D] (or anything numpy converts to it), any shape
        Local (Asia/Shanghai) calendar days.
    strict : bool
        If True, a date outside :func:`coverage` raises ``InvalidInput``; if False
        it is classified by the Monday-Friday rule alone (its holidays are unknown).
    with_fallback : bool
        If True, return :class:`DayKinds`: the kinds and the dates that fell back to
        the Monday-Friday rule (empty when every date is covered), so the caller can
        record them.

    Returns
    -------
    numpy.ndarray of int8, same shape as ``dates`` (or :class:`DayKinds`)
    """
    days = np.asarray(dates, dtype="datetime64[D]")
    first, kinds, _ = _table()
    offset = (days - first).astype(np.int64)
    inside = (offset >= 0) & (offset < kinds.size) & ~np.isnat(days)
    if inside.all():
        out = kinds[offset]
        return DayKinds(out, np.array([], dtype="datetime64[D]")) if with_fallback else out
    if strict:
        bad = days[~inside].ravel()
        lo, hi = coverage()
        raise InvalidInput(
            [Violation("dates", f"the holiday calendar covers {lo}-{hi} only", str(d)) for d in bad[:5]],
            total=int(bad.size),
        )
    if np.isnat(days).any():
        raise InvalidInput(Violation("dates", "must not be NaT", "NaT"))
    out = _weekday_kinds(days)
    out[inside] = kinds[offset[inside]]
    return DayKinds(out, np.unique(days[~inside])) if with_fallback else out


def calendar_record(dates: np.ndarray) -> dict:
    """What a computation that classified ``dates`` with ``strict=False`` records with its inputs:
    ``{"source", "covered": [first, last year], "fallback_days": [ISO dates classified Monday-Friday]}``."""
    lo, hi = coverage()
    fallback = day_kinds(dates, strict=False, with_fallback=True).fallback_days
    return {"source": _table()[2]["source"], "covered": [lo, hi], "fallback_days": [str(d) for d in fallback]}


def is_working(dates: np.ndarray, strict: bool = True) -> np.ndarray:
    """True where a day is a working day (make-up weekend working days included); same shape as ``dates``."""
    return day_kinds(dates, strict=strict) == DayKind.WORKING


def holiday_name(date: np.datetime64 | str) -> str | None:
    """English name of the holiday break (or of the make-up working day) ``date`` belongs to, else None."""
    key = str(np.datetime64(date, "D"))
    raw = _table()[2]
    return raw["holidays"].get(key) or raw["workdays"].get(key)
