"""Carbon (碳普惠 linkage): emission reduction of curtailed energy, per event, operator and year.

Reduction (tCO2) = curtailed energy (MWh) × grid emission factor (tCO2/MWh) from the rule set's
``[carbon]`` section, for the Southern grid and the national grid (``domain/RULES.md``, "Carbon").
Only curtailed energy counts, never shifted energy: the evaluation stores per resource and slot
its credited energy less the load that came back around the window (rebound), and nothing for
resources that only shift load (storage, EV charging and swapping, V2G, base stations on backup
batteries, shore power). Valley filling, reactive and reserve events curtail nothing.

Each event's reduction uses the grid factors of the rule set its evaluation was computed with
(``evaluations.ruleset``, loaded as the event names it), so a year that spans two rule-set versions
is reported with each version's factors; the rebound window and the load-shifting types come from the
same ``[carbon]`` section and are recorded with the evaluation (``inputs.carbon``).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date

from sqlalchemy import Connection, func, select

from openvpp.core import rules
from openvpp.core.errors import Conflict
from openvpp.services import evaluation as eva
from openvpp.services.scope import Scope
from openvpp.store.schema_events import events
from openvpp.store.schema_settlement import evaluation_rows, evaluations

FIELDS = ("year", "event_id", "day", "product", "operator_id", "credited_kwh", "curtailed_kwh",
          "southern_grid_tco2", "national_tco2", "ruleset")


def factors(ruleset: str = rules.DEFAULT_RULESET) -> dict:
    sec = rules.load(ruleset).section("carbon")
    return {"southern_grid_t_per_mwh": float(sec["southern_grid_t_per_mwh"]),
            "national_t_per_mwh": float(sec["national_t_per_mwh"]), "source": sec.get("source"),
            "ruleset": rules.load(ruleset).id}


def _factors_of(name: str, evaluation_ruleset: str) -> dict:
    try:
        return factors(name)
    except KeyError as exc:
        raise Conflict(f"the carbon factors of rule set {evaluation_ruleset} ({name}), which an evaluation used, "
                       f"cannot be read: {exc.args[0]}") from None


def _shown(used: dict[str, dict]) -> dict:
    """The factors to show above a report: the one rule set's, or each value joined when several apply."""
    if len(used) <= 1:
        return next(iter(used.values()), None) or factors()
    fs = list(used.values())
    return {k: " | ".join(str(f[k]) for f in fs) for k in ("southern_grid_t_per_mwh", "national_t_per_mwh",
                                                             "source", "ruleset")}


def report(conn: Connection, year: int | None = None, event_id: str | None = None, operator_id: str | None = None,
           scope: Scope | None = None) -> dict:
    """Rows per event and operator from the events' current evaluations, with totals per operator and year.

    Every row is converted with the factors of its evaluation's rule set (``ruleset`` and the factors
    are on the row; ``factors_by_ruleset`` lists them; ``factors`` is the one rule set's, or each value
    joined with " | " when the rows use several). An owner's scope counts only its own resources'
    curtailed energy.
    """
    r = evaluation_rows
    q = (select(events.c.event_id, events.c.day, events.c.product, r.c.operator_id, evaluations.c.ruleset,
                events.c.ruleset.label("ruleset_file"),
                func.sum(r.c.credited).label("credited"), func.sum(r.c.curtailed_kwh).label("curtailed"))
         .select_from(r.join(evaluations, evaluations.c.evaluation_id == r.c.evaluation_id)
                      .join(events, events.c.event_id == evaluations.c.event_id))
         .where(evaluations.c.status == "current", r.c.level == "unit")
         .group_by(events.c.event_id, events.c.day, events.c.product, r.c.operator_id, evaluations.c.ruleset,
                   events.c.ruleset)
         .order_by(events.c.day, events.c.event_id, r.c.operator_id))
    if year is not None:
        q = q.where(events.c.day >= date(year, 1, 1), events.c.day <= date(year, 12, 31))
    if event_id:
        q = q.where(events.c.event_id == event_id)
    if scope is not None and scope.operator_id:
        operator_id = scope.operator_id
    if operator_id:
        q = q.where(r.c.operator_id == operator_id)
    rows = []
    used: dict[str, dict] = {}
    # an owner's resources: their results are in each evaluation's resource file (evaluation_rows before 0012)
    found = eva.owner_rows(conn, scope.owner_id, year, event_id, operator_id) \
        if scope is not None and scope.owner_id else conn.execute(q)
    for ev_id, day, product, op, ruleset, ruleset_file, credited, curtailed in found:
        if ruleset not in used:
            used[ruleset] = _factors_of(ruleset_file, ruleset)
        f = used[ruleset]
        kwh = float(curtailed or 0.0)
        rows.append({"year": day.year, "event_id": ev_id, "day": day, "product": product, "operator_id": op,
                     "credited_kwh": float(credited or 0.0) if product not in ("reactive", "reserve") else 0.0,
                     "curtailed_kwh": kwh, "southern_grid_tco2": kwh / 1000 * f["southern_grid_t_per_mwh"],
                     "national_tco2": kwh / 1000 * f["national_t_per_mwh"], "ruleset": ruleset,
                     "southern_grid_t_per_mwh": f["southern_grid_t_per_mwh"],
                     "national_t_per_mwh": f["national_t_per_mwh"]})
    by_op: dict[str, dict] = defaultdict(lambda: {"curtailed_kwh": 0.0, "southern_grid_tco2": 0.0,
                                                  "national_tco2": 0.0})
    by_year: dict[int, dict] = defaultdict(lambda: {"curtailed_kwh": 0.0, "southern_grid_tco2": 0.0,
                                                    "national_tco2": 0.0})
    for row in rows:
        for acc in (by_op[row["operator_id"]], by_year[row["year"]]):
            for k in ("curtailed_kwh", "southern_grid_tco2", "national_tco2"):
                acc[k] += row[k]
    return {"factors": _shown(used), "factors_by_ruleset": used, "rows": rows,
            "by_operator": [{"operator_id": k, **v} for k, v in sorted(by_op.items())],
            "by_year": [{"year": k, **v} for k, v in sorted(by_year.items())]}


def to_csv(rep: dict) -> str:
    """The report's rows as CSV (tCO2 to 6 decimals, kWh to 3), then the totals per operator and year."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(FIELDS)
    for r in rep["rows"]:
        w.writerow([r["year"], r["event_id"], r["day"], r["product"], r["operator_id"], f"{r['credited_kwh']:.3f}",
                    f"{r['curtailed_kwh']:.3f}", f"{r['southern_grid_tco2']:.6f}", f"{r['national_tco2']:.6f}",
                    r["ruleset"]])
    for total in rep["by_operator"]:
        w.writerow(["total", "", "", "", total["operator_id"], "", f"{total['curtailed_kwh']:.3f}",
                    f"{total['southern_grid_tco2']:.6f}", f"{total['national_tco2']:.6f}"])
    for total in rep["by_year"]:
        w.writerow([total["year"], "total", "", "", "", "", f"{total['curtailed_kwh']:.3f}",
                    f"{total['southern_grid_tco2']:.6f}", f"{total['national_tco2']:.6f}"])
    w.writerow([])
    for f in rep["factors_by_ruleset"].values() or [rep["factors"]]:
        w.writerow(["factors (tCO2/MWh)", f"southern grid {f['southern_grid_t_per_mwh']}",
                    f"national {f['national_t_per_mwh']}", f["source"], f["ruleset"]])
    return buf.getvalue()
