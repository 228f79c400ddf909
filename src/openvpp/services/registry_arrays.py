"""The resource registry as struct-of-arrays in memory: one column per attribute, one row per resource.

Aggregations, pools and live totals over a million resources run on these arrays with numpy
(``kernels.aggregate``), not on a million Python objects and not on a round trip per query.
Categorical columns are dictionary-encoded: ``codes[name]`` (int32, -1 = none) and
``categories[name]`` (the labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, select

from openvpp.core.errors import InvalidInput, Violation
from openvpp.kernels.aggregate import group_sum, group_sum_2d
from openvpp.store import bulk
from openvpp.store.schema import grid_nodes, resources

CATEGORICAL = ("district_id", "substation_id", "feeder_id", "ta_id", "resource_type", "operator_id",
               "owner_id", "response_mode", "verified_grade", "control_protocol", "state")
NUMERIC = ("capacity_kw", "adjustable_up_kw", "adjustable_down_kw", "adjustable_duration_h", "latency_s",
           "verified_up_kw", "verified_down_kw", "verified_latency_s")
#: names accepted by ``aggregate(by=...)`` → categorical column
LEVELS = {"district": "district_id", "substation": "substation_id", "feeder": "feeder_id",
          "transformer_area": "ta_id", "type": "resource_type", "operator": "operator_id",
          "owner": "owner_id", "response_mode": "response_mode", "grade": "verified_grade",
          "protocol": "control_protocol", "state": "state"}

SELECT = (
    "SELECT r.resource_id, g.district_id, g.substation_id, g.feeder_id, r.ta_id, r.resource_type, "
    "r.operator_id, r.owner_id, r.response_mode, r.verified_grade, r.control_protocol, r.state, "
    "r.capacity_kw, r.adjustable_up_kw, r.adjustable_down_kw, r.adjustable_duration_h, r.latency_s, "
    "r.verified_up_kw, r.verified_down_kw, r.verified_latency_s "
    "FROM resources r JOIN grid_nodes g ON g.node_id = r.ta_id ORDER BY r.resource_id"
)


@dataclass
class RegistryArrays:
    resource_id: np.ndarray                      # object array of ids, sorted
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[str, list] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)   # float64, NaN = unknown
    #: column → (number of categories, ``label_arrays``)
    _ranks: dict[str, tuple[int, tuple]] = field(default_factory=dict, repr=False, compare=False)
    #: column → {label: code}, kept by ``encode``
    _lookup: dict[str, dict] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.resource_id)

    def index_of(self, ids: list[str]) -> np.ndarray:
        idx = np.searchsorted(self.resource_id, np.asarray(ids, dtype=object))
        idx = np.clip(idx, 0, max(self.n - 1, 0))
        found = self.resource_id[idx] == np.asarray(ids, dtype=object) if self.n else np.zeros(len(ids), bool)
        return np.where(found, idx, -1)

    def code_of(self, column: str, label: str | None) -> int:
        try:
            return self.categories[column].index(label)
        except ValueError:
            return -2  # matches nothing

    def matching(self, **labels: str | None) -> np.ndarray:
        """bool (n,): the rows whose categorical ``column`` holds ``label`` for every ``column=label``
        given; a None (or empty) label sets no condition, an unknown label matches nothing."""
        mask = np.ones(self.n, bool)
        for column, label in labels.items():
            if label not in (None, ""):
                mask &= self.codes[column] == self.code_of(column, label)
        return mask

    def encode(self, column: str, labels: Sequence) -> tuple[np.ndarray, bool]:
        """int32 codes of ``labels`` in categorical ``column`` (None or "" = -1), appending the labels
        the column has not seen yet to its categories (existing codes keep their meaning). Returns
        the codes and whether the column grew. The label → code lookup is kept between calls."""
        cats = self.categories[column]
        lookup = self._lookup.get(column)
        if lookup is None:
            lookup = self._lookup[column] = {lb: i for i, lb in enumerate(cats)}
        elif len(lookup) < len(cats):
            lookup.update((cats[i], i) for i in range(len(lookup), len(cats)))
        grew = False
        out = np.empty(len(labels), np.int32)
        for k, lb in enumerate(labels):
            if lb is None or lb == "":
                out[k] = -1
                continue
            code = lookup.get(lb)
            if code is None:
                code = lookup[lb] = len(cats)
                cats.append(lb)
                grew = True
            out[k] = code
        return out, grew

    def inserted(self, resource_ids: Sequence[str]) -> tuple[RegistryArrays, np.ndarray]:
        """New arrays that also hold ``resource_ids`` (none of them held yet) in their sorted places,
        as blank rows: no category (-1), zero for the declared numbers, NaN for the verified ones.
        Returns them and ``pos`` (sorted, one per new id): each new row goes before the old row
        ``pos[j]`` (``insert_at``). The categories and their lookups are shared, not copied (they only
        ever grow); every array is new, so a reader of these arrays is not disturbed."""
        new = np.array(sorted(set(resource_ids)), dtype=object)
        held = self.index_of(list(new)) >= 0 if len(new) else np.zeros(0, bool)
        if held.any():
            raise InvalidInput(Violation("resource_ids", "resource is already in the registry",
                                         [str(r) for r in new[held]][:10]))
        pos = np.searchsorted(self.resource_id, new)
        out = RegistryArrays(insert_at(self.resource_id, pos, new),
                             codes={c: insert_at(a, pos, -1) for c, a in self.codes.items()},
                             categories=self.categories,
                             values={c: insert_at(a, pos, np.nan if c.startswith("verified_") else 0.0)
                                     for c, a in self.values.items()})
        out._lookup, out._ranks = self._lookup, self._ranks    # both keyed to the shared categories
        return out, pos

    def label_arrays(self, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(labels, ranks, in_order)`` of a categorical column, each with a last slot for "none"
        (code -1): the labels by code (object), the rank of each code's label in sorted order (int,
        "none" last) and the labels in that order. Kept until the column gains a category (labels are
        only ever appended), so grouping in label order costs one gather per call."""
        cats = self.categories[column]
        hit = self._ranks.get(column)
        if hit is None or hit[0] != len(cats):
            labels = np.array(cats + [None], dtype=object)
            order = sorted(range(len(cats)), key=cats.__getitem__) + [len(cats)]
            ranks = np.empty(len(cats) + 1, np.int64)
            ranks[order] = np.arange(len(cats) + 1)
            hit = self._ranks[column] = (len(cats), (labels, ranks, labels[order]))
        return hit[1]

    @classmethod
    def from_arrow(cls, t: pa.Table) -> RegistryArrays:
        out = cls(np.asarray(t.column("resource_id").to_pylist(), dtype=object))
        for name in CATEGORICAL:
            enc = pc.dictionary_encode(t.column(name)).combine_chunks()
            idx = enc.indices.to_numpy(zero_copy_only=False)
            nulls = np.asarray(pc.is_null(enc.indices).to_numpy(zero_copy_only=False), bool)
            out.codes[name] = np.where(nulls, -1, np.nan_to_num(idx, nan=-1)).astype(np.int32)
            out.categories[name] = enc.dictionary.to_pylist()
        for name in NUMERIC:
            col = pc.cast(t.column(name), pa.float64())
            out.values[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        return out


def insert_at(arr: np.ndarray, pos: np.ndarray, fill) -> np.ndarray:
    """A copy of ``arr`` with ``len(pos)`` entries inserted on its last axis, each before the old index
    ``pos[j]`` (sorted; equal positions keep their order). ``fill``: one value for all, or one per
    entry. Copies contiguous blocks (``np.insert`` is ~5x slower on a million rows)."""
    m = len(pos)
    fills = np.broadcast_to(np.asarray(fill, dtype=arr.dtype) if not isinstance(fill, np.ndarray) else fill, (m,))
    out = np.empty(arr.shape[:-1] + (arr.shape[-1] + m,), arr.dtype)
    prev = 0
    for j, p in enumerate(pos):
        out[..., prev + j:p + j] = arr[..., prev:p]
        out[..., p + j] = fills[j]
        prev = p
    out[..., prev + m:] = arr[..., prev:]
    return out


def load(conn: Connection) -> RegistryArrays:
    """Read every resource with its grid ancestors (PostgreSQL streams them with COPY ... TO STDOUT)."""
    types = {c: pa.string() for c in ("resource_id",) + CATEGORICAL}
    types.update({c: pa.float64() for c in NUMERIC})
    return RegistryArrays.from_arrow(bulk.query_arrow(conn, SELECT, types))


_GRID_COLUMNS = ("district_id", "substation_id", "feeder_id")
#: ids per query of ``read_rows`` (SQLite's bound-parameter limit is 32,766)
READ_CHUNK = 5_000


def read_rows(conn: Connection, resource_ids: Sequence[str]) -> dict[str, list]:
    """The current rows of some resources, as ``load`` reads them, plus ``flagged`` (bool).

    Returns ``{"resource_id": [...], <each of CATEGORICAL>: labels (None = none), <each of NUMERIC>:
    floats (NaN = unknown), "flagged": bools}`` for the ids that exist, in id order; an id that is
    not in the database is left out. One query per ``READ_CHUNK`` ids."""
    cols = [resources.c.resource_id] + [grid_nodes.c[c] if c in _GRID_COLUMNS else resources.c[c]
                                        for c in CATEGORICAL] + [resources.c[c] for c in NUMERIC]
    cols.append(resources.c.flagged.is_not(None).label("flagged"))
    src = resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id)
    ids = sorted(set(resource_ids))
    rows: list = []
    for i in range(0, len(ids), READ_CHUNK):
        rows += conn.execute(select(*cols).select_from(src).where(
            resources.c.resource_id.in_(ids[i:i + READ_CHUNK])).order_by(resources.c.resource_id)).all()
    names = ["resource_id", *CATEGORICAL, *NUMERIC, "flagged"]
    out: dict[str, list] = {n: [r[j] for r in rows] for j, n in enumerate(names)}
    for n in NUMERIC:
        out[n] = [np.nan if x is None else float(x) for x in out[n]]
    out["flagged"] = [bool(x) for x in out["flagged"]]
    return out


SUM_NAMES = ("connected_kw", "adjustable_down_kw", "adjustable_up_kw", "verified_down_kw")


def _check_by(by: list[str]) -> None:
    if not 1 <= len(by) <= 2:
        raise InvalidInput(Violation("by", "give one or two groupings", by))
    for b in by:
        if b not in LEVELS:
            raise InvalidInput(Violation("by", f"must be among {', '.join(LEVELS)}", b))


def aggregate_columns(reg: RegistryArrays, by: list[str], active_only: bool = True,
                      mask: np.ndarray | None = None, sort: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Totals grouped by one or two of ``LEVELS``, column-shaped.

    Returns the label arrays of the non-empty groups (object; a missing value, e.g. no operator
    yet, is a group labelled None) and their sums, float shape (6, groups): connected, adjustable
    down, adjustable up, verified down (kW), the number of verified resources (verified down kW
    known) and the count. ``mask``: only these resources (bool (n,)); ``active_only`` adds state
    active. ``sort``: groups in label order (first grouping, then second; None last), else in
    category-code order."""
    _check_by(by)
    m = np.ones(reg.n, bool) if mask is None else mask.copy()
    if active_only:
        m &= reg.codes["state"] == reg.code_of("state", "active")
    v = reg.values
    verified = ~np.isnan(v["verified_down_kw"])
    quantities = (v["capacity_kw"], v["adjustable_down_kw"], v["adjustable_up_kw"],
                  np.where(verified, v["verified_down_kw"], 0.0), verified.astype(np.float64))
    cats, codes = [], []
    for b in by:
        labels, ranks, in_order = reg.label_arrays(LEVELS[b])
        code = reg.codes[LEVELS[b]]
        # sorted: group by each label's rank instead of its code, so the groups come out in label order
        # (code -1, none, indexes the last rank); else by code, none moved to the last slot
        cats.append(in_order if sort else labels)
        codes.append(ranks[code] if sort else np.where(code < 0, len(labels) - 1, code))
    if len(by) == 1:
        sums = group_sum(codes[0], len(cats[0]), *quantities, mask=m)
        g = np.flatnonzero(sums[-1])
        return [cats[0][g]], sums[:, g]
    sums = group_sum_2d(codes[0], len(cats[0]), codes[1], len(cats[1]), *quantities, mask=m)
    a, b = np.nonzero(sums[-1])
    return [cats[0][a], cats[1][b]], sums[:, a, b]


def aggregate(reg: RegistryArrays, by: list[str], active_only: bool = True,
              mask: np.ndarray | None = None) -> list[dict]:
    """``aggregate_columns`` as one dict per group (e.g. ['district', 'type'])."""
    labels, sums = aggregate_columns(reg, by, active_only, mask)
    keys = [lab.tolist() for lab in labels]
    values = [sums[j].tolist() for j in range(len(SUM_NAMES))]
    verified = sums[-2].astype(np.int64).tolist()
    counts = sums[-1].astype(np.int64).tolist()
    return [{**{b: keys[k][i] for k, b in enumerate(by)}, **{n: values[j][i] for j, n in enumerate(SUM_NAMES)},
             "verified": verified[i], "resources": counts[i]} for i in range(len(counts))]
