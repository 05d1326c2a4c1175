"""Automation conditions of the daily cycle, built from Dagster's own operands plus two of ours:

- :class:`PartitionDue`: the single partition a time-driven stage works on at the tick's evaluation time, by the
  time model and the spec (:mod:`batch_platform.lib.cycle`). Everything time-partitioned is gated on it, so
  automation never targets history: a stale asset re-runs its due partition, not the 365 before it.
- :class:`RawLayerLoaded`: the feature project is first built once every raw table has been loaded.

They run Python, so the automation sensor that evaluates the conditions runs in the code location
(``use_user_code_server=True``), like any other sensor of ours. Every check has a condition too (a dbt test with
its model, a source's tests with the feature build, the gate with its candidate): once one check of a run is
requested explicitly, Dagster leaves out the checks that have none.
"""

from __future__ import annotations

import warnings

import dagster as dg

from batch_platform.lib import cycle
from batch_platform.lib.specs import ModelSpec

PREDICTIONS = "predictions"
ACCURACY = "production_accuracy"


class PartitionDue(dg.AutomationCondition):
    """True for the partition of ``stage`` that is due at the evaluation time (predictions: the flight day whose
    cutoff has passed and which has not begun; production accuracy: the newest day with final labels)."""

    def __init__(self, stage: str, spec: ModelSpec):
        if stage not in (PREDICTIONS, ACCURACY):
            raise ValueError(f"unknown stage {stage!r}")
        self.stage, self.spec = stage, spec

    @property
    def name(self) -> str:
        return f"{self.stage}_due({self.spec.name})"

    @property
    def description(self) -> str:
        spec = self.spec
        if self.stage == PREDICTIONS:
            return (f"the flight day whose prediction cutoff ({spec.cutoff.days_before} day(s) before, "
                    f"{spec.cutoff.local_time}) has passed and which has not begun")
        return (f"the newest day whose labels are final ({spec.label.embargo_days} day(s) after, "
                f"{spec.label.final_local_time})")

    def due_day(self, now):
        if self.stage == PREDICTIONS:
            return cycle.prediction_due_day(self.spec, now)
        return cycle.accuracy_due_day(self.spec, now)

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        day = self.due_day(context.evaluation_time)
        if day is None or context.partitions_def is None:
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        true = context.candidate_subset.compute_intersection_with_partition_keys({day.isoformat()})
        return dg.AutomationResult(context, true_subset=true)


def inputs_settled() -> dg.AutomationCondition:
    """No dependency is missing, running, or about to be requested on this tick (wait for it to land instead)."""
    return (
        ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
        & ~dg.AutomationCondition.in_progress()
    ).with_label("inputs_settled")


class RawLayerLoaded(dg.AutomationCondition):
    """True once every raw table has been loaded at least once (a daily table: any partition). The feature project
    is first built in one run over a complete raw layer — its models and tests read each other (relationships
    tests, the load log joined with every table) — and rebuilt in parts after that. Dagster's ``any_deps_missing``
    cannot say this: it asks for *all* partitions of a daily table, which always misses its future ones."""

    def __init__(self, raw_group: str):
        self.raw_group = raw_group

    @property
    def name(self) -> str:
        return "raw_layer_loaded"

    @property
    def description(self) -> str:
        return f"every asset of group {self.raw_group!r} has been loaded at least once"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if context.candidate_subset.is_empty:  # evaluated last in its AND: most ticks ask nothing of the storage
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        graph = context.asset_graph
        raw = [k for k in graph.get_all_asset_keys()
               if graph.get(k).is_materializable and graph.get(k).group_name == self.raw_group]
        records = context.asset_graph_view.instance.get_asset_records(raw)  # one query for the whole layer
        loaded = bool(raw) and len(records) == len(raw) and all(
            r.asset_entry.last_materialization_record is not None for r in records)
        return dg.AutomationResult(context, true_subset=context.candidate_subset if loaded
                                   else context.get_empty_subset())


def source_test_due() -> dg.AutomationCondition:
    """A dbt test of a raw source: once after its raw table updated, with the feature build that reads it."""
    return upstream_updated().with_label("source_test_due")


def with_its_asset() -> dg.AutomationCondition:
    """A check requested with the asset it checks, once every table it reads exists (a relationships test also reads
    the model it refers to). Automation requests checks explicitly once any check of a run is: a check without a
    condition of its own would then be left out."""
    return (dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
            & ~dg.AutomationCondition.any_deps_missing()).with_label("with_its_asset")


def never_built() -> dg.AutomationCondition:
    """Never materialized and not requested since (a failed first build is not retried every tick: it shows in the
    UI until someone runs it). Unlike ``missing().newly_true()``, also true on the sensor's first tick."""
    return (dg.AutomationCondition.missing()
            & ~dg.AutomationCondition.newly_requested().since(dg.AutomationCondition.newly_updated())
            ).with_label("never_built")


def built_from_inputs(raw_group: str) -> dg.AutomationCondition:
    """For unpartitioned assets built from raw tables (dbt models, seeds, Feast): built once the raw layer is
    loaded (:class:`RawLayerLoaded`: the first build is one run), rebuilt when an input updates (or is requested on
    this tick, so a chain runs as one run), never while an input is being built. Sources Dagster does not build
    (the load log, written with every raw load) are not waited for."""
    with warnings.catch_warnings():  # include_sources is a beta parameter; the selection is what we mean
        warnings.simplefilter("ignore", dg.BetaWarning)
        sources = dg.AssetSelection.all(include_sources=True) - dg.AssetSelection.all()
    raw_and_sources = dg.AssetSelection.groups(raw_group) | sources
    return (
        (dg.AutomationCondition.any_deps_updated().since_last_handled() | never_built())
        & ~dg.AutomationCondition.any_deps_missing().ignore(raw_and_sources)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & RawLayerLoaded(raw_group)
    ).with_label("built_from_inputs")


def upstream_updated() -> dg.AutomationCondition:
    """When a dependency updated (or is requested on this tick, so a chain runs as one) and none is running."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("upstream_updated")


def first_build() -> dg.AutomationCondition:
    """Once, when the asset has never been materialized and all its inputs exist (e.g. the first training set on a
    fresh instance); later builds are someone's decision (the retrain sensor, a user)."""
    return (
        never_built()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("first_build")


def _due_partition(due: PartitionDue, *, rebuilt: dg.AssetKey, rebuilt_label: str, since_cron: str, timezone: str,
                   label: str) -> dg.AutomationCondition:
    """The due partition once its inputs are settled and ``rebuilt`` was updated after the latest ``since_cron``
    tick; again within the window when an input changes."""
    return (
        due
        & inputs_settled()
        & dg.AutomationCondition.any_deps_match(
            dg.AutomationCondition.newly_updated().since(dg.AutomationCondition.cron_tick_passed(since_cron, timezone))
        ).allow(dg.AssetSelection.assets(rebuilt)).with_label(rebuilt_label)
        & (due.newly_true() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    ).with_label(label)


def predictions_due(spec: ModelSpec, *, features: dg.AssetKey, publication_cron: str,
                    timezone: str) -> dg.AutomationCondition:
    """The due flight day is scored once its inputs are in — the day's schedule batch, a champion, and the features
    rebuilt since this morning's publication — and scored again within its window when one of them changes (a
    promotion, a late batch). The champion is not required to have changed."""
    return _due_partition(PartitionDue(PREDICTIONS, spec), rebuilt=features,
                          rebuilt_label="features_rebuilt_since_publication", since_cron=publication_cron,
                          timezone=timezone, label=f"predictions_due({spec.name})")


def accuracy_due(spec: ModelSpec, *, labels: dg.AssetKey, final_cron: str, timezone: str) -> dg.AutomationCondition:
    """The newest day with final labels, once its predictions exist and the label table was rebuilt after the
    labels became final."""
    return _due_partition(PartitionDue(ACCURACY, spec), rebuilt=labels, rebuilt_label="labels_rebuilt_since_final",
                          since_cron=final_cron, timezone=timezone, label=f"accuracy_due({spec.name})")
