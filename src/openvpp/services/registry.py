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
from openvpp.model.columns import (
    GRID_COLUMNS,
    OPERATOR_COLUMNS,
    OWNER_COLUMNS,
    RESOURCE_COLUMNS,
    SITE_COLUMNS,
    Column,
)
from openvpp.model.enums import GRID_LEVELS, GridLevel, OperatorState, Role
from openvpp.services import registry_arrays
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
    if conn.dialect.name == "postgresql":
        # statistics for the planner now, not when autovacuum gets to it: without them the first
        # event's members query (a join of resources and grid nodes) took 8.5 s at 50,000 resources
        conn.exec_driver_sql("ANALYZE grid_nodes, sites, resources")
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
#: other names of a grouping: the column names the resource list filters by
SUMMARY_ALIASES = {"resource_type": "type", "ta_id": "transformer_area", "district_id": "district",
                   "substation_id": "substation", "feeder_id": "feeder", "operator_id": "operator",
                   "verified_grade": "grade", "control_protocol": "protocol"}
#: the resource filters (the list, the export and the summary take the same), by column name
FILTERS = {
    "resource_type": resources.c.resource_type, "operator_id": resources.c.operator_id,
    "owner_id": resources.c.owner_id, "ta_id": resources.c.ta_id, "state": resources.c.state,
    "district_id": grid_nodes.c.district_id, "substation_id": grid_nodes.c.substation_id,
    "feeder_id": grid_nodes.c.feeder_id, "response_mode": resources.c.response_mode,
    "verified_grade": resources.c.verified_grade,
}
#: a summary group's sums, in the order of ``registry_arrays.aggregate_columns``' rows
SUMMARY_SUMS = ("connected_kw", "adjustable_down_kw", "adjustable_up_kw", "verified_down_kw", "verified", "resources")
#: most rows of a summary page (the columnar form has no limit)
MAX_SUMMARY_ROWS = 10_000


def apply_scope(q, scope: Scope):
    if scope.operator_id:
        q = q.where(resources.c.operator_id == scope.operator_id)
    if scope.owner_id:
        q = q.where(resources.c.owner_id == scope.owner_id)
    return q


def check_filters(filters: dict[str, str | None] | None) -> dict[str, str]:
    """The filters that set a condition (None and "" set none); an unknown name is refused, naming it."""
    out = {}
    for name, value in (filters or {}).items():
        if value in (None, ""):
            continue
        if name not in FILTERS:
            raise InvalidInput(Violation(name, f"unknown filter; use one of {', '.join(FILTERS)}", value))
        out[name] = value
    return out


#: grid level of a summary's ``parent`` → the column that holds a resource's ancestor at that level
PARENT_KEYS = {
    GridLevel.DISTRICT.value: grid_nodes.c.district_id,
    GridLevel.SUBSTATION.value: grid_nodes.c.substation_id,
    GridLevel.FEEDER.value: grid_nodes.c.feeder_id,
    GridLevel.TRANSFORMER_AREA.value: resources.c.ta_id,
}
#: parent levels → columns of ``registry_arrays``
_PARENT_ARRAY_KEYS = {"district": "district_id", "substation": "substation_id", "feeder": "feeder_id",
                      "transformer_area": "ta_id"}


def summary_keys(by: str | list[str]) -> list[str]:
    """One grouping or two (``"transformer_area,type"`` or a list), each a key of ``SUMMARY_KEYS``
    (or an alias: ``resource_type`` for ``type``...); refused naming ``by`` and the rule."""
    parts = [b.strip() for b in by.split(",")] if isinstance(by, str) else [str(b).strip() for b in by]
    parts = [SUMMARY_ALIASES.get(b, b) for b in parts]
    if not 1 <= len(parts) <= 2:
        raise InvalidInput(Violation("by", "give one grouping, or two separated by a comma "
                                     "(e.g. transformer_area,type)", by))
    for b in parts:
        if b not in SUMMARY_KEYS:
            raise InvalidInput(Violation("by", f"must be one of {', '.join(SUMMARY_KEYS)} "
                                         "(or resource_type for type)", b))
    if len(parts) == 2 and parts[0] == parts[1]:
        raise InvalidInput(Violation("by", "the two groupings must differ", by))
    return parts


def summary_groups(conn: Connection, by: str | list[str], scope: Scope = Scope(), parent: str | None = None,
                   reg: RegistryArrays | None = None, filters: dict[str, str | None] | None = None
                   ) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """The groups of a summary, column-shaped: ``(keys, labels, sums)``.

    ``keys``: the groupings (``summary_keys``); ``labels``: one object array per grouping, the key
    values of the non-empty groups (None = no value, e.g. no operator); ``sums``: float (6, groups)
    in ``SUMMARY_SUMS`` order. Groups are in key order (first grouping, then second; None last).
    Resources counted: active ones (or those of the ``state`` filter) in the caller's ``scope``,
    matching ``filters`` (``FILTERS``), under grid node ``parent`` (None or the city: all).
    ``reg``: registry arrays current with this database: the sums are taken on them
    (``registry_arrays.aggregate_columns``) instead of a SQL GROUP BY; the same groups, same order.
    """
    keys = summary_keys(by)
    filters = check_filters(filters)
    under = level = None
    if parent is not None:
        level = conn.execute(select(grid_nodes.c.level).where(grid_nodes.c.node_id == parent)).scalar()
        if level is None:
            raise InvalidInput(Violation("parent", "grid node does not exist", parent))
        under = PARENT_KEYS.get(level)
    state = filters.pop("state", "active")
    if reg is not None:
        mask = reg.matching(state=state, **filters) & reg.matching(operator_id=scope.operator_id,
                                                                   owner_id=scope.owner_id)
        if under is not None:
            mask &= reg.matching(**{_PARENT_ARRAY_KEYS[level]: parent})
        labels, sums = registry_arrays.aggregate_columns(reg, keys, active_only=False, mask=mask, sort=True)
        return keys, labels, sums
    cols = [SUMMARY_KEYS[k] for k in keys]
    q = (
        select(
            *[c.label(f"k{i}") for i, c in enumerate(cols)],
            func.sum(resources.c.capacity_kw), func.sum(resources.c.adjustable_down_kw),
            func.sum(resources.c.adjustable_up_kw), func.sum(func.coalesce(resources.c.verified_down_kw, 0.0)),
            func.sum(case((resources.c.verified_down_kw.is_not(None), 1), else_=0)), func.count(),
        )
        .select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id))
        .where(resources.c.state == state, *[FILTERS[name] == value for name, value in filters.items()])
        .group_by(*cols)
    )
    if under is not None:
        q = q.where(under == parent)
    rows = conn.execute(apply_scope(q, scope)).all()
    # one order on every database: by key, no key last
    rows.sort(key=lambda r: tuple(x for k in r[:len(keys)] for x in (k is None, k or "")))
    labels = [np.array([r[i] for r in rows], dtype=object) for i in range(len(keys))]
    sums = np.array([[float(x or 0.0) for x in r[len(keys):]] for r in rows]).reshape(len(rows), 6).T
    return keys, labels, sums


def _summary_rows(conn: Connection, keys: list[str], labels: list[np.ndarray], sums: np.ndarray) -> list[dict]:
    """Groups as dicts: ``key``, ``label``, ``label_zh`` (lists when two groupings), one field per
    grouping, and the sums (counts as ints)."""
    vals = [lab.tolist() for lab in labels]
    names = [_labels(conn, k, v) for k, v in zip(keys, vals, strict=True)]
    cols = [sums[j].tolist() for j in range(4)]
    counts = [sums[j].astype(np.int64).tolist() for j in (4, 5)]
    out = []
    for i in range(len(counts[1])):
        ks = [v[i] for v in vals]
        lab = [n.get(k, (k, None)) for n, k in zip(names, ks, strict=True)]
        row = {"key": ks[0], "label": lab[0][0], "label_zh": lab[0][1]} if len(keys) == 1 else \
            {"key": ks, "label": [x[0] for x in lab], "label_zh": [x[1] for x in lab]}
        row.update(zip(keys, ks, strict=True))
        row.update(zip(SUMMARY_SUMS[:4], (c[i] for c in cols), strict=True))
        row["verified"], row["resources"] = counts[0][i], counts[1][i]
        out.append(row)
    return out


def summary(conn: Connection, by: str | list[str], scope: Scope = Scope(), parent: str | None = None,
            reg: RegistryArrays | None = None, filters: dict[str, str | None] | None = None) -> list[dict]:
    """Connected and adjustable capacity grouped by ``by`` (one or two of ``SUMMARY_KEYS``), every group
    as a dict (see ``summary_groups`` for what counts, ``_summary_rows`` for the fields).

    ``parent``: a grid node id; only the resources under it count (e.g. ``by="feeder"`` with a
    substation's id gives that substation's feeders). The city node counts everything.
    """
    return _summary_rows(conn, *summary_groups(conn, by, scope, parent, reg, filters))


def summary_page(conn: Connection, by: str | list[str], scope: Scope = Scope(), parent: str | None = None,
                 reg: RegistryArrays | None = None, filters: dict[str, str | None] | None = None,
                 limit: int | None = 1000, offset: int = 0, columns: bool = False) -> dict:
    """A page of a summary's groups, for the API and the CLI: ``{keys, total, limit, offset}`` and
    ``rows`` (dicts with labels, at most ``MAX_SUMMARY_ROWS``) or, with ``columns``, ``columns``
    ``{<grouping>: [labels], <sum>: array}`` (numpy arrays of the sums, no labels looked up; limit
    None = every group): the form for fine groupings such as transformer area x type."""
    if limit is not None and not 1 <= limit <= (10**9 if columns else MAX_SUMMARY_ROWS):
        raise InvalidInput(Violation("limit", f"must be between 1 and {MAX_SUMMARY_ROWS}", limit))
    if offset < 0:
        raise InvalidInput(Violation("offset", "must be >= 0", offset))
    keys, labels, sums = summary_groups(conn, by, scope, parent, reg, filters)
    total = len(labels[0])
    sl = slice(offset, None if limit is None else offset + limit)
    out: dict = {"keys": keys, "total": total, "limit": limit, "offset": offset}
    if columns:
        out["columns"] = {**{k: lab[sl].tolist() for k, lab in zip(keys, labels, strict=True)},
                          **{n: np.ascontiguousarray(sums[j, sl], np.int64 if n in ("verified", "resources")
                                                     else np.float64) for j, n in enumerate(SUMMARY_SUMS)}}
    else:
        out["rows"] = _summary_rows(conn, keys, [lab[sl] for lab in labels], sums[:, sl])
    return out


def _labels(conn: Connection, by: str, keys: list) -> dict:
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return {}
    if by in ("district", "substation", "feeder", "transformer_area"):
        q = select(grid_nodes.c.node_id, grid_nodes.c.name, grid_nodes.c.name_zh).where(
            grid_nodes.c.node_id.in_(wanted))
        return {r[0]: (r[1], r[2]) for r in conn.execute(q)}
    if by == "operator":
        q = select(operators.c.operator_id, operators.c.name, operators.c.name_zh).where(
            operators.c.operator_id.in_(wanted))
        return {r[0]: (r[1], r[2]) for r in conn.execute(q)}
    return {}


def targets_report(conn: Connection, scope: Scope = Scope(), ruleset: str = rules.DEFAULT_RULESET,
                   reg: RegistryArrays | None = None) -> dict:
    """Connected and adjustable capacity against the plan's 2025-2027 targets, city-wide, by district
    and by type, with what is verified beside what is declared.

    Adjustable capability counts the declared load-reduction (peak-shaving) capability,
    ``adjustable_down_kw``; the valley-filling side is reported beside it. Verified capability is
    the measured ``verified_down_kw`` of the active resources a verification test has graded
    (``services.verification``), set against the same adjustable target. Each target year gives the
    city's progress (connected, adjustable declared, adjustable verified); each district and type
    row gives its share of every year's targets (``progress``).
    """
    rs = rules.load(ruleset)
    connected = rs.target_mw("connected")
    adjustable = rs.target_mw("adjustable")
    years = sorted(connected)
    districts = summary(conn, "district", scope, reg=reg)
    types = summary(conn, "type", scope, reg=reg)
    city = {
        "connected_mw": sum(d["connected_kw"] for d in districts) / 1000,
        "adjustable_mw": sum(d["adjustable_down_kw"] for d in districts) / 1000,
        "adjustable_up_mw": sum(d["adjustable_up_kw"] for d in districts) / 1000,
        "verified_mw": sum(d["verified_down_kw"] for d in districts) / 1000,
        "resources": sum(d["resources"] for d in districts),
        "verified_resources": sum(d["verified"] for d in districts),
    }

    def figures(d: dict) -> dict:
        mw = {"connected_mw": d["connected_kw"] / 1000, "adjustable_mw": d["adjustable_down_kw"] / 1000,
              "adjustable_up_mw": d["adjustable_up_kw"] / 1000, "verified_mw": d["verified_down_kw"] / 1000,
              "resources": d["resources"], "verified_resources": d["verified"]}
        mw["progress"] = [{"year": y, "connected_share": mw["connected_mw"] / connected[y],
                           "adjustable_share": mw["adjustable_mw"] / adjustable[y],
                           "verified_share": mw["verified_mw"] / adjustable[y]} for y in years]
        return mw

    return {
        "ruleset": rs.id,
        "scope": scope.label(),
        "targets": [{"year": y, "connected_mw": connected[y], "adjustable_mw": adjustable[y],
                     "connected_progress": city["connected_mw"] / connected[y],
                     "adjustable_progress": city["adjustable_mw"] / adjustable[y],
                     "verified_mw": city["verified_mw"],
                     "verified_progress": city["verified_mw"] / adjustable[y]} for y in years],
        "city": city,
        "by_district": [{"node_id": d["key"], "name": d["label"], "name_zh": d["label_zh"], **figures(d)}
                        for d in districts],
        "by_type": [{"resource_type": d["key"], **figures(d)} for d in types],
    }


def ensure_empty(conn: Connection) -> None:
    if conn.execute(select(func.count()).select_from(grid_nodes)).scalar():
        raise Conflict("the database already holds a city; use a fresh database (or OPENVPP_DATABASE_URL)")
