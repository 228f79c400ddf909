"""``store.columnar`` on Arrow strings without a Python string per value: ``positions_in_sorted`` (the row
of each wanted id among sorted ids, as a hash join finds it, whatever the ids' lengths; None when the ids
held are not sorted) and ``joined_bytes`` (the bytes of ``sep.join``, which the evaluation's meter hash
takes: the same from Arrow ids as from a list, so disputes re-hash what was recorded)."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.store.columnar import fixed_width, joined_bytes, positions_in_sorted

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


@settings(max_examples=300, deadline=None)
@given(st.lists(ids, max_size=50), st.integers(0, 3))
def test_joined_bytes_equal_the_python_join(values, cut):
    a = pa.array(["skip"] * cut + values, pa.string()).slice(cut)
    assert joined_bytes(a, b"\x1f") == "\x1f".join(values).encode()
    assert joined_bytes(pa.chunked_array([a]), b"\x1f") == "\x1f".join(values).encode()


def test_the_meter_hash_is_the_same_from_arrow_ids_and_from_a_list():
    from datetime import date

    from openvpp.services.evaluation import fingerprint

    rid = ["GB1", "GB2", "R4", "电表-7"]
    load = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    plan = {"days": [0, 1], "slots": [5, 8], "order": "slot-major"}
    assert (fingerprint(pa.array(rid), date(2025, 7, 1), load, None, read=plan)
            == fingerprint(rid, date(2025, 7, 1), load, None, read=plan))
