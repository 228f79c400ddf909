"""resources: verification grade and latency per direction

Until now one ``verified_grade`` / ``verified_latency_s`` took the result of whichever test ran
last, so an up (load increase) test overwrote what the down-direction readers (the reserve and
peak-shaving pools, the minute-level reserve subsidy check) rely on. The existing columns now hold
the down direction; ``verified_up_grade`` / ``verified_up_latency_s`` the up direction.

The upgrade sorts out what is stored: from every completed test (latest per resource and
direction, ``verification_tests.result``) it writes the up columns, and the down columns from the
latest down test, or NULL where a resource was only tested upwards.

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_tests = sa.table("verification_tests", sa.column("test_id", sa.String), sa.column("direction", sa.String),
                  sa.column("state", sa.String), sa.column("result", sa.JSON),
                  sa.column("completed_at", sa.DateTime(timezone=True)))
_resources = sa.table("resources", sa.column("resource_id", sa.String), sa.column("verified_grade", sa.String),
                      sa.column("verified_latency_s", sa.Float), sa.column("verified_up_grade", sa.String),
                      sa.column("verified_up_latency_s", sa.Float))


def _split_directions() -> None:
    conn = op.get_bind()
    latest: dict[tuple[str, str], tuple] = {}
    rows = conn.execute(sa.select(_tests.c.direction, _tests.c.result).where(_tests.c.state == "done")
                        .order_by(_tests.c.completed_at, _tests.c.test_id))
    for direction, result in rows:
        for rid, r in ((result or {}).get("resources") or {}).items():
            latest[(rid, direction)] = (r.get("grade"), r.get("latency_s"))
    ids = {rid for rid, _ in latest}
    for rid in sorted(ids):
        down = latest.get((rid, "down"), (None, None))
        up = latest.get((rid, "up"), (None, None))
        conn.execute(_resources.update().where(_resources.c.resource_id == rid).values(
            verified_grade=down[0], verified_latency_s=down[1], verified_up_grade=up[0],
            verified_up_latency_s=up[1]))


def upgrade() -> None:
    with op.batch_alter_table("resources") as b:
        b.add_column(sa.Column("verified_up_latency_s", sa.Float(), nullable=True))
        b.add_column(sa.Column("verified_up_grade", sa.String(2), nullable=True))
    _split_directions()


def downgrade() -> None:
    with op.batch_alter_table("resources") as b:
        b.drop_column("verified_up_grade")
        b.drop_column("verified_up_latency_s")
