"""Execute a sensor's or automation's run request in-process the way the daemon would launch it (test helper)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def execute_request(defs: dg.Definitions, instance: dg.DagsterInstance,
                    request: dg.RunRequest) -> list[dg.ExecuteInProcessResult]:
    """One run for a run request (its assets, and its checks when it names them); for a backfill request, what the
    backfill daemon does with single-run backfill policies: one run per partition range (assets sharing a range
    share the run), the unpartitioned assets in a run of their own."""
    job = (defs.resolve_job_def(request.job_name) if request.job_name
           else defs.resolve_implicit_global_asset_job_def())
    if request.asset_graph_subset is None:
        selection = list(request.asset_selection or [])
        if request.asset_check_keys is not None:
            job = job.get_subset(asset_selection=set(selection), asset_check_selection=set(request.asset_check_keys))
            selection = None
        return [job.execute_in_process(instance=instance, partition_key=request.partition_key, raise_on_error=False,
                                       asset_selection=selection or None, tags=dict(request.tags or {}),
                                       run_config=QUIET)]
    subset = request.asset_graph_subset
    by_range: dict[tuple[str, str], list[dg.AssetKey]] = {}
    for key, parts in subset.partitions_subsets_by_asset_key.items():
        keys = sorted(parts.get_partition_keys())
        span = (dt.date.fromisoformat(keys[-1]) - dt.date.fromisoformat(keys[0])).days + 1
        assert len(keys) == span, f"{key.to_user_string()}: not one contiguous range: {keys}"
        by_range.setdefault((keys[0], keys[-1]), []).append(key)
    runs: list[tuple[tuple[str, str] | None, list[dg.AssetKey]]] = []
    if subset.non_partitioned_asset_keys:
        runs.append((None, sorted(subset.non_partitioned_asset_keys)))
    runs += sorted(by_range.items())
    results = []
    for rng, keys in runs:
        tags = dict(request.tags or {})
        if rng:
            tags |= {"dagster/asset_partition_range_start": rng[0], "dagster/asset_partition_range_end": rng[1]}
        results.append(job.execute_in_process(instance=instance, asset_selection=keys, tags=tags,
                                              raise_on_error=False, run_config=QUIET))
    return results
