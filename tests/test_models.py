"""Training, gating and the registry on the session platform's real training sets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from batch_platform import run_health, settings
from batch_platform.defs.registry.assets import promote_version, rollback_version
from batch_platform.lib import artifacts, model_ops, training
from batch_platform.lib.registry import ModelRegistry, PromotionRefused, RollbackRefused
from batch_platform.lib.specs import load_specs
from batch_platform.lib.training_set import LABEL, SPLIT

REPO = Path(__file__).resolve().parent.parent
FAST = training.TrainConfig(n_trials=1, max_rounds=150)


@pytest.fixture(autouse=True)
def _env(on_platform):
    return on_platform


@pytest.fixture
def spec():
    return load_specs()["flight_delay"]


@pytest.fixture
def frame(platform):
    event = platform["instance"].get_latest_materialization_event(dg.AssetKey(["flight_delay_training_set"]))
    return pd.read_parquet(event.asset_materialization.metadata["snapshot"].value)


def register(registry: ModelRegistry, spec, trained: training.TrainedModel, tmp_path: Path, tag: str):
    path, sha = artifacts.save_model_text(trained.model_text, tmp_path / "models")
    return registry.register_version(spec.name, artifact_path=path, sha256=sha, run_id=tag, metrics={},
                                     fingerprint={"categorical": trained.categorical,
                                                  "training_set_snapshot": str(tmp_path / "snapshot.parquet")})


def gate_and_promote(registry, spec, frame, version):
    report = model_ops.gate_candidate(spec, frame, version, registry, n_bootstrap=300)
    registry.attach_gate_report(spec.name, version.version, report)
    try:
        registry.promote(spec.name, version.version, gate_report=report, run_id="test")
        return report, True
    except PromotionRefused:
        return report, False


def test_first_champions_were_trained_gated_and_promoted(platform):
    registry = ModelRegistry(platform["env"][settings.REGISTRY_VAR])
    for name in ("flight_delay", "flight_cancellation", "flight_long_delay"):
        champion = registry.get_alias(name, "champion")
        assert champion is not None and champion.version == 1
        assert champion.gate_report["passed"] is True and champion.gate_report["champion_version"] is None
        (event,) = registry.alias_history(name, "champion")
        assert event.action == "promote" and event.to_version == 1 and event.gate_report["passed"]
        assert event.run_id == platform["train_result"].run_id
        fp = champion.fingerprint
        assert {"training_set", "feature_definitions", "dbt_manifest", "git_commit", "params", "libraries"} <= set(fp)
        assert fp["params"]["deterministic"] and fp["params"]["force_row_wise"]
        assert artifacts.sha256_file(champion.artifact_path) == champion.sha256
        assert champion.artifact_path.read_text().startswith("tree\n")  # LightGBM text format, not a pickle
        md = platform["instance"].get_latest_materialization_event(
            dg.AssetKey([f"{name}_candidate_model"])).asset_materialization.metadata
        for plot in ("roc", "precision_recall", "calibration", "feature_importance"):
            assert Path(md["plot_files"].value[plot]).stat().st_size > 1000
        assert "data:image/png;base64" in md["plots"].value
        # visible without opening the markdown: each plot's URL on the report server, and short markdown showing
        # them (the UI renders markdown under 1000 characters inline)
        for plot, path in md["plot_files"].value.items():
            assert md[f"plot_{plot}_url"].value == settings.report_url(path)
            assert f"({settings.report_url(path)})" in md["plot_images"].value
        assert len(md["plot_images"].value) < 1000
        # scalar metrics as numeric entries, charted across materializations in the Plots tab
        for window in ("validation", "test"):
            for metric in ("roc_auc", "average_precision", "log_loss", "brier", "positive_rate", "rows"):
                assert isinstance(md[f"{window}_{metric}"], dg.FloatMetadataValue | dg.IntMetadataValue)
        assert md["test_rows"].value > 0 and 0 < md["test_positive_rate"].value < 1
    assert registry.consistency_problems() == []


def test_candidate_uses_time_windows_and_scores_the_same_categories(frame, spec):
    trained = training.train(frame, spec, FAST)
    assert "carrier" in trained.categorical and "origin" in trained.categorical
    booster = training.load_booster(trained.model_text)
    test = frame[frame[SPLIT] == "test"].copy()
    p = training.score(booster, test)  # categoricals read back from the model text
    # the same rows with categories declared in another order and an unseen carrier score identically
    shuffled = test.copy()
    shuffled["carrier"] = pd.Categorical(shuffled["carrier"], categories=sorted(set(shuffled["carrier"]))[::-1])
    assert np.allclose(training.score(booster, shuffled), p)
    unseen = test.head(50).copy()
    unseen["carrier"] = "ZZ"
    assert np.all(np.isfinite(training.score(booster, unseen)))


def test_the_search_reuses_one_binned_dataset_and_gets_each_trials_own_model(frame, spec):
    """One Dataset serves every trial: each trial's model equals ``lgb.train`` on a Dataset of its own."""
    import lightgbm as lgb

    config = training.TrainConfig(n_trials=3, max_rounds=60)
    trained = training.train(frame, spec, config)
    assert len(trained.trials) == 3
    rows = training._sorted(frame, spec)
    features, categorical = training.feature_columns(spec, rows)
    fit, val = rows[rows[SPLIT] == "train"], rows[rows[SPLIT] == "validation"]
    X_fit = training.prepare_matrix(fit, features, categorical)
    X_val = training.prepare_matrix(val, features, categorical, {c: list(X_fit[c].cat.categories) for c in categorical})
    for trial in trained.trials:
        params = {**training._base_params(spec, config), **trial["params"]}
        dtrain = lgb.Dataset(X_fit, label=fit[LABEL].to_numpy(), categorical_feature=categorical)
        booster = lgb.train(params, dtrain, num_boost_round=config.max_rounds,
                            valid_sets=[lgb.Dataset(X_val, label=val[LABEL].to_numpy(), reference=dtrain)],
                            valid_names=["validation"],
                            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])
        assert booster.best_iteration == trial["best_iteration"]
        assert booster.best_score["validation"][params["metric"]] == trial["validation_metric"]
    best = max(trained.trials, key=lambda t: t["validation_metric"])
    assert trained.validation_metric == best["validation_metric"]


def test_label_shuffled_challengers_are_never_promoted(frame, spec, tmp_path):
    registry = ModelRegistry(tmp_path / "registry.db")
    champion = register(registry, spec, training.train(frame, spec, FAST), tmp_path, "champion")
    report, promoted = gate_and_promote(registry, spec, frame, champion)
    assert promoted, report["reasons"]
    rejected = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        shuffled = frame.copy()
        fit = shuffled[SPLIT] != "test"  # the test window keeps its true labels: that is what the gate measures
        shuffled.loc[fit, LABEL] = rng.permutation(shuffled.loc[fit, LABEL].to_numpy())
        challenger = register(registry, spec, training.train(shuffled, spec, training.TrainConfig(
            n_trials=1, max_rounds=150, seed=seed)), tmp_path, f"shuffled-{seed}")
        report, promoted = gate_and_promote(registry, spec, frame, challenger)
        rejected += not promoted
        assert registry.get_alias(spec.name, "champion").version == champion.version
    assert rejected == 10


def test_a_genuinely_better_challenger_is_promoted(frame, spec, tmp_path):
    # The gate resamples whole test days: 4 January days leave an interval too wide to tell anything (-0.02 ..
    # +0.25 for this pair). Here the test window is 8 days: the 4 validation days join it, and early stopping uses
    # the last 2 training days instead.
    frame = frame.copy()
    last_two = sorted(set(frame.loc[frame[SPLIT] == "train", spec.label.date_column]))[-2:]
    frame.loc[frame[SPLIT] == "validation", SPLIT] = "test"
    frame.loc[frame[spec.label.date_column].isin(last_two), SPLIT] = "validation"
    spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"slices": ["origin"]})})
    registry = ModelRegistry(tmp_path / "registry.db")
    # a weak champion: day_of_year and distance are the only features it sees
    features, _ = training.feature_columns(spec, frame)
    dropped = [c for c in features if c not in ("day_of_year", "distance")]
    weak = register(registry, spec, training.train(frame.drop(columns=dropped), spec, FAST), tmp_path, "weak")
    report, promoted = gate_and_promote(registry, spec, frame, weak)
    assert not promoted  # the weak model does not reach the spec's floor as a first model...
    # ...so make it the incumbent directly (test set-up: an old champion from before the floor was raised)
    registry.promote(spec.name, weak.version, gate_report={"passed": True, "candidate_version": weak.version,
                                                           "champion_version": None}, run_id="setup")
    strong = register(registry, spec, training.train(frame, spec, FAST), tmp_path, "strong")
    report, promoted = gate_and_promote(registry, spec, frame, strong)
    assert promoted, report["reasons"]
    assert report["champion_version"] == weak.version and report["difference"] > 0
    assert report["ci_low"] > -spec.gate.tolerance and report["resampling"] == "day_blocks" and report["n_blocks"] == 8
    assert registry.get_alias(spec.name, "champion").version == strong.version


def test_tampered_artefact_is_refused_at_load_and_for_rollback(frame, spec, tmp_path):
    registry = ModelRegistry(tmp_path / "registry.db")
    frame.to_parquet(tmp_path / "snapshot.parquet")
    v1 = register(registry, spec, training.train(frame, spec, FAST), tmp_path, "v1")
    gate_and_promote(registry, spec, frame, v1)
    v2 = register(registry, spec, training.train(frame, spec, training.TrainConfig(
        n_trials=1, max_rounds=150, seed=7)), tmp_path, "v2")
    registry.attach_gate_report(spec.name, v2.version, {"passed": True, "candidate_version": v2.version,
                                                        "champion_version": v1.version})
    promote_version(registry, spec.name, v2.version, "run-2", "test")
    history = registry.alias_history(spec.name)

    data = bytearray(v1.artifact_path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte changed
    v1.artifact_path.write_bytes(bytes(data))
    with pytest.raises(artifacts.ArtifactIntegrityError, match=v1.sha256[:12]):
        model_ops.load_model(v1)
    with pytest.raises(RollbackRefused):
        rollback_version(registry, spec.name, v1.version, "run-3", "test")
    assert registry.get_alias(spec.name, "champion").version == v2.version
    assert registry.alias_history(spec.name) == history

    # with the artefact restored the same rollback goes through, verified and logged
    data[len(data) // 2] ^= 0x01
    v1.artifact_path.write_bytes(bytes(data))
    event = rollback_version(registry, spec.name, v1.version, "run-4", "restore")
    assert (event.action, event.from_version, event.to_version) == ("rollback", v2.version, v1.version)
    assert registry.consistency_problems() == []


RETRAIN = """
import sys, hashlib, pandas as pd
from batch_platform.lib import training
from batch_platform.lib.specs import load_specs
frame = pd.read_parquet(sys.argv[1])
spec = load_specs()["flight_delay"]
trained = training.train(frame, spec, training.TrainConfig(**__import__("json").loads(sys.argv[2])))
print(hashlib.sha256(trained.model_text.encode()).hexdigest())
"""


def test_retraining_from_the_recorded_snapshot_reproduces_the_sha256(platform):
    registry = ModelRegistry(platform["env"][settings.REGISTRY_VAR])
    champion = registry.get_alias("flight_delay", "champion")
    snapshot = champion.fingerprint["training_set_snapshot"]
    params = {"n_trials": 2, "max_rounds": 300, "seed": 13, "num_threads": 2}  # the candidate asset's defaults
    shas = []
    for _ in range(3):  # fresh processes: nothing shared but the snapshot file
        out = subprocess.run([sys.executable, "-c", RETRAIN, snapshot, json.dumps(params)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        shas.append(out.stdout.strip().splitlines()[-1])
    assert shas == [champion.sha256] * 3


def test_cli_models_list_show_promote_rollback(platform, tmp_path, monkeypatch):
    registry_copy = tmp_path / "registry.db"
    shutil.copy(platform["env"][settings.REGISTRY_VAR], registry_copy)
    monkeypatch.setenv(settings.REGISTRY_VAR, str(registry_copy))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    registry = ModelRegistry(registry_copy)
    spec = load_specs()["flight_delay"]
    v1 = registry.get_alias(spec.name, "champion")
    # a second version whose gate passed, registered as the candidate asset would
    v2 = registry.register_version(spec.name, artifact_path=v1.artifact_path, sha256=v1.sha256,
                                   fingerprint=v1.fingerprint, metrics=v1.metrics, run_id="test")
    cli = str(Path(sys.executable).parent / "batch-platform")

    def run(*args):
        return subprocess.run([cli, *args], capture_output=True, text=True, timeout=300, cwd=REPO)

    # a run SIGKILLed earlier (it stays STARTED): the first models command marks it failed
    marker = tmp_path / "holding"
    holder = subprocess.Popen([sys.executable, "-m", "tests.pool_holder", str(marker), "600"], cwd=REPO,
                              env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert holder.poll() is None and time.monotonic() < deadline, "the holder never started its run"
        time.sleep(0.2)
    holder.kill()
    holder.wait()
    with dg.DagsterInstance.get() as instance:
        [killed] = instance.get_runs()
        assert killed.status == dg.DagsterRunStatus.STARTED

    refused = run("models", "promote", spec.name, str(v2.version))
    assert refused.returncode == 1 and "no gate report" in refused.stdout
    assert f"repaired: run {killed.run_id[:8]} (hold_pool, STARTED): its process" in refused.stderr, refused.stderr
    # a report judged before v1 was champion is stale: a named refusal, nothing moves
    registry.attach_gate_report(spec.name, v2.version, {"passed": True, "candidate_version": v2.version,
                                                        "champion_version": None})
    stale = run("models", "promote", spec.name, str(v2.version))
    assert stale.returncode == 1 and "StaleGateReport" in stale.stdout and "gate v2 again" in stale.stdout, stale.stdout
    assert registry.get_alias(spec.name, "champion").version == v1.version
    registry.attach_gate_report(spec.name, v2.version, {"passed": True, "candidate_version": v2.version,
                                                        "champion_version": v1.version})
    ok = run("models", "promote", spec.name, str(v2.version), "--reason", "cli test")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert registry.get_alias(spec.name, "champion").version == v2.version
    back = run("models", "rollback", spec.name, str(v1.version), "--reason", "cli rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert registry.get_alias(spec.name, "champion").version == v1.version
    listing = run("models", "list")
    assert listing.returncode == 0 and "champion" in listing.stdout and spec.name in listing.stdout
    show = run("models", "show", spec.name)
    assert "rollback" in show.stdout and "cli rollback" in show.stdout
    # the CLI ran the Dagster jobs, recorded in the instance with the process that ran them (a run killed with its
    # process is then known dead); the killed run was marked failed
    with dg.DagsterInstance.get() as instance:
        runs = [r for r in instance.get_runs() if r.run_id != killed.run_id]
        assert sorted((r.job_name, r.is_success) for r in runs) == [
            ("models_promote", False), ("models_promote", False), ("models_promote", True), ("models_rollback", True)]
        assert all(run_health.run_process(r) is not None for r in runs)
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE


def test_a_candidate_trains_only_on_the_training_set_of_its_own_run(platform):
    """Materialized without its training set, the candidate refuses rather than picking up whatever training set
    another run materialized last."""
    from batch_platform.defs.training.models import candidate_key

    spec = load_specs()["flight_delay"]
    result = platform["defs"].resolve_job_def("train_gate_promote").execute_in_process(
        instance=platform["instance"], raise_on_error=False, asset_selection=[candidate_key(spec)])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "training set built in the same run" in failure.step_failure_data.user_failure_data.description
