"""Yearly settlement of subsidies (考核结算): computed → reviewed → approved → paid.

The plan's flow (``domain/RULES.md``): the grid company computes the year's subsidy from the
events' evaluations, the MIIT reviews, funds flow to the grid company, which pays the project
units. Here:

1. ``compute``: one statement line per operator, event, trading unit and kind — active kWh,
   reactive kvarh, reserve kW·h (only operators with a technical support system and minute-level
   regulation), V2G discharge kWh, and penalties if the rule set enables them — each priced at the
   cleared price capped by the rule set and rounded half-up to the fen; operators' claims scaled pro
   rata when they exceed the yearly budget (V2G under its own budget); each owner's part from its
   resources' share of the claims and its contract (fixed share or tiers);
2. ``review`` and ``approve`` (city admin): approval posts the amounts to the ledger and marks the
   events settled;
3. ``pay``: payment entries clear each operator's balance.

The ledger is append-only: nothing is ever updated or deleted (the database refuses it too). A
dispute approved after approval re-runs the allocation (``resettle``) and appends the difference of
every account — with a hard budget, a corrected claim moves every operator's share.

Money is ``Decimal`` yuan, stored as integer fen; energy stays float until a line is priced. Owners'
claims over a million resources are summed on the evaluation's resource file as columns, in float with
a bound on the float error; the few sums within that bound of a half fen are recomputed row by row in
``Decimal`` (``_owner_parties``), so every fen is the one the ``Decimal`` sums give.
Assumptions (docs/settlement.md): penalties stay with the operator (not passed to owners); owner
revenue is the owner's resources' claims scaled by the same pro-rata factor.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, func, select

from openvpp.core import rules
from openvpp.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Violation
from openvpp.core.ids import new_id
from openvpp.core.laps import Laps
from openvpp.core.money import FEN, round_statement, yuan
from openvpp.kernels.settlement import (
    fen_half_up,
    group_sum_split,
    owner_part,
    prorata_fen,
    rates,
    split_fen,
    sum_error_yuan,
)
from openvpp.model import lifecycle
from openvpp.model.enums import Role
from openvpp.services import admission, events
from openvpp.services import evaluation as eva
from openvpp.services import v2g as v2g_svc
from openvpp.services.scope import Scope
from openvpp.store import audit, bulk, settlement_files
from openvpp.store.audit import Actor
from openvpp.store.columnar import arrow_types, select_arrow
from openvpp.store.schema import contracts, operators, owners
from openvpp.store.schema_events import events as events_t
from openvpp.store.schema_settlement import (
    evaluation_rows,
    evaluations,
    ledger_entries,
    settlement_lines,
    settlement_parties,
    settlements,
)

ZERO = Decimal(0)
KINDS = ("active", "reactive", "reserve", "v2g", "v2g_energy", "penalty")
MAIN_KINDS = ("active", "reactive", "reserve")
CAP_KEY = {"active": "active_yuan_per_kwh", "reactive": "reactive_yuan_per_kvarh", "reserve": "reserve_yuan_per_kw_h"}
UNIT = {"active": "kWh", "reactive": "kvarh", "reserve": "kW·h", "v2g": "kWh", "v2g_energy": "kWh", "penalty": "kWh"}
#: the event id of the statement lines of metered V2G sessions (no event: the whole year's discharge)
V2G_SESSIONS = "v2g-sessions"


def _t(action: str, source: str, target: str) -> lifecycle.Transition:
    return lifecycle.Transition(action, frozenset({source}), target, frozenset({Role.CITY_ADMIN}), False)


#: computed → reviewed → approved → paid (a recomputation supersedes a computed or reviewed settlement)
SETTLEMENT_MACHINE = {t.action: t for t in (_t("review", "computed", "reviewed"),
                                            _t("approve", "reviewed", "approved"),
                                            _t("pay", "approved", "paid"))}


def fen(amount: Decimal) -> int:
    """Decimal yuan (already at the fen) → integer fen."""
    return int((round_statement(amount) / FEN).to_integral_value())


def from_fen(n: int) -> Decimal:
    return (Decimal(int(n)) * FEN).quantize(FEN)


# ---------------------------------------------------------------- reads


def get(conn: Connection, settlement_id: str) -> dict:
    row = conn.execute(select(settlements).where(settlements.c.settlement_id == settlement_id)).mappings().first()
    if row is None:
        raise NotFound("settlement", settlement_id)
    return dict(row)


def of_year(conn: Connection, year: int) -> dict | None:
    """The live (not superseded) settlement of a year, if any."""
    row = conn.execute(select(settlements).where(settlements.c.year == year, settlements.c.state != "superseded")
                       ).mappings().first()
    return dict(row) if row else None


def lines(conn: Connection, settlement_id: str, operator_id: str | None = None, revision: int | None = None
          ) -> list[dict]:
    rev = get(conn, settlement_id)["revision"] if revision is None else revision
    q = select(settlement_lines).where(settlement_lines.c.settlement_id == settlement_id,
                                       settlement_lines.c.revision == rev)
    if operator_id:
        q = q.where(settlement_lines.c.operator_id == operator_id)
    q = q.order_by(settlement_lines.c.operator_id, settlement_lines.c.event_id, settlement_lines.c.unit_id,
                   settlement_lines.c.kind)
    return [dict(r) for r in conn.execute(q).mappings()]


def parties(conn: Connection, settlement_id: str, party_kind: str | None = None, party_id: str | None = None,
            operator_id: str | None = None, revision: int | None = None) -> list[dict]:
    """Parties of a revision (operators, then owners; each by party, operator and contract): operators
    from ``settlement_parties``, owners from the revision's owners file (``store.settlement_files``,
    checked against its SHA-256) or, for a revision stored before migration 0013, from the table."""
    rev = get(conn, settlement_id)["revision"] if revision is None else revision
    p = settlement_parties
    q = select(p).where(p.c.settlement_id == settlement_id, p.c.revision == rev)
    owner_file = None if party_kind == "operator" else settlement_files.read(conn, settlement_id, rev, "owners")
    if owner_file is not None:
        q = q.where(p.c.party_kind == "operator")
    if party_kind:
        q = q.where(p.c.party_kind == party_kind)
    if party_id:
        q = q.where(p.c.party_id == party_id)
    if operator_id:
        q = q.where(p.c.operator_id == operator_id)
    out = [dict(r) for r in conn.execute(q.order_by(p.c.party_kind, p.c.party_id, p.c.operator_id,
                                                      p.c.contract)).mappings()]
    if owner_file is not None:
        out += _owner_party_rows(settlement_id, rev, _owners_where(owner_file, party_id, operator_id))
    return out


def _owners_where(t: pa.Table, party_id: str | None = None, operator_id: str | None = None) -> pa.Table:
    """The owners file's rows of one owner and/or operator."""
    mask = None
    for col, value in (("party_id", party_id), ("operator_id", operator_id)):
        if value:
            m = pc.equal(t.column(col), value)
            mask = m if mask is None else pc.and_(mask, m)
    return t if mask is None else t.filter(mask)


def _owner_party_rows(settlement_id: str, revision: int, t: pa.Table) -> list[dict]:
    """Owner parties of the owners file as ``settlement_parties`` rows give them (amounts in fen, then the
    contract: scheme, share, tiers), sorted by owner, operator and contract (byte order)."""
    if t.num_rows > 1:
        t = t.take(pc.sort_indices(t, [(k, "ascending") for k in ("party_id", "operator_id", "contract")]))
    cols = t.select(["party_id", "operator_id", "contract", "revenue", "owner_share", "scheme", "share",
                     "tiers"]).to_pydict()
    return [{"settlement_id": settlement_id, "revision": revision, "party_kind": "owner", "party_id": o,
             "operator_id": op, "contract": c,
             "amounts": {"revenue": r, "owner_share": s, "scheme": sc, "share": f,
                         "tiers": None if ti is None else json.loads(ti)}}
            for o, op, c, r, s, sc, f, ti in zip(*cols.values(), strict=True)]


def ledger(conn: Connection, settlement_id: str | None = None, party_kind: str | None = None,
           party_id: str | None = None, operator_id: str | None = None, year: int | None = None) -> list[dict]:
    q = select(ledger_entries).order_by(ledger_entries.c.entry_id)
    for col, value in (("settlement_id", settlement_id), ("party_kind", party_kind), ("party_id", party_id),
                       ("operator_id", operator_id), ("year", year)):
        if value is not None:
            q = q.where(ledger_entries.c[col] == value)
    return [dict(r) for r in conn.execute(q).mappings()]


def balance(conn: Connection, settlement_id: str, party_kind: str, party_id: str,
            operator_id: str | None = None) -> Decimal:
    """Σ of a party's ledger entries (operator: owed by the grid company, after payments)."""
    q = select(func.coalesce(func.sum(ledger_entries.c.amount_fen), 0)).where(
        ledger_entries.c.settlement_id == settlement_id, ledger_entries.c.party_kind == party_kind,
        ledger_entries.c.party_id == party_id)
    if operator_id:
        q = q.where(ledger_entries.c.operator_id == operator_id)
    return from_fen(conn.execute(q).scalar())


# ---------------------------------------------------------------- allocation


class _Contracts:
    """``access.contract_for`` in memory: resource-specific contract, then owner-wide, then the owner's
    default share (owners.revenue_share)."""

    def __init__(self, conn: Connection):
        self.rows: dict[tuple, list[dict]] = defaultdict(list)
        for r in conn.execute(select(contracts)).mappings():
            self.rows[(r["owner_id"], r["operator_id"])].append(dict(r))
        t = _owner_shares(conn)
        #: owners on record and their default share, as columns (and as a dict, built when first asked)
        self.default_ids = t.column("owner_id").combine_chunks()
        self.default_shares = t.column("revenue_share").to_numpy()
        self._default: dict[str, float] | None = None
        self.cache: dict[tuple, dict] = {}
        #: resources with a contract of their own, and owners with any contract (the others: default share)
        self.resource_ids = sorted({c["resource_id"] for v in self.rows.values() for c in v if c["resource_id"]})
        self.owner_ids = sorted({k[0] for k in self.rows})
        self._pending: list[tuple[pa.Array, Future]] = []

    def prefetch(self, owner_ids: pa.Array) -> None:
        """Start finding the rows of ``owner_ids`` (distinct) among the owners on record on a helper thread
        (a hash of ~600,000 ids against ~600,000: ~0.1 s at a million resources), while the claims are
        summed; :meth:`rows_of` takes the result when asked for the same ids."""
        self._pending.append((owner_ids, _HELPER.submit(self._rows_of, owner_ids)))

    def rows_of(self, owner_ids: pa.Array) -> np.ndarray:
        """Each of ``owner_ids``' row among the owners on record (``default_ids``), or their count when it
        has none."""
        for ids, job in self._pending:
            if ids is owner_ids or (len(ids) == len(owner_ids) and ids.equals(owner_ids)):
                return job.result()
        return self._rows_of(owner_ids)

    def _rows_of(self, owner_ids: pa.Array) -> np.ndarray:
        return pc.fill_null(pc.index_in(owner_ids, value_set=self.default_ids), len(self.default_ids)).to_numpy(
            zero_copy_only=False).astype(np.int64)

    @property
    def default(self) -> dict[str, float]:
        if self._default is None:
            self._default = dict(zip(self.default_ids.to_pylist(), self.default_shares.tolist(), strict=True))
        return self._default

    def find(self, owner_id: str, operator_id: str, day: date, resource_id: str) -> dict:
        key = (owner_id, operator_id, day, resource_id)
        if key not in self.cache:
            self.cache[key] = self._find(owner_id, operator_id, day, resource_id)
        return self.cache[key]

    def _find(self, owner_id: str, operator_id: str, day: date, resource_id: str) -> dict:
        live = [c for c in self.rows.get((owner_id, operator_id), [])
                if c["valid_from"] <= day and (c["valid_to"] is None or c["valid_to"] > day)]
        for want in (resource_id, None):
            for c in live:
                if c["resource_id"] == want:
                    return c
        if owner_id not in self.default:
            raise NotFound("owner", owner_id)
        return {"contract_id": "default", "scheme": "fixed", "owner_share": self.default[owner_id], "tiers": None}


def _owner_shares(conn: Connection) -> pa.Table:
    """Every owner on record and its default share (``owner_id``, ``revenue_share``) as columns. On
    PostgreSQL the ids come as one text per distinct share (owners share a few values): no share is
    written as text and parsed back once per owner."""
    types = {"owner_id": pa.string(), "revenue_share": pa.float64()}
    if conn.dialect.name != "postgresql":
        return select_arrow(conn, select(owners.c.owner_id, owners.c.revenue_share), types)
    ids, shares = [], []
    for share, count, text in conn.execute(select(owners.c.revenue_share, func.count(),
                                                  func.string_agg(owners.c.owner_id, "\n"))
                                           .group_by(owners.c.revenue_share)):
        pieces = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n")).cast(pa.string())
        if len(pieces) != count:                                  # an id holding a newline: row by row
            return select_arrow(conn, select(owners.c.owner_id, owners.c.revenue_share), types)
        ids.append(pieces)
        shares.append(np.full(count, float(share)))
    if not ids:
        return pa.table({k: pa.array([], t) for k, t in types.items()})
    return pa.table({"owner_id": pa.concat_arrays(ids), "revenue_share": np.concatenate(shares)})


def _rate(price: float, cap: Decimal) -> Decimal:
    return max(min(yuan(price), cap), ZERO)


def _eligible(conn: Connection, cache: dict, operator_id: str) -> bool:
    """Reserve subsidy condition: the latest minute-level check (TSS connected + verified minute-level
    capability) passed (``services.admission``)."""
    if operator_id not in cache:
        checks = {c["check"]: c["passed"] for c in admission.latest_checks(conn, operator_id)}
        cache[operator_id] = bool(checks.get("minute_level"))
    return cache[operator_id]


def _allocate(conn: Connection, rs: rules.RuleSet, evaluation_ids: list[str], line_ids: dict | None = None,
              v2g_sessions: tuple[int, datetime] | None = None, lap: Laps | None = None) -> dict:
    """Lines, operator and owner parties and a summary from the given evaluations (nothing written);
    with ``v2g_sessions`` = (year, until) also the metered V2G sessions (``_v2g_sessions``)."""
    lap = lap or Laps(None)
    sub = rs.section("subsidy")
    caps = {k: yuan(sub[CAP_KEY[k]]) for k in MAIN_KINDS}
    v2g_rate = yuan(sub["v2g_discharge_yuan_per_kwh"])
    budget_main, budget_v2g = yuan(sub["yearly_budget_yuan"]), yuan(sub["v2g_yearly_budget_yuan"])
    if sub.get("overrun_rule", "pro_rata") != "pro_rata":
        raise InvalidInput(Violation("overrun_rule", "only pro_rata is implemented", sub.get("overrun_rule")))
    ev_rules = rs.section("evaluation")
    penalty_mode = ev_rules.get("penalty", "none")
    if penalty_mode not in ("none", "shortfall"):
        raise InvalidInput(Violation("penalty", "must be none or shortfall (rule set [evaluation])", penalty_mode))
    penalty_ratio = yuan(ev_rules["penalty_ratio"]) if penalty_mode == "shortfall" else ZERO
    line_ids = line_ids or {}
    eligible: dict[str, bool] = {}
    finder = _Contracts(conn)
    lap("contracts and owners' shares")

    out_lines: list[dict] = []
    gross: dict[str, dict[str, Decimal]] = defaultdict(lambda: {k: ZERO for k in KINDS})
    # owners' claims per (owner, operator, contract) of each evaluation (float, see _owner_parties); the
    # metered V2G sessions' exact gross per (owner, operator, contract) and pool; contracts other than
    # an owner's default share
    owner_tables: list[pa.Table] = []
    plans: list[tuple] = []
    owner_gross: dict[tuple, dict[str, Decimal]] = defaultdict(lambda: {"main": ZERO, "v2g": ZERO, "v2g_energy": ZERO})
    event_v2g_kwh: dict[str, float] = defaultdict(float)     # per charger: discharge already paid in events
    owner_contract: dict[tuple, dict] = {}
    rates_met: dict[tuple, Decimal] = {}                     # (price, cap) -> capped rate: prices repeat

    def rate_of(price: float, cap: Decimal) -> Decimal:
        if (price, cap) not in rates_met:
            rates_met[(price, cap)] = _rate(price, cap)
        return rates_met[(price, cap)]

    for eid in evaluation_ids:
        head = conn.execute(select(evaluations.c.event_id, evaluations.c.product, evaluations.c.quantity_unit).where(
            evaluations.c.evaluation_id == eid)).mappings().first()    # not its inputs (JSON)
        if head is None:
            raise NotFound("evaluation", eid)
        ev = events.get(conn, head["event_id"])
        kind = eva.kind_of(head["product"])
        unit_rows = _unit_rows(conn, eid)
        per_unit: dict[tuple, list[dict]] = defaultdict(list)
        for r in unit_rows:
            per_unit[(r["operator_id"], r["key_id"])].append(r)
        # each unit's line of the event's kind: Σ over slots of quantity x capped rate, to the fen — summed
        # in float with its error bound (a unit has a few slot terms), in Decimal only when that bound
        # reaches a half fen (kernels.settlement.fen_half_up); every other kind in Decimal (they are few)
        todo: list[tuple] = []
        for (op, unit), rs_rows in sorted(per_unit.items()):
            ok = kind != "reserve" or _eligible(conn, eligible, op)
            xs = [r["credited"] - r["v2g_kwh"] for r in rs_rows]
            slot_rates = [rate_of(r["price_yuan"], caps[kind]) for r in rs_rows]
            terms = [x * float(rt) for x, rt in zip(xs, slot_rates, strict=True)] if ok else [0.0]
            todo.append((op, unit, rs_rows, ok, xs, slot_rates, math.fsum(terms), math.fsum(map(abs, terms)),
                         len(terms)))
        main_fen, unsure = fen_half_up(np.array([t[6] for t in todo]),
                                       sum_error_yuan(np.array([t[7] for t in todo]), np.array([2.0 * t[8] for t in todo])))
        for i, (op, unit, rs_rows, ok, xs, slot_rates, _, _, _) in enumerate(todo):
            parts: dict[str, tuple[float, Decimal, set]] = {}
            if not ok:
                amt = ZERO
            elif unsure[i]:
                amt = round_statement(sum((yuan(x) * rt for x, rt in zip(xs, slot_rates, strict=True)), ZERO))
            else:
                amt = from_fen(int(main_fen[i]))
            parts[kind] = (sum(xs), amt, set(slot_rates))
            v2g_q = sum(r["v2g_kwh"] for r in rs_rows)
            if v2g_q > 0:
                parts["v2g"] = (v2g_q, sum((yuan(r["v2g_kwh"]) * v2g_rate for r in rs_rows), ZERO), {v2g_rate})
            short = sum(r["shortfall"] for r in rs_rows)
            if penalty_mode == "shortfall" and short > 0:
                pen = sum((yuan(r["shortfall"]) * yuan(r["price_yuan"]) * penalty_ratio for r in rs_rows), ZERO)
                parts["penalty"] = (short, -pen, {yuan(r["price_yuan"]) * penalty_ratio for r in rs_rows})
            for k, (qty, exact, rate_set) in parts.items():
                amount = round_statement(exact)
                gross[op][k] += amount
                key = (head["event_id"], unit, k)
                note = None
                if k == kind == "reserve" and not ok:
                    note = "not eligible: reserve needs a technical support system and minute-level regulation"
                out_lines.append({"line_id": line_ids.get(key) or new_id("SL"), "operator_id": op,
                                  "event_id": head["event_id"], "evaluation_id": eid, "unit_id": unit, "kind": k,
                                  "quantity": float(qty), "quantity_unit": UNIT[k] if k != kind else
                                  head["quantity_unit"],
                                  "rate_yuan": str(rate_set.pop()) if len(rate_set) == 1 else None,
                                  "amount_fen": fen(amount), "note": note})
        lap("unit lines")
        # owners: their resources' claims, on the resource file's columns
        cols = _resource_columns(conn, eid, unit_rows, finder.default_ids)
        if len(cols["owns"]) > _PREFETCH_OWNERS:
            finder.prefetch(cols["owns"])
        lap("resource file")
        t = _owner_claims(conn, cols, ev["day"], kind, caps[kind], v2g_rate, eligible, finder, event_v2g_kwh,
                          owner_contract)
        lap("owners' claims")
        if t is not None:
            owner_tables.append(t)
        plans.append((eid, ev["day"], kind, unit_rows))
        del cols

    v2g_summary = None
    if v2g_sessions is not None:
        v2g_summary = _v2g_sessions(conn, rs, v2g_sessions, v2g_rate, event_v2g_kwh, finder, gross, owner_gross,
                                    owner_contract, out_lines, line_ids)
    ops = sorted(gross)
    main = prorata_fen([sum((gross[o][k] for k in MAIN_KINDS), ZERO) for o in ops], budget_main)
    v2g = prorata_fen([gross[o]["v2g"] for o in ops], budget_v2g)
    lap("V2G sessions and pro rata")
    owner_tbl, owner_totals = _owner_parties(conn, owner_tables, owner_gross, owner_contract, finder, main.factor,
                                             v2g.factor, plans, caps, v2g_rate, eligible)
    lap("owner parties to the fen")
    party_rows: list[dict] = []
    for i, op in enumerate(ops):
        g = gross[op]
        gross_main = sum((g[k] for k in MAIN_KINDS), ZERO)
        payable = main.paid[i] + v2g.paid[i] + g["v2g_energy"]
        net = payable + g["penalty"]
        amounts = {f"claim_{k}": g[k] for k in ("active", "reactive", "reserve", "v2g", "v2g_energy")} | {
            "prorata_main": main.paid[i] - gross_main, "prorata_v2g": v2g.paid[i] - g["v2g"],
            "penalty": g["penalty"], "payable": payable, "net": net, "owner_shares": owner_totals[op],
            "retained": net - owner_totals[op]}
        party_rows.append({"party_kind": "operator", "party_id": op, "operator_id": op, "contract": "-",
                           "amounts": {k: fen(v) for k, v in amounts.items()}})
    summary = {
        "ruleset": rs.id, "evaluations": evaluation_ids,
        # [tou] prices the metered V2G discharge; kept so that a re-settlement prices it the same way
        "rules": {"subsidy": dict(sub), "evaluation": dict(ev_rules)} | (
            {"tou": dict(rs.data["tou"])} if "tou" in rs.data else {}),
        "main": {"budget": str(budget_main), "claims": str(sum((sum((gross[o][k] for k in MAIN_KINDS), ZERO)
                                                                 for o in ops), ZERO)),
                 "factor": str(main.factor), "paid": str(sum(main.paid, ZERO))},
        "v2g": {"budget": str(budget_v2g), "claims": str(sum((gross[o]["v2g"] for o in ops), ZERO)),
                "factor": str(v2g.factor), "paid": str(sum(v2g.paid, ZERO))},
        "penalty": {"mode": penalty_mode, "ratio": str(penalty_ratio), "total": str(sum((gross[o]["penalty"]
                                                                                         for o in ops), ZERO))},
        "reserve_eligible": eligible,
        "v2g_sessions": v2g_summary,
        "assumptions": ["over budget every claim is scaled by budget / total (plan gives the cap only)",
                        "penalties stay with the operator", "owner revenue = its resources' claims x the factor",
                        "metered V2G discharge is paid at the discharge price (0.453 x TOU coefficient, no budget); "
                        "the V2G subsidy counts a charger's metered discharge less what its event evaluations "
                        "already paid as V2G, under the V2G budget together with the events' V2G claims"],
    }
    return {"lines": out_lines, "parties": party_rows, "owners": owner_tbl, "summary": summary}


def _unit_rows(conn: Connection, evaluation_id: str) -> list[dict]:
    """An evaluation's unit rows (``evaluation.rows(..., "unit")``, sorted by unit and slot) with the
    columns a settlement prices."""
    r = evaluation_rows
    q = (select(r.c.key_id, r.c.slot, r.c.operator_id, r.c.credited, r.c.v2g_kwh, r.c.shortfall, r.c.price_yuan)
         .where(r.c.evaluation_id == evaluation_id, r.c.level == "unit").order_by(r.c.key_id, r.c.slot))
    return select_arrow(conn, q, arrow_types(q.selected_columns)).to_pylist()


# ---------------------------------------------------------------- owners' claims, columnar

_CLAIMS = {"owner_id": pa.string(), "operator_id": pa.string(), "contract": pa.string(), "main": pa.float64(),
           "v2g": pa.float64(), "v2g_energy": pa.float64(), "abs": pa.float64(), "terms": pa.float64(),
           "err": pa.float64()}
#: the same columns with the ids dictionary-encoded, as the claims tables are built
_CLAIMS_CODED = pa.schema([pa.field(k, pa.dictionary(pa.int32(), pa.string())) if t == pa.string()
                           else pa.field(k, t) for k, t in _CLAIMS.items()])
#: owners of an evaluation above which their rows among the owners on record are found on a helper thread
_PREFETCH_OWNERS = 10_000
_HELPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="settlement-owners")
#: resources per block of the claims arithmetic (a block's arrays stay in the CPU caches)
_BLOCK = 32_768


def _codes(a: pa.Array | pa.ChunkedArray, distinct_dictionary: bool = False) -> tuple[np.ndarray, pa.Array]:
    """Codes (int64, one per value) and the distinct values (strings; a null is a value too) of a string
    column, plain or dictionary-encoded: a dictionary's codes are used, not a second hash of every value
    (its own values are hashed once, unless ``distinct_dictionary`` says they are distinct already)."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks() if a.num_chunks else pa.array([], a.type)
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64), pa.array([], pa.string())
    if pa.types.is_dictionary(a.type):
        values = a.dictionary.cast(pa.string())
        if distinct_dictionary:
            v_codes, distinct = np.arange(len(values), dtype=np.int64), values
        else:
            v_codes, distinct = _codes(values)              # a dictionary may repeat a value
        if a.null_count:                                    # null codes: the null value's
            nulls = np.flatnonzero(np.asarray(pc.is_null(distinct)))
            if nulls.size == 0:
                distinct = pa.concat_arrays([distinct, pa.nulls(1, pa.string())])
            v_codes = np.append(v_codes, nulls[0] if nulls.size else len(distinct) - 1)
        idx = pc.fill_null(a.indices, len(values)).to_numpy(zero_copy_only=False).astype(np.int64)
        return v_codes[idx], distinct
    d = pc.dictionary_encode(a.cast(pa.string()), null_encoding="encode")
    return d.indices.to_numpy(zero_copy_only=False).astype(np.int64), d.dictionary


def _resource_columns(conn: Connection, evaluation_id: str, unit_rows: list[dict],
                      on_record: pa.Array | None = None) -> dict:
    """An evaluation's resources as columns: ``key_id`` (Arrow strings, one per resource), ``op_idx`` and
    ``own_idx`` (codes into the distinct ``ops`` and ``owns``; with ``on_record``, the owners on record
    (distinct ids), ``owns`` starts with them in their order, so an owner's code is its row there when it
    has one — one hash of both columns), ``unit_idx`` (the row of ``price`` of the
    resource's unit), (resources, slots) float arrays ``credited`` and ``v2g_kwh``, and ``price``: per
    unit and slot the unit's price (0 where the unit has none, NaN where it is NULL, as ``evaluation.rows``
    gives it; a last row of 0 for a unit without rows). From the resource file; an evaluation stored before
    it (rows in ``evaluation_rows``) gives one row per resource and slot as a one-slot "resource", in the
    same order, each with its own price row."""
    t = eva.resource_table(conn, evaluation_id, ["key_id", "unit_id", "operator_id", "owner_id", "credited",
                                                 "v2g_kwh"])
    if t is None:
        rows = eva.rows(conn, evaluation_id, "resource")

        def num(k: str) -> np.ndarray:
            return np.array([np.nan if r[k] is None else r[k] for r in rows], dtype=np.float64).reshape(-1, 1)

        op_idx, ops = _codes(pa.array([r["operator_id"] for r in rows], pa.string()))
        own_idx, owns = _codes(pa.array([r["owner_id"] for r in rows], pa.string()))
        return {"key_id": pa.array([r["key_id"] for r in rows], pa.string()), "op_idx": op_idx,
                "ops": ops.to_pylist(), "own_idx": own_idx, "owns": owns, "unit_idx": np.arange(len(rows)),
                "credited": num("credited"), "v2g_kwh": num("v2g_kwh"), "price": num("price_yuan"), "slots": 1}
    first, s = int(t.schema.metadata[b"first_slot"]), int(t.schema.metadata[b"slots"])
    n = t.num_rows
    units: dict[str, dict[int, float | None]] = {}
    for r in unit_rows:
        units.setdefault(r["key_id"], {})[r["slot"]] = r["price_yuan"]
    names = sorted(units)
    price = np.zeros((len(names) + 1, s))             # the last row: a unit without rows (price 0)
    for i, u in enumerate(names):
        for slot, p in units[u].items():
            if first <= slot < first + s:
                price[i, slot - first] = np.nan if p is None else p
    # a format-2 file's dictionaries are distinct values (evaluation._member_columns encodes them):
    # their codes are used as they are, without hashing the ~600,000 owners again
    distinct = t.schema.metadata.get(b"format") == b"2"
    unit_codes, unit_values = _codes(t.column("unit_id"), distinct_dictionary=distinct)
    row_of = pc.fill_null(pc.index_in(unit_values, value_set=pa.array(names, pa.string())), len(names))
    op_idx, ops = _codes(t.column("operator_id"), distinct_dictionary=distinct)
    owner_col = t.column("owner_id")
    if on_record is not None and not pa.types.is_dictionary(owner_col.type) and n:
        both = pc.dictionary_encode(pa.chunked_array([on_record, *owner_col.cast(pa.string()).chunks]).combine_chunks(),
                                    null_encoding="encode")
        own_idx = both.indices.slice(len(on_record)).to_numpy(zero_copy_only=False).astype(np.int64)
        owns = both.dictionary
    else:
        own_idx, owns = _codes(owner_col, distinct_dictionary=distinct)

    def per(k: str) -> np.ndarray:
        flat = t.column(k).combine_chunks().flatten() if n else pa.array([], pa.float64())
        return flat.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(n, s)

    return {"key_id": t.column("key_id").combine_chunks().cast(pa.string()), "op_idx": op_idx,
            "ops": ops.to_pylist(), "own_idx": own_idx, "owns": owns,
            "unit_idx": row_of.to_numpy(zero_copy_only=False).astype(np.int64)[unit_codes],
            "credited": per("credited"), "v2g_kwh": per("v2g_kwh"), "price": price, "slots": s}


def _claim_terms(cols: dict, cap: float, v2g_rate: float, eligible_op: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per resource, float yuan: Σ over slots of (credited − V2G kWh) × the capped rate of its unit
    (0 for an operator not eligible), Σ V2G kWh × the V2G rate, and Σ|term| of both (the float error
    bound, which holds for any order of the additions); and whether any V2G kWh is not 0. A block of
    resources at a time, each row summed as a product with a vector of ones (BLAS: ten times numpy's
    reduction over 8 slots)."""
    credited, v2g, unit_idx = cols["credited"], cols["v2g_kwh"], cols["unit_idx"]
    n, s = credited.shape
    ones = np.ones(s)
    rate = rates(cols["price"], cap)                 # per unit and slot
    main_r, abs_m = np.empty(n), np.empty(n)
    v2g_r, abs_v = np.zeros(n), np.zeros(n)
    any_v2g = False
    with np.errstate(invalid="ignore"):
        for a in range(0, n, _BLOCK):
            b = min(a + _BLOCK, n)
            vb = v2g[a:b]
            block_v2g = bool(np.any(vb != 0))
            any_v2g |= block_v2g
            terms = (credited[a:b] - vb if block_v2g else credited[a:b]) * rate[unit_idx[a:b]]
            main_r[a:b] = terms @ ones
            abs_m[a:b] = np.abs(terms, out=terms) @ ones
            if block_v2g:
                terms = vb * v2g_rate
                v2g_r[a:b] = terms @ ones
                abs_v[a:b] = np.abs(terms, out=terms) @ ones
    off = ~eligible_op[cols["op_idx"]]
    if off.any():
        main_r[off] = 0.0
        abs_m[off] = 0.0
    return main_r, v2g_r, abs_m + abs_v, any_v2g


def _owner_claims(conn: Connection, cols: dict, day: date, kind: str, cap: Decimal, v2g_rate: Decimal,
                  eligible: dict, finder: _Contracts, event_v2g_kwh: dict[str, float], contracts_seen: dict
                  ) -> pa.Table | None:
    """One evaluation's claims per (owner, operator, contract) in float yuan (``main`` = credited less
    V2G kWh x the capped rate, 0 for an operator not eligible to a reserve subsidy; ``v2g`` = V2G kWh x
    the V2G rate), with Σ|term| and the number of terms (``abs``, ``terms``: the float error bound of
    :func:`_owner_parties`); owner, operator and contract as dictionary columns. Resources of an owner
    with no contract with the operator take the owner's default share as a group (one hash of the
    owner-operator codes); contracts are looked up per owner-operator pair, and per resource for the
    resources named by a contract. Adds each charger's V2G kWh (slot by slot) to ``event_v2g_kwh`` and the
    contracts met (other than the default) to ``contracts_seen``."""
    key_id, s = cols["key_id"], cols["slots"]
    n = len(key_id)
    if n == 0:
        return None
    op_idx, ops, own_idx, owns = cols["op_idx"], cols["ops"], cols["own_idx"], cols["owns"]
    ok = np.array([kind != "reserve" or _eligible(conn, eligible, op) for op in ops], dtype=bool)
    main_r, v2g_r, abs_r, any_v2g = _claim_terms(cols, float(cap), float(v2g_rate), ok)
    v2g = cols["v2g_kwh"]
    for i in np.flatnonzero((v2g != 0).any(axis=1) if any_v2g else []).tolist():  # kWh already paid as V2G
        k = key_id[i].as_py()
        for x in v2g[i].tolist():
            event_v2g_kwh[k] += float(x)
    special = (np.asarray(pc.is_in(key_id, value_set=pa.array(finder.resource_ids, pa.string())))
               if finder.resource_ids else np.zeros(n, dtype=bool))
    extra: dict[str, list] = {k: [] for k in _CLAIMS}
    for i in np.flatnonzero(special).tolist():                       # resources named by a contract
        owner, op = owns[int(own_idx[i])].as_py(), ops[op_idx[i]]
        c = finder.find(owner, op, day, key_id[i].as_py())
        contracts_seen.setdefault((owner, op, str(c["contract_id"])), c)
        for k, v in (("owner_id", owner), ("operator_id", op), ("contract", str(c["contract_id"])),
                     ("main", main_r[i]), ("v2g", v2g_r[i]), ("v2g_energy", 0.0), ("abs", abs_r[i]),
                     ("terms", 2.0 * s), ("err", 0.0)):
            extra[k].append(v)
    rest = np.flatnonzero(~special) if extra["owner_id"] else slice(None)
    inv, p_own, p_op = _pairs(own_idx[rest], op_idx[rest], len(owns), len(ops))
    n_pairs = p_own.size
    owner_col = pa.DictionaryArray.from_arrays(pa.array(p_own.astype(np.int32)), owns)
    op_col = pa.DictionaryArray.from_arrays(pa.array(p_op.astype(np.int32)), pa.array(ops, pa.string()))
    has = (np.flatnonzero(np.asarray(pc.is_in(owner_col.dictionary, value_set=pa.array(finder.owner_ids,
                                                                                          pa.string())))[p_own])
           if finder.owner_ids else np.zeros(0, dtype=np.int64))
    contract_col: pa.Array = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n_pairs, np.int32)),
                                                            pa.array(["default"], pa.string()))
    if has.size:
        named = np.full(n_pairs, "default", dtype=object)
        for j in has.tolist():                                       # owners with contracts: as access does
            owner, op = owns[int(p_own[j])].as_py(), ops[p_op[j]]
            c = finder.find(owner, op, day, None)
            named[j] = str(c["contract_id"])
            contracts_seen.setdefault((owner, op, named[j]), c)
        contract_col = pa.array(named, pa.string()).dictionary_encode()
    # a group's sums of its resources' claims in two parts (group_sum_split), so that their float error
    # does not grow with the group (a big owner's ~100,000 resources): each resource's own 2s terms
    # (``terms``, the bound of sum_error_yuan) and the group sum's bound (``err``)
    main_g, main_err = group_sum_split(inv, n_pairs, main_r[rest])
    v2g_g, v2g_err = group_sum_split(inv, n_pairs, v2g_r[rest]) if any_v2g else (np.zeros(n_pairs),
                                                                                 np.zeros(n_pairs))
    grouped = pa.table({"owner_id": owner_col, "operator_id": op_col, "contract": contract_col,
                        "main": main_g, "v2g": v2g_g, "v2g_energy": np.zeros(n_pairs),
                        "abs": np.bincount(inv, weights=abs_r[rest], minlength=n_pairs),
                        "terms": np.full(n_pairs, 2.0 * s), "err": main_err + v2g_err},
                       schema=_CLAIMS_CODED)
    if not extra["owner_id"]:
        return grouped
    return pa.concat_tables([grouped, pa.table(extra, schema=pa.schema(_CLAIMS)).cast(_CLAIMS_CODED)])


def _pairs(own: np.ndarray, op: np.ndarray, n_own: int, n_op: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (owner, operator) code pairs of the rows: each row's pair, and the pairs' owner and
    operator codes. One operator of each owner is found by a scatter of the codes; the rows of that
    pair take the owner's place, and only the rows of an owner's other operators are hashed (as integers)."""
    one = np.full(n_own, -1, dtype=np.int64)
    one[own] = op                                          # an operator of each owner
    used = np.flatnonzero(one >= 0)
    pos = np.zeros(n_own, dtype=np.int64)
    pos[used] = np.arange(used.size)
    inv, p_own, p_op = pos[own], used, one[used]
    other = np.flatnonzero(one[own] != op)
    if other.size:
        n_op = max(n_op, 1)
        pair = pc.dictionary_encode(pa.array(own[other] * n_op + op[other]))
        pairs = pair.dictionary.to_numpy(zero_copy_only=False)
        inv[other] = used.size + pair.indices.to_numpy(zero_copy_only=False)
        p_own, p_op = np.concatenate([p_own, pairs // n_op]), np.concatenate([p_op, pairs % n_op])
    return inv, p_own, p_op


def _exact_owner_gross(conn: Connection, want: set[tuple], plans: list[tuple], caps: dict, v2g_rate: Decimal,
                       eligible: dict, finder: _Contracts, sessions: dict) -> dict[tuple, dict[str, Decimal]]:
    """The exact ``Decimal`` gross of a few (owner, operator, contract) groups: their resources' rows
    again, resource by resource (sorted by id) and slot by slot as the row-by-row path summed them, then
    the metered V2G sessions'."""
    out: dict[tuple, dict[str, Decimal]] = defaultdict(lambda: {"main": ZERO, "v2g": ZERO, "v2g_energy": ZERO})
    owners_wanted = pa.array(sorted({k[0] for k in want if k[0] is not None}), pa.string())
    ownerless_wanted = any(k[0] is None for k in want)
    for eid, day, kind, unit_rows in plans:
        cols = _resource_columns(conn, eid, unit_rows)
        owns, ops = cols["owns"], cols["ops"]
        wanted = np.asarray(pc.fill_null(pc.is_in(owns, value_set=owners_wanted), False))
        if ownerless_wanted:          # resources without an owner only when such a group is asked for
            wanted |= np.asarray(pc.is_null(owns))
        sel = np.flatnonzero(wanted[cols["own_idx"]])
        ops_wanted = np.flatnonzero(np.isin(np.array(ops, dtype=object), [k[1] for k in want]))
        sel = sel[np.isin(cols["op_idx"][sel], ops_wanted)]          # an owner's other operators: not asked
        keys = cols["key_id"].take(pa.array(sel, pa.int64())).to_pylist()
        for pos in sorted(range(sel.size), key=lambda p: keys[p]):
            i = int(sel[pos])
            owner, op, rid = owns[int(cols["own_idx"][i])].as_py(), ops[cols["op_idx"][i]], keys[pos]
            c = finder.find(owner, op, day, rid)
            key = (owner, op, str(c["contract_id"]))
            if key not in want:
                continue
            g = out[key]
            for cr, v, p in zip(cols["credited"][i].tolist(), cols["v2g_kwh"][i].tolist(),
                                cols["price"][cols["unit_idx"][i]].tolist(), strict=True):
                if kind != "reserve" or _eligible(conn, eligible, op):
                    g["main"] += yuan(cr - v) * _rate(p, caps[kind])
                g["v2g"] += yuan(v) * v2g_rate
    for key in want:
        if key in sessions:
            out[key]["v2g"] += sessions[key]["v2g"]
            out[key]["v2g_energy"] += sessions[key]["v2g_energy"]
    return out


def _ranked(values: pa.Array) -> np.ndarray:
    """The rank of each of the distinct ``values`` in byte order (nulls last), as int64."""
    order = pc.sort_indices(values).to_numpy(zero_copy_only=False)
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return rank


def _owner_parties(conn: Connection, tables: list[pa.Table], sessions: dict, contracts_seen: dict,
                   finder: _Contracts, main_factor: Decimal, v2g_factor: Decimal, plans: list[tuple], caps: dict,
                   v2g_rate: Decimal, eligible: dict) -> tuple[pa.Table, dict[str, Decimal]]:
    """Owners' revenue and contract share to the fen per (owner, operator, contract) — in the order of the
    claims when each row is a group of its own, else by owner code (readers sort, :func:`parties`), operator
    and contract — and the shares' total per operator — the same fen as the ``Decimal`` path row by row (revenue = claims x
    the pro rata factors + metered V2G energy value; ``owner_part`` of it; both rounded half-up): summed
    in float with a bound on the float error (``kernels.settlement.sum_error_yuan`` for each resource's
    terms and the merge of evaluations, plus the group sums' own bound from ``group_sum_split``, which
    does not grow with the group), and every group
    whose revenue or share falls within that bound of a half fen (or is not finite) recomputed exactly in
    ``Decimal`` from its rows (:func:`_exact_owner_gross`). The groups are found on the codes of the
    owner, operator and contract columns, not by hashing or sorting their strings again."""
    srows = [(k[0], k[1], k[2], 0.0, float(g["v2g"]), float(g["v2g_energy"]),
              abs(float(g["v2g"])) + abs(float(g["v2g_energy"])), 2.0, 0.0) for k, g in sessions.items()]
    tables = [t for t in [*tables, pa.table({k: [r[i] for r in srows] for i, k in enumerate(_CLAIMS)},
                                            schema=pa.schema(_CLAIMS)).cast(_CLAIMS_CODED)] if t.num_rows]
    claims = pa.concat_tables(tables) if tables else _CLAIMS_CODED.empty_table()
    codes, values = {}, {}
    for k in ("owner_id", "operator_id", "contract"):
        # each table's dictionaries are distinct values (from _codes or a cast), as are their unification
        codes[k], values[k] = _codes(claims.column(k), distinct_dictionary=True)
    n_op, n_c = max(len(values["operator_id"]), 1), max(len(values["contract"]), 1)
    key = ((codes["owner_id"] * n_op + _ranked(values["operator_id"])[codes["operator_id"]]) * n_c
           + _ranked(values["contract"])[codes["contract"]])
    space = len(values["owner_id"]) * n_op * n_c
    seen = np.zeros(space if key.size > 0 and space <= 1 << 24 else 0, dtype=bool)
    seen[key if seen.size else []] = True
    if seen.size and np.count_nonzero(seen) == key.size:   # every row a group of its own (one evaluation)
        n, inv = key.size, np.arange(key.size)
    else:                                                   # by owner code, then operator and contract
        keys, inv = np.unique(key, return_inverse=True)
        n = keys.size
    col = {k: np.bincount(inv, weights=claims.column(k).to_numpy(), minlength=n)
           for k in ("main", "v2g", "v2g_energy", "abs", "terms", "err")}
    first = np.zeros(n, dtype=np.int64)
    first[inv] = np.arange(inv.size)                                 # a row of each group (all have its codes)
    g_codes = {k: codes[k][first] for k in codes}
    owner_ids, op_ids, contract_ids = (values[k].take(pa.array(g_codes[k])) for k in ("owner_id", "operator_id",
                                                                                       "contract"))
    default_code = np.flatnonzero(np.asarray(pc.fill_null(pc.equal(values["contract"], "default"), False)))
    is_default = (np.isin(g_codes["contract"], default_code) if n else np.zeros(0, dtype=bool))
    share = np.full(n, np.nan)
    d_share = np.append(finder.default_shares.astype(np.float64), np.nan)
    owner_values, n_rec = values["owner_id"], len(finder.default_ids)
    if len(owner_values) >= n_rec and owner_values.slice(0, n_rec).equals(finder.default_ids):
        where = np.minimum(g_codes["owner_id"], n_rec)               # the owners on record come first
    else:
        where = finder.rows_of(owner_values)[g_codes["owner_id"]]
    unknown = np.flatnonzero(is_default & (where == len(d_share) - 1))
    if unknown.size:                                                 # the default share needs the owner on record
        raise NotFound("owner", owner_ids[int(unknown[0])].as_py())
    share[is_default] = d_share[where][is_default]
    rev_f = col["main"] * float(main_factor) + col["v2g"] * float(v2g_factor) + col["v2g_energy"]
    err = sum_error_yuan(col["abs"], col["terms"]) + col["err"]
    rev_fen, unsure = fen_half_up(rev_f, err)
    own_f = rev_f * share
    scale = np.ones(n)
    others = np.flatnonzero(~is_default).tolist()
    scheme = tiers = None
    if others:
        scheme = np.full(n, "fixed", dtype=object)
        tiers = np.full(n, None, dtype=object)                      # JSON text of tiered contracts' tiers
    contract_of: dict[int, dict] = {}
    for i in others:                                                  # contracts: few
        c = contracts_seen[(owner_ids[i].as_py(), op_ids[i].as_py(), contract_ids[i].as_py())]
        contract_of[i] = c
        scheme[i] = c["scheme"]
        share[i] = np.nan if c.get("owner_share") is None else float(c["owner_share"])
        tiers[i] = None if c.get("tiers") is None else json.dumps(audit._plain(c["tiers"]))
        if c["scheme"] == "fixed" or not np.isfinite(rev_f[i]):
            own_f[i] = rev_f[i] * share[i]
        else:
            own_f[i] = float(owner_part(yuan(float(rev_f[i])), c["scheme"], c.get("owner_share"), c.get("tiers")))
            scale[i] = max([1.0] + [abs(float(t["owner_share"])) for t in c.get("tiers") or []])
        if c["scheme"] == "fixed" and np.isfinite(share[i]):
            scale[i] = max(1.0, abs(share[i]))
    own_fen, unsure_own = fen_half_up(own_f, err * scale)
    redo = np.flatnonzero(unsure | unsure_own).tolist()
    if redo:
        keys_of = {i: (owner_ids[i].as_py(), op_ids[i].as_py(), contract_ids[i].as_py()) for i in redo}
        exact = _exact_owner_gross(conn, set(keys_of.values()), plans, caps, v2g_rate, eligible, finder, sessions)
        for i, k in keys_of.items():
            c = contract_of.get(i) or {"scheme": "fixed", "owner_share": finder.default.get(k[0])}
            if k[2] == "default" and k[0] not in finder.default:
                raise NotFound("owner", k[0])
            e = exact[k]
            revenue = e["main"] * main_factor + e["v2g"] * v2g_factor + e["v2g_energy"]
            part, _ = split_fen(round_statement(revenue),
                                owner_part(revenue, c["scheme"], c.get("owner_share"), c.get("tiers")))
            rev_fen[i], own_fen[i] = fen(revenue), fen(part)
    out = pa.table({"party_id": owner_ids, "operator_id": op_ids, "contract": contract_ids,
                    "revenue": pa.array(rev_fen, pa.int64()), "owner_share": pa.array(own_fen, pa.int64()),
                    "scheme": pa.repeat("fixed", n) if scheme is None else pa.array(scheme, pa.string()),
                    "share": pa.array(share, mask=~np.isfinite(share)),
                    "tiers": pa.nulls(n, pa.string()) if tiers is None else pa.array(tiers, pa.string())})
    totals: dict[str, Decimal] = defaultdict(lambda: ZERO)
    op_names = values["operator_id"].to_pylist()
    for j in np.unique(g_codes["operator_id"]).tolist():              # operators: few
        totals[op_names[j]] = from_fen(int(own_fen[g_codes["operator_id"] == j].sum()))
    return out, totals


def _sessions_of(st: dict) -> tuple[int, datetime] | None:
    """The (year, cut-off) of the metered V2G sessions a settlement counted (None: computed before they were)."""
    v = st["summary"].get("v2g_sessions")
    if not v:
        return None
    until = datetime.fromisoformat(v["until"])
    return int(st["year"]), until if until.tzinfo else until.replace(tzinfo=UTC)


def _v2g_sessions(conn: Connection, rs: rules.RuleSet, year_until: tuple[int, datetime], v2g_rate: Decimal,
                  event_v2g_kwh: dict[str, float], finder: _Contracts, gross: dict, owner_gross: dict,
                  owner_contract: dict, out_lines: list[dict], line_ids: dict) -> dict:
    """Metered V2G sessions into the allocation: per operator and charger a ``v2g_energy`` line (each
    session's discharge by TOU period x the discharge price of the period) and a ``v2g`` subsidy line
    (discharge less what the charger's event evaluations already paid as V2G, x the subsidy rate; the
    pro rata of the V2G budget applies later to all V2G claims); owners get their chargers' part."""
    year, until = year_until
    sessions = v2g_svc.metered_discharge(conn, year, until)
    prices = v2g_svc.discharge_prices(rs) if sessions else []
    per_cp: dict[str, list[dict]] = defaultdict(list)
    skipped = 0
    for s in sessions:
        if s["operator_id"] is None:
            skipped += 1
            continue
        per_cp[s["charge_point_id"]].append(s)
    tot = {"kwh": ZERO, "value": ZERO, "subsidised_kwh": ZERO, "deducted_kwh": ZERO}
    for cp in sorted(per_cp):
        rows = per_cp[cp]
        op = rows[0]["operator_id"]
        metered = sum((sum(r["by_period_kwh"], ZERO) for r in rows), ZERO)
        already = min(yuan(round(event_v2g_kwh.get(cp, 0.0), 3)), metered)
        keep = (metered - already) / metered if metered > 0 else ZERO
        value_exact = ZERO
        claim_exact = ZERO
        for r in rows:
            e = sum(r["by_period_kwh"], ZERO)
            value = sum((k * p for k, p in zip(r["by_period_kwh"], prices, strict=True)), ZERO)
            claim = e * keep * v2g_rate
            value_exact += value
            claim_exact += claim
            c = finder.find(r["owner_id"], op, r["day"], cp)
            key = (r["owner_id"], op, str(c["contract_id"]))
            owner_contract[key] = c
            owner_gross[key]["v2g_energy"] += value
            owner_gross[key]["v2g"] += claim
        tot["kwh"] += metered
        tot["value"] += value_exact
        tot["subsidised_kwh"] += metered - already
        tot["deducted_kwh"] += already
        for kind, qty, exact, rate, note in (
                ("v2g_energy", metered, value_exact, None, f"{len(rows)} metered session(s) x discharge price by "
                                                           "TOU period"),
                ("v2g", metered - already, claim_exact, v2g_rate,
                 f"metered {metered} kWh less {already} kWh paid as V2G in events" if already else None)):
            amount = round_statement(exact)
            gross[op][kind] += amount
            out_lines.append({"line_id": line_ids.get((V2G_SESSIONS, cp, kind)) or new_id("SL"), "operator_id": op,
                              "event_id": V2G_SESSIONS, "evaluation_id": "-", "unit_id": cp, "kind": kind,
                              "quantity": float(qty), "quantity_unit": "kWh",
                              "rate_yuan": None if rate is None else str(rate), "amount_fen": fen(amount),
                              "note": note})
    return {"until": until.isoformat(), "sessions": sum(len(v) for v in per_cp.values()),
            "sessions_without_operator": skipped, "discharge_kwh": str(tot["kwh"]),
            "energy_value": str(round_statement(tot["value"])), "subsidised_kwh": str(tot["subsidised_kwh"]),
            "paid_in_events_kwh": str(tot["deducted_kwh"]),
            "prices_yuan_per_kwh": dict(zip(("valley", "flat", "peak", "critical"), map(str, prices),
                                              strict=False))}


#: the owners file of a settlement revision (``store.settlement_files``): one row per owner, operator and
#: contract, sorted by them; revenue and owner's share in fen; the contract's scheme, fixed share and tiers
#: (JSON text)
OWNERS_SCHEMA = pa.schema({"party_id": pa.string(), "operator_id": pa.string(), "contract": pa.string(),
                           "revenue": pa.int64(), "owner_share": pa.int64(), "scheme": pa.string(),
                           "share": pa.float64(), "tiers": pa.string()})


def _store(conn: Connection, settlement_id: str, revision: int, year: int, alloc: dict,
           lap: Laps | None = None) -> None:
    """Lines and operators' parties as rows; owners' parties as the revision's owners file."""
    lap = lap or Laps(None)
    if alloc["lines"]:
        conn.execute(settlement_lines.insert(), [{**r, "settlement_id": settlement_id, "revision": revision}
                                                 for r in alloc["lines"]])
    rows = [{"settlement_id": settlement_id, "revision": revision, "party_kind": p["party_kind"],
             "party_id": p["party_id"], "operator_id": p["operator_id"], "contract": p["contract"],
             "amounts": audit._plain(p["amounts"])} for p in alloc["parties"]]
    if rows:
        conn.execute(settlement_parties.insert(), rows)
    lap("lines and operator parties (rows)")
    settlement_files.write(conn, settlement_id, revision, year, "owners",
                           alloc["owners"].select(OWNERS_SCHEMA.names).cast(OWNERS_SCHEMA))
    lap("owners file")


def _owner_party_amounts(t: pa.Table) -> dict[tuple, dict]:
    """(party_kind, owner, operator, contract) → {revenue, owner_share} in fen (as ``preview`` gives them)."""
    return {("owner", o, op, c): {"revenue": r, "owner_share": s} for o, op, c, r, s in zip(
        *t.select(["party_id", "operator_id", "contract", "revenue", "owner_share"]).to_pydict().values(),
        strict=True)}


def _rules_of(st: dict) -> rules.RuleSet:
    """The rule set a settlement was computed with, as stored with it (later edits of files do not apply)."""
    return rules.RuleSet(st["ruleset"], st["summary"]["rules"])


def _year_evaluations(conn: Connection, year: int) -> tuple[list[str], list[str]]:
    """Current evaluations of the year's evaluated events, and the events still waiting for one."""
    q = (select(events_t.c.event_id, events_t.c.state, evaluations.c.evaluation_id)
         .select_from(events_t.outerjoin(evaluations, (evaluations.c.event_id == events_t.c.event_id)
                                         & (evaluations.c.status == "current")))
         .where(events_t.c.day >= date(year, 1, 1), events_t.c.day <= date(year, 12, 31),
                events_t.c.state.in_(("executing", "evaluating", "settled")))
         .order_by(events_t.c.day, events_t.c.event_id))
    done, pending = [], []
    for event_id, _state, evaluation_id in conn.execute(q):
        (done if evaluation_id else pending).append(evaluation_id or event_id)
    return done, pending


def _center(actor: Actor) -> None:
    if actor.role != "city_admin":
        raise Forbidden("settlements are computed and signed by the city management center (city_admin)")


def compute(conn: Connection, actor: Actor, year: int, ruleset: str = rules.DEFAULT_RULESET,
            profile: dict[str, float] | None = None) -> dict:
    """Compute (or recompute, while computed or reviewed) the yearly settlement. ``profile``, if given,
    receives the seconds of each step (a profile; benchmarks/evaluate_service.py)."""
    lap = Laps(profile)
    _center(actor)
    if not 2000 <= int(year) <= 2100:
        raise InvalidInput(Violation("year", "must be a calendar year", year))
    rs = rules.load(ruleset)
    live = of_year(conn, year)
    if live is not None and live["state"] in ("approved", "paid"):
        raise Conflict(f"settlement {live['settlement_id']} of {year} is {live['state']}: corrections go through "
                       "disputes, which append to the ledger")
    done, pending = _year_evaluations(conn, year)
    now = datetime.now(UTC)
    lap("year's evaluations")
    alloc = _allocate(conn, rs, done, v2g_sessions=(int(year), now), lap=lap)
    settlement_id = new_id("STL")
    if live is not None:
        conn.execute(settlements.update().where(settlements.c.settlement_id == live["settlement_id"]).values(
            state="superseded", updated_at=now))
        audit.record(conn, actor, "settlement.supersede", "settlement", live["settlement_id"],
                     before={"state": live["state"]}, after={"state": "superseded", "by": settlement_id})
    summary = {**alloc["summary"], "pending_events": pending}
    conn.execute(settlements.insert().values(settlement_id=settlement_id, year=int(year), state="computed",
                                             revision=0, ruleset=rs.id, summary=audit._plain(summary),
                                             created_by=actor.name, created_at=now, updated_at=now))
    _store(conn, settlement_id, 0, int(year), alloc, lap)
    audit.record(conn, actor, "settlement.compute", "settlement", settlement_id,
                 after={"year": year, "ruleset": rs.id, "evaluations": len(done), "pending": len(pending),
                        "main": summary["main"], "v2g": summary["v2g"]})
    out = get(conn, settlement_id)
    lap("settlement row and audit")
    return out


#: ledger postings as columns: a key (party kind, party, operator, account) and an amount in fen
_KEYS = ["party_kind", "party_id", "operator_id", "account"]
_POSTINGS = pa.schema({"party_kind": pa.string(), "party_id": pa.string(), "operator_id": pa.string(),
                       "account": pa.string(), "amount_fen": pa.int64()})


def _entries(entries: dict[tuple, int]) -> pa.Table:
    """{(party_kind, party, operator, account): fen} as a postings table."""
    keys = list(entries)
    return pa.table({**{k: [key[i] for key in keys] for i, k in enumerate(_KEYS)},
                     "amount_fen": [int(v) for v in entries.values()]}, schema=_POSTINGS)


def _sorted(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, [(k, "ascending") for k in _KEYS]))


def _postings(conn: Connection, settlement_id: str, revision: int) -> pa.Table:
    """What the ledger should hold (before payments) for a revision, one row per (party_kind, party,
    operator, account) with its fen, sorted by them: operators' accounts, and each owner's share per
    operator (summed over its contracts) — from the owners file's columns, or from the rows of a
    revision stored before it."""
    owner_file = settlement_files.read(conn, settlement_id, revision, "owners")
    out: dict[tuple, int] = {}
    for p in parties(conn, settlement_id, "operator" if owner_file is not None else None, revision=revision):
        a = p["amounts"]
        if p["party_kind"] == "operator":
            for acc in ("claim_active", "claim_reactive", "claim_reserve", "claim_v2g", "claim_v2g_energy",
                        "prorata_main", "prorata_v2g", "penalty"):
                out[("operator", p["party_id"], p["operator_id"], acc)] = int(a.get(acc, 0))
        else:
            k = ("owner", p["party_id"], p["operator_id"], "owner_share")
            out[k] = out.get(k, 0) + int(a["owner_share"])
    tables = [_entries(out)]
    if owner_file is not None:
        g = owner_file.group_by(["party_id", "operator_id"], use_threads=False).aggregate([("owner_share", "sum")])
        n = g.num_rows
        tables.append(pa.table({"party_kind": pa.array(["owner"] * n, pa.string()), "party_id": g.column("party_id"),
                                "operator_id": g.column("operator_id"),
                                "account": pa.array(["owner_share"] * n, pa.string()),
                                "amount_fen": g.column("owner_share_sum")}, schema=_POSTINGS))
    return _sorted(pa.concat_tables(tables))


def _post(conn: Connection, actor: Actor, st: dict, entries: pa.Table, ref: str, memo: str) -> int:
    """Append the non-zero postings to the ledger in key order, in bulk (COPY on PostgreSQL)."""
    entries = _sorted(entries.filter(pc.not_equal(entries.column("amount_fen"), 0)))
    n = entries.num_rows
    if n:
        now = datetime.now(UTC)
        const = {"settlement_id": (st["settlement_id"], pa.string()), "year": (int(st["year"]), pa.int64()),
                 "ref": (ref, pa.string()), "memo": (memo, pa.string()), "created_by": (actor.name, pa.string()),
                 "created_at": (now, pa.timestamp("us", tz="UTC"))}
        data = pa.table({**{k: entries.column(k) for k in _POSTINGS.names},
                         **{k: pa.repeat(pa.scalar(v, t), n) for k, (v, t) in const.items()}})
        bulk.insert_arrow(conn, ledger_entries, data)
    return n


def transition(conn: Connection, actor: Actor, settlement_id: str, action: str, reason: str | None = None) -> dict:
    """review / approve (posts the ledger, settles the events) / pay (payment entries)."""
    st = get(conn, settlement_id)
    t = lifecycle.check(SETTLEMENT_MACHINE, "settlement", settlement_id, st["state"], action, actor.role, reason)
    posted = 0
    if action == "approve":
        posted = _post(conn, actor, st, _postings(conn, settlement_id, st["revision"]), f"rev{st['revision']}",
                       "approved settlement")
        for eid in st["summary"]["evaluations"]:
            event_id = eva.get(conn, eid)["event_id"]
            if events.get(conn, event_id)["state"] == "evaluating":
                events.transition(conn, actor, event_id, "settle", reason=f"settlement {settlement_id}")
    elif action == "pay":
        posted = _pay(conn, actor, st, "payment")
    conn.execute(settlements.update().where(settlements.c.settlement_id == settlement_id).values(
        state=t.target, updated_at=datetime.now(UTC)))
    audit.record(conn, actor, f"settlement.{action}", "settlement", settlement_id, before={"state": st["state"]},
                 after={"state": t.target, "ledger_entries": posted}, reason=reason)
    return get(conn, settlement_id)


def _pay(conn: Connection, actor: Actor, st: dict, ref: str) -> int:
    q = (select(ledger_entries.c.party_id, func.sum(ledger_entries.c.amount_fen))
         .where(ledger_entries.c.settlement_id == st["settlement_id"], ledger_entries.c.party_kind == "operator")
         .group_by(ledger_entries.c.party_id))
    due = {("operator", op, op, "payment"): -int(total) for op, total in conn.execute(q) if int(total)}
    return _post(conn, actor, st, _entries(due), ref, "paid by the grid company" if ref == "payment" else "balance settled")


def pay_balances(conn: Connection, actor: Actor, settlement_id: str) -> dict:
    """After a paid settlement was adjusted by a dispute: pay (or recover) each operator's balance."""
    _center(actor)
    st = get(conn, settlement_id)
    if st["state"] != "paid":
        raise Conflict(f"settlement {settlement_id} is {st['state']}: balances are paid after 'pay'")
    n = _pay(conn, actor, st, f"balance-rev{st['revision']}")
    audit.record(conn, actor, "settlement.pay_balances", "settlement", settlement_id, after={"ledger_entries": n})
    return {"settlement_id": settlement_id, "ledger_entries": n}


def resettle(conn: Connection, actor: Actor, settlement_id: str, ref: str, memo: str) -> dict:
    """Re-run the allocation on the events' current evaluations as a new revision; once the ledger has
    been posted (approved or paid), append the difference of every account. Returns the differences."""
    st = get(conn, settlement_id)
    if st["state"] == "superseded":
        raise Conflict(f"settlement {settlement_id} was superseded")
    rs = _rules_of(st)
    event_ids = [eva.get(conn, e)["event_id"] for e in st["summary"]["evaluations"]]
    now_current = [eva.current(conn, e)["evaluation_id"] for e in event_ids]
    old_lines = {(r["event_id"], r["unit_id"], r["kind"]): r["line_id"] for r in lines(conn, settlement_id)}
    alloc = _allocate(conn, rs, now_current, line_ids=old_lines, v2g_sessions=_sessions_of(st))
    revision = st["revision"] + 1
    _store(conn, settlement_id, revision, int(st["year"]), alloc)
    before = _postings(conn, settlement_id, st["revision"])
    after = _postings(conn, settlement_id, revision)
    both = before.rename_columns([*_KEYS, "before"]).join(after.rename_columns([*_KEYS, "after"]), keys=_KEYS,
                                                          join_type="full outer", use_threads=False)
    diff = _sorted(pa.table({**{k: both.column(k) for k in _KEYS}, "amount_fen": pc.subtract(
        pc.fill_null(both.column("after"), 0), pc.fill_null(both.column("before"), 0))}, schema=_POSTINGS))
    diff = diff.filter(pc.not_equal(diff.column("amount_fen"), 0))
    posted = 0
    if st["state"] in ("approved", "paid"):
        posted = _post(conn, actor, st, diff, ref, memo)
    summary = {**st["summary"], **alloc["summary"], "evaluations": now_current}
    conn.execute(settlements.update().where(settlements.c.settlement_id == settlement_id).values(
        revision=revision, summary=audit._plain(summary), updated_at=datetime.now(UTC)))
    audit.record(conn, actor, "settlement.resettle", "settlement", settlement_id,
                 before={"revision": st["revision"]}, after={"revision": revision, "ledger_entries": posted},
                 reason=memo)
    return {"revision": revision, "ledger_entries": posted,
            "differences": [{"party_kind": kind, "party_id": party, "operator_id": op, "account": acc,
                             "amount": str(from_fen(v))}
                            for kind, party, op, acc, v in zip(*diff.to_pydict().values(), strict=True)]}


def preview(conn: Connection, settlement_id: str, replace: dict[str, str]) -> dict:
    """Operators' payable and owners' shares if evaluations were replaced ({old id: new id}); writes nothing."""
    st = get(conn, settlement_id)
    ids = [replace.get(e, e) for e in st["summary"]["evaluations"]]
    alloc = _allocate(conn, _rules_of(st), ids, v2g_sessions=_sessions_of(st))
    return {**_owner_party_amounts(alloc["owners"]),
            **{(p["party_kind"], p["party_id"], p["operator_id"], p["contract"]): p["amounts"]
               for p in alloc["parties"]}}


# ---------------------------------------------------------------- statements


def _yuan_amounts(amounts: dict) -> dict:
    return {k: (str(from_fen(v)) if isinstance(v, int) else v) for k, v in amounts.items()}


def _visible(scope: Scope | None, operator_id: str | None = None, owner_id: str | None = None) -> None:
    if scope is None or scope.city_wide:
        return
    if scope.operator_id and operator_id and scope.operator_id != operator_id:
        raise Forbidden(f"operator {operator_id}'s statement is outside your scope")
    if scope.owner_id and (owner_id is None or scope.owner_id != owner_id):
        raise Forbidden("this statement is outside your scope")


def statement_operator(conn: Connection, settlement_id: str, operator_id: str, scope: Scope | None = None) -> dict:
    """An operator's statement: lines, claims, pro rata, penalties, owners' shares, ledger and balance."""
    _visible(scope, operator_id=operator_id)
    st = get(conn, settlement_id)
    name = conn.execute(select(operators.c.name).where(operators.c.operator_id == operator_id)).scalar()
    party = parties(conn, settlement_id, "operator", operator_id)
    if name is None or not party:
        raise NotFound("statement of operator", operator_id)
    return {"kind": "operator", "settlement_id": settlement_id, "year": st["year"], "state": st["state"],
            "revision": st["revision"], "ruleset": st["ruleset"], "party_id": operator_id, "name": name,
            "main": st["summary"]["main"], "v2g": st["summary"]["v2g"],
            "lines": [{**{k: r[k] for k in ("line_id", "event_id", "unit_id", "kind", "quantity", "quantity_unit",
                                            "rate_yuan", "note")}, "amount": str(from_fen(r["amount_fen"]))}
                      for r in lines(conn, settlement_id, operator_id)],
            "amounts": _yuan_amounts(party[0]["amounts"]),
            "owners": [{"owner_id": p["party_id"], "contract": p["contract"], **_yuan_amounts(p["amounts"])}
                       for p in parties(conn, settlement_id, "owner", operator_id=operator_id)],
            "ledger": [_entry(e) for e in ledger(conn, settlement_id, "operator", operator_id)],
            "balance": str(balance(conn, settlement_id, "operator", operator_id))}


def statement_owner(conn: Connection, settlement_id: str, owner_id: str, scope: Scope | None = None) -> dict:
    """An owner's statement: revenue and share per operator and contract, and its ledger entries."""
    _visible(scope, owner_id=owner_id)
    st = get(conn, settlement_id)
    name = conn.execute(select(owners.c.name).where(owners.c.owner_id == owner_id)).scalar()
    items = parties(conn, settlement_id, "owner", owner_id)
    if scope is not None and scope.operator_id:
        items = [p for p in items if p["operator_id"] == scope.operator_id]
    if name is None or not items:
        raise NotFound("statement of owner", owner_id)
    ops = {p["operator_id"] for p in items}
    return {"kind": "owner", "settlement_id": settlement_id, "year": st["year"], "state": st["state"],
            "revision": st["revision"], "ruleset": st["ruleset"], "party_id": owner_id, "name": name,
            "items": [{"operator_id": p["operator_id"], "contract": p["contract"], **_yuan_amounts(p["amounts"])}
                      for p in items],
            "ledger": [_entry(e) for e in ledger(conn, settlement_id, "owner", owner_id) if e["operator_id"] in ops],
            "total_share": str(sum((from_fen(p["amounts"]["owner_share"]) for p in items), ZERO))}


def _entry(e: dict) -> dict:
    return {"entry_id": e["entry_id"], "account": e["account"], "operator_id": e["operator_id"],
            "amount": str(from_fen(e["amount_fen"])), "ref": e["ref"], "memo": e["memo"],
            "created_at": e["created_at"]}


def to_csv(stmt: dict) -> str:
    """A statement as CSV: a header block, then its lines (operator) or items (owner), then the ledger."""
    buf = io.StringIO()
    w = csv.writer(buf)
    for k in ("kind", "settlement_id", "year", "state", "revision", "ruleset", "party_id", "name"):
        w.writerow([k, stmt[k]])
    w.writerow([])
    if stmt["kind"] == "operator":
        cols = ["line_id", "event_id", "unit_id", "kind", "quantity", "quantity_unit", "rate_yuan", "amount", "note"]
        w.writerow(cols)
        for r in stmt["lines"]:
            w.writerow([r[c] if c != "quantity" else f"{r[c]:.3f}" for c in cols])
        w.writerow([])
        for k, v in stmt["amounts"].items():
            w.writerow([k, v])
        w.writerow([])
        w.writerow(["owner_id", "contract", "revenue", "owner_share"])
        for o in stmt["owners"]:
            w.writerow([o["owner_id"], o["contract"], o["revenue"], o["owner_share"]])
    else:
        w.writerow(["operator_id", "contract", "scheme", "revenue", "owner_share"])
        for it in stmt["items"]:
            w.writerow([it["operator_id"], it["contract"], it.get("scheme"), it["revenue"], it["owner_share"]])
        w.writerow(["total_share", stmt["total_share"]])
    w.writerow([])
    w.writerow(["entry_id", "account", "operator_id", "amount", "ref", "memo"])
    for e in stmt["ledger"]:
        w.writerow([e["entry_id"], e["account"], e["operator_id"], e["amount"], e["ref"], e["memo"]])
    if "balance" in stmt:
        w.writerow(["balance", stmt["balance"]])
    return buf.getvalue()


_CSS = ("body{font-family:sans-serif;margin:2em;color:#111}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:4px 8px}td.n{text-align:right;font-variant-numeric:tabular-nums}"
        "@media print{body{margin:0}.noprint{display:none}}")


def _table(head: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(
        f"<td class='n'>{html.escape(str(c))}</td>" if isinstance(c, (int, float, Decimal)) or _numeric(c)
        else f"<td>{html.escape('' if c is None else str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _numeric(c: Any) -> bool:
    try:
        Decimal(str(c))
        return isinstance(c, str) and c.strip() != ""
    except ArithmeticError:
        return False


def to_html(stmt: dict) -> str:
    """A printable HTML statement (print to PDF from the browser)."""
    title = f"openvpp {stmt['year']} settlement statement — {stmt['kind']} {stmt['party_id']}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{html.escape(str(stmt['name']))} · settlement {stmt['settlement_id']} rev {stmt['revision']} · "
             f"state {stmt['state']} · rule set {stmt['ruleset']}</p>"]
    if stmt["kind"] == "operator":
        parts.append("<h2>Lines</h2>" + _table(
            ["line", "event", "unit", "kind", "quantity", "unit", "rate (yuan)", "amount (yuan)", "note"],
            [[r["line_id"], r["event_id"], r["unit_id"], r["kind"], f"{r['quantity']:.3f}", r["quantity_unit"],
              r["rate_yuan"] or "varies", r["amount"], r["note"]] for r in stmt["lines"]]))
        parts.append("<h2>Amounts</h2>" + _table(["item", "yuan"], [[k, v] for k, v in stmt["amounts"].items()]))
        parts.append("<h2>Owners' shares</h2>" + _table(
            ["owner", "contract", "revenue", "share"],
            [[o["owner_id"], o["contract"], o["revenue"], o["owner_share"]] for o in stmt["owners"]]))
    else:
        parts.append("<h2>Revenue and share</h2>" + _table(
            ["operator", "contract", "scheme", "revenue", "share"],
            [[i["operator_id"], i["contract"], i.get("scheme"), i["revenue"], i["owner_share"]]
             for i in stmt["items"]]))
        parts.append(f"<p>Total share: <b>{stmt['total_share']}</b> yuan</p>")
    parts.append("<h2>Ledger</h2>" + _table(
        ["entry", "account", "operator", "amount (yuan)", "ref", "memo"],
        [[e["entry_id"], e["account"], e["operator_id"], e["amount"], e["ref"], e["memo"]] for e in stmt["ledger"]]))
    if "balance" in stmt:
        parts.append(f"<p>Balance: <b>{stmt['balance']}</b> yuan</p>")
    parts.append("</body></html>")
    return "".join(parts)


def line(conn: Connection, settlement_id: str, line_id: str) -> dict:
    row = conn.execute(select(settlement_lines).where(
        settlement_lines.c.settlement_id == settlement_id, settlement_lines.c.line_id == line_id,
        settlement_lines.c.revision == get(conn, settlement_id)["revision"])).mappings().first()
    if row is None:
        raise NotFound("statement line", line_id)
    return dict(row)

