"""The V2G pilot (NDRC 发改办能源〔2024〕718号, rule set ``[ev_pilot]``): KPIs, battery state, V2G settlement lines.

KPIs of a year, per project (a site with piles), per operator and for the city, from the metered
sessions (``ev_sessions``, filled by the OCPP central system):

* valley share of charging energy (target >= 60 %), and of private piles alone (target >= 80 %);
  a private pile is a pile whose owner is residential (a household);
* V2G project: total discharge power = rated power of its V2G chargers (target >= 500 kW), and
  its discharged energy in the year (target >= 100,000 kWh; year to date, and annualised over the
  days the data covers);
* battery indicators per vehicle (its id token): throughput, equivalent full cycles, V2G cycles
  and a simple state-of-health estimate (``kernels.v2g.battery_indicators``).

V2G settlement (:func:`v2g_statement_lines`): each session's discharged energy x the discharge
price of its TOU period (0.453 x coefficient), and the V2G subsidy (rate at most the rule set's
cap, 5 yuan/kWh) from its own yearly budget (20,000,000 yuan), scaled pro rata when the claims
exceed what is left of it. Amounts are ``Decimal`` yuan rounded half-up to the fen, and the
subsidy lines never add up to more than the budget. This is the per-session V2G view; the yearly
settlement (``services.settlement``) posts the same discharge value and subsidy to the ledger per
operator, charger and owner, under the V2G budget shared with the events' V2G claims.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_FLOOR, Decimal

import numpy as np
from sqlalchemy import Connection, and_, select

from openvpp.core import rules as rulesets
from openvpp.core.errors import InvalidInput, Violation
from openvpp.core.money import FEN, round_statement, yuan
from openvpp.core.timeslots import local_midnight_utc
from openvpp.kernels import v2g
from openvpp.model.ev import EvAssumptions, Sessions, Stations
from openvpp.services import v2g as v2g_svc
from openvpp.services.scope import Scope
from openvpp.store.schema import owners, resources
from openvpp.store.schema_ev import PERIODS, ev_sessions

VALLEY = PERIODS.index("valley")


def _year_bounds(year: int) -> tuple[datetime, datetime]:
    return local_midnight_utc(date(year, 1, 1)), local_midnight_utc(date(year + 1, 1, 1))


def _sessions(conn: Connection, year: int, scope: Scope, completed_only: bool = False) -> dict[str, np.ndarray]:
    """Sessions started in the local year with their pile, as arrays."""
    start, end = _year_bounds(year)
    s, r, o = ev_sessions, resources, owners
    cols = [s.c.session_id, s.c.charge_point_id, s.c.id_token, s.c.state, s.c.battery_kwh, s.c.started_at,
            s.c.stopped_at, r.c.operator_id, r.c.site_id, r.c.resource_type, r.c.capacity_kw, o.c.kind.label("owner_kind"),
            *[s.c[f"charge_{p}_kwh"] for p in PERIODS], *[s.c[f"discharge_{p}_kwh"] for p in PERIODS]]
    q = (select(*cols).select_from(s.join(r, r.c.resource_id == s.c.charge_point_id).join(o, o.c.owner_id == r.c.owner_id))
         .where(and_(s.c.started_at >= start, s.c.started_at < end)).order_by(s.c.session_id))
    if completed_only:
        q = q.where(s.c.state == "completed")
    if scope.operator_id:
        q = q.where(r.c.operator_id == scope.operator_id)
    if scope.owner_id:
        q = q.where(r.c.owner_id == scope.owner_id)
    rows = conn.execute(q).all()
    names = [c.name for c in cols]
    data = {n: np.array([row[i] for row in rows], dtype=object) for i, n in enumerate(names)}
    data["charge"] = np.array([[float(row[names.index(f"charge_{p}_kwh")]) for p in PERIODS] for row in rows],
                              float).reshape(len(rows), len(PERIODS))
    data["discharge"] = np.array([[float(row[names.index(f"discharge_{p}_kwh")]) for p in PERIODS] for row in rows],
                                 float).reshape(len(rows), len(PERIODS))
    return data


def _v2g_chargers(conn: Connection, scope: Scope) -> dict[str, np.ndarray]:
    q = select(resources.c.resource_id, resources.c.site_id, resources.c.operator_id, resources.c.capacity_kw).where(
        resources.c.resource_type == "v2g_charger", resources.c.state.in_(("registered", "active")))
    if scope.operator_id:
        q = q.where(resources.c.operator_id == scope.operator_id)
    if scope.owner_id:
        q = q.where(resources.c.owner_id == scope.owner_id)
    rows = conn.execute(q).all()
    return {"site_id": np.array([r[1] for r in rows], dtype=object),
            "operator_id": np.array([r[2] or "-" for r in rows], dtype=object),
            "capacity_kw": np.array([float(r[3]) for r in rows], float)}


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(keys):
        return np.zeros(0, dtype=object), np.zeros(0, np.int64)
    uniq, inv = np.unique(keys.astype(str), return_inverse=True)
    return uniq, inv


def kpi_rows(keys: np.ndarray, charge: np.ndarray, discharge: np.ndarray, private: np.ndarray,
             v2g_keys: np.ndarray, v2g_kw: np.ndarray, targets: dict, days_covered: float, days_in_year: int
             ) -> list[dict]:
    """KPI rows per group key: charging energy and valley shares, V2G power and energy against the targets.

    keys : (n,) group of each session; charge, discharge : (n, 4) kWh per period; private : (n,) bool;
    v2g_keys : (m,) group of each V2G charger; v2g_kw : (m,) its rated discharge power.
    """
    all_keys, inv = _group(np.r_[keys.astype(str), v2g_keys.astype(str)])
    k = len(all_keys)
    n = len(keys)
    s_inv, c_inv = inv[:n], inv[n:]

    def per(values: np.ndarray, idx: np.ndarray = s_inv) -> np.ndarray:
        return np.bincount(idx, weights=values, minlength=k) if len(values) else np.zeros(k)

    total = per(charge.sum(axis=1))
    valley = per(charge[:, VALLEY])
    p_total = per(charge.sum(axis=1) * private)
    p_valley = per(charge[:, VALLEY] * private)
    dis = per(discharge.sum(axis=1))
    power = per(v2g_kw, c_inv)
    n_v2g = per(np.ones(len(v2g_kw)), c_inv)
    scale = days_in_year / days_covered if days_covered > 0 else 0.0
    out = []
    for i, key in enumerate(all_keys):
        share = valley[i] / total[i] if total[i] > 0 else None
        pshare = p_valley[i] / p_total[i] if p_total[i] > 0 else None
        row = {"key": str(key), "charge_kwh": round(float(total[i]), 3), "valley_kwh": round(float(valley[i]), 3),
               "valley_share": None if share is None else round(float(share), 4),
               "valley_share_ok": None if share is None else bool(share >= targets["valley_share_min"]),
               "private_charge_kwh": round(float(p_total[i]), 3),
               "private_valley_share": None if pshare is None else round(float(pshare), 4),
               "private_valley_share_ok": None if pshare is None else bool(pshare >= targets["valley_share_private_min"]),
               "v2g_chargers": int(n_v2g[i]), "v2g_discharge_kw": round(float(power[i]), 1),
               "v2g_discharge_kwh": round(float(dis[i]), 3),
               "v2g_discharge_kwh_annualised": round(float(dis[i] * scale), 1)}
        if n_v2g[i] > 0:
            row["v2g_power_ok"] = bool(power[i] >= targets["v2g_project_min_kw"])
            row["v2g_energy_ok"] = bool(dis[i] * scale >= targets["v2g_project_min_kwh_per_year"])
        out.append(row)
    return out


def pilot_report(conn: Connection, year: int, scope: Scope = Scope(), ruleset: str = rulesets.DEFAULT_RULESET,
                 levels: tuple[str, ...] = ("city", "operator", "project")) -> dict:
    """The pilot report of ``year`` for what ``scope`` may see (module docstring)."""
    rs = rulesets.load(ruleset)
    targets = {k: float(v) for k, v in rs.section("ev_pilot").items() if k != "source"}
    data = _sessions(conn, year, scope)
    chargers = _v2g_chargers(conn, scope)
    n = len(data["session_id"])
    private = (data["owner_kind"] == "residential") if n else np.zeros(0, bool)
    start, end = _year_bounds(year)
    days_in_year = (end - start).days
    if n:
        first = min(data["started_at"])
        last = max([t for t in data["stopped_at"] if t is not None] + list(data["started_at"]))
        days = max(1.0, (last - first).total_seconds() / 86400.0)
    else:
        days = 0.0
    out: dict = {"year": year, "ruleset": rs.id, "scope": scope.label(), "targets": targets, "sessions": n,
                 "days_covered": round(days, 2)}
    key_of = {"city": (np.full(n, "city", dtype=object), np.full(len(chargers["site_id"]), "city", dtype=object)),
              "operator": (np.array([o or "-" for o in data["operator_id"]], dtype=object), chargers["operator_id"]),
              "project": (data["site_id"], chargers["site_id"])}
    for level in levels:
        sk, ck = key_of[level]
        rows = kpi_rows(sk, data["charge"], data["discharge"], private, ck, chargers["capacity_kw"], targets, days,
                        days_in_year)
        if level == "project":
            rows = [r for r in rows if r["v2g_chargers"] > 0 or r["charge_kwh"] > 0]
        # a scope with neither sessions nor V2G chargers: the city row of one empty group
        out[level] = rows if level != "city" else (rows[0] if rows else kpi_rows(
            np.array(["city"], dtype=object), np.zeros((1, 4)), np.zeros((1, 4)), np.zeros(1, bool),
            np.zeros(0, dtype=object), np.zeros(0), targets, days, days_in_year)[0])
    out["battery"] = battery_summary(data, EvAssumptions.from_mapping(rs.data.get("ev")))
    return out


def battery_summary(data: dict, assumptions: EvAssumptions) -> dict:
    """Battery indicators per vehicle (id token) with a known battery size, summarised."""
    tokens = np.array([t or "" for t in data["id_token"]], dtype=object)
    cap = np.array([np.nan if b is None else float(b) for b in data["battery_kwh"]], float)
    known = (tokens != "") & np.isfinite(cap) & (cap > 0)
    if not known.any():
        return {"vehicles": 0, "note": "no session reported a vehicle id and battery size"}
    veh, inv = np.unique(tokens[known].astype(str), return_inverse=True)
    ch = np.bincount(inv, weights=data["charge"][known].sum(axis=1))
    dis = np.bincount(inv, weights=data["discharge"][known].sum(axis=1))
    b = np.bincount(inv, weights=cap[known]) / np.bincount(inv)
    ind = v2g.battery_indicators(ch, dis, b, 0.0, assumptions)
    return {"vehicles": len(veh), "throughput_kwh": round(float(ind["throughput_kwh"].sum()), 3),
            "efc_mean": round(float(np.nanmean(ind["efc"])), 3), "efc_max": round(float(np.nanmax(ind["efc"])), 3),
            "v2g_efc_mean": round(float(np.nanmean(ind["v2g_efc"])), 3),
            "soh_min": round(float(np.nanmin(ind["soh"])), 4), "soh_mean": round(float(np.nanmean(ind["soh"])), 4),
            "model": "linear fade: cycle wear to end-of-life SoH over the cycle life (calendar fade not counted "
                     "for lack of vehicle age)"}


# ---------------------------------------------------------------- V2G settlement

def v2g_statement_lines(conn: Connection, year: int, scope: Scope = Scope(), ruleset: str = rulesets.DEFAULT_RULESET,
                        subsidy_yuan_per_kwh: Decimal | str | None = None,
                        already_paid_yuan: Decimal | str = "0") -> dict:
    """Statement lines of V2G discharge in ``year`` (completed sessions): energy value and subsidy.

    subsidy_yuan_per_kwh : the rate; default and maximum the rule set's ``[subsidy] v2g_discharge_yuan_per_kwh``.
    already_paid_yuan : V2G subsidy of the year already paid (until the ledger keeps it): reduces the budget.
    Returns ``{"lines": [...], "totals": {...}}``; every line names its rule set.
    """
    rs = rulesets.load(ruleset)
    sub = rs.section("subsidy")
    cap = yuan(sub["v2g_discharge_yuan_per_kwh"])
    rate = cap if subsidy_yuan_per_kwh is None else yuan(subsidy_yuan_per_kwh)
    if rate < 0 or rate > cap:
        raise InvalidInput(Violation("subsidy_yuan_per_kwh", f"must be between 0 and the cap {cap} yuan/kWh "
                                     f"({rs.id} [subsidy] v2g_discharge_yuan_per_kwh)", str(rate)))
    budget = max(Decimal(0), yuan(sub["v2g_yearly_budget_yuan"]) - yuan(already_paid_yuan))
    price = v2g_svc.discharge_prices(rs)
    data = _sessions(conn, year, scope, completed_only=True)
    # energy metered to the Wh
    dis = np.round(data["discharge"], 3)
    keep = dis.sum(axis=1) > 0
    # the float kernel gives the scale; money is computed in Decimal from the metered kWh
    kern = v2g.settle_discharge(dis[keep], np.array([float(p) for p in price]), float(rate), float(budget))
    lines: list[dict] = []
    energy_d = [[yuan(repr(float(x))) for x in row] for row in dis[keep]]
    claims = [sum(row, Decimal(0)) * rate for row in energy_d]
    total_claim = sum(claims, Decimal(0))
    scale = Decimal(1) if total_claim <= budget or total_claim == 0 else budget / total_claim
    paid = [c * scale for c in claims]
    rounded = [round_statement(p) for p in paid]
    # never more than the budget in total: take a fen back from the lines rounded up the most
    excess = sum(rounded, Decimal(0)) - budget.quantize(FEN, rounding=ROUND_FLOOR)
    if excess > 0:
        order = sorted(range(len(paid)), key=lambda i: rounded[i] - paid[i], reverse=True)
        for i in order[:int(excess / FEN)]:
            rounded[i] -= FEN
    idx = np.flatnonzero(keep)
    for j, i in enumerate(idx):
        e = energy_d[j]
        value = round_statement(sum((e[p] * price[p] for p in range(len(PERIODS))), Decimal(0)))
        common = {"year": year, "session_id": str(data["session_id"][i]), "charge_point_id": str(data["charge_point_id"][i]),
                  "operator_id": data["operator_id"][i], "project_id": str(data["site_id"][i]), "ruleset": rs.id}
        energy = sum(e, Decimal(0))
        lines.append({**common, "line": "v2g_discharge_energy", "energy_kwh": energy,
                      "by_period_kwh": {p: e[k] for k, p in enumerate(PERIODS)},
                      "unit_price_yuan_per_kwh": {p: price[k] for k, p in enumerate(PERIODS)}, "amount_yuan": value})
        lines.append({**common, "line": "v2g_subsidy", "energy_kwh": energy, "unit_price_yuan_per_kwh": rate,
                      "claim_yuan": round_statement(claims[j]), "scale": scale, "amount_yuan": rounded[j]})
    totals = {"sessions": len(idx), "energy_kwh": sum((sum(e, Decimal(0)) for e in energy_d), Decimal(0)),
              "energy_value_yuan": sum((ln["amount_yuan"] for ln in lines if ln["line"] == "v2g_discharge_energy"),
                                       Decimal(0)),
              "subsidy_claim_yuan": round_statement(total_claim), "subsidy_yuan": sum(rounded, Decimal(0)),
              "budget_left_yuan": budget, "scale": scale, "scale_float": kern.scale, "ruleset": rs.id}
    return {"lines": lines, "totals": totals}


# ---------------------------------------------------------------- flexibility for pools and declarations

def fleet_envelope(sessions: Sessions, planned_kw: np.ndarray, stations: Stations | None = None,
                   ruleset: str = rulesets.DEFAULT_RULESET) -> v2g.Envelope:
    """The fleet's per-slot up/down kW and stored-energy band around a plan (``kernels.v2g.envelope``),
    with the rule set's technical EV assumptions; what pools and declarations read for EV resources."""
    return v2g.envelope(sessions, planned_kw, stations, EvAssumptions.from_mapping(rulesets.load(ruleset).data.get("ev")))
