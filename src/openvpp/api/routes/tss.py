"""The operator-side interface this platform serves when it runs as an operator's technical support system."""

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from openvpp import __version__
from openvpp.api.routing import JSONRoute

router = APIRouter(prefix="/tss", tags=["operator interface"], route_class=JSONRoute)


class Echo(BaseModel):
    nonce: str = Field(min_length=1, max_length=128)
    sender: str | None = Field(None, alias="from")


@router.post("/echo")
def echo(body: Echo) -> dict:
    """Connectivity test of the operator interface: the nonce comes back with our identity and clock."""
    return {"nonce": body.nonce, "system": f"openvpp {__version__}", "at": datetime.now(UTC).isoformat()}
