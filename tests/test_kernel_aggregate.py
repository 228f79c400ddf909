import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from openvpp.kernels.aggregate import group_sum, group_sum_2d


def test_group_sum_small_case():
    codes = np.array([0, 1, 0, -1, 2])
    kw = np.array([1.0, 2.0, 3.0, 100.0, 5.0])
    out = group_sum(codes, 3, kw, mask=np.array([True, True, True, True, False]))
    assert out[0].tolist() == [4.0, 2.0, 0.0]
    assert out[1].tolist() == [2, 1, 0]


@given(arrays(np.int64, st.integers(1, 200), elements=st.integers(-1, 6)),
       st.floats(0, 1e6, allow_nan=False))
def test_group_totals_add_up_to_the_total_of_grouped_elements(codes, scale):
    values = (np.arange(len(codes)) % 7) * scale
    out = group_sum(codes, 7, values)
    assert np.isclose(out[0].sum(), values[codes >= 0].sum())
    assert out[1].sum() == (codes >= 0).sum()


@given(arrays(np.int64, 50, elements=st.integers(0, 3)), arrays(np.int64, 50, elements=st.integers(0, 4)))
def test_cross_grouping_marginals_equal_single_groupings(a, b):
    v = np.linspace(0, 10, 50)
    both = group_sum_2d(a, 4, b, 5, v)
    assert np.allclose(both[0].sum(axis=1), group_sum(a, 4, v)[0])
    assert np.allclose(both[0].sum(axis=0), group_sum(b, 5, v)[0])
