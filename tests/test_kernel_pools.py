"""Pool kernel: membership, totals, incremental update == full evaluation (hypothesis properties)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.errors import InvalidInput
from openvpp.kernels.pools import (
    TOTALS,
    PoolCodes,
    ResourceArrays,
    evaluate_all,
    member_mask,
    pool_totals,
    update,
)

# a small city: 2 districts x 2 substations x 2 feeders x 2 transformer areas = 16 TAs;
# the code of a node at level l (0 district .. 3 TA) is ta // 2 ** (3 - l)
N_TA = 16
N_STATE, N_TYPE, N_MODE, N_OP, N_GRADE = 2, 4, 3, 3, 3   # state 0 = active; grade 0 = A, 1 = B, 2 = C
LATENCIES = np.array([0.5, 1, 5, 30, 60, 120, 300, 900])
DURATIONS = np.array([0.25, 0.5, 1, 2, 4])


def make_resources(rng: np.random.Generator, n: int) -> ResourceArrays:
    ta = rng.integers(0, N_TA, n)
    nodes = np.stack([ta // 2 ** (3 - lv) for lv in range(4)]).astype(np.int32)

    def kw() -> np.ndarray:
        return np.where(rng.random(n) < 0.3, 0.0, np.round(rng.uniform(0, 2000, n), 3))

    def verified(declared: np.ndarray) -> np.ndarray:
        return np.where(rng.random(n) < 0.5, np.nan, np.round(declared * rng.uniform(0.3, 1.1, n), 3))

    up, down, lat = kw(), kw(), rng.choice(LATENCIES, n)
    return ResourceArrays(
        state=rng.integers(0, N_STATE, n).astype(np.int32),
        resource_type=rng.integers(0, N_TYPE, n).astype(np.int32),
        response_mode=rng.integers(0, N_MODE, n).astype(np.int32),
        operator=rng.integers(-1, N_OP, n).astype(np.int32),
        grade=rng.integers(-1, N_GRADE, n).astype(np.int32),
        nodes=nodes,
        flagged=rng.random(n) < 0.2,
        latency_s=lat, duration_h=rng.choice(DURATIONS, n), up_kw=up, down_kw=down,
        verified_latency_s=verified(lat), verified_up_kw=verified(up), verified_down_kw=verified(down),
    )


def table(draw, size: int, optional: bool = True) -> np.ndarray | None:
    if optional and draw(st.booleans()):
        return None
    return np.array(draw(st.lists(st.booleans(), min_size=size + 1, max_size=size + 1)))


@st.composite
def pool_codes(draw) -> PoolCodes:
    level = draw(st.integers(-1, 3))
    worst = draw(st.none() | st.integers(0, N_GRADE - 1))    # None = verification not required
    return PoolCodes(
        state_ok=np.array([True] + [False] * N_STATE),          # only state 0 (active) counts
        operator_ok=np.array(draw(st.lists(st.booleans(), min_size=N_OP, max_size=N_OP)) + [False]),
        type_ok=table(draw, N_TYPE), mode_ok=table(draw, N_MODE),
        grade_ok=None if worst is None else np.array([g <= worst for g in range(N_GRADE)] + [False]),
        level=level, node_code=draw(st.integers(0, 2 ** (level + 1) - 1)) if level >= 0 else -1,
        max_latency_s=draw(st.none() | st.sampled_from([1.0, 60.0, 300.0])),
        min_duration_h=draw(st.none() | st.sampled_from([0.5, 1.0, 2.0])),
        direction=draw(st.sampled_from(["down", "up", "both"])),
        use_verified=draw(st.booleans()),
        duration_h=draw(st.none() | st.sampled_from([0.5, 1.0, 3.0])),
    )


def assert_totals_equal(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-6)


# ---------------------------------------------------------------- plain numbers

def test_energy_counts_each_member_for_the_shorter_of_its_and_the_pools_duration():
    mask = np.array([True, True, False])
    up, down, dur = np.array([10.0, 0.0, 99.0]), np.array([100.0, 40.0, 99.0]), np.array([2.0, 0.5, 9.0])
    own = pool_totals(mask, up, down, dur)
    assert own == {"up_kw": 10.0, "down_kw": 140.0, "energy_up_kwh": 20.0, "energy_down_kwh": 220.0,
                   "count": 2}
    one_hour = pool_totals(mask, up, down, dur, pool_duration_h=1.0)
    assert one_hour["energy_down_kwh"] == 100.0 + 20.0 and one_hour["energy_up_kwh"] == 10.0


def test_required_grade_excludes_flagged_and_unverified_resources():
    res = make_resources(np.random.default_rng(1), 200)
    pc = PoolCodes(state_ok=np.array([True, True, False]), operator_ok=np.ones(N_OP + 1, bool),
                   grade_ok=np.array([True, True, False, False]))   # A or B
    m = member_mask(res, pc)
    assert m.any()
    assert not (m & res.flagged).any()
    assert set(res.grade[m]) <= {0, 1}


def test_update_refuses_repeated_indices():
    res = make_resources(np.random.default_rng(2), 10)
    pcs = [PoolCodes(state_ok=np.array([True, False, False]), operator_ok=np.ones(N_OP + 1, bool))]
    masks, totals = evaluate_all(res, pcs)
    idx = np.array([3, 3])
    with pytest.raises(InvalidInput, match="distinct"):
        update(masks, totals, pcs, idx, res.take(idx), res.take(idx))


# ---------------------------------------------------------------- properties

@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), pools=st.lists(pool_codes(), min_size=1, max_size=6),
       rounds=st.integers(1, 4))
def test_incremental_update_equals_full_reevaluation(seed, n, pools, rounds):
    rng = np.random.default_rng(seed)
    res = make_resources(rng, n)
    masks, totals = evaluate_all(res, pools)
    for _ in range(rounds):
        k = int(rng.integers(1, n + 1))
        idx = rng.choice(n, size=k, replace=False)
        new = make_resources(rng, k)
        keep = rng.random(k) < 0.5                    # some rows change one column only
        new.state = np.where(keep, res.state[idx], new.state).astype(np.int32)
        update(masks, totals, pools, idx, res.take(idx), new)
        res.put(idx, new)
    full_masks, full_totals = evaluate_all(res, pools)
    np.testing.assert_array_equal(masks, full_masks)
    assert_totals_equal(totals, full_totals)


def relax(draw, pc: PoolCodes) -> PoolCodes:
    """A version of ``pc`` whose every condition is as loose or looser."""
    def wider(t: np.ndarray | None) -> np.ndarray | None:
        if t is None or draw(st.booleans()):
            return None if t is None or draw(st.booleans()) else t
        return t | np.array(draw(st.lists(st.booleans(), min_size=len(t), max_size=len(t))))

    level, code = pc.level, pc.node_code
    while level >= 0 and draw(st.booleans()):
        level, code = level - 1, (code // 2 if level > 0 else -1)
    return dataclasses.replace(
        pc, operator_ok=pc.operator_ok | np.array(draw(st.lists(st.booleans(), min_size=N_OP + 1,
                                                                  max_size=N_OP + 1))),
        type_ok=wider(pc.type_ok), mode_ok=wider(pc.mode_ok), grade_ok=wider(pc.grade_ok),
        level=level, node_code=code,
        max_latency_s=None if pc.max_latency_s is None or draw(st.booleans()) else pc.max_latency_s * 5,
        min_duration_h=None if pc.min_duration_h is None or draw(st.booleans()) else pc.min_duration_h / 2,
        direction="both" if draw(st.booleans()) else pc.direction,
        duration_h=None if pc.duration_h is None or draw(st.booleans()) else pc.duration_h * 2,
    )


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120), pc=pool_codes(), data=st.data())
def test_relaxing_a_rule_never_shrinks_the_pool(seed, n, pc, data):
    res = make_resources(np.random.default_rng(seed), n)
    loose = relax(data.draw, pc)
    (m_strict, m_loose), (t_strict, t_loose) = evaluate_all(res, [pc, loose])
    assert not (m_strict & ~m_loose).any()
    assert (t_loose >= t_strict - 1e-9).all(), dict(zip(TOTALS, t_loose - t_strict, strict=True))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120), pc=pool_codes())
def test_a_nodes_pool_is_the_sum_of_its_childrens_pools(seed, n, pc):
    res = make_resources(np.random.default_rng(seed), n)
    if pc.level == 3:   # a transformer area has no children: take its feeder
        pc = dataclasses.replace(pc, level=2, node_code=pc.node_code // 2)
    children = [dataclasses.replace(pc, level=pc.level + 1, node_code=c)
                for c in ((0, 1) if pc.level < 0 else (2 * pc.node_code, 2 * pc.node_code + 1))]
    masks, totals = evaluate_all(res, [pc, *children])
    np.testing.assert_array_equal(masks[0], masks[1] | masks[2])
    assert not (masks[1] & masks[2]).any()
    assert_totals_equal(totals[0], totals[1] + totals[2])
