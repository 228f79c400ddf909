"""Daily exports of the 15-minute rollups, and the meter source that reads them.

Evaluating an event over a million meters reads their 15-minute means on a few days around the
event (DESIGN.md, "Storage and scale": batch analytics over millions of meters run on columnar
exports, not on the time-series tables). One file per local day, ``<root>/<YYYY-MM-DD>.arrow``,
Arrow IPC (Feather v2, uncompressed, memory-mapped on read), one row per device, sorted by id:

=================  ==========  ==================================================================
column             type        meaning
=================  ==========  ==================================================================
device_id          string      the resource id
kw_00 .. kw_95     float32     mean active power of the slot, kW (NaN: no telemetry)
kvar_00 .. kvar_95 float32     mean reactive power, kvar (NaN: none) — optional
min_00 .. min_95   uint8       minutes of the slot covered by telemetry (the 1-minute rollups) — optional
=================  ==========  ==================================================================

A file without the reactive columns reads as NaN kvar; without the minutes, a slot with a power
value counts as covered (15 minutes) and one without as not (0).

One column per slot, so a reader takes only the slots it needs (an evaluation: the window and the
hours around it) without touching the rest. ``manifest.json`` lists every file with its SHA-256
(computed while writing), size, row count and a SHA-256 of its device ids; :func:`verify` re-checks
the files. Arrow IPC rather than Parquet: for this access (144 slot columns of a million rows) it
read 2-3x faster here with no decoding (see benchmarks/README.md), and DuckDB, pandas and pyarrow
read it as they read Parquet.

:func:`export_day` writes a day from the telemetry store (``telemetry_rollup``); :func:`write_day`
writes arrays (the simulator, benchmarks); :class:`FileMeterSource` is the evaluation's
``MeterSource`` over a directory of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
from sqlalchemy import Connection, select

from openvpp.core.errors import InvalidInput, Violation
from openvpp.core.timeslots import SLOTS_PER_DAY, local_midnight_utc
from openvpp.services.evaluation import MeterData, check_quantity
from openvpp.store.columnar import epoch_s, hash_strings, positions_in_sorted, quarter_index, select_arrow
from openvpp.store.evaluation_files import sha256_file, write_arrow
from openvpp.store.schema_telemetry import telemetry_rollup

MANIFEST = "manifest.json"
PREFIX = {"power_kw": "kw", "reactive_kvar": "kvar", "minutes": "min"}


def _cols(prefix: str, lo: int = 0, hi: int = SLOTS_PER_DAY) -> list[str]:
    return [f"{prefix}_{k:02d}" for k in range(lo, hi)]


def _slot_block(name: str, arr: np.ndarray | None, n: int, dtype) -> np.ndarray | None:
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.shape != (n, SLOTS_PER_DAY):
        raise InvalidInput(Violation(name, f"must be (n_devices, 96) = ({n}, 96)", a.shape))
    return a.astype(dtype, copy=False)


def write_day(root: Path | str, day: date, ids: Sequence[str], power_kw: np.ndarray,
              reactive_kvar: np.ndarray | None = None, minutes: np.ndarray | None = None,
              source: str = "arrays") -> dict:
    """Write one day's file (devices sorted by id) and its manifest entry; returns the entry.

    power_kw / reactive_kvar : (n, 96) mean kW / kvar per slot, NaN = no telemetry
    minutes : (n, 96) minutes of each slot with telemetry, 0..15
    Groups not given (reactive, minutes) are not written (see the module's table).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    p = _slot_block("power_kw", power_kw, n, np.float32)
    q = _slot_block("reactive_kvar", reactive_kvar, n, np.float32)
    m = _slot_block("minutes", minutes, n, np.float64)
    if m is not None and not np.all((m >= 0) & (m <= 15)):
        raise InvalidInput(Violation("minutes", "must be 0..15 minutes per slot (no NaN)", float(np.nanmax(m))))
    id_arr = pa.array(list(ids), pa.string())
    order = pc.sort_indices(id_arr).to_numpy()
    if pc.count_distinct(id_arr).as_py() != n:
        raise InvalidInput(Violation("ids", "must be unique device ids", n))
    cols: dict[str, pa.Array] = {"device_id": id_arr.take(pa.array(order))}
    for prefix, block, dtype in (("kw", p, np.float32), ("kvar", q, np.float32), ("min", m, np.uint8)):
        if block is None:
            continue
        sorted_block = np.ascontiguousarray(block[order].T.astype(dtype))     # slot-major: one row per column
        for k, name in enumerate(_cols(prefix)):
            cols[name] = pa.array(sorted_block[k])
    table = pa.table(cols)
    path = root / f"{day.isoformat()}.arrow"
    sha, size = write_arrow(path, table)
    entry = {"file": path.name, "sha256": sha, "bytes": size, "rows": n,
             "ids_sha256": _ids_sha(cols["device_id"]), "source": source, "written_at": datetime.now(UTC).isoformat()}
    manifest = _manifest(root)
    manifest[day.isoformat()] = entry
    tmp_m = root / (MANIFEST + ".tmp")
    tmp_m.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp_m, root / MANIFEST)
    return entry


def _ids_sha(ids: pa.Array) -> str:
    h = hashlib.sha256()
    hash_strings(h, ids)
    return h.hexdigest()


def _manifest(root: Path) -> dict:
    path = root / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def export_day(conn: Connection, root: Path | str, day: date, chunk_devices: int = 20_000) -> dict:
    """Export one local day of the telemetry store's rollups (15-minute means, 1-minute coverage)."""
    start = local_midnight_utc(day)
    end = start + timedelta(days=1)
    r = telemetry_rollup
    ts = epoch_s(r.c.bucket, conn.dialect.name)
    ids = [x[0] for x in conn.execute(select(r.c.device_id).where(
        r.c.step_s == 900, r.c.bucket >= start, r.c.bucket < end).distinct().order_by(r.c.device_id))]
    n = len(ids)
    p = np.full((n, SLOTS_PER_DAY), np.nan)
    q = np.full((n, SLOTS_PER_DAY), np.nan)
    m = np.zeros((n, SLOTS_PER_DAY))
    types = {"device_id": pa.string(), "ts": pa.float64(), "n": pa.int64(), "p": pa.float64(), "q": pa.float64(),
             "nq": pa.int64()}
    for lo in range(0, n, chunk_devices):
        part = ids[lo:lo + chunk_devices]
        value_set = pa.array(part, pa.string())
        for step in (900, 60):
            t = select_arrow(conn, select(r.c.device_id, ts, r.c.n, r.c.power_sum_kw, r.c.reactive_sum_kvar,
                                          r.c.n_reactive).where(r.c.step_s == step, r.c.device_id.in_(part),
                                                                r.c.bucket >= start, r.c.bucket < end), types)
            row = lo + pc.index_in(t.column("device_id"), value_set=value_set).to_numpy(zero_copy_only=False)
            k = quarter_index(t.column("ts").to_numpy(), start.timestamp())
            if step == 900:
                cnt, nq = t.column("n").to_numpy(), t.column("nq").to_numpy()
                with np.errstate(invalid="ignore", divide="ignore"):
                    p[row, k] = np.where(cnt > 0, t.column("p").to_numpy() / cnt, np.nan)
                    q[row, k] = np.where(nq > 0, t.column("q").to_numpy() / nq, np.nan)
            else:
                np.add.at(m, (row, k), 1.0)
    return write_day(root, day, ids, p, q, np.minimum(m, 15.0), source="telemetry_rollup")


def verify(root: Path | str) -> dict[str, bool]:
    """Every manifest entry: does the file still have its recorded size and SHA-256?"""
    root = Path(root)
    out = {}
    for day, e in sorted(_manifest(root).items()):
        path = root / e["file"]
        ok = path.exists() and path.stat().st_size == e["bytes"]
        if ok:
            ok = sha256_file(path) == e["sha256"]
        out[day] = ok
    return out


class FileMeterSource:
    """The evaluation's ``MeterSource`` over daily rollup files (``write_day`` / ``export_day``).

    Reads only the days and slots asked for (``read_part``), memory-mapped; devices missing from a
    day's file, and days without a file, read as NaN (minutes 0). Values are float32 as exported, in a
    slot-major buffer (day, slot, meter): the arrays returned are its (meter, day, slot) views, not
    C-ordered copies (the kernels accept either; ``evaluation.fingerprint`` hashes them slot-major).
    """

    #: ``read_part`` takes the ids as an Arrow string array too (the evaluation passes its members' so)
    reads_arrow_ids = True

    def __init__(self, root: Path | str, name: str | None = None):
        self.root = Path(root)
        self.name = name or f"rollup-files:{self.root.name}"
        self._pos: dict[tuple[str, str], np.ndarray | None] = {}

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData:
        return self.read_part(resource_ids, first_day, list(range(n_days)), slice(0, SLOTS_PER_DAY), quantity,
                              minutes)

    def _positions(self, ids_key: str, want: pa.Array, have: pa.Array, entry: dict | None) -> np.ndarray | None:
        """Row of each wanted id in the file (-1: absent), None when the file holds exactly ``want``."""
        key = (ids_key, entry["ids_sha256"] if entry else "")
        if entry is not None and key in self._pos:
            return self._pos[key]
        if len(want) == len(have) and want.equals(have):
            pos = None
        else:          # the files keep their devices sorted: a binary search, else a hash join
            pos = positions_in_sorted(want, have)
            if pos is None:
                pos = pc.fill_null(pc.index_in(want, value_set=have), -1).to_numpy().astype(np.int64)
        if entry is not None:
            self._pos[key] = pos
        return pos

    def read_part(self, resource_ids: Sequence[str], first_day: date, days: Sequence[int], slots: slice,
                  quantity: str = "power_kw", minutes: bool = False) -> MeterData:
        check_quantity(quantity)
        lo, hi = slots.start or 0, slots.stop
        width = hi - lo
        if isinstance(resource_ids, pa.ChunkedArray):
            resource_ids = resource_ids.combine_chunks()
        want = resource_ids if isinstance(resource_ids, pa.Array) else pa.array(list(resource_ids), pa.string())
        ids_key = _ids_sha(want)
        n = len(want)
        manifest = _manifest(self.root)
        kinds = [PREFIX[quantity]] + (["min"] if minutes else [])
        empty = {k: np.nan if k != "min" else 0.0 for k in kinds}     # no file, no column, no row: no data
        # slot-major buffers (day, slot, meter): every column is taken into a contiguous row, and the
        # caller gets the (meter, day, slot) view the kernels index (no transposed copy)
        buf = {k: np.empty((len(days), width, n), dtype=np.float32) for k in kinds}
        for j, d in enumerate(days):
            day = first_day + timedelta(days=int(d))
            path = self.root / f"{day.isoformat()}.arrow"
            if not path.exists():
                for k in kinds:
                    buf[k][j] = empty[k]
                continue
            table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
            pos = self._positions(ids_key, want, table.column("device_id").combine_chunks(),
                                  manifest.get(day.isoformat()))
            for k in kinds:
                names = _cols(k, lo, hi)
                if names[0] not in table.column_names:
                    # no reactive columns: NaN; no coverage exported: covered where power is known
                    buf[k][j] = (np.where(np.isnan(buf[PREFIX[quantity]][j]), 0.0, 15.0) if k == "min"
                                 else empty[k])
                    continue
                take = None if pos is None else _taker(pos, empty[k])
                for c, name in enumerate(names):
                    col = table.column(name).to_numpy()
                    if take is None:
                        buf[k][j, c] = col
                    else:
                        take(col, buf[k][j, c])
        out = {k: v.transpose(2, 0, 1) for k, v in buf.items()}
        return MeterData(out[PREFIX[quantity]], out.get("min"))


def _taker(pos: np.ndarray, absent: float):
    """A function that fills ``out`` (n,) with ``col[pos]``, ``absent`` where the id is not in the file
    (pos -1): one ``np.take`` when every id is there."""
    if (pos >= 0).all():
        # mode="clip" (every position is valid): with the default "raise", numpy buffers ``out``
        return lambda col, out: np.take(col, pos, out=out, mode="clip")
    got = np.flatnonzero(pos >= 0)
    src = pos[got]

    def take(col: np.ndarray, out: np.ndarray) -> None:
        out.fill(absent)
        out[got] = col[src]
    return take
