"""CLI of evaluation, settlement, disputes and carbon: ``openvpp evaluate``, ``openvpp settle``,
``openvpp report carbon|event|operator|year``. Registered in ``cli/main.py``::

    app.add_typer(settlement.settle_app, name="settle")
    app.command("evaluate")(settlement.evaluate)
    report_app.command("carbon")(settlement.report_carbon)
    report_app.command("event")(settlement.report_event)
    report_app.command("operator")(settlement.report_operator)
    report_app.command("year")(settlement.report_year)

The commands act as the city management center on ``OPENVPP_DATABASE_URL``; meter data comes
from the telemetry store. The ``report`` commands only read: an event's stored evaluation, an
operator's statement, a year's settlement.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from openvpp.core import rules
from openvpp.core.errors import OpenVPPError
from openvpp.core.settings import Settings

err = Console(stderr=True)
out = Console()
CLI_ACTOR = ("cli", "city_admin")

settle_app = typer.Typer(help="Yearly settlement. Example: openvpp settle --year 2025", no_args_is_help=False,
                         rich_markup_mode="rich")


def _engine():
    from openvpp.store import db

    return db.get_engine(Settings.from_env().database_url)


def _actor():
    from openvpp.store.audit import Actor

    return Actor(*CLI_ACTOR)


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}")
    for v in getattr(exc, "violations", [])[:20]:
        err.print(f"  - {v}")
    raise typer.Exit(2)


def _print_evaluation(res: dict, head: str) -> None:
    """An evaluation's totals after ``head`` (which names it), then its per-unit table."""
    t = res["totals"]
    q = t["quantity_unit"]
    out.print(f"{head} sha256 {res['telemetry_sha256'][:12]}): credited {t['credited']:,.1f} {q}, "
              f"{t['slots_valid']}/{t['slots_cleared']} unit-slots valid, {t['not_measured']} resource-slots "
              "not measured")
    table = Table(title="per unit")
    for col in ("unit", "operator", f"cleared {q}", f"response {q}", "credited", "ratio"):
        table.add_column(col, justify="left" if col in ("unit", "operator") else "right")
    for u in res["units"]:
        cleared = sum(s["cleared_kw"] for s in u["slots"]) * 0.25
        resp = sum(s["response_kw"] or 0.0 for s in u["slots"]) * 0.25
        table.add_row(u["unit_id"], u["operator_id"], f"{cleared:,.1f}", f"{resp:,.1f}",
                      f"{sum(s['credited'] for s in u['slots']):,.1f}", f"{resp / cleared:.1%}" if cleared else "-")
    out.print(table)


def _dump(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str))


def _spec(baseline: str | None, params: list[str], adjust: str | None):
    from openvpp.kernels.baseline import BaselineSpec

    if baseline is None and not params and adjust is None:
        return None
    parsed = {}
    for p in params:
        key, _, value = p.partition("=")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    adjustment = None
    if adjust:
        kind, _, cap = adjust.partition(":")
        adjustment = {"kind": {"mult": "multiplicative", "add": "additive"}.get(kind, kind),
                      "cap": float(cap or 0.2)}
    return BaselineSpec(baseline or "gbt-workday", parsed, adjustment)


def evaluate(event_id: str = typer.Argument(..., help="event id, e.g. EVT-01J..."),
             baseline: str | None = typer.Option(None, help="gbt-workday, gbt-similar, high-x-of-y"),
             param: list[str] = typer.Option([], "--param", help="baseline parameter k=v (repeatable)"),
             adjust: str | None = typer.Option(None, help="same-day adjustment mult:0.2 or add:0.2"),
             history_days: int = typer.Option(30, "--history-days", min=1, max=400),
             reason: str | None = typer.Option(None),
             as_json: bool = typer.Option(False, "--json", help="print JSON only")) -> None:
    """Evaluate an event from the telemetry store: baseline, metered, response, cleared, ratio, credited.

    Example: openvpp evaluate EVT-01J5ABC --baseline high-x-of-y --param x=4 --param y=5
    """
    from openvpp.core.memory import retain_freed_memory
    from openvpp.services import evaluation as eva

    retain_freed_memory()           # the evaluation's arrays reuse what the meter read freed (core/memory.py)
    try:
        with _engine().begin() as conn:
            res = eva.evaluate(conn, _actor(), event_id, eva.StoreMeterSource(conn),
                               spec=_spec(baseline, param, adjust), history_days=history_days, reason=reason)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        _dump(res)
        return
    _print_evaluation(res, f"{res['event_id']} v{res['version']} ({res['baseline_id']}, rule set {res['ruleset']}, "
                           "meter")


@settle_app.callback(invoke_without_command=True)
def settle(ctx: typer.Context,
           year: int | None = typer.Option(None, "--year", help="compute (or recompute) this year's settlement"),
           ruleset: str = typer.Option(rules.DEFAULT_RULESET, help="rule set id or TOML path"),
           as_json: bool = typer.Option(False, "--json", help="print JSON only")) -> None:
    """Compute the yearly settlement, then review / approve / pay it; statements, ledger, disputes.

    Example: openvpp settle --year 2025
    Example: openvpp settle transition STL-01J... approve
    Example: openvpp settle statement STL-01J... --operator OP01 --format html --out op01.html
    """
    if ctx.invoked_subcommand is not None:
        return
    if year is None:
        err.print(ctx.get_help())
        raise typer.Exit(2)
    from openvpp.core.memory import retain_freed_memory
    from openvpp.services import settlement as stl

    retain_freed_memory()
    try:
        with _engine().begin() as conn:
            st = stl.compute(conn, _actor(), year, ruleset)
            party = stl.parties(conn, st["settlement_id"], "operator")
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        _dump({**st, "operators": [{"operator_id": p["party_id"], **stl._yuan_amounts(p["amounts"])}
                                   for p in party]})
        return
    s = st["summary"]
    out.print(f"{st['settlement_id']} ({year}, {st['state']}, rule set {st['ruleset']}): claims {s['main']['claims']} "
              f"yuan of a {s['main']['budget']} budget, factor {float(s['main']['factor']):.6f}, paid "
              f"{s['main']['paid']}; V2G {s['v2g']['paid']} of {s['v2g']['budget']}; "
              f"{len(s['evaluations'])} events, {len(s['pending_events'])} waiting for evaluation")
    table = Table(title="per operator (yuan)")
    for col in ("operator", "claims", "pro rata", "penalty", "net", "owners", "retained"):
        table.add_column(col, justify="left" if col == "operator" else "right")
    for p in party:
        a = stl._yuan_amounts(p["amounts"])
        claims = sum(stl.from_fen(p["amounts"][f"claim_{k}"]) for k in ("active", "reactive", "reserve", "v2g"))
        table.add_row(p["party_id"], str(claims), str(stl.from_fen(p["amounts"]["prorata_main"]
                                                                     + p["amounts"]["prorata_v2g"])),
                      a["penalty"], a["net"], a["owner_shares"], a["retained"])
    out.print(table)


@settle_app.command("transition")
def settle_transition(settlement_id: str, action: str = typer.Argument(..., help="review, approve or pay"),
                      reason: str | None = typer.Option(None)) -> None:
    """Move a settlement: review → approve (posts the ledger) → pay.

    Example: openvpp settle transition STL-01J... approve
    """
    from openvpp.services import settlement as stl

    try:
        with _engine().begin() as conn:
            st = stl.transition(conn, _actor(), settlement_id, action, reason)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"{settlement_id}: {st['state']}")


@settle_app.command("statement")
def settle_statement(settlement_id: str, operator: str | None = typer.Option(None, "--operator"),
                     owner: str | None = typer.Option(None, "--owner"),
                     fmt: str = typer.Option("csv", "--format", help="csv, html or json"),
                     out_file: Path | None = typer.Option(None, "--out", help="write to this file")) -> None:
    """A statement of an operator or an owner as CSV, printable HTML or JSON.

    Example: openvpp settle statement STL-01J... --operator OP01 --format html --out op01.html
    """
    from openvpp.services import settlement as stl

    if (operator is None) == (owner is None) or fmt not in ("csv", "html", "json"):
        err.print("[red]error:[/red] give exactly one of --operator / --owner, and --format csv|html|json")
        raise typer.Exit(2)
    try:
        with _engine().connect() as conn:
            stmt = (stl.statement_operator(conn, settlement_id, operator) if operator
                    else stl.statement_owner(conn, settlement_id, owner))
    except OpenVPPError as exc:
        _fail(exc)
    text = {"csv": stl.to_csv, "html": stl.to_html}.get(fmt, lambda s: json.dumps(s, default=str,
                                                                                   ensure_ascii=False))(stmt)
    if out_file:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"wrote {out_file}")
    else:
        print(text)


@settle_app.command("ledger")
def settle_ledger(settlement_id: str, operator: str | None = typer.Option(None, "--operator"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """The settlement's append-only ledger.

    Example: openvpp settle ledger STL-01J... --operator OP01
    """
    from openvpp.services import settlement as stl

    with _engine().connect() as conn:
        rows = stl.ledger(conn, settlement_id, operator_id=operator)
    if as_json:
        _dump([{**r, "amount": str(stl.from_fen(r["amount_fen"]))} for r in rows])
        return
    table = Table(title=f"ledger {settlement_id}")
    for col in ("#", "party", "account", "yuan", "ref", "memo"):
        table.add_column(col, justify="right" if col in ("#", "yuan") else "left")
    for r in rows:
        table.add_row(str(r["entry_id"]), f"{r['party_kind']} {r['party_id']}", r["account"],
                      str(stl.from_fen(r["amount_fen"])), r["ref"] or "", r["memo"] or "")
    out.print(table)


@settle_app.command("pay-balances")
def settle_pay_balances(settlement_id: str) -> None:
    """Pay (or recover) the balances disputes left on a paid settlement.

    Example: openvpp settle pay-balances STL-01J...
    """
    from openvpp.services import settlement as stl

    try:
        with _engine().begin() as conn:
            res = stl.pay_balances(conn, _actor(), settlement_id)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"{settlement_id}: {res['ledger_entries']} payment entries")


@settle_app.command("dispute")
def settle_dispute(dispute_id: str, action: str = typer.Argument(..., help="reevaluate, approve or reject"),
                   reason: str | None = typer.Option(None)) -> None:
    """The center's side of a dispute: re-evaluate with the evidence, then approve or reject.

    Example: openvpp settle dispute DSP-01J... reevaluate
    Example: openvpp settle dispute DSP-01J... approve --reason "meter fault confirmed"
    """
    from openvpp.services import disputes
    from openvpp.services import evaluation as eva

    try:
        with _engine().begin() as conn:
            if action == "reevaluate":
                d = disputes.reevaluate(conn, _actor(), dispute_id, eva.StoreMeterSource(conn))
            elif action in ("approve", "reject"):
                d = disputes.decide(conn, _actor(), dispute_id, action == "approve", reason or "")
            else:
                err.print("[red]error:[/red] action must be reevaluate, approve or reject")
                raise typer.Exit(2)
    except OpenVPPError as exc:
        _fail(exc)
    _dump(d)


def report_carbon(year: int | None = typer.Option(None, "--year"), event: str | None = typer.Option(None, "--event"),
                  operator: str | None = typer.Option(None, "--operator"),
                  as_csv: bool = typer.Option(False, "--csv", help="print CSV"),
                  out_file: Path | None = typer.Option(None, "--out", help="write the CSV to this file"),
                  as_json: bool = typer.Option(False, "--json", help="print JSON only")) -> None:
    """Emission reduction of curtailed energy per event, operator and year (Southern grid and national).

    Example: openvpp report carbon --year 2025 --out carbon-2025.csv
    """
    from openvpp.services import carbon

    with _engine().connect() as conn:
        rep = carbon.report(conn, year, event, operator)
    if as_json:
        _dump(rep)
        return
    if as_csv or out_file:
        text = carbon.to_csv(rep)
        if out_file:
            out_file.write_text(text, encoding="utf-8")
            err.print(f"wrote {out_file}")
        else:
            print(text, end="")
        return
    table = Table(title=f"carbon (factors {rep['factors']['southern_grid_t_per_mwh']} / "
                        f"{rep['factors']['national_t_per_mwh']} tCO2/MWh)")
    for col in ("year", "operator", "curtailed MWh", "Southern grid tCO2", "national tCO2"):
        table.add_column(col, justify="left" if col == "operator" else "right")
    for y in rep["by_year"]:
        table.add_row(str(y["year"]), "all", f"{y['curtailed_kwh'] / 1000:,.3f}", f"{y['southern_grid_tco2']:,.3f}",
                      f"{y['national_tco2']:,.3f}")
    for o in rep["by_operator"]:
        table.add_row("", o["operator_id"], f"{o['curtailed_kwh'] / 1000:,.3f}", f"{o['southern_grid_tco2']:,.3f}",
                      f"{o['national_tco2']:,.3f}")
    out.print(table)


# ---------------------------------------------------------------- reports (read only)

ROW_FIELDS = ("level", "key_id", "unit_id", "operator_id", "owner_id", "resource_type", "slot", "baseline_kw",
              "metered_kw", "response_kw", "cleared_kw", "ratio", "credited", "quantity_unit", "v2g_kwh", "shortfall",
              "curtailed_kwh", "price_yuan")


def _emit(text: str, out_file: Path | None) -> None:
    if out_file:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"wrote {out_file}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")


def _rows_csv(rows: list[dict], quantity_unit: str) -> str:
    """Stored evaluation rows as CSV (kW columns hold kvar for a reactive event; ``quantity_unit`` says)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(ROW_FIELDS)
    for r in rows:
        w.writerow(["" if (v := ({**r, "quantity_unit": quantity_unit}).get(k)) is None else v for k in ROW_FIELDS])
    return buf.getvalue()


def report_event(event_id: str = typer.Argument(..., help="event id, e.g. EVT-01J..."),
                 version: int | None = typer.Option(None, "--version", help="a stored version (default: current)"),
                 level: str = typer.Option("unit", "--level", help="unit or resource (rows of --csv and --json)"),
                 as_csv: bool = typer.Option(False, "--csv", help="print the stored rows as CSV"),
                 out_file: Path | None = typer.Option(None, "--out", help="write the CSV to this file"),
                 as_json: bool = typer.Option(False, "--json", help="print JSON only")) -> None:
    """An event's stored evaluation (nothing is re-computed) and what its year's settlement pays for it.

    Example: openvpp report event EVT-01J5ABC
    Example: openvpp report event EVT-01J5ABC --version 1 --level resource --csv --out evt.csv
    """
    from openvpp.services import evaluation as eva
    from openvpp.services import events
    from openvpp.services import settlement as stl

    if level not in ("unit", "resource"):
        err.print("[red]error:[/red] --level must be unit or resource")
        raise typer.Exit(2)
    try:
        with _engine().connect() as conn:
            ev = events.get(conn, event_id)
            if version is None:
                head = eva.current(conn, event_id)
            else:
                head = next((v for v in eva.versions(conn, event_id) if v["version"] == version), None)
                if head is None:
                    err.print(f"[red]error:[/red] event {event_id} has no evaluation version {version} (versions: "
                              f"{', '.join(str(v['version']) for v in eva.versions(conn, event_id)) or 'none'})")
                    raise typer.Exit(2)
            res = eva.summary(conn, head["evaluation_id"], resources_too=level == "resource")
            rows = eva.rows(conn, head["evaluation_id"], level)
            st = stl.of_year(conn, ev["day"].year)
            money = [] if st is None else [r for r in stl.lines(conn, st["settlement_id"]) if r["event_id"] == event_id]
    except OpenVPPError as exc:
        _fail(exc)
    if as_csv or out_file:
        _emit(_rows_csv(rows, res["quantity_unit"]), out_file)
        return
    lines = [{**{k: r[k] for k in ("line_id", "operator_id", "unit_id", "kind", "quantity", "quantity_unit",
                                   "rate_yuan", "evaluation_id", "note")}, "amount": str(stl.from_fen(r["amount_fen"]))}
             for r in money]
    settlement = None if st is None else {"settlement_id": st["settlement_id"], "state": st["state"],
                                          "revision": st["revision"], "lines": lines}
    if as_json:
        _dump({**res, "rows": rows, "settlement": settlement})
        return
    _print_evaluation(res, f"{event_id} ({ev['product']}, {ev['day']}, {ev['state']}) evaluation v{res['version']} "
                           f"{res['status']} ({res['baseline_id']}, rule set {res['ruleset']}, meter "
                           f"{res['meter_source']}")
    if settlement is None:
        out.print(f"no settlement of {ev['day'].year} yet")
        return
    money_t = Table(title=f"settlement {st['settlement_id']} ({st['state']}, rev {st['revision']}): lines of this "
                          "event, before the pro-rata factor (yuan)")
    for col in ("operator", "unit", "kind", "quantity", "rate", "amount", "evaluation"):
        money_t.add_column(col, justify="right" if col in ("quantity", "rate", "amount") else "left")
    for r in lines:
        money_t.add_row(r["operator_id"], r["unit_id"], r["kind"], f"{r['quantity']:,.3f} {r['quantity_unit']}",
                        r["rate_yuan"] or "varies", r["amount"],
                        "this one" if r["evaluation_id"] == res["evaluation_id"] else r["evaluation_id"])
    out.print(money_t)


def report_operator(operator_id: str = typer.Argument(..., help="operator id, e.g. OP01"),
                    year: int = typer.Option(..., "--year", help="settlement year"),
                    fmt: str = typer.Option("table", "--format", help="table, csv, html or json"),
                    out_file: Path | None = typer.Option(None, "--out", help="write to this file")) -> None:
    """An operator's year: its statement in the year's settlement (lines, claims, pro rata, penalties,
    owners' shares, ledger, balance) and its emission reduction.

    Example: openvpp report operator OP01 --year 2025
    Example: openvpp report operator OP01 --year 2025 --format html --out op01-2025.html
    """
    from openvpp.services import carbon
    from openvpp.services import settlement as stl

    if fmt not in ("table", "csv", "html", "json"):
        err.print("[red]error:[/red] --format must be table, csv, html or json")
        raise typer.Exit(2)
    try:
        with _engine().connect() as conn:
            st = stl.of_year(conn, year)
            if st is None:
                err.print(f"[red]error:[/red] no settlement of {year}: compute it with openvpp settle --year {year}")
                raise typer.Exit(2)
            stmt = stl.statement_operator(conn, st["settlement_id"], operator_id)
            co2 = next(iter(carbon.report(conn, year, operator_id=operator_id)["by_operator"]), None)
    except OpenVPPError as exc:
        _fail(exc)
    if fmt in ("csv", "html"):
        _emit({"csv": stl.to_csv, "html": stl.to_html}[fmt](stmt), out_file)
        return
    if fmt == "json" or out_file:
        _emit(json.dumps({**stmt, "carbon": co2}, ensure_ascii=False, default=str), out_file)
        return
    out.print(f"{operator_id} {stmt['name']}: {year} settlement {stmt['settlement_id']} ({stmt['state']}, rev "
              f"{stmt['revision']}, rule set {stmt['ruleset']})")
    table = Table(title="lines (yuan, before the pro-rata factor)")
    for col in ("event", "unit", "kind", "quantity", "rate", "amount", "note"):
        table.add_column(col, justify="right" if col in ("quantity", "rate", "amount") else "left")
    for r in stmt["lines"]:
        table.add_row(r["event_id"], r["unit_id"], r["kind"], f"{r['quantity']:,.3f} {r['quantity_unit']}",
                      r["rate_yuan"] or "varies", r["amount"], r["note"] or "")
    out.print(table)
    amounts = Table(title="amounts (yuan)")
    amounts.add_column("item")
    amounts.add_column("yuan", justify="right")
    for k, v in stmt["amounts"].items():
        amounts.add_row(k, v)
    amounts.add_row("balance (ledger)", stmt["balance"])
    out.print(amounts)
    if co2:
        out.print(f"curtailed {co2['curtailed_kwh'] / 1000:,.3f} MWh: {co2['southern_grid_tco2']:,.3f} tCO2 (Southern "
                  f"grid), {co2['national_tco2']:,.3f} tCO2 (national)")


def report_year(year: int = typer.Argument(..., help="calendar year, e.g. 2025"),
                as_json: bool = typer.Option(False, "--json", help="print JSON only")) -> None:
    """A year: the settlement's state, the budgets used (main and V2G), each operator's amounts, disputes,
    and the emission reduction.

    Example: openvpp report year 2025
    """
    from openvpp.core.money import yuan
    from openvpp.services import carbon, disputes
    from openvpp.services import settlement as stl

    with _engine().connect() as conn:
        st = stl.of_year(conn, year)
        party = [] if st is None else stl.parties(conn, st["settlement_id"], "operator")
        dsp = [] if st is None else disputes.list_(conn, st["settlement_id"])
        co2 = next(iter(carbon.report(conn, year)["by_year"]), None)
    budgets = {}
    if st is not None:
        for k in ("main", "v2g"):
            b = st["summary"][k]
            used = yuan(b["paid"]) / yuan(b["budget"]) if yuan(b["budget"]) else None
            budgets[k] = {**b, "used": None if used is None else f"{used:.6f}"}
    res = {"year": year, "settlement": None if st is None else {
        k: st[k] for k in ("settlement_id", "state", "revision", "ruleset", "created_at", "updated_at")} | {
        "events": len(st["summary"]["evaluations"]), "pending_events": st["summary"].get("pending_events", [])},
        "budgets": budgets,
        "operators": [{"operator_id": p["party_id"], **stl._yuan_amounts(p["amounts"])} for p in party],
        "disputes": {s: sum(1 for d in dsp if d["state"] == s) for s in sorted({d["state"] for d in dsp})},
        "carbon": co2}
    if as_json:
        _dump(res)
        return
    if st is None:
        out.print(f"{year}: no settlement computed (openvpp settle --year {year})")
    else:
        s = res["settlement"]
        out.print(f"{year}: settlement {s['settlement_id']} ({s['state']}, rev {s['revision']}, rule set "
                  f"{s['ruleset']}), {s['events']} events, {len(s['pending_events'])} waiting for evaluation")
        for k, name in (("main", "subsidy budget"), ("v2g", "V2G budget")):
            b = budgets[k]
            out.print(f"  {name}: claims {b['claims']}, paid {b['paid']} of {b['budget']} yuan "
                      f"({float(b['used'] or 0):.2%} used), factor {float(b['factor']):.6f}")
        if res["disputes"]:
            out.print("  disputes: " + ", ".join(f"{n} {s}" for s, n in res["disputes"].items()))
        table = Table(title="per operator (yuan)")
        for col in ("operator", "payable", "penalty", "net", "owners", "retained"):
            table.add_column(col, justify="left" if col == "operator" else "right")
        for o in res["operators"]:
            table.add_row(o["operator_id"], o["payable"], o["penalty"], o["net"], o["owner_shares"], o["retained"])
        out.print(table)
    if co2:
        out.print(f"carbon: curtailed {co2['curtailed_kwh'] / 1000:,.3f} MWh, {co2['southern_grid_tco2']:,.3f} tCO2 "
                  f"(Southern grid), {co2['national_tco2']:,.3f} tCO2 (national)")
