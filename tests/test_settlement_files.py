"""A settlement revision's owner parties as one hashed Arrow IPC file (``store.settlement_files``,
migration 0013), on SQLite and PostgreSQL: where it is, that it is the one written, that a rolled-back
computation references no file, and that revisions stored before (owner parties as rows) still read."""

from __future__ import annotations

import os
from decimal import Decimal as D
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import delete, func, select

from openvpp.core.errors import Conflict
from openvpp.services import settlement as stl
from openvpp.store import settlement_files
from openvpp.store.schema_settlement import ledger_entries, settlement_parties
from openvpp.store.schema_settlement import settlement_files as files_t
from tests.test_settlement import ADMIN, OP, Golden, evaluate, make_golden


@pytest.fixture
def golden(loaded, tmp_path) -> Golden:
    return make_golden(loaded, tmp_path)


def _owner_rows_in_table(conn, sid: str) -> int:
    p = settlement_parties
    return conn.execute(select(func.count()).select_from(p).where(p.c.settlement_id == sid,
                                                                  p.c.party_kind == "owner")).scalar()


def _file(conn, sid: str, revision: int = 0) -> Path:
    rec = settlement_files.record(conn, sid, revision, "owners")
    return settlement_files.files_root(conn) / rec["path"]


def test_owner_parties_are_one_file_recorded_with_its_hash_and_operators_stay_rows(golden):
    evaluate(golden)
    with golden.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=golden.ruleset)["settlement_id"]
        rec = settlement_files.record(conn, sid, 0, "owners")
        owners = stl.parties(conn, sid, "owner")
        assert rec["rows"] == len(owners) == 4 and rec["format"] == "arrow-ipc" and len(rec["sha256"]) == 64
        assert _owner_rows_in_table(conn, sid) == 0
        assert [p["party_id"] for p in stl.parties(conn, sid, "operator")] == ["OP01", "OP02", "OP03"]
        path = _file(conn, sid)
        assert path.stat().st_size == rec["bytes"] and rec["path"] == f"2025/{sid}.r0.owners.arrow"
        if conn.dialect.name == "sqlite":                             # beside the database file
            assert path.parent.parent == Path(conn.engine.url.database).resolve().parent / "settlements"
        # every party, operators first, then owners by owner, operator and contract; filters as before
        every = stl.parties(conn, sid)
        assert [p["party_kind"] for p in every] == ["operator"] * 3 + ["owner"] * 4
        keys = [(p["party_id"], p["operator_id"], p["contract"]) for p in every[3:]]
        assert keys == sorted(keys) and {k[0] for k in keys} == {"OW1", "OW2", "OW3", "OW4"}
        ow1 = stl.parties(conn, sid, "owner", "OW1")
        assert [(p["operator_id"], p["contract"], p["amounts"]) for p in ow1] == [
            ("OP01", "default", {"revenue": 223684, "owner_share": 156579, "scheme": "fixed", "share": 0.7,
                                 "tiers": None})]
        assert [p["party_id"] for p in stl.parties(conn, sid, operator_id="OP02")] == ["OP02", "OW2"]
        assert stl.parties(conn, sid, "owner", "OW1", operator_id="OP02") == []


def test_an_altered_or_missing_owners_file_is_refused(golden):
    evaluate(golden)
    with golden.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=golden.ruleset)["settlement_id"]
        path = _file(conn, sid)
    data = bytearray(path.read_bytes())
    original = bytes(data)
    i = data.index(b"OW1")                                            # an owner id in the file
    data[i:i + 3] = b"OW9"
    path.write_bytes(bytes(data))                                     # same size, other content
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # not the mtime checked before
    with golden.begin() as conn:
        stl.transition(conn, ADMIN, sid, "review")
        for read in (lambda: stl.parties(conn, sid, "owner"), lambda: stl.statement_owner(conn, sid, "OW1"),
                     lambda: stl.statement_operator(conn, sid, "OP01"),
                     lambda: stl.transition(conn, ADMIN, sid, "approve")):
            with pytest.raises(Conflict, match="not the one written"):
                read()
    with golden.begin() as conn:
        assert stl.get(conn, sid)["state"] == "reviewed" and stl.ledger(conn, sid) == []
    path.write_bytes(original)
    with golden.begin() as conn:
        assert stl.statement_owner(conn, sid, "OW1")["total_share"] == "1565.79"   # the file as written reads
    path.unlink()
    with golden.begin() as conn, pytest.raises(Conflict, match="missing"):
        stl.parties(conn, sid)


def test_a_rolled_back_computation_leaves_no_referenced_file(golden):
    evaluate(golden)
    with pytest.raises(RuntimeError), golden.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=golden.ruleset)["settlement_id"]
        path = _file(conn, sid)
        assert path.exists()
        raise RuntimeError("roll back")
    with golden.begin() as conn:
        assert conn.execute(select(func.count()).select_from(files_t)).scalar() == 0
        assert stl.of_year(conn, 2025) is None
        assert settlement_files.orphans(conn) == [path]               # left behind, referenced by nothing
        sid2 = stl.compute(conn, ADMIN, 2025, ruleset=golden.ruleset)["settlement_id"]
        assert settlement_files.orphans(conn) == [path] and _file(conn, sid2) != path


def test_a_revision_stored_before_0013_reads_from_its_rows_the_same(golden):
    """Owner parties as rows of ``settlement_parties`` (as every revision before migration 0013 was
    stored): parties, statements and the ledger posted at approval are those of the file."""
    evaluate(golden)
    with golden.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=golden.ruleset)["settlement_id"]
        every = stl.parties(conn, sid)
        statements = ([stl.statement_owner(conn, sid, o) for o in ("OW1", "OW2", "OW3", "OW4")],
                      [stl.statement_operator(conn, sid, op) for op in OP])
        postings = stl._postings(conn, sid, 0).to_pylist()
        conn.execute(settlement_parties.insert(), [{k: p[k] for k in ("settlement_id", "revision", "party_kind",
                                                                      "party_id", "operator_id", "contract",
                                                                      "amounts")}
                                                   for p in every if p["party_kind"] == "owner"])
        conn.execute(delete(files_t).where(files_t.c.settlement_id == sid))
        _file_path = settlement_files.files_root(conn) / f"2025/{sid}.r0.owners.arrow"
    _file_path.unlink()                                               # nothing of the file is read
    with golden.begin() as conn:
        assert settlement_files.record(conn, sid, 0, "owners") is None and _owner_rows_in_table(conn, sid) == 4
        by_key = {(p["party_kind"], p["party_id"], p["operator_id"], p["contract"]): p for p in every}
        assert {(p["party_kind"], p["party_id"], p["operator_id"], p["contract"]): p
                for p in stl.parties(conn, sid)} == by_key
        assert ([stl.statement_owner(conn, sid, o) for o in ("OW1", "OW2", "OW3", "OW4")],
                [stl.statement_operator(conn, sid, op) for op in OP]) == statements
        assert stl._postings(conn, sid, 0).to_pylist() == postings
        stl.transition(conn, ADMIN, sid, "review")
        stl.transition(conn, ADMIN, sid, "approve")
        posted = conn.execute(select(ledger_entries.c.party_kind, ledger_entries.c.party_id,
                                     ledger_entries.c.operator_id, ledger_entries.c.account,
                                     ledger_entries.c.amount_fen).where(ledger_entries.c.settlement_id == sid)
                              .order_by(ledger_entries.c.entry_id)).all()
        assert [tuple(r) for r in posted] == [tuple(p.values()) for p in postings if p["amount_fen"]]
        assert stl.balance(conn, sid, "owner", "OW3") == D("1021.05")


# ---------------------------------------------------------------- the codes the owners' claims are grouped on


def test_pairs_of_owner_and_operator_codes_equal_the_distinct_pairs():
    """``_pairs``: owners with one operator take their own place, the others' extra operators are hashed;
    either way every row's pair is its (owner, operator) and each distinct pair appears once."""
    rng = np.random.default_rng(7)
    for n_own, n_op, n in ((50, 1, 400), (50, 3, 400), (1000, 14, 20_000), (5, 60, 10)):
        own = rng.integers(0, n_own, n)
        op = np.where(rng.random(n) < 0.8, own % n_op, rng.integers(0, n_op, n))   # mostly one operator
        inv, p_own, p_op = stl._pairs(own, op, n_own + 3, n_op)              # codes never met are allowed
        assert list(zip(p_own[inv].tolist(), p_op[inv].tolist(), strict=True)) == list(
            zip(own.tolist(), op.tolist(), strict=True))
        assert len(set(zip(p_own.tolist(), p_op.tolist(), strict=True))) == p_own.size == len(
            set(zip(own.tolist(), op.tolist(), strict=True)))


def test_codes_of_plain_and_dictionary_columns_with_nulls_and_repeated_values():
    plain = pa.array(["b", None, "a", "b", None], pa.string())
    dictionary = pa.DictionaryArray.from_arrays(pa.array([0, None, 2, 1, 3], pa.int32()),
                                                pa.array(["b", "b", "a", "c"], pa.string()))
    for column, want in ((plain, ["b", None, "a", "b", None]), (dictionary, ["b", None, "a", "b", "c"]),
                         (pa.chunked_array([dictionary.slice(0, 2), dictionary.slice(2)]),
                          ["b", None, "a", "b", "c"])):
        codes, values = stl._codes(column)
        assert values.take(pa.array(codes)).to_pylist() == want
        assert len(set(values.to_pylist())) == len(values)                  # distinct, a null among them
