"""The product path of ``benchmarks/evaluate_settle.py --service`` (see that script's docstring).

Set-up (not timed): the generated city in a scratch PostgreSQL database, one peak-shaving event
cleared to every trading unit, the meters' 15-minute means of the days the GB/T method reads and
of the event day as daily rollup files. Timed: the first evaluation, a re-evaluation, the yearly
settlement (up to ``settle_max`` resources); reference: the same evaluation's kernels on the same
arrays in memory, checked against what the service stored.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func, select

from _common import CACHE, city, drop_pg_database, load_city, pg_database, result
from openvpp.core import rules
from openvpp.core.calendar import day_kinds
from openvpp.core.memory import retain_freed_memory
from openvpp.core.timeslots import slot_start_utc
from openvpp.kernels import evaluation as kev
from openvpp.kernels.baseline import BaselineSpec
from openvpp.services import evaluation as eva
from openvpp.services import events, settlement
from openvpp.services.meter_files import FileMeterSource, write_day
from openvpp.store import bulk, db, settlement_files, timeseries
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, resources
from openvpp.store.schema_events import awards
from openvpp.store.schema_settlement import settlement_parties

DAY = date(2025, 7, 15)          # a Tuesday: GB/T 5/2 reads 7-11 July
START, END = 56, 64              # 14:00-16:00, 8 slots
HISTORY = eva.HISTORY_DAYS
CENTER = Actor("bench-center", "city_admin")
DISP = Actor("bench-dispatcher", "dispatcher")
TARGET_S = 2.0


def make_event(conn, rng: np.random.Generator) -> tuple[str, int, float]:
    """A peak-shaving event over the city, cleared to every trading unit; returns (event id, units,
    seconds of the execute step: operator instructions and the units' members taken)."""
    ev = events.create(conn, DISP, {"product": "peak_shaving", "name": "benchmark peak", "day": DAY.isoformat(),
                                    "start_slot": START, "end_slot": END, "targets_kw": 1.0,
                                    "scope_node_id": timeseries.city_id(conn), "pricing": "uniform"})
    eid = ev["event_id"]
    events.transition(conn, DISP, eid, "publish")
    events.transition(conn, DISP, eid, "open")
    r, g = resources, grid_nodes
    cap = func.coalesce(r.c.verified_down_kw, r.c.adjustable_down_kw)
    units = conn.execute(select(r.c.operator_id, g.c.substation_id, func.sum(cap))
                         .select_from(r.join(g, g.c.node_id == r.c.ta_id))
                         .where(r.c.state == "active", r.c.operator_id.is_not(None))
                         .group_by(r.c.operator_id, g.c.substation_id)).all()
    s = END - START
    unit_ids = [f"{op}@{sub}" for op, sub, _ in units]
    cleared = np.array([c or 0.0 for _, _, c in units])[:, None] * rng.uniform(0.5, 0.9, (len(units), s))
    price = rng.uniform(2.5, 4.0, (len(units), s))
    bulk.insert_arrow(conn, awards, pa.table({
        "event_id": pa.array([eid] * (len(units) * s)),
        "unit_id": pa.array(np.repeat(np.array(unit_ids, dtype=object), s).tolist()),
        "slot": pa.array(np.tile(np.arange(START, END), len(units))),
        "operator_id": pa.array(np.repeat(np.array([u[0] for u in units], dtype=object), s).tolist()),
        "cleared_kw": pa.array(cleared.ravel()), "price_yuan_per_kwh": pa.array(price.ravel())}))
    events._set_state(conn, DISP, events.get(conn, eid), "clear", None,
                      result={"cleared_kw": cleared.sum(axis=0).tolist()})
    t0 = time.perf_counter()
    events.transition(conn, DISP, eid, "execute", now=slot_start_utc(DAY, START) - timedelta(minutes=30))
    return eid, len(units), time.perf_counter() - t0


def write_meters(conn, root, rng: np.random.Generator) -> tuple[int, list[date]]:
    """Synthetic 15-minute loads of every active resource on the days GB/T 5/2 reads and the event
    day (members respond in the window), as daily rollup files; returns (meters, days written)."""
    r = resources
    rows = conn.execute(select(r.c.resource_id, func.coalesce(r.c.verified_down_kw, r.c.adjustable_down_kw),
                               r.c.capacity_kw).where(r.c.state == "active").order_by(r.c.resource_id)).all()
    ids = [x[0] for x in rows]
    cap = np.array([x[1] or 0.0 for x in rows])
    level = np.array([x[2] or 1.0 for x in rows]) * rng.uniform(0.3, 0.7, len(rows))
    first = DAY - timedelta(days=HISTORY)
    dates = np.arange(np.datetime64(first), np.datetime64(DAY) + 1)
    need = BaselineSpec("gbt-workday").days_needed(day_kinds(dates), np.zeros(dates.size, bool), dates.size - 1)
    need[-1] = True
    hours = (np.arange(96) + 0.5) / 4
    shape = (0.6 + 0.4 * np.clip(np.sin(np.pi * (hours - 7) / 14), 0, None)).astype(np.float32)
    written = []
    for d in np.flatnonzero(need):
        day = first + timedelta(days=int(d))
        p = (level[:, None] * shape[None, :]).astype(np.float32)
        p *= rng.uniform(0.97, 1.03, p.shape).astype(np.float32)
        if day == DAY:
            p[:, START:END] -= (cap * rng.uniform(-0.1, 1.3, len(cap)))[:, None].astype(np.float32)
        p.reshape(-1)[rng.integers(0, p.size, p.size // 1000)] = np.nan      # 0.1 % missing
        write_day(root, day, ids, p, source="benchmark synthetic")
        written.append(day)
    return len(ids), written


def reference(conn, head: dict, source: FileMeterSource, rs: rules.RuleSet) -> tuple[float, dict[str, float]]:
    """The same evaluation's kernels on arrays already in memory: (seconds, credited kWh per operator)."""
    inputs = head["inputs"]
    members = eva.files.read(conn, head["evaluation_id"], eva.RESOURCES_FILE, ["key_id", "unit_id"])
    ids = members.column("key_id").to_pylist()
    unit_of = pc.cast(members.column("unit_id"), pa.string())
    units = sorted(set(unit_of.to_pylist()))
    codes = pc.index_in(unit_of, value_set=pa.array(units, pa.string())).to_numpy(zero_copy_only=False)
    first = date.fromisoformat(inputs["first_day"])
    held, (lo, hi) = np.array(inputs["read"]["days"]), inputs["read"]["slots"]
    data = source.read_part(ids, first, held.tolist(), slice(lo, hi))
    aw = events.awarded(conn, head["event_id"])
    upos = {u: i for i, u in enumerate(units)}
    cleared = np.zeros((len(units), END - START))
    for a in aw:
        cleared[upos[a["unit_id"]], a["slot"] - START] = a["cleared_kw"]
    unit_op = {a["unit_id"]: a["operator_id"] for a in aw}
    t = eva._registry_attributes(conn, ids, "down")
    capability = t.column("capability_kw").to_numpy(zero_copy_only=False)
    dates = np.arange(np.datetime64(first), np.datetime64(first) + inputs["history_days"] + 1)
    band = rs.section("evaluation")
    t0 = time.perf_counter()
    base = BaselineSpec("gbt-workday").compute(load=data.values, day_kinds=day_kinds(dates, strict=False),
                                               excluded=np.zeros(dates.size, bool), event_day_idx=dates.size - 1,
                                               held_days=held, held_slots=slice(lo, hi))
    w = slice(START - lo, END - lo)
    out = kev.evaluate(base.power_kw[:, w], data.values[:, -1, w], codes, cleared, "down",
                       float(band["valid_band_low"]), float(band["valid_band_high"]), capability_kw=capability)
    credited = kev.energy(out.unit.credited_kw).sum(axis=1)
    seconds = time.perf_counter() - t0
    per_op: dict[str, float] = {}
    for u, c in zip(units, credited, strict=True):
        per_op[unit_op[u]] = per_op.get(unit_op[u], 0.0) + float(c)
    return seconds, per_op


def service(n: int, settle_max: int, keep: bool) -> None:
    # as the API, the CLI and a worker do when they evaluate or settle (core/memory.py): freed memory is
    # kept for the next arrays instead of handed back to this VM's host (~2 s per GB to touch again)
    print(f"freed memory kept for reuse (OPENVPP_RETAIN_MEMORY): {retain_freed_memory()}")
    rng = np.random.default_rng(2025)
    city_dir = city(n)
    name = "openvpp_bench_evaluate"
    home = CACHE / "evaluate-home"
    shutil.rmtree(home, ignore_errors=True)
    os.environ["OPENVPP_HOME"] = str(home)           # where the evaluation's result files go (PostgreSQL)
    url = pg_database(name)
    try:
        t0 = time.perf_counter()
        engine = load_city(url, city_dir)
        with engine.begin() as conn:
            eid, n_units, execute_s = make_event(conn, rng)
            n_meters, days = write_meters(conn, home / "rollups", rng)
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        print(f"set-up {time.perf_counter() - t0:.1f} s: {n:,} resources in PostgreSQL, event {eid} cleared to "
              f"{n_units:,} trading units; rollup files of {n_meters:,} meters for {', '.join(map(str, days))}")
        print(f"executing the event (not in the target: operator instructions, the units' members taken as "
              f"dispatched): {execute_s:.3f} s")
        after = slot_start_utc(DAY, END) + timedelta(hours=1)
        # 1. in this fresh process (rolled back): every array lands in memory the process never touched,
        #    which on this VM costs up to ~2 s per GB the first time (see benchmarks/README.md);
        # 2. the same first evaluation again, committed: what a long-lived evaluation worker pays;
        # 3. a re-evaluation (members from the first one's file).
        runs = []
        for label, keep_it in (("first evaluation, cold process (rolled back)", False),
                               ("first evaluation, warm process", True), ("re-evaluation", True)):
            prof: dict[str, float] = {}
            # a new source each time: a worker evaluating a new event has not matched its members against
            # the files' devices before (the source keeps those positions for the member set it saw)
            source = FileMeterSource(home / "rollups")
            t0 = time.perf_counter()
            with engine.connect() as conn:
                tx = conn.begin()
                out = eva.evaluate(conn, CENTER, eid, source, now=after, profile=prof)
                t_commit = time.perf_counter()
                tx.commit() if keep_it else tx.rollback()
            total = time.perf_counter() - t0
            prof["commit" if keep_it else "rollback"] = time.perf_counter() - t_commit
            runs.append((label, total, prof, out))
            steps = ", ".join(f"{k} {v:.3f}" for k, v in prof.items())
            print(f"{label}: {total:.3f} s = {steps}")
        cold_total = runs.pop(0)[1]
        first_total, head = runs[0][1], runs[0][3]
        print(f"stored: {head['totals']['resources']:,} resources x {END - START} slots, "
              f"{head['totals']['units']:,} units, credited {head['totals']['credited']:,.0f} kWh, "
              f"not measured {head['totals']['not_measured']:,}; meter source {head['meter_source']}, "
              f"read days {head['inputs']['read']['days']} slots {head['inputs']['read']['slots']}")
        with engine.connect() as conn:
            rec = eva.files.record(conn, head["evaluation_id"], "resources")
            ref_s, ref_ops = reference(conn, eva.get(conn, head["evaluation_id"]), source,
                                       rules.load(head["ruleset"]))
        print(f"resource file: {rec['bytes'] / 1e6:,.0f} MB, {rec['rows']:,} rows, sha256 {rec['sha256'][:16]}")
        stored = {op: v["credited"] for op, v in head["totals"]["by_operator"].items()}
        diff = max(abs(stored.get(op, 0.0) - v) for op, v in ref_ops.items())
        print(f"reference (kernels on the same arrays in memory): {ref_s:.3f} s; credited per operator, max "
              f"difference to the stored evaluation {diff:.2e} kWh")
        assert diff < 1e-6 * max(1.0, max(abs(v) for v in ref_ops.values())), "service and kernels disagree"
        settle_s = None
        if n <= settle_max:
            settle_prof: dict[str, float] = {}
            t0 = time.perf_counter()
            with engine.begin() as conn:
                st = settlement.compute(conn, CENTER, DAY.year, profile=settle_prof)
                t_commit = time.perf_counter()
            settle_s = time.perf_counter() - t0
            settle_prof["commit"] = time.perf_counter() - t_commit
            with engine.connect() as conn:
                n_parties = conn.execute(select(func.count()).select_from(settlement_parties).where(
                    settlement_parties.c.settlement_id == st["settlement_id"])).scalar()   # operators (rows)
                n_parties += settlement_files.record(conn, st["settlement_id"], 0, "owners")["rows"]  # owners
            print(f"yearly settlement (services.settlement.compute): {settle_s:.3f} s, {st['settlement_id']}: "
                  f"{n_parties:,} parties (operators and owner-operator-contract), factor {st['summary']['main']['factor']}")
            print("settlement: " + ", ".join(f"{k} {v:.3f}" for k, v in settle_prof.items()))
        else:
            print(f"yearly settlement not run at {n:,} resources (--settle-max {settle_max:,})")
        value = first_total + (settle_s or 0.0)
        met = "NOT met" if value > TARGET_S else "met" if settle_s is not None else "not measured (no settlement)"
        if n < 1_000_000:
            met += f" at {n:,} resources (the target is for 1,000,000)"
        settled = f"{settle_s:.3f} s" if settle_s is not None else "not run"
        print(f"product path: evaluation {first_total:.3f} s + settlement {settled} = {value:.3f} s; "
              f"target {TARGET_S} s: {met}")
        print(f"(the first evaluation in a cold process took {cold_total:.3f} s)")
        result("evaluate_settle_service", value, "s", ref_s, n, evaluation_s=round(first_total, 4),
               cold_evaluation_s=round(cold_total, 4), execute_s=round(execute_s, 4),
               reevaluation_s=round(runs[1][1], 4), settlement_s=None if settle_s is None else round(settle_s, 4),
               settlement_steps=None if settle_s is None else {k: round(v, 4) for k, v in settle_prof.items()},
               steps={k: round(v, 4) for k, v in runs[0][2].items()}, units=n_units, slots=END - START,
               file_mb=round(rec["bytes"] / 1e6, 1), reference_is="baseline + evaluation kernels on the same arrays "
               "in memory", target_s=TARGET_S)
    finally:
        db.get_engine(url).dispose()
        if not keep:
            drop_pg_database(name)
            shutil.rmtree(home, ignore_errors=True)
