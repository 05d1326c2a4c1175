"""Scoring one day: the platform's ``scoring.score_partition`` (what the scoring asset runs: the champion pinned and
verified, spine and fallback rates from the warehouse, point-in-time features through the feature store, cold-start
fallbacks, staged parquet, the day swapped in one transaction with its served features) against a bare script
doing the same SQL and LightGBM with nothing around it: the spine read from the scoring model, one hand-written
DuckDB ``ASOF LEFT JOIN`` per view of the feature service (its TTLs typed in, ``bench_pit.raw_sql``), the model
file loaded and predicted, one ``INSERT`` of the day in one transaction.

A small platform is built first (``bench_scoring.build_platform``: 24 days, a trained champion) in a temporary
folder; the day after them is scored as it is (x1, ~958 rows) and replicated under new keys (x10, ~9.6k rows,
``bench_scoring.replicate``). Median of ``RUNS`` warm runs each (one run of each before, outside the clock); the
scores of every row the platform scored with the model (not a fallback) must equal the bare script's.
Target: platform <= 2x bare at x10 (x1 shown too).

    python -m bench.bench_scoring_asset        (or: python -m bench --only scoring_asset)
"""

from __future__ import annotations

import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from bench.measure import figure, median, timed

SIZES = {"x1": 1, "x10": 9_580}  # rows asked of bench_scoring.replicate (1: the day as it is)
RUNS = 5
TARGET = 2.0
BARE_TABLE = "main.bench_bare_scores"


def bare_score(db: Path, spec, day, model_file: Path, sql: str, cutoff: pd.Timestamp) -> int:
    """The bare script: spine, ASOF joins, predict, one insert; returns the rows written."""
    import duckdb
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(model_file))
    key, date = spec.entity.key, spec.label.date_column
    cols = ", ".join(f'"{c}"' for c in dict.fromkeys([key, date, *spec.entity.join_keys,
                                                       *spec.passthrough_features]))
    con = duckdb.connect(str(db))
    try:
        con.execute("SET TimeZone = 'UTC'")
        spine = con.execute(f'SELECT {cols} FROM marts."{spec.scoring.model}" WHERE "{date}" = ? ORDER BY "{key}"',
                            [day]).df()
        spine["event_timestamp"] = cutoff
        con.register("entities", spine)
        frame = con.sql(sql).df()
        con.unregister("entities")
        features = booster.feature_name()
        categorical = [f for f in features
                       if f in spec.categorical_features or not pd.api.types.is_numeric_dtype(frame[f])]
        categories = dict(zip(categorical, booster.pandas_categorical or []))
        X = pd.DataFrame({f: pd.Categorical(frame[f].astype(object).where(frame[f].notna(), None),
                                            categories=categories[f]) if f in categories
                          else pd.to_numeric(frame[f], errors="coerce").astype("float64") for f in features})
        out = pd.DataFrame({"key": frame[key].astype(str), "day": day, "score": booster.predict(X)})
        con.execute(f"CREATE TABLE IF NOT EXISTS {BARE_TABLE} (key VARCHAR, day DATE, score DOUBLE)")
        con.execute("BEGIN")
        con.execute(f"DELETE FROM {BARE_TABLE} WHERE day = ?", [day])
        con.register("scored", out)
        con.execute(f"INSERT INTO {BARE_TABLE} SELECT * FROM scored")
        con.execute("COMMIT")
        return len(out)
    finally:
        con.close()


def _same_scores(db: Path, spec, day) -> tuple[bool, int, int]:
    """(model-scored rows equal to the bare script's, rows compared, fallback rows)."""
    from batch_platform.lib import scoring, warehouse

    with warehouse.connect(db, read_only=True) as con:
        ours = con.execute(f'SELECT "{spec.entity.key}"::VARCHAR, score, fallback_reason FROM '
                           f'{scoring.table_name(spec)} WHERE "{scoring.PARTITION}" = ?', [day]).df()
        theirs = con.execute(f"SELECT key, score FROM {BARE_TABLE} WHERE day = ?", [day]).df()
    ours.columns = ["key", "score", "fallback_reason"]
    joined = ours.merge(theirs, on="key", how="outer", suffixes=("", "_bare"), indicator=True)
    scored = joined[joined["fallback_reason"].isna()]
    same = bool((joined["_merge"] == "both").all()) and len(scored) > 0 and bool(
        np.allclose(scored["score"], scored["score_bare"], rtol=0, atol=1e-12))
    return same, len(scored), int(joined["fallback_reason"].notna().sum())


def run(quick: bool = False) -> list[dict]:
    global RUNS
    if quick:
        RUNS = 3
    from bench import bench_pit, bench_scoring
    from batch_platform import settings
    from batch_platform.lib import scoring, warehouse
    from batch_platform.lib.feature_store import FeatureStoreClient
    from batch_platform.lib.registry import ModelRegistry
    from batch_platform.lib.specs import load_specs

    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        bench_scoring.build_platform(Path(tmp))
        spec = load_specs()[bench_scoring.SPEC]
        day = bench_scoring.DAY
        db = settings.warehouse_path()
        client = FeatureStoreClient()
        registry = ModelRegistry(settings.registry_path())
        model_file = Path(registry.get_alias(spec.name, scoring.CHAMPION).artifact_path)
        store = client.store
        views = [store.get_feature_view(p.name)
                 for p in store.get_feature_service(spec.feature_service).feature_view_projections]
        sql = bench_pit.raw_sql(store, {v.name: v.join_keys[0] for v in views})
        cutoff = pd.Timestamp(spec.prediction_cutoff(day))  # UTC

        def platform():
            return scoring.score_partition(
                spec=spec, day=day, connect=partial(warehouse.connect, db), feature_store=client, registry=registry,
                staging_dir=settings.artifacts_dir() / "scoring_staging").rows

        for scale, rows in SIZES.items():
            n = bench_scoring.replicate(rows)
            platform()  # warm: imports, the registry and the feature store read
            bare_score(db, spec, day, model_file, sql, cutoff)
            ours_s, ours_rows, theirs_s, theirs_rows = [], 0, [], 0
            for _ in range(RUNS):  # alternating, so a busy machine slows both alike
                s, ours_rows = timed(platform, 1)
                ours_s += s
                s, theirs_rows = timed(lambda: bare_score(db, spec, day, model_file, sql, cutoff), 1)
                theirs_s += s
            same, compared, fallbacks = _same_scores(db, spec, day)
            same &= ours_rows == theirs_rows == n
            figures.append(figure(
                f"scoring one day, {scale} ({n:,} rows)", "s", median(ours_s), median(theirs_s),
                target=f"<= {TARGET:g}x raw" if scale == "x10" else None,
                meets=(lambda r: r <= TARGET) if scale == "x10" else None, identical=same,
                platform_runs=ours_s, raw_runs=theirs_s,
                note=f"score_partition vs a bare ASOF join + predict + one insert; {compared:,} model-scored rows "
                     f"compared, {fallbacks:,} fallback rows (the bare script has no fallback)"))
    return figures


def main(quick: bool = False) -> list[dict]:
    from bench.report import print_table

    figures = run(quick)
    print_table("scoring one day: score_partition vs a bare script", figures)
    return figures


if __name__ == "__main__":
    sys.exit(0 if all(f["ok"] is not False for f in main("--quick" in sys.argv)) else 1)
