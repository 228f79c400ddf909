"""The synthetic grid: city -> 11 districts -> 220 kV substations -> 10 kV feeders -> transformer areas.

Sites whose connected capacity reaches ``DEDICATED_SITE_KW`` get their own
customer substation (专变), a transformer area of their own sized to them;
the other sites share public transformer areas (公变) of standard ratings,
drawn with weights proportional to the rating times a lognormal spread, so
that some areas are crowded (the congestion the 2025 pilots target). The number of transformer areas follows the city
size: about one per 20 resources, at least 300, at most 50,000 public and
dedicated together, except that public areas never drop below a third of
that target (large cities can then exceed it by their customer substations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openvpp.model.columns import GRID_COLUMNS, names
from openvpp.sim import guangzhou as gz

DEDICATED_SITE_KW = 1000.0
RESOURCES_PER_TA = 20
MIN_TA, MAX_TA = 300, 50_000
TA_PER_FEEDER = 20


@dataclass
class Grid:
    table: pa.Table          # grid.csv, GRID_COLUMNS order
    site_ta: np.ndarray      # (n_sites,) row of each site's transformer area in ``ta_ids``
    ta_ids: pa.Array         # (n_ta,) transformer-area node ids, sorted
    ta_lat: np.ndarray
    ta_lon: np.ndarray
    levels: dict[str, int]   # node count per level
    n_dedicated: int         # transformer areas that are customer substations (专变)


def allocate(total: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder), each >= minimum."""
    w = np.asarray(weights, dtype=float)
    base = np.full(len(w), minimum, dtype=np.int64)
    rest = total - base.sum()
    if rest <= 0:
        return base
    raw = w / w.sum() * rest
    part = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - part), kind="stable")
    part[order[: rest - part.sum()]] += 1
    return base + part


def ordinal_within(keys: np.ndarray) -> np.ndarray:
    """1-based position of each element among equal keys, in array order (keys need not be sorted)."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.r_[0, np.flatnonzero(sk[1:] != sk[:-1]) + 1]
    run = np.repeat(starts, np.diff(np.r_[starts, len(sk)]))
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = np.arange(len(sk)) - run + 1
    return out


def _pad(numbers: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string()), width, "0")


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _dedicated_kva(site_kw: np.ndarray) -> np.ndarray:
    """Customer-substation rating: smallest standard unit >= 1.25 x load, else n x 2500 kVA."""
    need = 1.25 * site_kw
    sizes = np.asarray(gz.DEDICATED_KVA, dtype=float)
    pos = np.searchsorted(sizes, need)
    multi = np.ceil(need / sizes[-1]) * sizes[-1]
    return np.where(pos < len(sizes), sizes[np.minimum(pos, len(sizes) - 1)], multi)


def _scatter(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, sd_deg: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    n = len(lat)
    return (np.round(lat + rng.normal(0, 1, n) * sd_deg, 5),
            np.round(lon + rng.normal(0, 1, n) * sd_deg / np.cos(np.radians(23.1)), 5))


def build_grid(rng: np.random.Generator, n_resources: int, site_district: np.ndarray,
               site_kw: np.ndarray) -> Grid:
    """Grid nodes for sites in districts ``site_district`` (index into gz.DISTRICTS) with load ``site_kw``."""
    nd = len(gz.DISTRICTS)
    dedicated = site_kw >= DEDICATED_SITE_KW
    target = int(np.clip(round(n_resources / RESOURCES_PER_TA), MIN_TA, MAX_TA))
    n_ded = int(dedicated.sum())
    n_pub = max(target - n_ded, -(-target // 3))
    small = np.bincount(site_district[~dedicated], minlength=nd)
    pub_per_d = allocate(n_pub, small + 1.0, minimum=2)
    n_pub = int(pub_per_d.sum())

    # transformer areas: public ones first (grouped by district), then one per dedicated site
    ded_sites = np.flatnonzero(dedicated)
    ta_district = np.concatenate([np.repeat(np.arange(nd), pub_per_d), site_district[ded_sites]])
    ta_kva = np.concatenate([rng.choice(np.asarray(gz.TA_KVA, float), n_pub, p=np.asarray(gz.TA_KVA_SHARE)),
                             _dedicated_kva(site_kw[ded_sites])])
    ta_ded = np.r_[np.zeros(n_pub, bool), np.ones(n_ded, bool)]
    n_ta = len(ta_district)

    site_ta = np.empty(len(site_kw), dtype=np.int64)
    site_ta[ded_sites] = n_pub + np.arange(n_ded)
    first = np.r_[0, np.cumsum(pub_per_d)[:-1]]
    for d in range(nd):
        sites_d = np.flatnonzero(~dedicated & (site_district == d))
        w = ta_kva[first[d]:first[d] + pub_per_d[d]] * rng.lognormal(0.0, 0.5, pub_per_d[d])
        site_ta[sites_d] = first[d] + rng.choice(pub_per_d[d], len(sites_d), p=w / w.sum())

    # substations (5-15 per district by load weight) and feeders (about 20 areas each, at least 2)
    dw = np.asarray(gz.district_weights())
    n_sub = np.rint(5 + 10 * (dw - dw.min()) / (dw.max() - dw.min())).astype(np.int64)
    sub_first = np.r_[0, np.cumsum(n_sub)[:-1]]
    ta_sub = np.empty(n_ta, dtype=np.int64)
    for d in range(nd):
        tas = np.flatnonzero(ta_district == d)
        w = rng.lognormal(0.0, 0.4, n_sub[d])
        ta_sub[tas] = sub_first[d] + rng.choice(n_sub[d], len(tas), p=w / w.sum())
    per_sub = np.bincount(ta_sub, minlength=n_sub.sum())
    n_feed = np.maximum(2, -(-per_sub // TA_PER_FEEDER))
    ta_feed_local = np.floor(rng.random(n_ta) * n_feed[ta_sub]).astype(np.int64)
    feed_first = np.r_[0, np.cumsum(n_feed)[:-1]]
    ta_feed = feed_first[ta_sub] + ta_feed_local

    order = np.lexsort((rng.random(n_ta), ta_feed))
    rank = np.empty(n_ta, dtype=np.int64)
    rank[order] = np.arange(n_ta)
    site_ta = rank[site_ta]
    ta_district, ta_kva, ta_ded, ta_sub, ta_feed = (a[order] for a in (ta_district, ta_kva, ta_ded, ta_sub, ta_feed))
    ta_num = ordinal_within(ta_feed)

    # ids
    codes = [d.code for d in gz.DISTRICTS]
    sub_district = np.repeat(np.arange(nd), n_sub)
    sub_num = np.arange(n_sub.sum()) - sub_first[sub_district] + 1
    sub_ids = [f"GZ-{codes[d]}-S{k:02d}" for d, k in zip(sub_district, sub_num, strict=True)]
    feed_sub = np.repeat(np.arange(n_sub.sum()), n_feed)
    feed_num = np.arange(n_feed.sum()) - feed_first[feed_sub] + 1
    fw = max(2, len(str(int(n_feed.max()))))
    feed_ids = [f"{sub_ids[s]}-F{k:0{fw}d}" for s, k in zip(feed_sub, feed_num, strict=True)]
    tw = max(3, len(str(int(ta_num.max())))) if n_ta else 3
    ta_ids = _join(pa.array(feed_ids).take(pa.array(ta_feed)), "-T", _pad(ta_num, tw))

    # geography: substations spread over the district, feeders and areas around them
    clat = np.array([d.lat for d in gz.DISTRICTS])
    clon = np.array([d.lon for d in gz.DISTRICTS])
    radius = np.sqrt(np.array([d.area_km2 for d in gz.DISTRICTS]) / np.pi) / 111.0
    sub_lat, sub_lon = _scatter(rng, clat[sub_district], clon[sub_district], 0.4 * radius[sub_district])
    feed_lat, feed_lon = _scatter(rng, sub_lat[feed_sub], sub_lon[feed_sub], 0.12 * radius[sub_district[feed_sub]])
    ta_lat, ta_lon = _scatter(rng, feed_lat[ta_feed], feed_lon[ta_feed], 0.05 * radius[ta_district])

    # ratings: feeders carry 60 % of their transformers (diversity), substations 50 % of their feeders
    feed_kva = np.maximum(gz.FEEDER_KVA, np.ceil(0.6 * np.bincount(ta_feed, ta_kva, len(feed_ids)) / 1000) * 1000)
    sub_std = rng.choice(np.asarray(gz.SUBSTATION_KVA, float), len(sub_ids), p=[0.3, 0.4, 0.3])
    unit = gz.SUBSTATION_KVA[0] / 2
    sub_kva = np.maximum(sub_std, np.ceil(0.5 * np.bincount(feed_sub, feed_kva, len(sub_ids)) / unit) * unit)
    dist_kva = np.bincount(sub_district, sub_kva, nd)

    names_en = [d.name for d in gz.DISTRICTS]
    names_zh = [d.name_zh for d in gz.DISTRICTS]
    sub_short = [s[-3:] for s in sub_ids]
    feed_short = [f"{sub_short[s]}-{f.rsplit('-', 1)[1]}" for s, f in zip(feed_sub, feed_ids, strict=True)]
    ta_short = pc.utf8_slice_codeunits(ta_ids, 6)
    ta_dname = pa.array(names_en).take(pa.array(ta_district))
    ta_dname_zh = pa.array(names_zh).take(pa.array(ta_district))
    kind_en = pa.array([" transformer area ", " customer substation "]).take(pa.array(ta_ded.astype(np.int8)))
    kind_zh = pa.array(["公变台区", "专变台区"]).take(pa.array(ta_ded.astype(np.int8)))

    n_nodes = 1 + nd + len(sub_ids) + len(feed_ids) + n_ta

    def strings(*parts: list | pa.Array) -> pa.Array:
        return pa.concat_arrays([p if isinstance(p, pa.Array) else pa.array(p, pa.string()) for p in parts])

    def floats(*parts) -> pa.Array:
        return pa.array(np.concatenate([np.asarray(p, dtype=float) for p in parts]))

    columns = {
        "node_id": strings(["GZ"], [f"GZ-{c}" for c in codes], sub_ids, feed_ids, ta_ids),
        "level": strings(["city"], ["district"] * nd, ["substation"] * len(sub_ids), ["feeder"] * len(feed_ids),
                         pa.array(["transformer_area"] * n_ta, pa.string())),
        "parent_id": strings([None], ["GZ"] * nd, [f"GZ-{codes[d]}" for d in sub_district],
                             [sub_ids[s] for s in feed_sub], pa.array(feed_ids).take(pa.array(ta_feed))),
        "name": strings(["Guangzhou"], names_en,
                        [f"{names_en[d]} 220 kV substation {s}" for d, s in zip(sub_district, sub_short, strict=True)],
                        [f"{names_en[sub_district[s]]} 10 kV feeder {f}"
                         for s, f in zip(feed_sub, feed_short, strict=True)],
                        _join(ta_dname, kind_en, ta_short)),
        "name_zh": strings(["广州市"], names_zh,
                           [f"{names_zh[d]}{s} 220千伏变电站" for d, s in zip(sub_district, sub_short, strict=True)],
                           [f"{names_zh[sub_district[s]]}{f} 10千伏馈线"
                            for s, f in zip(feed_sub, feed_short, strict=True)],
                           _join(ta_dname_zh, ta_short, kind_zh)),
        "voltage_kv": pa.concat_arrays([pa.nulls(1 + nd, pa.float64()),
                                        floats(np.full(len(sub_ids), 220.0), np.full(len(feed_ids), 10.0),
                                               np.full(n_ta, 0.4))]),
        "rating_kva": floats([dist_kva.sum()], dist_kva, sub_kva, feed_kva, ta_kva),
        "lat": floats([gz.LAT], clat, sub_lat, feed_lat, ta_lat),
        "lon": floats([gz.LON], clon, sub_lon, feed_lon, ta_lon),
    }
    assert list(columns) == names(GRID_COLUMNS)
    assert all(len(c) == n_nodes for c in columns.values())
    levels = {"city": 1, "district": nd, "substation": len(sub_ids), "feeder": len(feed_ids),
              "transformer_area": n_ta}
    return Grid(pa.table(columns), site_ta, ta_ids, ta_lat, ta_lon, levels, n_ded)
