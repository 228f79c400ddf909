"""Day-ahead orderly charging: the heuristic kernel against the HiGHS optimum, and at 100,000 sessions.

Targets (issue 8): 10,000 sessions x 96 slots with station limits — heuristic <= 0.5 s and within
0.5 % of the HiGHS optimum computed in the same run; 100,000 sessions <= 5 s.

Data: the piles of a generated city (``benchmarks/_common.city``: 50,000 resources for the 10,000
sessions, 200,000 for the 100,000), their stations (a site's connection at a share of its piles'
rating) and transformer-area headroom (``sim.ev.fleet_from_city``), and synthetic sessions for a
summer working day (2025-07-15, critical peak) in the window 12:00 -> 12:00 (``sim.ev``). Whole
stations are taken in a seeded random order until the session count is reached, so the station
and area limits apply as they would in the city. Prices: the rule set's TOU coefficients on the
flat price the service uses (the 0.453 yuan/kWh benchmark when the rule set names no flat price).

Reported: heuristic and HiGHS wall time, cost gap (heuristic - optimum) / optimum, served-energy
gap, the minimum served fraction of each (fairness when capacity is short), how many
(station, slot) limits bind at the optimum, and the heuristic at 100,000 sessions.

    python benchmarks/ev_schedule.py [--quick] [--sessions N] [--large N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import city, result  # noqa: E402
from openvpp.kernels import ev_heuristic, ev_lp, tariff  # noqa: E402
from openvpp.model.ev import CAPACITY_SHORT  # noqa: E402
from openvpp.sim.ev import fleet_from_city, generate_sessions  # noqa: E402

DAY = "2025-07-15"


def sessions_of_stations(fleet, n: int, seed: int):
    s = generate_sessions(fleet.chargers, DAY, seed=seed)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(fleet.stations.m)
    counts = np.bincount(s.station, minlength=fleet.stations.m)[perm]
    k = int(np.searchsorted(np.cumsum(counts), n)) + 1
    rows = np.flatnonzero(np.isin(s.station, perm[:k]))[:n]
    return s.take(rows)


def price_window() -> np.ndarray:
    rules = tariff.TouRules.from_ruleset()
    codes = tariff.period_codes(DAY, 2, rules)[48:48 + 96]
    flat = rules.flat_yuan_per_kwh or rules.v2g_base_yuan_per_kwh
    return tariff.price_curve(codes, rules, flat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller large run (30,000 sessions); under 30 s")
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    large = min(args.large, 30_000) if args.quick else args.large
    price = price_window()

    fleet = fleet_from_city(city(50_000))
    s = sessions_of_stations(fleet, args.sessions, args.seed)
    print(f"{s.n:,} sessions at {len(np.unique(s.station)):,} stations, {s.energy_kwh.sum():,.0f} kWh asked")
    ev_heuristic.schedule(s.take(np.arange(min(200, s.n))), fleet.stations, price, fleet.areas)   # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        h = ev_heuristic.schedule(s, fleet.stations, price, fleet.areas)
        times.append(time.perf_counter() - t0)
    t_h = float(np.median(times))
    t0 = time.perf_counter()
    lp = ev_lp.schedule(s, fleet.stations, price, fleet.areas)
    t_lp = time.perf_counter() - t0
    gap = (h.cost_yuan - lp.cost_yuan) / lp.cost_yuan
    served_gap = (h.served_kwh.sum() - lp.served_kwh.sum()) / lp.served_kwh.sum()
    load = np.zeros((fleet.stations.m, 96))
    np.add.at(load, s.station, lp.power_kw)
    cap = fleet.stations.capacity(96)
    binding = int(((load >= cap - 1e-6) & (load > 0)).sum())
    print(f"heuristic {t_h:.3f} s (median of 3), cost {h.cost_yuan:,.2f} yuan, min served {h.min_served_fraction:.3f}, "
          f"short {int((h.flags & CAPACITY_SHORT).astype(bool).sum())}")
    print(f"HiGHS     {t_lp:.2f} s ({lp.stats['lps']} LP, {lp.stats['variables']:,} variables), cost "
          f"{lp.cost_yuan:,.2f} yuan, min served {lp.min_served_fraction:.3f}, "
          f"short {int((lp.flags & CAPACITY_SHORT).astype(bool).sum())}, {binding} binding station-slots")
    print(f"cost gap {100 * gap:+.4f} %, served-energy gap {100 * served_gap:+.4f} %")

    big_fleet = fleet_from_city(city(200_000))
    sb = sessions_of_stations(big_fleet, large, args.seed)
    t0 = time.perf_counter()
    hb = ev_heuristic.schedule(sb, big_fleet.stations, price, big_fleet.areas)
    t_big = time.perf_counter() - t0
    print(f"heuristic at {sb.n:,} sessions: {t_big:.2f} s, min served {hb.min_served_fraction:.3f}")
    result("ev_schedule_heuristic_10k", t_h, "s", t_lp, s.n, target_s=0.5, cost_gap_pct=round(100 * gap, 4),
           served_gap_pct=round(100 * served_gap, 4), target_gap_pct=0.5, lp_s=round(t_lp, 3),
           min_served_heuristic=round(h.min_served_fraction, 4), min_served_lp=round(lp.min_served_fraction, 4),
           binding_station_slots=binding, large_sessions=sb.n, large_s=round(t_big, 3), large_target_s=5.0)


if __name__ == "__main__":
    main()
