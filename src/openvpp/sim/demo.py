"""The main job, ``openvpp demo``: a simulated city loaded into an embedded platform.

Later issues extend the demo day (events, dispatch, settlement); this module keeps
one entry point, ``run_demo``, so the CLI and tests run the same work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from openvpp.core.settings import Settings
from openvpp.services import registry, setup
from openvpp.sim.demo_day import run_day
from openvpp.store import db


def _city(home: Path, n: int, seed: int, progress: Callable[[str, float], None] | None) -> Path:
    from openvpp.sim.city import generate_city

    city_dir = home / f"city-{n}-{seed}"
    meta = city_dir / "city.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        if m.get("n_resources") == n and m.get("seed") == seed:
            return city_dir  # same parameters, same files: reuse
    generate_city(city_dir, n, seed, progress=progress)
    return city_dir


def prepare_demo(settings: Settings, n_resources: int = 2000, seed: int = 1,
                 progress: Callable[[str, float], None] | None = None) -> dict:
    """Migrate ``settings``' database, load a generated city into it, create one login per role."""
    setup.init_database(settings)
    city_dir = _city(settings.home, n_resources, seed, progress)
    result = setup.load_city(settings, city_dir, progress)
    accounts = setup.create_demo_accounts(settings)
    return {"city_dir": str(city_dir), "counts": result.counts, "users": accounts.users,
            "operator_id": accounts.operator_id, "second_operator_id": accounts.second_operator_id,
            "owner_id": accounts.owner_id}


def run_demo(resources: int = 2000, seed: int = 1, fresh: bool = True,
             progress_factory: Callable | None = None, console=None) -> tuple[dict, Settings]:
    """Generate and load a city into ``$OPENVPP_HOME/demo`` (SQLite); return the summary and settings."""
    base = Settings.from_env()
    home = base.home / "demo"
    if fresh and (home / "openvpp.db").exists():
        for suffix in ("", "-wal", "-shm"):
            p = home / f"openvpp.db{suffix}"
            if p.exists():
                p.unlink()
    home.mkdir(parents=True, exist_ok=True)
    settings = replace(base, home=home, database_url=f"sqlite:///{home / 'openvpp.db'}").with_secret()
    t0 = time.perf_counter()
    bar_cm = progress_factory() if progress_factory else nullcontext(None)
    with bar_cm as bar:
        task = bar.add_task("demo", total=1.0) if bar is not None else None

        def progress(stage: str, fraction: float) -> None:
            if bar is not None:
                bar.update(task, completed=fraction, description=f"demo: {stage}")

        info = prepare_demo(settings, resources, seed, progress)
        day = run_day(settings, progress, seed=seed)
    with db.get_engine(settings.database_url).connect() as conn:
        targets = registry.targets_report(conn)
        by_type = registry.summary(conn, "type")
    summary = {
        "database": settings.database_url,
        "city_dir": info["city_dir"],
        "resources": info["counts"]["resources"],
        "counts": info["counts"],
        "targets": targets,
        "by_type": by_type,
        "day": day,
        "logins": {role: list(up) for role, up in info["users"].items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return summary, settings
