"""``store.columnar.positions_in_sorted``: the row of each wanted id among sorted ids, as a hash join
(``pc.index_in``) finds it, whatever the ids' lengths; None when the ids held are not sorted."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.store.columnar import fixed_width, positions_in_sorted

ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(ids, max_size=60, unique=True), st.lists(ids, max_size=60))
def test_positions_equal_the_hash_join(held, wanted):
    have = pa.array(sorted(held, key=lambda s: s.encode()), pa.string())
    want = pa.array(wanted, pa.string())
    got = positions_in_sorted(want, have)
    expected = pc.fill_null(pc.index_in(want, value_set=have), -1).to_numpy(zero_copy_only=False)
    assert got is not None and got.tolist() == expected.tolist()


def test_unsorted_or_null_ids_are_left_to_the_hash_join():
    assert positions_in_sorted(pa.array(["a"]), pa.array(["b", "a"])) is None
    assert positions_in_sorted(pa.array(["a"]), pa.array(["a", "a"])) is None       # not distinct
    assert positions_in_sorted(pa.array(["a", None]), pa.array(["a", "b"])) is None
    assert positions_in_sorted(pa.array(["a"]), pa.array([], pa.string())).tolist() == [-1]


def test_fixed_width_keeps_byte_order_and_sliced_arrays():
    a = pa.array(["GB10", "GB2", "R4", "ÄX", "a"]).slice(1)
    f = fixed_width(a)
    assert [x.decode() for x in f] == ["GB2", "R4", "ÄX", "a"]
    assert list(np.argsort(f, kind="stable")) == sorted(range(4), key=lambda i: a[i].as_py().encode())
