"""Candidate models, one per spec: LightGBM trained on the training-set snapshot built in the same run, saved as
LightGBM text with its sha256, registered as a new version, and gated against the champion by a blocking check.
Training reads the snapshot out of core (``training.train_snapshot``); the evaluation and the gate read the windows
they score (``snapshot_matrix.read_windows``), one at a time; the drift reference reads the train window a row group
at a time (``snapshot_matrix.window_parts``)."""

import base64
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from batch_platform import settings
from batch_platform.defs.features.project import dbt_project
from batch_platform.defs.monitoring.conditions import with_its_asset
from batch_platform.defs.resources import DaskResource, ModelRegistryResource
from batch_platform.defs.training.assets import training_set_key
from batch_platform.lib import (artifacts, drift, evaluation, faults, model_ops, performance_estimate, resource_usage,
                                snapshot_matrix, training)
from batch_platform.lib.specs import ModelSpec, load_specs
from batch_platform.lib.training_set import LABEL, SPLIT

GROUP = "models"
GATE_CHECK = "gate_vs_champion"


class TrainingConfig(dg.Config):
    n_trials: int = Field(default=2, description="Hyper-parameter search budget (parameter sets tried).")
    max_rounds: int = Field(default=300, description="Boosting rounds at most (early stopping on validation).")
    seed: int = Field(default=13, description="Seed for LightGBM and the search.")
    num_threads: int = Field(default=2, description="LightGBM threads (fixed for reproducibility).")


def candidate_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey([f"{spec.name}_candidate_model"])


def run_metadata(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> dict | None:
    """The metadata of ``key``'s materialization in run ``run_id`` (the newest, if several); ``None`` if the run
    did not materialize it. Steps read what *this* run produced upstream, never "the latest materialization",
    which another run may have replaced meanwhile."""
    for record in reversed(instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)):
        mat = record.asset_materialization
        if mat is not None and mat.asset_key == key:
            return {k: v.value for k, v in mat.metadata.items()}
    return None


class GateConfig(dg.Config):
    version: int = Field(default=0, description="Run on its own (without its candidate): the candidate version to "
                         "judge. 0: the candidate materialized in the same run.")


def gated_version(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey, config: GateConfig) -> int:
    """The candidate version the gate judges, passed explicitly: the one materialized in this run (the jobs and
    automation run the check with its candidate), else the one named in its config (the check run on its own).
    Never "the newest materialization", which a concurrent run may have replaced meanwhile."""
    md = run_metadata(instance, run_id, key)
    if md is not None:
        if config.version and config.version != md["version"]:
            raise dg.Failure(f"{key.to_user_string()} v{md['version']} was trained in this run; config names "
                             f"v{config.version}")
        return int(md["version"])
    if not config.version:
        raise dg.Failure(f"{key.to_user_string()} was not materialized in this run: run the check with its candidate, "
                         "or name the version to judge (config: version)")
    return config.version


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _image_markdown(paths: dict) -> str:
    parts = []
    for name, path in paths.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"**{name.replace('_', ' ')}**\n\n![{name}](data:image/png;base64,{data})\n")
    return "\n".join(parts)


def _metric_entries(metrics: dict[str, dict]) -> dict[str, float | int]:
    """Each window's scalar metrics as top-level numeric entries (``test_roc_auc``, ``validation_positive_rate``,
    ``test_rows``, ...): comparable across materializations in the Events tab and through the GraphQL API."""
    return {f"{window}_{name}": value for window in ("validation", "test")
            for name, value in metrics[window].items() if isinstance(value, int | float)}


def _plot_entries(paths: dict[str, Path]) -> dict[str, dg.MetadataValue]:
    """A URL entry per plot (``plot_<name>_url``) served by ``batch_platform.lib.report_server``, and one short
    markdown entry showing them as images, which the UI renders inline (a data-URL image is too long for that and
    sits behind "Show Markdown"). Nothing when the plots are outside the served artifacts dir."""
    try:
        urls = {name: settings.report_url(path) for name, path in paths.items()}
    except ValueError:
        return {}
    images = "\n\n".join(f"![{name}]({url})" for name, url in urls.items())
    return {f"plot_{name}_url": dg.MetadataValue.url(url) for name, url in urls.items()} | {
        "plot_images": dg.MetadataValue.md(images)}


def build_candidate_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    key = candidate_key(spec)

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"lightgbm"},
        deps=[training_set_key(spec)],
        description=f"LightGBM candidate for `{spec.name}` trained on the training-set snapshot built in the same run: "
        f"time-based windows, early stopping on the validation window, bounded seeded search; text format + "
        f"sha256, registered as a new version. Promotion needs the `{GATE_CHECK}` check to pass.",
    )
    def _candidate(context: dg.AssetExecutionContext, config: TrainingConfig, model_registry: ModelRegistryResource,
                   dask: DaskResource):
        ts_md = run_metadata(context.instance, context.run.run_id, training_set_key(spec))
        if ts_md is None:
            raise dg.Failure(f"{key.to_user_string()} trains on the training set built in the same run: select "
                             f"{training_set_key(spec).to_user_string()} too (jobs train_gate_promote and "
                             "train_and_gate do)")
        # wall time and peak RSS of the training step itself, sampled while it runs (the process may have run
        # other steps before: its lifetime peak would not say what training took); trained out of core from the
        # snapshot file (memory grows with the binned dataset, not the frame); on the Dask cluster when one is
        # configured (LightGBM's data-parallel learner over the same snapshot, the same search, the same bins)
        train_config = training.TrainConfig(n_trials=config.n_trials, max_rounds=config.max_rounds, seed=config.seed,
                                            num_threads=config.num_threads)
        with resource_usage.PeakRss() as usage, dask.client() as cluster:
            if cluster is None:
                trained = training.train_snapshot(Path(ts_md["snapshot"]), spec, train_config)
            else:
                from batch_platform.lib import dask_training

                trained = dask_training.train_on_dask(Path(ts_md["snapshot"]), spec, cluster, train_config,
                                                       on_wait=context.log.info)
        # the windows scored below, read a window at a time (never the whole set)
        evaluated = snapshot_matrix.read_windows(Path(ts_md["snapshot"]), ("validation", "test"))
        model_dir = Path(model_registry.artifacts_dir) / "models" / spec.name
        path, sha = artifacts.save_model_text(trained.model_text, model_dir)
        faults.point("train.model_saved")
        booster = training.load_booster(trained.model_text)
        test = evaluated[evaluated[SPLIT] == "test"]
        val = evaluated[evaluated[SPLIT] == "validation"]
        p_test = training.score(booster, test, trained.categorical)
        p_val = training.score(booster, val, trained.categorical)
        regression = spec.is_regression
        metrics = {
            "validation": evaluation.metrics(val[LABEL].to_numpy(), p_val, regression=regression),
            "test": evaluation.metrics(test[LABEL].to_numpy(), p_test, regression=regression),
            "search": trained.trials,
        }
        if not regression:  # (a regression score is its own estimate: no performance estimate before labels)
            # Frozen with the version: raw score -> P(label), for the performance estimated before labels.
            metrics[performance_estimate.CALIBRATION] = performance_estimate.fit_calibration(
                pd.concat([val[LABEL], test[LABEL]]).to_numpy(), np.r_[p_val, p_test],
                window="validation+test").to_json()
        fingerprint = training.model_fingerprint(
            trained,
            training_set_fingerprint=ts_md["data_fingerprint"],
            feature_definitions=ts_md["feature_definitions_fingerprint"],
            dbt_manifest=training.dbt_manifest_hash(dbt_project.manifest_path),
            commit=training.git_commit(settings.REPO_ROOT),
            spec_fingerprint=spec.fingerprint,
        ) | {"training_set_snapshot": ts_md["snapshot"], "training_cutoff": ts_md["training_cutoff"]}
        # The drift reference is frozen now and stored with the version (path + sha256 in its fingerprint).
        del evaluated, val  # (the test window stays: its plots are drawn below)
        # the train window read a row group at a time (its rows grow with the data; the reference keeps a sample)
        train_total, train_parts = snapshot_matrix.window_parts(Path(ts_md["snapshot"]), ("train",))
        days = snapshot_matrix.column_range(Path(ts_md["snapshot"]), ("train",), spec.label.date_column)
        reference = drift.build_reference_in_parts(
            train_parts, train_total, booster.feature_name(), trained.categorical,
            lambda part: training.score(booster, part, trained.categorical), rows=spec.monitoring.drift.reference_rows,
            exclude=spec.monitoring.drift.exclude,
            source={"spec": spec.name, "split": "train", "first_day": str(days[0]), "last_day": str(days[1]),
                    "model_sha256": sha},
        )
        ref_path, ref_sha = drift.save_reference(reference, Path(model_registry.artifacts_dir) / "drift_references"
                                                 / spec.name)
        fingerprint |= {"drift_reference": str(ref_path), "drift_reference_sha256": ref_sha}
        registry = model_registry.registry()
        # Same data, same code, same params → the same bytes (training is reproducible): reuse that version
        # instead of registering a duplicate.
        existing = [v for v in registry.list_versions(spec.name) if v.sha256 == sha]
        version = existing[-1] if existing else registry.register_version(
            spec.name, artifact_path=path, sha256=sha, fingerprint=fingerprint, metrics=metrics, run_id=context.run.run_id)
        faults.point("train.registered")
        plots = evaluation.write_plots(test[LABEL].to_numpy(), p_test, booster,
                                       model_dir / f"v{version.version}", f"{spec.name} v{version.version} (test)",
                                       regression=regression)
        context.log.info(f"{spec.name} v{version.version}: test {spec.gate.metric} "
                         f"{metrics['test'].get(spec.gate.metric)}, sha256 {sha[:12]}")
        return dg.MaterializeResult(
            metadata={
                "version": version.version,
                "new_version": not existing,
                "sha256": sha,
                "artifact": dg.MetadataValue.path(str(path)),
                **_metric_entries(metrics),
                f"test_{spec.gate.metric}": metrics["test"].get(spec.gate.metric, float("nan")),
                f"validation_{spec.gate.metric}": trained.validation_metric,
                "test_metrics": dg.MetadataValue.json(metrics["test"]),
                "best_iteration": trained.best_iteration,
                "training_seconds": usage.seconds,
                "trained_on": dask.runs_on,
                "peak_memory_mb": usage.peak_mb,
                "training_memory_increase_mb": usage.increase_mb,
                "search": dg.MetadataValue.json(trained.trials),
                "fingerprint": dg.MetadataValue.json(fingerprint),
                "plots": dg.MetadataValue.md(_image_markdown(plots)),
                "plot_files": dg.MetadataValue.json({k: str(v) for k, v in plots.items()}),
                **_plot_entries(plots),
            }
        )

    @dg.asset_check(asset=key, name=GATE_CHECK, blocking=True, automation_condition=with_its_asset(),
                    description=f"Candidate vs champion on the same most-recent test window: {spec.gate.metric} "
                    f"better with a paired-bootstrap CI excluding a loss over {spec.gate.tolerance}; no slice of "
                    f"{list(spec.gate.slices)} worse by over {spec.gate.max_slice_degradation}; first model: "
                    f"floor {spec.gate.floor}.")
    def _gate(context: dg.AssetCheckExecutionContext, config: GateConfig,
              model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
        registry = model_registry.registry()
        candidate = registry.get_version(spec.name, gated_version(context.instance, context.run.run_id, key, config))
        # the gate scores the test window only (model_ops.test_window)
        window = snapshot_matrix.read_windows(Path(candidate.fingerprint["training_set_snapshot"]), ("test",))
        report = model_ops.gate_candidate(spec, window, candidate, registry)
        registry.attach_gate_report(spec.name, candidate.version, report)
        report_path = Path(model_registry.artifacts_dir) / "models" / spec.name / \
            f"v{candidate.version}" / "gate_report.json"
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2))
        if (report["passed"] and report["champion_version"] not in (None, candidate.version)
                and registry.aliases(spec.name).get(model_ops.CHALLENGER) != candidate.version):
            # A candidate that beat the champion becomes the challenger (logged in the alias history; shadow-scored
            # until promoted). Promotion itself is the champion asset's job.
            registry.set_alias(spec.name, model_ops.CHALLENGER, candidate.version, run_id=context.run.run_id,
                               reason=f"gate passed vs champion v{report['champion_version']}")
        vs = f"champion v{report['champion_version']}" if report["champion_version"] else f"floor {spec.gate.floor}"
        return dg.AssetCheckResult(
            passed=bool(report["passed"]),
            severity=dg.AssetCheckSeverity.ERROR,
            description=(f"v{candidate.version} vs {vs}: {spec.gate.metric} difference "
                         f"{_fmt(report['difference'])} [{_fmt(report['ci_low'])}, {_fmt(report['ci_high'])}]"
                         + ("" if report["passed"] else " — " + "; ".join(report["reasons"]))),
            metadata={
                "candidate_version": candidate.version,
                "champion_version": report["champion_version"] or 0,
                "difference": _num(report["difference"]),
                "ci_low": _num(report["ci_low"]),
                "ci_high": _num(report["ci_high"]),
                "reasons": dg.MetadataValue.json(report["reasons"]),
                "slices": dg.MetadataValue.json(report["slices"]),
                "report": dg.MetadataValue.path(str(report_path)),
            },
        )

    return _candidate, _gate


@dg.definitions
def candidate_models() -> dg.Definitions:
    built = [build_candidate_asset(spec) for spec in load_specs().values()]
    return dg.Definitions(assets=[a for a, _ in built], asset_checks=[c for _, c in built])
