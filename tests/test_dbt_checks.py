"""dbt tests as asset checks: the tests on dbt sources are checks of the raw assets they test, and `dbt build`
reports their results as check evaluations of those assets."""

from __future__ import annotations

import json
from collections import defaultdict

import dagster as dg
import pytest

from batch_platform.defs.features.project import ensure_manifest

RAW_ASSETS = ("flights", "weather", "flight_schedule", "planes", "airports", "airlines")


@pytest.fixture(scope="module")
def source_tests() -> dict[dg.AssetKey, set[str]]:
    """From the dbt manifest: the data tests on each source, by the raw asset key the source is (``["raw",
    <table>]``); names as dagster-dbt names the checks."""
    manifest = json.loads(ensure_manifest().read_text())
    by_key: dict[dg.AssetKey, set[str]] = defaultdict(set)
    for unique_id, node in manifest["nodes"].items():
        if node["resource_type"] != "test":
            continue
        parents = node["depends_on"]["nodes"]
        if len(parents) == 1 and parents[0].startswith("source."):
            source = manifest["sources"][parents[0]]
            by_key[dg.AssetKey([source["source_name"], source["name"]])].add(node["name"])
    return dict(by_key)


def test_manifest_has_source_tests_on_every_raw_asset(source_tests):
    assert sum(len(names) for names in source_tests.values()) >= 15
    for table in RAW_ASSETS:
        assert source_tests.get(dg.AssetKey(["raw", table])), table
        # each raw table's not-NULL guard is one check over its columns (one scan, one node in the build)
        assert f"{table}_not_null" in source_tests[dg.AssetKey(["raw", table])], table


def test_source_tests_are_checks_of_the_raw_assets(defs, source_tests):
    graph = defs.resolve_asset_graph()
    checks: dict[dg.AssetKey, set[str]] = defaultdict(set)
    for key in graph.asset_check_keys:
        checks[key.asset_key].add(key.name)
    for asset_key, names in source_tests.items():
        assert names <= checks[asset_key], (asset_key, names - checks[asset_key])
    # the raw assets are the ingest stage's (not stand-ins created by the dbt assets), and dbt runs the checks
    from batch_platform.defs.features.assets import dbt_feature_models

    for table in RAW_ASSETS:
        key = dg.AssetKey(["raw", table])
        assert graph.get(key).group_name == "raw" and graph.get(key).is_materializable
        assert key not in dbt_feature_models.keys
        for name in source_tests[key]:
            assert dg.AssetCheckKey(key, name) in dbt_feature_models.check_keys


def test_dbt_build_reports_source_test_results_as_check_evaluations(platform, source_tests):
    result = platform["features_result"]
    assert result.success
    evaluations = {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}
    expected = {(key, name) for key, names in source_tests.items() for name in names}
    assert expected <= set(evaluations), sorted(k for k in expected - set(evaluations))
    assert all(evaluations[k].passed for k in expected), [k for k in expected if not evaluations[k].passed]
    # recorded in the instance too, where the UI reads them
    key = dg.AssetKey(["raw", "flights"])
    name = sorted(source_tests[key])[0]
    record = platform["instance"].event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, name), limit=1)
    assert record and record[0].status.value == "SUCCEEDED"
