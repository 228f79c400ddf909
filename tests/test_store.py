"""Migrations and the city load on both databases."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from openvpp.store import db
from openvpp.store.schema import audit_log, grid_nodes, profile_archetypes, resources

EXPECTED_TABLES = {"alembic_version", "api_keys", "audit_log", "grid_nodes", "jobs", "operators", "owners",
                   "profile_archetypes", "resources", "sites", "users", "operator_checks", "resource_links",
                   "contracts", "verification_tests", "pools"}


def test_migrations_upgrade_downgrade_upgrade(db_url):
    assert set(db.table_names(db_url)) >= EXPECTED_TABLES
    assert db.current_revision(db_url) == ",".join(db.head_revisions())
    db.downgrade(db_url, "base")
    assert db.table_names(db_url) == ["alembic_version"]
    db.upgrade(db_url)
    assert set(db.table_names(db_url)) >= EXPECTED_TABLES


def test_migrations_create_exactly_the_declared_schema(db_url):
    """Alembic's autogenerate finds no difference between the migrated database and store.schema."""
    with db.get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.full_metadata())
    assert diff == []


def test_city_load_writes_every_file_and_ancestors(loaded):
    with db.get_engine(loaded.database_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(grid_nodes)).scalar() == 10
        assert conn.execute(select(func.count()).select_from(resources)).scalar() == 7
        ta = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == "GZ-HZ-S01-F01-T002")).mappings().one()
        assert (ta["district_id"], ta["substation_id"], ta["feeder_id"]) == ("GZ-HZ", "GZ-HZ-S01", "GZ-HZ-S01-F01")
        blob = conn.execute(select(profile_archetypes.c.values_f32).where(
            profile_archetypes.c.archetype_id == "pv_south")).scalar_one()
        assert len(blob) == 35040 * 4
        actions = [r[0] for r in conn.execute(select(audit_log.c.action))]
        assert "city.load" in actions and "resources.import" in actions
