"""CLI of evaluation, settlement, disputes and carbon: ``openvpp evaluate``, ``openvpp settle``,
``openvpp report carbon``. Registered in ``cli/main.py``::

    app.add_typer(settlement.settle_app, name="settle")
    app.command("evaluate")(settlement.evaluate)
    report_app.command("carbon")(settlement.report_carbon)

The commands act as the city management center on ``OPENVPP_DATABASE_URL``; meter data comes
from the telemetry store.
"""

from __future__ import annotations

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
    from openvpp.services import evaluation as eva

    try:
        with _engine().begin() as conn:
            res = eva.evaluate(conn, _actor(), event_id, eva.StoreMeterSource(conn),
                               spec=_spec(baseline, param, adjust), history_days=history_days, reason=reason)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        _dump(res)
        return
    t = res["totals"]
    out.print(f"{res['event_id']} v{res['version']} ({res['baseline_id']}, rule set {res['ruleset']}, meter "
              f"sha256 {res['telemetry_sha256'][:12]}): credited {t['credited']:,.1f} {t['quantity_unit']}, "
              f"{t['slots_valid']}/{t['slots_cleared']} unit-slots valid, {t['not_measured']} resource-slots "
              "not measured")
    table = Table(title="per unit")
    for col in ("unit", "operator", "cleared kWh", "response kWh", "credited", "ratio"):
        table.add_column(col, justify="left" if col in ("unit", "operator") else "right")
    for u in res["units"]:
        cleared = sum(s["cleared_kw"] for s in u["slots"]) * 0.25
        resp = sum(s["response_kw"] or 0.0 for s in u["slots"]) * 0.25
        table.add_row(u["unit_id"], u["operator_id"], f"{cleared:,.1f}", f"{resp:,.1f}",
                      f"{sum(s['credited'] for s in u['slots']):,.1f}", f"{resp / cleared:.1%}" if cleared else "-")
    out.print(table)


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
    from openvpp.services import settlement as stl

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
