"""indexes on the grid nodes' ancestor columns (filters by district, substation or feeder)

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_grid_nodes_district", "grid_nodes", ["district_id"])
    op.create_index("ix_grid_nodes_substation", "grid_nodes", ["substation_id"])
    op.create_index("ix_grid_nodes_feeder", "grid_nodes", ["feeder_id"])


def downgrade() -> None:
    op.drop_index("ix_grid_nodes_feeder", table_name="grid_nodes")
    op.drop_index("ix_grid_nodes_substation", table_name="grid_nodes")
    op.drop_index("ix_grid_nodes_district", table_name="grid_nodes")
