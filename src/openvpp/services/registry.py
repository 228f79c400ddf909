"""The city resource database: load a generated city, import resources, aggregate, report targets.

Workflow (RULES.md, Guangzhou plan tasks 2-3): grid topology → operators →
owners → sites → resources, each file validated in full before anything is
written; a city load is one transaction.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import Connection, case, func, select
from sqlalchemy.exc import DataError, IntegrityError

from openvpp.core import rules
from openvpp.core.errors import Conflict, InvalidInput, Violation
from openvpp.core.timeslots import TZ
from openvpp.kernels.aggregate import group_sum
from openvpp.model.columns import (
    GRID_COLUMNS,
    OPERATOR_COLUMNS,
    OWNER_COLUMNS,
    RESOURCE_COLUMNS,
    SITE_COLUMNS,
    Column,
)
from openvpp.model.enums import GRID_LEVELS, GridLevel, OperatorState, Role
from openvpp.services.registry_arrays import RegistryArrays
from openvpp.services.scope import Scope
from openvpp.services.validation import Checked, not_in, report, validate_table
from openvpp.store import audit, bulk
from openvpp.store.audit import Actor
from openvpp.store.schema import (
    grid_nodes,
    operators,
    owners,
    profile_archetypes,
    resources,
    sites,
)

Progress = Callable[[str, float], None]
CLOSED_OPERATOR_STATES = (OperatorState.EXITED.value, OperatorState.REJECTED.value)
LIVE_RESOURCE_STATES = ("registered", "active")


def _noop(_stage: str, _fraction: float) -> None:
    pass


# ---------------------------------------------------------------- reading files

def read_table(path: Path, columns: tuple[Column, ...], threads: bool = True, copy_nulls: bool = False) -> pa.Table:
    """Read CSV (all columns as text, so every value is checked by our rules) or Parquet;
    ``threads=False`` parses a CSV on one core. ``copy_nulls``: an unquoted empty field is null and
    a quoted one ``""`` is empty text, as PostgreSQL's COPY reads them (the rules treat both as blank)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInput(Violation("file", "does not exist", str(path)))
    if path.suffix.lower() == ".parquet":
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput(Violation("file", f"is not a readable Parquet file: {exc}", str(path))) from exc
    try:
        header = _csv_header(path)
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24, use_threads=threads),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, null_values=[""],
                strings_can_be_null=copy_nulls, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise InvalidInput(Violation("file", f"is not a well-formed CSV file: {exc}", str(path))) from exc


def _csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig") as fh:
        return [h.strip().strip('"') for h in fh.readline().rstrip("\r\n").split(",")]


# ---------------------------------------------------------------- grid

def _grid_with_ancestors(checked: Checked) -> pa.Table:
    """Check the tree (levels step down one at a time, parents exist, one city) and add ancestors."""
    t = checked.table
    ids = t.column("node_id").to_pylist()
    levels = t.column("level").to_pylist()
    parents = t.column("parent_id").to_pylist()
    depth = {lvl.value: i for i, lvl in enumerate(GRID_LEVELS)}
    row_of = {nid: i for i, nid in enumerate(ids)}
    problems: list[Violation] = []
    cities = [i for i, lvl in enumerate(levels) if lvl == GridLevel.CITY]
    if len(cities) != 1:
        problems.append(Violation("level", "exactly one node must have level 'city'", len(cities)))
    for i, (lvl, par) in enumerate(zip(levels, parents, strict=True)):
        if lvl == GridLevel.CITY:
            if par:
                problems.append(Violation("parent_id", "the city has no parent", par, line=i + 2))
            continue
        j = row_of.get(par)
        if j is None:
            problems.append(Violation("parent_id", "parent node does not exist", par, line=i + 2))
        elif depth[levels[j]] != depth[lvl] - 1:
            problems.append(Violation("parent_id", f"a {lvl} must hang under a {GRID_LEVELS[depth[lvl] - 1]}",
                                      f"{par} ({levels[j]})", line=i + 2))
    if problems:
        raise InvalidInput(problems[:1000], len(problems))
    anc = {lvl: [None] * len(ids) for lvl in ("district", "substation", "feeder")}
    order = sorted(range(len(ids)), key=lambda i: depth[levels[i]])
    for i in order:
        lvl = levels[i]
        if lvl == GridLevel.CITY:
            continue
        j = row_of[parents[i]]
        for a in anc:
            anc[a][i] = anc[a][j]
        if lvl in anc:
            anc[lvl][i] = ids[i]
    return t.append_column("district_id", pa.array(anc["district"], pa.string())) \
            .append_column("substation_id", pa.array(anc["substation"], pa.string())) \
            .append_column("feeder_id", pa.array(anc["feeder"], pa.string()))


# ---------------------------------------------------------------- resources

@dataclass
class References:
    """What a resource batch may point at, read once: transformer areas, sites (with their TA),
    owners, and operators that have not exited or been rejected."""

    ta_ids: pa.Array
    site_ids: pa.Array
    site_tas: pa.Array
    owner_ids: pa.Array
    open_operator_ids: pa.Array

    @classmethod
    def read(cls, conn: Connection) -> References:
        def ids(sql: str) -> pa.Array:
            return bulk.query_ids(conn, sql, ["id"]).column("id").combine_chunks()

        sites_t = bulk.query_ids(conn, "SELECT site_id, ta_id FROM sites", ["site_id", "ta_id"])
        closed = ", ".join(f"'{s}'" for s in CLOSED_OPERATOR_STATES)
        return cls(
            ta_ids=ids(f"SELECT node_id AS id FROM grid_nodes WHERE level = '{GridLevel.TRANSFORMER_AREA.value}'"),
            site_ids=sites_t.column("site_id").combine_chunks(),
            site_tas=sites_t.column("ta_id").combine_chunks(),
            owner_ids=ids("SELECT owner_id AS id FROM owners"),
            open_operator_ids=ids(f"SELECT operator_id AS id FROM operators WHERE state NOT IN ({closed})"),
        )


def check_resources(refs: References, checked: Checked, actor: Actor, first_line: int = 2) -> None:
    """Referential and tenant rules of a resource batch; raise ``InvalidInput`` naming line/field/rule."""
    t = checked.table
    v: list[Violation] = []
    total = 0
    if actor.role in (Role.OPERATOR_ADMIN.value, Role.OPERATOR_ENGINEER.value):
        op = t.column("operator_id")
        bad = np.asarray(pc.fill_null(pc.not_equal(op, actor.operator_id), True).to_numpy(zero_copy_only=False))
        total += report(v, bad, "operator_id", f"an operator may register only its own resources "
                        f"({actor.operator_id})", op, first_line)
    total += report(v, not_in(t.column("ta_id"), refs.ta_ids), "ta_id", "transformer area does not exist",
                    t.column("ta_id"), first_line)
    total += report(v, not_in(t.column("site_id"), refs.site_ids), "site_id", "site does not exist",
                    t.column("site_id"), first_line)
    if len(refs.site_ids):
        site_ta = pc.take(refs.site_tas, pc.index_in(t.column("site_id"), value_set=refs.site_ids))
        mismatch = np.asarray(pc.fill_null(pc.not_equal(site_ta, t.column("ta_id")), False)
                              .to_numpy(zero_copy_only=False))
        total += report(v, mismatch, "ta_id", "must be the transformer area of its site",
                        t.column("ta_id"), first_line)
    total += report(v, not_in(t.column("owner_id"), refs.owner_ids), "owner_id", "owner does not exist",
                    t.column("owner_id"), first_line)
    total += report(v, not_in(t.column("operator_id"), refs.open_operator_ids), "operator_id",
                    "operator does not exist or has exited/been rejected", t.column("operator_id"), first_line)
    if total:
        v.sort(key=lambda x: x.line or 0)
        raise InvalidInput(v, total)


def _existing_conflicts(conn: Connection, t: pa.Table, first_line: int) -> InvalidInput:
    """Name the rows that collide with stored resources (called only after the DB refused a batch)."""
    v: list[Violation] = []
    total = 0
    for col, where, rule in (
        ("resource_id", None, "a resource with this id already exists"),
        ("meter_id", resources.c.state.in_(LIVE_RESOURCE_STATES), "meter already belongs to a live resource"),
    ):
        values = t.column(col).to_pylist()
        hits: set[str] = set()
        for i in range(0, len(values), 5000):
            q = select(resources.c[col]).where(resources.c[col].in_(values[i:i + 5000]))
            if where is not None:
                q = q.where(where)
            hits.update(r[0] for r in conn.execute(q))
        bad = np.fromiter((x in hits for x in values), bool, len(values))
        total += report(v, bad, col, rule, t.column(col), first_line)
    if not total:
        return InvalidInput(Violation("file", "the database refused the batch (integrity)", None))
    v.sort(key=lambda x: x.line or 0)
    return InvalidInput(v, total)


def import_resources(conn: Connection, table: pa.Table, actor: Actor, state: str = "active",
                     first_line: int = 2, source: str = "api") -> int:
    """Validate every row and insert all of them, or raise and write nothing (caller's transaction)."""
    checked = validate_table(table, RESOURCE_COLUMNS, first_line)
    check_resources(References.read(conn), checked, actor, first_line)
    data = checked.table.append_column("state", pa.array(np.full(checked.n_rows, state), pa.string()))
    try:
        with conn.begin_nested():
            bulk.insert_arrow(conn, resources, data)
    except IntegrityError:
        raise _existing_conflicts(conn, checked.table, first_line) from None
    _audit_import(conn, actor, checked, state, source)
    return checked.n_rows


#: a batch at least this large, into a table no more than BULK_RATIO times larger, takes the
#: PostgreSQL bulk path (constraints rebuilt once instead of maintained row by row)
BULK_MIN_ROWS = 100_000
BULK_RATIO = 2.0


def import_resources_file(conn: Connection, path: Path, actor: Actor, state: str = "active",
                          source: str | None = None) -> int:
    """Import a CSV or Parquet file of resources: all rows or none (caller's transaction).

    On PostgreSQL, a large CSV batch of active resources takes the bulk path. A second thread drives
    the database on the caller's transaction: it locks the tables the rows refer to against writes
    (until the caller commits), drops the table's keys and foreign keys, reads the reference lists
    (transformer areas, sites, owners, operators), COPYs the file's bytes into the table and rebuilds
    the keys once (``store.bulk.rebuilt_constraints``), all in a savepoint. Meanwhile this thread
    parses and validates every row, then checks the references. Both must succeed before the caller
    commits, so an invalid file still writes nothing, with the same errors as the row path; and no
    row the reference lists vouch for can go away before the commit.

    The file's bytes are what the rules accepted only if no value had to be trimmed or blanked
    (``Checked.rewritten``); otherwise, or if the server refuses a value the rules accept (a quoted
    empty optional number), the savepoint is rolled back and the validated rows are copied instead.
    Call ``finish_bulk`` after the commit.
    """
    path = Path(path)
    source = source or str(path)
    if not _bulk_eligible(conn, path, state):
        return import_resources(conn, read_table(path, RESOURCE_COLUMNS), actor, state=state, source=source)
    header = _csv_header(path)
    refs: list[References] = []
    refs_read = threading.Event()
    savepoint: list = []
    server_error: list[BaseException] = []

    def server() -> None:
        try:
            _lock_references(conn)
            savepoint.append(conn.begin_nested())
            with bulk.rebuilt_constraints(conn, resources):
                try:
                    refs.append(References.read(conn))
                finally:
                    refs_read.set()
                with open(path, "rb") as fh:
                    fh.readline()
                    bulk.copy_csv(conn, resources.name, header, fh)
        except BaseException as exc:  # noqa: BLE001 - reported after validation, below
            server_error.append(exc)
        finally:
            refs_read.set()

    worker = threading.Thread(target=server, name="openvpp-bulk-copy")
    worker.start()
    try:
        # one parsing thread: the other core is the COPY's
        checked = validate_table(read_table(path, RESOURCE_COLUMNS, threads=False, copy_nulls=True),
                                 RESOURCE_COLUMNS)
        refs_read.wait()
        if refs:
            check_resources(refs[0], checked, actor)
    except BaseException:
        worker.join()
        if savepoint and savepoint[0].is_active:
            savepoint[0].rollback()
        raise
    worker.join()
    exc = server_error[0] if server_error else None
    if exc is not None and not savepoint:   # failed before anything was written (e.g. a lock timeout)
        raise exc
    if exc is None and not checked.rewritten:
        savepoint[0].commit()
    else:
        if savepoint[0].is_active:
            savepoint[0].rollback()
        if isinstance(exc, IntegrityError) and not checked.rewritten:
            raise _existing_conflicts(conn, checked.table, 2) from None
        if exc is not None and (not refs or not isinstance(exc, (IntegrityError, DataError))):
            raise exc   # not a value the server refused, or refused before the references were checked
        data = checked.table.append_column("state", pa.array(np.full(checked.n_rows, state), pa.string()))
        try:
            with conn.begin_nested(), bulk.rebuilt_constraints(conn, resources):
                bulk.insert_arrow(conn, resources, data)
        except IntegrityError:
            raise _existing_conflicts(conn, checked.table, 2) from None
    _audit_import(conn, actor, checked, state, source, path="bulk" if exc is None and not checked.rewritten
                  else "bulk, validated rows")
    return checked.n_rows


def _lock_references(conn: Connection) -> None:
    """Hold the tables a resource refers to against writes until the transaction ends (readers go on)."""
    conn.exec_driver_sql(f"LOCK TABLE {grid_nodes.name}, {sites.name}, {owners.name}, {operators.name} "
                         "IN SHARE MODE")


def finish_bulk(engine) -> dict[str, float]:
    """After the transaction of a bulk import has committed: build the performance indexes and
    validate the foreign keys it left to do (``store.bulk.finish``); a no-op when nothing is left."""
    return bulk.finish(engine, resources)


def _bulk_eligible(conn: Connection, path: Path, state: str) -> bool:
    """Large CSV batches of active resources on PostgreSQL, into a table not much larger than the batch.
    Both sizes are estimates (file bytes over the mean line length; the planner's row count)."""
    if conn.dialect.name != "postgresql" or path.suffix.lower() != ".csv" or state != "active":
        return False
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    lines = max(head.count(b"\n"), 1)
    rows = path.stat().st_size / (len(head) / lines)
    if rows < BULK_MIN_ROWS:
        return False
    existing = conn.exec_driver_sql(
        "SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'resources'::regclass").scalar_one()
    return existing <= BULK_RATIO * rows


def _audit_import(conn: Connection, actor: Actor, checked: Checked, state: str, source: str,
                  path: str = "row") -> None:
    ids = checked.table.column("resource_id")
    first = ids[0].as_py() if len(ids) else None
    last = ids[-1].as_py() if len(ids) else None
    audit.record(conn, actor, "resources.import", "resource_batch", f"{first}..{last}" if first else "-",
                 after={"count": checked.n_rows, "state": state, "source": source, "first": first, "last": last,
                        "write_path": path})


# ---------------------------------------------------------------- city

@dataclass
class LoadResult:
    counts: dict[str, int]
    seconds: float


def load_city(conn: Connection, city_dir: Path, actor: Actor = audit.SYSTEM,
              progress: Progress = _noop, with_resources: bool = True) -> LoadResult:
    """Load grid, operators, owners, sites, resources and archetype profiles of a generated city.

    ``with_resources=False`` loads everything but ``resources.csv`` (to import it separately).
    """
    t0 = datetime.now(UTC)
    city_dir = Path(city_dir)
    counts: dict[str, int] = {}
    now = datetime.now(UTC)

    progress("grid", 0.0)
    grid = _grid_with_ancestors(validate_table(read_table(city_dir / "grid.csv", GRID_COLUMNS), GRID_COLUMNS))
    counts["grid_nodes"] = bulk.insert_arrow(conn, grid_nodes, grid)

    progress("operators", 0.1)
    ops = validate_table(read_table(city_dir / "operators.csv", OPERATOR_COLUMNS), OPERATOR_COLUMNS).table
    n = ops.num_rows
    ops = ops.append_column("created_at", pa.array([now] * n, pa.timestamp("us", "UTC"))) \
             .append_column("updated_at", pa.array([now] * n, pa.timestamp("us", "UTC")))
    counts["operators"] = _insert_rows(conn, operators, ops)

    progress("owners", 0.15)
    own = validate_table(read_table(city_dir / "owners.csv", OWNER_COLUMNS), OWNER_COLUMNS).table
    bad = not_in(own.column("operator_id"), ops.column("operator_id"))
    if bad.any():
        v: list[Violation] = []
        raise InvalidInput(v, report(v, bad, "operator_id", "operator does not exist", own.column("operator_id")))
    counts["owners"] = bulk.insert_arrow(conn, owners, own)

    progress("sites", 0.25)
    st = validate_table(read_table(city_dir / "sites.csv", SITE_COLUMNS), SITE_COLUMNS).table
    v = []
    tas = pc.filter(grid.column("node_id"), pc.equal(grid.column("level"), GridLevel.TRANSFORMER_AREA.value))
    total = report(v, not_in(st.column("ta_id"), tas), "ta_id", "transformer area does not exist", st.column("ta_id"))
    total += report(v, not_in(st.column("owner_id"), own.column("owner_id")), "owner_id", "owner does not exist",
                    st.column("owner_id"))
    if total:
        raise InvalidInput(v, total)
    counts["sites"] = bulk.insert_arrow(conn, sites, st)

    progress("resources", 0.4)
    if with_resources:
        counts["resources"] = import_resources_file(conn, city_dir / "resources.csv", actor)

    progress("profiles", 0.85)
    counts["profile_archetypes"] = load_profiles(conn, city_dir)
    meta_path = city_dir / "city.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    audit.record(conn, actor, "city.load", "city", meta.get("city_id", city_dir.name),
                 after={"dir": str(city_dir), "counts": counts, "seed": meta.get("seed")})
    progress("done", 1.0)
    return LoadResult(counts, (datetime.now(UTC) - t0).total_seconds())


def _insert_rows(conn: Connection, table, data: pa.Table) -> int:
    conn.execute(table.insert(), data.to_pylist())
    return data.num_rows


def load_profiles(conn: Connection, city_dir: Path) -> int:
    """Archetype profiles (long Parquet: archetype_id, ts, value) → one float32 blob per archetype."""
    meta = pacsv.read_csv(city_dir / "archetypes.csv",
                          convert_options=pacsv.ConvertOptions(strings_can_be_null=False)).to_pylist()
    prof = pq.read_table(city_dir / "profiles.parquet", columns=["archetype_id", "ts", "value"])
    prof = prof.sort_by([("archetype_id", "ascending"), ("ts", "ascending")])
    ids = prof.column("archetype_id").to_numpy(zero_copy_only=False)
    values = prof.column("value").to_numpy().astype("<f4")
    ts = prof.column("ts")
    first_ts = pc.min(ts).as_py()
    year = first_ts.astimezone(TZ).year if first_ts else 0
    rows = []
    for m in meta:
        sel = ids == m["archetype_id"]
        if not sel.any():
            raise InvalidInput(Violation("archetype_id", "archetype has no profile values in profiles.parquet",
                                         m["archetype_id"]))
        rows.append({"archetype_id": m["archetype_id"], "resource_type": m["resource_type"],
                     "pattern": m.get("pattern", ""), "description": m.get("description"),
                     "source": m.get("source"), "year": year, "step_min": 15,
                     "values_f32": values[sel].tobytes()})
    if rows:
        conn.execute(profile_archetypes.insert(), rows)
    return len(rows)


# ---------------------------------------------------------------- queries

SUMMARY_KEYS = {
    "district": grid_nodes.c.district_id,
    "substation": grid_nodes.c.substation_id,
    "feeder": grid_nodes.c.feeder_id,
    "transformer_area": resources.c.ta_id,
    "type": resources.c.resource_type,
    "operator": resources.c.operator_id,
    "response_mode": resources.c.response_mode,
    "grade": resources.c.verified_grade,
    "protocol": resources.c.control_protocol,
}


def apply_scope(q, scope: Scope):
    if scope.operator_id:
        q = q.where(resources.c.operator_id == scope.operator_id)
    if scope.owner_id:
        q = q.where(resources.c.owner_id == scope.owner_id)
    return q


#: grid level of a summary's ``parent`` → the column that holds a resource's ancestor at that level
PARENT_KEYS = {
    GridLevel.DISTRICT.value: grid_nodes.c.district_id,
    GridLevel.SUBSTATION.value: grid_nodes.c.substation_id,
    GridLevel.FEEDER.value: grid_nodes.c.feeder_id,
    GridLevel.TRANSFORMER_AREA.value: resources.c.ta_id,
}


def summary(conn: Connection, by: str, scope: Scope = Scope(), parent: str | None = None,
            reg: RegistryArrays | None = None) -> list[dict]:
    """Connected and adjustable capacity of active resources grouped by ``by`` (see ``SUMMARY_KEYS``).

    ``parent``: a grid node id; only the resources under it count (e.g. ``by="feeder"`` with a
    substation's id gives that substation's feeders). The city node counts everything.
    ``reg``: the registry arrays, current with this database (e.g. the API's pool engine's): the
    sums are taken on them instead of a GROUP BY, the same rows in the same order.
    """
    if by not in SUMMARY_KEYS:
        raise InvalidInput(Violation("by", f"must be one of {', '.join(SUMMARY_KEYS)}", by))
    key = SUMMARY_KEYS[by]
    under = level = None
    if parent is not None:
        level = conn.execute(select(grid_nodes.c.level).where(grid_nodes.c.node_id == parent)).scalar()
        if level is None:
            raise InvalidInput(Violation("parent", "grid node does not exist", parent))
        under = PARENT_KEYS.get(level)
    if reg is not None:
        return _with_labels(conn, by, _summary_arrays(reg, by, scope, level if under is not None else None, parent))
    q = (
        select(
            key.label("key"),
            func.count().label("resources"),
            func.sum(resources.c.capacity_kw).label("connected_kw"),
            func.sum(resources.c.adjustable_down_kw).label("adjustable_down_kw"),
            func.sum(resources.c.adjustable_up_kw).label("adjustable_up_kw"),
            func.sum(func.coalesce(resources.c.verified_down_kw, 0.0)).label("verified_down_kw"),
            func.sum(case((resources.c.verified_down_kw.is_not(None), 1), else_=0)).label("verified"),
        )
        .select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id))
        .where(resources.c.state == "active")
        .group_by(key)
        .order_by(key)
    )
    if under is not None:
        q = q.where(under == parent)
    rows = [dict(r._mapping) for r in conn.execute(apply_scope(q, scope))]
    for r in rows:
        for k in ("connected_kw", "adjustable_down_kw", "adjustable_up_kw", "verified_down_kw"):
            r[k] = float(r[k] or 0.0)
    rows.sort(key=lambda r: (r["key"] is None, r["key"] or ""))   # one order on every database: no key last
    return _with_labels(conn, by, rows)


def _with_labels(conn: Connection, by: str, rows: list[dict]) -> list[dict]:
    labels = _labels(conn, by, [r["key"] for r in rows])
    for r in rows:
        r["label"], r["label_zh"] = labels.get(r["key"], (r["key"], None))
    return rows


#: summary groupings → columns of ``registry_arrays``; parent levels → ancestor columns
_ARRAY_KEYS = {"district": "district_id", "substation": "substation_id", "feeder": "feeder_id",
               "transformer_area": "ta_id", "type": "resource_type", "operator": "operator_id",
               "response_mode": "response_mode", "grade": "verified_grade", "protocol": "control_protocol"}


def _summary_arrays(reg: RegistryArrays, by: str, scope: Scope, level: str | None, parent: str | None) -> list[dict]:
    """``summary`` on the registry arrays: active resources in ``scope`` under ``parent`` (of grid
    ``level``; None = the whole city), grouped by ``by``."""
    codes = reg.codes
    mask = reg.matching(state="active", operator_id=scope.operator_id, owner_id=scope.owner_id)
    if level is not None:
        mask &= reg.matching(**{_ARRAY_KEYS[level]: parent})
    col = _ARRAY_KEYS[by]
    cats = list(reg.categories[col]) + [None]
    group = np.where(codes[col] < 0, len(cats) - 1, codes[col])
    v = reg.values
    verified = ~np.isnan(v["verified_down_kw"])
    sums = group_sum(group, len(cats), v["capacity_kw"], v["adjustable_down_kw"], v["adjustable_up_kw"],
                     np.where(verified, v["verified_down_kw"], 0.0), verified.astype(np.float64), mask=mask)
    rows = [{"key": cats[g], "resources": int(sums[5, g]), "connected_kw": float(sums[0, g]),
             "adjustable_down_kw": float(sums[1, g]), "adjustable_up_kw": float(sums[2, g]),
             "verified_down_kw": float(sums[3, g]), "verified": int(sums[4, g])} for g in np.flatnonzero(sums[5])]
    rows.sort(key=lambda r: (r["key"] is None, r["key"] or ""))
    return rows


def _labels(conn: Connection, by: str, keys: list) -> dict:
    if by in ("district", "substation", "feeder", "transformer_area"):
        q = select(grid_nodes.c.node_id, grid_nodes.c.name, grid_nodes.c.name_zh).where(
            grid_nodes.c.node_id.in_([k for k in keys if k]))
        return {r[0]: (r[1], r[2]) for r in conn.execute(q)}
    if by == "operator":
        q = select(operators.c.operator_id, operators.c.name, operators.c.name_zh).where(
            operators.c.operator_id.in_([k for k in keys if k]))
        return {r[0]: (r[1], r[2]) for r in conn.execute(q)}
    return {}


def targets_report(conn: Connection, scope: Scope = Scope(), ruleset: str = rules.DEFAULT_RULESET,
                   reg: RegistryArrays | None = None) -> dict:
    """Connected and adjustable capacity against the plan's 2025-2027 targets, city-wide and by district.

    Adjustable capability counts the declared load-reduction (peak-shaving) capability,
    ``adjustable_down_kw``; the valley-filling side is reported beside it.
    """
    rs = rules.load(ruleset)
    connected = rs.target_mw("connected")
    adjustable = rs.target_mw("adjustable")
    districts = summary(conn, "district", scope, reg=reg)
    types = summary(conn, "type", scope, reg=reg)
    city = {
        "connected_mw": sum(d["connected_kw"] for d in districts) / 1000,
        "adjustable_mw": sum(d["adjustable_down_kw"] for d in districts) / 1000,
        "adjustable_up_mw": sum(d["adjustable_up_kw"] for d in districts) / 1000,
        "verified_mw": sum(d["verified_down_kw"] for d in districts) / 1000,
        "resources": sum(d["resources"] for d in districts),
    }
    return {
        "ruleset": rs.id,
        "scope": scope.label(),
        "targets": [{"year": y, "connected_mw": connected[y], "adjustable_mw": adjustable[y],
                     "connected_progress": city["connected_mw"] / connected[y],
                     "adjustable_progress": city["adjustable_mw"] / adjustable[y]} for y in sorted(connected)],
        "city": city,
        "by_district": [{"node_id": d["key"], "name": d["label"], "name_zh": d["label_zh"],
                         "connected_mw": d["connected_kw"] / 1000, "adjustable_mw": d["adjustable_down_kw"] / 1000,
                         "adjustable_up_mw": d["adjustable_up_kw"] / 1000, "verified_mw": d["verified_down_kw"] / 1000,
                         "resources": d["resources"], "verified_resources": d["verified"]}
                        for d in districts],
        "by_type": [{"resource_type": d["key"], "connected_mw": d["connected_kw"] / 1000,
                     "adjustable_mw": d["adjustable_down_kw"] / 1000, "adjustable_up_mw": d["adjustable_up_kw"] / 1000,
                     "verified_mw": d["verified_down_kw"] / 1000, "resources": d["resources"],
                     "verified_resources": d["verified"]} for d in types],
    }


def ensure_empty(conn: Connection) -> None:
    if conn.execute(select(func.count()).select_from(grid_nodes)).scalar():
        raise Conflict("the database already holds a city; use a fresh database (or OPENVPP_DATABASE_URL)")
