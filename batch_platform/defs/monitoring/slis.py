"""Operational SLIs, one daily-partitioned asset per spec (``<spec>_operational_slis``): each partition gathers what
the instance, the registry and the warehouse recorded about its platform day and computes the SLIs with
:mod:`batch_platform.lib.slis`. Every SLI is a top-level numeric metadata entry and one markdown entry tables the
day; the day's values are kept in ``monitoring.operational_slis`` (:mod:`batch_platform.lib.sli_history`) and the
last 60 days charted, one panel per SLI, as an image the UI shows (served by the report server: Dagster's OSS UI
has no chart of metadata across partitions).

One asset per spec, like every stage below the features: model age, production gap, drift, promotions and training
are the spec's; run success and feature age are platform-wide and repeated in each, so one asset's chart is the
whole picture of one model. Reading history is this asset's job; the only thing it writes is its own SLI rows.

Automation: once a day, when the previous day is complete (its successor's batches published and loaded, by the
time model's service level), that day's partition is materialized. On the 2013 replay no such day is a partition.
"""

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from batch_platform import settings
from batch_platform.defs.feature_store.assets import FEATURE_DEFINITIONS_KEY
from batch_platform.defs.monitoring.assets import accuracy_key
from batch_platform.defs.monitoring.conditions import RawLayerLoaded
from batch_platform.defs.monitoring.history import check_evaluations
from batch_platform.defs.partitions import daily_partitions
from batch_platform.defs.registry.assets import champion_key
from batch_platform.defs.resources import ModelRegistryResource, WarehouseResource
from batch_platform.defs.scoring.assets import DRIFT_CHECK, predictions_key
from batch_platform.defs.training.models import GATE_CHECK, candidate_key, run_metadata
from batch_platform.lib import sli_history, slis
from batch_platform.lib.contracts import DAILY_CONTRACTS
from batch_platform.lib.monitoring import ACCURACY_TABLE
from batch_platform.lib.specs import ModelSpec, load_specs
from batch_platform.lib.time_model import load_time_model
from batch_platform.lib.warehouse import LOAD_HISTORY_TABLE, table_exists

GROUP = "monitoring"
HISTORY = 500  # check evaluations read per check (newest first): a few days' worth and more


def slis_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey([f"{spec.name}_operational_slis"])


def day_complete_local_time() -> str:
    """When yesterday is complete: the daily batches' latest publication plus the time to load them."""
    tm = load_time_model()
    published = max(tm.feed(c.table).published.local_time for c in DAILY_CONTRACTS)
    h, m = map(int, published.split(":"))
    minutes = h * 60 + m + round(tm.spec.service_levels.raw_loaded_within_hours * 60)
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


class PreviousDayDue(dg.AutomationCondition):
    """True for the partition of the day before the evaluation time's local date."""

    def __init__(self, timezone: str):
        self.timezone = timezone

    @property
    def name(self) -> str:
        return "previous_day_due"

    @property
    def description(self) -> str:
        return f"the day before today ({self.timezone})"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if context.partitions_def is None:
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        day = context.evaluation_time.astimezone(ZoneInfo(self.timezone)).date() - dt.timedelta(days=1)
        keys = set(context.partitions_def.get_partition_keys()) & {day.isoformat()}
        return dg.AutomationResult(context, true_subset=context.candidate_subset
                                   .compute_intersection_with_partition_keys(keys))


class AfterLocalTime(dg.AutomationCondition):
    """True (for every candidate partition) once the evaluation time's local time of day is ``at`` or later."""

    def __init__(self, at: str, timezone: str):
        self.at, self.timezone = at, timezone

    @property
    def name(self) -> str:
        return "after_local_time"

    @property
    def description(self) -> str:
        return f"after {self.at} ({self.timezone})"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        local = context.evaluation_time.astimezone(ZoneInfo(self.timezone))
        after = local.strftime("%H:%M") >= self.at
        return dg.AutomationResult(context, true_subset=context.candidate_subset if after
                                   else context.get_empty_subset())


def slis_due(timezone: str) -> dg.AutomationCondition:
    """Yesterday's partition, once, when today reaches the day-complete time (not at midnight: a partition that
    became yesterday overnight waits for this morning's loads)."""
    return (
        (PreviousDayDue(timezone) & AfterLocalTime(day_complete_local_time(), timezone)
         & RawLayerLoaded("raw")).newly_true()  # a fresh instance: once its history is loaded
        & ~dg.AutomationCondition.in_progress()
    ).with_label("slis_due")


def _warehouse_inputs(warehouse: WarehouseResource, spec: ModelSpec) -> tuple[list[slis.Load], list[slis.AccuracyRow]]:
    with warehouse.connect(read_only=True) as con:
        loads = []
        if table_exists(con, *LOAD_HISTORY_TABLE.split(".")):
            loads = [slis.Load(loaded, published) for loaded, published in con.execute(
                f"SELECT loaded_at, published_at FROM {LOAD_HISTORY_TABLE} "
                "WHERE loaded_at IS NOT NULL AND published_at IS NOT NULL").fetchall()]
        rows = []
        if table_exists(con, *ACCURACY_TABLE.split(".")):
            rows = [slis.AccuracyRow(*r) for r in con.execute(
                f"SELECT partition_date, model_version, value, validation_value, degradation, rows "
                f"FROM {ACCURACY_TABLE} WHERE spec = ?", [spec.name]).fetchall()]
    return loads, rows


def _ts(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def gather(instance: dg.DagsterInstance, registry, spec: ModelSpec, day: dt.date, days: slis.PlatformDays,
           accuracy: list[slis.AccuracyRow], now: dt.datetime) -> slis.DaySlis:
    """Everything the instance and the registry hold about ``day``, through :func:`slis.day_slis`."""
    window = days.window(day)
    runs = []
    if window is not None:
        start, end = window
        runs = [slis.RunRecord(r.dagster_run.run_id, r.dagster_run.status.value, r.create_timestamp)
                for r in instance.get_run_records(dg.RunsFilter(created_after=start, created_before=end))]
    end = window[1] if window else None
    built = instance.fetch_materializations(dg.AssetRecordsFilter(
        FEATURE_DEFINITIONS_KEY, before_timestamp=end.timestamp() if end else None), limit=1).records
    drift = next(({k: v.value for k, v in (ev.metadata or {}).items()}
                  for ev in check_evaluations(instance, predictions_key(spec), DRIFT_CHECK, limit=HISTORY)
                  if ev.metadata and ev.metadata.get("partition") and
                  ev.metadata["partition"].value == day.isoformat()), None)
    gates = [slis.GateEvaluation(int(ev.metadata["candidate_version"].value), ev.passed,
                                 _ts(ev.target_materialization_data.timestamp))
             for ev in check_evaluations(instance, candidate_key(spec), GATE_CHECK, limit=HISTORY)
             if ev.target_materialization_data is not None and "candidate_version" in (ev.metadata or {})]
    candidates = [md for r in runs if (md := run_metadata(instance, r.run_id, candidate_key(spec))) is not None]
    return slis.day_slis(
        spec.name, day, days=days, now=now, runs=runs,
        moves=[slis.AliasMove(e.alias, e.action, e.to_version, e.at) for e in registry.alias_history(spec.name)],
        created_at={v.version: v.created_at for v in registry.list_versions(spec.name)},
        feature_built_at=_ts(built[0].timestamp) if built else None, accuracy=accuracy, drift_check=drift,
        gates=gates, candidates=candidates)


def build_slis_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    timezone = load_time_model().spec.timezone

    @dg.asset(
        key=slis_key(spec),
        group_name=GROUP,
        kinds={"duckdb", "sqlite"},
        partitions_def=daily_partitions,
        deps=[predictions_key(spec), accuracy_key(spec), candidate_key(spec), champion_key(spec),
              FEATURE_DEFINITIONS_KEY],
        pool=settings.WAREHOUSE_POOL,
        automation_condition=slis_due(timezone),
        description=f"Operational SLIs of `{spec.name}` for one platform day (runs, promotions and trainings done "
        "while that data day was the newest loaded): pipeline success rate, model age, feature age, production vs "
        "validation gap, drift score, promotions attempted / failed, training time and peak memory. One numeric "
        f"metadata entry each and a table; the day's values are kept in `{sli_history.TABLE}` and the last 60 days "
        "charted (the `sli_plot` image, one panel per SLI).",
    )
    def _slis(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
              model_registry: ModelRegistryResource) -> dg.MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        loads, accuracy = _warehouse_inputs(warehouse, spec)
        days = slis.PlatformDays(loads, timezone)
        result = gather(context.instance, model_registry.registry(), spec, day, days, accuracy,
                        dt.datetime.now(dt.UTC))
        window = days.window(day)
        context.log.info(f"{spec.name} {day}: " + ", ".join(f"{k}={v}" for k, v in result.values.items()))
        with warehouse.connect() as con:
            sli_history.store(con, result, context.run.run_id)
            history = sli_history.series(con, spec.name, day)
        plot = sli_history.chart(history, Path(model_registry.artifacts_dir) / "slis" / spec.name / f"{day}.png",
                                 f"{spec.name}: operational SLIs through platform day {day}")
        try:
            shown = {"sli_plot_url": dg.MetadataValue.url(settings.report_url(plot)),
                     "sli_plot": dg.MetadataValue.md(f"![operational SLIs]({settings.report_url(plot)})")}
        except ValueError:  # artifacts outside the served folder: the file only
            shown = {"sli_plot_path": dg.MetadataValue.path(str(plot))}
        return dg.MaterializeResult(metadata={
            **shown,
            **result.numeric(),
            "champion_version": result.values["champion_version"] or 0,
            "production_gap_flight_day": result.values["production_gap_flight_day"] or "",
            "day_window": (f"{window[0].isoformat()} .. {window[1].isoformat() if window[1] else 'now'}"
                           if window else "never the current data day"),
            "slis": dg.MetadataValue.md(result.markdown()),
        })

    return _slis


@dg.definitions
def operational_slis() -> dg.Definitions:
    return dg.Definitions(assets=[build_slis_asset(spec) for spec in load_specs().values()])
