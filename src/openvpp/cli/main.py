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
  openvpp resources summary --by feeder,type --parent GZ-HZ-S01   a grid level x type under a node
  openvpp resources list --district GZ-HZ --grade A    a filtered page, as the API lists
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
app.add_typer(admin.contracts_app, name="contracts")
res_app.command("transition")(admin.resources_transition)
res_app.command("transfer")(admin.resources_transfer)

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


#: the resource filters every listing command takes: option → filter (``registry.FILTERS``)
def _filters(resource_type, operator_id, owner_id, district_id, substation_id, feeder_id, ta_id, state,
             verified_grade, response_mode) -> dict[str, str | None]:
    return {"resource_type": resource_type, "operator_id": operator_id, "owner_id": owner_id,
            "district_id": district_id, "substation_id": substation_id, "feeder_id": feeder_id, "ta_id": ta_id,
            "state": state, "verified_grade": verified_grade, "response_mode": response_mode}


TYPE_OPT = typer.Option(None, "--type", help="resource type, e.g. central_ac")
OPERATOR_OPT = typer.Option(None, "--operator", help="operator id")
OWNER_OPT = typer.Option(None, "--owner", help="owner id")
DISTRICT_OPT = typer.Option(None, "--district", help="district node id, e.g. GZ-HZ")
SUBSTATION_OPT = typer.Option(None, "--substation", help="substation node id")
FEEDER_OPT = typer.Option(None, "--feeder", help="feeder node id")
TA_OPT = typer.Option(None, "--ta", help="transformer area node id")
GRADE_OPT = typer.Option(None, "--grade", help="verified grade: A, B or C")
MODE_OPT = typer.Option(None, "--mode", help="response mode: automatic, semi_automatic, manual")
CENTER = "cli"


def _center():
    from openvpp.store import audit

    return audit.Actor(CENTER, "city_admin")


def _mw(kw: float) -> str:
    return f"{kw / 1000:,.2f}"


@res_app.command("summary")
def resources_summary(
        by: str = typer.Option("district", help="one grouping or two separated by a comma: district, substation, "
                               "feeder, transformer_area, type (or resource_type), operator, response_mode, grade, "
                               "protocol"),
        parent: str | None = typer.Option(None, help="a grid node id: only the resources under it"),
        resource_type: str | None = TYPE_OPT, operator_id: str | None = OPERATOR_OPT,
        owner_id: str | None = OWNER_OPT, district_id: str | None = DISTRICT_OPT,
        substation_id: str | None = SUBSTATION_OPT, feeder_id: str | None = FEEDER_OPT, ta_id: str | None = TA_OPT,
        state: str | None = typer.Option(None, help="count resources in this state instead of active ones"),
        verified_grade: str | None = GRADE_OPT, response_mode: str | None = MODE_OPT,
        limit: int = typer.Option(1000, min=1, help="groups per page"), offset: int = typer.Option(0, min=0),
        as_json: bool = typer.Option(False, "--json", help="print JSON only")) -> None:
    """Connected, adjustable and verified capacity grouped by one or two keys, city-wide or under a grid
    node, with the resource filters (a SQL GROUP BY on the configured database).

    Example: openvpp resources summary --by feeder,resource_type --parent GZ-HZ-S01 --mode automatic
    """
    from openvpp.services import registry
    from openvpp.store import db

    filters = _filters(resource_type, operator_id, owner_id, district_id, substation_id, feeder_id, ta_id, state,
                       verified_grade, response_mode)
    try:
        with db.get_engine(_settings().database_url).connect() as conn:
            page = registry.summary_page(conn, by, parent=parent, filters=filters, limit=limit, offset=offset)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps({"by": by, "parent": parent, **page}, ensure_ascii=False, default=str))
        return
    keys, rows = page["keys"], page["rows"]
    t = Table(title=f"resources by {' x '.join(keys)}" + (f" under {parent}" if parent else ""))
    for col in (*keys, "label", "resources", "connected MW", "adjustable down MW", "adjustable up MW",
                "verified MW"):
        t.add_column(col, justify="right" if "MW" in col or col == "resources" else "left")
    for r in rows:
        label = r["label"] if len(keys) == 1 else " / ".join(str(x) for x in r["label"])
        t.add_row(*(str(r[k]) for k in keys), str(label), f"{r['resources']:,}", _mw(r["connected_kw"]),
                  _mw(r["adjustable_down_kw"]), _mw(r["adjustable_up_kw"]), _mw(r["verified_down_kw"]))
    out.print(t)
    if page["total"] > len(rows):
        err.print(f"groups {offset + 1:,}-{offset + len(rows):,} of {page['total']:,} (--limit, --offset)")


@res_app.command("list")
def resources_list(
        resource_type: str | None = TYPE_OPT, operator_id: str | None = OPERATOR_OPT,
        owner_id: str | None = OWNER_OPT, district_id: str | None = DISTRICT_OPT,
        substation_id: str | None = SUBSTATION_OPT, feeder_id: str | None = FEEDER_OPT, ta_id: str | None = TA_OPT,
        state: str | None = typer.Option(None, help="registered, active, rejected, retired"),
        verified_grade: str | None = GRADE_OPT, response_mode: str | None = MODE_OPT,
        search: str | None = typer.Option(None, "--q", help="text in the id, name or meter id"),
        limit: int = typer.Option(50, min=1, max=1000), offset: int = typer.Option(0, min=0),
        as_json: bool = typer.Option(False, "--json", help="print JSON only")) -> None:
    """A page of resources, filtered as the API's list (in resource id order; the total counts every match).

    Example: openvpp resources list --district GZ-HZ --grade A --limit 20
    """
    from openvpp.services import resources as svc
    from openvpp.store import db

    filters = _filters(resource_type, operator_id, owner_id, district_id, substation_id, feeder_id, ta_id, state,
                       verified_grade, response_mode)
    try:
        with db.get_engine(_settings().database_url).connect() as conn:
            page = svc.list_page(conn, _center(), filters, search, limit, offset)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(page, ensure_ascii=False, default=str))
        return
    t = Table(title=f"resources {offset + 1:,}-{offset + len(page['items']):,} of {page['total']:,}")
    for col in ("resource_id", "name", "type", "operator", "district", "transformer area", "state", "down kW",
                "up kW", "grade"):
        t.add_column(col, justify="right" if "kW" in col else "left")
    for r in page["items"]:
        t.add_row(r["resource_id"], str(r["name"] or ""), r["resource_type"], str(r["operator_id"] or "-"),
                  str(r["district_id"]), r["ta_id"], r["state"], f"{r['adjustable_down_kw']:,.1f}",
                  f"{r['adjustable_up_kw']:,.1f}", str(r["verified_grade"] or "-"))
    out.print(t)


@res_app.command("export")
def resources_export(
        out_file: Path = typer.Argument(..., metavar="OUT", help="file to write (.csv or .parquet)"),
        fmt: str | None = typer.Option(None, "--format", help="csv or parquet (default: from the file name)"),
        resource_type: str | None = TYPE_OPT, operator_id: str | None = OPERATOR_OPT,
        owner_id: str | None = OWNER_OPT, district_id: str | None = DISTRICT_OPT,
        substation_id: str | None = SUBSTATION_OPT, feeder_id: str | None = FEEDER_OPT, ta_id: str | None = TA_OPT,
        state: str | None = typer.Option(None, help="registered, active, rejected, retired"),
        verified_grade: str | None = GRADE_OPT, response_mode: str | None = MODE_OPT) -> None:
    """Export resources with the API list's filters to CSV or Parquet (the columns of resources.csv first,
    so an export re-imports; then state, verification and the grid ancestors).

    Example: openvpp resources export haizhu-a.parquet --district GZ-HZ --grade A --mode automatic
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from openvpp.services import resources as svc
    from openvpp.store import db

    fmt = fmt or ("parquet" if out_file.suffix.lower() == ".parquet" else "csv")
    if fmt not in ("csv", "parquet"):
        err.print(f"[red]error:[/red] --format must be csv or parquet (got {fmt!r})")
        raise typer.Exit(2)
    filters = _filters(resource_type, operator_id, owner_id, district_id, substation_id, feeder_id, ta_id, state,
                       verified_grade, response_mode)
    try:
        with db.get_engine(_settings().database_url).connect() as conn:
            table = svc.export_table(conn, _center(), filters)
    except OpenVPPError as exc:
        _fail(exc)
    (pq.write_table if fmt == "parquet" else pacsv.write_csv)(table, str(out_file))
    err.print(f"wrote {table.num_rows:,} resources to {out_file}")


@res_app.command("register", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def resources_register(
        ctx: typer.Context,
        file: Path | None = typer.Option(None, "--file", exists=True, dir_okay=False,
                                         help="a JSON object with the resource's fields"),
        as_operator: str | None = typer.Option(None, "--as-operator", help="register as this operator's admin: "
                                               "the resource awaits the center's approval"),
        as_json: bool = typer.Option(False, "--json", help="print the registered resource as JSON")) -> None:
    """Register one resource, with the rules of an import (every field checked, references, no duplicate
    meter; nothing written on refusal). Fields are the columns of resources.csv, from --file and/or
    given as flags (--resource-id R9, --ta-id ...; flags win). The center's registration is active.

    Example: openvpp resources register --file r9.json --adjustable-down-kw 150
    """
    from openvpp.model.columns import RESOURCE_COLUMNS
    from openvpp.services import resources as svc
    from openvpp.store import audit, db

    fields: dict = {}
    if file is not None:
        try:
            fields = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            err.print(f"[red]error:[/red] {file} is not JSON: {exc}")
            raise typer.Exit(2) from None
        if not isinstance(fields, dict):
            err.print(f"[red]error:[/red] {file} must hold one JSON object of fields")
            raise typer.Exit(2)
    args = list(ctx.args)
    known = ", ".join("--" + c.name.replace("_", "-") for c in RESOURCE_COLUMNS)
    while args:
        flag = args.pop(0)
        if not flag.startswith("--"):
            err.print(f"[red]error:[/red] unexpected argument {flag!r}; give fields as flags: {known}")
            raise typer.Exit(2)
        name, eq, value = flag[2:].partition("=")
        if not eq:
            if not args:
                err.print(f"[red]error:[/red] {flag} needs a value")
                raise typer.Exit(2)
            value = args.pop(0)
        fields[name.replace("-", "_")] = value
    if not fields:
        err.print(f"[red]error:[/red] give the resource's fields with --file and/or flags: {known}")
        raise typer.Exit(2)
    actor = (audit.Actor(CENTER, "operator_admin", operator_id=as_operator) if as_operator else _center())
    try:
        with db.get_engine(_settings().database_url).begin() as conn:
            row = svc.register(conn, actor, fields)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(row, ensure_ascii=False, default=str))
        return
    err.print(f"registered {row['resource_id']} ({row['state']}) in {row['ta_id']} for operator "
              f"{row['operator_id'] or '-'}")


@res_app.command("history")
def resources_history(resource_id: str, as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                      limit: int = typer.Option(200, min=1, help="audit entries, newest first")) -> None:
    """A resource's operators over time (closed links with their dates) and its audit trail.

    Example: openvpp resources history R0000002
    """
    from openvpp.services import resources as svc
    from openvpp.store import db

    try:
        with db.get_engine(_settings().database_url).connect() as conn:
            h = svc.history(conn, _center(), resource_id, limit)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(h, ensure_ascii=False, default=str))
        return
    out.print(f"{resource_id}: {h['state']}, operator {h['operator_id'] or '-'} since "
              f"{h['operator_since'] or 'registration'}")
    links = Table(title="earlier operators")
    for col in ("operator", "from", "to", "reason"):
        links.add_column(col)
    for r in h["closed_links"]:
        links.add_row(str(r["operator_id"]), str(r["valid_from"] or "registration"), str(r["valid_to"]),
                      str(r["reason"] or ""))
    out.print(links)
    trail = Table(title="audit trail (newest first)")
    for col in ("at", "action", "actor", "reason"):
        trail.add_column(col)
    for e in h["audit"]:
        trail.add_row(str(e["at"]), e["action"], f"{e['actor']} ({e['actor_role']})", str(e["reason"] or ""))
    out.print(trail)


@report_app.command("targets")
def report_targets(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                   by: str = typer.Option("district", help="district or type"),
                   year: int | None = typer.Option(None, help="target year of the share columns (default: the "
                                                   "first)")) -> None:
    """Connected and adjustable capacity against the plan's 2025-2027 targets, verified beside declared,
    city-wide and by district or type.

    Example: openvpp report targets --by type --year 2026
    """
    from openvpp.services import registry
    from openvpp.store import db

    if by not in ("district", "type"):
        err.print(f"[red]error:[/red] --by must be district or type (got {by!r})")
        raise typer.Exit(2)
    with db.get_engine(_settings().database_url).connect() as conn:
        rep = registry.targets_report(conn)
    years = [t["year"] for t in rep["targets"]]
    if year is not None and year not in years:
        err.print(f"[red]error:[/red] --year must be one of {', '.join(map(str, years))} (got {year})")
        raise typer.Exit(2)
    if as_json:
        print(json.dumps(rep, ensure_ascii=False, default=str))
        return
    c = rep["city"]
    out.print(f"city: {c['connected_mw']:,.1f} MW connected, {c['adjustable_mw']:,.1f} MW adjustable declared, "
              f"{c['verified_mw']:,.1f} MW verified ({c['resources']:,} resources, {c['verified_resources']:,} "
              "verified)")
    for t in rep["targets"]:
        out.print(f"  {t['year']}: connected {t['connected_progress']:.1%} of {t['connected_mw']:,.0f} MW; "
                  f"adjustable {t['adjustable_progress']:.1%} declared, {t['verified_progress']:.1%} verified "
                  f"of {t['adjustable_mw']:,.0f} MW")
    y = years.index(year) if year is not None else 0
    rows = rep["by_district"] if by == "district" else rep["by_type"]
    key = "name" if by == "district" else "resource_type"
    t = Table(title=f"by {by}: share of the {years[y]} targets")
    for col in (by, "resources", "connected MW", "adjustable MW", "verified MW", f"connected % {years[y]}",
                f"declared % {years[y]}", f"verified % {years[y]}"):
        t.add_column(col, justify="left" if col == by else "right")
    for r in rows:
        p = r["progress"][y]
        t.add_row(str(r[key]), f"{r['resources']:,}", f"{r['connected_mw']:,.2f}", f"{r['adjustable_mw']:,.2f}",
                  f"{r['verified_mw']:,.2f}", f"{p['connected_share']:.2%}", f"{p['adjustable_share']:.2%}",
                  f"{p['verified_share']:.2%}")
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
    from openvpp.core.memory import retain_freed_memory
    from openvpp.sim.demo import run_demo

    retain_freed_memory()
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
    from openvpp.sim.demo_day import replay_source
    from openvpp.store import db

    app_ = create_app(settings)
    with db.get_engine(settings.database_url).connect() as conn:
        app_.state.meter_source = replay_source(conn)   # disputes re-evaluate over the day's own data
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning")
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
