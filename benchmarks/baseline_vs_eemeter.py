"""Cross-check: our baselines against OpenEEmeter on the meter samples eemeter ships.

    pip install eemeter          # 4.x, needs pandas < 3; not a dependency of openvpp
    python benchmarks/baseline_vs_eemeter.py

For each hourly electricity sample of ``eemeter`` (simulated Illinois meters and
the London smart-meter samples with a year of baseline), the year before the
sample's blackout date is used (eemeter's samples put an efficiency
intervention after it). Five disjoint folds of 8 % of its days each (not in the
first four weeks, no missing hour; 145 days per sample) are held out in turn.
For each held-out day:

* our methods see the days before it only, with every held-out day and every
  day with a missing hour excluded (as earlier event days would be): GB/T
  working-day 5/2 (similar-day 3/2 on weekends), the same with a bounded
  multiplicative same-day adjustment from 12:00-13:00, high-4-of-5/2 ranked on
  14:00-19:00, and per-slot temperature regressions over 20 days (cooling
  degrees above 22 °C, and plain linear);
* eemeter's daily and hourly models are fitted, once per fold, on the whole
  year with that fold's days blanked out, then predict them.

Hourly kWh is mean kW over the hour, so each hour fills 4 of our 15-minute
slots. Day kinds use the Monday-Friday rule (no Chinese holidays on US/UK
data). Metrics over the held-out days, ASHRAE Guideline 14 style with p = 0:
CV(RMSE) = RMSE / mean(observed), NMBE = sum(observed - predicted) / (n mean(observed)),
hourly (all 24 h), over the 14:00-19:00 window, and on daily totals. Prints a
markdown table and one JSON line.
"""

from __future__ import annotations

import json
import logging
import time
import warnings

import numpy as np
import pandas as pd

from openvpp.kernels.baseline import (
    high_x_of_y,
    pre_event_slots,
    same_day_adjustment,
    similar_day_mean,
    temperature_regression,
    workday_mean,
)

SAMPLES = [  # sample id, local time zone (fixed offset: the 96-slot day has no DST)
    ("il-electricity-cdd-hdd-hourly", "Etc/GMT+6"),
    ("il-electricity-cdd-only-hourly", "Etc/GMT+6"),
    ("uk-electricity-hdd-only-hourly-sample-0", "UTC"),
]
WINDOW = slice(56, 76)  # 14:00-19:00
WINDOW_HOURS = slice(14, 19)
HOLD_OUT = 0.08  # of the year's days, per fold
FOLDS = 5
SEED = 7


def load_year(sample: str, tz: str):
    from eemeter.eemeter.samples.load import load_sample

    fahrenheit = sample.startswith("il-")
    meter, temp, meta = load_sample(sample, tempF=fahrenheit)
    temp_f = temp if fahrenheit else temp * 9 / 5 + 32
    end = pd.Timestamp(meta["blackout_start_date"]).tz_convert(tz).normalize()
    start = end - pd.Timedelta(days=365)
    hours = pd.date_range(start, end, freq="h", inclusive="left", tz=tz)
    observed = meter["value"].tz_convert(tz).reindex(hours)
    temp_f = temp_f.tz_convert(tz).reindex(hours).interpolate(limit=3)
    return hours, observed, temp_f


def ours(obs: np.ndarray, temp_c: np.ndarray, kinds: np.ndarray, excluded: np.ndarray, events: np.ndarray):
    """Predictions (K, 24) kW of every method for the held-out days ``events``."""
    n_days = obs.shape[0]
    load = np.broadcast_to(np.repeat(obs, 4, axis=1)[None], (events.size, n_days, 96))
    temp96 = np.repeat(temp_c, 4, axis=1)
    working = kinds[events] == 0
    out = {}

    def by_kind(fn, per_row=None, **kw):
        pred = np.full((events.size, 96), np.nan)
        for mask, similar in ((working, (0,)), (~working, (1, 2))):
            if mask.any():
                rows = {k: v[mask] for k, v in (per_row or {}).items()}
                res = fn(
                    load[mask],
                    day_kinds=kinds,
                    excluded=excluded,
                    event_day_idx=events[mask],
                    kinds=similar,
                    **rows,
                    **kw,
                )
                pred[mask] = res.power_kw
        return pred

    gbt = np.full((events.size, 96), np.nan)
    if working.any():
        gbt[working] = workday_mean(load[working], kinds, excluded, events[working]).power_kw
    if (~working).any():
        gbt[~working] = similar_day_mean(load[~working], kinds, excluded, events[~working]).power_kw
    out["gbt-workday-5/2 (similar-3/2 on weekends)"] = gbt
    metered = np.repeat(obs[events], 4, axis=1)
    adjusted = same_day_adjustment(gbt, metered, WINDOW, pre_event_slots(WINDOW.start), cap=0.2).power_kw
    out["gbt-workday-5/2+mult-0.2"] = adjusted
    out["high-4-of-5/2"] = by_kind(high_x_of_y, window_slots=WINDOW)
    for form in ("cooling", "linear"):
        name = "temp-reg-20/2-cooling22" if form == "cooling" else "temp-reg-20/2-linear"
        out[name] = by_kind(
            temperature_regression, {"event_temp_c": temp96[events]}, temp_c=temp96, n_days=20, form=form
        )
    return {k: v[:, ::4] for k, v in out.items()}


def eemeter_models(hours, observed_train: pd.Series, temp_f: pd.Series, events_days: pd.DatetimeIndex):
    """eemeter daily (K,) kWh and hourly (K, 24) kWh predictions for the held-out days."""
    from eemeter.eemeter import (
        DailyBaselineData,
        DailyModel,
        DailyReportingData,
        HourlyBaselineData,
        HourlyModel,
        HourlyReportingData,
    )

    daily_obs = observed_train.resample("D").sum(min_count=24)
    t0 = time.perf_counter()
    base = DailyBaselineData.from_series(daily_obs, temp_f, is_electricity_data=True)
    daily = DailyModel().fit(base, ignore_disqualification=True)
    report = DailyReportingData.from_series(None, temp_f, tzinfo=hours.tz)
    pred_d = daily.predict(report, ignore_disqualification=True)["predicted"]
    pred_d = pred_d.reindex(events_days).to_numpy()
    t_daily = time.perf_counter() - t0

    t0 = time.perf_counter()
    frame = pd.DataFrame({"observed": observed_train, "temperature": temp_f}, index=hours)
    hourly = HourlyModel().fit(
        HourlyBaselineData(frame, is_electricity_data=True), ignore_disqualification=True
    )
    report = HourlyReportingData(frame[["temperature"]], is_electricity_data=True)
    pred_h = hourly.predict(report, ignore_disqualification=True)["predicted"]
    pred_h = pred_h.reindex(hours).to_numpy().reshape(-1, 24)
    t_hourly = time.perf_counter() - t0
    day_index = pd.DatetimeIndex(hours[::24])
    return pred_d, pred_h[day_index.get_indexer(events_days)], t_daily, t_hourly


def metrics(obs: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    mean = obs.mean()
    return float(np.sqrt(np.mean((obs - pred) ** 2)) / mean), float((obs - pred).sum() / (obs.size * mean))


def main() -> None:
    import eemeter

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    rows, results = [], []
    for sample, tz in SAMPLES:
        hours, observed, temp_f = load_year(sample, tz)
        obs = observed.to_numpy().reshape(-1, 24)
        temp_c = ((temp_f.to_numpy() - 32) * 5 / 9).reshape(-1, 24)
        n_days = obs.shape[0]
        dates = hours[::24]
        kinds = np.asarray(dates.dayofweek >= 5, dtype=np.int8)
        complete = np.isfinite(obs).all(axis=1) & np.isfinite(temp_c).all(axis=1)
        rng = np.random.default_rng(SEED)
        pool = rng.permutation(np.flatnonzero(complete & (np.arange(n_days) >= 28)))
        per_fold = int(round(HOLD_OUT * n_days))
        folds = [np.sort(pool[i * per_fold : (i + 1) * per_fold]) for i in range(FOLDS)]
        parts: dict[str, list] = {}
        t_ours = t_daily = t_hourly = 0.0
        for fold in folds:
            held = np.zeros(n_days, dtype=bool)
            held[fold] = True
            t0 = time.perf_counter()
            preds = ours(obs, temp_c, kinds, held | ~complete, fold)
            t_ours += time.perf_counter() - t0
            train = observed.copy()
            train[np.repeat(held, 24)] = np.nan
            pred_d, pred_h, t_d, t_h = eemeter_models(hours, train, temp_f, pd.DatetimeIndex(dates[fold]))
            t_daily, t_hourly = t_daily + t_d, t_hourly + t_h
            preds.update({"eemeter hourly": pred_h, "eemeter daily": pred_d, "observed": obs[fold]})
            for name, p in preds.items():
                parts.setdefault(name, []).append(p)
        preds = {name: np.concatenate(p) for name, p in parts.items()}
        y = preds.pop("observed")
        pred_d = preds.pop("eemeter daily")
        events = np.concatenate(folds)
        ok = np.all([np.isfinite(p) for p in preds.values()], axis=0) & np.isfinite(y)
        day_ok = ok.all(axis=1) & np.isfinite(pred_d)
        for name, p in preds.items():
            cv_h, nmbe_h = metrics(y[ok], p[ok])
            cv_w, _ = metrics(
                y[:, WINDOW_HOURS][ok[:, WINDOW_HOURS]], p[:, WINDOW_HOURS][ok[:, WINDOW_HOURS]]
            )
            cv_d, nmbe_d = metrics(y[day_ok].sum(axis=1), p[day_ok].sum(axis=1))
            results.append(
                dict(
                    sample=sample,
                    method=name,
                    cvrmse_h=cv_h,
                    nmbe_h=nmbe_h,
                    cvrmse_win=cv_w,
                    cvrmse_d=cv_d,
                    nmbe_d=nmbe_d,
                )
            )
        cv_d, nmbe_d = metrics(y[day_ok].sum(axis=1), pred_d[day_ok])
        results.append(
            dict(
                sample=sample,
                method="eemeter daily",
                cvrmse_h=None,
                nmbe_h=None,
                cvrmse_win=None,
                cvrmse_d=cv_d,
                nmbe_d=nmbe_d,
            )
        )
        rows.append(
            dict(
                sample=sample,
                days=n_days,
                held_out=int(events.size),
                folds=FOLDS,
                hours_scored=int(ok.sum()),
                days_scored=int(day_ok.sum()),
                ours_s=round(t_ours, 3),
                eemeter_daily_s=round(t_daily, 2),
                eemeter_hourly_s=round(t_hourly, 2),
            )
        )

    def pct(v):
        return "—" if v is None else f"{100 * v:.1f} %"

    print(f"eemeter {eemeter.__version__}, pandas {pd.__version__}, numpy {np.__version__}\n")
    for r in rows:
        print(
            f"- {r['sample']}: {r['days']} days, {r['held_out']} held out ({r['hours_scored']} hours, "
            f"{r['days_scored']} days scored, {r['folds']} folds); fit+predict: ours {r['ours_s']} s, eemeter daily "
            f"{r['eemeter_daily_s']} s, hourly {r['eemeter_hourly_s']} s"
        )
    print(
        "\n| sample | method | CV(RMSE) hourly | NMBE hourly | CV(RMSE) 14-19 h | CV(RMSE) daily | NMBE daily |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['sample']} | {r['method']} | {pct(r['cvrmse_h'])} | {pct(r['nmbe_h'])} | "
            f"{pct(r['cvrmse_win'])} | {pct(r['cvrmse_d'])} | {pct(r['nmbe_d'])} |"
        )
    print(
        json.dumps(
            {
                "name": "baseline_vs_eemeter",
                "eemeter": eemeter.__version__,
                "seed": SEED,
                "samples": rows,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
