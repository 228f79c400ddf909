"""admission checks, resource links, contracts, verification tests, pools

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("resources") as b:
        b.add_column(sa.Column("operator_since", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("flagged", sa.String(200), nullable=True))
    op.create_table(
        "operator_checks",
        sa.Column("check_id", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("operator_id", sa.String(64), sa.ForeignKey("operators.operator_id",
                  name="fk_operator_checks_operator_id_operators"), nullable=False),
        sa.Column("check", sa.String(40), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.JSON()),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_by", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("check_id", name="pk_operator_checks"),
    )
    op.create_index("ix_operator_checks_operator", "operator_checks", ["operator_id", "checked_at"])
    op.create_table(
        "resource_links",
        sa.Column("link_id", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("resource_id", sa.String(64), sa.ForeignKey("resources.resource_id",
                  name="fk_resource_links_resource_id_resources"), nullable=False),
        sa.Column("operator_id", sa.String(64), sa.ForeignKey("operators.operator_id",
                  name="fk_resource_links_operator_id_operators"), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True)),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.PrimaryKeyConstraint("link_id", name="pk_resource_links"),
    )
    op.create_index("ix_resource_links_resource", "resource_links", ["resource_id"])
    op.create_table(
        "contracts",
        sa.Column("contract_id", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.String(64), sa.ForeignKey("owners.owner_id",
                  name="fk_contracts_owner_id_owners"), nullable=False),
        sa.Column("operator_id", sa.String(64), sa.ForeignKey("operators.operator_id",
                  name="fk_contracts_operator_id_operators"), nullable=False),
        sa.Column("resource_id", sa.String(64), sa.ForeignKey("resources.resource_id",
                  name="fk_contracts_resource_id_resources")),
        sa.Column("scheme", sa.String(16), nullable=False),
        sa.Column("owner_share", sa.Float()),
        sa.Column("tiers", sa.JSON()),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contract_id", name="pk_contracts"),
    )
    op.create_index("ix_contracts_owner", "contracts", ["owner_id", "operator_id"])
    op.create_table(
        "verification_tests",
        sa.Column("test_id", sa.String(64), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("operator_id", sa.String(64), sa.ForeignKey("operators.operator_id",
                  name="fk_verification_tests_operator_id_operators")),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("declared_kw", sa.Float(), nullable=False),
        sa.Column("declared_duration_h", sa.Float(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("baseline_method", sa.String(64)),
        sa.Column("verified_kw", sa.Float()),
        sa.Column("latency_s", sa.Float()),
        sa.Column("ratio", sa.Float()),
        sa.Column("grade", sa.String(2)),
        sa.Column("result", sa.JSON()),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("test_id", name="pk_verification_tests"),
    )
    op.create_table(
        "pools",
        sa.Column("pool_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scenario", sa.String(32), nullable=False),
        sa.Column("node_id", sa.String(64), sa.ForeignKey("grid_nodes.node_id",
                  name="fk_pools_node_id_grid_nodes"), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pool_id", name="pk_pools"),
    )


def downgrade() -> None:
    op.drop_table("pools")
    op.drop_table("verification_tests")
    op.drop_index("ix_contracts_owner", table_name="contracts")
    op.drop_table("contracts")
    op.drop_index("ix_resource_links_resource", table_name="resource_links")
    op.drop_table("resource_links")
    op.drop_index("ix_operator_checks_operator", table_name="operator_checks")
    op.drop_table("operator_checks")
    with op.batch_alter_table("resources") as b:
        b.drop_column("flagged")
        b.drop_column("operator_since")
