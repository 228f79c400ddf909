"""CLI of EV charging and V2G: ``openvpp ev pilot|statement|schedule`` and ``openvpp ocpp serve``.

Registered in ``cli/main.py``::

    from openvpp.cli import ev
    app.add_typer(ev.ev_app, name="ev")
    app.add_typer(ev.ocpp_app, name="ocpp")
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from openvpp.core.errors import OpenVPPError
from openvpp.core.settings import Settings

err = Console(stderr=True)
out = Console()

ev_app = typer.Typer(help="EV orderly charging and V2G. Example: openvpp ev pilot --year 2025", no_args_is_help=True)
ocpp_app = typer.Typer(help="OCPP 1.6J / 2.0.1 central system. Example: openvpp ocpp serve --host 0.0.0.0 --port 9000",
                       no_args_is_help=True)


@ocpp_app.callback()
def _ocpp() -> None:
    """OCPP central system (a group, so that ``openvpp ocpp serve`` keeps its name)."""


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}")
    for v in getattr(exc, "violations", [])[:20]:
        err.print(f"  - {v}")
    raise typer.Exit(2)


def _json(value) -> str:
    return json.dumps(value, default=lambda v: str(v) if isinstance(v, (Decimal, datetime)) else repr(v),
                      ensure_ascii=False, indent=1)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


@ev_app.command("pilot")
def ev_pilot(year: int = typer.Option(datetime.now(UTC).year, help="calendar year (Asia/Shanghai)"),
             operator: str | None = typer.Option(None, "--operator", help="only this operator's piles"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """The V2G pilot report: valley shares (>= 60 %, private >= 80 %), V2G project power (>= 500 kW)
    and yearly discharge (>= 100,000 kWh), battery indicators; per city, operator and project.

    Example: openvpp ev pilot --year 2025 --json
    """
    from openvpp.services import ev_pilot as svc
    from openvpp.services.scope import Scope
    from openvpp.store import db

    s = Settings.from_env()
    try:
        with db.get_engine(s.database_url).connect() as conn:
            report = svc.pilot_report(conn, year, Scope(operator_id=operator))
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        out.print_json(_json(report))
        return
    c = report["city"]
    err.print(f"{report['sessions']:,} sessions in {year} ({report['days_covered']} days), rule set {report['ruleset']}")
    t = Table(title=f"EV pilot {year}: per operator")
    for col in ("operator", "charge kWh", "valley", "private valley", "V2G kW", "V2G kWh", "V2G kWh/yr"):
        t.add_column(col)
    for r in [{"key": "city", **{k: v for k, v in c.items() if k != "key"}}] + report.get("operator", []):
        t.add_row(r["key"], f"{r['charge_kwh']:,.1f}", _pct(r["valley_share"]), _pct(r["private_valley_share"]),
                  f"{r['v2g_discharge_kw']:,.0f}", f"{r['v2g_discharge_kwh']:,.1f}",
                  f"{r['v2g_discharge_kwh_annualised']:,.0f}")
    out.print(t)
    projects = [p for p in report.get("project", []) if p["v2g_chargers"]]
    ok = sum(1 for p in projects if p.get("v2g_power_ok") and p.get("v2g_energy_ok"))
    err.print(f"V2G projects meeting both targets: {ok} of {len(projects)}; battery: {report['battery']}")


@ev_app.command("statement")
def ev_statement(year: int = typer.Option(..., help="calendar year"),
                 rate: str | None = typer.Option(None, help="V2G subsidy yuan/kWh (default and maximum: the rule set's cap)"),
                 already_paid: str = typer.Option("0", help="V2G subsidy of the year already paid, yuan"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """V2G statement lines of a year: discharged energy x discharge price, and the subsidy (pro rata over budget).

    Example: openvpp ev statement --year 2025 --rate 5 --json
    """
    from openvpp.services import ev_pilot as svc
    from openvpp.store import db

    s = Settings.from_env()
    try:
        with db.get_engine(s.database_url).connect() as conn:
            res = svc.v2g_statement_lines(conn, year, subsidy_yuan_per_kwh=rate, already_paid_yuan=already_paid)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        out.print_json(_json(res))
        return
    tot = res["totals"]
    out.print(f"{tot['sessions']} sessions, {tot['energy_kwh']} kWh discharged: energy value {tot['energy_value_yuan']} "
              f"yuan, subsidy {tot['subsidy_yuan']} yuan (claimed {tot['subsidy_claim_yuan']}, scale {tot['scale']:.6f})")


@ev_app.command("schedule")
def ev_schedule(city: Path = typer.Option(..., "--city", exists=True, file_okay=False, help="a generated city"),
                day: str = typer.Option("2025-07-15", help="local day; the window runs 12:00 -> 12:00"),
                solver: str = typer.Option("heuristic", help="heuristic | lp | v2g"),
                seed: int = typer.Option(1), limit: int = typer.Option(0, help="schedule only the first N sessions"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Day-ahead orderly charging of a generated city's piles with synthetic sessions (sim.ev).

    Example: openvpp ev schedule --city var/city --day 2025-07-15 --solver heuristic
    """
    import numpy as np

    from openvpp.core.timeslots import slot_start_utc
    from openvpp.services import ev_charging
    from openvpp.sim.ev import fleet_from_city, generate_sessions

    fleet = fleet_from_city(city)
    sessions = generate_sessions(fleet.chargers, day, seed=seed)
    if limit:
        sessions = sessions.take(np.arange(min(limit, sessions.n)))
    start = slot_start_utc(datetime.fromisoformat(day).date(), 48)
    res = ev_charging.day_ahead(sessions, fleet.stations, fleet.areas, start,
                                solver="lp" if solver == "lp" else "heuristic", v2g=solver == "v2g")
    summary = res.summary(sessions)
    if as_json:
        out.print_json(_json(summary))
        return
    summary.pop("flagged")
    for k, v in summary.items():
        out.print(f"{k:>20}: {v}")


@ocpp_app.command("serve")
def ocpp_serve(host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(9000, "--port"),
               heartbeat: int = typer.Option(300, help="heartbeat interval given to charge points, s")) -> None:
    """Run the OCPP central system; charge points connect to ws://HOST:PORT/<charge point id> with the
    subprotocol ocpp1.6 or ocpp2.0.1. Meter values go into telemetry (path 'ocpp').

    Example: openvpp ocpp serve --host 0.0.0.0 --port 9000
    """
    from openvpp.adapters.ocpp import csms
    from openvpp.services.ev_charging import ChargingService
    from openvpp.services.telemetry import TelemetryService
    from openvpp.store import db

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("openvpp.ocpp.wire").setLevel(logging.WARNING)
    s = Settings.from_env()
    engine = db.get_engine(s.database_url)
    service = ChargingService(engine, TelemetryService(engine), heartbeat_s=heartbeat)

    def ready(bound: int, _csms) -> None:
        err.print(f"OCPP central system on ws://{host}:{bound}/<charge point id> (ocpp1.6, ocpp2.0.1); Ctrl-C stops")

    csms.run(service, host, port, on_ready=ready)
