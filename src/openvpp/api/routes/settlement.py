"""Evaluation, settlement, statements, disputes and the carbon report, in the caller's tenant scope.

Operators see their own units, lines, statements, disputes and ledger entries; owners their own
resources and statements; the center and the auditor everything (the auditor changes nothing).
Meter data for evaluations comes from ``app.state.meter_source`` when set (a simulator, a test),
else from the telemetry store.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from openvpp.api.deps import current_actor, read_conn, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core import rules
from openvpp.core.errors import Forbidden, InvalidInput, NotFound, Violation
from openvpp.kernels.baseline import BaselineSpec
from openvpp.services import carbon, disputes
from openvpp.services import evaluation as eva
from openvpp.services import settlement as stl
from openvpp.services.scope import Scope, scope_of
from openvpp.store.audit import Actor
from openvpp.store.schema_settlement import settlements

router = APIRouter(tags=["settlement"], route_class=JSONRoute)
Format = Literal["json", "csv", "html"]


def _source(request: Request, conn: Connection) -> eva.MeterSource:
    src = getattr(request.app.state, "meter_source", None)
    return src if src is not None else eva.StoreMeterSource(conn)


# ---------------------------------------------------------------- evaluations


class BaselineIn(BaseModel):
    method: str = Field("gbt-workday", description="gbt-workday, gbt-similar, high-x-of-y, temperature-regression")
    params: dict[str, Any] = Field(default_factory=dict)
    adjustment: dict[str, Any] | None = Field(None, description='{"kind": "multiplicative", "cap": 0.2}')


class EvaluateIn(BaseModel):
    baseline: BaselineIn | None = Field(None, description="default: GB/T working-day (similar-day on rest days)")
    history_days: int = Field(eva.HISTORY_DAYS, ge=1, le=400)
    reason: str | None = None


@router.post("/evaluations/{event_id}", status_code=201)
def evaluate(event_id: str, request: Request, body: EvaluateIn | None = None, actor: Actor = Depends(current_actor),
             conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Evaluate an event (center): baseline, metered, response, cleared, ratio and credited per resource,
    unit, operator and slot, stored as a new version with its inputs' versions."""
    body = body or EvaluateIn()
    spec = None
    if body.baseline is not None:
        spec = BaselineSpec(body.baseline.method, body.baseline.params, body.baseline.adjustment)
    return eva.evaluate(conn, actor, event_id, _source(request, conn), spec=spec, history_days=body.history_days,
                        reason=body.reason)


@router.get("/evaluations/{event_id}")
def get_evaluation(event_id: str, level: Literal["unit", "resource"] = "unit", version: int | None = None,
                   actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """The event's current evaluation (or ``version``) per unit, operator and slot; ``level=resource`` adds
    resources. Operators see their own units, owners their own resources."""
    scope = scope_of(actor)
    if version is None:
        head = eva.current(conn, event_id)
    else:
        head = next((v for v in eva.versions(conn, event_id) if v["version"] == version), None)
        if head is None:
            raise NotFound("evaluation version", f"{event_id} v{version}")
    if scope.city_wide:
        return eva.summary(conn, head["evaluation_id"], resources_too=level == "resource")
    return eva.summary(conn, head["evaluation_id"], operator_id=scope.operator_id, owner_id=scope.owner_id,
                       resources_too=level == "resource")


@router.get("/evaluations/{event_id}/versions")
def evaluation_versions(event_id: str, actor: Actor = Depends(current_actor),
                        conn: Connection = Depends(read_conn)) -> dict:
    """Every version of an event's evaluation with its inputs (center and auditor)."""
    if not scope_of(actor).city_wide:
        raise Forbidden("evaluation versions and their inputs are the center's")
    return {"items": eva.versions(conn, event_id)}


# ---------------------------------------------------------------- settlements


class SettleIn(BaseModel):
    year: int = Field(ge=2000, le=2100)
    ruleset: str = rules.DEFAULT_RULESET


def _public(st: dict, scope: Scope) -> dict:
    if scope.city_wide:
        return st
    keep = {k: st["summary"][k] for k in ("ruleset", "main", "v2g", "penalty", "assumptions") if k in st["summary"]}
    return {**st, "summary": keep}


@router.post("/settlements", status_code=201)
def compute(body: SettleIn, actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Compute (or recompute while computed/reviewed) a year's settlement (city admin) with a packaged rule set."""
    if body.ruleset not in rules.available():
        raise InvalidInput(Violation("ruleset", f"must be one of {', '.join(rules.available())}", body.ruleset))
    return stl.compute(conn, actor, body.year, body.ruleset)


@router.get("/settlements")
def list_settlements(year: int | None = None, actor: Actor = Depends(current_actor),
                     conn: Connection = Depends(read_conn)) -> dict:
    scope = scope_of(actor)
    q = select(settlements).order_by(settlements.c.year.desc(), settlements.c.created_at.desc())
    if year is not None:
        q = q.where(settlements.c.year == year)
    return {"items": [_public(dict(r), scope) for r in conn.execute(q).mappings()]}


@router.get("/settlements/{settlement_id}")
def get_settlement(settlement_id: str, actor: Actor = Depends(current_actor),
                   conn: Connection = Depends(read_conn)) -> dict:
    return _public(stl.get(conn, settlement_id), scope_of(actor))


class SettlementTransitionIn(BaseModel):
    action: Literal["review", "approve", "pay"]
    reason: str | None = None


@router.post("/settlements/{settlement_id}/transitions")
def transition(settlement_id: str, body: SettlementTransitionIn, actor: Actor = Depends(current_actor),
               conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """computed → reviewed → approved (posts the ledger) → paid (payment entries)."""
    return stl.transition(conn, actor, settlement_id, body.action, body.reason)


@router.post("/settlements/{settlement_id}/pay-balances")
def pay_balances(settlement_id: str, actor: Actor = Depends(current_actor),
                 conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Pay (or recover) the balances a dispute left on a paid settlement."""
    return stl.pay_balances(conn, actor, settlement_id)


@router.get("/settlements/{settlement_id}/ledger")
def ledger(settlement_id: str, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Ledger entries (append-only): operators see their own and their owners' shares, owners their own."""
    scope = scope_of(actor)
    stl.get(conn, settlement_id)
    if scope.owner_id:
        items = stl.ledger(conn, settlement_id, "owner", scope.owner_id)
    else:
        items = stl.ledger(conn, settlement_id, operator_id=scope.operator_id)
    return {"items": [{**e, "amount": str(stl.from_fen(e["amount_fen"]))} for e in items]}


# ---------------------------------------------------------------- statements


def _render(stmt: dict, fmt: str, name: str) -> Any:
    if fmt == "csv":
        return Response(stl.to_csv(stmt), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if fmt == "html":
        return HTMLResponse(stl.to_html(stmt))
    return stmt


@router.get("/statements/{settlement_id}/operators/{operator_id}")
def operator_statement(settlement_id: str, operator_id: str, format: Format = Query("json"),
                       actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> Any:
    """An operator's statement as JSON, CSV or printable HTML (print to PDF)."""
    stmt = stl.statement_operator(conn, settlement_id, operator_id, scope_of(actor))
    return _render(stmt, format, f"statement-{stmt['year']}-{operator_id}")


@router.get("/statements/{settlement_id}/owners/{owner_id}")
def owner_statement(settlement_id: str, owner_id: str, format: Format = Query("json"),
                    actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> Any:
    """An owner's statement (its revenue and share per operator and contract)."""
    stmt = stl.statement_owner(conn, settlement_id, owner_id, scope_of(actor))
    return _render(stmt, format, f"statement-{stmt['year']}-{owner_id}")


# ---------------------------------------------------------------- disputes


class DisputeIn(BaseModel):
    settlement_id: str
    line_id: str
    reason: str
    evidence: dict[str, Any] = Field(description='{"meter": {resource_id: [kW per slot of the event window]}} or, '
                                                 'for baseline days too, {"meter": {resource_id: {"YYYY-MM-DD": '
                                                 '{slot: kW}}}}')


class DecisionIn(BaseModel):
    approve: bool
    reason: str


@router.post("/disputes", status_code=201)
def raise_dispute(body: DisputeIn, actor: Actor = Depends(current_actor),
                  conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """An operator admin disputes a line of its statement with corrected meter data."""
    return disputes.raise_dispute(conn, actor, body.settlement_id, body.line_id, body.reason, body.evidence)


@router.get("/disputes")
def list_disputes(settlement_id: str | None = None, actor: Actor = Depends(current_actor),
                  conn: Connection = Depends(read_conn)) -> dict:
    return {"items": disputes.list_(conn, settlement_id, scope_of(actor))}


@router.get("/disputes/{dispute_id}")
def get_dispute(dispute_id: str, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    return disputes.get(conn, dispute_id, scope_of(actor))


@router.post("/disputes/{dispute_id}/reevaluate")
def reevaluate(dispute_id: str, request: Request, actor: Actor = Depends(current_actor),
               conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """The center re-evaluates the event with the evidence over the meter data its evaluation read (409 if
    that data changed since, or comes from another source); the dispute then shows the difference."""
    if actor.role not in eva.CENTER_ROLES:
        raise Forbidden("re-evaluation is the center's work")
    return disputes.reevaluate(conn, actor, dispute_id, _source(request, conn))


@router.post("/disputes/{dispute_id}/decision")
def decide(dispute_id: str, body: DecisionIn, actor: Actor = Depends(current_actor),
           conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Approve (evaluation replaced, settlement re-run, ledger adjusted) or reject (city admin)."""
    return disputes.decide(conn, actor, dispute_id, body.approve, body.reason)


# ---------------------------------------------------------------- carbon


@router.get("/reports/carbon")
def carbon_report(year: int | None = None, event_id: str | None = None, operator_id: str | None = None,
                  format: Literal["json", "csv"] = Query("json"), actor: Actor = Depends(current_actor),
                  conn: Connection = Depends(read_conn)) -> Any:
    """Emission reduction of curtailed energy (tCO2, Southern grid and national factors) per event,
    operator and year, within your scope."""
    rep = carbon.report(conn, year, event_id, operator_id, scope_of(actor))
    if format == "csv":
        return Response(carbon.to_csv(rep), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="carbon-{year or "all"}.csv"'})
    return rep
