"""Operational SLIs: each definition on constructed inputs (lib/slis.py), then the asset on the session platform."""

import datetime as dt
import math
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from batch_platform.lib import resource_usage, slis

TZ = "America/New_York"
UTC = dt.UTC


def at(day: int, hour: float) -> dt.datetime:
    """Jan ``day`` 2013 at ``hour`` New York time (EST: UTC-5), in UTC."""
    return dt.datetime(2013, 1, day, tzinfo=UTC) + dt.timedelta(hours=hour + 5)


def live_days() -> slis.PlatformDays:
    """A live-like load history: each day's 06:00 publication loaded at 06:30, Jan 10 .. Jan 14."""
    return slis.PlatformDays([slis.Load(at(d, 6.5), at(d, 6)) for d in range(10, 15)], TZ)


def day(n: int) -> dt.date:
    return dt.date(2013, 1, n)


def test_platform_days_map_instants_through_the_load_history():
    days = live_days()
    assert days.published_before(at(10, 6.4)) is None  # nothing loaded yet
    assert days.day_of(at(10, 7)) == day(10)
    assert days.day_of(at(11, 2)) == day(10)  # before the morning's load: still the previous day
    assert days.day_of(at(11, 6.6)) == day(11)
    start, end = days.window(day(11))
    assert days.day_of(start) == day(11) and days.day_of(end - dt.timedelta(microseconds=1)) == day(11)
    assert days.day_of(end) == day(12)
    assert days.window(day(14))[1] is None  # still the current day
    assert days.window(day(9)) is None and days.window(day(15)) is None
    # a catch-up: three days' publications loaded at once skip the first two (they were never current)
    catch_up = slis.PlatformDays([slis.Load(at(20, 8), at(d, 6)) for d in (17, 18, 19)], TZ)
    assert catch_up.window(day(17)) is None and catch_up.window(day(18)) is None
    assert catch_up.window(day(19))[0] > at(20, 8)
    # a replay: old publications loaded now; everything afterwards is the newest data day
    now = dt.datetime.now(UTC)
    replay = slis.PlatformDays([slis.Load(now - dt.timedelta(minutes=5), at(d, 6)) for d in (3, 4)], TZ)
    assert replay.day_of(now) == day(4)


def test_pipeline_success_rate_counts_ended_runs_only():
    runs = [slis.RunRecord(str(i), s, at(11, 8)) for i, s in
            enumerate(["SUCCESS", "SUCCESS", "SUCCESS", "FAILURE", "CANCELED", "STARTED", "QUEUED"])]
    got = slis.pipeline_runs(runs)
    assert got == {"pipeline_success_rate": 3 / 5, "runs_succeeded": 3, "runs_failed": 2, "runs_not_ended": 2}
    assert slis.pipeline_runs([])["pipeline_success_rate"] is None
    assert slis.pipeline_runs(runs[-2:])["pipeline_success_rate"] is None


def test_champion_at_and_model_age_follow_the_alias_log_and_the_data_clock():
    days = live_days()
    moves = [slis.AliasMove("champion", "promote", 1, at(10, 9)), slis.AliasMove("challenger", "set", 2, at(11, 9)),
             slis.AliasMove("champion", "promote", 2, at(12, 9)), slis.AliasMove("champion", "rollback", 1, at(13, 9))]
    assert slis.champion_at(moves, at(10, 8)) is None
    assert slis.champion_at(moves, days.window(day(11))[1]) == 1  # the challenger alias does not count
    assert slis.champion_at(moves, days.window(day(12))[1]) == 2
    assert slis.champion_at(moves, None) == 1
    # v1 registered on day 10 (after its publication was loaded): at the end of day 13, 3 data days old
    assert slis.model_age_days(days, at(10, 8).isoformat(), days.window(day(13))[1] - dt.timedelta(microseconds=1)) == 3.0
    assert slis.model_age_days(days, None, at(13, 8)) is None
    assert slis.model_age_days(days, at(10, 1), at(13, 8)) is None  # registered before any load


def test_feature_age_is_the_lag_behind_the_loaded_publications():
    days = live_days()
    assert slis.feature_age_hours(days, at(12, 7), at(12, 23)) == 0.0  # rebuilt after the morning's load
    assert slis.feature_age_hours(days, at(11, 7), at(13, 7)) == 48.0  # two publications not in the features
    assert slis.feature_age_hours(days, None, at(13, 7)) is None  # never built
    assert slis.feature_age_hours(days, at(9, 7), at(13, 7)) is None  # built before any load


def test_production_gap_takes_the_champion_row_of_the_newest_measured_day():
    rows = [slis.AccuracyRow(day(8), 1, 0.70, 0.72, 0.02, 500),
            slis.AccuracyRow(day(9), 1, 0.66, 0.72, 0.06, 900),
            slis.AccuracyRow(day(9), 2, 0.74, 0.73, -0.01, 100),  # shadow-era version that scored few rows
            slis.AccuracyRow(day(12), 2, 0.75, 0.73, -0.02, 1000)]
    got = slis.production_gap(rows, day(11))
    assert got["production_gap"] == pytest.approx(0.06) and got["production_gap_version"] == 1
    assert (got["production_value"], got["validation_value"], got["production_gap_flight_day"]) == (
        0.66, 0.72, "2013-01-09")
    assert slis.production_gap(rows, day(12))["production_gap"] == pytest.approx(-0.02)
    assert slis.production_gap(rows, day(7))["production_gap"] is None  # no accuracy yet
    assert slis.production_gap([], day(12))["production_gap"] is None
    # one class only on the day: the metric is missing, so is the gap
    assert slis.production_gap([slis.AccuracyRow(day(9), 1, None, 0.7, None, 10)], day(9))["production_gap"] is None


def test_drift_score_is_the_share_of_flagged_columns():
    check = {"drift_severity": "ERROR", "error_columns": ["a", "b"], "warn_columns": ["c"], "columns_tested": 8,
             "column_values": {"a:wasserstein": 0.31, "c:wasserstein": 0.12, "b:psi": 0.4, "score:psi": 0.05}}
    got = slis.drift_score(check)
    assert got == {"drift_score": 3 / 8, "drift_error_columns": 2, "drift_max_wasserstein": 0.31,
                   "drift_max_psi": 0.4}
    assert slis.drift_score(None)["drift_score"] is None
    # a WARN evaluation without statistics (no drift reference, every row fell back)
    assert slis.drift_score({"partition": "2013-01-10", "model_version": 1})["drift_score"] is None


def test_promotions_attempted_failed_succeeded():
    gates = [slis.GateEvaluation(3, False, at(11, 8)), slis.GateEvaluation(3, True, at(11, 9)),  # regated: passed
             slis.GateEvaluation(4, False, at(11, 10)),
             slis.GateEvaluation(5, True, at(11, 11))]  # passed, not promoted (challenger)
    moves = [slis.AliasMove("champion", "promote", 3, at(11, 9.5)), slis.AliasMove("challenger", "set", 5, at(11, 11)),
             slis.AliasMove("champion", "promote", 6, at(11, 12)),  # a manual promotion, gated another day
             slis.AliasMove("champion", "rollback", 3, at(11, 13))]
    assert slis.promotions(gates, moves) == {"promotions_attempted": 4, "promotions_failed": 1,
                                             "promotions_succeeded": 2, "rollbacks": 1}
    assert slis.promotions([], []) == {"promotions_attempted": 0, "promotions_failed": 0,
                                       "promotions_succeeded": 0, "rollbacks": 0}


def test_training_takes_the_largest_of_the_day():
    got = slis.training([{"training_seconds": 12.5, "peak_memory_mb": 700.0, "training_memory_increase_mb": 40.0},
                         {"training_seconds": 30.0, "peak_memory_mb": 650.0},  # no increase recorded
                         {"version": 3}])  # trained before the measurements existed
    assert got == {"trainings": 3, "training_seconds": 30.0, "peak_memory_mb": 700.0,
                   "training_memory_increase_mb": 40.0}
    assert slis.training([]) == {"trainings": 0, "training_seconds": None, "peak_memory_mb": None,
                                 "training_memory_increase_mb": None}


def test_day_slis_filters_by_the_platform_day_and_reports_nan_for_nothing():
    days = live_days()
    runs = [slis.RunRecord("a", "SUCCESS", at(11, 8)), slis.RunRecord("b", "FAILURE", at(11, 20)),
            slis.RunRecord("c", "FAILURE", at(12, 8))]  # the next day
    moves = [slis.AliasMove("champion", "promote", 1, at(10, 9))]
    got = slis.day_slis("s", day(11), days=days, now=at(14, 12), runs=runs, moves=moves,
                        created_at={1: at(10, 8).isoformat()}, feature_built_at=at(11, 7), accuracy=[],
                        drift_check=None, gates=[slis.GateEvaluation(1, True, at(10, 8))], candidates=[])
    n = got.numeric()
    assert n["pipeline_success_rate"] == 0.5 and n["runs_failed"] == 1
    assert n["model_age_days"] == 1.0 and n["feature_age_hours"] == 0.0
    assert n["promotions_attempted"] == 0  # the gate and the promotion were on day 10
    assert math.isnan(n["production_gap"]) and math.isnan(n["drift_score"]) and math.isnan(n["training_seconds"])
    assert all(isinstance(v, int | float) for v in n.values())
    assert "| pipeline_success_rate | 0.5 |" in got.markdown() and "| production_gap | n/a |" in got.markdown()
    # no runs, no champion, no accuracy: a day that was never current
    empty = slis.day_slis("s", day(20), days=days, now=at(14, 12), runs=runs, moves=moves, created_at={},
                          feature_built_at=None, accuracy=[], drift_check=None, gates=[], candidates=[]).numeric()
    assert math.isnan(empty["pipeline_success_rate"]) and math.isnan(empty["model_age_days"])
    assert empty["runs_succeeded"] == 0 and empty["promotions_attempted"] == 0
    # a day before the first champion
    before = slis.day_slis("s", day(10), days=days, now=at(14, 12), runs=[], moves=[
        slis.AliasMove("champion", "promote", 1, at(11, 9))], created_at={1: at(11, 8).isoformat()},
        feature_built_at=None, accuracy=[], drift_check=None, gates=[], candidates=[])
    assert before.values["champion_version"] is None and math.isnan(before.numeric()["model_age_days"])


def test_peak_rss_sees_an_allocation_during_the_block():
    with resource_usage.PeakRss(interval_s=0.005) as usage:
        block = bytearray(64 * 2**20)
        for i in range(0, len(block), 4096):  # touch every page so it is resident
            block[i] = 1
        time.sleep(0.05)  # resident while the sampler looks
        del block
    assert usage.seconds > 0
    assert usage.peak_mb >= usage.start_mb
    assert usage.increase_mb >= 48


# ---------------------------------------------------------------------------------------------------------------
# The asset on the session platform (runs, a champion per spec; predictions may not exist)


def _numbers(materialization) -> dict:
    return {k: v.value for k, v in materialization.metadata.items()}


def test_the_asset_on_the_platform_matches_the_instance(on_platform):
    import dagster as dg

    from batch_platform import settings
    from batch_platform.defs.feature_store.assets import FEATURE_DEFINITIONS_KEY
    from batch_platform.defs.monitoring.slis import slis_key
    from batch_platform.defs.training.models import candidate_key
    from batch_platform.lib import warehouse
    from batch_platform.lib.registry import ModelRegistry
    from batch_platform.lib.specs import load_specs
    from batch_platform.lib.time_model import load_time_model

    instance, env = on_platform["instance"], on_platform["env"]
    spec = load_specs()["flight_delay"]
    tz = load_time_model().spec.timezone
    db = env[settings.WAREHOUSE_VAR]
    with warehouse.connect(db, read_only=True) as con:
        newest = warehouse.newest_publication(con)
        day = newest.astimezone(ZoneInfo(tz)).date()  # the current data day: every run since the loads is on it
        midnight = dt.datetime.combine(day, dt.time(0), ZoneInfo(tz))
        (start, last_load), = con.execute(
            f"SELECT min(loaded_at) FILTER (WHERE published_at >= ?), max(loaded_at) "
            f"FROM {warehouse.LOAD_HISTORY_TABLE}", [midnight]).fetchall()
        has_accuracy = warehouse.table_exists(con, "monitoring", "production_accuracy")
    registry = ModelRegistry(env[settings.REGISTRY_VAR])
    champion = registry.get_alias(spec.name, "champion")
    assert champion is not None and dt.datetime.fromisoformat(champion.created_at) > last_load

    # the platform's definition (its resources bound)
    result = dg.materialize([on_platform["defs"].resolve_assets_def(slis_key(spec))], instance=instance,
                            partition_key=day.isoformat())
    assert result.success
    md = _numbers(result.asset_materializations_for_node(slis_key(spec).path[-1])[0])
    # kept in the warehouse (the day's rows, NULL for NaN), charted from there, the chart shown by its served URL
    from batch_platform.lib import sli_history

    with warehouse.connect(db, read_only=True) as con:
        stored = dict(con.execute(f"SELECT sli, value FROM {sli_history.TABLE} WHERE spec = ? AND day = ?",
                                  [spec.name, day]).fetchall())
    assert stored.keys() == {k for k in md if k in slis.DaySlis.NUMERIC}
    assert all((v is None and math.isnan(md[k])) or v == pytest.approx(md[k]) for k, v in stored.items())
    plot = Path(env[settings.ARTIFACTS_VAR]) / "slis" / spec.name / f"{day}.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and md["sli_plot_url"] == settings.report_url(plot)
    assert md["sli_plot"] == f"![operational SLIs]({md['sli_plot_url']})"

    # run success: every run created since the day began, except this one (it was running)
    runs = [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(created_after=start))
            if r.dagster_run.run_id != result.run_id]
    succeeded = sum(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    failed = sum(r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED) for r in runs)
    assert runs and (md["runs_succeeded"], md["runs_failed"]) == (succeeded, failed)
    assert md["pipeline_success_rate"] == pytest.approx(succeeded / (succeeded + failed))
    # the champion registered after the last load: 0 days old on the data clock; features built after it too
    assert md["champion_version"] == champion.version and md["model_age_days"] == 0.0
    built = instance.fetch_materializations(FEATURE_DEFINITIONS_KEY, limit=1).records[0]
    assert built.timestamp > last_load.timestamp() and md["feature_age_hours"] == 0.0
    # promotions, from the registry (gate reports attached, champion moves) rather than the check history
    promoted = {e.to_version for e in registry.alias_history(spec.name, "champion") if e.action == "promote"
                and dt.datetime.fromisoformat(e.at) > start}
    gated = {v.version: v.gate_report["passed"] for v in registry.list_versions(spec.name) if v.gate_report}
    assert md["promotions_attempted"] == len(set(gated) | promoted) >= 1
    assert md["promotions_failed"] == len({v for v, ok in gated.items() if not ok} - promoted)
    assert md["promotions_succeeded"] == len(promoted)
    # training time and peak memory of the candidates trained that day
    trained = [{k: v.value for k, v in r.asset_materialization.metadata.items()}
               for r in instance.fetch_materializations(candidate_key(spec), limit=100).records
               if r.timestamp > start.timestamp()]
    assert md["trainings"] == len(trained) >= 1
    assert md["training_seconds"] == max(t["training_seconds"] for t in trained) > 0
    assert md["peak_memory_mb"] == max(t["peak_memory_mb"] for t in trained) > 0
    # accuracy and drift only where they exist
    if not has_accuracy:
        assert math.isnan(md["production_gap"])
    drift = [ev for ev in instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey([f"{spec.name}_predictions"]), "feature_drift"), limit=50)]
    if not drift:
        assert math.isnan(md["drift_score"])
    assert "| pipeline_success_rate |" in md["slis"]


def test_yesterdays_slis_are_due_once_this_morning_not_at_midnight():
    """The partition that became yesterday overnight waits for this morning's loads (08:00 New York), once."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    import dagster as dg

    from batch_platform.defs.monitoring.slis import slis_due

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-10-01", end_offset=1),
              automation_condition=slis_due("America/New_York"))
    def day_asset(): ...

    @dg.asset(group_name="raw")
    def raw_table(): ...

    defs = dg.Definitions(assets=[day_asset, raw_table])
    ny = ZoneInfo("America/New_York")
    seen = {}
    with dg.instance_for_test() as instance:
        cursor = None
        for day, hm in [(1, "05:00"), (1, "08:30"), (1, "08:35"), (1, "18:05"), (2, "06:15"), (2, "07:59"),
                        (2, "08:30"), (2, "09:00")]:
            if (day, hm) == (1, "08:35"):  # a fresh instance: nothing is due before its history is loaded
                dg.materialize([raw_table], instance=instance)
            at = dt.datetime(2026, 11, day, int(hm[:2]), int(hm[3:]), tzinfo=ny)
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at, cursor=cursor)
            cursor = result.cursor
            seen[(day, hm)] = sorted(result.get_requested_partitions(dg.AssetKey("day_asset")))
    assert seen == {(1, "05:00"): [], (1, "08:30"): [], (1, "08:35"): ["2026-10-31"], (1, "18:05"): [],
                    (2, "06:15"): [], (2, "07:59"): [], (2, "08:30"): ["2026-11-01"], (2, "09:00"): []}


def test_the_history_replaces_a_recomputed_day_and_charts_every_sli(tmp_path):
    import duckdb

    from batch_platform.lib import sli_history

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    first = slis.DaySlis("s", day(10), {"model_age_days": 1.0, "rollbacks": 0, "drift_score": None})
    assert sli_history.store(con, first, "run-a") == len(slis.DaySlis.NUMERIC)
    sli_history.store(con, slis.DaySlis("s", day(11), {"model_age_days": 2.0, "rollbacks": 1}), "run-b")
    sli_history.store(con, slis.DaySlis("s", day(11), {"model_age_days": 0.0, "rollbacks": 1}), "run-c")  # again
    sli_history.store(con, slis.DaySlis("other", day(11), {"model_age_days": 9.0}), "run-d")
    got = sli_history.series(con, "s", day(11))
    assert got["model_age_days"] == [(day(10), 1.0), (day(11), 0.0)]
    assert got["rollbacks"] == [(day(10), 0.0), (day(11), 1.0)]
    assert got["drift_score"] == [(day(10), None), (day(11), None)]  # computed, nothing measured
    assert sli_history.series(con, "s", day(10), days=1)["model_age_days"] == [(day(10), 1.0)]
    png = sli_history.chart(got, tmp_path / "c" / "slis.png", "s")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
