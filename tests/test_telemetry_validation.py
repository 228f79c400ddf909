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


DEEP = b'{"gw": "S1", "points": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("payload, field", [
    (DEEP, "payload"),                                                   # deeper than the decoder goes
    (b'{"points": [{"d": "R1", "t": 1, "p": 1' + b"0" * 5000 + b"}]}", "payload"),   # beyond int parsing
    (b'{"cols": {"d": ["R1"], "t": [1], "p": [1], "qf": 0}}', "qf"),
    (b'{"cols": {"d": {"R1": 1}, "t": [1], "p": [1]}}', "d"),
    (b'{"points": [{"d": "R1", "t": 1, "p": 1}, 7]}', "points"),
    (b'{"cols": []}', "cols"),
])
def test_a_malformed_message_is_refused_naming_the_field(payload, field):
    with pytest.raises(InvalidInput) as exc:
        decode(payload)
    assert exc.value.violations[0].field == field


def test_values_out_of_every_range_refuse_only_their_point():
    """Numbers too large for int64 or a float, lists where a value belongs, ids that are not strings:
    each refuses its own point under the rule it breaks; the good point beside them is accepted."""
    big = "1" + "0" * 400
    payload = ('{"gw": "S1", "points": ['
               f'{{"d": "R1", "t": {NOW}, "p": 10}},'                       # ok
               f'{{"d": "R1", "t": {2**63}, "p": 10}},'                     # uint64 territory
               f'{{"d": "R1", "t": {2**64 + 5}, "p": 10}},'                 # beyond uint64
               f'{{"d": "R1", "t": {NOW}, "p": {big}}},'                    # 400 digits: no float holds it
               f'{{"d": "R1", "t": {NOW}, "p": 1, "q": -{big}}},'
               f'{{"d": "R1", "t": [{NOW}], "p": 10}},'                     # a list as timestamp
               f'{{"d": "R1", "t": {NOW}, "p": [[[10]]]}},'                 # a list as power
               f'{{"d": ["R1"], "t": {NOW}, "p": 10}},'                     # not the id "R1"
               f'{{"d": 42, "t": {NOW}, "p": 10}},'
               f'{{"d": "R1", "t": "0001-01-01T00:00:00+05:00", "p": 10}},'
               f'{{"d": "R1", "t": {NOW}, "p": 1, "qf": {2**70}}},'
               f'{{"d": "R1", "t": {NOW}, "p": 1, "soc": true}}'
               ']}')
    _, p = decode(payload)
    dev = [0 if d == "R1" else -1 for d in p.device.tolist()]
    names = {v: k for k, v in CODE.items()}
    assert [names.get(int(r), "ok") for r in check(p, dev)] == [
        "ok", "bad_timestamp", "bad_timestamp", "non_numeric", "non_numeric", "bad_timestamp", "non_numeric",
        "unknown_device", "unknown_device", "too_late", "bad_quality", "non_numeric"]
    assert p.device[7] == ["R1"]


def test_column_form_reads_bools_and_huge_numbers_per_value():
    """A column NumPy would turn into one numeric array (true as 1, 2**63 as uint64) is read value by value."""
    cols = {"d": ["R1", "R1", "R1"], "t": [NOW, True, 2**63], "p": [True, 1, 2.5], "qf": [0, 1, 2]}
    p = Points.from_columns(cols)
    assert p.ts_ms.tolist() == [NOW, NO_TS, NO_TS]
    assert p.bad_number.tolist() == [True, False, False] and p.p_kw[1:].tolist() == [1.0, 2.5]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["d", "t", "p", "q", "e", "eq", "soc", "qf"]), json_values),
                max_size=4),
       st.dictionaries(st.sampled_from(["d", "t", "p", "q", "soc", "qf"]), json_values), st.booleans())
def test_decoding_any_json_either_refuses_the_message_or_gives_one_value_per_point(rows, cols, column_form):
    """Whatever JSON a gateway sends, decode raises InvalidInput or returns equal-length typed arrays."""
    doc = {"gw": "g", "cols": cols} if column_form else {"gw": "g", "points": rows}
    try:
        _, p = decode(json.dumps(doc))
    except InvalidInput:
        return
    n = len(p)
    for name, dtype in (("ts_ms", np.int64), ("p_kw", np.float64), ("soc", np.float64), ("qf", np.int16),
                        ("bad_number", np.bool_)):
        arr = getattr(p, name)
        assert arr.shape == (n,) and arr.dtype == dtype, name
    assert p.device.shape == (n,)
    reason = check(p, np.full(n, 0))
    assert reason.shape == (n,)


def test_reactive_power_is_bounded_by_the_apparent_rating():
    """|q| against capacity_kva (x 1.2) where the registry has it, else against capacity_kw."""
    p = Points.from_columns({"d": ["a", "b", "c"], "t": [NOW] * 3, "p": [1.0] * 3, "q": [130.0, 130.0, 59.0]})
    kva = np.array([110.0, np.nan, 0.0])          # a: 110 kVA; b and c: no rating → their kW
    reason = validate_points(np.array([0, 0, 1]), p.ts_ms, p.p_kw, p.q_kvar, p.e_kwh, p.eq_kvarh, p.soc, p.qf,
                             p.bad_number, CAP, OPS, None, NOW, 60.0, 3600.0, 0.2, capacity_kva=kva)
    assert reason.tolist() == [0, 0, 0]           # 130 ≤ 110 × 1.2 = 132 for device 0; 59 ≤ 50 × 1.2 for 1
    p2 = Points.from_columns({"d": ["a", "b"], "t": [NOW] * 2, "p": [1.0] * 2, "q": [133.0, 61.0]})
    reason = validate_points(np.array([0, 1]), p2.ts_ms, p2.p_kw, p2.q_kvar, p2.e_kwh, p2.eq_kvarh, p2.soc, p2.qf,
                             p2.bad_number, CAP, OPS, None, NOW, 60.0, 3600.0, 0.2, capacity_kva=kva)
    assert reason.tolist() == [CODE["reactive_over_capacity"]] * 2
    # without a rating the active capacity bounds q, as before: 130 > 100 × 1.2
    assert check(p, [0, 0, 1]).tolist() == [CODE["reactive_over_capacity"]] * 2 + [0]
