"""The drift check at the speed of its statistics: ``drift.evaluate`` (the platform's check: the day converted to
the reference's terms, every distance, missing shares, the rule) against raw numpy/scipy computing the same normed
Wasserstein distances (``scipy.stats.wasserstein_distance`` / reference std) and PSIs (Evidently's binning and
zero fill) with the same per-test thresholds, on one day (~958 rows), ten days, 100k and 1M rows.

The reference and days are synthetic and shaped like flight_delay's (20 numeric features of several kinds, a
16-value and a 3-value categorical, a score; 5,000 reference rows calibrated on 35 training days); each day has a
few drifted columns, missing values and a carrier never seen in training. Both sides must give identical
verdicts (every test's severity) and values within 1e-9 relative; target: platform <= 2x raw at every size.

    python -m bench.bench_drift        (or: python -m bench, every benchmark)
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import pandas as pd
from scipy import stats

from batch_platform.lib import drift
from batch_platform.lib.training_set import EVENT_TIMESTAMP

SIZES = [("1 day", 958), ("10 days", 9_580), ("100k rows", 100_000), ("1M rows", 1_000_000)]
TARGET = 2.0  # platform / raw
TRAINING_DAYS, DAY_ROWS = 35, 958
CARRIERS = [f"C{i:02d}" for i in range(16)]
ORIGINS = ["EWR", "JFK", "LGA"]


def _frame(rng: np.random.Generator, n: int, day: int, drifted: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    day_rng = np.random.default_rng(day)
    cols = {}
    for i in range(8):  # continuous (distances, times)
        cols[f"num{i}"] = rng.normal(100 * (i + 1), 10 * (i + 1), n)
    for i in range(6):  # counts (flights per window)
        cols[f"count{i}"] = rng.poisson(5 + 10 * i, n).astype("float64")
    for i in range(6):  # rates that move by day
        cols[f"rate{i}"] = np.clip(rng.beta(2, 8, n) + day_rng.normal(0, 0.02), 0, 1)
    frame = pd.DataFrame(cols)
    frame["carrier"] = rng.choice(CARRIERS, n)
    frame["origin"] = rng.choice(ORIGINS, n)
    if drifted:
        frame["num3"] += 5 * 4  # half a reference sigma
        frame.loc[rng.random(n) < 0.05, "carrier"] = "ZZ"  # never seen in training
        frame.loc[rng.random(n) < 0.02, "count2"] = np.nan
        frame.loc[rng.random(n) < 0.01, "origin"] = None
    scores = 1 / (1 + np.exp(-(frame["num0"] - 100) / 10 + frame["rate0"]))
    return frame, scores.to_numpy()


def reference() -> drift.DriftReference:
    rng = np.random.default_rng(1)
    days = [_frame(rng, DAY_ROWS, d) for d in range(TRAINING_DAYS)]
    frame = pd.concat([f.assign(**{EVENT_TIMESTAMP: d}) for d, (f, _) in enumerate(days)], ignore_index=True)
    scores = np.concatenate([s for _, s in days])
    features = [c for c in frame.columns if c != EVENT_TIMESTAMP]
    return drift.build_reference(frame, features, ["carrier", "origin"], scores)


def raw(ref: drift.DriftReference, features: pd.DataFrame, scores: np.ndarray, thresholds: drift.DriftThresholds
        ) -> dict[tuple[str, str], tuple[float, str]]:
    """Every test's (value, severity) with numpy/scipy directly: no platform code but the thresholds' arithmetic."""
    out = {}
    sample = ref.sample
    for c in ref.numeric + [drift.SCORE]:
        r = sample[c].to_numpy()
        r = r[np.isfinite(r)]
        x = np.asarray(scores, dtype="float64") if c == drift.SCORE else features[c].to_numpy(dtype="float64")
        x = x[np.isfinite(x)]
        value = stats.wasserstein_distance(r, x) / max(float(np.std(r)), 0.001) if len(r) and len(x) else np.nan
        out[(c, drift.WASSERSTEIN)] = value
    for c in ref.categorical + [drift.SCORE_BIN]:
        if c == drift.SCORE_BIN:
            bins = len(ref.score_edges) + 1
            r = np.bincount(np.digitize(sample[drift.SCORE].to_numpy(), ref.score_edges), minlength=bins)
            x = np.bincount(np.digitize(scores, ref.score_edges), minlength=bins)
        else:
            known = ref.categories[c]
            space = known + [drift.OTHER]
            r = sample[c].value_counts().reindex(space, fill_value=0).to_numpy()
            counts = features[c].value_counts(dropna=False)
            keys = [drift.MISSING if pd.isna(k) else k for k in counts.index]
            keys = [k if k in known else drift.OTHER for k in keys]
            x = counts.groupby(keys).sum().reindex(space, fill_value=0).to_numpy()
        seen = (r > 0) | (x > 0)
        rp, xp = r[seen] / r.sum(), x[seen] / x.sum()
        for p in (rp, xp):
            low = p[p != 0].min()
            p[p == 0] = low / 1e6 if low <= 1e-4 else 1e-4
        out[(c, drift.PSI)] = float(np.sum((rp - xp) * np.log(rp / xp)))
    verdicts = {}
    for (c, m), value in out.items():
        warn, error = thresholds.distance_bounds(m, ref.calibrated(c))
        sev = drift.OK if c == drift.SCORE or not np.isfinite(value) else (
            drift.ERROR if value >= error else drift.WARN if value >= warn else drift.OK)
        verdicts[(c, m)] = (value, sev)
    for c in ref.numeric + ref.categorical:
        share = float(features[c].isna().mean())
        p = ref.missing_share[c]
        warn, error = thresholds.missing_bounds(p, len(features))
        sev = (drift.OK if p >= 1.0 else drift.ERROR if share >= 1.0 or share >= error
               else drift.WARN if share >= warn else drift.OK)
        verdicts[(c, drift.MISSING_SHARE)] = (share, sev)
    return verdicts


def _same(platform: drift.DriftResult, baseline: dict) -> bool:
    ours = {(c.column, c.method): (c.value, c.severity) for c in platform.columns}
    if ours.keys() != baseline.keys():
        return False
    for key, (value, sev) in ours.items():
        other, other_sev = baseline[key]
        if sev != other_sev or not (np.isnan(value) and np.isnan(other)
                                    or abs(value - other) <= 1e-9 * max(abs(other), 1e-12)):
            return False
    return True


def measure(ref, label: str, rows: int, thresholds, runs: int) -> dict:
    features, scores = _frame(np.random.default_rng(rows), rows, TRAINING_DAYS + 20, drifted=True)
    platform_s, raw_s, same = [], [], True
    for _ in range(runs):  # interleaved, so a busy machine slows both alike
        t0 = time.perf_counter()
        result = drift.evaluate(ref, features, scores, thresholds)
        platform_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        baseline = raw(ref, features, scores, thresholds)
        raw_s.append(time.perf_counter() - t0)
        same &= _same(result, baseline)
    p, r = statistics.median(platform_s), statistics.median(raw_s)
    return {"name": f"drift check, {label} ({rows:,} rows)", "platform_s": p, "raw_s": r, "ratio": p / r,
            "target": f"<= {TARGET:g}x raw", "ok": p / r <= TARGET and same, "verdicts_identical": same,
            "severity": result.severity, "runs": runs,
            "platform_spread_s": [min(platform_s), max(platform_s)], "raw_spread_s": [min(raw_s), max(raw_s)]}


def main() -> list[dict]:
    print("\ndrift check (platform drift.evaluate vs raw numpy/scipy, same statistics, same verdicts)", flush=True)
    ref, thresholds = reference(), drift.DriftThresholds()
    drift.evaluate(ref, *_frame(np.random.default_rng(0), 100, 50), thresholds)  # imports and caches warmed
    raw(ref, *_frame(np.random.default_rng(0), 100, 50), thresholds)
    figures = []
    print(f"{'size':<28} {'platform s':>11} {'(min..max)':>16} {'raw s':>9} {'(min..max)':>16} {'ratio':>6} "
          f"{'verdicts':>9} {'ok':>4}")
    for label, rows in SIZES:
        f = measure(ref, label, rows, thresholds, runs=3 if rows >= 1_000_000 else 5)
        figures.append(f)
        print(f"{label + f' ({rows:,})':<28} {f['platform_s']:>11.4f} "
              f"{f['platform_spread_s'][0]:>7.4f}..{f['platform_spread_s'][1]:<7.4f} {f['raw_s']:>9.4f} "
              f"{f['raw_spread_s'][0]:>7.4f}..{f['raw_spread_s'][1]:<7.4f} {f['ratio']:>6.2f} "
              f"{'same' if f['verdicts_identical'] else 'DIFFER':>9} {'ok' if f['ok'] else 'MISS':>4}", flush=True)
    print(f"target: platform <= {TARGET:g}x raw at every size, identical verdicts (median of 3-5 interleaved runs)")
    return figures


if __name__ == "__main__":
    sys.exit(0 if all(f["ok"] for f in main()) else 1)
