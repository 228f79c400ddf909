"""The ``openvpp`` command. Every command's help ends with an example."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openvpp.cli import admin, ev, settlement, telemetry
from openvpp.core.errors import InvalidInput, OpenVPPError, Violation
from openvpp.core.settings import Settings

EXAMPLES = """[bold]Examples[/bold] (each command's --help has more):

  openvpp demo                                         generate a city, load it, serve the dashboard
  openvpp demo --headless --json                       the same work, JSON summary, no server
  openvpp serve --host 0.0.0.0 --port 8000             run the platform on the configured database
  openvpp db upgrade                                   apply migrations (OPENVPP_DATABASE_URL)
  openvpp sim city --resources 1000000 --seed 7 --out var/city-1m
  openvpp city load var/city-1m                        load a generated city (all or nothing)
  openvpp sim devices --city var/city --mqtt mqtt://127.0.0.1:1883 --speed 60 --drop 0.02 --noise 0.05
  openvpp telemetry ingest --mqtt mqtt://127.0.0.1:1883   MQTT ingest worker (QoS 1, ack after commit)
  openvpp resources import new.csv                     add resources; bad rows named, nothing written
  openvpp resources summary --by district --json       connected / adjustable capacity
  openvpp report targets --by type                     progress against the 2025-2027 targets
  openvpp operators transition OP20 admit --reason "file complete"
  openvpp resources transfer R1 --to OP02 --reason merger
  openvpp resources export haizhu.parquet --format parquet --district GZ-HZ
  openvpp pools defaults && openvpp pools list --evaluate
  openvpp evaluate EVT-01J...                          evaluate an event from telemetry
  openvpp settle --year 2025                           compute the year's settlement
  openvpp report carbon --year 2025 --out carbon.csv   emission reduction of curtailed energy
  openvpp verify schedule trading_unit OP01@GZ-TH-S01 --start 2025-07-15T14:00+08:00
  openvpp users create alice --role operator_admin --operator OP01
"""

app = typer.Typer(help="openvpp: the operation platform of a city virtual power plant.",
                  epilog=EXAMPLES, no_args_is_help=True, rich_markup_mode="rich")
db_app = typer.Typer(help="Database migrations. Example: openvpp db upgrade", no_args_is_help=True)
sim_app = typer.Typer(help="Simulators. Example: openvpp sim city --resources 2000 --seed 1 --out var/city",
                      no_args_is_help=True)
city_app = typer.Typer(help="City data. Example: openvpp city load var/city", no_args_is_help=True)
res_app = typer.Typer(help="The resource database. Example: openvpp resources summary --by district",
                      no_args_is_help=True)
users_app = typer.Typer(help="Accounts. Example: openvpp users create alice --role dispatcher",
                        no_args_is_help=True)
report_app = typer.Typer(help="Reports. Example: openvpp report targets --json", no_args_is_help=True)
for sub, name in ((db_app, "db"), (sim_app, "sim"), (city_app, "city"), (res_app, "resources"),
                  (users_app, "users"), (report_app, "report"), (admin.operators_app, "operators"),
                  (admin.verify_app, "verify"), (admin.pools_app, "pools")):
    app.add_typer(sub, name=name)
sim_app.add_typer(telemetry.sim_devices_cmd, name="devices")
app.add_typer(telemetry.telemetry_app, name="telemetry")
app.add_typer(ev.ev_app, name="ev")
app.add_typer(settlement.settle_app, name="settle")
app.command("evaluate")(settlement.evaluate)
report_app.command("carbon")(settlement.report_carbon)
report_app.command("event")(settlement.report_event)
report_app.command("operator")(settlement.report_operator)
report_app.command("year")(settlement.report_year)
app.add_typer(ev.ocpp_app, name="ocpp")
res_app.command("transition")(admin.resources_transition)
res_app.command("transfer")(admin.resources_transfer)
res_app.command("export")(admin.resources_export)

err = Console(stderr=True)
out = Console()


def _settings() -> Settings:
    return Settings.from_env()


def _fail(exc: Exception) -> None:
    if isinstance(exc, OpenVPPError):
        err.print(f"[red]error:[/red] {exc}")
        for v in getattr(exc, "violations", [])[:20]:
            err.print(f"  - {v}")
    else:
        err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


def progress_bar(console: Console | None = None) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                    TimeElapsedColumn(), console=console or err, transient=False)


class StageProgress:
    """Adapts ``progress(stage, fraction)`` callbacks of services to one rich bar."""

    def __init__(self, bar: Progress, title: str):
        self.bar, self.task = bar, bar.add_task(title, total=1.0)
        self.title = title

    def __call__(self, stage: str, fraction: float) -> None:
        self.bar.update(self.task, completed=fraction, description=f"{self.title}: {stage}")


# ---------------------------------------------------------------- db

@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations to the configured database (OPENVPP_DATABASE_URL; default SQLite in ./var).

    Example: OPENVPP_DATABASE_URL=postgresql://postgres@127.0.0.1/openvpp openvpp db upgrade
    """
    from openvpp.store import db

    s = _settings()
    db.upgrade(s.database_url, revision)
    err.print(f"database at revision {db.current_revision(s.database_url)} ({_redact(s.database_url)})")


@db_app.command("current")
def db_current() -> None:
    """Print the current migration revision. Example: openvpp db current"""
    from openvpp.store import db

    print(db.current_revision(_settings().database_url))


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}" if ":" in cred else url
    return url


# ---------------------------------------------------------------- sim

@sim_app.command("city")
def sim_city(resources: int = typer.Option(2000, "--resources", "-n", min=10, help="number of resources (>= 10)"),
             seed: int = typer.Option(1, help="random seed: same seed, same files"),
             out_dir: Path = typer.Option(Path("var/city"), "--out", help="output folder"),
             year: int = typer.Option(2025, help="profile year (local calendar)")) -> None:
    """Generate a reproducible Guangzhou-shaped city (grid, operators, owners, sites, resources, profiles).

    Example: openvpp sim city --resources 1000000 --seed 7 --out var/city-1m
    """
    from openvpp.sim.city import generate_city

    t0 = time.perf_counter()
    with progress_bar() as bar:
        summary = generate_city(out_dir, resources, seed, year=year, progress=StageProgress(bar, "city"))
    err.print(f"wrote {out_dir} in {time.perf_counter() - t0:.1f} s")
    out.print_json(json.dumps(_jsonable(summary)))


def _jsonable(obj):
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj):
        return {k: _jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------- city / resources

@city_app.command("load")
def city_load(city_dir: Path = typer.Argument(..., exists=True, file_okay=False)) -> None:
    """Load a generated city into the configured database (migrates first). All or nothing.

    Example: openvpp city load var/city
    """
    from openvpp.services import setup

    s = _settings()
    try:
        setup.init_database(s)
        with progress_bar() as bar:
            result = setup.load_city(s, city_dir, StageProgress(bar, "load"))
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"loaded in {result.seconds:.1f} s: {result.counts}")


@res_app.command("import")
def resources_import(file: Path = typer.Argument(..., exists=True, dir_okay=False),
                     state: str = typer.Option("active", help="state of the new resources: active or registered")
                     ) -> None:
    """Import resources from CSV or Parquet (columns of resources.csv); every row is validated first.

    A bad row is reported with its line, field and rule, and nothing is written.

    Example: openvpp resources import new-piles.csv
    """
    from openvpp.services import registry
    from openvpp.store import audit, db

    s = _settings()
    t0 = time.perf_counter()
    try:
        engine = db.get_engine(s.database_url)
        with engine.begin() as conn:
            n = registry.import_resources_file(conn, file, audit.Actor("cli", "city_admin"), state=state)
        committed = time.perf_counter() - t0
        registry.finish_bulk(engine)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"imported {n} resources: committed in {committed:.2f} s, indexed and validated in "
              f"{time.perf_counter() - t0:.2f} s")


@res_app.command("summary")
def resources_summary(by: str = typer.Option("district", help="district|substation|feeder|transformer_area|"
                                             "type|operator|response_mode|grade|protocol"),
                      as_json: bool = typer.Option(False, "--json", help="print JSON only")) -> None:
    """Connected and adjustable capacity of active resources, grouped.

    Example: openvpp resources summary --by type --json
    """
    from openvpp.services import registry
    from openvpp.store import db

    try:
        with db.get_engine(_settings().database_url).connect() as conn:
            rows = registry.summary(conn, by)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps({"by": by, "rows": rows}, ensure_ascii=False, default=str))
        return
    t = Table(title=f"resources by {by}")
    for col in ("key", "label", "resources", "connected MW", "adjustable down MW", "adjustable up MW"):
        t.add_column(col, justify="right" if "MW" in col or col == "resources" else "left")
    for r in rows:
        t.add_row(str(r["key"]), str(r["label"]), f"{r['resources']:,}", f"{r['connected_kw'] / 1000:,.2f}",
                  f"{r['adjustable_down_kw'] / 1000:,.2f}", f"{r['adjustable_up_kw'] / 1000:,.2f}")
    out.print(t)


@report_app.command("targets")
def report_targets(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                   by: str = typer.Option("district", help="district or type")) -> None:
    """Connected and adjustable capacity against the plan's 2025-2027 targets.

    Example: openvpp report targets --json
    """
    from openvpp.services import registry
    from openvpp.store import db

    with db.get_engine(_settings().database_url).connect() as conn:
        rep = registry.targets_report(conn)
    if as_json:
        print(json.dumps(rep, ensure_ascii=False, default=str))
        return
    c = rep["city"]
    out.print(f"city: {c['connected_mw']:,.1f} MW connected, {c['adjustable_mw']:,.1f} MW adjustable "
              f"({c['resources']:,} resources)")
    for t in rep["targets"]:
        out.print(f"  {t['year']}: connected {t['connected_progress']:.1%} of {t['connected_mw']:,.0f} MW, "
                  f"adjustable {t['adjustable_progress']:.1%} of {t['adjustable_mw']:,.0f} MW")
    rows = rep["by_district"] if by == "district" else rep["by_type"]
    key = "name" if by == "district" else "resource_type"
    t = Table(title=f"by {by}")
    for col in (by, "resources", "connected MW", "adjustable MW", "verified MW"):
        t.add_column(col, justify="left" if col == by else "right")
    for r in rows:
        t.add_row(str(r[key]), f"{r['resources']:,}", f"{r['connected_mw']:,.2f}", f"{r['adjustable_mw']:,.2f}",
                  f"{r['verified_mw']:,.2f}")
    out.print(t)


# ---------------------------------------------------------------- users

@users_app.command("create")
def users_create(username: str, role: str = typer.Option(..., help="city_admin, dispatcher, operator_admin, "
                                                         "operator_engineer, owner, auditor"),
                 operator_id: str | None = typer.Option(None, "--operator"),
                 owner_id: str | None = typer.Option(None, "--owner"),
                 password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True)) -> None:
    """Create a user.

    Example: openvpp users create alice --role operator_admin --operator OP01
    """
    from openvpp.services import accounts
    from openvpp.store import audit, db

    s = _settings()
    try:
        with db.get_engine(s.database_url).begin() as conn:
            accounts.create_user(conn, audit.Actor("cli", "city_admin"), username, password, role, operator_id,
                                 owner_id, rounds=s.bcrypt_rounds)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"created {username} ({role})")


# ---------------------------------------------------------------- serve / demo

@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the platform (API + dashboard) against the configured database.

    Example: OPENVPP_DATABASE_URL=postgresql://postgres@127.0.0.1/openvpp openvpp serve --host 0.0.0.0
    """
    import uvicorn

    from openvpp.services import registry
    from openvpp.store import db

    s = _settings()
    if workers > 1 and not s.bus_url.startswith("nats://"):
        # each worker keeps its own live view, fed by the bus: the in-process bus reaches one worker only
        _fail(InvalidInput(Violation("workers", "more than one worker needs OPENVPP_BUS_URL=nats://... "
                                     "(the in-process bus feeds one worker's live view only)", workers)))
    db.upgrade(s.database_url)
    registry.finish_bulk(db.get_engine(s.database_url))  # an interrupted bulk load's indexes, if any
    if workers > 1:
        uvicorn.run("openvpp.api.asgi:app", host=host, port=port, workers=workers)
    else:
        from openvpp.api.app import create_app

        uvicorn.run(create_app(s), host=host, port=port)


@app.command()
def demo(resources: int = typer.Option(2000, "--resources", "-n", min=50),
         seed: int = 1,
         host: str = "127.0.0.1",
         port: int = 8000,
         headless: bool = typer.Option(False, "--headless", help="do the work, do not serve"),
         as_json: bool = typer.Option(False, "--json", help="print a JSON summary (alone on stdout)"),
         fresh: bool = typer.Option(True, help="start from a new database in $OPENVPP_HOME/demo")) -> None:
    """The main job: generate a city, load it, create a login per role, serve the dashboard.

    Example: openvpp demo            (then open http://127.0.0.1:8000)
    Example: openvpp demo --headless --json
    """
    from openvpp.sim.demo import run_demo

    try:
        summary, settings = run_demo(resources=resources, seed=seed, fresh=fresh,
                                     progress_factory=lambda: progress_bar(err), console=err)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        _print_demo(summary, host, port)
    if headless:
        return
    import uvicorn

    from openvpp.api.app import create_app

    if as_json:
        err.print(f"serving on http://{host}:{port}")
    from openvpp.cli.telemetry import start_embedded_telemetry

    telemetry_feed = start_embedded_telemetry(settings, Path(summary["city_dir"]))
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    finally:
        telemetry_feed.stop()


def _print_demo(summary: dict, host: str, port: int) -> None:
    c = summary["targets"]["city"]
    err.print(f"[bold green]openvpp demo[/bold green]: {summary['resources']:,} resources, "
              f"{c['connected_mw']:,.1f} MW connected, {c['adjustable_mw']:,.1f} MW adjustable")
    day = summary.get("day") or {}
    for key in ("peak_shaving", "congestion"):
        e = day.get(key)
        if e:
            err.print(f"  {key}: {e['event_id']} on {e['scope']}: peak cleared {max(e['cleared_kw']):,.0f} kW, "
                      f"{e['device_instructions']} device instructions, replaced {e['replaced'] or 'none'}, "
                      f"credited {e.get('evaluation', {}).get('credited_kwh', 0):,.0f} kWh")
    if day.get("settlement"):
        err.print(f"  settlement {day['settlement']['settlement_id']}: {day['settlement']['state']}")
    t = Table(title=f"dashboard: http://{host}:{port}   API docs: http://{host}:{port}/docs")
    t.add_column("role")
    t.add_column("username")
    t.add_column("password")
    for role, (user, pw) in summary["logins"].items():
        t.add_row(role, user, pw)
    err.print(t)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
