"""Migration 0011: grade and latency per direction, sorted out from the tests already stored."""

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from openvpp.store import db


def _test_row(conn, test_id, direction, done_at, per_resource):
    conn.execute(text(
        "INSERT INTO verification_tests (test_id, target_kind, target_id, direction, declared_kw, "
        "declared_duration_h, window_start, window_end, state, created_by, created_at, completed_at, result) "
        "VALUES (:id, 'resource', 'x', :d, 1, 1, :t, :t, 'done', 'test', :t, :t, :r)"),
        {"id": test_id, "d": direction, "t": done_at,
         "r": json.dumps({"resources": {rid: {"grade": g, "latency_s": lat}
                                         for rid, (g, lat) in per_resource.items()}})})


def test_0011_splits_the_stored_grades_by_direction(loaded):
    url = loaded.database_url
    db.downgrade(url, "0010")
    t0 = datetime(2025, 7, 1, tzinfo=UTC)
    with db.get_engine(url).begin() as conn:
        # R3: down A at 30 s, then up C at 240 s (the old code left C / 240 in the shared columns);
        # R5: only an up test; R1: two down tests, the later one counts
        _test_row(conn, "VT1", "down", t0, {"R3": ("A", 30.0), "R1": ("C", None)})
        _test_row(conn, "VT2", "up", t0 + timedelta(hours=1), {"R3": ("C", 240.0), "R5": ("B", 60.0)})
        _test_row(conn, "VT3", "down", t0 + timedelta(hours=2), {"R1": ("B", 90.0)})
        conn.execute(text("UPDATE resources SET verified_grade = 'C', verified_latency_s = 240 "
                          "WHERE resource_id = 'R3'"))
        conn.execute(text("UPDATE resources SET verified_grade = 'B', verified_latency_s = 60 "
                          "WHERE resource_id = 'R5'"))
    db.upgrade(url)
    with db.get_engine(url).connect() as conn:
        got = {r[0]: tuple(r[1:]) for r in conn.execute(text(
            "SELECT resource_id, verified_grade, verified_latency_s, verified_up_grade, verified_up_latency_s "
            "FROM resources WHERE resource_id IN ('R1', 'R2', 'R3', 'R5')"))}
    assert got == {"R1": ("B", 90.0, None, None), "R2": (None, None, None, None),
                   "R3": ("A", 30.0, "C", 240.0), "R5": (None, None, "B", 60.0)}
