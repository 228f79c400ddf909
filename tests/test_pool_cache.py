"""The platform's shared pool engine (``services.pools.PoolCache``) follows the database incrementally,
on SQLite and PostgreSQL: after every kind of change, made through the services as the API makes it,
its pools (members and totals) and its registry arrays equal a fresh ``PoolEngine.from_db``; and the
kinds that should be incremental are (no reload of the registry).

The change sequences are random (seeded, so a failure names its seed and step): declared
capability and response mode edited, resources registered (by the center: active; by an operator:
registered), approved, rejected, retired, transferred, verified (one resource or a whole site,
grades A to C, C flagged), pools created, changed and deleted, an operator suspended and reinstated,
unrelated audit entries, and a bulk import of several rows (the one change that rebuilds).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from openvpp.core.errors import InvalidInput, NotFound
from openvpp.services import access, admission, pools, registry, resources
from openvpp.services import verification as ver
from openvpp.services.registry_arrays import CATEGORICAL, NUMERIC
from openvpp.store import audit, db
from openvpp.store.audit import Actor
from openvpp.store.schema import operators
from openvpp.store.schema import resources as resources_table
from tests.conftest import RES_HEADER, write_csv
from tests.test_verification import flat_source

ADMIN = Actor("center", "city_admin")
SITES = {"S1": ("GZ-TH-S01-F01-T001", "OW1"), "S2": ("GZ-HZ-S01-F01-T001", "OW2"),
         "S3": ("GZ-HZ-S01-F01-T002", "OW3")}
TAS = [ta for ta, _ in SITES.values()]
TYPES = ["central_ac", "ev_charging", "user_storage", "v2g_charger", "distributed_pv"]
MODES = ["automatic", "semi_automatic"]


def labels(engine: pools.PoolEngine, column: str) -> list:
    cats = np.array(engine.reg.categories[column] + [None], dtype=object)
    return cats[engine.reg.codes[column]].tolist()


def assert_same(live: pools.PoolEngine, fresh: pools.PoolEngine, where: str) -> None:
    """Same resources, attributes, flags, pools, members and totals."""
    assert live.reg.resource_id.tolist() == fresh.reg.resource_id.tolist(), where
    for col in CATEGORICAL:
        assert labels(live, col) == labels(fresh, col), (where, col)
    for col in NUMERIC:
        np.testing.assert_allclose(live.reg.values[col], fresh.reg.values[col], rtol=1e-12, equal_nan=True,
                                   err_msg=f"{where} {col}")
    np.testing.assert_array_equal(live.res.flagged, fresh.res.flagged, err_msg=where)
    assert sorted(live._index) == sorted(fresh._index), where
    for pid in fresh._index:
        np.testing.assert_array_equal(live.mask(pid), fresh.mask(pid), err_msg=f"{where} {pid}")
        a, b = live.totals_of(pid), fresh.totals_of(pid)
        assert {k: a[k] for k in ("name", "scenario", "node_id", "level", "count")} == \
            {k: b[k] for k in ("name", "scenario", "node_id", "level", "count")}, (where, pid)
        for k in ("up_kw", "down_kw", "energy_up_kwh", "energy_down_kwh"):
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), (where, pid, k)


class Changes:
    """Random changes through the services, each in its own transaction. ``step`` returns the kind of
    change made and whether the cache should follow it without reloading the registry."""

    def __init__(self, url: str, rng: random.Random, tmp_path):
        self.url, self.rng, self.tmp = url, rng, tmp_path
        self.n = 0

    def _ids(self, conn, *states: str) -> list[str]:
        q = select(resources_table.c.resource_id).order_by(resources_table.c.resource_id)
        if states:
            q = q.where(resources_table.c.state.in_(states))
        return list(conn.execute(q).scalars())

    def _row(self, rid: str, operator: str) -> dict:
        site = self.rng.choice(sorted(SITES))
        ta, owner = SITES[site]
        cap = float(self.rng.randrange(100, 1200, 10))
        rtype = self.rng.choice(TYPES)
        up = cap / 2 if rtype in ("user_storage", "v2g_charger") else 0.0
        return {"resource_id": rid, "name": f"random {rid}", "resource_type": rtype, "operator_id": operator,
                "owner_id": owner, "site_id": site, "ta_id": ta, "capacity_kw": cap, "capacity_kva": cap,
                "profile_archetype": "ac_office", "profile_scale_kw": cap / 2, "noise_seed": self.n,
                "latency_s": float(self.rng.choice([1, 30, 120, 600])), "response_mode": self.rng.choice(MODES),
                "adjustable_up_kw": up, "adjustable_down_kw": round(cap * self.rng.uniform(0.1, 0.9), 1),
                "adjustable_duration_h": self.rng.choice([0.5, 1, 2, 4]), "control_protocol": "mqtt",
                "meter_id": f"MX{rid}", "commissioned_on": "2024-01-01"}

    def step(self) -> tuple[str, bool]:
        """One random change; returns its kind and whether anything was written."""
        self.n += 1
        kind = self.rng.choice(["update", "update", "register", "register", "approve", "reject", "retire",
                                "transfer", "transfer", "verify", "verify_site", "pool", "pool_change",
                                "operator", "unrelated", "import_batch"])
        with db.get_engine(self.url).begin() as conn:
            made = getattr(self, kind)(conn)
        return kind, made

    def update(self, conn) -> bool:
        rid = self.rng.choice(self._ids(conn, "active", "registered"))
        cap = conn.execute(select(resources_table.c.capacity_kw)
                           .where(resources_table.c.resource_id == rid)).scalar_one()
        resources.update(conn, ADMIN, rid, {"adjustable_down_kw": round(cap * self.rng.uniform(0, 1), 1),
                                            "latency_s": float(self.rng.choice([1, 45, 200, 900])),
                                            "response_mode": self.rng.choice(MODES),
                                            "adjustable_duration_h": self.rng.choice([0.5, 1, 3])},
                         reason="random edit")
        return True

    def register(self, conn) -> bool:
        operator = self.rng.choice(["OP01", "OP02"])
        actor = ADMIN if self.rng.random() < 0.5 else Actor("op", "operator_admin", operator_id=operator)
        resources.register(conn, actor, self._row(f"RN{self.n:03d}", operator))
        return True

    def _transition(self, conn, states: tuple[str, ...], action: str) -> bool:
        ids = self._ids(conn, *states)
        if not ids:
            return False
        access.transition(conn, ADMIN, [self.rng.choice(ids)], action, reason=f"random {action}")
        return True

    def approve(self, conn) -> bool:
        return self._transition(conn, ("registered",), "approve")

    def reject(self, conn) -> bool:
        return self._transition(conn, ("registered",), "reject")

    def retire(self, conn) -> bool:
        return self._transition(conn, ("active",), "retire")

    def transfer(self, conn) -> bool:
        rid = self.rng.choice(self._ids(conn, "active"))
        now = conn.execute(select(resources_table.c.operator_id).where(resources_table.c.resource_id == rid)).scalar()
        admitted = set(conn.execute(select(operators.c.operator_id).where(operators.c.state == "admitted")).scalars())
        targets = sorted(admitted - {now})
        if not targets:
            return False
        access.transfer(conn, ADMIN, rid, self.rng.choice(targets), "random transfer",
                        at=datetime.now(UTC) + timedelta(seconds=self.n))
        return True

    def _verify(self, conn, kind: str, target: str) -> None:
        test = ver.schedule(conn, ADMIN, kind, target, datetime(2025, 7, 15, 6, 0, tzinfo=UTC))
        delivery = {rid: (kw * self.rng.choice([1.0, 0.8, 0.4]), self.rng.randrange(0, 5))
                    for rid, kw in test["result"]["declared_kw"].items()}
        ver.complete(conn, ADMIN, test["test_id"], flat_source(delivery))

    def verify(self, conn) -> bool:
        ids = [r for r in self._ids(conn, "active")
               if conn.execute(select(resources_table.c.adjustable_down_kw)
                               .where(resources_table.c.resource_id == r)).scalar_one() > 0]
        if not ids:
            return False
        self._verify(conn, "resource", self.rng.choice(ids))
        return True

    def verify_site(self, conn) -> bool:
        site = self.rng.choice(sorted(SITES))
        try:
            with conn.begin_nested():
                self._verify(conn, "site", site)
        except (InvalidInput, NotFound):   # a site with nothing active or nothing declared: no test
            return False
        return True

    def pool(self, conn) -> bool:
        pools.create_pool(conn, ADMIN, {"pool_id": f"P{self.n:03d}", "scenario": "local_congestion",
                                        "rules": {"node_id": self.rng.choice(TAS)}})
        return True

    def pool_change(self, conn) -> bool:
        ids = [p["pool_id"] for p in pools.list_pools(conn)]
        pid = self.rng.choice(ids)
        if pid.startswith("P") and self.rng.random() < 0.4:
            pools.delete_pool(conn, ADMIN, pid, reason="random delete")
        else:
            pools.update_pool(conn, ADMIN, pid, {"rules": {"max_latency_s": self.rng.choice([10, 30, 60])}},
                              reason="random change")
        return True

    def operator(self, conn) -> bool:
        state = conn.execute(select(operators.c.state).where(operators.c.operator_id == "OP02")).scalar_one()
        admission.transition(conn, ADMIN, "OP02", "suspend" if state == "admitted" else "reinstate",
                             reason="random")
        return True

    def unrelated(self, conn) -> bool:
        audit.record(conn, ADMIN, "note", "user", f"u{self.n}")
        return True

    def import_batch(self, conn) -> bool:
        rows = [self._row(f"RB{self.n:03d}{k}", "OP01") for k in range(2)]
        write_csv(self.tmp / "batch.csv", RES_HEADER, [[r[h] for h in RES_HEADER] for r in rows])
        registry.import_resources(conn, registry.read_table(self.tmp / "batch.csv", ()), ADMIN)
        return True


@pytest.mark.parametrize("seed", [1, 2])
def test_cache_follows_random_changes_like_a_fresh_engine(loaded, tmp_path, seed):
    url = loaded.database_url
    with db.get_engine(url).begin() as conn:
        pools.default_pools(conn, ADMIN)
    cache = pools.PoolCache(window=50)   # a short window: the base moves during the run
    with db.get_engine(url).connect() as conn:
        first = cache.get(conn)
    assert cache.builds == 1
    changes = Changes(url, random.Random(seed), tmp_path)
    incremental = set()
    for step in range(60):
        builds, updates = cache.builds, cache.updates
        kind, made = changes.step()
        with db.get_engine(url).connect() as conn:
            live = cache.get(conn)
            fresh = pools.PoolEngine.from_db(conn)
        where = f"seed {seed} step {step} {kind}{'' if made else ' (nothing to do)'}"
        assert_same(live, fresh, where)
        if not made or kind == "unrelated":
            assert (cache.builds, cache.updates) == (builds, updates), where
            assert live is first, where
        elif kind == "import_batch":                   # several new rows at once: reloaded
            assert cache.builds == builds + 1, where
        else:                                          # followed without reloading the registry
            assert (cache.builds, cache.updates) == (builds, updates + 1), where
            assert live is not first, where            # a new object after every change
            incremental.add(kind)
        first = live
    assert {"update", "register", "transfer", "pool", "operator"} <= incremental
    assert {"verify", "verify_site"} & incremental


def test_a_completed_verification_moves_its_members_in_and_out_of_the_reserve_pool(loaded):
    """verification.complete → grade and flag → the reserve pool, through the shared cache."""
    url = loaded.database_url
    with db.get_engine(url).begin() as conn:
        pools.default_pools(conn, ADMIN)
    cache = pools.PoolCache()
    with db.get_engine(url).connect() as conn:
        assert cache.get(conn).totals_of("reserve:GZ")["count"] == 0     # nothing verified yet
    start = datetime(2025, 7, 15, 6, 0, tzinfo=UTC)
    with db.get_engine(url).begin() as conn:
        t = ver.schedule(conn, ADMIN, "site", "S1", start)               # R1 160, R2 200, R3 500 kW down
        ver.complete(conn, ADMIN, t["test_id"], flat_source({"R1": (150.0, 1), "R2": (60.0, 1), "R3": (480.0, 0)}))
    with db.get_engine(url).connect() as conn:
        reserve = cache.get(conn).totals_of("reserve:GZ")
        members = cache.get(conn).members("reserve:GZ")["items"]
    # R1 A (150 of 160), R3 A (480 of 500) count with their verified kW; R2 C (30 %) is flagged and out
    assert (members, reserve["down_kw"]) == (["R1", "R3"], pytest.approx(150.0 + 480.0))
    assert cache.builds == 1 and cache.updates == 1 and cache.last["resources"] == 3
    with db.get_engine(url).begin() as conn:
        t = ver.schedule(conn, ADMIN, "resource", "R3", start + timedelta(days=1))
        ver.complete(conn, ADMIN, t["test_id"], flat_source({"R3": (100.0, 0)}))
    with db.get_engine(url).connect() as conn:
        assert cache.get(conn).members("reserve:GZ")["items"] == ["R1"]
        assert cache.get(conn).totals_of("reserve:GZ")["down_kw"] == pytest.approx(150.0)
        assert cache.registry(conn).values["verified_down_kw"][2] == pytest.approx(100.0)
    assert cache.builds == 1 and cache.updates == 2


def test_many_changes_at_once_rebuild_instead(loaded):
    url = loaded.database_url
    cache = pools.PoolCache(max_changes=2)
    with db.get_engine(url).connect() as conn:
        cache.get(conn)
    with db.get_engine(url).begin() as conn:
        for rid in ("R1", "R2", "R3"):
            resources.update(conn, ADMIN, rid, {"latency_s": 7.0})
    with db.get_engine(url).connect() as conn:
        assert cache.get(conn).reg.values["latency_s"][:3].tolist() == [7.0, 7.0, 7.0]
    assert (cache.builds, cache.updates) == (2, 0)
