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
    assert {s.name for s in defs.sensors} == {"retrain_on_drift", "rescore_after_promotion", "landing_arrivals"}
    retrain = defs.resolve_sensor_def("retrain_on_drift")
    assert [j.name for j in retrain.jobs] == ["train_and_gate"]  # never a promotion job
    daily = defs.resolve_schedule_def("raw_daily_ingest_schedule")
    assert daily.job_name == "raw_daily_ingest" and daily.cron_schedule == "30 6 * * *"
    assert daily.execution_timezone == "America/New_York"


def test_freshness_policies_and_automation_conditions_are_on_the_assets(defs):
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    fresh = {k for k, s in specs.items() if s.freshness_policy is not None}
    auto = {k: s.automation_condition for k, s in specs.items() if s.automation_condition is not None}
    # raw data, features, the champion model (maximum age) and predictions are monitored for freshness
    for key in ("raw/flights", "raw/weather", "raw/flight_schedule", "raw/planes", "marts/plane_daily_features",
                "marts/flight_schedule", "feast/feature_definitions", "flight_delay_champion_model",
                "flight_delay_predictions"):
        assert key in fresh, key
    champion = specs["flight_delay_champion_model"].freshness_policy
    assert type(champion).__name__ == "TimeWindowFreshnessPolicy"
    assert champion.fail_window.to_timedelta().days == 45  # the spec's max_model_age_days
    predictions = specs["flight_delay_predictions"].freshness_policy
    assert type(predictions).__name__ == "CronFreshnessPolicy" and predictions.deadline_cron == "0 20 * * *"
    # automation acts: features when upstream updates, champion when its candidate does, predictions on the
    # spec's cron and when their freshness fails
    assert auto["marts/plane_daily_features"].get_label() == "upstream_updated"
    assert auto["flight_delay_champion_model"].get_label() == "upstream_updated"
    labels = str(auto["flight_delay_predictions"])
    assert auto["flight_delay_predictions"].get_label() == "daily_cycle_or_stale"
    assert "freshness_failed" in labels and "on_cron" in labels
    assert "flight_delay_training_set" not in auto  # retraining is the sensor's decision, ending at the gate


def test_daily_ingest_schedule_requests_yesterday_on_the_data_clock(defs):
    """The 06:30 tick loads yesterday's flight day (New York); on the 2013 replay clock a tick after the data set's
    end requests nothing and says why."""
    from zoneinfo import ZoneInfo

    schedule = defs.resolve_schedule_def("raw_daily_ingest_schedule")
    ny = ZoneInfo("America/New_York")
    tick = dt.datetime(2013, 3, 2, 6, 30, tzinfo=ny)
    with dg.instance_for_test() as instance:
        repo = defs.get_repository_def()
        (request,) = schedule.evaluate_tick(dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, repository_def=repo)).run_requests
        assert request.partition_key == "2013-03-01"
        late = schedule.evaluate_tick(dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2026, 12, 1, 6, 30, tzinfo=ny),
            repository_def=repo))
        assert not late.run_requests and "2013 replay" in late.skip_message
