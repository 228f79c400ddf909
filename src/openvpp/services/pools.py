"""Resource pools (Guangzhou VPP plan task 3): definitions, evaluation, and the live pool engine.

A pool is stored as a rule (``model.pools.PoolRules``) and evaluated on the registry arrays by
``kernels.pools``; it is never a hand-made list, so its totals follow the resources.

- Definitions: ``create_pool`` / ``update_pool`` / ``delete_pool``, each audited. City admins and
  dispatchers define any pool; an operator admin only pools restricted to its own operator.
  A pool of a preset scenario starts from the preset's rules and may only tighten them.
  ``default_pools`` creates the default presets at city level and per district.
- Evaluation: ``evaluate`` (totals per pool) and ``members`` (a page of member ids).
- ``PoolEngine`` holds the registry arrays and every pool's mask and totals in memory and applies
  resource changes incrementally, O(changes x pools); the live state and dispatch use it.
- ``PoolCache`` is a process's shared engine (the API's): it reads the changes the audit log
  announces (the changed resources' rows, pools, admitted operators) and applies them to the
  engine, reloading the registry only for city loads, bulk imports and operators' hand-overs.

Members are active resources of admitted operators with capability > 0 in the pool's direction;
a pool that requires a verification grade excludes flagged and unverified resources.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, func, select

from openvpp.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Violation
from openvpp.core.ids import new_id
from openvpp.core.memory import freeze_long_lived
from openvpp.kernels import pools as kp
from openvpp.kernels.aggregate import group_sum
from openvpp.model.enums import GridLevel, OperatorState, ResourceState, Role
from openvpp.model.pools import (
    CUSTOM,
    GRADE_RANK,
    Pool,
    PoolRules,
    Preset,
    check_against_preset,
    load_presets,
    parse_pool,
    parse_rules,
    preset_rules,
)
from openvpp.model.roles import OPERATOR_ROLES, Perm, allowed
from openvpp.services import registry_arrays
from openvpp.services.registry_arrays import CATEGORICAL, LEVELS, NUMERIC, RegistryArrays
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema import audit_log, grid_nodes, operators, pools, resources, verification_tests

log = logging.getLogger(__name__)

#: roles that define city pools; an operator admin defines pools of its own operator only
CITY_POOL_ROLES = (Role.CITY_ADMIN.value, Role.DISPATCHER.value)
#: grid level of a node → row of ``kernels.pools.ResourceArrays.nodes`` (-1 = whole city)
LEVEL_ROW = {GridLevel.CITY.value: -1, GridLevel.DISTRICT.value: 0, GridLevel.SUBSTATION.value: 1,
             GridLevel.FEEDER.value: 2, GridLevel.TRANSFORMER_AREA.value: 3}
NODE_COLUMNS = ("district_id", "substation_id", "feeder_id", "ta_id")
MAX_PAGE = 10_000


# ================================================================ definitions

def list_presets() -> list[dict]:
    """The scenario presets (``model/pool_presets.toml``) with their rules."""
    return [p.to_dict() for p in load_presets().values()]


def _row(r: dict) -> dict:
    r = dict(r)
    r["rules"] = parse_rules(r["rules"]).model_dump(mode="json")
    preset = load_presets().get(r["scenario"])
    r["mandatory"] = bool(preset and preset.mandatory)
    return r


def _visible(actor: Actor | None, rules: dict) -> bool:
    if actor is None or allowed(Role(actor.role), Perm.READ_ALL):
        return True
    if Role(actor.role) in OPERATOR_ROLES:
        return list(rules.get("operator_ids") or []) == [actor.operator_id]
    return False


def get_pool(conn: Connection, pool_id: str, actor: Actor | None = None) -> dict:
    """One pool definition (with its node's level). ``actor``: refuse what its scope cannot see."""
    row = conn.execute(select(pools, grid_nodes.c.level).select_from(
        pools.join(grid_nodes, grid_nodes.c.node_id == pools.c.node_id)).where(pools.c.pool_id == pool_id)
    ).mappings().first()
    if row is None:
        raise NotFound("pool", pool_id)
    out = _row(row)
    if not _visible(actor, out["rules"]):
        raise Forbidden(f"pool {pool_id} is outside your scope")
    return out


def list_pools(conn: Connection, actor: Actor | None = None, scenario: str | None = None,
               node_id: str | None = None) -> list[dict]:
    """Pool definitions the actor may see (operators: their own pools), by pool id."""
    q = select(pools, grid_nodes.c.level).select_from(
        pools.join(grid_nodes, grid_nodes.c.node_id == pools.c.node_id)).order_by(pools.c.pool_id)
    if scenario:
        q = q.where(pools.c.scenario == scenario)
    if node_id:
        q = q.where(pools.c.node_id == node_id)
    rows = [_row(r) for r in conn.execute(q).mappings()]
    return [r for r in rows if _visible(actor, r["rules"])]


def _may_define(actor: Actor, rules: PoolRules) -> PoolRules:
    """Who may define this pool; an operator admin's pool is fenced to its own operator."""
    if actor.role in CITY_POOL_ROLES:
        return rules
    if actor.role == Role.OPERATOR_ADMIN.value and actor.operator_id:
        if not rules.operator_ids:
            return rules.model_copy(update={"operator_ids": (actor.operator_id,)})
        if list(rules.operator_ids) != [actor.operator_id]:
            raise Forbidden(f"an operator admin may define pools of its own operator {actor.operator_id} only "
                            f"(rules.operator_ids = {list(rules.operator_ids)})")
        return rules
    raise Forbidden(f"role {actor.role} may not define pools; allowed: city_admin, dispatcher, "
                    "operator_admin (own operator)")


def _city_node(conn: Connection) -> str:
    root = conn.execute(select(grid_nodes.c.node_id).where(grid_nodes.c.level == GridLevel.CITY.value)).scalar()
    if root is None:
        raise InvalidInput(Violation("rules.node_id", "no city grid is loaded (load a city first)", None))
    return root


def _check(conn: Connection, scenario: str, rules: PoolRules) -> tuple[str, str]:
    """Validate rules against the database and the preset; return (node_id, node level)."""
    presets = load_presets()
    v: list[Violation] = []
    if rules.node_id is None:
        node_id, level = _city_node(conn), GridLevel.CITY.value
    else:
        node_id = rules.node_id
        level = conn.execute(select(grid_nodes.c.level).where(grid_nodes.c.node_id == node_id)).scalar()
        if level is None:
            v.append(Violation("rules.node_id", "grid node does not exist", node_id))
    if rules.operator_ids:
        known = set(conn.execute(select(operators.c.operator_id)
                                 .where(operators.c.operator_id.in_(rules.operator_ids))).scalars())
        v += [Violation("rules.operator_ids", "operator does not exist", o) for o in rules.operator_ids
              if o not in known]
    if scenario != CUSTOM:
        v += check_against_preset(presets[scenario], rules, level)
    if v:
        raise InvalidInput(v)
    return node_id, level


def create_pool(conn: Connection, actor: Actor, fields: dict[str, Any]) -> dict:
    """Define a pool. ``fields``: ``scenario`` (a preset or ``custom``), ``rules`` (laid over the
    preset's), optional ``pool_id`` (default ``POOL-...``) and ``name``. Audited; all or nothing."""
    known = {"pool_id", "name", "scenario", "rules"}
    bad = [Violation(k, f"unknown field; use {', '.join(sorted(known))}", v) for k, v in fields.items()
           if k not in known]
    if bad:
        raise InvalidInput(bad)
    scenario = fields.get("scenario") or CUSTOM
    rules = _may_define(actor, preset_rules(scenario, fields.get("rules")))
    node_id, level = _check(conn, scenario, rules)
    presets = load_presets()
    name = fields.get("name") or f"{presets[scenario].name if scenario in presets else 'Pool'} — {node_id}"
    pool = parse_pool({"pool_id": fields.get("pool_id") or new_id("POOL"), "name": name, "scenario": scenario,
                       "rules": rules.model_dump(mode="json")})
    if conn.execute(select(pools.c.pool_id).where(pools.c.pool_id == pool.pool_id)).first() is not None:
        raise Conflict(f"pool {pool.pool_id} already exists")
    now = datetime.now(UTC)
    row = {"pool_id": pool.pool_id, "name": pool.name, "scenario": pool.scenario, "node_id": node_id,
           "rules": pool.rules.model_dump(mode="json"), "created_by": actor.name, "created_at": now,
           "updated_at": now}
    conn.execute(pools.insert().values(**row))
    audit.record(conn, actor, "pool.create", "pool", pool.pool_id, after=row)
    return get_pool(conn, pool.pool_id)


def _owned(actor: Actor, row: dict) -> None:
    if actor.role in CITY_POOL_ROLES:
        return
    if actor.role == Role.OPERATOR_ADMIN.value and list(row["rules"]["operator_ids"]) == [actor.operator_id]:
        return
    raise Forbidden(f"role {actor.role} may not change pool {row['pool_id']}")


def update_pool(conn: Connection, actor: Actor, pool_id: str, patch: dict[str, Any],
                reason: str | None = None) -> dict:
    """Change a pool's ``name`` and/or ``rules`` (merged over the current rules; ``null``/``[]`` clears a
    condition). The scenario stays. Audited with before/after."""
    before = get_pool(conn, pool_id)
    _owned(actor, before)
    bad = [Violation(k, "cannot be changed; editable: name, rules", v) for k, v in patch.items()
           if k not in ("name", "rules")]
    if "rules" in patch and not isinstance(patch["rules"], dict):
        bad.append(Violation("rules", "must be an object of rules", patch["rules"]))
    if bad:
        raise InvalidInput(bad)
    rules = parse_rules({**before["rules"], **(patch.get("rules") or {})})
    rules = _may_define(actor, rules)
    node_id, _level = _check(conn, before["scenario"], rules)
    pool = parse_pool({"pool_id": pool_id, "name": patch.get("name", before["name"]),
                       "scenario": before["scenario"], "rules": rules.model_dump(mode="json")})
    values = {"name": pool.name, "node_id": node_id, "rules": pool.rules.model_dump(mode="json"),
              "updated_at": datetime.now(UTC)}
    conn.execute(pools.update().where(pools.c.pool_id == pool_id).values(**values))
    audit.record(conn, actor, "pool.update", "pool", pool_id,
                 before={k: before[k] for k in ("name", "node_id", "rules")},
                 after={k: values[k] for k in ("name", "node_id", "rules")}, reason=reason)
    return get_pool(conn, pool_id)


def delete_pool(conn: Connection, actor: Actor, pool_id: str, reason: str | None = None) -> None:
    """Remove a pool definition (the audit log keeps it)."""
    before = get_pool(conn, pool_id)
    _owned(actor, before)
    conn.execute(pools.delete().where(pools.c.pool_id == pool_id))
    audit.record(conn, actor, "pool.delete", "pool", pool_id, before=before, reason=reason)


def default_pools(conn: Connection, actor: Actor = audit.SYSTEM) -> list[dict]:
    """Create every preset marked ``default`` at city level and in each district, ids
    ``<scenario>:<node_id>``. Existing pools are left alone (idempotent). Returns the created ones."""
    if actor.role not in CITY_POOL_ROLES:
        raise Forbidden(f"role {actor.role} may not create city pools")
    nodes = [(r.node_id, r.level, r.name) for r in conn.execute(
        select(grid_nodes.c.node_id, grid_nodes.c.level, grid_nodes.c.name)
        .where(grid_nodes.c.level.in_((GridLevel.CITY.value, GridLevel.DISTRICT.value)))
        .order_by(grid_nodes.c.level, grid_nodes.c.node_id))]
    existing = set(conn.execute(select(pools.c.pool_id)).scalars())
    created = []
    for preset in load_presets().values():
        if not preset.default:
            continue
        for node_id, level, node_name in nodes:
            pool_id = f"{preset.scenario}:{node_id}"
            if pool_id in existing or level not in preset.node_levels:
                continue
            rules = {} if level == GridLevel.CITY.value else {"node_id": node_id}
            created.append(create_pool(conn, actor, {"pool_id": pool_id, "scenario": preset.scenario,
                                                     "name": f"{preset.name} — {node_name}", "rules": rules}))
    return created


def _definitions(conn: Connection, pool_ids: Sequence[str] | None, actor: Actor | None) -> list[dict]:
    if pool_ids is None:
        return list_pools(conn, actor)
    return [get_pool(conn, pid, actor) for pid in pool_ids]


def _as_pool(row: dict) -> Pool:
    return Pool(pool_id=row["pool_id"], name=row["name"], scenario=row["scenario"], rules=row["rules"])


# ================================================================ the engine

def _label_table(labels: list, ok) -> np.ndarray:
    """bool lookup table over category labels, plus the trailing "none" slot (code -1)."""
    return np.array([bool(ok(lb)) for lb in labels] + [bool(ok(None))], dtype=bool)


def _resource_arrays(reg: RegistryArrays, flagged: np.ndarray, nodes: np.ndarray | None = None
                     ) -> kp.ResourceArrays:
    """The kernel's columns over ``reg`` (sharing its arrays; ``nodes``, when not given, is stacked
    from its four grid columns, a copy)."""
    c, v = reg.codes, reg.values
    return kp.ResourceArrays(
        state=c["state"], resource_type=c["resource_type"], response_mode=c["response_mode"],
        operator=c["operator_id"], grade=c["verified_grade"],
        nodes=np.stack([c[col] for col in NODE_COLUMNS]).astype(np.int32) if nodes is None else nodes,
        flagged=flagged,
        latency_s=v["latency_s"], duration_h=v["adjustable_duration_h"], up_kw=v["adjustable_up_kw"],
        down_kw=v["adjustable_down_kw"], verified_latency_s=v["verified_latency_s"],
        verified_up_kw=v["verified_up_kw"], verified_down_kw=v["verified_down_kw"])


class PoolEngine:
    """Registry arrays plus every pool's mask and totals, kept current by incremental updates.

    The engine owns ``reg``: ``apply`` writes changed attributes into its arrays in place, so
    ``registry_arrays.aggregate(engine.reg, ...)`` stays live too. One writer at a time.
    ``masks`` (P, n) bool and ``sums`` (P, 5) float, rows in ``pools`` order, columns in
    ``kernels.pools.TOTALS`` order, are the state; ``totals()`` reads it as dicts.

    Parameters
    ----------
    reg : RegistryArrays
    pools : the pool definitions to hold
    flagged : bool (n,), optional
        Resources excluded after a failed verification (``resources.flagged`` set).
    admitted_operators : operator ids whose resources count; None = every operator
    node_levels : {node_id: grid level} of the pools' nodes; nodes not given are looked up among the
        registry's district/substation/feeder/TA ids
    ta_ancestors : {ta_id: (district_id, substation_id, feeder_id)}, to move a resource to another
        transformer area; default: the ancestors of TAs that already hold resources
    """

    def __init__(self, reg: RegistryArrays, pools: Iterable[Pool] = (), *, flagged: np.ndarray | None = None,
                 admitted_operators: Iterable[str] | None = None, node_levels: dict[str, str] | None = None,
                 ta_ancestors: dict[str, tuple[str, str, str]] | None = None):
        self.reg = reg
        self.admitted = None if admitted_operators is None else set(admitted_operators)
        self.node_levels = dict(node_levels or {})
        self._ta_ancestors = ta_ancestors
        self.res = _resource_arrays(reg, np.zeros(reg.n, bool) if flagged is None
                                    else np.asarray(flagged, bool).copy())
        self.pools: list[Pool] = []
        self._codes: list[kp.PoolCodes] = []
        self.masks = np.zeros((0, reg.n), bool)
        self.sums = np.zeros((0, len(kp.TOTALS)))   # (P, 5) in kernels.pools.TOTALS order
        self.set_pools(list(pools))

    # ---------------------------------------------------------------- building

    @classmethod
    def from_db(cls, conn: Connection, pool_ids: Sequence[str] | None = None, actor: Actor | None = None,
                reg: RegistryArrays | None = None) -> PoolEngine:
        """Load the registry (unless ``reg`` is given), flags, admitted operators and the pools."""
        reg = reg if reg is not None else registry_arrays.load(conn)
        rows = _definitions(conn, pool_ids, actor)
        flagged_ids = list(conn.execute(select(resources.c.resource_id)
                                        .where(resources.c.flagged.is_not(None))).scalars())
        flagged = np.zeros(reg.n, bool)
        idx = reg.index_of(flagged_ids) if flagged_ids else np.zeros(0, int)
        flagged[idx[idx >= 0]] = True
        admitted = conn.execute(select(operators.c.operator_id)
                                .where(operators.c.state == OperatorState.ADMITTED.value)).scalars()
        tas = conn.execute(select(grid_nodes.c.node_id, grid_nodes.c.district_id, grid_nodes.c.substation_id,
                                  grid_nodes.c.feeder_id)
                           .where(grid_nodes.c.level == GridLevel.TRANSFORMER_AREA.value))
        return cls(reg, [_as_pool(r) for r in rows], flagged=flagged, admitted_operators=list(admitted),
                   node_levels={r["node_id"]: r["level"] for r in rows},
                   ta_ancestors={r[0]: (r[1], r[2], r[3]) for r in tas})

    def _level_of(self, node_id: str | None) -> int:
        if node_id is None:
            return -1
        level = self.node_levels.get(node_id)
        if level is not None:
            return LEVEL_ROW[level]
        for row, col in enumerate(NODE_COLUMNS):
            if node_id in self.reg.categories[col]:
                return row
        raise InvalidInput(Violation("rules.node_id", "grid node is unknown to this registry", node_id))

    def encode(self, rules: PoolRules) -> kp.PoolCodes:
        """The rules as lookup tables and thresholds over this registry's category codes."""
        cats = self.reg.categories
        ops = set(rules.operator_ids)
        level = self._level_of(rules.node_id)
        types = {str(t) for t in rules.resource_types}
        modes = {str(m) for m in rules.response_modes}
        min_rank = GRADE_RANK[rules.min_grade] if rules.min_grade else 0
        return kp.PoolCodes(
            state_ok=_label_table(cats["state"], lambda s: s == ResourceState.ACTIVE.value),
            operator_ok=_label_table(cats["operator_id"], lambda o: o is not None
                                     and (self.admitted is None or o in self.admitted) and (not ops or o in ops)),
            type_ok=_label_table(cats["resource_type"], lambda t: t in types) if types else None,
            mode_ok=_label_table(cats["response_mode"], lambda m: m in modes) if modes else None,
            grade_ok=(_label_table(cats["verified_grade"], lambda g: GRADE_RANK.get(g, 0) >= min_rank)
                      if min_rank else None),
            level=level, node_code=self.reg.code_of(NODE_COLUMNS[level], rules.node_id) if level >= 0 else -1,
            max_latency_s=rules.max_latency_s, min_duration_h=rules.min_duration_h,
            direction=str(rules.direction), use_verified=rules.use_verified, duration_h=rules.duration_h)

    def set_pools(self, pools: list[Pool]) -> None:
        """Hold exactly these pools (full evaluation)."""
        self.pools = list(pools)
        self._index = {p.pool_id: i for i, p in enumerate(self.pools)}
        if len(self._index) != len(self.pools):
            raise InvalidInput(Violation("pool_id", "pools must have distinct ids", len(self.pools)))
        self._codes = [self.encode(p.rules) for p in self.pools]
        self.masks, self.sums = kp.evaluate_all(self.res, self._codes)

    def set_pool(self, pool: Pool) -> None:
        """Add or replace one pool (evaluates that pool only)."""
        pc = self.encode(pool.rules)
        mask, totals = kp.evaluate_all(self.res, [pc])
        if pool.pool_id in self._index:
            i = self._index[pool.pool_id]
            self.pools[i], self._codes[i], self.masks[i], self.sums[i] = pool, pc, mask[0], totals[0]
            return
        self._index[pool.pool_id] = len(self.pools)
        self.pools.append(pool)
        self._codes.append(pc)
        self.masks = np.concatenate([self.masks, mask])
        self.sums = np.concatenate([self.sums, totals])

    def remove_pool(self, pool_id: str) -> None:
        i = self._pool_index(pool_id)
        keep = [k for k in range(len(self.pools)) if k != i]
        self.pools = [self.pools[k] for k in keep]
        self._codes = [self._codes[k] for k in keep]
        self.masks, self.sums = self.masks[keep], self.sums[keep]
        self._index = {p.pool_id: k for k, p in enumerate(self.pools)}

    def set_admitted_operators(self, operator_ids: Iterable[str] | None) -> None:
        """An operator was admitted, suspended or exited: re-encode and re-evaluate every pool."""
        self.admitted = None if operator_ids is None else set(operator_ids)
        self.set_pools(self.pools)

    def recompute(self) -> None:
        """Full re-evaluation (drops any float drift of many incremental updates)."""
        self.masks, self.sums = kp.evaluate_all(self.res, self._codes)

    # ---------------------------------------------------------------- reading

    def _pool_index(self, pool_id: str) -> int:
        try:
            return self._index[pool_id]
        except KeyError:
            raise NotFound("pool", pool_id) from None

    def _level_name(self, node_id: str | None) -> str:
        if node_id is None:
            return GridLevel.CITY.value
        return self.node_levels.get(node_id) or {r: lv for lv, r in LEVEL_ROW.items()}[self._level_of(node_id)]

    def totals_of(self, pool_id: str) -> dict:
        """``{pool_id, name, scenario, node_id, level, mandatory, up_kw, down_kw, energy_up_kwh,
        energy_down_kwh, count}`` of one pool."""
        i = self._pool_index(pool_id)
        p = self.pools[i]
        preset: Preset | None = load_presets().get(p.scenario)
        out = {"pool_id": p.pool_id, "name": p.name, "scenario": p.scenario, "node_id": p.rules.node_id,
               "level": self._level_name(p.rules.node_id), "mandatory": bool(preset and preset.mandatory)}
        out.update({k: float(x) for k, x in zip(kp.TOTALS, self.sums[i], strict=True)})
        out["count"] = int(round(self.sums[i, -1]))
        return out

    def totals(self, pool_ids: Sequence[str] | None = None) -> list[dict]:
        return [self.totals_of(pid) for pid in (pool_ids if pool_ids is not None else list(self._index))]

    def mask(self, pool_id: str) -> np.ndarray:
        """bool (n,) membership of one pool over ``reg.resource_id`` (read-only view)."""
        m = self.masks[self._pool_index(pool_id)].view()
        m.flags.writeable = False
        return m

    def members(self, pool_id: str, limit: int = 50, offset: int = 0) -> dict:
        """A page of member resource ids, in id order: ``{pool_id, total, limit, offset, items}``."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(Violation("limit", f"must be between 1 and {MAX_PAGE}", limit))
        if offset < 0:
            raise InvalidInput(Violation("offset", "must be >= 0", offset))
        idx = np.flatnonzero(self.masks[self._pool_index(pool_id)])
        return {"pool_id": pool_id, "total": int(len(idx)), "limit": limit, "offset": offset,
                "items": [str(r) for r in self.reg.resource_id[idx[offset:offset + limit]]]}

    def breakdown(self, pool_id: str, by: str) -> list[dict]:
        """A pool's totals split by one of ``registry_arrays.LEVELS`` (e.g. 'operator', 'type')."""
        if by not in LEVELS:
            raise InvalidInput(Violation("by", f"must be among {', '.join(LEVELS)}", by))
        i = self._pool_index(pool_id)
        idx = np.flatnonzero(self.masks[i])
        contrib = kp.contributions(self.res.take(idx), self._codes[i])[:4]
        col = LEVELS[by]
        cats = self.reg.categories[col] + [None]
        codes = self.reg.codes[col][idx]
        sums = group_sum(np.where(codes < 0, len(cats) - 1, codes), len(cats), *contrib)
        return [{by: cats[g], **{k: float(sums[j, g]) for j, k in enumerate(kp.TOTALS[:4])},
                 "count": int(sums[-1, g])} for g in np.flatnonzero(sums[-1])]

    # ---------------------------------------------------------------- changes

    def _ancestors(self, ta_id: str) -> tuple[str, str, str]:
        if self._ta_ancestors is None:
            self._ta_ancestors = {}
            codes, cats = self.reg.codes, self.reg.categories
            ta = codes["ta_id"]
            _, first = np.unique(ta, return_index=True)
            for i in first:
                if ta[i] >= 0:
                    self._ta_ancestors[cats["ta_id"][ta[i]]] = tuple(
                        None if codes[c][i] < 0 else cats[c][codes[c][i]] for c in NODE_COLUMNS[:3])
        try:
            return self._ta_ancestors[ta_id]
        except KeyError:
            raise InvalidInput(Violation("ta_id", "transformer area does not exist", ta_id)) from None

    def apply(self, resource_ids: Sequence[str], changes: dict[str, Sequence]) -> list[str]:
        """Apply changed attributes of some resources; update every pool incrementally.

        ``changes`` maps a column to one new value per resource id: categorical columns of
        ``registry_arrays.CATEGORICAL`` by label (``ta_id`` moves the resource with its
        ancestors; ``None`` = none), numeric columns of ``NUMERIC`` as floats (NaN = unknown),
        and ``flagged`` as bools. Returns the ids of the pools whose members or totals changed.
        """
        ids = list(resource_ids)
        k = len(ids)
        v: list[Violation] = []
        derived = set(NODE_COLUMNS[:3])
        for col, vals in changes.items():
            if col not in CATEGORICAL and col not in NUMERIC and col != "flagged" or col in derived:
                v.append(Violation(col, "cannot be changed here; give ta_id to move a resource" if col in derived
                                   else "unknown column", None))
            elif len(vals) != k:
                v.append(Violation(col, f"needs one value per resource ({k})", len(vals)))
        idx = self.reg.index_of(ids) if k else np.zeros(0, np.intp)
        v += [Violation("resource_ids", "resource is not in the registry", rid)
              for rid, i in zip(ids, idx, strict=True) if i < 0]
        if len(set(ids)) != k:
            v.append(Violation("resource_ids", "each resource may appear once per change set", k))
        if v:
            raise InvalidInput(v)
        if not k:
            return []
        idx = idx.astype(np.intp)
        old = self.res.take(idx)
        staged_codes: dict[str, np.ndarray] = {}
        grew = False
        for col, vals in changes.items():
            if col in CATEGORICAL:
                staged_codes[col], g = self.reg.encode(col, list(vals))
                grew |= g
                if col == "ta_id":
                    anc = [self._ancestors(t) if t else (None, None, None) for t in vals]
                    for j, name in enumerate(NODE_COLUMNS[:3]):
                        staged_codes[name], g = self.reg.encode(name, [a[j] for a in anc])
                        grew |= g
        # everything validated: write in place
        for col, codes in staged_codes.items():
            self.reg.codes[col][idx] = codes
        for col, vals in changes.items():
            if col in NUMERIC:
                self.reg.values[col][idx] = np.asarray(vals, dtype=np.float64)
            elif col == "flagged":
                self.res.flagged[idx] = np.asarray(vals, dtype=bool)
        for row, col in enumerate(NODE_COLUMNS):
            if col in staged_codes:
                self.res.nodes[row, idx] = staged_codes[col]
        if grew:  # new labels: longer lookup tables, and a pool's node may exist now
            self._codes = [self.encode(p.rules) for p in self.pools]
        new = self.res.take(idx)
        touched = kp.update(self.masks, self.sums, self._codes, idx, old, new)
        return [self.pools[p].pool_id for p in touched]

    def apply_rows(self, rows: dict[str, list]) -> list[str]:
        """Apply whole rows as ``registry_arrays.read_rows`` reads them (every column; the grid
        ancestors follow ``ta_id``). Returns the ids of the pools that changed."""
        changes: dict[str, Sequence] = {c: rows[c] for c in CATEGORICAL if c not in NODE_COLUMNS[:3]}
        changes.update({c: rows[c] for c in NUMERIC})
        changes["flagged"] = rows["flagged"]
        return self.apply(rows["resource_id"], changes)

    def with_resources(self, resource_ids: Sequence[str]) -> PoolEngine:
        """A new engine that also holds ``resource_ids`` (not in the registry yet) as blank rows: no
        state, no operator, zero capability, so in no pool; give their attributes with ``apply``.
        This engine's arrays are left as they were (``RegistryArrays.inserted``: new arrays with the
        new rows in their sorted places; the pools' masks likewise)."""
        reg, pos = self.reg.inserted(resource_ids)
        out = self.fork()
        out.reg = reg
        out.res = _resource_arrays(reg, registry_arrays.insert_at(self.res.flagged, pos, False),
                                   nodes=registry_arrays.insert_at(self.res.nodes, pos, -1))
        out.masks = registry_arrays.insert_at(self.masks, pos, False)
        return out

    def fork(self) -> PoolEngine:
        """A copy to change while readers keep this one: the pool list, codes, index, node levels and
        totals are its own (``set_pool``/``remove_pool`` change them in place); the large arrays stay
        shared until replaced."""
        out = copy.copy(self)
        out.sums = self.sums.copy()
        out.pools, out._codes, out._index = list(self.pools), list(self._codes), dict(self._index)
        out.node_levels = dict(self.node_levels)
        return out


# ================================================================ the shared engine of a process

class PoolCache:
    """One :class:`PoolEngine` of every pool, shared by the requests of a process (the API keeps one
    on ``app.state.pool_engine``) instead of loading the registry for every evaluation.

    Every change that can move a pool (a resource registered, changed, moved, transferred or
    imported, an operator admitted or suspended, a verification completed, a pool defined, a city
    loaded) appends to the audit log in its own transaction. ``get`` first counts the audit entries
    of those kinds above a base id (one index range scan); when the count grew it reads the new
    entries and brings the engine up to date:

    - resources (``resource`` entries, one-row imports, the members of a completed
      ``verification_test``): their current rows are read (``registry_arrays.read_rows``) and
      applied incrementally (``PoolEngine.apply``, O(changes x pools)); a resource the engine does
      not hold yet is inserted first (``PoolEngine.with_resources``);
    - pools: each changed pool's definition is read again and that pool alone re-evaluated, or dropped;
    - operators: when the set of admitted operators changed, every pool is re-evaluated on the
      arrays already held (no reload);
    - anything else (a city load, a bulk import of several rows, an operator's resources released
      or handed over, more than ``max_changes`` resources at once): the engine is rebuilt from the
      database (``PoolEngine.from_db``).

    What is read is the rows' state now, not the entries' contents, so the order in which entries
    commit does not matter and reading a row twice is harmless. The base follows the log's end minus
    ``window`` ids, so the scan stays short and an entry committed late with a lower id (concurrent
    transactions) is still seen: the cache keeps the ids of the entries it has taken into account
    above the base. ``max_age_s`` bounds how long one engine is used before a rebuild (which also
    drops the float drift of many incremental updates); that rebuild runs in the background while
    requests go on with the current engine (``_refresh_behind``). Changes made in another process are seen
    the same way. After any change ``get`` returns a new engine object (a shallow copy sharing the
    arrays), so a caller may keep something derived from the engine for as long as ``get`` returns
    the same object. Updates write into the arrays in place: a request reading them at that moment
    may see some of the changed rows old and some new.
    """

    WATCHED = ("resource", "resource_batch", "pool", "operator", "verification_test", "city")

    def __init__(self, window: int = 10_000, max_age_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, max_changes: int = 50_000):
        self.window, self.max_age_s, self.clock, self.max_changes = window, max_age_s, clock, max_changes
        self._lock = threading.Lock()
        self._freeze_due = False
        self._engine: PoolEngine | None = None
        self._base = 0
        self._ids: set[int] = set()     # watched entries above the base already in the engine
        self._built_at = 0.0
        self.refreshing: threading.Thread | None = None   # a rebuild of an old engine, under way
        self.builds = 0                 # full loads from the database
        self.updates = 0                # incremental updates
        #: what the last change did: {"kind": "build" | "update", "seconds", "read_s" (reading the
        #: changed rows), "entries", "resources", "inserted", "pools", "operators"}
        self.last: dict[str, Any] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._engine = None

    def _watched(self):
        return (audit_log.c.entity.in_(self.WATCHED),)

    def _move_base(self, end: int | None) -> None:
        if end is not None and end - self.window > self._base:
            self._base = int(end) - self.window
            self._ids = {i for i in self._ids if i > self._base}

    def _new_entries(self, conn: Connection) -> list | None:
        """The watched entries not yet in the engine ([] = none); None when the log disagrees with
        what the cache holds (entries it counted are gone: rebuild)."""
        end = select(func.max(audit_log.c.audit_id)).scalar_subquery()
        count, last = conn.execute(select(func.count(), end).where(
            audit_log.c.audit_id > self._base, *self._watched())).one()
        if int(count) == len(self._ids):
            self._move_base(last)
            return []
        if int(count) < len(self._ids):
            return None
        ids = conn.execute(select(audit_log.c.audit_id).where(audit_log.c.audit_id > self._base,
                                                              *self._watched())).scalars()
        new = sorted(i for i in ids if i not in self._ids)
        cols = (audit_log.c.audit_id, audit_log.c.entity, audit_log.c.entity_id, audit_log.c.action)
        return [r for i in range(0, len(new), registry_arrays.READ_CHUNK) for r in conn.execute(
            select(*cols).where(audit_log.c.audit_id.in_(new[i:i + registry_arrays.READ_CHUNK])))]

    def _load(self, conn: Connection) -> tuple[PoolEngine, int, set[int], float]:
        """A fresh engine from the database, with the audit position it reflects."""
        t0 = time.perf_counter()
        end = conn.execute(select(func.max(audit_log.c.audit_id))).scalar() or 0
        base = max(int(end) - self.window, 0)
        ids = set(conn.execute(select(audit_log.c.audit_id).where(audit_log.c.audit_id > base,
                                                                  *self._watched())).scalars())
        engine = PoolEngine.from_db(conn)   # read after the entries: a change in between is applied once more
        for column in CATEGORICAL:          # the label lookups of incremental updates, built once here
            engine.reg.encode(column, ())
        return engine, base, ids, time.perf_counter() - t0

    def _install(self, engine: PoolEngine, base: int, ids: set[int], seconds: float, kind: str) -> PoolEngine:
        self._engine, self._base, self._ids = engine, base, ids
        self._built_at = self.clock()
        self.builds += 1
        self._freeze_due = True   # what the build imported and made lives on: frozen once the lock is free
        self.last = {"kind": kind, "seconds": seconds}
        return engine

    def _freeze_if_built(self) -> None:
        """After a build was installed, freeze what lives on (core/memory.py) — outside ``_lock``, so
        the full collection it starts does not hold up every ``get``."""
        with self._lock:
            due, self._freeze_due = self._freeze_due, False
        if due:
            freeze_long_lived()

    def _build(self, conn: Connection) -> PoolEngine:
        return self._install(*self._load(conn), kind="build")

    def _refresh_behind(self, db) -> None:
        """Rebuild an engine that has only grown old in a thread of its own, on its own connection,
        while requests go on with the current one (kept up to date); installed when done, after
        which the entries committed meanwhile are applied to it like any others. At 1,000,000
        resources a build takes 5-12 s, which would otherwise fall on one user's request."""
        if self.refreshing is not None:
            return

        def run() -> None:
            try:
                with db.connect() as conn:
                    loaded = self._load(conn)
                with self._lock:
                    self._install(*loaded, kind="refresh")
                self._freeze_if_built()
            except Exception:   # the current engine stays; the next get tries again
                log.exception("pool engine: the rebuild in the background failed")
                with self._lock:
                    self._built_at = self.clock()
            finally:
                self.refreshing = None

        self.refreshing = threading.Thread(target=run, name="pool-engine-refresh", daemon=True)
        self.refreshing.start()

    def _update(self, conn: Connection, engine: PoolEngine, entries: list) -> PoolEngine | None:
        """``engine`` brought up to date with ``entries`` (a new object), or None to rebuild."""
        t0 = time.perf_counter()
        changed: set[str] = set()
        tests: set[str] = set()
        pool_ids: set[str] = set()
        operators_changed = False
        for e in entries:
            if e.entity == "resource":
                changed.add(e.entity_id)
            elif e.entity == "verification_test":
                if e.action == "verification.complete":
                    tests.add(e.entity_id)
            elif e.entity == "pool":
                pool_ids.add(e.entity_id)
            elif e.entity == "operator" and e.action != "operator.release_resources":
                operators_changed = True
            elif e.entity == "resource_batch" and e.entity_id.partition("..")[0] == e.entity_id.partition("..")[2]:
                changed.add(e.entity_id.partition("..")[0])     # a one-row import (a single registration)
            else:
                return None     # a city load, a bulk import, resources released or handed over
        if tests:
            for result in conn.execute(select(verification_tests.c.result)
                                       .where(verification_tests.c.test_id.in_(sorted(tests)))).scalars():
                changed.update((result or {}).get("members") or [])
        if len(changed) > self.max_changes:
            return None
        rows = registry_arrays.read_rows(conn, sorted(changed)) if changed else None
        read_s = time.perf_counter() - t0
        out = engine.fork()
        if operators_changed:
            admitted = set(conn.execute(select(operators.c.operator_id)
                                        .where(operators.c.state == OperatorState.ADMITTED.value)).scalars())
            if admitted != out.admitted:
                out.set_admitted_operators(admitted)
        if pool_ids:
            defs = {r["pool_id"]: r for r in conn.execute(
                select(pools, grid_nodes.c.level).select_from(pools.join(grid_nodes, grid_nodes.c.node_id
                                                                         == pools.c.node_id))
                .where(pools.c.pool_id.in_(sorted(pool_ids)))).mappings()}
            for pid in sorted(pool_ids):
                if pid in defs:
                    out.node_levels[defs[pid]["node_id"]] = defs[pid]["level"]
                    out.set_pool(_as_pool(_row(defs[pid])))
                elif pid in out._index:
                    out.remove_pool(pid)
        inserted = 0
        if rows is not None and rows["resource_id"]:
            new = [rid for rid, i in zip(rows["resource_id"], out.reg.index_of(rows["resource_id"]), strict=True)
                   if i < 0]
            if new:
                out = out.with_resources(new)
                inserted = len(new)
            try:
                out.apply_rows(rows)
            except InvalidInput:
                return None     # e.g. a transformer area the engine does not know: the grid changed
        self.updates += 1
        self.last = {"kind": "update", "seconds": time.perf_counter() - t0, "read_s": read_s, "entries": len(entries),
                     "resources": len(rows["resource_id"]) if rows else 0, "inserted": inserted,
                     "pools": len(pool_ids), "operators": operators_changed}
        return out

    def registry(self, conn: Connection) -> RegistryArrays:
        """The registry arrays of the current engine (every resource, all states), for summaries."""
        return self.get(conn).reg

    def get(self, conn: Connection, pool_ids: Sequence[str] = ()) -> PoolEngine:
        """The current engine: updated first if the database changed, rebuilt if it lacks one of
        ``pool_ids`` or is older than ``max_age_s``."""
        engine = self._get(conn, pool_ids)
        self._freeze_if_built()
        return engine

    def _get(self, conn: Connection, pool_ids: Sequence[str]) -> PoolEngine:
        with self._lock:
            engine = self._engine
            if engine is None:
                return self._build(conn)
            if self.clock() - self._built_at > self.max_age_s:
                self._refresh_behind(conn.engine)
            entries = self._new_entries(conn)
            if entries is None:
                return self._build(conn)
            if entries:
                updated = self._update(conn, engine, entries)
                if updated is None:
                    return self._build(conn)
                self._engine = engine = updated
                self._ids.update(e.audit_id for e in entries)
            if any(pid not in engine._index for pid in pool_ids):
                engine = self._build(conn)
            return engine


# ================================================================ evaluation

def evaluate(source: Connection | RegistryArrays | PoolEngine, pool_ids: Sequence[str] | None = None, *,
             pools: Sequence[Pool] | None = None, actor: Actor | None = None, members_limit: int = 0,
             members_offset: int = 0, reg: RegistryArrays | None = None) -> list[dict]:
    """Totals of pools: adjustable up/down kW, energy for the pool's duration, member count.

    ``source`` is a database connection (definitions, flags and admitted operators are read from
    it; ``actor`` limits the pools to its scope), a ``RegistryArrays`` (give ``pools``; every
    operator counts, nothing is flagged) or a live ``PoolEngine``. With ``members_limit`` > 0 each
    result also holds a page of member ids under ``members``. ``reg``: registry arrays already
    loaded from this connection (saves reading a million rows per call); they are not modified.
    """
    if isinstance(source, PoolEngine):
        engine = source
    elif isinstance(source, RegistryArrays):
        if pools is None:
            raise InvalidInput(Violation("pools", "give the pool definitions to evaluate arrays", None))
        engine = PoolEngine(source, pools)
    else:
        engine = PoolEngine.from_db(source, pool_ids, actor, reg=reg)
    if pool_ids is None and pools is not None:
        pool_ids = [p.pool_id for p in pools]
    out = engine.totals(pool_ids)
    if members_limit:
        for r in out:
            r["members"] = engine.members(r["pool_id"], members_limit, members_offset)
    return out


def members(source: Connection | PoolEngine, pool_id: str, limit: int = 50, offset: int = 0,
            actor: Actor | None = None, reg: RegistryArrays | None = None) -> dict:
    """A page of a pool's member resource ids (in id order) with the total count."""
    engine = source if isinstance(source, PoolEngine) else PoolEngine.from_db(source, [pool_id], actor, reg=reg)
    return engine.members(pool_id, limit, offset)
