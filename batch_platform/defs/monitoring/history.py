"""Reading asset-check history from the instance (sensors, CLI)."""

import dagster as dg


def check_evaluations(instance: dg.DagsterInstance, key: dg.AssetKey, check_name: str,
                      limit: int = 20) -> list[dg.AssetCheckEvaluation]:
    """The newest evaluations of an asset check, newest first. Executions that were planned but never evaluated
    (the step was skipped or did not get that far) are passed over."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, check_name), limit=limit)
    out = []
    for record in records:
        data = record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event else None
        if isinstance(data, dg.AssetCheckEvaluation):
            out.append(data)
    return out
