"""CLI of the management center's daily work: operators, resource access, verification, exports."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from openvpp.core.errors import OpenVPPError
from openvpp.core.settings import Settings
from openvpp.store.audit import Actor

console = Console()
err = Console(stderr=True)
CENTER = Actor("cli", "city_admin")

operators_app = typer.Typer(help="Operator admission and exit. Example: openvpp operators list", no_args_is_help=True)
verify_app = typer.Typer(help="Capability verification (能力校核). Example: openvpp verify report",
                         no_args_is_help=True)


def _engine():
    from openvpp.store import db

    return db.get_engine(Settings.from_env().database_url)


def _fail(exc: OpenVPPError) -> None:
    err.print(f"[red]error:[/red] {exc}")
    for v in getattr(exc, "violations", [])[:20]:
        err.print(f"  - {v}")
    raise typer.Exit(2)


def _print(rows: list[dict], as_json: bool, title: str, cols: list[str]) -> None:
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, default=str))
        return
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(r.get(c, "")) for c in cols])
    console.print(t)


@operators_app.command("list")
def operators_list(state: str | None = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """List operators. Example: openvpp operators list --state admitted"""
    from sqlalchemy import select

    from openvpp.store.schema import operators

    q = select(operators).order_by(operators.c.operator_id)
    if state:
        q = q.where(operators.c.state == state)
    with _engine().connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    _print(rows, as_json, "operators", ["operator_id", "name", "kind", "state", "tss_endpoint"])


@operators_app.command("apply")
def operators_apply(operator_id: str, name: str = typer.Option(...), kind: str = typer.Option(...),
                    credit_code: str | None = None, tss_endpoint: str | None = None) -> None:
    """Register an application. Example: openvpp operators apply OP20 --name "Tianhe Cooling" --kind central_ac_aggregator --tss-endpoint https://op20/tss"""
    from openvpp.services import admission

    try:
        with _engine().begin() as conn:
            admission.apply(conn, CENTER, {"operator_id": operator_id, "name": name, "kind": kind,
                                           "credit_code": credit_code, "tss_endpoint": tss_endpoint})
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"{operator_id}: applied")


@operators_app.command("transition")
def operators_transition(operator_id: str, action: str = typer.Argument(..., help="start_review, admit, reject, "
                                                                       "suspend, reinstate, exit"),
                         reason: str | None = typer.Option(None, "--reason"),
                         handover_to: str | None = typer.Option(None, "--handover-to")) -> None:
    """Move an operator through admission; checks run at review and admission.

    Example: openvpp operators transition OP20 admit --reason "file complete"
    """
    from openvpp.adapters.tss import probe
    from openvpp.services import admission

    try:
        with _engine().begin() as conn:
            out = admission.transition(conn, CENTER, operator_id, action, reason, probe=probe,
                                       handover_to=handover_to)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"{operator_id}: {out['state']}")
    for c in out.get("checks") or []:
        err.print(f"  {'PASS' if c['passed'] else 'FAIL'} {c['check']}")


@operators_app.command("units")
def operators_units(operator_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Trading units per clearing node. Example: openvpp operators units OP01"""
    from openvpp.services import admission

    with _engine().connect() as conn:
        rows = admission.trading_units(conn, operator_id)
    _print(rows, as_json, f"trading units of {operator_id}",
           ["clearing_node", "resources", "declared_kw_min_duration", "verified_minute_kw", "qualifies"])


def resources_transition(ids: list[str] = typer.Argument(..., help="resource ids"),
                         action: str = typer.Option(..., help="approve, reject or retire"),
                         reason: str | None = None) -> None:
    """Approve, reject or retire resources (all or none). Example: openvpp resources transition R1 R2 --action approve"""
    from openvpp.services import access

    try:
        with _engine().begin() as conn:
            out = access.transition(conn, CENTER, ids, action, reason)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"{len(out)} resource(s) now {out[0]['state']}")


def resources_transfer(resource_id: str, to_operator: str = typer.Option(..., "--to"),
                       reason: str = typer.Option(...)) -> None:
    """Transfer a resource to another operator. Example: openvpp resources transfer R1 --to OP02 --reason merger"""
    from openvpp.services import access

    try:
        with _engine().begin() as conn:
            access.transfer(conn, CENTER, resource_id, to_operator, reason)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"{resource_id} now with {to_operator}")


def resources_export(out: Path, fmt: str = typer.Option("csv", "--format", help="csv or parquet"),
                     district_id: str | None = typer.Option(None, "--district"),
                     resource_type: str | None = typer.Option(None, "--type"),
                     operator_id: str | None = typer.Option(None, "--operator")) -> None:
    """Export resources. Example: openvpp resources export haizhu.parquet --format parquet --district GZ-HZ"""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from openvpp.services import resources as svc

    with _engine().connect() as conn:
        table = svc.export_table(conn, CENTER, {"district_id": district_id, "resource_type": resource_type,
                                                "operator_id": operator_id})
    (pq.write_table if fmt == "parquet" else pacsv.write_csv)(table, str(out))
    err.print(f"wrote {table.num_rows:,} resources to {out}")


@verify_app.command("schedule")
def verify_schedule(target_kind: str = typer.Argument(..., help="resource, site or trading_unit"),
                    target_id: str = typer.Argument(..., help="id; a trading unit is OPERATOR@SUBSTATION"),
                    start: datetime = typer.Option(..., help="window start, ISO with zone, e.g. 2025-07-15T14:00+08:00"),
                    direction: str = "down") -> None:
    """Schedule a verification test. Example: openvpp verify schedule trading_unit OP01@GZ-TH-S01 --start 2025-07-15T14:00+08:00"""
    from openvpp.services import verification as ver

    try:
        with _engine().begin() as conn:
            t = ver.schedule(conn, CENTER, target_kind, target_id, start, direction)
    except OpenVPPError as exc:
        _fail(exc)
    print(json.dumps(ver.instruction(t), default=str))


@verify_app.command("report")
def verify_report(operator_id: str | None = typer.Option(None, "--operator"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Declared versus verified capability per operator. Example: openvpp verify report --json"""
    from openvpp.services import verification as ver

    with _engine().connect() as conn:
        rows = ver.declared_vs_verified(conn, operator_id)
    _print(rows, as_json, "declared vs verified", ["operator_id", "resources", "declared_down_kw", "tested",
                                                   "verified_down_kw", "verified_ratio", "grade_c", "flagged"])


pools_app = typer.Typer(help="Resource pools per scenario. Example: openvpp pools list --evaluate",
                        no_args_is_help=True)


@pools_app.command("presets")
def pools_presets(as_json: bool = typer.Option(False, "--json")) -> None:
    """Scenario presets. Example: openvpp pools presets"""
    from openvpp.services import pools

    rows = pools.list_presets()
    _print(rows, as_json, "pool presets", ["scenario", "description"])


@pools_app.command("defaults")
def pools_defaults() -> None:
    """Create the preset pools for the city and each district. Example: openvpp pools defaults"""
    from openvpp.services import pools

    with _engine().begin() as conn:
        made = pools.default_pools(conn, CENTER)
    err.print(f"{len(made)} pool(s) defined")


@pools_app.command("create")
def pools_create(scenario: str, rules: str = typer.Option("{}", help="rules as JSON"),
                 name: str | None = None) -> None:
    """Define a pool. Example: openvpp pools create local_congestion --rules '{"node_id": "GZ-HZ-S01-F01-T001"}'"""
    from openvpp.services import pools

    try:
        with _engine().begin() as conn:
            row = pools.create_pool(conn, CENTER, {"scenario": scenario, "rules": json.loads(rules),
                                                   **({"name": name} if name else {})})
    except OpenVPPError as exc:
        _fail(exc)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] rules: not valid JSON ({exc})")
        raise typer.Exit(2) from exc
    err.print(f"pool {row['pool_id']} defined")


@pools_app.command("list")
def pools_list(scenario: str | None = None, evaluate: bool = typer.Option(False, "--evaluate"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Pools, with their totals. Example: openvpp pools list --scenario peak_shaving --evaluate"""
    from openvpp.services import pools

    with _engine().connect() as conn:
        rows = pools.list_pools(conn, None, scenario)
        if evaluate and rows:
            totals = {t["pool_id"]: t for t in pools.evaluate(conn, [r["pool_id"] for r in rows])}
            rows = [{**r, **{k: totals[r["pool_id"]][k] for k in ("count", "down_kw", "up_kw",
                                                                  "energy_down_kwh")}} for r in rows]
    _print(rows, as_json, "pools", ["pool_id", "scenario", "node_id"] +
           (["count", "down_kw", "up_kw", "energy_down_kwh"] if evaluate else []))
