"""merge the feature branches: telemetry (0003), EV (0005), settlement (0006 on events 0004 on admission 0002)

Revision ID: 0007
Revises: 0003, 0005, 0006
"""

revision = "0007"
down_revision = ("0003", "0005", "0006")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
