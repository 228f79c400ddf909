"""Read a generated city's profiles back into the arrays ``kernels.profiles.materialise`` takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from openvpp.kernels.profiles import materialise


def load_profiles(city_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Archetype ids, their (n_archetypes, n_slots) float32 per-unit matrix and the slot starts.

    Returns
    -------
    archetype_ids : list of str, in the order of the matrix rows
    matrix : (n_archetypes, n_slots) float32
    ts : (n_slots,) datetime64[ms], UTC slot starts
    """
    table = pq.read_table(Path(city_dir) / "profiles.parquet", columns=["archetype_id", "ts", "value"])
    ids = table.column("archetype_id").combine_chunks()
    ids = ids.dictionary_decode() if pa.types.is_dictionary(ids.type) else ids
    archetype_ids = pc.unique(ids).to_pylist()
    order = np.lexsort((table.column("ts").to_numpy().astype("datetime64[ms]").astype(np.int64),
                        pc.index_in(ids, pa.array(archetype_ids)).to_numpy(zero_copy_only=False)))
    values = table.column("value").to_numpy()[order].astype(np.float32)
    n_arch = len(archetype_ids)
    if len(values) % n_arch:
        raise ValueError(f"profiles.parquet: archetypes do not all have the same number of slots ({len(values)} rows)")
    matrix = values.reshape(n_arch, -1)
    ts = table.column("ts").to_numpy()[order[: matrix.shape[1]]].astype("datetime64[ms]")
    return archetype_ids, matrix, ts


@dataclass(frozen=True)
class ResourceProfiles:
    """Per-resource inputs of ``materialise`` (struct of arrays, resources.csv order)."""

    resource_id: np.ndarray      # (n,) object (str)
    archetype_idx: np.ndarray    # (n,) int64, row in the profile matrix
    scale_kw: np.ndarray         # (n,) float64
    noise_seed: np.ndarray       # (n,) int64


def load_resource_profiles(city_dir: Path, archetype_ids: list[str]) -> ResourceProfiles:
    """Read the profile columns of ``resources.csv`` and index archetypes into ``archetype_ids``."""
    cols = ["resource_id", "profile_archetype", "profile_scale_kw", "noise_seed"]
    table = pacsv.read_csv(Path(city_dir) / "resources.csv",
                           convert_options=pacsv.ConvertOptions(
                               include_columns=cols,
                               column_types={"resource_id": pa.string(), "profile_archetype": pa.string(),
                                             "profile_scale_kw": pa.float64(), "noise_seed": pa.int64()}))
    idx = pc.index_in(table.column("profile_archetype"), pa.array(archetype_ids))
    if idx.null_count:
        unknown = pc.filter(table.column("profile_archetype"), pc.is_null(idx))[0].as_py()
        raise ValueError(f"resources.csv: profile_archetype {unknown!r} is not in profiles.parquet")
    return ResourceProfiles(
        resource_id=table.column("resource_id").to_numpy(),
        archetype_idx=idx.to_numpy(zero_copy_only=False).astype(np.int64),
        scale_kw=table.column("profile_scale_kw").to_numpy(),
        noise_seed=table.column("noise_seed").to_numpy(),
    )


def city_series(city_dir: Path, start: int, stop: int, rows: slice | np.ndarray | None = None,
                noise_sigma: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convenience: resource ids, slot starts and (n, stop - start) kW for slots [start, stop).

    ``rows`` selects resources (a slice or index array into resources.csv order);
    materialise large cities in chunks of rows.
    """
    ids, matrix, ts = load_profiles(city_dir)
    res = load_resource_profiles(city_dir, ids)
    sel = slice(None) if rows is None else rows
    kw = materialise(matrix, res.archetype_idx[sel], res.scale_kw[sel], res.noise_seed[sel], start, stop,
                     noise_sigma)
    return res.resource_id[sel], ts[start:stop], kw
