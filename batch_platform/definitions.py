"""The only assembly point: everything under ``batch_platform/defs`` plus cross-cutting settings (freshness
policies and automation conditions for every stage, see ``defs/monitoring/policies.py``; the run executor)."""

from pathlib import Path

import dagster as dg

from batch_platform import settings
from batch_platform.defs.execution import in_process_recording_executor
from batch_platform.defs.monitoring.policies import policy_mapper


@dg.definitions
def defs() -> dg.Definitions:
    settings.export_defaults()
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # Stage modules import upstream assets (e.g. the dbt assets) to declare deps, so one AssetsDefinition can be
    # collected more than once; keep one of each before mapping, or the mapped copies would collide.
    unique = list({id(a): a for a in loaded.assets or []}.values())
    return dg.Definitions.merge(
        dg.Definitions(assets=dg.map_asset_specs(policy_mapper(unique), unique)),
        dg.Definitions(jobs=loaded.jobs, schedules=loaded.schedules, sensors=loaded.sensors,
                       resources=loaded.resources, asset_checks=loaded.asset_checks,
                       # Steps of a run execute one after another in the run's process: every stage takes the one
                       # warehouse pool slot anyway, and a step subprocess would load the code location again
                       # (~5 s each, most of a daily run's time). The run's tags name its process (dead-run repair).
                       executor=in_process_recording_executor,
                       loggers=loaded.loggers, metadata=loaded.metadata),
    )
