"""Incremental feature builds: a build rewrites only the days whose raw batches changed, and what it writes is byte
for byte what a full refresh writes (lib: batch_platform/lib/feature_increments.py; dbt: the parquet_dataset
materialization, batch_platform/dbt_macros/parquet_dataset.sql)."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from batch_platform import settings
from batch_platform.lib import feature_increments as inc

D = dt.date


# ---------------------------------------------------------------------------------------------------------------
# The plan, on a load log and folders made for the test


def _log(con, rows):
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE OR REPLACE TABLE raw._batch_loads (table_name VARCHAR, partition_key VARCHAR, rows BIGINT, "
                "checksum VARCHAR, loaded_at TIMESTAMPTZ, published_at TIMESTAMPTZ, final_at TIMESTAMPTZ)")
    for table, key, checksum in rows:
        con.execute("INSERT INTO raw._batch_loads VALUES (?, ?, 1, ?, TIMESTAMPTZ '2013-06-01 00:00:00+00', "
                    "NULL, NULL)", [table, key, checksum])


def _dataset_folder(root: Path, name: str, days) -> None:
    for day in days:
        folder = root / name / f"as_of_date={day.isoformat()}"
        folder.mkdir(parents=True)
        (folder / "data_0.parquet").write_bytes(day.isoformat().encode())


DAILY = inc.Dataset("plane_daily_features", "as_of_date", "def-1", ("raw.flights",))
WEATHER = inc.Dataset("origin_weather_features", "obs_date", "def-w", ("raw.weather",))
DAYS = [D(2013, 1, d) for d in range(1, 11)]
LOG = [("raw.flights", d.isoformat(), f"c{d.day}") for d in DAYS] + \
      [("raw.weather", d.isoformat(), f"w{d.day}") for d in DAYS] + [("raw.planes", "__all__", "p")]


@pytest.fixture
def published(tmp_path):
    con = duckdb.connect()
    _log(con, LOG)
    _dataset_folder(tmp_path / "a", "plane_daily_features", DAYS)
    inc.record(con, {"plane_daily_features": DAILY}, inc.loads(con))
    yield con, tmp_path
    con.close()


def test_nothing_changed_rewrites_no_day(published):
    con, folder = published
    assert inc.plan(con, {"plane_daily_features": DAILY}, "a", folder) == {"plane_daily_features": D(2013, 1, 11)}


def test_a_new_or_reloaded_day_is_the_first_day_rewritten(published):
    con, folder = published
    _log(con, LOG + [("raw.flights", "2013-01-11", "c11")])
    assert inc.plan(con, {"plane_daily_features": DAILY}, "a", folder)["plane_daily_features"] == D(2013, 1, 11)
    changed = [r if r[1] != "2013-01-04" else (r[0], r[1], "corrected") for r in LOG]
    _log(con, changed + [("raw.flights", "2013-01-11", "c11")])
    assert inc.plan(con, {"plane_daily_features": DAILY}, "a", folder)["plane_daily_features"] == D(2013, 1, 4)
    # a batch removed from the log is a change too
    _log(con, [r for r in LOG if r[1] != "2013-01-07"])
    assert inc.plan(con, {"plane_daily_features": DAILY}, "a", folder)["plane_daily_features"] == D(2013, 1, 7)


def test_only_the_raw_tables_upstream_of_a_dataset_count(published):
    con, folder = published
    _log(con, [r if r[0] != "raw.weather" else (r[0], r[1], "new") for r in LOG])
    assert inc.plan(con, {"plane_daily_features": DAILY}, "a", folder)["plane_daily_features"] == D(2013, 1, 11)


@pytest.mark.parametrize("change", ["definition", "snapshot", "full_refresh", "never_built", "no_published_folder"])
def test_every_day_is_rewritten(published, change):
    con, folder = published
    ds = DAILY
    if change == "definition":
        ds = inc.Dataset(DAILY.name, DAILY.partition_by, "def-2", DAILY.raw_tables)
    if change == "snapshot":
        ds = inc.Dataset(DAILY.name, DAILY.partition_by, DAILY.definition, ("raw.flights", "raw.planes"))
        inc.record(con, {DAILY.name: ds}, inc.loads(con))
        _log(con, [r if r[0] != "raw.planes" else (r[0], r[1], "p2") for r in LOG])
    if change == "never_built":
        ds = WEATHER
    plan = inc.plan(con, {ds.name: ds}, None if change == "no_published_folder" else "a", folder,
                    full_refresh=change == "full_refresh")
    assert plan == {ds.name: None}


def test_carry_over_copies_a_tables_rows_before_the_first_rewritten():
    ds = inc.Dataset("int_plane_daily_windows", "as_of_date", "d", ("raw.flights",), inc.TABLE, "intermediate")
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA intermediate__a")
        con.execute("CREATE TABLE intermediate__a.int_plane_daily_windows AS SELECT DATE '2013-01-01' + i::INT "
                    "AS as_of_date, i FROM range(10) t(i)")
        assert inc.carry_over_table(con, ds, "a", "b", D(2013, 1, 8)) == 7
        assert con.execute("SELECT max(as_of_date) FROM intermediate__b.int_plane_daily_windows").fetchall() == [
            (D(2013, 1, 7),)]
        assert inc.carry_over_table(con, ds, "a", "b", D.max) == 10
        assert inc.carry_over_table(con, ds, "a", "b", None) == 0
        assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                           "'intermediate__b'").fetchall() == [(0,)]


def test_carry_over_links_the_days_before_the_first_rewritten(tmp_path):
    _dataset_folder(tmp_path / "a", "plane_daily_features", DAYS)
    (tmp_path / "b").mkdir()
    assert inc.carry_over(tmp_path / "a", tmp_path / "b", "plane_daily_features", "as_of_date", D(2013, 1, 8)) == 7
    kept = inc.partitions(tmp_path / "b" / "plane_daily_features", "as_of_date")
    assert sorted(kept) == DAYS[:7]
    for day, folder in kept.items():  # the same file (a hard link), never a copy to write into
        src = tmp_path / "a" / "plane_daily_features" / folder.name / "data_0.parquet"
        assert (folder / "data_0.parquet").stat().st_ino == src.stat().st_ino
    assert inc.carry_over(tmp_path / "a", tmp_path / "c", "plane_daily_features", "as_of_date", None) == 0
    assert not (tmp_path / "c").exists()
    assert inc.carry_over(tmp_path / "a", tmp_path / "c", "plane_daily_features", "as_of_date", D.max) == 10


def test_the_definition_covers_upstream_sql_and_macros():
    from batch_platform.defs.features.project import ensure_manifest

    manifest = json.loads(ensure_manifest().read_text())
    before = inc.datasets(manifest)
    assert {n: (d.partition_by, d.kind) for n, d in before.items()} == {
        "plane_daily_features": ("as_of_date", inc.FILES), "route_daily_features": ("as_of_date", inc.FILES),
        "carrier_daily_features": ("as_of_date", inc.FILES), "origin_weather_features": ("obs_date", inc.FILES),
        "plane_attributes": (None, inc.FILES), "int_plane_daily_windows": ("as_of_date", inc.TABLE),
        "int_route_daily_windows": ("as_of_date", inc.TABLE), "int_carrier_daily_windows": ("as_of_date", inc.TABLE),
        "int_origin_weather_trailing_24h": ("obs_date", inc.TABLE)}
    assert before["int_plane_daily_windows"].layer == "intermediate"
    assert before["plane_daily_features"].raw_tables == ("raw.flights",)
    assert before["origin_weather_features"].raw_tables == ("raw.weather",)
    assert before["plane_attributes"].raw_tables == ("raw.planes",)
    # the feed of a table's validity (the time model's) counts as well
    assert inc.datasets(manifest, None, {"plane_attributes": "flights"})["plane_attributes"].raw_tables == (
        "raw.flights", "raw.planes")
    # a macro of the trailing windows (upstream of the three entity tables, not of the weather)
    edited = copy.deepcopy(manifest)
    edited["macros"]["macro.batch_platform.entity_daily_windows"]["macro_sql"] += " "
    after = inc.datasets(edited)
    assert {n for n in before if before[n].definition != after[n].definition} == {
        "plane_daily_features", "route_daily_features", "carrier_daily_features", "int_plane_daily_windows",
        "int_route_daily_windows", "int_carrier_daily_windows"}
    # a staging model's SQL, and the project's vars
    edited = copy.deepcopy(manifest)
    edited["nodes"]["model.batch_platform.stg_weather"]["checksum"]["checksum"] = "x"
    after = inc.datasets(edited)
    assert {n for n in before if before[n].definition != after[n].definition} == {
        "origin_weather_features", "int_origin_weather_trailing_24h"}
    assert inc.datasets(manifest, {"timezone": "UTC"})["plane_attributes"].definition != \
        before["plane_attributes"].definition


# ---------------------------------------------------------------------------------------------------------------
# The real build on the 2013 replay: day by day, a corrected batch, then a full refresh of the same data


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.parquet"))}


def _build(full_refresh: bool = False, models: tuple[str, ...] = ()):
    """A feature build of every model, or of ``models`` (as automation requests the stale ones)."""
    from dagster_dbt import get_asset_key_for_model

    from batch_platform.defs.features.assets import dbt_feature_models
    from batch_platform.defs.resources import build_resources

    whole = dg.AssetSelection.assets(dbt_feature_models) | dg.AssetSelection.checks(*dbt_feature_models.check_keys)
    if models:
        whole = dg.AssetSelection.assets(*(get_asset_key_for_model([dbt_feature_models], m) for m in models))
    with dg.instance_for_test() as instance:
        result = dg.materialize([dbt_feature_models], selection=whole, resources=build_resources(), instance=instance,
                                run_config={"ops": {"dbt_feature_models": {"config": {"full_refresh": full_refresh}}}})
        assert result.success
        failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        assert failed == []
        return [e.user_message for e in instance.all_logs(result.run_id)]


def _published(env) -> Path:
    with duckdb.connect(str(env["warehouse"]), read_only=True) as con:
        (generation,) = con.execute("SELECT generation FROM main._feature_generation").fetchall()[0]
    return env["data"] / "feature_generations" / generation


def _correct_flights(env, day: D) -> None:
    """Re-land ``day``'s flights with one delayed flight cancelled instead (a corrected batch, with its manifest)
    and ingest it."""
    from batch_platform.lib.batch_files import manifest_path, publish
    from batch_platform.lib.contracts import declared
    from batch_platform.lib.ingest import IngestResult, ingest_many
    from batch_platform.lib.landing import daily_batch_path

    path = daily_batch_path(env["landing"], "flights", day)
    header, *rows = path.read_text().splitlines()
    column = header.split(",").index("arr_delay")
    i = next(i for i, r in enumerate(rows) if r.split(",")[column] not in ("", "0"))
    fields = rows[i].split(",")
    for name in ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"):
        fields[header.split(",").index(name)] = ""
    rows[i] = ",".join(fields)
    data = ("\n".join([header, *rows]) + "\n").encode()
    manifest = json.loads(manifest_path(path).read_text())
    assert publish(path, data, {**manifest, "sha256": hashlib.sha256(data).hexdigest()})
    (result,) = ingest_many(env["warehouse"], [(declared("flights"), path, day)], quarantine_dir=env["quarantine"])
    assert isinstance(result, IngestResult) and result.load.rows_replaced > 0, result


def test_incremental_builds_equal_a_full_refresh_byte_for_byte(platform_env):
    from tests.conftest import load_days

    env = {name: Path(os.environ[name]) for name in (settings.LANDING_VAR, settings.WAREHOUSE_VAR,
                                                     settings.QUARANTINE_VAR)}
    load_days(env, D(2013, 1, 1), D(2013, 1, 10))
    logs = _build()
    assert any("plane_daily_features: building every day" in m for m in logs)
    first = _published(platform_env)

    load_days(env, D(2013, 1, 11), D(2013, 1, 16))
    before = _files(first)
    logs = _build()
    assert any("plane_daily_features: building the days from 2013-01-11 on" in m for m in logs)
    assert any(re.search(r"int_plane_daily_windows: building the days from 2013-01-11 on \(\d+ rows", m)
               for m in logs)
    second = _published(platform_env)
    assert _files(first) == before  # the published files were linked, never written
    days = inc.partitions(second / "plane_daily_features", "as_of_date")
    assert max(days) == D(2013, 1, 16)
    for day, folder in days.items():  # the days before the new ones are the previous build's files, linked
        linked = (folder / "data_0.parquet").stat().st_ino == \
            (first / "plane_daily_features" / folder.name / "data_0.parquet").stat().st_ino if day <= D(2013, 1, 10) \
            else False
        assert linked == (day < D(2013, 1, 11)), day

    # a build of some models (the route's): the others are the published ones, their files linked
    logs = _build(models=("int_route_daily_windows", "route_daily_features", "flight_labels"))
    assert any("route_daily_features: building the days from 2013-01-17 on" in m for m in logs)
    assert not any("plane_daily_features: building" in m for m in logs)
    partial = _published(platform_env)
    assert _files(partial) == _files(second)
    plane = partial / "plane_daily_features" / "as_of_date=2013-01-16" / "data_0.parquet"
    assert plane.stat().st_ino == (second / plane.relative_to(partial)).stat().st_ino
    with duckdb.connect(str(platform_env["warehouse"]), read_only=True) as con:
        for relation in ("marts.plane_daily_features", "marts.route_daily_features",
                         "intermediate.int_plane_daily_windows", "intermediate.int_route_daily_windows"):
            assert con.execute(f"SELECT max(as_of_date) FROM {relation}").fetchall() == [(D(2013, 1, 16),)]
    second = partial

    _correct_flights(platform_env, D(2013, 1, 13))
    logs = _build()
    assert any("route_daily_features: building the days from 2013-01-13 on" in m for m in logs)
    assert any("origin_weather_features: building the days from 2013-01-17 on" in m for m in logs)  # no change
    incremental = _published(platform_env)
    changed = {k for k, v in _files(incremental).items() if _files(second).get(k) != v}
    assert "plane_daily_features/as_of_date=2013-01-13/data_0.parquet" in changed
    assert not any("as_of_date=2013-01-12" in k for k in changed)

    _build(full_refresh=True)
    full = _published(platform_env)
    assert full != incremental
    assert (full / "plane_daily_features" / "as_of_date=2013-01-01" / "data_0.parquet").stat().st_ino != \
        (incremental / "plane_daily_features" / "as_of_date=2013-01-01" / "data_0.parquet").stat().st_ino
    assert _files(full) == _files(incremental)
    assert len(_files(full)) == 4 * 16 + 1
    with duckdb.connect(str(platform_env["warehouse"]), read_only=True) as con:  # and the incremental tables
        for table in ("int_plane_daily_windows", "int_route_daily_windows", "int_carrier_daily_windows",
                      "int_origin_weather_trailing_24h"):
            digests = [con.execute(f"SELECT count(*), bit_xor(hash(t)) FROM intermediate__{g.name}.{table} t"
                                   ).fetchall()[0] for g in (incremental, full)]
            assert digests[0] == digests[1] and digests[0][0] > 0, table
