"""Customer baseline load: what each meter would have drawn without the event.

GB/T 32127-2015 / GB/T 37016-2018 practice (``domain/RULES.md``, "Baselines"):
the baseline of a working-day event is the mean of the same 15-minute slots over
the 5 most recent similar working days, counting back from 2 days before the
event and skipping event days and holidays; a weekend or holiday event takes the
3 most recent similar (non-working) days. Every method here is a named,
configurable function in :data:`METHODS`; a :class:`BaselineSpec` names one with
its parameters and gives the ``id`` an evaluation records.

Arrays, for all methods
-----------------------
load : (n_meters, n_days, 96) float, kW, NaN = missing
    Metered mean power per 15-minute slot of each local day; day ``0`` is the
    oldest. float32 is kept as float32 (the result has the load's dtype).
day_kinds : (n_days,) or (n_meters, n_days) int
    0 working, 1 weekend rest, 2 public holiday (:func:`openvpp.core.calendar.day_kinds`).
excluded : None, (n_days,) or (n_meters, n_days) bool
    Days never used as baseline days: earlier demand-response event days, days
    with missing or faulty data. Shared rows make the computation a plain
    gather + sum over days; per-meter rows are handled without a Python loop
    over meters.
event_day_idx : int or (n_meters,) int
    Index of the event day on the day axis, one for all meters or one each.

Reading of "counting back from 2 days before the event" (``skip_days=2``): the
candidates are the days ``d <= event_day - skip_days``, newest first, so the
first candidate is ``event_day - 2`` and the day before the event (whose data
may not be settled when the event is cleared) is never used. ``skip_days`` must
be at least 1, so the event day itself is never a candidate.

Missing values inside a chosen day are skipped slot by slot (the slot's mean is
over the chosen days that have it); a slot missing on every chosen day is NaN.
A meter with fewer eligible days than asked uses those it has; ``days_used``
reports how many, so an evaluation can flag it; with none, its baseline is NaN.

Part of the calendar
--------------------
A method reads only the days it chooses and each slot on its own, so ``load`` may
hold just those: ``held_days`` (n_held,) int, increasing — the calendar days
(indices into ``day_kinds``) the day axis of ``load`` holds — and ``held_slots``
``slice(first, end)`` — the slots of the day its last axis holds (the result is
then on those slots). ``day_kinds``, ``excluded``, ``event_day_idx``, temperatures
and ``window_slots`` stay on the whole calendar and day. The days a method may
choose are :meth:`BaselineSpec.days_needed`; a chosen day that is not held is an
error, never a smaller baseline. The result equals the whole-calendar one on the
held slots (property-tested), and is what an evaluation over a million meters
reads: a few days and the slots around the event, not weeks of full days.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from openvpp.core.errors import InvalidInput, Violation
from openvpp.core.timeslots import SLOTS_PER_DAY

WORKING_KINDS = (0,)
NON_WORKING_KINDS = (1, 2)
_CHUNK_BYTES = 1 << 20  # meters per block: one (block, 96) accumulator stays in cache


class Baseline(NamedTuple):
    """Result of a baseline method.

    power_kw : (n_meters, 96) float, kW — the baseline, NaN where it cannot be formed.
    days_used : (n_meters,) int — number of days the baseline of each meter is built on.
    selected : (n_meters, n_days) bool — which days were used.
    ``days_used`` and ``selected`` are read-only broadcast views when all meters
    share one choice of days.
    """

    power_kw: np.ndarray
    days_used: np.ndarray
    selected: np.ndarray


class Adjusted(NamedTuple):
    """Result of :func:`same_day_adjustment`.

    power_kw : (n_meters, 96) float, kW — the adjusted baseline.
    value : (n_meters,) float — the factor applied (multiplicative, unitless) or the
        offset added (additive, kW), after clipping.
    """

    power_kw: np.ndarray
    value: np.ndarray


# ---------------------------------------------------------------- input checks


def _day_part(held_slots: Any) -> tuple[int, int]:
    """(first, end) slot of the day that the last axis of ``load`` holds: all 96 unless ``held_slots`` says."""
    if held_slots is None:
        return 0, SLOTS_PER_DAY
    ok = isinstance(held_slots, slice) and held_slots.step in (None, 1)
    lo, hi = (held_slots.start or 0, held_slots.stop) if ok else (None, None)
    if not (ok and isinstance(lo, int) and isinstance(hi, int) and 0 <= lo < hi <= SLOTS_PER_DAY):
        raise InvalidInput(Violation("held_slots", "must be slice(first, end) with 0 <= first < end <= 96", held_slots))
    return lo, hi


def _load(load: np.ndarray, n_slots: int = SLOTS_PER_DAY) -> np.ndarray:
    arr = np.asarray(load)
    if arr.ndim != 3 or arr.shape[2] != n_slots:
        shape = "(n_meters, n_days, 96)" if n_slots == SLOTS_PER_DAY else f"(n_meters, n_days, {n_slots}) (held_slots)"
        raise InvalidInput(Violation("load", f"must have shape {shape}", arr.shape))
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)


class _Frame(NamedTuple):
    """The load and what its axes hold: calendar days ``held`` (None: every day of ``day_kinds``,
    ``n_days`` of them) and the slots ``lo .. lo + arr.shape[2] - 1`` of each day."""

    arr: np.ndarray
    n_days: int
    held: np.ndarray | None
    lo: int


def _frame(load: np.ndarray, day_kinds: Any, held_days: Any, held_slots: Any) -> _Frame:
    lo, hi = _day_part(held_slots)
    arr = _load(load, hi - lo)
    kind_shape = np.shape(day_kinds)
    n_days = kind_shape[-1] if kind_shape else arr.shape[1]
    if held_days is None:
        if arr.shape[1] != n_days:
            raise InvalidInput(Violation(
                "load", f"must hold the {n_days} days of day_kinds (or name the days it holds in held_days)",
                arr.shape))
        return _Frame(arr, n_days, None, lo)
    held = np.asarray(held_days)
    if (held.ndim != 1 or held.dtype.kind not in "iu" or held.size != arr.shape[1]
            or (held.size and (held[0] < 0 or held[-1] >= n_days or (np.diff(held) <= 0).any()))):
        raise InvalidInput(Violation(
            "held_days", f"must be {arr.shape[1]} increasing day indices in 0..{n_days - 1}, one per day of load",
            held.tolist() if held.size < 50 else held.shape))
    return _Frame(arr, n_days, held.astype(np.int64), lo)


def _held(selected: np.ndarray, fr: _Frame) -> np.ndarray:
    """A choice of calendar days (rows, n_days) on the days the load holds (rows, n_held).

    Every chosen day must be held: a baseline is never formed from fewer days than the method chose.
    """
    if fr.held is None:
        return selected
    missing = selected.copy()
    missing[:, fr.held] = False
    if missing.any():
        raise InvalidInput(Violation("held_days", "must include every day the method chooses",
                                     np.flatnonzero(missing.any(axis=0)).tolist()))
    return selected[:, fr.held]


def _on_calendar(selected: np.ndarray, fr: _Frame) -> np.ndarray:
    """A choice on the held days back on the calendar (rows, n_days)."""
    if fr.held is None:
        return selected
    out = np.zeros((selected.shape[0], fr.n_days), dtype=bool)
    out[:, fr.held] = selected
    return out


def _window(name: str, slots: Any, fr_lo: int, width: int) -> np.ndarray:
    """Slot indices of the day (``_slots``) as indices of the held part of the day."""
    idx = _slots(name, slots)
    if idx[0] < fr_lo or idx[-1] >= fr_lo + width:
        raise InvalidInput(Violation(name, f"must lie inside held_slots ({fr_lo}..{fr_lo + width - 1})", slots))
    return idx - fr_lo


def _rows(name: str, value: Any, n_meters: int, n_days: int, dtype: type) -> np.ndarray:
    """A per-day array as (1, n_days) when shared by all meters, else (n_meters, n_days)."""
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n_days or arr.shape[0] not in (1, n_meters):
        raise InvalidInput(
            Violation(name, f"must have shape ({n_days},) or ({n_meters}, {n_days})", arr.shape)
        )
    return arr


def _event_days(event_day_idx: Any, n_meters: int, n_days: int) -> np.ndarray:
    """Event day index as (1, 1) when shared, else (n_meters, 1), int64."""
    arr = np.asarray(event_day_idx)
    if arr.dtype.kind not in "iu" or arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n_meters):
        raise InvalidInput(
            Violation(
                "event_day_idx", f"must be an integer or {n_meters} integers (one per meter)", arr.shape
            )
        )
    if arr.size and (arr.min() < 0 or arr.max() >= n_days):
        raise InvalidInput(
            Violation("event_day_idx", f"must be a day index in 0..{n_days - 1}", arr.tolist())
        )
    return arr.astype(np.int64).reshape(-1, 1)


def _slots(name: str, slots: Any) -> np.ndarray:
    """Slot indices (sorted, unique) from a slice, a list of indices or a (96,) bool mask."""
    try:
        idx = np.unique(np.arange(SLOTS_PER_DAY)[slots])
    except (IndexError, TypeError) as err:
        raise InvalidInput(
            Violation(name, "must be a slice, slot indices 0..95 or a (96,) bool mask", slots)
        ) from err
    if idx.size == 0:
        raise InvalidInput(Violation(name, "must select at least one slot", slots))
    return idx


def _positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise InvalidInput(Violation(name, "must be a whole number >= 1", value))
    return int(value)


_SLOT_MAJOR_CHUNK = 1 << 17        # meters per block of a slot-major load: long contiguous runs per slot


def _chunk(load: np.ndarray) -> int:
    return max(64, _CHUNK_BYTES // (SLOTS_PER_DAY * load.dtype.itemsize))


# ---------------------------------------------------------------- day selection


def eligible_days(
    day_kinds: np.ndarray,
    excluded: np.ndarray | None,
    event_day_idx: int | np.ndarray,
    kinds: tuple[int, ...] = WORKING_KINDS,
    skip_days: int = 2,
    n_meters: int = 1,
) -> np.ndarray:
    """Candidate baseline days: a similar kind, not excluded, at least ``skip_days`` before the event.

    Returns a bool array (1, n_days) when every input is shared by all meters,
    else (n_meters, n_days).
    """
    kind_rows = _rows("day_kinds", day_kinds, n_meters, np.shape(day_kinds)[-1], np.int16)
    n_days = kind_rows.shape[1]
    skip = _positive("skip_days", skip_days)
    ok = np.isin(kind_rows, np.asarray(kinds, dtype=np.int16))
    if excluded is not None:
        ok = ok & ~_rows("excluded", excluded, n_meters, n_days, bool)
    last = _event_days(event_day_idx, n_meters, n_days) - skip
    return ok & (np.arange(n_days)[None, :] <= last)


def most_recent(eligible: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` newest True days of each row of ``eligible`` (rows × days, bool)."""
    counted_from_newest = np.cumsum(eligible[:, ::-1], axis=1, dtype=np.int32)[:, ::-1]
    return eligible & (counted_from_newest <= n)


# ---------------------------------------------------------------- averaging


def _masked_mean(load: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Mean over the selected days, slot by slot; (n_meters, n_slots).

    ``selected`` is (1, n_days) (shared) or (n_meters, n_days). Sums the chosen
    days block by block of meters, so the accumulator stays in cache and no
    gathered copy of the load is made; blocks that meet a NaN are redone with
    per-slot counts.
    """
    n_meters, n_days, n_slots = load.shape
    # a slot-major load (meters innermost: the (meter, day, slot) view of a rollup-file read) gets a
    # slot-major result, so every sum below runs along contiguous meters
    slot_major = n_meters > 1 and load.strides[0] == load.itemsize
    out = (np.zeros((n_slots, n_meters), dtype=load.dtype).T if slot_major
           else np.zeros((n_meters, n_slots), dtype=load.dtype))
    shared = selected.shape[0] == 1
    days = np.flatnonzero(selected.any(axis=0))
    whole = selected.all(axis=0)
    count = selected.sum(axis=1, dtype=np.int64)
    if not count.any():
        out.fill(np.nan)
        return out
    step = _SLOT_MAJOR_CHUNK if slot_major else _chunk(load)
    with np.errstate(invalid="ignore", divide="ignore"):
        for lo in range(0, n_meters, step):
            hi = min(lo + step, n_meters)
            acc = out[lo:hi]
            for d in days:
                if whole[d]:
                    acc += load[lo:hi, d]
                else:
                    mask = selected[lo:hi, d]
                    if mask.any():
                        np.add(acc, load[lo:hi, d], out=acc, where=mask[:, None])
            acc /= count[0] if shared else count[lo:hi, None]
            gaps = np.flatnonzero(np.isnan(acc).any(axis=1))
            if not shared:
                gaps = gaps[count[lo + gaps] > 0]  # meters without any day stay NaN
            if gaps.size:
                rows = load[(lo + gaps)[:, None], days]
                use = selected[0 if shared else lo + gaps][..., days, None] & ~np.isnan(rows)
                acc[gaps] = np.where(use, rows, 0).sum(axis=1) / use.sum(axis=1)
    return out


def _result(load: np.ndarray, selected: np.ndarray, calendar: np.ndarray | None = None) -> Baseline:
    """Mean over ``selected`` (on the held days); ``calendar`` is the same choice on the calendar."""
    n_meters = load.shape[0]
    power = _masked_mean(load, selected)
    used = selected.sum(axis=1).astype(np.int32)
    cal = selected if calendar is None else calendar
    return Baseline(power, np.broadcast_to(used, (n_meters,)), np.broadcast_to(cal, (n_meters, cal.shape[1])))


# ---------------------------------------------------------------- methods


def workday_mean(
    load: np.ndarray,
    day_kinds: np.ndarray,
    excluded: np.ndarray | None,
    event_day_idx: int | np.ndarray,
    n_days: int = 5,
    skip_days: int = 2,
    kinds: tuple[int, ...] = WORKING_KINDS,
    held_days: np.ndarray | None = None,
    held_slots: slice | None = None,
) -> Baseline:
    """GB/T 32127 working-day baseline: mean of the ``n_days`` newest similar working days.

    Parameters
    ----------
    load : (n_meters, n_days_total, 96) float, kW, NaN = missing
    day_kinds : (n_days_total,) or (n_meters, n_days_total) int — 0 working, 1 rest, 2 holiday
    excluded : None, (n_days_total,) or (n_meters, n_days_total) bool — days never used
    event_day_idx : int or (n_meters,) int — event day index on the day axis
    n_days : int — days averaged (5)
    skip_days : int — the first candidate is ``event_day - skip_days`` (2)
    kinds : tuple of int — day kinds that count as similar (working days)
    held_days, held_slots : what ``load`` holds when it is not the whole calendar (see the module's
        "Part of the calendar"); the result is then on ``held_slots``

    Returns
    -------
    Baseline — power_kw (n_meters, 96) kW, days_used (n_meters,), selected (n_meters, n_days_total)
    """
    fr = _frame(load, day_kinds, held_days, held_slots)
    elig = eligible_days(day_kinds, excluded, event_day_idx, kinds, skip_days, fr.arr.shape[0])
    chosen = most_recent(elig, _positive("n_days", n_days))
    return _result(fr.arr, _held(chosen, fr), chosen)


def similar_day_mean(
    load: np.ndarray,
    day_kinds: np.ndarray,
    excluded: np.ndarray | None,
    event_day_idx: int | np.ndarray,
    n_days: int = 3,
    skip_days: int = 2,
    kinds: tuple[int, ...] = NON_WORKING_KINDS,
    held_days: np.ndarray | None = None,
    held_slots: slice | None = None,
) -> Baseline:
    """Weekend/holiday baseline: mean of the ``n_days`` newest similar non-working days.

    Same parameters, units and shapes as :func:`workday_mean`; ``kinds`` defaults
    to weekend rest days and holidays (1, 2), ``n_days`` to 3.
    """
    return workday_mean(load, day_kinds, excluded, event_day_idx, n_days, skip_days, kinds, held_days, held_slots)


def window_mean(load: np.ndarray, window_slots: Any) -> np.ndarray:
    """Mean load over the event window of every meter and day, NaN-skipping; (n_meters, n_days) kW."""
    arr = _load(load)
    return _window_mean(arr, _slots("window_slots", window_slots))


def _window_mean(arr: np.ndarray, idx: np.ndarray, days: np.ndarray | None = None) -> np.ndarray:
    """NaN-skipping mean over the slots ``idx`` of the last axis, on ``days`` of the day axis (all if
    None); (n_meters, n_days taken) float64. Blocks without a NaN take a plain sum."""
    taken = np.arange(arr.shape[1]) if days is None else np.asarray(days, dtype=np.int64)
    out = np.empty((arr.shape[0], taken.size), dtype=np.float64)
    if taken.size == 0:
        return out
    # a contiguous window and every day: a view, no gathered copy
    cut = slice(int(idx[0]), int(idx[-1]) + 1) if idx[-1] - idx[0] + 1 == idx.size else idx
    every = days is None
    step = _chunk(arr)
    with np.errstate(invalid="ignore", divide="ignore"):
        for lo in range(0, arr.shape[0], step):
            part = arr[lo : lo + step][:, :, cut]           # the window first: a view
            if not every:
                part = part[:, taken]                          # then the days: a small copy
            total = part.sum(axis=2, dtype=np.float64)
            gaps = np.isnan(total)
            total /= idx.size
            if gaps.any():
                sub = part[gaps]
                have = ~np.isnan(sub)
                total[gaps] = np.where(have, sub, 0).sum(axis=1, dtype=np.float64) / have.sum(axis=1)
            out[lo : lo + step] = total
    return out


def high_x_of_y(
    load: np.ndarray,
    day_kinds: np.ndarray,
    excluded: np.ndarray | None,
    event_day_idx: int | np.ndarray,
    window_slots: Any,
    x: int = 4,
    y: int = 5,
    skip_days: int = 2,
    kinds: tuple[int, ...] = WORKING_KINDS,
    held_days: np.ndarray | None = None,
    held_slots: slice | None = None,
) -> Baseline:
    """High-X-of-Y: of the ``y`` newest eligible days, average the ``x`` with the highest window load.

    Parameters
    ----------
    load, day_kinds, excluded, event_day_idx, skip_days, kinds, held_days, held_slots : as :func:`workday_mean`
    window_slots : slice, slot indices or (96,) bool — the event window the days are ranked on
    x : int — days averaged (4)
    y : int — newest eligible days considered (5)

    Days are ranked per meter on their mean load over ``window_slots``; ties go
    to the newer day, and a candidate without any data in the window ranks last.
    Only the candidate days are scored (a shared calendar: ``y`` days, not all).

    Returns
    -------
    Baseline — power_kw (n_meters, 96) kW, days_used (n_meters,), selected (n_meters, n_days_total)
    """
    fr = _frame(load, day_kinds, held_days, held_slots)
    arr = fr.arr
    x, y = _positive("x", x), _positive("y", y)
    if x > y:
        raise InvalidInput(Violation("x", f"must not exceed y ({y})", x))
    n_meters, n_held, _ = arr.shape
    cand = _held(most_recent(eligible_days(day_kinds, excluded, event_day_idx, kinds, skip_days, n_meters), y), fr)
    idx = _window("window_slots", window_slots, fr.lo, arr.shape[2])
    cols = np.flatnonzero(cand.any(axis=0))             # days some meter may rank, oldest first
    score = _window_mean(arr, idx, cols)
    mine = cand[:, cols]
    # candidates by window load, one without window data below them all; other days sort last (NaN)
    score = np.where(mine, np.where(np.isnan(score), -np.inf, score), np.nan)
    newest_first = np.argsort(-score[:, ::-1], axis=1, kind="stable")[:, :x]
    pick = np.zeros(score.shape, dtype=bool)
    np.put_along_axis(pick, cols.size - 1 - newest_first, True, axis=1)
    selected = np.zeros((n_meters, n_held), dtype=bool)
    selected[:, cols] = pick & mine
    return _result(arr, selected, _on_calendar(selected, fr))


def _cooling_feature(temp_c: np.ndarray, form: str, t_base_c: float) -> np.ndarray:
    if form == "cooling":
        return np.maximum(temp_c - t_base_c, 0.0)
    if form == "linear":
        return temp_c
    raise InvalidInput(Violation("form", "must be 'cooling' or 'linear'", form))


def _temperature(name: str, temp_c: Any, n_meters: int, n_days: int | None) -> np.ndarray:
    """Temperature as an array broadcastable to (n_meters, n_days, 96) (or (n_meters, 96) if n_days is None)."""
    arr = np.asarray(temp_c, dtype=np.float64)
    if n_days is None:
        target, shapes = (n_meters, SLOTS_PER_DAY), "a scalar, (96,), (n_meters, 1) or (n_meters, 96)"
        if arr.ndim < 2:
            arr = arr.reshape(1, -1)
    else:
        target, shapes = (
            (n_meters, n_days, SLOTS_PER_DAY),
            "(n_days,), (n_days, 96) or (n_meters, n_days, 96)",
        )
        if arr.ndim == 1:
            arr = arr[None, :, None]
        elif arr.ndim == 2:
            arr = arr[None]
    try:
        np.broadcast_shapes(arr.shape, target)
    except ValueError as err:
        raise InvalidInput(Violation(name, f"must be {shapes}", arr.shape)) from err
    if arr.ndim != len(target):
        raise InvalidInput(Violation(name, f"must be {shapes}", arr.shape))
    return arr


def _part_of(temp: np.ndarray, fr: _Frame, width: int, days_axis: bool) -> np.ndarray:
    """A calendar temperature array (``_temperature``) on the held days and slots (size-1 axes stay)."""
    if days_axis and fr.held is not None and temp.shape[1] > 1:
        temp = temp[:, fr.held]
    if temp.shape[-1] > 1:
        temp = temp[..., fr.lo : fr.lo + width]
    return temp


def temperature_regression(
    load: np.ndarray,
    temp_c: np.ndarray,
    day_kinds: np.ndarray,
    excluded: np.ndarray | None,
    event_day_idx: int | np.ndarray,
    event_temp_c: Any,
    n_days: int = 20,
    skip_days: int = 2,
    t_base_c: float = 22.0,
    form: str = "cooling",
    kinds: tuple[int, ...] = WORKING_KINDS,
    held_days: np.ndarray | None = None,
    held_slots: slice | None = None,
) -> Baseline:
    """Weather-adjusted baseline: per meter and slot, least squares of load on temperature.

    Fits ``load = a + b * f(T)`` over the ``n_days`` newest eligible days, per
    meter and slot, and evaluates it at the event day's temperature, with
    ``f(T) = max(T - t_base_c, 0)`` (cooling degrees, ``form="cooling"``) or
    ``f(T) = T`` (``form="linear"``). Closed-form centred normal equations, no
    loop over meters. Where the feature does not vary over the chosen days (for
    example all below ``t_base_c``) or only one day has data, the slope is 0 and
    the baseline is the mean.

    Parameters
    ----------
    load, day_kinds, excluded, event_day_idx, skip_days, kinds, held_days, held_slots : as :func:`workday_mean`
    temp_c : (n_days_total,) daily or (n_days_total, 96) per-slot, shared by all meters,
        or (n_meters, n_days_total, 96); °C, NaN = missing (on the calendar, whatever ``load`` holds)
    event_temp_c : scalar, (96,), (n_meters, 1) or (n_meters, 96); °C on the event day
    n_days : int — newest eligible days fitted (20)
    t_base_c : float — balance temperature of the cooling-degree feature, °C (22)
    form : "cooling" or "linear"

    With one choice of days and one temperature for every meter (the usual case), the feature's
    mean and spread are computed once and each meter costs one pass over its chosen days; a meter
    with a gap in those days (or per-meter choices or temperatures) takes the general path.

    Returns
    -------
    Baseline — power_kw (n_meters, 96) kW, days_used (n_meters,), selected (n_meters, n_days_total)
    """
    fr = _frame(load, day_kinds, held_days, held_slots)
    arr = fr.arr
    n_meters, _, width = arr.shape
    chosen = most_recent(
        eligible_days(day_kinds, excluded, event_day_idx, kinds, skip_days, n_meters),
        _positive("n_days", n_days),
    )
    selected = _held(chosen, fr)
    feat = _cooling_feature(_part_of(_temperature("temp_c", temp_c, n_meters, fr.n_days), fr, width, True),
                            form, t_base_c)
    feat_event = _cooling_feature(_part_of(_temperature("event_temp_c", event_temp_c, n_meters, None), fr, width,
                                           False), form, t_base_c)
    feat_event = np.broadcast_to(feat_event, (n_meters, width))
    out = np.empty((n_meters, width), dtype=arr.dtype)
    todo = np.arange(n_meters)
    if selected.shape[0] == 1 and feat.shape[0] == 1:
        todo = _regression_shared(arr, feat[0], feat_event, selected[0], out)
    if todo.size:
        _regression_general(arr, feat, feat_event, selected, out, todo)
    used = selected.sum(axis=1).astype(np.int32)
    return Baseline(out, np.broadcast_to(used, (n_meters,)), np.broadcast_to(chosen, (n_meters, fr.n_days)))


def _regression_shared(arr: np.ndarray, feat: np.ndarray, feat_event: np.ndarray, selected: np.ndarray,
                       out: np.ndarray) -> np.ndarray:
    """One choice of days and one feature (n_held or 1, width or 1) for every meter: fills ``out`` for
    the meters without a gap in the chosen days and returns the others (for the general path).

    One pass over the chosen days, block by block of meters (the block stays in cache), in the
    load's dtype: the feature's mean ``mx`` and centred values ``dx`` are shared; the load is
    shifted by its value on the first chosen day (``z = y - y_0``, so a constant load gives exactly
    0 and the fit stays exact), then ``Σz`` and ``Σ dx·z`` give the mean and the slope.
    """
    n_meters, _, width = arr.shape
    days = np.flatnonzero(selected)
    x = np.broadcast_to(feat if feat.shape[0] == 1 else feat[days], (days.size, width)).astype(np.float64)
    if days.size == 0 or np.isnan(x).any():
        return np.arange(n_meters)               # no day, or a gap in the temperatures: the general path
    mx = x.mean(axis=0)
    dx = x - mx
    sxx = (dx * dx).sum(axis=0)
    keep = sxx > 1e-12 * days.size
    per = np.where(keep, 1.0 / np.where(keep, sxx, 1.0), 0.0)
    dt = arr.dtype
    sum_dx = dx.sum(axis=0).astype(dt)        # 0 but for rounding
    dxt, per, mx = dx.astype(dt), per.astype(dt), mx.astype(dt)
    shared_event = feat_event.strides[0] == 0
    de = (feat_event[0] - mx).astype(dt) if shared_event else None
    step = max(64, (1 << 20) // (width * dt.itemsize))
    sz = np.empty((step, width), dtype=dt)
    szx = np.empty_like(sz)
    tmp = np.empty_like(sz)
    gaps: list[np.ndarray] = []
    with np.errstate(invalid="ignore"):
        for lo in range(0, n_meters, step):
            block = arr[lo : lo + step]
            m = block.shape[0]
            a, b, t = sz[:m], szx[:m], tmp[:m]
            y0 = block[:, days[0]]
            a.fill(0)
            b.fill(0)
            for j in range(1, days.size):
                np.subtract(block[:, days[j]], y0, out=t)
                a += t
                t *= dxt[j]
                b += t
            a /= days.size                                     # mean of z
            np.multiply(a, sum_dx, out=t)
            b -= t
            b *= per                                           # slope
            b *= de if shared_event else (feat_event[lo : lo + m] - mx).astype(dt)
            res = out[lo : lo + m]
            np.add(y0, a, out=res)
            res += b
            bad = np.flatnonzero(np.isnan(res).any(axis=1))
            if bad.size:
                gaps.append(lo + bad)
    return np.concatenate(gaps) if gaps else np.zeros(0, dtype=np.int64)


def _regression_general(arr: np.ndarray, feat: np.ndarray, feat_event: np.ndarray, selected: np.ndarray,
                        out: np.ndarray, meters: np.ndarray) -> None:
    """Per meter and slot over the days that have data: fills ``out[meters]``."""
    days = np.flatnonzero(selected.any(axis=0))        # only days some meter chose
    feat = feat[:, days] if feat.shape[1] > 1 else feat
    selected = selected[:, days]
    width = arr.shape[2]
    step = max(16, (1 << 23) // (max(days.size, 1) * width * 8))  # ~8 MB of float64 per block
    with np.errstate(invalid="ignore", divide="ignore"):
        for lo in range(0, meters.size, step):
            rows_m = meters[lo : lo + step]
            yv = arr[rows_m][:, days].astype(np.float64)
            xv = np.broadcast_to(feat[rows_m] if feat.shape[0] > 1 else feat, yv.shape)
            rows = selected[rows_m] if selected.shape[0] > 1 else selected
            use = rows[:, :, None] & ~np.isnan(yv) & ~np.isnan(xv)
            n = use.sum(axis=1)
            mx = np.where(use, xv, 0).sum(axis=1) / n
            my = np.where(use, yv, 0).sum(axis=1) / n
            dx = np.where(use, xv - mx[:, None], 0)
            dy = np.where(use, yv - my[:, None], 0)
            sxx = (dx * dx).sum(axis=1)
            slope = np.where(sxx > 1e-12 * n, (dx * dy).sum(axis=1) / sxx, 0.0)
            out[rows_m] = my + slope * (feat_event[rows_m] - mx)


# ---------------------------------------------------------------- adjustment and response


def pre_event_slots(event_start_slot: int, lead_slots: int = 8, gap_slots: int = 4) -> slice:
    """Slots ``[event_start - lead_slots, event_start - gap_slots)`` used by a same-day adjustment.

    The default is from 2 h to 1 h before the event: the hour just before it is
    left out because a resource may already be preparing for the event.
    """
    if not 0 <= gap_slots < lead_slots <= event_start_slot:
        raise InvalidInput(
            Violation(
                "event_start_slot", "needs 0 <= gap_slots < lead_slots <= event_start_slot", event_start_slot
            )
        )
    return slice(event_start_slot - lead_slots, event_start_slot - gap_slots)


def same_day_adjustment(
    baseline: np.ndarray,
    load_event_day: np.ndarray,
    window_slots: Any,
    adj_slots: Any,
    kind: str = "multiplicative",
    cap: float = 0.2,
    held_slots: slice | None = None,
) -> Adjusted:
    """Bounded same-day adjustment of a baseline from the hours before the event.

    Parameters
    ----------
    baseline : (n_meters, 96) float, kW — unadjusted baseline of the event day
    load_event_day : (n_meters, 96) float, kW, NaN = missing — metered load of the event day
    window_slots : slice, slot indices or (96,) bool — slots adjusted (the event window)
    adj_slots : slice, slot indices or (96,) bool — slots compared, e.g. :func:`pre_event_slots`
    kind : "multiplicative" or "additive"
    cap : float, ≥ 0 — bound of the adjustment (0.2 = 20 %)
    held_slots : slice(first, end) — the slots of the day ``baseline`` and ``load_event_day`` hold
        (all 96 by default); ``window_slots`` and ``adj_slots`` stay slots of the day

    Multiplicative: factor = mean load / mean baseline over ``adj_slots``,
    clipped to ``[1 - cap, 1 + cap]``, multiplies the window slots. Additive:
    offset = mean load - mean baseline over ``adj_slots`` (kW), clipped to
    ``± cap × |mean baseline over the window|``, is added to the window slots.
    Where the comparison cannot be made (no data, zero baseline) the baseline is
    left as it is (factor 1, offset 0). Slots outside the window are unchanged.

    Returns
    -------
    Adjusted — power_kw (n_meters, 96) kW, value (n_meters,) factor or offset kW
    """
    base = np.asarray(baseline, dtype=np.result_type(baseline, np.float32))
    metered = np.asarray(load_event_day)
    lo, hi = _day_part(held_slots)
    if base.ndim != 2 or base.shape[1] != hi - lo or metered.shape != base.shape:
        raise InvalidInput(
            Violation(
                "load_event_day", f"baseline and load_event_day must both be (n_meters, {hi - lo})",
                metered.shape
            )
        )
    if not cap >= 0:
        raise InvalidInput(Violation("cap", "must be >= 0", cap))
    window = _window("window_slots", window_slots, lo, hi - lo)
    adj = _window("adj_slots", adj_slots, lo, hi - lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        base_adj = _nanmean_rows(base[:, adj])
        load_adj = _nanmean_rows(metered[:, adj])
        if kind == "multiplicative":
            value = np.clip(load_adj / base_adj, 1 - cap, 1 + cap)
            value = np.where(np.isfinite(value), value, 1.0)
            change = base[:, window] * (value[:, None] - 1)
        elif kind == "additive":
            bound = cap * np.abs(_nanmean_rows(base[:, window]))
            value = np.clip(load_adj - base_adj, -bound, bound)
            value = np.where(np.isfinite(value), value, 0.0)
            change = np.broadcast_to(value[:, None], (base.shape[0], window.size))
        else:
            raise InvalidInput(Violation("kind", "must be 'multiplicative' or 'additive'", kind))
    out = base.copy()
    out[:, window] += change.astype(out.dtype)
    return Adjusted(out, value)


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    have = ~np.isnan(a)
    return np.where(have, a, 0).sum(axis=1, dtype=np.float64) / have.sum(axis=1)


def response_kw(baseline: np.ndarray, metered: np.ndarray, direction: str = "down") -> np.ndarray:
    """Delivered response, kW, same shape as the inputs (positive = delivered).

    ``direction="down"`` (load reduction, peak shaving): baseline - metered;
    ``direction="up"`` (valley filling): metered - baseline.
    """
    if direction == "down":
        return np.subtract(baseline, metered)
    if direction == "up":
        return np.subtract(metered, baseline)
    raise InvalidInput(Violation("direction", "must be 'down' or 'up'", direction))


# ---------------------------------------------------------------- registry


METHODS: dict[str, Callable[..., Baseline]] = {
    "gbt-workday": workday_mean,
    "gbt-similar": similar_day_mean,
    "high-x-of-y": high_x_of_y,
    "temperature-regression": temperature_regression,
}

_DATA_ARGS = {"load", "day_kinds", "excluded", "event_day_idx", "window_slots", "temp_c", "event_temp_c",
              "held_days", "held_slots"}


def _defaults(method: str) -> dict[str, Any]:
    sig = inspect.signature(METHODS[method])
    return {k: p.default for k, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty and k not in _DATA_ARGS}


def _id_core(method: str, p: Mapping[str, Any]) -> tuple[str, set[str]]:
    """Short id of a method with its main parameters, and the parameters it shows."""
    if method == "gbt-workday":
        return f"gbt-workday-{p['n_days']}/{p['skip_days']}", {"n_days", "skip_days"}
    if method == "gbt-similar":
        return f"gbt-similar-{p['n_days']}/{p['skip_days']}", {"n_days", "skip_days"}
    if method == "high-x-of-y":
        return f"high-{p['x']}-of-{p['y']}/{p['skip_days']}", {"x", "y", "skip_days"}
    form = "cooling" + format(p["t_base_c"], "g") if p["form"] == "cooling" else p["form"]
    return f"temp-reg-{p['n_days']}/{p['skip_days']}-{form}", {"n_days", "skip_days", "form", "t_base_c"}


@dataclass(frozen=True)
class BaselineSpec:
    """A named, configured baseline: method name in :data:`METHODS`, its parameters and an optional adjustment.

    ``adjustment`` holds the ``kind`` and ``cap`` of :func:`same_day_adjustment`,
    applied by the caller who knows the event window. ``id`` is what an
    evaluation records, e.g. ``"gbt-workday-5/2"`` or ``"high-4-of-5/2+mult-0.2"``.
    """

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    adjustment: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInput(Violation("method", f"must be one of {', '.join(METHODS)}", self.method))
        allowed = set(_defaults(self.method))
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            raise InvalidInput(
                Violation("params", f"{self.method} accepts only {', '.join(sorted(allowed))}", unknown)
            )
        if self.adjustment is not None:
            extra = sorted(set(self.adjustment) - {"kind", "cap"})
            kind = self.adjustment.get("kind", "multiplicative")
            if extra or kind not in ("multiplicative", "additive"):
                raise InvalidInput(
                    Violation(
                        "adjustment",
                        "takes kind ('multiplicative'|'additive') and cap",
                        dict(self.adjustment),
                    )
                )

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def resolved(self) -> dict[str, Any]:
        """Every parameter of the method, defaults filled in."""
        return {**_defaults(self.method), **self.params}

    @property
    def id(self) -> str:
        params = self.resolved
        core, shown = _id_core(self.method, params)
        defaults = _defaults(self.method)
        extra = [f"{k}={params[k]}" for k in sorted(params) if k not in shown and params[k] != defaults[k]]
        if extra:
            core += "[" + ",".join(extra) + "]"
        if self.adjustment is not None:
            adj = {"kind": "multiplicative", "cap": 0.2, **self.adjustment}
            core += f"+{'mult' if adj['kind'] == 'multiplicative' else 'add'}-{adj['cap']:g}"
        return core

    def days_needed(self, day_kinds: np.ndarray, excluded: np.ndarray | None, event_day_idx: int | np.ndarray,
                    n_meters: int = 1) -> np.ndarray:
        """(n_days,) bool: every calendar day this method may choose for some meter — what a caller
        reads (with the event day) and passes as ``held_days`` (see "Part of the calendar")."""
        p = self.resolved
        n = p["y"] if self.method == "high-x-of-y" else p["n_days"]
        elig = eligible_days(day_kinds, excluded, event_day_idx, p["kinds"], p["skip_days"], n_meters)
        return most_recent(elig, _positive("n_days", n)).any(axis=0)

    def compute(self, **data: Any) -> Baseline:
        """Run the method on ``data`` (load, day_kinds, excluded, event_day_idx and what the method needs)."""
        unknown = sorted(set(data) - _DATA_ARGS)
        if unknown:
            raise InvalidInput(Violation("data", f"takes only {', '.join(sorted(_DATA_ARGS))}", unknown))
        return METHODS[self.method](**data, **self.params)


# ---------------------------------------------------------------- capability verification


def pre_window_mean_id(minutes: float) -> str:
    """The id a verification test records for :func:`pre_window_mean` over ``minutes``."""
    return f"pre-window-mean-{minutes:g}min"


def pre_window_mean(power_kw: np.ndarray, pre_steps: int) -> np.ndarray:
    """Baseline of a capability-verification test (能力校核): each meter's mean power over the
    ``pre_steps`` steps before the test instruction, held flat over the window.

    A test is ordered for a window of its own, not a market event on a GB/T calendar, so the
    meter's own hour before the instruction is the reference (the day-based methods above need
    days of history that a newly registered resource may not have).

    Parameters
    ----------
    power_kw : (n_meters, T) float, kW, NaN = missing; steps ``0 .. pre_steps-1`` precede the instruction
    pre_steps : int, 1 <= pre_steps <= T

    Returns
    -------
    (n_meters,) float64, kW: the NaN-skipping mean of the steps before the instruction; NaN for a
    meter with no data there (no baseline, so no response can be credited).
    """
    arr = np.asarray(power_kw)
    if arr.ndim != 2:
        raise InvalidInput(Violation("power_kw", "must be (n_meters, T)", arr.shape))
    pre = _positive("pre_steps", pre_steps)
    if pre > arr.shape[1]:
        raise InvalidInput(Violation("pre_steps", f"must be at most the {arr.shape[1]} steps given", pre))
    with np.errstate(invalid="ignore"):        # a row without data: 0 / 0 = NaN, as documented
        return _nanmean_rows(arr[:, :pre].astype(np.float64, copy=False))
