"""The code location loads and shows the raw stage as the issue describes it."""

import datetime as dt

import dagster as dg

from batch_platform import settings
from batch_platform.lib.contracts import CONTRACTS


def test_raw_assets_keys_partitions_groups_kinds_descriptions(defs):
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    for table in ("flights", "weather", "flight_schedule", "planes", "airports", "airlines"):
        spec = specs[dg.AssetKey(["raw", table])]
        assert spec.group_name == "raw"
        assert {"duckdb", "csv"} <= set(spec.kinds)
        assert spec.description and CONTRACTS[table].description in spec.description
        assert defs.resolve_assets_def(spec.key).op.pool == settings.WAREHOUSE_POOL
        schema = spec.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == CONTRACTS[table].column_names
    for table in ("flights", "weather", "flight_schedule"):
        pdef = specs[dg.AssetKey(["raw", table])].partitions_def
        assert isinstance(pdef, dg.DailyPartitionsDefinition)
        keys = pdef.get_partition_keys()
        assert keys[0] == "2013-01-01" and keys[-1] == "2013-12-31" and len(keys) == 365
        assert pdef.timezone == "America/New_York"
    for table in ("planes", "airports", "airlines"):
        assert specs[dg.AssetKey(["raw", table])].partitions_def is None
    # the schedule is built like flights: same partitions, same kind of metadata, its own contract
    flights, schedule = specs[dg.AssetKey(["raw", "flights"])], specs[dg.AssetKey(["raw", "flight_schedule"])]
    assert schedule.partitions_def == flights.partitions_def
    assert set(schedule.metadata) == set(flights.metadata)
    assert schedule.metadata["key"] == flights.metadata["key"]
    assert schedule.metadata["schema_version"] == CONTRACTS["flight_schedule"].schema_version


def test_jobs_and_resources(defs):
    daily = defs.resolve_job_def("raw_daily_ingest")
    assert daily.partitions_def is not None
    assert {k.to_user_string() for k in daily.asset_layer.executable_asset_keys} == {
        "raw/flights", "raw/weather", "raw/flight_schedule"}
    ref = defs.resolve_job_def("raw_reference_refresh")
    assert {k.to_user_string() for k in ref.asset_layer.executable_asset_keys} == {
        "raw/planes", "raw/airports", "raw/airlines"}
    assert {"warehouse", "landing", "dbt", "feature_store", "model_registry"} <= set(defs.resources)
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"build_features", "train_and_gate", "train_gate_promote", "promote_champions", "models_promote",
            "models_rollback"} <= jobs
    # the retraining job ends at the gate: it holds no champion asset
    train_and_gate = defs.resolve_job_def("train_and_gate")
    assert not any(k.path[-1].endswith("_champion_model") for k in train_and_gate.asset_layer.executable_asset_keys)


def test_assets_generated_per_shipped_spec(defs):
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for spec in ("flight_delay", "flight_cancellation"):
        for suffix in ("training_set", "candidate_model", "champion_model"):
            assert f"{spec}_{suffix}" in keys
    checks = {(k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys}
    assert ("flight_delay_candidate_model", "gate_vs_champion") in checks
    assert ("flight_delay_training_set", "no_feature_or_label_leakage") in checks
    # every training set carries its three blocking checks
    for spec in ("flight_delay", "flight_cancellation"):
        training_set = defs.resolve_assets_def(dg.AssetKey([f"{spec}_training_set"]))
        blocking = {c.name for c in training_set.check_specs if c.blocking}
        assert blocking == {"no_feature_or_label_leakage", "training_serving_skew", "no_outcome_in_missingness"}


def test_project_instance_limits_the_warehouse_pool(platform_env):
    """The project's dagster.yaml (not a manual `dagster instance concurrency set`) limits the pool to one step."""
    with dg.DagsterInstance.get() as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_concurrency_config().pool_config.pool_granularity.value == "op"
        assert instance.event_log_storage.supports_global_concurrency_limits


def test_scoring_and_monitoring_assets_checks_jobs_sensors(defs):
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for spec in ("flight_delay", "flight_cancellation"):
        assert {f"{spec}_predictions", f"{spec}_production_accuracy"} <= keys
        for check in ("fallback_share_within_limit", "one_row_per_key", "feature_drift"):
            assert (f"{spec}_predictions", check) in checks
        assert (f"{spec}_production_accuracy", "production_accuracy_within_tolerance") in checks
    scoring = defs.resolve_job_def("batch_scoring")
    assert scoring.partitions_def is not None
    assert {k.path[-1] for k in scoring.asset_layer.executable_asset_keys} == {
        "flight_delay_predictions", "flight_cancellation_predictions"}
    assert {s.name for s in defs.sensors} == {"retrain_on_drift", "landing_arrivals", "daily_cycle_automation",
                                              "dead_run_repair", "promotion_lifecycle"}
    retrain = defs.resolve_sensor_def("retrain_on_drift")
    assert [j.name for j in retrain.jobs] == ["train_and_gate"]  # never a promotion job
    # ingest is triggered by arrivals, not by the clock: no schedule is left
    assert not list(defs.schedules or [])


DEFINITIONS_SUMMARY = r"""
import json, sys
import dagster as dg
from batch_platform.definitions import defs
d = defs()
out = {"specs": {}, "sensors": {s.name: str(s.default_status) for s in d.sensors}}
for s in d.resolve_all_asset_specs():
    p = s.freshness_policy
    out["specs"][s.key.to_user_string()] = {
        "policy": type(p).__name__ if p else None,
        "deadline_cron": getattr(p, "deadline_cron", None),
        "lower_bound_h": p.lower_bound_delta.total_seconds() / 3600 if hasattr(p, "lower_bound_delta") else None,
        "fail_days": p.fail_window.to_timedelta().days if hasattr(p, "fail_window") else None,
        "text": s.metadata.get("freshness_policy"),
        "condition": s.automation_condition.get_label() if s.automation_condition else None,
    }
print(json.dumps(out))
"""


def _definitions_summary() -> dict:
    """The definitions as a process of their own loads them for the current data dir (sensors' default status and
    partitions follow the data dir's clock when the modules are imported)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", DEFINITIONS_SUMMARY], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_daily_cycle_sensors_are_off_on_the_replay(platform_env):
    """On the 2013 replay (no live clock recorded) nothing is due on replayed dates: the daily cycle's sensors are
    off. Dead-run repair is on in both modes."""
    assert not settings.clock_path().exists()
    sensors = _definitions_summary()["sensors"]
    assert sensors.pop("dead_run_repair") == "DefaultSensorStatus.RUNNING"
    assert set(sensors) == {"retrain_on_drift", "landing_arrivals", "daily_cycle_automation", "promotion_lifecycle"}
    assert set(sensors.values()) == {"DefaultSensorStatus.STOPPED"}, sensors


def test_freshness_policies_and_automation_conditions_on_the_live_clock(platform_env):
    """On the live clock every stage's freshness policy is attached, worded in the platform's terms and built from
    the time model and the specs; the daily cycle's sensors run by default. (Partitions depend on the data dir's
    clock at import, so the definitions load in a process of their own.)"""
    from batch_platform.lib import clock as clocks
    from batch_platform.lib.time_model import load_time_model

    now = dt.datetime.now(dt.UTC)
    clocks.record_clock(settings.clock_path(), clocks.live_clock_for(load_time_model().last_published_day("flights", now)))
    got = _definitions_summary()
    specs = got["specs"]
    assert set(got["sensors"].values()) == {"DefaultSensorStatus.RUNNING"}, got["sensors"]
    for table in ("flights", "weather", "flight_schedule"):  # published 06:00, loaded within 2 h
        raw = specs[f"raw/{table}"]
        assert (raw["policy"], raw["deadline_cron"], raw["lower_bound_h"]) == ("CronFreshnessPolicy", "0 8 * * *", 2)
        assert "within 2 h of its publication (06:00" in raw["text"]
    assert specs["raw/planes"]["policy"] is None  # a snapshot has no publication schedule
    for key in ("marts/plane_daily_features", "marts/flight_schedule", "feast/feature_definitions"):
        assert (specs[key]["policy"], specs[key]["deadline_cron"]) == ("CronFreshnessPolicy", "0 9 * * *"), key
        assert "by 09:00" in specs[key]["text"]
    # a snapshot's table is rebuilt each morning too: its validity comes from the load log, which every load writes
    assert specs["marts/plane_attributes"]["policy"] == "CronFreshnessPolicy"
    champion = specs["flight_delay_champion_model"]
    assert (champion["policy"], champion["fail_days"]) == ("TimeWindowFreshnessPolicy", 45)
    assert "younger than 45 days" in champion["text"]
    predictions = specs["flight_delay_predictions"]
    assert (predictions["policy"], predictions["deadline_cron"], predictions["lower_bound_h"]) == (
        "CronFreshnessPolicy", "0 20 * * *", 2)
    assert "in place by 20:00" in predictions["text"] and "18:00 cutoff" in predictions["text"]
    assert predictions["condition"] == "predictions_due(flight_delay)"


def test_freshness_policies_and_automation_conditions_are_on_the_assets(defs):
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    auto = {k: s.automation_condition for k, s in specs.items() if s.automation_condition is not None}
    # wall-clock freshness is not attached to replayed 2013 dates; the policy is stated and says so
    assert not [k for k, s in specs.items() if s.freshness_policy is not None]
    assert "live clock only" in specs["flight_delay_predictions"].metadata["freshness_policy"]
    # automation acts: features once the raw layer is in and then when an input updates, the first training set
    # once, champion when its candidate does, predictions and accuracy on their due partition only
    assert auto["marts/plane_daily_features"].get_label() == "built_from_inputs"
    assert auto["flight_delay_training_set"].get_label() == "first_build"
    assert auto["flight_delay_champion_model"].get_label() == "upstream_updated"
    assert auto["flight_delay_predictions"].get_label() == "predictions_due(flight_delay)"
    assert auto["flight_delay_production_accuracy"].get_label() == "accuracy_due(flight_delay)"
    assert not any(k.startswith("raw/") for k in auto)  # raw batches load on arrival (the sensor)
    for key in ("flight_delay_predictions", "flight_delay_production_accuracy"):
        assert "freshness_failed" not in str(auto[key]) and "on_cron" not in str(auto[key])


