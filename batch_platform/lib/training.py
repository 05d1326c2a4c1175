"""LightGBM training on a point-in-time training set: time-based windows, early stopping on the validation
window, a bounded seeded hyper-parameter search, reproducible by construction.

Reproducibility: fixed seeds, ``deterministic=True`` with ``force_row_wise=True``, a fixed ``num_threads``,
rows sorted by the entity key and columns by name. Categorical features are pandas categoricals whose
categories LightGBM stores in the model text (``pandas_categorical``); scoring re-applies exactly those
categories, so a category never silently maps to another's code.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batch_platform.lib.specs import ModelSpec
from batch_platform.lib.training_set import EVENT_TIMESTAMP, LABEL, LABEL_FINAL_AT, SPLIT, VALID_FROM_SUFFIX

if TYPE_CHECKING:  # LightGBM (and the scikit-learn it imports) take a second: only where a model is trained or read
    import lightgbm as lgb

LGB_METRIC = {"roc_auc": "auc", "average_precision": "average_precision", "log_loss": "binary_logloss",
              "rmse": "rmse", "mae": "l1"}

# The search space: a fixed grid; the search evaluates a seeded sample of `n_trials` points (the first point is
# always the baseline configuration, so a budget of 1 is a plain, sensible model).
PARAM_GRID = {
    "learning_rate": [0.05, 0.1],
    "num_leaves": [15, 31, 63],
    "min_data_in_leaf": [20, 50, 100],
    "feature_fraction": [0.8, 1.0],
    "lambda_l2": [0.0, 1.0],
}
BASELINE = {"learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50, "feature_fraction": 0.8, "lambda_l2": 1.0}


@dataclass(frozen=True)
class TrainConfig:
    n_trials: int = 2
    max_rounds: int = 300
    early_stopping_rounds: int = 20
    seed: int = 13
    num_threads: int = 2


@dataclass
class TrainedModel:
    model_text: str
    params: dict
    best_iteration: int
    features: list[str]
    categorical: list[str]
    validation_metric: float
    trials: list[dict] = field(default_factory=list)


def feature_columns(spec: ModelSpec, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(features, categorical features), each sorted by name: everything in the training set except keys,
    timestamps, label and bookkeeping; join keys only where the spec lists them as categorical."""
    excluded = {spec.entity.key, spec.label.date_column, EVENT_TIMESTAMP, LABEL, LABEL_FINAL_AT, SPLIT}
    excluded |= set(spec.entity.join_keys) - set(spec.categorical_features)
    features = sorted(c for c in frame.columns if c not in excluded and not c.endswith(VALID_FROM_SUFFIX))
    categorical = sorted(
        c for c in features
        if c in spec.categorical_features
        or not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    )
    return features, categorical


def prepare_matrix(frame: pd.DataFrame, features: list[str], categorical: list[str],
                   categories: dict[str, list] | None = None) -> pd.DataFrame:
    """The model matrix: numeric columns as float64, categoricals as pandas categoricals with ``categories``
    (from the model) or, when training, the sorted distinct values."""
    X = pd.DataFrame(index=frame.index)
    for c in features:
        if c in categorical:
            values = frame[c].astype("string").astype(object).where(frame[c].notna(), None)
            cats = categories[c] if categories is not None else sorted(v for v in set(values) if v is not None)
            X[c] = pd.Categorical(values, categories=cats)
        else:
            X[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    return X


def _sorted(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The rows in entity-key order (stable); a training set comes in that order already (checked, not re-sorted)."""
    if frame[spec.entity.key].is_monotonic_increasing:
        return frame if frame.index.equals(pd.RangeIndex(len(frame))) else frame.reset_index(drop=True)
    return frame.sort_values(spec.entity.key, kind="stable").reset_index(drop=True)


def _base_params(spec: ModelSpec, config: TrainConfig) -> dict:
    return {
        "objective": spec.lightgbm_objective,
        "metric": LGB_METRIC[spec.gate.metric],
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.num_threads,
        "seed": config.seed,
        "bagging_seed": config.seed,
        "feature_fraction_seed": config.seed,
        "data_random_seed": config.seed,
        "verbosity": -1,
        "max_cat_to_onehot": 8,
        # the bins do not depend on min_data_in_leaf: one Dataset serves every trial of the search
        "feature_pre_filter": False,
    }


def candidate_params(config: TrainConfig) -> list[dict]:
    rng = np.random.default_rng(config.seed)
    keys = sorted(PARAM_GRID)
    grid = [dict(zip(keys, combo)) for combo in np.array(np.meshgrid(*[range(len(PARAM_GRID[k])) for k in keys]))
            .T.reshape(-1, len(keys)).tolist()]
    points = [{k: PARAM_GRID[k][i] for k, i in zip(keys, [g[k] for k in keys])} for g in grid]
    points = [p for p in points if p != BASELINE]
    order = rng.permutation(len(points))
    return [BASELINE] + [points[i] for i in order[: max(0, config.n_trials - 1)]]


def _check_windows(spec: ModelSpec, train_labels, val_labels) -> None:
    if len(np.unique(train_labels)) < 2 or len(np.unique(val_labels)) < 2:
        raise ValueError(f"{spec.name}: the train and validation windows need "
                         + ("labels that vary" if spec.is_regression else "both label classes"))


def train(frame: pd.DataFrame, spec: ModelSpec, config: TrainConfig = TrainConfig()) -> TrainedModel:
    """Search ``config.n_trials`` parameter sets (early stopping on the validation window each), keep the best
    by the spec's metric on the validation window. The training set in memory; :func:`train_snapshot` trains the
    same model from the snapshot file without loading it."""
    frame = _sorted(frame, spec)
    features, categorical = feature_columns(spec, frame)
    train_rows = frame[frame[SPLIT] == "train"]
    val_rows = frame[frame[SPLIT] == "validation"]
    _check_windows(spec, train_rows[LABEL].dropna().to_numpy(), val_rows[LABEL].dropna().to_numpy())
    X_train = prepare_matrix(train_rows, features, categorical)
    cats = {c: list(X_train[c].cat.categories) for c in categorical}
    X_val = prepare_matrix(val_rows, features, categorical, cats)

    import lightgbm as lgb

    # binned once: the trials differ only in training parameters (feature_pre_filter is off)
    dtrain = lgb.Dataset(X_train, label=train_rows[LABEL].to_numpy(), categorical_feature=categorical,
                         params=_base_params(spec, config))
    dval = lgb.Dataset(X_val, label=val_rows[LABEL].to_numpy(), reference=dtrain)
    return _search(dtrain, dval, spec, config, features, categorical)


def train_snapshot(path: Path, spec: ModelSpec, config: TrainConfig = TrainConfig()) -> TrainedModel:
    """:func:`train` on the training-set snapshot at ``path`` (Parquet; rows in entity-key order as written, else
    sorted into a temporary copy first), out of core: LightGBM bins the rows as they are read, one row group at a time
    (:mod:`batch_platform.lib.snapshot_matrix`), so memory grows with the binned dataset (features x bins), not
    with the frame. The same bins and the same model as :func:`train` on the same rows."""
    import tempfile

    from batch_platform.lib.snapshot_matrix import UnsortedSnapshotError, read_layout

    try:
        return _train_layout(read_layout(path, spec), spec, config)
    except UnsortedSnapshotError:
        # in entity-key order first, as train() sorts (DuckDB sorts out of core; the key is unique)
        import duckdb

        from batch_platform.lib.training_set import SNAPSHOT_ROW_GROUP_ROWS

        with tempfile.TemporaryDirectory(prefix="sorted-snapshot-") as tmp:
            ordered = Path(tmp) / "snapshot.parquet"
            con = duckdb.connect()
            try:
                con.execute(f"SET temp_directory = '{tmp}'")
                con.execute(f"COPY (SELECT * FROM read_parquet(?) ORDER BY \"{spec.entity.key}\") TO '{ordered}' "
                            f"(FORMAT parquet, ROW_GROUP_SIZE {SNAPSHOT_ROW_GROUP_ROWS})", [str(path)])
            finally:
                con.close()
            return _train_layout(read_layout(ordered, spec), spec, config)


def _train_layout(layout, spec: ModelSpec, config: TrainConfig) -> TrainedModel:
    import lightgbm as lgb

    from batch_platform.lib.snapshot_matrix import WindowRows, as_lightgbm_sequence

    y_train, y_val = (layout.labels[layout.positions(w)] for w in ("train", "validation"))
    _check_windows(spec, y_train[~pd.isna(y_train)], y_val[~pd.isna(y_val)])
    rows = {w: as_lightgbm_sequence(WindowRows(layout, w)) for w in ("train", "validation")}
    dtrain = lgb.Dataset([rows["train"]], label=y_train, feature_name=layout.features,
                         categorical_feature=layout.categorical, params=_base_params(spec, config))
    # the categories travel with the model as they do from a DataFrame (LightGBM's pandas_categorical)
    dtrain.pandas_categorical = [layout.categories[c] for c in layout.categorical]
    dval = lgb.Dataset([rows["validation"]], label=y_val, reference=dtrain)
    return _search(dtrain, dval, spec, config, layout.features, layout.categorical)


class RoundCounter:
    """An ``lgb.train`` callback counting the rounds trained (the booster it returns keeps only those up to the best
    round): the best round and the early-stopping patience after it, or every round."""

    def __init__(self):
        self.rounds = 0

    def __call__(self, env) -> None:
        self.rounds = env.iteration + 1


def _search(dtrain, dval, spec: ModelSpec, config: TrainConfig, features: list[str],
            categorical: list[str]) -> TrainedModel:
    import lightgbm as lgb

    higher_better = spec.gate.metric in ("roc_auc", "average_precision")
    best: TrainedModel | None = None
    trials = []
    for point in candidate_params(config):
        params = {**_base_params(spec, config), **point}
        counter = RoundCounter()
        booster = lgb.train(
            params, dtrain, num_boost_round=config.max_rounds, valid_sets=[dval], valid_names=["validation"],
            callbacks=[counter, lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        score = float(booster.best_score["validation"][params["metric"]])
        trials.append({"params": point, "best_iteration": booster.best_iteration, "validation_metric": score,
                       "rounds": counter.rounds})
        if best is None or (score > best.validation_metric if higher_better else score < best.validation_metric):
            best = TrainedModel(
                model_text=booster.model_to_string(num_iteration=booster.best_iteration),
                params=params, best_iteration=booster.best_iteration, features=features,
                categorical=categorical, validation_metric=score,
            )
    assert best is not None
    best.trials = trials
    return best


def load_booster(model_text: str) -> lgb.Booster:
    import lightgbm as lgb

    return lgb.Booster(model_str=model_text)


def categorical_features_of(booster: lgb.Booster) -> list[str]:
    """The model's categorical features, read from its text: LightGBM writes a numeric feature's info as
    ``[min:max]`` and a categorical's as its category codes ``c1:c2:...``; ``pandas_categorical`` holds their
    categories in the same order."""
    names = booster.feature_name()
    infos = booster.model_to_string(num_iteration=0).split("feature_infos=", 1)[1].split("\n", 1)[0].split(" ")
    categorical = [n for n, info in zip(names, infos) if not info.startswith("[") and info != "none"]
    if len(categorical) != len(booster.pandas_categorical or []):
        raise ValueError(
            f"cannot tell the model's categorical features apart ({categorical} vs "
            f"{len(booster.pandas_categorical or [])} category lists): pass them explicitly"
        )
    return categorical


def score(booster: lgb.Booster, frame: pd.DataFrame, categorical: list[str] | None = None) -> np.ndarray:
    """The model's scores for ``frame`` (probabilities for a binary objective, predicted values for a regression
    one) with its own feature list and categories."""
    features = booster.feature_name()
    categorical = categorical if categorical is not None else categorical_features_of(booster)
    categories = dict(zip(categorical, booster.pandas_categorical or []))
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise KeyError(f"scoring frame lacks model features {missing}")
    X = prepare_matrix(frame, features, categorical, categories)
    return booster.predict(X)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    return {pkg: md.version(pkg) for pkg in ("lightgbm", "numpy", "pandas", "feast", "dbt-core", "duckdb")} | {
        "python": platform.python_version()}


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit + ("+dirty" if dirty else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dbt_manifest_hash(manifest_path: Path) -> str:
    """sha256 over the manifest's node checksums (stable: ignores generated_at and invocation ids)."""
    manifest = json.loads(manifest_path.read_text())
    nodes = {uid: n.get("checksum", {}).get("checksum") for uid, n in sorted(manifest.get("nodes", {}).items())}
    return hashlib.sha256(json.dumps(nodes, sort_keys=True).encode()).hexdigest()


def model_fingerprint(trained: TrainedModel, *, training_set_fingerprint: str, feature_definitions: str,
                      dbt_manifest: str, commit: str, spec_fingerprint: str) -> dict:
    return {
        "training_set": training_set_fingerprint,
        "feature_definitions": feature_definitions,
        "dbt_manifest": dbt_manifest,
        "git_commit": commit,
        "spec": spec_fingerprint,
        "params": trained.params,
        "best_iteration": trained.best_iteration,
        "features": trained.features,
        "categorical": trained.categorical,
        "libraries": library_versions(),
    }


__all__ = ["TrainConfig", "TrainedModel", "train", "score", "load_booster", "feature_columns", "prepare_matrix",
           "model_fingerprint", "dbt_manifest_hash", "git_commit", "library_versions", "asdict"]
