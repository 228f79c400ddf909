"""The synthetic Guangzhou city: ``generate_city`` writes grid, operators, owners, sites, resources and profiles.

Same (n_resources, seed, year) -> byte-identical files. Everything is
vectorised over resources (numpy + pyarrow); the only Python loops run over
districts, resource groups, archetypes and days. See ``docs/city-files.md``
for every column, the size distributions and their basis, and the sign
convention.

Random streams are independent per concern (SeedSequence([seed, stream])):
the archetypes depend only on (seed, year), so cities of different sizes
share the same weather and calendar.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from openvpp.core.errors import InvalidInput, Violation
from openvpp.model.columns import OPERATOR_COLUMNS, OWNER_COLUMNS, RESOURCE_COLUMNS, SITE_COLUMNS, names
from openvpp.model.enums import ControlProtocol, OwnerKind, ResourceType, ResponseMode
from openvpp.sim import guangzhou as gz
from openvpp.sim.archetypes import ARCHETYPES, build_archetypes
from openvpp.sim.catalogue import (
    GROUPS,
    OPERATOR_INDEX,
    OPERATORS,
    REVENUE_SHARE,
    RING,
    SITE_CATEGORIES,
    SITE_INDEX,
    TYPE_SHARES,
    Group,
    check_catalogue,
    credit_code,
)
from openvpp.sim.grid import allocate, build_grid, ordinal_within

GENERATOR_VERSION = "1.0"
MIN_RESOURCES, MAX_RESOURCES = 10, 20_000_000
FILES = ("grid.csv", "operators.csv", "owners.csv", "sites.csv", "resources.csv", "profiles.parquet",
         "archetypes.csv", "city.json")

RTYPES = list(ResourceType)
ARCH_IDS = [a.archetype_id for a, _ in ARCHETYPES]
PROTOCOLS = [p.value for p in ControlProtocol]
MODES = [m.value for m in ResponseMode]
OWNER_KINDS = list(OwnerKind)
EPOCH = date(1970, 1, 1)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class CitySummary:
    out_dir: Path
    n_resources: int
    seed: int
    year: int
    rows: dict[str, int]                      # rows per file (profiles.parquet: archetype x slot rows)
    per_type: dict[str, dict[str, float]]     # count, capacity_kw, adjustable_up_kw, adjustable_down_kw
    grid_levels: dict[str, int]
    seconds: float = field(compare=False, default=0.0)


# --------------------------------------------------------------------------- small vectorised helpers

def _choice(rng: np.random.Generator, mapping: dict, vocab: list, n: int) -> np.ndarray:
    """Codes into ``vocab`` drawn with the probabilities of ``mapping``; the key "" maps to -1."""
    keys = list(mapping)
    p = np.asarray([mapping[k] for k in keys], dtype=float)
    codes = np.asarray([vocab.index(k) if k != "" else -1 for k in keys], dtype=np.int64)
    return codes[rng.choice(len(keys), size=n, p=p / p.sum())]


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _take(labels: list[str], codes: np.ndarray) -> pa.Array:
    return pa.array(labels, pa.string()).take(pa.array(np.asarray(codes, dtype=np.int64)))


def _labelled(labels: list[str], codes: np.ndarray, numbers: np.ndarray, sep: str = " ") -> pa.Array:
    return pc.binary_join_element_wise(_take(labels, codes), pc.cast(pa.array(numbers), pa.string()), sep)


def _optional(codes: np.ndarray, labels: pa.Array) -> pa.Array:
    """labels[codes] with null where code < 0."""
    return labels.take(pa.array(np.where(codes < 0, 0, codes), mask=codes < 0))


def _district_p(weights: str | dict[str, float], ring: tuple[float, float, float]) -> np.ndarray:
    if isinstance(weights, dict):
        w = np.array([weights.get(d.code, 0.0) for d in gz.DISTRICTS])
    else:
        pop = np.array([d.population_10k for d in gz.DISTRICTS])
        gdp = np.array([d.gdp_100m_yuan for d in gz.DISTRICTS])
        w = {"pop": pop / pop.sum(), "gdp": gdp / gdp.sum(), "base": np.asarray(gz.district_weights())}[weights]
        w = w * np.array([ring[RING[d.ring]] for d in gz.DISTRICTS])
    return w / w.sum()


# --------------------------------------------------------------------------- the builder


class _City:
    """Struct-of-arrays city under construction; sites and resources are appended per group."""

    def __init__(self, n: int, seed: int, year: int, peak: np.ndarray):
        self.n, self.year, self.peak = n, year, peak
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 303]))
        self.site_cat: list[np.ndarray] = []
        self.site_district: list[np.ndarray] = []
        self.n_sites = 0
        self.res: dict[str, list[np.ndarray]] = {}

    # ---- sites
    def new_sites(self, cat: int, n: int) -> np.ndarray:
        c = SITE_CATEGORIES[cat]
        self.site_cat.append(np.full(n, cat, dtype=np.int16))
        self.site_district.append(self.rng.choice(len(gz.DISTRICTS), n, p=_district_p(c.weights, c.ring)))
        first, self.n_sites = self.n_sites, self.n_sites + n
        return np.arange(first, self.n_sites)

    def sites_of(self, cats: list[int]) -> np.ndarray:
        if not self.site_cat:
            return np.zeros(0, dtype=np.int64)
        all_cat = np.concatenate(self.site_cat)
        return np.flatnonzero(np.isin(all_cat, cats))

    def place(self, g: Group, m: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Sites of ``m`` resources of ``g``; also the local site index for per-site choices."""
        rng = self.rng
        if g.site.startswith("host:"):
            cats = [SITE_INDEX[k] for k in g.site[5:].split("+")]
            hosts = self.sites_of(cats)
            if len(hosts) == 0:                      # tiny city: no host yet, the group brings its own sites
                return self.new_sites(cats[0], m), None
            if g.one_per_host and m <= len(hosts):
                return rng.choice(hosts, m, replace=False), None
            k = max(1, round(g.host_share * len(hosts)))
            eligible = rng.choice(hosts, min(k, len(hosts)), replace=False)
            w = rng.lognormal(0.0, 0.8, len(eligible))
            return eligible[rng.choice(len(eligible), m, p=w / w.sum())], None
        cat = SITE_INDEX[g.site]
        if g.per_site <= 1:
            return self.new_sites(cat, m), None
        n_new = max(1, round(m / g.per_site))
        w = rng.lognormal(0.0, 0.7, n_new)
        _, local = np.unique(rng.choice(n_new, m, p=w / w.sum()), return_inverse=True)
        sites = self.new_sites(cat, int(local.max()) + 1)
        return sites[local], local

    # ---- resources
    def add_group(self, gi: int, g: Group, m: int) -> None:
        if m == 0:
            return
        rng = self.rng
        site, local = self.place(g, m)
        cap = g.size.draw(rng, m)
        if g.per_site_choice and local is not None:
            n_loc = int(local.max()) + 1
            arch = _choice(rng, g.archetypes, ARCH_IDS, n_loc)[local]
            op = _choice(rng, g.operators, list(OPERATOR_INDEX), n_loc)[local]
        else:
            arch = _choice(rng, g.archetypes, ARCH_IDS, m)
            op = _choice(rng, g.operators, list(OPERATOR_INDEX), m)
        if g.core_archetype:
            core = np.array([d.ring == "core" for d in gz.DISTRICTS])[np.concatenate(self.site_district)[site]]
            arch[core] = ARCH_IDS.index(g.core_archetype)
        mode = _choice(rng, g.modes, MODES, m)
        auto = rng.lognormal(np.log(g.latency_s), 0.5, m)
        semi = rng.uniform(300.0, 900.0, m)
        manual = rng.uniform(1800.0, 7200.0, m)
        latency = np.select([mode == MODES.index("automatic"), mode == MODES.index("semi_automatic")],
                            [auto, semi], manual)
        util = np.clip(rng.lognormal(0.0, 0.1, m), 0.8, 1.2)
        util = np.minimum(util, 0.95 / self.peak[arch])
        since = min(g.since, self.year - 1)
        start = (date(since, 1, 1) - EPOCH).days
        span = (date(self.year, 1, 1) - date(since, 1, 1)).days
        commissioned = start + np.floor(np.sqrt(rng.random(m)) * span).astype(np.int64)
        owner_policy = {"site": 0, "household": 1}.get(g.owner, 2)
        durations = np.asarray(list(g.duration_h), dtype=float)
        p_dur = np.asarray(list(g.duration_h.values()), dtype=float)
        cols = {
            "group": np.full(m, gi, dtype=np.int16),
            "rtype": np.full(m, RTYPES.index(g.rtype), dtype=np.int8),
            "site": site.astype(np.int64),
            "owner_policy": np.full(m, owner_policy, dtype=np.int8),
            "capacity_kw": cap,
            "capacity_kva": np.round(cap * g.kva_factor, 1),
            "archetype": arch,
            "scale_kw": np.round(cap * util, 3),
            "operator": op,
            "protocol": _choice(rng, g.protocols, PROTOCOLS, m),
            "mode": mode,
            "latency_s": np.round(latency, 1),
            "up_kw": np.minimum(np.round(cap * rng.uniform(*g.up, m), 3), cap),
            "down_kw": np.minimum(np.round(cap * rng.uniform(*g.down, m), 3), cap),
            "duration_h": durations[rng.choice(len(durations), m, p=p_dur / p_dur.sum())],
            "commissioned": commissioned,
        }
        for k, v in cols.items():
            self.res.setdefault(k, []).append(v)

    def finish_resources(self) -> dict[str, np.ndarray]:
        r = {k: np.concatenate(v) for k, v in self.res.items()}
        r["noise_seed"] = self.rng.integers(0, 2**31 - 1, len(r["site"]), dtype=np.int64)
        return r


def _type_counts(n: int) -> np.ndarray:
    """Resources per type by share (largest remainder); every type gets at least one (n >= 10)."""
    counts = allocate(n, np.array([TYPE_SHARES[t] for t in RTYPES]), minimum=0)
    for i in np.flatnonzero(counts == 0):      # at most 10 steps; the largest type always has >= 2 here
        counts[np.argmax(counts)] -= 1
        counts[i] = 1
    return counts


def _owners(c: _City, res: dict[str, np.ndarray], site_cat: np.ndarray
            ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Owners of sites (one per site, or shared pools) and of resources; returns site_owner, owners, labels."""
    rng = c.rng
    kinds: list[np.ndarray] = []
    labels_of: list[np.ndarray] = []
    labels: list[str] = []
    n_owners = 0
    pools: dict[str, np.ndarray] = {}

    def add(kind: OwnerKind, label: str, n: int) -> np.ndarray:
        nonlocal n_owners
        if label not in labels:
            labels.append(label)
        kinds.append(np.full(n, OWNER_KINDS.index(kind), dtype=np.int8))
        labels_of.append(np.full(n, labels.index(label), dtype=np.int16))
        first, n_owners = n_owners, n_owners + n
        return np.arange(first, n_owners)

    def pool(key: str, n_sites: int) -> np.ndarray:
        if key not in pools:
            cat = next(c for c in SITE_CATEGORIES if c.pool == key)
            k = cat.pool_size or max(1, -(-n_sites // cat.pool_per))
            pools[key] = add(cat.owner_kind, cat.owner_label, k)
        return pools[key]

    site_owner = np.empty(len(site_cat), dtype=np.int64)
    for ci, cat in enumerate(SITE_CATEGORIES):
        sites = np.flatnonzero(site_cat == ci)
        if len(sites) and cat.pool:
            members = pool(cat.pool, len(sites))
            site_owner[sites] = members[rng.integers(0, len(members), len(sites))]
        elif len(sites):
            site_owner[sites] = add(cat.owner_kind, cat.owner_label, len(sites))

    owner = site_owner[res["site"]]
    house = np.flatnonzero(res["owner_policy"] == 1)
    owner[house] = add(OwnerKind.RESIDENTIAL, "Household", len(house))
    for gi, g in enumerate(GROUPS):
        if g.owner.startswith("pool:"):
            sel = np.flatnonzero(res["group"] == gi)
            if len(sel):
                members = pool(g.owner[5:], 1)
                owner[sel] = members[rng.integers(0, len(members), len(sel))]
    res["owner"] = owner
    owners = {"kind": np.concatenate(kinds), "label": np.concatenate(labels_of)}
    return site_owner, owners, labels


# --------------------------------------------------------------------------- tables


def _operators_table() -> pa.Table:
    cols = {
        "operator_id": [o.operator_id for o in OPERATORS],
        "name": [o.name for o in OPERATORS],
        "name_zh": [o.name_zh for o in OPERATORS],
        "kind": [o.kind.value for o in OPERATORS],
        "credit_code": [credit_code(o.division, 100 + i) for i, o in enumerate(OPERATORS)],
        "tss_endpoint": [f"https://tss.{o.operator_id.lower()}.example.com/api" for o in OPERATORS],
        "state": [o.state.value for o in OPERATORS],
    }
    assert list(cols) == names(OPERATOR_COLUMNS)
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})


def _archetypes_table() -> pa.Table:
    arch = [a for a, _ in ARCHETYPES]
    return pa.table({
        "archetype_id": [a.archetype_id for a in arch],
        "resource_type": [a.resource_type.value for a in arch],
        "pattern": [a.pattern for a in arch],
        "description": [a.description for a in arch],
        "source": [a.source for a in arch],
    })


def _profiles_table(matrix: np.ndarray, ts_utc: np.ndarray) -> pa.Table:
    n_arch, n_slots = matrix.shape
    ts = pa.array(np.tile(ts_utc.astype("datetime64[ms]"), n_arch), pa.timestamp("ms", tz="UTC"))
    ids = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(n_arch, dtype=np.int32), n_slots)),
                                         pa.array(ARCH_IDS, pa.string())).cast(pa.string())
    return pa.table({"archetype_id": ids, "ts": ts, "value": pa.array(matrix.ravel(), pa.float32())})


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(n)))


def _validate(out_dir: Path, n_resources: int, seed: int, year: int) -> None:
    problems = []
    if not isinstance(n_resources, int | np.integer) or not MIN_RESOURCES <= n_resources <= MAX_RESOURCES:
        problems.append(Violation("n_resources", f"must be an integer in {MIN_RESOURCES}..{MAX_RESOURCES} "
                                  "(at least one resource per type)", n_resources))
    if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
        problems.append(Violation("seed", "must be a non-negative integer", seed))
    if not isinstance(year, int | np.integer) or not 2000 <= year <= 2100:
        problems.append(Violation("year", "must be an integer in 2000..2100", year))
    if out_dir.exists() and not out_dir.is_dir():
        problems.append(Violation("out_dir", "must be a directory", str(out_dir)))
    if problems:
        raise InvalidInput(problems)


def generate_city(out_dir: Path, n_resources: int, seed: int, year: int = 2025,
                  progress: Progress | None = None) -> CitySummary:
    """Write a reproducible synthetic Guangzhou into ``out_dir`` and return what it holds.

    Parameters
    ----------
    out_dir : Path
        Directory to write (created if missing). Its city files are replaced
        together at the end; nothing is written when the arguments are invalid.
    n_resources : int
        Number of flexible resources, 10..20,000,000 (all 10 types are present).
    seed : int
        Seed of every random draw; same (n_resources, seed, year) -> byte-identical files.
    year : int
        Local calendar year (Asia/Shanghai) of the 15-min profiles.
    progress : callable(stage: str, fraction: float), optional
        Called as work advances; ``fraction`` is the overall share done, 0..1, non-decreasing.

    Returns
    -------
    CitySummary
    """
    out_dir = Path(out_dir)
    _validate(out_dir, n_resources, seed, year)
    n_resources, seed, year = int(n_resources), int(seed), int(year)
    check_catalogue()
    t0 = time.perf_counter()

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, min(max(fraction, 0.0), 1.0))

    report("archetypes", 0.0)
    arch, matrix, yr = build_archetypes(year, seed, lambda f: report("archetypes", 0.2 * f))
    peak = np.abs(matrix).max(axis=1).astype(float)

    # resources by type and group
    report("resources", 0.2)
    city = _City(n_resources, seed, year, peak)
    type_counts = _type_counts(n_resources)
    order = sorted(range(len(GROUPS)), key=lambda i: GROUPS[i].site.startswith("host:"))
    group_counts = np.zeros(len(GROUPS), dtype=np.int64)
    for ti, rt in enumerate(RTYPES):
        members = [i for i, g in enumerate(GROUPS) if g.rtype == rt]
        group_counts[members] = allocate(int(type_counts[ti]), np.array([GROUPS[i].share for i in members]))
    for k, gi in enumerate(order):
        city.add_group(gi, GROUPS[gi], int(group_counts[gi]))
        report("resources", 0.2 + 0.2 * (k + 1) / len(order))
    res = city.finish_resources()
    site_cat = np.concatenate(city.site_cat)
    site_district = np.concatenate(city.site_district)
    n_sites = len(site_cat)

    # owners, grid, placement
    report("owners", 0.4)
    site_owner, owners, owner_labels = _owners(city, res, site_cat)
    report("grid", 0.45)
    grid_rng = np.random.default_rng(np.random.SeedSequence([seed, 404]))
    site_kw = np.bincount(res["site"], weights=res["capacity_kw"], minlength=n_sites)
    grid = build_grid(grid_rng, n_resources, site_district, site_kw)

    # final orders: sites follow the grid, resources their commissioning date
    site_order = np.lexsort((city.rng.random(n_sites), grid.site_ta))
    site_rank = np.empty(n_sites, dtype=np.int64)
    site_rank[site_order] = np.arange(n_sites)
    res["site"] = site_rank[res["site"]]
    site_cat, site_district, site_owner = site_cat[site_order], site_district[site_order], site_owner[site_order]
    site_ta = grid.site_ta[site_order]
    res_order = np.lexsort((city.rng.random(n_resources), res["commissioned"]))
    res = {k: v[res_order] for k, v in res.items()}

    # owner's operator: the operator of its first resource
    owner_op = np.full(len(owners["kind"]), -1, dtype=np.int64)
    first_owner, first_idx = np.unique(res["owner"], return_index=True)
    owner_op[first_owner] = res["operator"][first_idx]

    # ---- tables
    report("tables", 0.55)
    op_ids = pa.array([o.operator_id for o in OPERATORS], pa.string())
    rw = _width(n_resources, 7)
    site_ids = _ids("ST", np.arange(1, n_sites + 1), _width(n_sites, 7))
    owner_ids = _ids("OW", np.arange(1, len(owner_op) + 1), _width(len(owner_op), 7))
    meter_no = (np.arange(n_resources, dtype=np.int64) * 48271 + seed % 10**8) % 10**8

    nd = len(gz.DISTRICTS)
    site_labels = [f"{d.name} {c.label}" for c in SITE_CATEGORIES for d in gz.DISTRICTS]
    site_key = site_cat.astype(np.int64) * nd + site_district
    site_names = _labelled(site_labels, site_key, ordinal_within(site_key))
    ordinal = ordinal_within(res["site"] * len(GROUPS) + res["group"])
    resources = {
        "resource_id": _ids("R", np.arange(1, n_resources + 1), rw),
        "name": pc.binary_join_element_wise(site_names.take(pa.array(res["site"])),
                                            _labelled([g.label for g in GROUPS], res["group"], ordinal), ", "),
        "resource_type": _take([t.value for t in RTYPES], res["rtype"]),
        "operator_id": _optional(res["operator"], op_ids),
        "owner_id": owner_ids.take(pa.array(res["owner"])),
        "site_id": site_ids.take(pa.array(res["site"])),
        "ta_id": grid.ta_ids.take(pa.array(site_ta[res["site"]])),
        "capacity_kw": pa.array(res["capacity_kw"]),
        "capacity_kva": pa.array(res["capacity_kva"]),
        "profile_archetype": _take(ARCH_IDS, res["archetype"]),
        "profile_scale_kw": pa.array(res["scale_kw"]),
        "noise_seed": pa.array(res["noise_seed"]),
        "latency_s": pa.array(res["latency_s"]),
        "response_mode": _take(MODES, res["mode"]),
        "adjustable_up_kw": pa.array(res["up_kw"]),
        "adjustable_down_kw": pa.array(res["down_kw"]),
        "adjustable_duration_h": pa.array(res["duration_h"]),
        "control_protocol": _take(PROTOCOLS, res["protocol"]),
        "meter_id": _ids("M4401", meter_no, 8),
        "commissioned_on": pa.array(res["commissioned"].astype(np.int32)).view(pa.date32()),
    }
    assert list(resources) == names(RESOURCE_COLUMNS)

    site_lat = np.round(grid.ta_lat[site_ta] + city.rng.normal(0, 0.002, n_sites), 5)
    site_lon = np.round(grid.ta_lon[site_ta] + city.rng.normal(0, 0.002, n_sites), 5)
    sites = {
        "site_id": site_ids,
        "name": site_names,
        "ta_id": grid.ta_ids.take(pa.array(site_ta)),
        "owner_id": owner_ids.take(pa.array(site_owner)),
        "lat": pa.array(site_lat),
        "lon": pa.array(site_lon),
    }
    assert list(sites) == names(SITE_COLUMNS)

    kinds = owners["kind"].astype(np.int64)
    share_rng = np.random.default_rng(np.random.SeedSequence([seed, 505]))
    shares = np.zeros(len(kinds))
    for ki, kind in enumerate(OWNER_KINDS):
        sel = kinds == ki
        shares[sel] = share_rng.choice(np.asarray(REVENUE_SHARE[kind]), int(sel.sum()))
    owner_table = {
        "owner_id": owner_ids,
        "name": _labelled(owner_labels, owners["label"], ordinal_within(owners["label"].astype(np.int64))),
        "kind": _take([k.value for k in OWNER_KINDS], kinds),
        "operator_id": _optional(owner_op, op_ids),
        "revenue_share": pa.array(shares),
    }
    assert list(owner_table) == names(OWNER_COLUMNS)

    report("tables", 0.65)
    tables = {
        "grid.csv": grid.table,
        "operators.csv": _operators_table(),
        "owners.csv": pa.table(owner_table),
        "sites.csv": pa.table(sites),
        "resources.csv": pa.table(resources),
        "archetypes.csv": _archetypes_table(),
    }

    per_type = {}
    for ti, rt in enumerate(RTYPES):
        sel = res["rtype"] == ti
        per_type[rt.value] = {
            "count": int(sel.sum()),
            "capacity_kw": round(float(res["capacity_kw"][sel].sum()), 3),
            "adjustable_up_kw": round(float(res["up_kw"][sel].sum()), 3),
            "adjustable_down_kw": round(float(res["down_kw"][sel].sum()), 3),
        }
    rows = {name: t.num_rows for name, t in tables.items()}
    rows["profiles.parquet"] = int(matrix.size)
    meta = _metadata(n_resources, seed, year, rows, per_type, grid.levels, yr.calendar_source, matrix.shape)
    meta["dedicated_transformer_areas"] = grid.n_dedicated

    _write_all(out_dir, tables, matrix, yr.ts_utc, meta, lambda f: report("writing", 0.65 + 0.35 * f))
    report("done", 1.0)
    return CitySummary(out_dir, n_resources, seed, year, rows, per_type, grid.levels,
                       seconds=time.perf_counter() - t0)


def _metadata(n: int, seed: int, year: int, rows: dict, per_type: dict, levels: dict, calendar: str,
              shape: tuple[int, int]) -> dict:
    import demandlib
    import pvlib

    import openvpp

    totals = {k: round(sum(v[k] for v in per_type.values()), 3)
              for k in ("capacity_kw", "adjustable_up_kw", "adjustable_down_kw")}
    return {
        "city_id": f"GZ-{year}-n{n}-s{seed}",
        "generator": "openvpp.sim.city",
        "generator_version": GENERATOR_VERSION,
        "openvpp_version": getattr(openvpp, "__version__", ""),
        "seed": seed,
        "n_resources": n,
        "year": year,
        "timezone": "Asia/Shanghai",
        "slot_minutes": 15,
        "n_slots": shape[1],
        "n_archetypes": shape[0],
        "calendar": calendar,
        "libraries": {"demandlib": demandlib.__version__, "pvlib": pvlib.__version__,
                      "numpy": np.__version__, "pyarrow": pa.__version__},
        "sign_convention": "net load at the meter: consumption positive, generation/discharge negative; "
                           "adjustable_up = can raise net load (valley filling, PV curtailment), "
                           "adjustable_down = can lower net load (peak shaving, discharge)",
        "rows": rows,
        "grid_levels": levels,
        "per_type": per_type,
        "totals": totals,
    }


def _write_all(out_dir: Path, tables: dict[str, pa.Table], matrix: np.ndarray, ts_utc: np.ndarray,
               meta: dict, progress: Callable[[float], None]) -> None:
    """Write every file into a scratch directory next to ``out_dir``, then move them in together."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".city-", dir=out_dir))
    try:
        weights = {name: max(t.num_rows, 1) for name, t in tables.items()}
        weights["profiles.parquet"] = matrix.size // 4
        total, done = sum(weights.values()), 0
        for name, table in tables.items():
            pacsv.write_csv(table, scratch / name)
            done += weights[name]
            progress(done / total)
        pq.write_table(_profiles_table(matrix, ts_utc), scratch / "profiles.parquet", compression="zstd")
        (scratch / "city.json").write_text(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        progress(1.0)
        for name in FILES:
            os.replace(scratch / name, out_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
