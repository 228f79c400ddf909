"""Shared by the benchmark scripts: the result line, a cached generated city, scratch PostgreSQL databases."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("OPENVPP_BENCH_CACHE", ROOT / "var" / "bench"))
PG_ADMIN = os.environ.get("OPENVPP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def result(name: str, value: float, unit: str, reference: float, size: int, **extra) -> None:
    """Print the one JSON line every benchmark ends with."""
    line = {"name": name, "value": round(value, 6), "unit": unit, "reference": round(reference, 6),
            "ratio": round(value / reference, 4) if reference else None, "size": size}
    line.update(extra)
    print(json.dumps(line))


def city(n: int, seed: int = 7) -> Path:
    """A generated city of ``n`` resources, cached under var/bench (same seed, same files)."""
    from openvpp.sim.city import generate_city

    out = CACHE / f"city-{n}-{seed}"
    meta = out / "city.json"
    if not meta.exists() or json.loads(meta.read_text()).get("n_resources") != n:
        t0 = time.perf_counter()
        generate_city(out, n, seed)
        print(f"generated {n:,} resources in {time.perf_counter() - t0:.1f} s -> {out}")
    return out


def pg_database(name: str) -> str:
    """Drop and create database ``name``; return its SQLAlchemy URL."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


def load_city(url: str, city_dir: Path):
    """The database at ``url`` migrated and holding the generated city at ``city_dir``, with the
    indexes and keys a bulk load leaves for after commit built; returns its SQLAlchemy engine."""
    from openvpp.services import registry
    from openvpp.store import db

    db.upgrade(url)
    engine = db.get_engine(url)
    with engine.begin() as conn:
        registry.load_city(conn, city_dir)
    registry.finish_bulk(engine)
    return engine


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Median wall time of ``repeat`` runs and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out
