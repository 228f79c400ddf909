"""Effect evaluation of an event (效果评估): baseline, metered, response, cleared, ratio, credited.

    awards (unit × slot: cleared kW, price) ─┐
    members of each unit at the event time ──┼──▶ kernels.baseline ──▶ kernels.evaluation ──▶ stored results
    meter data (MeterSource), weather ───────┘        (named method)      (band per unit)

An evaluation is reproducible from stored data and records its inputs' versions: the rule set
id, the baseline method with every parameter, the meter source, the days and slots it read and a
SHA-256 of the meter arrays it read, the history window and the days it excluded, the holiday
calendar's coverage and the days that fell back to the Monday-Friday rule, the weather source and
a SHA-256 of its temperatures. The members of each trading unit are those of the event's *first*
evaluation (stored with it): a later run — a re-evaluation, a dispute — pays the same resources
whatever pools, operators or states changed since. Re-running on unchanged data gives the same
hash and the same numbers; a new run is a new version, the previous one is superseded (never
overwritten). A dispute's re-evaluation is stored as a *candidate* version that becomes current only
when the center approves the dispute (``services.disputes``).

Columnar from end to end, so that an event over a million resources is one pass over arrays:
members of every unit in one query (or the first evaluation's file), the meter data of only the
days the baseline method may choose and the slots it needs (the window, the same-day adjustment's
hours and the rebound hours around it), the baseline and evaluation kernels, and the results:
per unit and slot in ``evaluation_rows``, per resource and slot in one Arrow IPC file recorded with
its SHA-256 (``store.evaluation_files``). :func:`rows` reads either storage (evaluations stored
before migration 0012 keep their resource rows in ``evaluation_rows``) with the same answers.

Meter data comes through a :class:`MeterSource`: the telemetry store's 15-minute rollups
(:class:`StoreMeterSource`), the daily rollup exports (``services.meter_files.FileMeterSource``,
the source at a million meters), arrays in tests and notebooks (:class:`ArrayMeterSource`), or
either with an operator's corrected values laid over it (:class:`CorrectedMeterSource`). A source
with ``read_part`` reads only the days and slots asked for; another is read whole and cut.

Assumptions (docs/settlement.md): members of a unit are the resources of the operator under the
unit's clearing node at the start of the window (transfers respected, ``services.access``),
within the event's grid scope and pool, as the first evaluation found them; a resource with no
meter data (or no baseline) delivers nothing; a V2G charger's exported energy is paid by the V2G
subsidy, the rest of its response by the active one; carbon credits only curtailed energy
(``services.carbon``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, and_, func, or_, select, union_all

from openvpp.core import rules
from openvpp.core.calendar import calendar_record, day_kinds
from openvpp.core.errors import Forbidden, InvalidInput, NotFound, TransitionRefused, Violation
from openvpp.core.ids import new_id
from openvpp.core.laps import Laps
from openvpp.core.timeslots import SLOT_MINUTES, SLOTS_PER_DAY, local_midnight_utc, slot_start_utc
from openvpp.kernels import evaluation as kev
from openvpp.kernels.baseline import BaselineSpec, pre_event_slots, same_day_adjustment
from openvpp.services import events
from openvpp.services import pools as pool_svc
from openvpp.services import weather as wx
from openvpp.store import audit, bulk, event_files
from openvpp.store import evaluation_files as files
from openvpp.store.audit import Actor
from openvpp.store.columnar import (
    arrow_types,
    epoch_s,
    hash_strings,
    joined_bytes,
    quarter_index,
    select_arrow,
)
from openvpp.store.schema import grid_nodes, resource_links, resources
from openvpp.store.schema_events import awards, instructions
from openvpp.store.schema_events import events as events_t
from openvpp.store.schema_settlement import evaluation_rows, evaluations
from openvpp.store.schema_telemetry import telemetry_rollup

HISTORY_DAYS = 30           # calendar days read before the event day: enough for 5 working days after a long holiday
CENTER_ROLES = ("city_admin", "dispatcher")
SUBSIDY_KIND = {"reactive": "reactive", "reserve": "reserve"}   # else active
#: assumptions used when the rule set's [carbon] section does not name them (docs/settlement.md)
ASSUMED_CARBON = {
    "rebound_window_slots": 8,
    "shifting_types": ["user_storage", "v2g_charger", "ev_charging", "ev_swapping", "base_station", "shore_power"],
}
#: slots before the window the same-day adjustment may compare (``pre_event_slots``' default lead, 2 h)
ADJUSTMENT_LEAD = 8
RESOURCES_FILE = "resources"
#: per resource and slot, in the resource file and in ``evaluation_rows`` (shortfall: units only)
#: of them in the resource file (the ratio is response / cleared and the price the unit's: derived on reading)
FILE_COLUMNS = ("baseline_kw", "metered_kw", "response_kw", "cleared_kw", "credited", "v2g_kwh", "curtailed_kwh")
SLOT_COLUMNS = ("baseline_kw", "metered_kw", "response_kw", "cleared_kw", "ratio", "credited", "v2g_kwh",
                "curtailed_kwh", "price_yuan")
NULLABLE = ("baseline_kw", "metered_kw", "response_kw", "ratio")   # NULL (None) = not measured / no ratio
MEMBER_TYPES = {"resource_id": pa.string(), "unit_id": pa.string(), "operator_id": pa.string(),
                "owner_id": pa.string(), "resource_type": pa.string(), "capability_kw": pa.float64(),
                "district_id": pa.string()}
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation-hash")
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation-file")


def kind_of(product: str) -> str:
    """Subsidy kind of an event product: active, reactive or reserve."""
    return SUBSIDY_KIND.get(product, "active")


def quantity_unit(product: str) -> str:
    return {"active": "kWh", "reactive": "kvarh", "reserve": "kW·h"}[kind_of(product)]


# ---------------------------------------------------------------- meter sources


@dataclass
class MeterData:
    """Meter arrays of resources × days × slots (local days).

    values : (n, n_days, n_slots) float — mean kW (or kvar) per slot, NaN = not measured
    minutes : same shape, float, or None — minutes of each slot covered by telemetry (0..15)

    ``read`` gives every day of the window and 96 slots; ``read_part`` the days and slots asked.
    """

    values: np.ndarray
    minutes: np.ndarray | None = None


def check_quantity(quantity: str) -> None:
    """A meter source reads active power or reactive power, nothing else."""
    if quantity not in ("power_kw", "reactive_kvar"):
        raise InvalidInput(Violation("quantity", "must be power_kw or reactive_kvar", quantity))


class MeterSource(Protocol):
    """Where metered data comes from. ``quantity`` is ``"power_kw"`` or ``"reactive_kvar"``.

    A source may also offer ``read_part(resource_ids, first_day, days, slots, quantity, minutes)``:
    only the days ``first_day + d`` for ``d`` in ``days`` and the slots ``slots`` (a slice) of each,
    as (n, len(days), slots width) arrays. The evaluation uses it when it is there.
    """

    name: str

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData: ...


def _whole(first_day: date, n_days: int) -> tuple[list[int], slice]:
    return list(range(n_days)), slice(0, SLOTS_PER_DAY)


class ArrayMeterSource:
    """Meter data held in arrays (tests, notebooks, benchmarks).

    power_kw / reactive_kvar / minutes : (n, n_days, 96) for ``resource_ids`` from ``first_day``.
    Unknown resources and days outside the arrays read as NaN (not measured). Without
    ``minutes``, a measured slot counts as fully covered.
    """

    def __init__(self, resource_ids: Sequence[str], first_day: date, power_kw: np.ndarray,
                 reactive_kvar: np.ndarray | None = None, minutes: np.ndarray | None = None,
                 name: str = "arrays"):
        self.pos = {r: i for i, r in enumerate(resource_ids)}
        self.first_day = first_day
        self.data = {"power_kw": np.asarray(power_kw, dtype=np.float64)}
        if reactive_kvar is not None:
            self.data["reactive_kvar"] = np.asarray(reactive_kvar, dtype=np.float64)
        self._minutes = None if minutes is None else np.asarray(minutes, dtype=np.float64)
        self.name = name

    def _take(self, arr: np.ndarray, rows: np.ndarray, first_day: date, days: Sequence[int], slots: slice
              ) -> np.ndarray:
        lo, hi = slots.start or 0, slots.stop
        src = np.asarray(days, dtype=np.int64) + (first_day - self.first_day).days
        out = np.full((len(rows), len(src), hi - lo), np.nan)
        have = np.flatnonzero(rows >= 0)
        inside = np.flatnonzero((src >= 0) & (src < arr.shape[1]))
        if have.size and inside.size:
            out[have[:, None], inside[None, :]] = arr[rows[have][:, None], src[inside][None, :], lo:hi]
        return out

    def read_part(self, resource_ids: Sequence[str], first_day: date, days: Sequence[int], slots: slice,
                  quantity: str = "power_kw", minutes: bool = False) -> MeterData:
        if quantity not in self.data:
            raise InvalidInput(Violation("quantity", f"this source holds {', '.join(self.data)}", quantity))
        rows = np.array([self.pos.get(r, -1) for r in resource_ids], dtype=np.int64)
        values = self._take(self.data[quantity], rows, first_day, days, slots)
        mins = None
        if minutes:
            mins = (self._take(self._minutes, rows, first_day, days, slots) if self._minutes is not None
                    else np.where(np.isnan(values), 0.0, float(SLOT_MINUTES)))
        return MeterData(values, mins)

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData:
        return self.read_part(resource_ids, first_day, *_whole(first_day, n_days), quantity, minutes)


def _unique(ids: Sequence[str]) -> tuple[pa.Array, np.ndarray]:
    """Distinct ids and, for each id asked, its position among them."""
    arr = pa.array(list(ids), pa.string())
    uniq = pc.unique(arr)
    return uniq, pc.index_in(arr, value_set=uniq).to_numpy(zero_copy_only=False).astype(np.int64)


def _day_ranges(first_day: date, days: Sequence[int], lo: int, hi: int) -> list[tuple[datetime, datetime]]:
    """UTC [start, end) of the slots lo..hi-1 on each day, consecutive whole days merged."""
    out: list[tuple[datetime, datetime]] = []
    for d in days:
        t0 = local_midnight_utc(first_day + timedelta(days=int(d)))
        a, b = t0 + timedelta(minutes=SLOT_MINUTES * lo), t0 + timedelta(minutes=SLOT_MINUTES * hi)
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


class StoreMeterSource:
    """The telemetry store: 15-minute rollups (mean power / reactive power per device) and the
    1-minute rollups for coverage. Device ids are resource ids. Columnar: one query per chunk of
    devices (a COPY on PostgreSQL) over only the days and slots asked, placed into arrays at once."""

    CHUNK = 2000

    def __init__(self, conn: Connection, name: str = "telemetry"):
        self.conn = conn
        self.name = name

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData:
        return self.read_part(resource_ids, first_day, *_whole(first_day, n_days), quantity, minutes)

    def read_part(self, resource_ids: Sequence[str], first_day: date, days: Sequence[int], slots: slice,
                  quantity: str = "power_kw", minutes: bool = False) -> MeterData:
        check_quantity(quantity)
        lo, hi = slots.start or 0, slots.stop
        width = hi - lo
        uniq, inverse = _unique(resource_ids)
        n_u = len(uniq)
        day_pos = np.full(max(days, default=-1) + 1, -1, dtype=np.int64)
        day_pos[np.asarray(days, dtype=np.int64)] = np.arange(len(days))
        values = np.full((n_u, len(days), width), np.nan)
        mins = np.zeros((n_u, len(days), width)) if minutes else None
        r = telemetry_rollup
        t0 = local_midnight_utc(first_day).timestamp()
        ts = epoch_s(r.c.bucket, self.conn.dialect.name)
        ranges = or_(*(and_(r.c.bucket >= a, r.c.bucket < b) for a, b in _day_ranges(first_day, days, lo, hi)))
        types = {"device_id": pa.string(), "ts": pa.float64(), "n": pa.int64(), "p": pa.float64(),
                 "q": pa.float64(), "nq": pa.int64()}
        for start in range(0, n_u, self.CHUNK) if days else ():
            part = uniq.slice(start, self.CHUNK)
            for step in (900, 60) if minutes else (900,):
                t = select_arrow(self.conn, select(r.c.device_id, ts, r.c.n, r.c.power_sum_kw, r.c.reactive_sum_kvar,
                                                   r.c.n_reactive).where(r.c.step_s == step,
                                                                         r.c.device_id.in_(part.to_pylist()), ranges),
                                 types)
                row = start + pc.index_in(t.column("device_id"), value_set=part).to_numpy(zero_copy_only=False)
                k = quarter_index(t.column("ts").to_numpy(), t0)
                d, c = k // SLOTS_PER_DAY, k % SLOTS_PER_DAY - lo
                ok = (d < day_pos.size) & (c >= 0) & (c < width)
                j = np.where(ok, day_pos[np.minimum(d, day_pos.size - 1)], -1)
                ok &= j >= 0
                row, j, c = row[ok], j[ok], c[ok]
                if step == 900:
                    num, den = (("p", "n") if quantity == "power_kw" else ("q", "nq"))
                    den_v = t.column(den).to_numpy()[ok]
                    got = den_v > 0
                    values[row[got], j[got], c[got]] = t.column(num).to_numpy()[ok][got] / den_v[got]
                else:
                    np.add.at(mins, (row, j, c), 1.0)
        return MeterData(values[inverse], None if mins is None else mins[inverse])


class CorrectedMeterSource:
    """Another source with corrected values laid over it: ``{resource_id: {slot: value}}`` on ``day``."""

    def __init__(self, base: MeterSource, day: date, corrections: Mapping[str, Mapping[int, float]]):
        self.base, self.day, self.corrections = base, day, corrections
        self.name = f"{base.name}+corrections"

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData:
        return self.read_part(resource_ids, first_day, *_whole(first_day, n_days), quantity, minutes)

    def read_part(self, resource_ids: Sequence[str], first_day: date, days: Sequence[int], slots: slice,
                  quantity: str = "power_kw", minutes: bool = False) -> MeterData:
        data = _read_part(self.base, resource_ids, first_day, days, slots, quantity, minutes)
        lo, hi = slots.start or 0, slots.stop
        offset = (self.day - first_day).days
        if offset in days:
            d = list(days).index(offset)
            for i, rid in enumerate(resource_ids):
                for slot, value in self.corrections.get(rid, {}).items():
                    if lo <= int(slot) < hi:
                        data.values[i, d, int(slot) - lo] = float(value)
                        if data.minutes is not None:
                            data.minutes[i, d, int(slot) - lo] = float(SLOT_MINUTES)
        return data


def _read_part(source: MeterSource, resource_ids: Sequence[str], first_day: date, days: Sequence[int],
               slots: slice, quantity: str, minutes: bool) -> MeterData:
    """``source.read_part`` when the source has it, else its whole window cut to ``days`` × ``slots``."""
    if hasattr(source, "read_part"):
        return source.read_part(resource_ids, first_day, days, slots, quantity, minutes)
    n_days = max(days, default=-1) + 1
    full = source.read(resource_ids, first_day, n_days, quantity, minutes)
    expect = (len(resource_ids), n_days, SLOTS_PER_DAY)
    if full.values.shape != expect:
        raise InvalidInput(Violation("meter data", f"must be {expect}", full.values.shape))
    idx = np.asarray(days, dtype=np.int64)
    return MeterData(full.values[:, idx, slots], None if full.minutes is None else full.minutes[:, idx, slots])


def _utc(ts: datetime | str) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


# ---------------------------------------------------------------- members of the units at the event time


def _scope_filter(conn: Connection, ev: dict):
    scope = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == ev["scope_node_id"])).mappings().one()
    col = {"district": grid_nodes.c.district_id, "substation": grid_nodes.c.substation_id,
           "feeder": grid_nodes.c.feeder_id, "transformer_area": grid_nodes.c.node_id}.get(scope["level"])
    return None if col is None else col == scope["node_id"]


def members_of(conn: Connection, ev: dict, unit_ids: Sequence[str], at: datetime) -> pa.Table:
    """Resources of the trading units ``OPERATOR@SUBSTATION`` at instant ``at``, in one query: the
    operator's then (open link or a closed one covering ``at``), under the clearing node, inside the
    event's scope and pool. Columns :data:`MEMBER_TYPES`, sorted by resource then unit (the order of
    the meter files, which then read without a scattered gather); capability is the verified kW in
    the event's direction, else the declared adjustable kW."""
    units = sorted(set(unit_ids))
    if not units:
        return pa.table({k: pa.array([], t) for k, t in MEMBER_TYPES.items()})
    ops = sorted({u.split("@", 1)[0] for u in units})
    subs = sorted({u.split("@", 1)[1] for u in units if "@" in u})
    key = "down" if ev["direction"] == "down" else "up"
    r, g, lk = resources, grid_nodes, resource_links
    cap = func.coalesce(r.c[f"verified_{key}_kw"], r.c[f"adjustable_{key}_kw"]).label("capability_kw")
    cols = [r.c.resource_id, r.c.owner_id, r.c.resource_type, cap, g.c.substation_id, g.c.district_id]
    in_scope = _scope_filter(conn, ev)
    open_q = (select(*cols, r.c.operator_id.label("op")).select_from(r.join(g, g.c.node_id == r.c.ta_id))
              .where(g.c.substation_id.in_(subs), r.c.state == "active", r.c.operator_id.in_(ops),
                     or_(r.c.operator_since.is_(None), r.c.operator_since <= at)))
    closed_q = (select(*cols, lk.c.operator_id.label("op"))
                .select_from(lk.join(r, r.c.resource_id == lk.c.resource_id).join(g, g.c.node_id == r.c.ta_id))
                .where(g.c.substation_id.in_(subs), lk.c.operator_id.in_(ops),
                       or_(lk.c.valid_from.is_(None), lk.c.valid_from <= at), lk.c.valid_to > at))
    if in_scope is not None:
        open_q, closed_q = open_q.where(in_scope), closed_q.where(in_scope)
    types = {"resource_id": pa.string(), "owner_id": pa.string(), "resource_type": pa.string(),
             "capability_kw": pa.float64(), "substation_id": pa.string(), "district_id": pa.string(),
             "operator_id": pa.string()}
    t = select_arrow(conn, union_all(open_q, closed_q), types)
    unit = pc.binary_join_element_wise(t.column("operator_id"), t.column("substation_id"), "@")
    t = t.append_column("unit_id", unit).filter(pc.is_in(unit, value_set=pa.array(units)))
    if ev.get("pool_id"):
        engine = pool_svc.PoolEngine.from_db(conn, [ev["pool_id"]])
        inside = engine.reg.resource_id[engine.mask(ev["pool_id"])].tolist()
        t = t.filter(pc.is_in(t.column("resource_id"), value_set=pa.array(inside, pa.string())))
    t = t.select(list(MEMBER_TYPES)).cast(pa.schema(MEMBER_TYPES.items()))
    t = t.take(pc.sort_indices(t, sort_keys=[("resource_id", "ascending"), ("unit_id", "ascending")]))
    # a resource counted twice in a unit (an open and a closed link to the same operator) counts once
    rid, uid = t.column("resource_id"), t.column("unit_id")
    if t.num_rows > 1:
        same = pc.and_(pc.equal(rid.slice(1), rid.slice(0, t.num_rows - 1)),
                       pc.equal(uid.slice(1), uid.slice(0, t.num_rows - 1)))
        if pc.any(same).as_py():
            t = t.filter(pa.concat_arrays([pa.array([True]), pc.invert(same).combine_chunks()]))
    return t


def members_sha256(members: pa.Table) -> str:
    """SHA-256 of the members' (resource, unit) pairs in their order (an evaluation's ``member_set``)."""
    h = hashlib.sha256()
    for name in ("resource_id", "unit_id"):
        h.update(name.encode())
        hash_strings(h, members.column(name))
    return h.hexdigest()


def member_ids(conn: Connection, head: dict) -> list[str]:
    """Resource ids of an evaluation in the order it read their meters: its resource file's rows
    (``inputs.member_set``), or, for evaluations stored before the file, the units' lists in
    ``inputs.members``."""
    listed = head["inputs"].get("members")
    if listed is not None:
        return [rid for u in sorted(listed) for rid in listed[u]]
    t = files.read(conn, head["evaluation_id"], RESOURCES_FILE, ["key_id"])
    if t is None:
        raise NotFound("evaluation file", f"{head['evaluation_id']}/{RESOURCES_FILE}")
    return t.column("key_id").to_pylist()


MEMBERS_FILE = "members"


def snapshot_members(conn: Connection, ev: dict, unit_ids: Sequence[str]) -> dict | None:
    """Take the members of the awarded trading units ``unit_ids`` as dispatched (:func:`members_of` at
    the window start) and keep them as the event's members file; called when the event starts
    executing, with the units it sends instructions to. The event's first evaluation pays these
    resources, whatever the registry says by then. Returns the file's record (None without units)."""
    units = sorted(set(unit_ids))
    if not units:
        return None
    t = members_of(conn, ev, units, slot_start_utc(ev["day"], ev["start_slot"]))
    return event_files.write(conn, ev["event_id"], MEMBERS_FILE, t)


def _executed_members(conn: Connection, event_id: str) -> tuple[pa.Table, dict] | None:
    """The members taken when the event started executing (:func:`snapshot_members`), if it was."""
    got = event_files.read(conn, event_id, MEMBERS_FILE)
    if got is None:
        return None
    return got[0].select(list(MEMBER_TYPES)).cast(pa.schema(MEMBER_TYPES.items())), got[1]


def members_at(conn: Connection, ev: dict, unit_id: str, at: datetime) -> list[dict]:
    """Resources of one trading unit at instant ``at`` (:func:`members_of`), as dicts."""
    return members_of(conn, ev, [unit_id], at).to_pylist()


def _stored_members(conn: Connection, event_id: str) -> tuple[pa.Table, str] | None:
    """The members the event's first evaluation stored (its resource file; the ids of an evaluation
    stored before migration 0012, with their attributes from the registry) and that evaluation's id."""
    first = conn.execute(select(evaluations.c.evaluation_id, evaluations.c.inputs).where(
        evaluations.c.event_id == event_id).order_by(evaluations.c.version).limit(1)).first()
    if first is None:
        return None
    t = files.read(conn, first[0], RESOURCES_FILE, ["key_id", *list(MEMBER_TYPES)[1:]])
    if t is not None:
        t = t.rename_columns(list(MEMBER_TYPES)).cast(pa.schema(MEMBER_TYPES.items()))
        return t, first[0]
    listed = (first[1] or {}).get("members")
    if listed is None:
        return None
    rid = [x for u in sorted(listed) for x in listed[u]]
    unit = [u for u in sorted(listed) for _ in listed[u]]
    attrs = _registry_attributes(conn, rid, events.get(conn, event_id)["direction"])
    t = pa.table({"resource_id": pa.array(rid, pa.string()), "unit_id": pa.array(unit, pa.string()),
                  "operator_id": pa.array([u.split("@", 1)[0] for u in unit], pa.string()),
                  **{k: attrs.column(k) for k in ("owner_id", "resource_type", "capability_kw", "district_id")}})
    return t.select(list(MEMBER_TYPES)).cast(pa.schema(MEMBER_TYPES.items())), first[0]


def _registry_attributes(conn: Connection, ids: list[str], direction: str) -> pa.Table:
    """owner, type, capability and district of ``ids`` from the registry today, in the order asked."""
    key = "down" if direction == "down" else "up"
    r, g = resources, grid_nodes
    cap = func.coalesce(r.c[f"verified_{key}_kw"], r.c[f"adjustable_{key}_kw"])
    types = {"resource_id": pa.string(), "owner_id": pa.string(), "resource_type": pa.string(),
             "capability_kw": pa.float64(), "district_id": pa.string()}
    uniq = sorted(set(ids))
    parts = [select_arrow(conn, select(r.c.resource_id, r.c.owner_id, r.c.resource_type, cap, g.c.district_id)
                          .select_from(r.join(g, g.c.node_id == r.c.ta_id))
                          .where(r.c.resource_id.in_(uniq[lo:lo + 2000])), types)
             for lo in range(0, len(uniq), 2000)]
    t = pa.concat_tables(parts) if parts else pa.table({k: pa.array([], v) for k, v in types.items()})
    pos = pc.index_in(pa.array(ids, pa.string()), value_set=t.column("resource_id"))
    return t.take(pos)


# ---------------------------------------------------------------- evaluate


def _excluded_days(conn: Connection, event_id: str, first_day: date, day: date) -> list[date]:
    """Earlier event days (events that reached execution) inside the history window."""
    q = select(events_t.c.day).where(events_t.c.day >= first_day, events_t.c.day < day,
                                     events_t.c.event_id != event_id,
                                     events_t.c.state.in_(("executing", "evaluating", "settled"))).distinct()
    return sorted(r[0] for r in conn.execute(q))


def default_spec(day: date) -> BaselineSpec:
    """GB/T working-day baseline for a working-day event, the similar-day one otherwise."""
    working = int(day_kinds(np.array([np.datetime64(day)]), strict=False)[0]) == 0
    return BaselineSpec("gbt-workday" if working else "gbt-similar")


def fingerprint(ids: Sequence[str] | pa.Array, first_day: date, *arrays: np.ndarray | None,
                read: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of the meter data an evaluation read: ids, first day and the arrays' bytes.

    ``read`` is the evaluation's ``inputs["read"]`` (the days and slots it read; evaluations stored
    before it hashed the whole window as float64): arrays of the whole window ((n, n_days, 96)) are
    cut to those days and slots first, then hashed in their own dtype with the plan. With
    ``"order": "slot-major"`` in the plan (evaluations since the rollup files are read slot-major) the
    bytes are taken day by day, slot by slot, every meter of a slot together: the order a file source
    holds them in, so hashing a million meters copies nothing; other sources' arrays are reordered.
    """
    h = hashlib.sha256()
    h.update(joined_bytes(ids, b"\x1f") if isinstance(ids, pa.Array | pa.ChunkedArray) else "\x1f".join(ids).encode())
    h.update(first_day.isoformat().encode())
    if read is None:
        for a in arrays:
            if a is not None:
                h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()
    days = np.asarray(read["days"], dtype=np.int64)
    lo, hi = (int(x) for x in read["slots"])
    order = {"order": read["order"]} if read.get("order") else {}
    h.update(json.dumps({"days": days.tolist(), "slots": [lo, hi], **order}).encode())
    for a in arrays:
        if a is None:
            continue
        if a.shape[1:] != (days.size, hi - lo):
            a = a[:, days, lo:hi]
        a = np.ascontiguousarray(a.transpose(1, 2, 0) if read.get("order") == "slot-major" else a)
        h.update(a.dtype.str.encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _rebound_slots(start: int, end: int, width: int) -> np.ndarray:
    return np.r_[max(0, start - width):start, end:min(SLOTS_PER_DAY, end + width)].astype(np.int64)


def _carbon_rules(rs: rules.RuleSet) -> dict:
    sec = rs.data.get("carbon", {})
    return {k: sec.get(k, v) for k, v in ASSUMED_CARBON.items()} | {
        "from_ruleset": sorted(k for k in ASSUMED_CARBON if k in sec)}


def _device_cleared(conn: Connection, event_id: str, ids: pa.Array, start: int, end: int) -> np.ndarray | None:
    """Resources' own cleared kW per window slot from the operator's device instructions, if it sent any."""
    i = instructions
    t = select_arrow(conn, select(i.c.resource_id, i.c.slot, i.c.kw).where(
        i.c.event_id == event_id, i.c.level == "device", i.c.state.in_(("sent", "acked"))),
        {"resource_id": pa.string(), "slot": pa.int64(), "kw": pa.float64()})
    if t.num_rows == 0:
        return None
    out = np.zeros((len(ids), end - start))
    pos = pc.fill_null(pc.index_in(t.column("resource_id"), value_set=ids), -1).to_numpy().astype(np.int64)
    slot = t.column("slot").to_numpy()
    ok = (pos >= 0) & (slot >= start) & (slot < end)
    np.add.at(out, (pos[ok], slot[ok] - start), t.column("kw").to_numpy()[ok])
    return out


def _weather_baseline(spec: BaselineSpec, call: dict, members: pa.Table, weather: wx.WeatherSource,
                      first_day: date, n_days: int, held: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Temperature regression with each resource's district temperature (one call per district)."""
    district = pc.fill_null(members.column("district_id"), "").to_numpy(zero_copy_only=False)
    areas = sorted(set(district.tolist()))
    data = weather.read([a for a in areas if a], first_day, n_days) if any(areas) else wx.WeatherData({}, {})
    if "" in areas:                                  # a resource without a district: the city's
        city = weather.read(["*"], first_day, n_days)
        data.temp_c[""], data.used[""] = city.temp_c["*"], city.used["*"]
    lacking = {a or "(none)": [str(first_day + timedelta(days=int(d))) for d in held
                               if np.isnan(data.temp_c[a][d]).all()] for a in areas}
    lacking = {a: d for a, d in lacking.items() if d}
    if lacking:
        raise InvalidInput([Violation(f"weather.{a}", f"the temperature regression needs the temperature of the "
                                                      f"days it reads; weather source '{weather.name}' has none",
                                      days[:5]) for a, days in sorted(lacking.items())])
    n, width = call["load"].shape[0], call["load"].shape[2]
    base = np.full((n, width), np.nan, dtype=np.result_type(call["load"].dtype, np.float32))
    used = np.zeros(n, dtype=np.int32)
    for a in areas:
        rows = np.flatnonzero(district == a)
        temp = data.temp_c[a]
        res = spec.compute(**{**call, "load": call["load"][rows]}, temp_c=temp, event_temp_c=temp[n_days - 1])
        base[rows], used[rows] = res.power_kw, res.days_used
    record = {"source": weather.name, "sha256": wx.fingerprint(data, first_day),
              "areas": {a or "(none)": data.used[a] for a in areas}}
    return base, used, record


def evaluate(conn: Connection, actor: Actor, event_id: str, source: MeterSource, spec: BaselineSpec | None = None,
             history_days: int = HISTORY_DAYS, reason: str | None = None, now: datetime | None = None,
             candidate_for: str | None = None, weather: wx.WeatherSource | None = None,
             profile: dict[str, float] | None = None) -> dict:
    """Evaluate an event from its awards and meter data; store it as the event's new version.

    ``candidate_for`` (a dispute id) stores the result as a candidate that does not replace the
    current evaluation until the dispute is approved. Moves an ``executing`` event whose window
    has ended to ``evaluating``. ``weather`` feeds a temperature-regression baseline (default: the
    stored temperatures, ``services.weather.StoreWeatherSource``). ``profile``, if given, receives the
    seconds of each step (benchmarks/evaluate_settle.py --service). Returns :func:`summary` of the
    stored evaluation.
    """
    lap = Laps(profile)
    if actor.role not in CENTER_ROLES:
        raise Forbidden("evaluations are run by the center (city admin or dispatcher)")
    ev = events.get(conn, event_id)
    now = now or datetime.now(UTC)
    _, window_end = events.window_utc(ev)
    if ev["state"] == "executing":
        if now < window_end:
            raise TransitionRefused("event", event_id, ev["state"], "evaluate",
                                    f"the window ends at {window_end.isoformat()}", [])
        ev = events.transition(conn, actor, event_id, "evaluate")
    allowed = ("evaluating", "settled") if candidate_for else ("evaluating",)
    if ev["state"] not in allowed:
        raise TransitionRefused("event", event_id, ev["state"], "evaluate",
                                "needs state executing or evaluating (settled events: through a dispute)",
                                list(allowed))
    if not 1 <= history_days <= 400:
        raise InvalidInput(Violation("history_days", "must be in 1..400", history_days))
    rs = rules.load(ev["ruleset"])
    band = rs.section("evaluation")
    low, high = float(band["valid_band_low"]), float(band["valid_band_high"])
    spec = spec or default_spec(ev["day"])
    start, end = ev["start_slot"], ev["end_slot"]
    s = end - start
    product, kind = ev["product"], kind_of(ev["product"])
    carbon = _carbon_rules(rs)

    # awards → units × slots
    aw = select_arrow(conn, select(awards.c.unit_id, awards.c.operator_id, awards.c.slot, awards.c.cleared_kw,
                                   awards.c.price_yuan_per_kwh).where(awards.c.event_id == event_id),
                      {"unit_id": pa.string(), "operator_id": pa.string(), "slot": pa.int64(), "cleared": pa.float64(),
                       "price": pa.float64()})
    units = sorted(pc.unique(aw.column("unit_id")).to_pylist())
    unit_operator = dict(zip(aw.column("unit_id").to_pylist(), aw.column("operator_id").to_pylist(), strict=True))
    cleared_u = np.zeros((len(units), s))
    price_u = np.zeros((len(units), s))
    if aw.num_rows:
        row = pc.index_in(aw.column("unit_id"), value_set=pa.array(units, pa.string())).to_numpy(
            zero_copy_only=False).astype(np.int64)
        col = aw.column("slot").to_numpy() - start
        ok = (col >= 0) & (col < s)
        cleared_u[row[ok], col[ok]] = aw.column("cleared").to_numpy()[ok]
        price_u[row[ok], col[ok]] = aw.column("price").to_numpy()[ok]

    lap("event and awards")
    # members: those of the event's first evaluation; else those taken when it started executing (as
    # dispatched); else (events executed before that was kept) the registry's now
    stored = _stored_members(conn, event_id)
    executed = None if stored else _executed_members(conn, event_id)
    if stored:
        members, taken = stored[0], {"from": "first evaluation", "evaluation_id": stored[1]}
    elif executed:
        members, taken = executed[0], {"from": "execution", "sha256": executed[1]["sha256"],
                                       "at": executed[1]["created_at"]}
    else:
        members = members_of(conn, ev, units, slot_start_utc(ev["day"], start))
        taken = {"from": "registry at the first evaluation"}
    # each member's unit among the awarded ones (one hash of the unit column); members of others dropped
    unit_of = pc.index_in(members.column("unit_id"), value_set=pa.array(units, pa.string()))
    if unit_of.null_count:
        keep = pc.is_valid(unit_of)
        members, unit_of = members.filter(keep), unit_of.filter(keep)
    codes = unit_of.to_numpy(zero_copy_only=False).astype(np.int64)
    # the ids stay Arrow strings: a source that reads them so (the rollup files) gets them as they are,
    # and the meter hash takes their bytes; a Python list only for the sources that want one
    id_array = members.column("resource_id").combine_chunks() if members.num_rows else pa.array([], pa.string())
    n = len(id_array)
    cleared_r = _device_cleared(conn, event_id, id_array, start, end)
    # the resource file's member columns (ids, dictionary codes) built on the file's thread meanwhile
    member_cols = _WRITER.submit(_member_columns, members)
    lap("members (" + {"first evaluation": "stored", "execution": "taken at execution"}.get(
        taken["from"], "registry") + ")")

    # what to read: the days the method may choose and the event day; the window and the hours around it
    first_day = ev["day"] - timedelta(days=history_days)
    n_days = history_days + 1
    dates = np.arange(np.datetime64(first_day), np.datetime64(first_day) + n_days)
    kinds = day_kinds(dates, strict=False)
    excluded_days = _excluded_days(conn, event_id, first_day, ev["day"])
    excluded = np.isin(dates, np.array(excluded_days, dtype="datetime64[D]"))
    need = spec.days_needed(kinds, excluded, n_days - 1)
    need[n_days - 1] = True
    held = np.flatnonzero(need)
    rebound_w = int(carbon["rebound_window_slots"])
    lo, hi = max(0, start - max(rebound_w, ADJUSTMENT_LEAD)), min(SLOTS_PER_DAY, end + rebound_w)
    plan = {"days": held.tolist(), "slots": [lo, hi], "order": "slot-major"}
    quantity = "reactive_kvar" if kind == "reactive" else "power_kw"
    data = _read_part(source, id_array if getattr(source, "reads_arrow_ids", False) else id_array.to_pylist(),
                      first_day, held.tolist(), slice(lo, hi), quantity, kind == "reserve")
    if data.values.shape != (n, held.size, hi - lo) or (kind == "reserve" and (
            data.minutes is None or data.minutes.shape != data.values.shape)):
        raise InvalidInput(Violation("meter data", f"must be {(n, held.size, hi - lo)} (values and, for reserve, "
                                                   f"minutes)", data.values.shape))
    lap("meter read")
    hashed = _HASHER.submit(fingerprint, id_array, first_day, data.values, data.minutes, read=plan)

    # baseline on what was read
    call: dict[str, Any] = {"load": data.values, "day_kinds": kinds, "excluded": excluded,
                            "event_day_idx": n_days - 1, "held_days": held, "held_slots": slice(lo, hi)}
    if spec.method == "high-x-of-y":
        call["window_slots"] = slice(start, end)
    weather_record = None
    if not n:
        base_day, days_used = np.zeros((0, hi - lo)), np.zeros(0, dtype=np.int32)
    elif spec.method == "temperature-regression":
        base_day, days_used, weather_record = _weather_baseline(spec, call, members, weather or
                                                                wx.StoreWeatherSource(conn), first_day, n_days, held)
    else:
        res = spec.compute(**call)
        base_day, days_used = res.power_kw, res.days_used
    lap("baseline")
    met_day = data.values[:, -1]
    window = slice(start - lo, end - lo)
    adjust_value = None
    if spec.adjustment is not None and n:
        adj = {"kind": "multiplicative", "cap": 0.2, **spec.adjustment}
        out = same_day_adjustment(base_day, met_day, slice(start, end), pre_event_slots(start),
                                  held_slots=slice(lo, hi), **adj)
        base_day, adjust_value = out.power_kw, out.value
    # the window's slots as (meters, slots) float64 in C order, whatever the source's layout
    base_w, met_w = (np.ascontiguousarray(a[:, window], dtype=np.float64) for a in (base_day, met_day))
    types = members.column("resource_type")
    capability = pc.fill_null(members.column("capability_kw"), np.nan).to_numpy(zero_copy_only=False)

    # evaluation on arrays
    minutes_w = data.minutes[:, -1, window] if kind == "reserve" else None
    if kind == "reserve":
        share = cleared_r if cleared_r is not None else kev.split_cleared(cleared_u, codes, capability)
        avail_kw = kev.reserve_available(share, minutes_w) / kev.energy(1.0)
        unit_avail = kev.group_slots(codes, len(units), avail_kw)
        unit_perf = kev.performance(unit_avail, cleared_u, low, high)
        credited_kw = kev.allocate(unit_perf.credited_kw, codes, avail_kw)
        resp, cleared_rs = avail_kw, share
        unit_base = kev.group_slots(codes, len(units), base_w)
        unit_met = kev.group_slots(codes, len(units), met_w)
        unit_resp = unit_avail
    else:
        out = kev.evaluate(base_w, met_w, codes, cleared_u, ev["direction"], low, high, capability_kw=capability,
                           cleared_kw=cleared_r)
        resp, cleared_rs, credited_kw = out.response_kw, out.cleared_kw, out.credited_kw
        unit_perf, unit_base, unit_met, unit_resp = out.unit, out.unit_baseline_kw, out.unit_metered_kw, \
            out.unit_response_kw
    credited = np.multiply(credited_kw, kev.energy(1.0), out=credited_kw)     # kWh, in place (a million rows)
    v2g = np.zeros_like(credited)
    v2g_rows = np.zeros(0, dtype=np.int64)        # the only rows whose V2G kWh may not be 0
    curtail_share = np.zeros(n)
    if kind == "active" and ev["direction"] == "down":
        is_v2g = pc.equal(types, "v2g_charger").to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
        shifting = pc.is_in(types, value_set=pa.array(list(carbon["shifting_types"]), pa.string())).to_numpy(
            zero_copy_only=False) if n else np.zeros(0, bool)
        v2g = kev.v2g_discharge(credited, met_w, is_v2g)
        v2g_rows = np.flatnonzero(is_v2g)
        reb = kev.rebound_kwh(base_day, met_day, _rebound_slots(start, end, rebound_w) - lo)
        curtail_share = kev.curtailed_share(credited, reb, shifting)
    curtailed = credited * curtail_share[:, None]             # kev.curtailed, from the share the file keeps

    lap("evaluation kernels")
    # store: the resource file is built and written on a thread while the rows go in on this one
    version = (conn.execute(select(func.max(evaluations.c.version)).where(evaluations.c.event_id == event_id))
               .scalar() or 0) + 1
    evaluation_id = new_id("EVA")
    # baseline and metered kW in the meter data's own dtype (float32 from the rollup files: exact); the
    # response is theirs (their difference, derived on reading) but for reserve (the available kW)
    # and the resources' cleared kW are the unit's shared by capability (kept as the units' cleared kW)
    # unless the operator's device instructions gave their own
    slot_values = {"baseline_kw": base_day[:, window], "metered_kw": met_day[:, window], "credited": credited}
    response = "stored" if kind == "reserve" else RESPONSE_OF[ev["direction"]]
    if response == "stored":
        slot_values["response_kw"] = resp
    if cleared_r is not None:
        slot_values["cleared_kw"] = cleared_rs
    resource_file = _WRITER.submit(
        lambda root: files.write_file(root, evaluation_id, event_id, RESOURCES_FILE, _resource_table(
            member_cols.result(), start, slot_values, response=response, v2g_kwh=v2g, v2g_rows=v2g_rows,
            curtailed_share=curtail_share, units_cleared=None if cleared_r is not None else (units, cleared_u))),
        files.files_root(conn))
    telemetry_hash = hashed.result()
    lap("meter hash (beside the kernels)")
    unit_credited = kev.energy(unit_perf.credited_kw)
    cal = calendar_record(dates)
    totals = {
        "credited": float(credited.sum()), "quantity_unit": quantity_unit(product),
        "cleared_kwh": float(kev.energy(cleared_u).sum()), "v2g_kwh": float(v2g.sum()),
        "curtailed_kwh": float(curtailed.sum()), "shortfall": float(kev.energy(unit_perf.shortfall_kw).sum()),
        "units": len(units), "resources": n,
        "not_measured": int(np.isnan(resp).sum()) if kind != "reserve" else int((minutes_w == 0).sum()),
        "slots_valid": int(unit_perf.valid.sum()), "slots_cleared": int((cleared_u > 0).sum()),
        "calendar_fallback_days": len(cal["fallback_days"]),
        "by_operator": {},
    }
    for u, uid in enumerate(units):
        op = totals["by_operator"].setdefault(unit_operator[uid], {"credited": 0.0, "cleared_kwh": 0.0})
        op["credited"] += float(unit_credited[u].sum())
        op["cleared_kwh"] += float(kev.energy(cleared_u[u]).sum())
    inputs = audit._plain({
        "history_days": history_days, "first_day": first_day, "event_day_idx": n_days - 1,
        "excluded_days": excluded_days, "band": {"low": low, "high": high},
        "days_used_min": int(np.min(days_used)) if n else None, "device_instructions": cleared_r is not None,
        "carbon": carbon, "read": plan, "calendar": cal, "weather": weather_record,
        "members_from": stored[1] if stored else None, "members_taken": taken})
    # the members themselves are the resource file's first columns (member_ids); recorded here: how
    # many and a SHA-256 of (resource, unit) in the order read
    inputs["member_set"] = {"count": n, "sha256": members_sha256(members), "file": RESOURCES_FILE}
    inputs["adjustment_values"] = None if adjust_value is None else {
        r: _num(x) for r, x in zip(id_array.to_pylist(), adjust_value.tolist(), strict=True)}
    status = "candidate" if candidate_for else "current"
    if status == "current":
        conn.execute(evaluations.update().where(evaluations.c.event_id == event_id,
                                                evaluations.c.status == "current").values(status="superseded"))
    header = {"evaluation_id": evaluation_id, "event_id": event_id, "version": version, "status": status,
              "product": product, "direction": ev["direction"], "quantity_unit": quantity_unit(product),
              "ruleset": rs.id, "baseline_id": spec.id,
              "baseline": {"method": spec.method, "params": _jsonable(spec.resolved),
                           "adjustment": dict(spec.adjustment) if spec.adjustment else None},
              "meter_source": source.name, "telemetry_sha256": telemetry_hash, "inputs": inputs,
              "totals": totals, "dispute_id": candidate_for, "reason": reason, "created_by": actor.name,
              "created_at": now}
    conn.execute(evaluations.insert().values(**header))
    lap("header (inputs with members)")
    unit_v2g = kev.group_slots(codes, len(units), v2g)
    unit_curt = kev.group_slots(codes, len(units), curtailed)
    bulk.insert_arrow(conn, evaluation_rows, _unit_rows(
        evaluation_id, units, [unit_operator[u] for u in units], start,
        {"baseline_kw": unit_base, "metered_kw": unit_met, "response_kw": unit_resp, "cleared_kw": cleared_u,
         "ratio": unit_perf.ratio, "credited": unit_credited, "v2g_kwh": unit_v2g,
         "shortfall": kev.energy(unit_perf.shortfall_kw), "curtailed_kwh": unit_curt, "price_yuan": price_u}))
    lap("unit rows")
    audit.record(conn, actor, "evaluation.run", "evaluation", evaluation_id,
                 after={"event_id": event_id, "version": version, "status": status, "baseline": spec.id,
                        "telemetry_sha256": telemetry_hash, "ruleset": rs.id, "credited": totals["credited"],
                        "members_from": stored[1] if stored else None},
                 reason=reason)
    out = summary(conn, evaluation_id)
    lap("audit and summary")
    # the resource file is recorded (and the transaction may commit) only once it is whole and hashed
    files.insert_record(conn, resource_file.result())
    lap("resource file (written beside the rows)")
    return out


def _num(x: float) -> float | None:
    x = float(x)
    return None if np.isnan(x) or np.isinf(x) else x


def _nullable(a: np.ndarray) -> pa.Array:
    a = np.asarray(a, dtype=np.float64).ravel()
    return pa.array(a, mask=~np.isfinite(a))


def _unit_rows(evaluation_id: str, units: list[str], operators: list[str], start: int,
               values: dict[str, np.ndarray]) -> pa.Table:
    """``evaluation_rows`` of level 'unit': one per unit and slot (NULL where not measured)."""
    u, s = len(units), next(iter(values.values())).shape[1] if units else 0
    cols: dict[str, pa.Array] = {
        "evaluation_id": pa.array([evaluation_id] * (u * s), pa.string()),
        "level": pa.array(["unit"] * (u * s), pa.string()),
        "key_id": pa.array(np.repeat(np.array(units, dtype=object), s).tolist(), pa.string()),
        "slot": pa.array(np.tile(np.arange(start, start + s, dtype=np.int64), u)),
        "unit_id": pa.array(np.repeat(np.array(units, dtype=object), s).tolist(), pa.string()),
        "operator_id": pa.array(np.repeat(np.array(operators, dtype=object), s).tolist(), pa.string()),
        "owner_id": pa.nulls(u * s, pa.string()), "resource_type": pa.nulls(u * s, pa.string())}
    for k, v in values.items():
        cols[k] = _nullable(v) if k in NULLABLE else pa.array(np.asarray(v, dtype=np.float64).ravel())
    return pa.table(cols)


def _member_columns(members: pa.Table) -> dict[str, pa.Array]:
    """The resource file's first columns: the member ids, their unit, operator, type, district and owner
    dictionary-encoded (the settlement groups on the codes — owner_id too: ~600,000 owners of a million
    resources, hashed once here, on the file's thread, instead of by every settlement; 16-bit codes where
    the values are few) and capability."""
    members = members.combine_chunks()
    cols: dict[str, pa.Array] = {"key_id": members.column("resource_id").combine_chunks()}
    for k in ("unit_id", "operator_id", "resource_type", "district_id", "owner_id"):
        d = pc.dictionary_encode(members.column(k)).combine_chunks()
        if len(d.dictionary) < 2**15:
            d = pa.DictionaryArray.from_arrays(d.indices.cast(pa.int16()), d.dictionary)
        cols[k] = d
    cols["capability_kw"] = members.column("capability_kw").combine_chunks()
    return cols


def _resource_table(member_cols: dict[str, pa.Array], start: int, values: dict[str, np.ndarray], response: str,
                    v2g_kwh: np.ndarray, v2g_rows: np.ndarray, curtailed_share: np.ndarray,
                    units_cleared: tuple[list[str], np.ndarray] | None = None) -> pa.Table:
    """The resource file (format 2): one row per resource — :func:`_member_columns`, the curtailed share
    of its credited energy — and one fixed-size list per quantity of ``values`` over the window's slots
    (NaN = not measured); V2G kWh as a list only on the ``v2g_rows`` (chargers), empty elsewhere (all 0).
    What is not kept is derived on reading (:func:`resource_table`): the response from baseline and
    metered as ``response`` says, unless it is ``"stored"``; the curtailed kWh as credited × share; the
    cleared kW, when ``units_cleared`` (units, their cleared kW per slot) is given, as each unit's shared
    by capability (``kernels.evaluation.split_cleared``; the units' kW in the schema's metadata). A
    million resources: about 170 MB (format 1, every quantity a float list: 402 MB; writing new file
    pages is most of an evaluation's storing time)."""
    n = len(member_cols["key_id"])
    s = next(iter(values.values())).shape[1]
    cols = dict(member_cols)
    cols["curtailed_share"] = pa.array(np.asarray(curtailed_share, dtype=np.float64))
    for k, v in values.items():
        flat = np.ascontiguousarray(v).reshape(n * s)
        cols[k] = pa.FixedSizeListArray.from_arrays(pa.array(flat), s)
    rows = np.asarray(v2g_rows, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[rows + 1] = s
    cols["v2g_kwh"] = pa.ListArray.from_arrays(pa.array(np.cumsum(offsets, dtype=np.int32)),
                                               pa.array(np.ascontiguousarray(v2g_kwh[rows], dtype=np.float64)
                                                        .reshape(-1)))
    meta = {"first_slot": str(start), "slots": str(s), "format": "2", "response": response}
    if units_cleared is not None:
        meta["cleared"] = json.dumps({"by": "capability", "units": list(units_cleared[0]),
                                      "kw": np.asarray(units_cleared[1], dtype=np.float64).tolist()})
    return pa.table(cols).replace_schema_metadata(meta)


#: how the response derives from the file's baseline and metered kW, per event direction
RESPONSE_OF = {"down": "baseline-metered", "up": "metered-baseline"}


def _derive(t: pa.Table, columns: Sequence[str]) -> pa.Table:
    """A format-2 resource file with the quantities it does not keep added as fixed-size lists, in the
    order ``columns`` asks (all of :data:`FILE_COLUMNS` after the stored ones when None)."""
    meta = t.schema.metadata
    s, n = int(meta[b"slots"]), t.num_rows

    def fixed(a: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a, dtype=np.float64).reshape(n * s)),
                                                 s)

    made: dict[str, pa.Array] = {}
    for k in columns:
        if k in t.column_names and k != "v2g_kwh":
            continue
        if k == "response_kw":
            how = meta[b"response"].decode()
            base, met = _per_resource(t, "baseline_kw"), _per_resource(t, "metered_kw")
            made[k] = fixed(kev.response_kw(base, met, "down" if how == "baseline-metered" else "up"))
        elif k == "cleared_kw":
            split = json.loads(meta[b"cleared"])
            units = pc.cast(t.column("unit_id"), pa.string())
            codes = pc.fill_null(pc.index_in(units, value_set=pa.array(split["units"], pa.string())), -1)
            cap = pc.fill_null(t.column("capability_kw"), np.nan).to_numpy(zero_copy_only=False)
            made[k] = fixed(kev.split_cleared(np.array(split["kw"], dtype=np.float64).reshape(-1, s),
                                              codes.to_numpy(zero_copy_only=False).astype(np.int64), cap))
        elif k == "curtailed_kwh":
            share = t.column("curtailed_share").to_numpy()
            made[k] = fixed(_per_resource(t, "credited") * share[:, None])
        elif k == "v2g_kwh":
            lists = t.column("v2g_kwh").combine_chunks()
            v2g = np.zeros((n, s))
            rows = np.flatnonzero(np.asarray(pc.list_value_length(lists)) > 0)
            if rows.size:
                v2g[rows] = lists.flatten().to_numpy(zero_copy_only=False).reshape(rows.size, s)
            made[k] = fixed(v2g)
    out = t
    for k, a in made.items():
        out = (out.set_column(out.column_names.index(k), k, a) if k in out.column_names
               else out.append_column(k, a))
    return out


def _jsonable(params: Mapping[str, Any]) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


# ---------------------------------------------------------------- reads


def get(conn: Connection, evaluation_id: str) -> dict:
    row = conn.execute(select(evaluations).where(evaluations.c.evaluation_id == evaluation_id)).mappings().first()
    if row is None:
        raise NotFound("evaluation", evaluation_id)
    return dict(row)


def current(conn: Connection, event_id: str) -> dict:
    """The event's current evaluation."""
    row = conn.execute(select(evaluations).where(evaluations.c.event_id == event_id,
                                                 evaluations.c.status == "current")).mappings().first()
    if row is None:
        raise NotFound("evaluation of event", event_id)
    return dict(row)


def versions(conn: Connection, event_id: str) -> list[dict]:
    q = select(evaluations).where(evaluations.c.event_id == event_id).order_by(evaluations.c.version)
    return [dict(r) for r in conn.execute(q).mappings()]


def resource_table(conn: Connection, evaluation_id: str, columns: list[str] | None = None) -> pa.Table | None:
    """The evaluation's resource × slot results as Arrow (one row per resource, a fixed-size list per
    quantity of :data:`FILE_COLUMNS` over the window; ``first_slot`` in the schema's metadata; the ratio is
    response / cleared and the price the unit's), or None for an evaluation stored before migration
    0012 (its rows are in ``evaluation_rows``). For columnar readers (settlement, reports). A file of
    format 2 keeps fewer quantities (:func:`_resource_table`); those asked for are derived here, equal
    to what the evaluation computed, so every reader sees the same columns whatever the format."""
    t = files.read(conn, evaluation_id, RESOURCES_FILE)
    if t is None:
        return None
    if (t.schema.metadata or {}).get(b"format") == b"2":
        want = list(columns) if columns is not None else [*t.column_names, *(
            k for k in FILE_COLUMNS if k not in t.column_names)]
        return _derive(t, [k for k in want if k in FILE_COLUMNS]).select(want)
    return t.select(columns) if columns is not None else t


def rows(conn: Connection, evaluation_id: str, level: str = "unit", operator_id: str | None = None,
         owner_id: str | None = None) -> list[dict]:
    """Stored rows of an evaluation at ``level`` (resource or unit), optionally one tenant's."""
    if level == "resource":
        t = resource_table(conn, evaluation_id)
        if t is not None:
            return _resource_rows(conn, evaluation_id, t, operator_id, owner_id)
    q = select(evaluation_rows).where(evaluation_rows.c.evaluation_id == evaluation_id,
                                      evaluation_rows.c.level == level)
    if operator_id:
        q = q.where(evaluation_rows.c.operator_id == operator_id)
    if owner_id:
        q = q.where(evaluation_rows.c.owner_id == owner_id)
    # as columns (one text per column on PostgreSQL): the 11,504 unit rows of a million resources'
    # event in ~0.03 s, where a dict per fetched row took ~0.09 s
    return select_arrow(conn, q.order_by(evaluation_rows.c.key_id, evaluation_rows.c.slot),
                        arrow_types(evaluation_rows.columns)).to_pylist()


def _resource_rows(conn: Connection, evaluation_id: str, t: pa.Table, operator_id: str | None,
                   owner_id: str | None) -> list[dict]:
    """The resource file as ``evaluation_rows`` dicts (sorted by resource and slot, NaN as None), with
    the ratio (response / cleared, as the evaluation computed it) and the unit's price."""
    if operator_id:
        t = t.filter(pc.equal(t.column("operator_id").cast(pa.string()), operator_id))
    if owner_id:
        t = t.filter(pc.equal(t.column("owner_id"), owner_id))
    t = t.take(pc.sort_indices(t.column("key_id")))
    first, s = int(t.schema.metadata[b"first_slot"]), int(t.schema.metadata[b"slots"])
    n = t.num_rows
    text = {k: t.column(k).cast(pa.string()).to_pylist() for k in ("key_id", "unit_id", "operator_id", "owner_id",
                                                                   "resource_type")}
    num = {k: _per_resource(t, k) for k in FILE_COLUMNS}
    cleared = num["cleared_kw"]
    with np.errstate(invalid="ignore", divide="ignore"):
        num["ratio"] = np.where(cleared > 0, num["response_kw"] / np.where(cleared > 0, cleared, 1.0), np.nan)
    price: dict[str, dict[int, float]] = {}
    for unit, slot, p in conn.execute(select(evaluation_rows.c.key_id, evaluation_rows.c.slot,
                                             evaluation_rows.c.price_yuan).where(
            evaluation_rows.c.evaluation_id == evaluation_id, evaluation_rows.c.level == "unit")):
        price.setdefault(unit, {})[slot] = p
    num["price_yuan"] = np.array([[price.get(u, {}).get(first + j, 0.0) for j in range(s)] for u in text["unit_id"]],
                                 dtype=np.float64).reshape(n, s)
    lists = {k: (np.where(np.isfinite(v), v, np.nan).tolist()) for k, v in num.items()}
    out = []
    for i in range(n):
        head = {"evaluation_id": evaluation_id, "level": "resource", "key_id": text["key_id"][i],
                "unit_id": text["unit_id"][i], "operator_id": text["operator_id"][i], "owner_id": text["owner_id"][i],
                "resource_type": text["resource_type"][i]}
        for j in range(s):
            row = {**head, "slot": first + j}
            for k in SLOT_COLUMNS:
                x = lists[k][i][j]
                row[k] = None if (k in NULLABLE and x != x) else x
            row["shortfall"] = 0.0
            out.append(row)
    return out


def _per_resource(t: pa.Table, column: str) -> np.ndarray:
    """A list column of the resource file as a (rows, slots) float64 array."""
    s = int(t.schema.metadata[b"slots"])
    flat = t.column(column).combine_chunks().flatten() if t.num_rows else pa.array([], pa.float64())
    return flat.to_numpy(zero_copy_only=False).astype(np.float64).reshape(t.num_rows, s)


def owner_sums(conn: Connection, owner_id: str, evaluation_ids: Sequence[str]) -> dict[str, dict[str, tuple]]:
    """Per evaluation and operator, the credited and curtailed sums of one owner's resources:
    ``{evaluation_id: {operator_id: (credited, curtailed_kwh)}}`` (carbon's owner scope)."""
    out: dict[str, dict[str, tuple]] = {}
    for eid in evaluation_ids:
        t = resource_table(conn, eid, ["operator_id", "owner_id", "credited", "curtailed_kwh"])
        sums: dict[str, list[float]] = {}
        if t is None:
            r = evaluation_rows
            for op, cr, cu in conn.execute(select(r.c.operator_id, func.sum(r.c.credited), func.sum(r.c.curtailed_kwh))
                                           .where(r.c.evaluation_id == eid, r.c.level == "resource",
                                                  r.c.owner_id == owner_id).group_by(r.c.operator_id)):
                sums[op] = [float(cr or 0.0), float(cu or 0.0)]
        else:
            t = t.filter(pc.equal(t.column("owner_id"), owner_id))
            ops = t.column("operator_id").cast(pa.string()).to_pylist()
            cr, cu = (_per_resource(t, k) for k in ("credited", "curtailed_kwh"))
            for i, op in enumerate(ops):
                acc = sums.setdefault(op, [0.0, 0.0])
                acc[0] += float(cr[i].sum())
                acc[1] += float(cu[i].sum())
        if sums:
            out[eid] = {op: (v[0], v[1]) for op, v in sorted(sums.items())}
    return out


def owner_rows(conn: Connection, owner_id: str, year: int | None = None, event_id: str | None = None,
               operator_id: str | None = None) -> list[tuple]:
    """One owner's resources in the events' current evaluations, per event and operator:
    ``(event_id, day, product, operator_id, ruleset, event ruleset, credited, curtailed_kwh)`` ordered by
    day, event and operator (carbon's owner scope), whichever storage each evaluation used."""
    q = (select(events_t.c.event_id, events_t.c.day, events_t.c.product, evaluations.c.ruleset,
                events_t.c.ruleset, evaluations.c.evaluation_id)
         .select_from(evaluations.join(events_t, events_t.c.event_id == evaluations.c.event_id))
         .where(evaluations.c.status == "current").order_by(events_t.c.day, events_t.c.event_id))
    if year is not None:
        q = q.where(events_t.c.day >= date(year, 1, 1), events_t.c.day <= date(year, 12, 31))
    if event_id:
        q = q.where(events_t.c.event_id == event_id)
    heads = conn.execute(q).all()
    sums = owner_sums(conn, owner_id, [h[5] for h in heads])
    out = []
    for ev_id, day, product, ruleset, ruleset_file, eid in heads:
        for op, (credited, curtailed) in sums.get(eid, {}).items():
            if not operator_id or op == operator_id:
                out.append((ev_id, day, product, op, ruleset, ruleset_file, credited, curtailed))
    return out


def summary(conn: Connection, evaluation_id: str, operator_id: str | None = None, owner_id: str | None = None,
            resources_too: bool = False) -> dict:
    """An evaluation per unit, operator and slot (and per resource on request), within a tenant's scope."""
    head = get(conn, evaluation_id)
    unit_rows = [] if owner_id else rows(conn, evaluation_id, "unit", operator_id)
    units: dict[str, dict] = {}
    for r in unit_rows:
        u = units.setdefault(r["key_id"], {"unit_id": r["key_id"], "operator_id": r["operator_id"], "slots": []})
        u["slots"].append({k: r[k] for k in ("slot", "baseline_kw", "metered_kw", "response_kw", "cleared_kw",
                                             "ratio", "credited", "v2g_kwh", "shortfall", "curtailed_kwh",
                                             "price_yuan")})
    ops: dict[str, dict] = {}
    for r in unit_rows:
        o = ops.setdefault(r["operator_id"], {"operator_id": r["operator_id"], "slots": {}})
        s = o["slots"].setdefault(r["slot"], {"slot": r["slot"], "baseline_kw": 0.0, "metered_kw": 0.0,
                                              "response_kw": 0.0, "cleared_kw": 0.0, "credited": 0.0})
        for k in ("baseline_kw", "metered_kw", "response_kw", "cleared_kw", "credited"):
            s[k] += r[k] or 0.0
    for o in ops.values():
        o["slots"] = sorted(o["slots"].values(), key=lambda x: x["slot"])
        for s in o["slots"]:
            s["ratio"] = s["response_kw"] / s["cleared_kw"] if s["cleared_kw"] else None
        o["credited"] = sum(s["credited"] for s in o["slots"])
    out = {**head, "units": list(units.values()), "operators": list(ops.values())}
    if resources_too or owner_id:
        out["resources"] = rows(conn, evaluation_id, "resource", operator_id, owner_id)
    if operator_id or owner_id:     # a tenant sees its own totals, not the city's
        mine = out["resources"] if owner_id else unit_rows
        out["totals"] = {"quantity_unit": head["totals"]["quantity_unit"],
                         "credited": sum(r["credited"] for r in mine),
                         "curtailed_kwh": sum(r["curtailed_kwh"] for r in mine),
                         "v2g_kwh": sum(r["v2g_kwh"] for r in mine)}
        out["inputs"] = {k: v for k, v in head["inputs"].items() if k != "members"}
    return out
