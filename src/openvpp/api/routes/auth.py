"""Log-in (OAuth2 password flow → JWT), the caller's identity, users and API keys."""

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from openvpp.api.deps import current_actor, issue_token, read_conn, settings, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.settings import Settings
from openvpp.services import accounts
from openvpp.store.audit import Actor

router = APIRouter(prefix="/auth", tags=["auth"], route_class=JSONRoute)


@router.post("/token")
def token(form: OAuth2PasswordRequestForm = Depends(), conn: Connection = Depends(read_conn),
          s: Settings = Depends(settings)) -> dict:
    """Exchange username and password for a bearer token (OAuth2 password flow)."""
    actor = accounts.authenticate(conn, form.username, form.password)
    return {"access_token": issue_token(s, actor), "token_type": "bearer", "username": actor.name,
            "role": actor.role, "operator_id": actor.operator_id, "owner_id": actor.owner_id}


@router.get("/me")
def me(actor: Actor = Depends(current_actor)) -> dict:
    return {"username": actor.name, "role": actor.role, "operator_id": actor.operator_id,
            "owner_id": actor.owner_id}


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=8)
    role: str
    operator_id: str | None = None
    owner_id: str | None = None
    display_name: str | None = None


@router.post("/users", status_code=201)
def create_user(request: Request, body: UserIn, actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function"),
                s: Settings = Depends(settings)) -> dict:
    """Create a user (city admin)."""
    request.app.state.callers.clear()
    return accounts.create_user(conn, actor, rounds=s.bcrypt_rounds, **body.model_dump())


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: str = "device"
    operator_id: str | None = None
    owner_id: str | None = None


@router.post("/api-keys", status_code=201)
def create_key(body: KeyIn, actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Issue a machine API key; the secret is in the response only."""
    return accounts.create_api_key(conn, actor, **body.model_dump())


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_key(request: Request, key_id: str, actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> None:
    accounts.revoke_api_key(conn, actor, key_id)
    request.app.state.callers.clear()
