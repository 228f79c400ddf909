"""CLI of the management center's daily work: operators, resource access, verification, exports."""

from __future__ import annotations

import json
from datetime import datetime

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
contracts_app = typer.Typer(help="Owners' revenue-share contracts with their operators. "
                                 "Example: openvpp contracts list --owner OW1", no_args_is_help=True)


def _engine():
    from openvpp.store import db

    return db.get_engine(Settings.from_env().database_url)


def _fail(exc: OpenVPPError) -> None:
    err.print(f"[red]error:[/red] {exc}")
    for v in getattr(exc, "violations", [])[:20]:
        err.print(f"  - {v}")
    raise typer.Exit(2)


def _json(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str))


def _json_option(text: str, name: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] {name}: not valid JSON ({exc})")
        raise typer.Exit(2) from exc


def _print_checks(checks: list[dict]) -> None:
    for c in checks:
        detail = c.get("detail") or {}
        note = detail.get("detail") or detail.get("rule") or ""
        err.print(f"  {'PASS' if c['passed'] else 'FAIL'} {c['check']}" + (f"  ({note})" if note else ""))


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

    Every action needs a reason (kept in the audit log).

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
    _print_checks(out.get("checks") or [])


@operators_app.command("show")
def operators_show(operator_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """An operator with its latest stored qualification checks. Example: openvpp operators show OP01"""
    from openvpp.core.errors import NotFound
    from openvpp.services import admission

    try:
        with _engine().connect() as conn:
            op = admission.get(conn, operator_id)
            checks = admission.latest_checks(conn, operator_id)
    except NotFound as exc:
        _fail(exc)
    if as_json:
        _json({**op, "checks": checks})
        return
    t = Table(title=f"operator {operator_id}", show_header=False)
    for k in ("operator_id", "name", "name_zh", "kind", "state", "credit_code", "tss_endpoint", "updated_at"):
        t.add_row(k, "" if op.get(k) is None else str(op[k]))
    console.print(t)
    if not checks:
        err.print("no qualification checks stored yet (they run at review, admission and recheck)")
        return
    c = Table(title="latest qualification checks")
    for col in ("check", "result", "checked_at", "checked_by", "detail"):
        c.add_column(col)
    for ch in checks:
        detail = ch.get("detail") or {}
        c.add_row(ch["check"], "PASS" if ch["passed"] else "FAIL", str(ch["checked_at"]), ch["checked_by"],
                  str(detail.get("detail") or detail.get("rule") or ""))
    console.print(c)


@operators_app.command("recheck")
def operators_recheck(operator_id: str | None = typer.Argument(None, help="operator id (or --all)"),
                      all_: bool = typer.Option(False, "--all", help="every admitted or suspended operator"),
                      reason: str | None = typer.Option(None, "--reason"),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Run the qualification checks again, TSS round trip included, without a state change; the
    latest minute-level check decides the reserve subsidy.

    Example: openvpp operators recheck OP01 --reason "TSS moved"; openvpp operators recheck --all
    """
    from openvpp.adapters.tss import probe
    from openvpp.services import admission

    if bool(operator_id) == all_:
        err.print("[red]error:[/red] operator_id: give one operator id or --all")
        raise typer.Exit(2)
    try:
        with _engine().begin() as conn:
            if all_:
                out = admission.recheck_all(conn, CENTER, probe, reason)
            else:
                out = [admission.recheck(conn, CENTER, operator_id, probe, reason)]
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        _json([{"operator_id": o["operator_id"], "state": o["state"],
                "checks": {c["check"]: c["passed"] for c in o["checks"]}} for o in out])
        return
    for o in out:
        err.print(f"{o['operator_id']} ({o['state']}):")
        _print_checks(o["checks"])


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
                         reason: str | None = typer.Option(None, help="why (required, kept in the audit log)")) -> None:
    """Approve, reject or retire resources (all or none).

    Example: openvpp resources transition R1 R2 --action approve --reason "site visit passed"
    """
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


@verify_app.command("schedule")
def verify_schedule(target_kind: str = typer.Argument(..., help="resource, site or trading_unit"),
                    target_id: str = typer.Argument(..., help="id; a trading unit is OPERATOR@SUBSTATION"),
                    start: datetime = typer.Option(..., help="window start, ISO with zone, e.g. 2025-07-15T14:00+08:00"),
                    direction: str = "down",
                    duration_h: float | None = typer.Option(None, "--duration-h",
                                                            help="default: the members' shortest declared duration")
                    ) -> None:
    """Schedule a verification test; its instruction goes to the members' operators (feed topic
    ``verification``), whose systems send their devices a limit for the window.

    Example: openvpp verify schedule trading_unit OP01@GZ-TH-S01 --start 2025-07-15T14:00+08:00
    """
    from openvpp.services import verification as ver

    try:
        with _engine().begin() as conn:
            t = ver.schedule(conn, CENTER, target_kind, target_id, start, direction, duration_h)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"test {t['test_id']} scheduled")
    print(json.dumps(ver.instruction(t), default=str))


@verify_app.command("complete")
def verify_complete(test_id: str, step_s: int = typer.Option(60, "--step-s", help="seconds per step (multiple of 60)"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """Grade a scheduled test from the stored telemetry of its window and the hour before; the
    members' verified capability, latency and grade are updated and their operators' checks run again.

    Example: openvpp verify complete VT-01J...
    """
    from openvpp.adapters.tss import probe
    from openvpp.services import verification as ver

    engine = _engine()
    try:
        with engine.begin() as conn:
            done = ver.complete(conn, CENTER, test_id, ver.StoreTelemetry(engine), step_s=step_s, probe=probe)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        _json(done)
        return
    _show_test(done)


def _show_test(t: dict) -> None:
    head = Table(title=f"verification test {t['test_id']}", show_header=False)
    for k in ("target_kind", "target_id", "operator_id", "direction", "state", "window_start", "window_end",
              "declared_kw", "declared_duration_h", "verified_kw", "latency_s", "ratio", "grade", "baseline_method"):
        head.add_row(k, "" if t.get(k) is None else str(t[k]))
    console.print(head)
    per = (t.get("result") or {}).get("resources")
    if per:
        rows = [{"resource_id": rid, **r} for rid, r in per.items()]
        _print(rows, False, "members", ["resource_id", "declared_kw", "verified_kw", "latency_s", "ratio", "grade"])
    for op, checks in ((t.get("result") or {}).get("rechecked") or {}).items():
        err.print(f"{op}: minute_level {'PASS' if checks.get('minute_level') else 'FAIL'}")


@verify_app.command("show")
def verify_show(test_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """One test with its members' results. Example: openvpp verify show VT-01J..."""
    from openvpp.services import verification as ver

    try:
        with _engine().connect() as conn:
            t = ver.get(conn, test_id)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        _json(t)
        return
    _show_test(t)


@verify_app.command("list")
def verify_list(state: str | None = typer.Option(None, help="scheduled or done"),
                operator_id: str | None = typer.Option(None, "--operator"),
                target_id: str | None = typer.Option(None, "--target"),
                limit: int = typer.Option(100, min=1, max=1000), as_json: bool = typer.Option(False, "--json")) -> None:
    """Verification tests, newest first. Example: openvpp verify list --state scheduled"""
    from openvpp.services import verification as ver

    try:
        with _engine().connect() as conn:
            rows = ver.list_tests(conn, operator_id, state, target_id, limit)
    except OpenVPPError as exc:
        _fail(exc)
    _print(rows, as_json, "verification tests", ["test_id", "target_kind", "target_id", "direction", "state",
                                                 "window_start", "declared_kw", "verified_kw", "grade"])


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


@pools_app.command("show")
def pools_show(pool_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """A pool's rules and current totals. Example: openvpp pools show reserve:GZ"""
    from openvpp.services import pools

    try:
        with _engine().connect() as conn:
            row = pools.get_pool(conn, pool_id)
            totals = pools.evaluate(conn, [pool_id])[0]
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        _json({**row, "totals": totals})
        return
    t = Table(title=f"pool {pool_id}", show_header=False)
    for k in ("name", "scenario", "node_id", "level", "mandatory"):
        t.add_row(k, str(row.get(k)))
    for k, v in row["rules"].items():
        if v not in (None, [], ()):
            t.add_row(f"rules.{k}", str(v))
    for k in ("count", "down_kw", "up_kw", "energy_down_kwh", "energy_up_kwh"):
        if k in totals:
            t.add_row(k, str(totals[k]))
    console.print(t)


@pools_app.command("members")
def pools_members(pool_id: str, limit: int = typer.Option(50, min=1, max=1000), offset: int = typer.Option(0, min=0),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """A page of a pool's member resources, by id. Example: openvpp pools members reserve:GZ --limit 100"""
    from openvpp.services import pools

    try:
        with _engine().connect() as conn:
            pools.get_pool(conn, pool_id)
            page = pools.members(conn, pool_id, limit, offset)
    except OpenVPPError as exc:
        _fail(exc)
    if as_json:
        _json(page)
        return
    for m in page["items"]:
        print(m["resource_id"] if isinstance(m, dict) else m)
    err.print(f"{len(page['items'])} of {page['total']} member(s) from {offset}")


@pools_app.command("update")
def pools_update(pool_id: str, rules: str | None = typer.Option(None, help="rules as JSON, merged over the current "
                                                                       "ones (null clears one)"),
                 name: str | None = None, reason: str | None = typer.Option(None, "--reason")) -> None:
    """Change a pool's name or rules (never looser than its preset). Example: openvpp pools update reserve:GZ-HZ --rules '{"max_latency_s": 30}' --reason "tighter reserve"
    """
    from openvpp.services import pools

    patch: dict = {}
    if rules is not None:
        patch["rules"] = _json_option(rules, "rules")
    if name is not None:
        patch["name"] = name
    if not patch:
        err.print("[red]error:[/red] give --rules and/or --name")
        raise typer.Exit(2)
    try:
        with _engine().begin() as conn:
            row = pools.update_pool(conn, CENTER, pool_id, patch, reason)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"pool {row['pool_id']} updated")


@pools_app.command("delete")
def pools_delete(pool_id: str, reason: str | None = typer.Option(None, "--reason")) -> None:
    """Remove a pool definition (the audit log keeps it). Example: openvpp pools delete POOL-01J... --reason obsolete"""
    from openvpp.services import pools

    try:
        with _engine().begin() as conn:
            pools.delete_pool(conn, CENTER, pool_id, reason)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"pool {pool_id} deleted")


@contracts_app.command("register")
def contracts_register(owner_id: str = typer.Option(..., "--owner"), operator_id: str = typer.Option(..., "--operator"),
                       scheme: str = typer.Option(..., help="fixed or tiered"),
                       valid_from: datetime = typer.Option(..., "--from", formats=["%Y-%m-%d"], help="first day"),
                       valid_to: datetime | None = typer.Option(None, "--to", formats=["%Y-%m-%d"],
                                                                help="day after the last (open-ended if absent)"),
                       owner_share: float | None = typer.Option(None, "--share", help="fixed: owner's share 0..1"),
                       tiers: str | None = typer.Option(None, help='tiered, as JSON: [{"up_to_yuan": 10000, '
                                                                   '"owner_share": 0.7}, {"up_to_yuan": null, ...}]'),
                       resource_id: str | None = typer.Option(None, "--resource", help="one resource only")) -> None:
    """Register an owner's revenue-share contract with its operator, for settlement.

    Example: openvpp contracts register --owner OW1 --operator OP01 --scheme fixed --share 0.6 --from 2025-01-01
    """
    from openvpp.services import access

    tier_list = _json_option(tiers, "tiers") if tiers is not None else None
    try:
        with _engine().begin() as conn:
            row = access.register_contract(conn, CENTER, owner_id, operator_id, scheme, valid_from.date(),
                                           valid_to.date() if valid_to else None, owner_share, tier_list,
                                           resource_id)
    except OpenVPPError as exc:
        _fail(exc)
    err.print(f"contract {row['contract_id']} registered")
    print(row["contract_id"])


@contracts_app.command("list")
def contracts_list(owner_id: str | None = typer.Option(None, "--owner"),
                   operator_id: str | None = typer.Option(None, "--operator"),
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """Contracts, by start date. Example: openvpp contracts list --operator OP01 --json"""
    from sqlalchemy import select

    from openvpp.store.schema import contracts

    q = select(contracts).order_by(contracts.c.valid_from, contracts.c.contract_id)
    if owner_id:
        q = q.where(contracts.c.owner_id == owner_id)
    if operator_id:
        q = q.where(contracts.c.operator_id == operator_id)
    with _engine().connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    _print(rows, as_json, "contracts", ["contract_id", "owner_id", "operator_id", "resource_id", "scheme",
                                        "owner_share", "tiers", "valid_from", "valid_to"])
