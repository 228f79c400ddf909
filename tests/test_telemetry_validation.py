"""Decoding gateway batches and the vectorised validation kernel (no database)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.errors import InvalidInput
from openvpp.services.telemetry import (
    ANY_OPERATOR,
    CODE,
    NO_TS,
    Points,
    count_reasons,
    decode,
    encode_columns,
    validate_points,
)

NOW = 1_764_000_000_000   # 2025-11-24T16:00:00Z in ms
CAP = np.array([100.0, 50.0, 10.0])
OPS = np.array([0, 0, 1], np.int32)


def check(points: Points, dev_idx, expected=None, now=NOW):
    return validate_points(np.asarray(dev_idx), points.ts_ms, points.p_kw, points.q_kvar, points.e_kwh,
                           points.eq_kvarh, points.soc, points.qf, points.bad_number, CAP, OPS, expected, now,
                           60.0, 3600.0, 0.2)


def test_row_and_column_forms_decode_to_the_same_arrays():
    rows = {"gw": "S1", "points": [{"d": "R1", "t": NOW, "p": 12.5, "q": 1.0, "soc": 0.5, "qf": 1},
                                   {"d": "R2", "t": "2025-11-24T16:00:00+00:00", "p": -3, "e": 10.25}]}
    gw, a = decode(json.dumps(rows))
    assert gw == "S1"
    cols = {"gw": "S1", "cols": {"d": ["R1", "R2"], "t": [NOW, NOW], "p": [12.5, -3], "q": [1.0, None],
                                 "e": [None, 10.25], "soc": [0.5, None], "qf": [1, 0]}}
    _, b = decode(json.dumps(cols).encode())
    for k in ("ts_ms", "p_kw", "q_kvar", "e_kwh", "soc", "qf", "bad_number"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.ts_ms.tolist() == [NOW, NOW]
    assert np.isnan(a.eq_kvarh).all()


def test_encode_columns_round_trips():
    payload = encode_columns("S9", ["R1", "R2"], np.array([NOW, NOW + 1000]), np.array([1.23456, 2.0]),
                             soc=np.array([0.5, np.nan]))
    gw, p = decode(payload)
    assert gw == "S9" and p.device.tolist() == ["R1", "R2"]
    assert p.p_kw.tolist() == [1.235, 2.0] and p.soc[0] == 0.5 and np.isnan(p.soc[1])


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'{"gw": "x"}', b'{"cols": {"d": "R1"}}',
                                     b'{"cols": {"d": ["R1"], "t": [1, 2], "p": [1]}}'])
def test_a_malformed_message_is_refused_whole(payload):
    with pytest.raises(InvalidInput):
        decode(payload)


def test_each_rule_is_counted_under_its_own_reason():
    pts = [
        {"d": "R1", "t": NOW, "p": 10},                       # ok
        {"d": "R9", "t": NOW, "p": 10},                       # unknown device
        {"d": "R3", "t": NOW, "p": 1},                        # foreign (operator 1, sender 0)
        {"d": "R1", "t": "yesterday", "p": 10},               # bad timestamp
        {"d": "R1", "t": NOW + 61_000, "p": 10},              # future
        {"d": "R1", "t": NOW - 3_601_000, "p": 10},           # too late
        {"d": "R1", "t": NOW, "p": "12"},                     # non numeric
        {"d": "R1", "t": NOW},                                # p missing
        {"d": "R1", "t": NOW, "p": 10, "q": float("inf")},   # non finite (Infinity in JSON)
        {"d": "R2", "t": NOW, "p": 60.1},                     # over capacity (50 * 1.2)
        {"d": "R2", "t": NOW, "p": -60},                      # |p| at the margin: ok
        {"d": "R2", "t": NOW, "p": 1, "q": 70},               # reactive over capacity
        {"d": "R2", "t": NOW, "p": 1, "soc": 1.2},            # soc out of range
        {"d": "R2", "t": NOW, "p": 1, "qf": 7},               # bad quality flag
        {"d": "R2", "t": NOW, "p": 1, "e": -1.0},             # negative counter
        {"d": "R1", "t": "2025-11-24T16:00:00", "p": 1},      # ISO without zone: bad timestamp
    ]
    _, p = decode(json.dumps({"gw": "g", "points": pts}))
    dev = [{"R1": 0, "R2": 1, "R3": 2}.get(x["d"], -1) for x in pts]
    reason = check(p, dev, expected=np.int64(0))
    names = {v: k for k, v in CODE.items()}
    assert [names.get(int(r), "ok") for r in reason] == [
        "ok", "unknown_device", "foreign_device", "bad_timestamp", "future_timestamp", "too_late",
        "non_numeric", "non_numeric", "non_numeric", "over_capacity", "ok", "reactive_over_capacity",
        "soc_out_of_range", "bad_quality", "negative_counter", "bad_timestamp"]
    counts = count_reasons(reason)
    assert counts["non_numeric"] == 3 and counts["bad_timestamp"] == 2 and sum(counts.values()) == 14


def test_first_broken_rule_wins_and_any_operator_is_not_fenced():
    p = Points.from_columns({"d": ["R3", "R3"], "t": [NOW + 999_999, NOW], "p": [1e9, 1.0]})
    assert check(p, [2, 2], expected=np.int64(0)).tolist() == [CODE["foreign_device"]] * 2
    assert check(p, [2, 2], expected=np.int64(ANY_OPERATOR)).tolist() == [CODE["future_timestamp"], 0]
    assert check(p, [2, 2], expected=None).tolist() == [CODE["future_timestamp"], 0]


finite = st.floats(-200, 200, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 2), st.integers(-7200, 7200), finite), max_size=50))
def test_validation_is_pointwise(rows):
    """Each point's verdict depends only on that point: checking a batch equals checking its parts."""
    dev = np.array([r[0] for r in rows], np.int64)
    p = Points.from_columns({"d": ["x"] * len(rows), "t": [NOW + r[1] * 1000 for r in rows],
                             "p": [r[2] for r in rows]})
    whole = check(p, dev)
    k = len(rows) // 2
    parts = np.concatenate([check(p.take(np.arange(k)), dev[:k]), check(p.take(np.arange(k, len(rows))), dev[k:])])
    np.testing.assert_array_equal(whole, parts)
    # and the verdict is the one the rules say
    cap = np.where(dev >= 0, CAP[np.maximum(dev, 0)], np.inf) * 1.2
    ts = np.array([NOW + r[1] * 1000 for r in rows], np.int64)
    ok = (dev >= 0) & (ts <= NOW + 60_000) & (ts >= NOW - 3_600_000) & (np.abs([r[2] for r in rows]) <= cap)
    np.testing.assert_array_equal(whole == 0, ok)


def test_missing_timestamp_is_no_ts():
    p = Points.from_columns({"d": ["R1"], "t": [None], "p": [1.0]})
    assert p.ts_ms[0] == NO_TS
