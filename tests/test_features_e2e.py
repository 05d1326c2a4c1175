"""Raw → dbt → Feast → training sets, on real replayed days, in one Dagster run (module-scoped: built once).

The session fixture ``platform`` (conftest) uses a specs folder made for the test: the two shipped specs with
windows shortened to fit the loaded days, plus a third model that exists only in test data (a new label over
the same dbt model and feature service), showing that a model needs a YAML entry, not Python.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pandas as pd
import pytest

from batch_platform import settings
from batch_platform.lib.specs import load_specs
from batch_platform.lib.time_model import load_time_model

SPEC_NAMES = ("flight_delay", "flight_cancellation", "flight_long_delay")
NY = ZoneInfo("America/New_York")
LAST = dt.date(2013, 1, 24)
FRAME = ["flight_id", "flight_date", "sched_dep_ts", "carrier", "tailnum", "origin", "dest", "route", "distance",
         "sched_dep_hour", "sched_dep_minute_of_day", "day_of_week", "month", "day_of_year", "days_to_nearest_holiday"]
"""marts.flight_schedule's columns: flight_labels' columns before its outcomes."""


@pytest.fixture(autouse=True)
def _env(on_platform):
    return on_platform


def test_graph_is_connected_raw_to_training_sets(platform):
    defs = platform["defs"]
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for name in SPEC_NAMES:
        assert f"{name}_training_set" in keys
    # dbt sources attach to the raw assets; marts feed Feast; Feast and the label model feed the training sets
    assert dg.AssetKey(["raw", "flights"]) in graph.get(dg.AssetKey(["staging", "stg_flights"])).parent_keys
    assert dg.AssetKey(["raw", "flight_schedule"]) in graph.get(
        dg.AssetKey(["staging", "stg_flight_schedule"])).parent_keys
    assert dg.AssetKey(["staging", "stg_flight_schedule"]) in graph.get(
        dg.AssetKey(["marts", "flight_schedule"])).parent_keys
    assert dg.AssetKey(["marts", "plane_daily_features"]) in graph.get(dg.AssetKey(["feast", "feature_definitions"])).parent_keys
    ts_parents = graph.get(dg.AssetKey(["flight_long_delay_training_set"])).parent_keys
    assert ts_parents == {dg.AssetKey(["marts", "flight_labels"]), dg.AssetKey(["feast", "feature_definitions"])}
    assert graph.get(dg.AssetKey(["staging", "stg_flights"])).group_name == "features_staging"
    assert graph.get(dg.AssetKey(["marts", "plane_daily_features"])).group_name == "features_marts"
    assert "parquet" in graph.get(dg.AssetKey(["marts", "plane_daily_features"])).kinds
    # dbt tests are asset checks
    checks = {k.name for k in graph.asset_check_keys}
    assert any(n.startswith("unique_combination_plane_daily_features") for n in checks)
    assert "no_feature_or_label_leakage" in checks


def test_jobs_succeed_and_every_check_passes(platform):
    for result in (platform["features_result"], platform["train_result"]):
        assert result.success, [e.message for e in result.all_events if e.is_failure]
    evaluations = platform["features_result"].get_asset_check_evaluations() + [
        e for e in platform["train_result"].get_asset_check_evaluations()
        if e.check_name == "no_feature_or_label_leakage"]
    assert len(evaluations) > 100
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
    assert failed == []
    leakage = {e.asset_key.to_user_string() for e in evaluations if e.check_name == "no_feature_or_label_leakage"}
    assert leakage == {f"{n}_training_set" for n in SPEC_NAMES}


def _snapshot(platform, name) -> tuple[pd.DataFrame, dict]:
    event = platform["instance"].get_latest_materialization_event(dg.AssetKey([f"{name}_training_set"]))
    md = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    return pd.read_parquet(md["snapshot"]), md


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_training_set_metadata_embargo_and_point_in_time(platform, name):
    spec = load_specs()[name]
    df, md = _snapshot(platform, name)
    cutoff = dt.datetime.fromisoformat(md["training_cutoff"])
    assert cutoff == load_time_model().published_at("flights", LAST)  # the newest loaded batch
    assert md["dagster/row_count"] == len(df) > 1000
    assert 0 < md["positive_rate"] < 0.5
    assert set(md["rows_per_split"]) == {"train", "validation", "test"}
    assert len(md["data_fingerprint"]) == 64 and len(md["feature_definitions_fingerprint"]) == 64
    # the label embargo: the last day is the last one whose labels are final at the training cutoff
    last_day = max(pd.to_datetime(df["flight_date"]).dt.date)
    assert last_day == spec.last_final_day(cutoff) == LAST + dt.timedelta(days=1) - dt.timedelta(days=spec.label.embargo_days)
    assert (df["label_final_at"] <= cutoff).all()
    # every row is stamped with its own day's prediction cutoff
    days = pd.to_datetime(df["flight_date"]).dt.date
    assert (df["event_timestamp"] == pd.to_datetime(days.map(spec.prediction_cutoff), utc=True)).all()
    # plane features come from the newest daily row valid at the cutoff: the one whose 28 flights batches are all
    # final, i.e. as of three days before the flight day, final (and valid) the morning before, 06:00 New York
    has_plane = df["plane_valid_from"].notna()
    assert has_plane.mean() > 0.8
    expected = pd.to_datetime(
        days[has_plane].map(lambda d: dt.datetime.combine(d - dt.timedelta(days=1), dt.time(6), NY)), utc=True
    )
    assert (df.loc[has_plane, "plane_valid_from"] == expected).all()
    # weather is a daily feed: the newest batch published by the cutoff is two days before the flight day's,
    # published the morning before at 06:00 New York, never an observation of the same evening
    has_wx = df["wx_valid_from"].notna()
    assert has_wx.mean() > 0.95
    assert (df.loc[has_wx, "wx_valid_from"] == expected.reindex(df.index[has_wx]).fillna(
        pd.to_datetime(days[has_wx].map(lambda d: dt.datetime.combine(d - dt.timedelta(days=1), dt.time(6), NY)),
                       utc=True))).all()


def test_label_definitions_follow_the_specs(platform):
    delay, _ = _snapshot(platform, "flight_delay")
    long_delay, _ = _snapshot(platform, "flight_long_delay")
    con = duckdb.connect(str(platform["env"][settings.WAREHOUSE_VAR]), read_only=True)
    try:
        truth = con.sql("SELECT flight_id, arr_delay FROM marts.flight_labels").df().set_index("flight_id")
    finally:
        con.close()
    d = delay.set_index("flight_id").join(truth)
    assert ((d["arr_delay"] > 15).astype(int) == d["label"]).all()
    ld = long_delay.set_index("flight_id").join(truth)
    assert ((ld["arr_delay"] > 60).astype(int) == ld["label"]).all()


def test_flight_schedule_is_the_labels_frame_and_covers_the_next_day(platform):
    """marts.flight_schedule: flight_labels' columns without outcomes, the same values for the same flights, and
    the flights of the day after the last loaded flight day (the day to score), whose outcomes are not known."""
    con = duckdb.connect(str(platform["env"][settings.WAREHOUSE_VAR]), read_only=True)
    try:
        assert [r[0] for r in con.execute("DESCRIBE marts.flight_schedule").fetchall()] == FRAME
        assert [r[0] for r in con.execute("DESCRIBE marts.flight_labels").fetchall()] == [
            *FRAME, "arr_delay", "is_delayed_15", "is_cancelled", "is_diverted"]
        days = [r[0] for r in con.execute("SELECT DISTINCT flight_date FROM marts.flight_schedule ORDER BY 1").fetchall()]
        first = dt.date(2013, 1, 1)
        assert days == [first + dt.timedelta(days=i) for i in range((LAST - first).days + 2)]
        cols = ", ".join(FRAME)

        def only(a: str, b: str) -> int:
            return con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM {a} WHERE flight_date <= $last "
                               f"EXCEPT ALL SELECT {cols} FROM {b})", {"last": LAST}).fetchall()[0][0]

        assert only("marts.flight_labels", "marts.flight_schedule") == only("marts.flight_schedule",
                                                                            "marts.flight_labels") == 0
        next_day = LAST + dt.timedelta(days=1)
        n_next, n_raw, n_labels = con.execute(
            "SELECT (SELECT count(*) FROM marts.flight_schedule WHERE flight_date = $d), "
            "(SELECT count(*) FROM raw.flight_schedule WHERE _partition_date = $d), "
            "(SELECT count(*) FROM marts.flight_labels WHERE flight_date >= $d)", {"d": next_day}).fetchall()[0]
        assert n_next == n_raw > 500 and n_labels == 0
        assert con.execute("SELECT count(*) FROM marts.flight_schedule WHERE days_to_nearest_holiday IS NULL "
                           "OR tailnum IS NULL").fetchall()[0][0] == 0
    finally:
        con.close()
    # the dbt consistency test ran as an asset check of the schedule mart, and passed
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed
              for e in platform["features_result"].get_asset_check_evaluations()}
    assert checks[("marts/flight_schedule", "flight_schedule_matches_flight_labels")] is True
    assert checks[("marts/flight_schedule", "unique_flight_schedule_flight_id")] is True


def test_the_schedule_consistency_test_returns_each_row_found_on_one_side_only(platform, tmp_path):
    """The dbt test as the build compiled it, run on a copy of the warehouse where the schedule lost a flight,
    the labels hold one twice and one flight differs in a value: it returns exactly the bag difference both ways
    (EXCEPT ALL, computed here independently), each row naming its side."""
    from batch_platform import settings

    runs = sorted((p for p in settings.dbt_runs_dir().iterdir() if (p / "run_results.json").exists()),
                  key=lambda p: p.stat().st_mtime)
    results = json.loads((runs[-1] / "run_results.json").read_text())["results"]
    sql = next(r["compiled_code"] for r in results
               if r["unique_id"].startswith("test.batch_platform.flight_schedule_matches_flight_labels"))
    copy = tmp_path / "copy" / Path(settings.warehouse_path()).name
    copy.parent.mkdir()
    shutil.copy(settings.warehouse_path(), copy)
    schedule, labels = (re.search(rf'from ("[^"]+"\."[^"]+"\."{t}")', sql).group(1)
                        for t in ("flight_schedule", "flight_labels"))
    cols = ", ".join(FRAME)
    con = duckdb.connect(str(copy))
    try:
        ids = [r[0] for r in con.execute(f"SELECT flight_id FROM {labels} WHERE flight_date = DATE '2013-01-03' "
                                         "ORDER BY flight_id LIMIT 3").fetchall()]
        con.execute(f"DELETE FROM {schedule} WHERE flight_id = ?", [ids[0]])
        con.execute(f"INSERT INTO {labels} SELECT * FROM {labels} WHERE flight_id = ?", [ids[1]])
        con.execute(f"UPDATE {schedule} SET distance = distance + 1 WHERE flight_id = ?", [ids[2]])
        found = sorted(con.execute(sql).fetchall(), key=repr)
        expected = sorted(
            [("only in the tested model", *r) for r in con.execute(
                f"SELECT {cols} FROM {schedule} WHERE flight_date <= DATE '{LAST}' "
                f"EXCEPT ALL SELECT {cols} FROM {labels}").fetchall()]
            + [("only in the compared model", *r) for r in con.execute(
                f"SELECT {cols} FROM {labels} EXCEPT ALL SELECT {cols} FROM {schedule}").fetchall()], key=repr)
    finally:
        con.close()
    assert len(found) == 4 and found == expected
    assert sorted(r[1] for r in found) == sorted([ids[0], ids[1], ids[2], ids[2]])


def test_online_store_matches_the_offline_join_at_materialization_time(platform):
    from batch_platform.lib.feature_store import FeatureStoreClient

    event = platform["instance"].get_latest_materialization_event(dg.AssetKey(["feast", "online_store"]))
    end = dt.datetime.fromisoformat(event.asset_materialization.metadata["materialized_until"].value)
    client = FeatureStoreClient(settings.FEATURE_REPO_DIR)
    labels, _ = _snapshot(platform, "flight_delay")
    rows = labels.drop_duplicates(["tailnum", "route", "carrier", "origin"]).head(200)
    entity = rows[["tailnum", "route", "carrier", "origin"]].copy()
    entity["event_timestamp"] = end
    offline = client.historical_features(entity, "flight_delay_v1")
    online = pd.DataFrame(client.online_features(
        "flight_delay_v1", entity[["tailnum", "route", "carrier", "origin"]].to_dict("records"), as_of=end))
    features = [c for c in offline.columns if c not in entity.columns]
    assert len(features) > 30
    mismatches = 0
    for col in features:
        a, b = offline[col].reset_index(drop=True), online[col].reset_index(drop=True)
        same = (a.isna() & b.isna()) | (a.astype(object) == b.astype(object))
        if pd.api.types.is_float_dtype(a):
            same |= (a - pd.to_numeric(b, errors="coerce")).abs() < 1e-9
        mismatches += int((~same).sum())
    assert mismatches == 0
    assert offline["plane_flights_28d"].notna().sum() > 50


def test_a_deliberately_leaky_feature_fails_the_leakage_check(platform, tmp_path, monkeypatch):
    """A feature table whose rows claim to be valid a day earlier than they are (feature_ts shifted back, the
    honest valid_from kept) makes Feast join future information; the training set's check must fail."""
    leaky = tmp_path / "features"
    shutil.copytree(platform["data"] / "features", leaky)
    path = leaky / "plane_daily_features"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * REPLACE (feature_ts - INTERVAL 1 DAY AS feature_ts) FROM read_parquet('{path}')) "
                f"TO '{tmp_path / 'p'}' (FORMAT parquet, PARTITION_BY (as_of_date))")
    con.close()
    shutil.rmtree(path)
    shutil.move(tmp_path / "p", path)
    monkeypatch.setenv(settings.FEATURES_VAR, str(leaky))
    monkeypatch.setenv(settings.FEAST_REGISTRY_VAR, str(tmp_path / "registry.db"))
    monkeypatch.setenv(settings.ONLINE_STORE_VAR, str(tmp_path / "online.db"))

    from batch_platform.defs.feature_store.assets import feast_feature_definitions
    from batch_platform.defs.resources import build_resources
    from batch_platform.defs.training.assets import build_training_set_asset

    training_set = build_training_set_asset(load_specs()["flight_delay"])
    result = dg.materialize([feast_feature_definitions, training_set], resources=build_resources(),
                            raise_on_error=False)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    # the publication-time check sees the back-dated rows against the load log and blocks: no training set is built
    publication = evaluations["features_valid_after_publication"]
    assert not publication.passed
    assert publication.metadata["tables"].value["plane_daily_features"]["early_rows"] > 100
    assert not result.get_asset_materialization_events() or all(
        e.asset_key != build_training_set_asset(load_specs()["flight_delay"]).key
        for e in result.get_asset_materialization_events())
    # without that check, the training set's own check sees the join use rows valid after their valid_from
    result = dg.materialize([training_set], resources=build_resources(), raise_on_error=False)
    evaluation = next(e for e in result.get_asset_check_evaluations()
                      if e.check_name == "no_feature_or_label_leakage")
    assert not evaluation.passed
    assert evaluation.metadata["feature_violations"].value.get("plane_valid_from", 0) > 100


def test_dbt_build_works_directly_in_its_folder(platform, tmp_path):
    """`dbt build` from dbt_project/ with its own profiles.yml (a copy of the warehouse, to stay independent)."""
    db = tmp_path / "w.duckdb"
    shutil.copy(platform["env"][settings.WAREHOUSE_VAR], db)
    env = {**os.environ, settings.WAREHOUSE_VAR: str(db), settings.GENERATIONS_VAR: str(tmp_path / "generations")}
    env.pop(settings.DBT_GENERATION_VAR, None)
    dbt = Path(sys.executable).parent / "dbt"
    out = subprocess.run([str(dbt), "build", "--profiles-dir", ".", "--target-path", str(tmp_path / "target")],
                         cwd=settings.DBT_PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "ERROR=0" in out.stdout
    # dbt's unit tests (of the SQL, not the data) run here: the platform's builds leave them out
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    unit = [r for r in results if r["unique_id"].startswith("unit_test.")]
    declared = [n for n in json.loads((tmp_path / "target" / "manifest.json").read_text())["unit_tests"]]
    assert len(unit) == len(declared) >= 10 and {r["status"] for r in unit} == {"pass"}
    # by hand, dbt writes generation `a` (unpublished: the platform publishes a build that passed)
    assert list((tmp_path / "generations" / "a" / "plane_daily_features").glob("as_of_date=2013-01-2*/*.parquet"))
    # a model's not-NULL guard is one test over all its columns, which names each column holding NULLs
    (compiled,) = (tmp_path / "target" / "compiled").rglob("flight_labels_not_null.sql")
    sql = compiled.read_text()
    relation = re.search(r"^\s*from (\S+)$", sql, re.MULTILINE).group(1)  # the model's (then: from counts)
    with duckdb.connect(str(db)) as con:
        assert con.execute(sql).fetchall() == []
        con.execute(f"UPDATE {relation} SET route = NULL WHERE flight_id IN (SELECT flight_id FROM {relation} LIMIT 1)")
        con.execute(f"UPDATE {relation} SET tailnum = NULL, is_cancelled = NULL WHERE flight_id IN "
                    f"(SELECT flight_id FROM {relation} ORDER BY flight_id DESC LIMIT 2)")
        assert sorted(con.execute(sql).fetchall()) == [("is_cancelled", 2), ("route", 1), ("tailnum", 2)]


def _relation_digests(db: Path) -> dict[str, tuple]:
    """(rows, order-independent hash of the rows) of every relation the stable feature schemas show."""
    with duckdb.connect(str(db), read_only=True) as con:
        names = con.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE "
                            "table_schema IN ('staging', 'intermediate', 'marts', 'seeds')").fetchall()
        return {n: con.execute(f"SELECT count(*), bit_xor(hash(t)) FROM {n} t").fetchall()[0] for (n,) in names}


def _copy_feature_layout(platform, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The warehouse and the feature generations (with the published link) copied: a private platform."""
    db = tmp_path / "warehouse.duckdb"
    shutil.copy(platform["env"][settings.WAREHOUSE_VAR], db)
    generations, features = tmp_path / "feature_generations", tmp_path / "features"
    shutil.copytree(platform["data"] / "feature_generations", generations)
    os.symlink(os.readlink(platform["data"] / "features"), features)  # relative: now names the copy's generation
    for var, path in ((settings.WAREHOUSE_VAR, db), (settings.FEATURES_VAR, features),
                      (settings.GENERATIONS_VAR, generations), (settings.DATA_DIR_VAR, tmp_path)):
        monkeypatch.setenv(var, str(path))
    return db, features


def test_bad_raw_data_fails_the_build_and_nothing_it_wrote_is_visible(platform, tmp_path, monkeypatch):
    """A raw row that slipped past the ingest contract (an unknown destination airport) fails a dbt
    `relationships` test, which dbt runs only after models downstream of it (the labels, the schedule, the feature
    files) were rewritten. The build wrote its own generation: the stable schemas and the features folder still
    show the last good one, every relation and file unchanged, so training and scoring never read the bad row."""
    import hashlib

    from batch_platform.defs.features.assets import dbt_feature_models
    from batch_platform.defs.resources import build_resources

    db, features = _copy_feature_layout(platform, tmp_path, monkeypatch)
    with duckdb.connect(str(db)) as con:
        con.execute("INSERT INTO raw.flights SELECT * REPLACE ('XXX' AS dest, flight + 50000 AS flight) "
                    "FROM raw.flights WHERE _partition_date = DATE '2013-01-10' LIMIT 1")
        (published,) = con.execute("SELECT generation FROM main._feature_generation").fetchall()[0]

    def digest(name):
        files = sorted((features / name).rglob("*.parquet"))
        return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest() if files else None

    files = {n: digest(n) for n in ("plane_daily_features", "route_daily_features", "carrier_daily_features")}
    relations = _relation_digests(db)
    assert {"marts.flight_labels", "marts.flight_schedule", "intermediate.int_plane_daily_activity"} <= set(relations)
    whole = dg.AssetSelection.assets(dbt_feature_models) | dg.AssetSelection.checks(*dbt_feature_models.check_keys)
    result = dg.materialize([dbt_feature_models], selection=whole, resources=build_resources(), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "relationships_stg_flights_dest" in str(failure.step_failure_data.error)
    assert {n: digest(n) for n in files} == files
    assert _relation_digests(db) == relations
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT generation FROM main._feature_generation").fetchall()[0][0] == published
        other = "b" if published == "a" else "a"
        # what the failed build wrote is in its own, unpublished generation only
        built = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema LIKE ?",
                            [f"%__{other}"]).fetchall()[0][0]
        assert built > 0
        assert con.execute("SELECT count(*) FROM marts.flight_labels WHERE dest = 'XXX'").fetchall() == [(0,)]


def test_the_build_runs_under_its_memory_cap_and_one_too_small_loses_nothing(platform, tmp_path, monkeypatch):
    """dbt's DuckDB runs under the warehouse resource's ``dbt_memory_limit`` (BATCH_PLATFORM_DBT_MEMORY_LIMIT; 1GB by
    default, spilling to ``<warehouse>.tmp`` beyond it), so the build's memory does not grow with history. A cap too
    small for the build fails it with DuckDB's Out of Memory Error, named in the step's failure, and publishes
    nothing: every relation and the published generation stay as they were. With the default cap the same build
    succeeds and is published."""
    from batch_platform.defs.features.assets import dbt_feature_models
    from batch_platform.defs.resources import WarehouseResource, build_resources

    db, _ = _copy_feature_layout(platform, tmp_path, monkeypatch)
    with duckdb.connect(str(db), read_only=True) as con:
        (published,) = con.execute("SELECT generation FROM main._feature_generation").fetchall()[0]
    relations = _relation_digests(db)
    whole = dg.AssetSelection.assets(dbt_feature_models) | dg.AssetSelection.checks(*dbt_feature_models.check_keys)
    rebuild = dg.RunConfig(ops={dbt_feature_models.op.name: {"config": {"full_refresh": True}}})

    monkeypatch.setenv(settings.DBT_MEMORY_LIMIT_VAR, "1MB")
    assert build_resources()["warehouse"].dbt_memory_limit.get_value() == "1MB"  # the setting's variable
    monkeypatch.delenv(settings.DBT_MEMORY_LIMIT_VAR)
    # the resource's field reaches dbt (as when set in the UI's launchpad), not only the process environment
    resources = {**build_resources(), "warehouse": WarehouseResource(path=str(db), dbt_memory_limit="1MB")}
    result = dg.materialize([dbt_feature_models], selection=whole, resources=resources, run_config=rebuild,
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "Out of Memory Error" in str(failure.step_failure_data.error)
    assert _relation_digests(db) == relations
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT generation FROM main._feature_generation").fetchall()[0][0] == published

    resources = build_resources()
    assert resources["warehouse"].dbt_memory_limit.get_value() == settings.DBT_MEMORY_LIMIT
    assert dg.materialize([dbt_feature_models], selection=whole, resources=resources, run_config=rebuild).success
    assert _relation_digests(db) == relations  # the same data: the same features
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT generation FROM main._feature_generation").fetchall()[0][0] != published


# The content of every raw table and feature file on the session platform's 2013 replay (2013-01-01 .. 01-24): a
# change of the flights' data, contracts, dbt models or macros that moves a single value fails here. The values were
# the same at 740984e, before the platform's dbt macros moved out of dbt_project/ and specs grew regression metrics.
FLIGHTS_CONTENT = {
    "marts.carrier_daily_features": (358, "807b990f0435d2980da45fbec8186813"),
    # (the 24-hour mean temperature from an exact decimal sum since the incremental builds: last-bit changes)
    "marts.origin_weather_features": (72, "f3e9ce6e3f62162ba1ab044a1e5bad10"),
    "marts.plane_attributes": (3322, "8b8b7cff9985c04565e1b512f8720766"),
    "marts.plane_daily_features": (56001, "e38edf5de532980aeb2363bb5fbf1a5c"),
    "marts.route_daily_features": (4422, "d3b4ab2ddb753c600e43e07c14ff286d"),
    "raw.airlines": (16, "08c7b59f237cb024161d301dc7c31d8c"),
    "raw.airports": (1458, "f3d746248632c505f5af9c779697e9eb"),
    "raw.flight_schedule": (21860, "f0870bc224d80a07ed8a47f6296d98a6"),
    "raw.flights": (20938, "45d61ed141b9f0e67a4ba3cbf901e9d0"),
    "raw.planes": (3322, "f11ea5dabca479229024f8026901faa7"),
    "raw.weather": (1722, "c00775959c6cee18d9eb4fc857d289a0"),
}


def test_the_flights_tables_and_features_hold_exactly_what_they_held(platform):
    got = {}
    with duckdb.connect(str(platform["env"][settings.WAREHOUSE_VAR]), read_only=True) as wh:
        # each feature dataset through its view in marts: the model's columns in the model's order
        for path in sorted(Path(platform["env"][settings.FEATURES_VAR]).iterdir()):
            got[f"marts.{path.name}"] = wh.execute(
                "SELECT count(*), md5(string_agg(t::VARCHAR, '|' ORDER BY t::VARCHAR)) "
                f"FROM marts.{path.name} t").fetchall()[0]
        tables = wh.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw' AND "
                            "table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_%' ESCAPE '\\' "
                            "ORDER BY 1").fetchall()
        for (table,) in tables:
            # the rows as landed (not where or when they were loaded from: batch file paths, load times)
            columns = [c for (c, *_) in wh.execute(f"DESCRIBE raw.{table}").fetchall()
                       if not c.startswith("_") or c == "_partition_date"]
            got[f"raw.{table}"] = wh.execute(
                f"SELECT count(*), md5(string_agg(x, '|' ORDER BY x)) FROM "
                f"(SELECT ({', '.join(chr(34) + c + chr(34) for c in columns)})::VARCHAR AS x FROM raw.{table})"
            ).fetchall()[0]
    assert got == FLIGHTS_CONTENT, got
