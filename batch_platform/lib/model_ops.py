"""Model operations over the registry: load a version with its artefact verified, smoke-test it, and gate a
candidate against the champion on the same test window."""

from __future__ import annotations

import numpy as np
import pandas as pd

from batch_platform.lib import artifacts, gate, training
from batch_platform.lib.registry import ModelRegistry, ModelVersion
from batch_platform.lib.specs import ModelSpec
from batch_platform.lib.training_set import LABEL, SPLIT

CHAMPION = "champion"
CHALLENGER = "challenger"


class SmokeTestFailed(RuntimeError):
    """A model version could not produce sane scores on recent data."""


def load_model(version: ModelVersion):
    """The version's booster, after verifying its artefact's sha256 (ArtifactIntegrityError / ArtifactMissingError)."""
    return training.load_booster(artifacts.read_verified(version.artifact_path, version.sha256))


def score_version(version: ModelVersion, frame: pd.DataFrame) -> np.ndarray:
    booster = load_model(version)
    return training.score(booster, frame, version.fingerprint.get("categorical"))


SMOKE_TEST_ROWS = 2000


def smoke_test(version: ModelVersion, frame: pd.DataFrame, *, rows: int = SMOKE_TEST_ROWS) -> None:
    """Score up to ``rows`` recent rows; every score must be a probability and they must not all be equal."""
    sample = frame.tail(rows)
    try:
        scores = score_version(version, sample)
    except artifacts.ArtifactError:
        raise
    except Exception as e:  # a model that cannot score this data is not servable
        raise SmokeTestFailed(f"{version.spec} v{version.version} cannot score recent data: {e}") from e
    if len(scores) != len(sample) or not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise SmokeTestFailed(f"{version.spec} v{version.version}: scores are not probabilities")
    if len(sample) > 10 and np.ptp(scores) == 0:
        raise SmokeTestFailed(f"{version.spec} v{version.version}: constant scores")


def test_window(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame[SPLIT] == "test"]


def gate_candidate(spec: ModelSpec, frame: pd.DataFrame, candidate: ModelVersion, registry: ModelRegistry,
                   *, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Score candidate and champion on the candidate's test window (the most recent days with final labels)
    and decide. Returns the gate report as a dict, naming both versions."""
    window = test_window(frame)
    policy = gate.GatePolicy.from_spec(spec.gate, n_bootstrap=n_bootstrap, seed=seed)
    champion = registry.get_alias(spec.name, CHAMPION)
    y = window[LABEL].to_numpy()
    cand_scores = score_version(candidate, window)
    champ_scores = None
    reasons: list[str] = []
    if champion is not None and champion.version != candidate.version:
        try:
            champ_scores = score_version(champion, window)
        except Exception as e:
            reasons.append(f"champion v{champion.version} could not be scored on the test window: {e}")
    slices = window[list(spec.gate.slices)].reset_index(drop=True) if spec.gate.slices else None
    try:
        report = gate.evaluate_gate(y, cand_scores, champ_scores, policy, slices,
                                    blocks=window[spec.label.date_column].astype(str).to_numpy()).to_dict()
    except ValueError as e:  # e.g. a test window with a single class: nothing can be concluded
        report = {"passed": False, "policy": policy.to_dict(), "metric": policy.metric, "n_rows": int(len(y)),
                  "candidate_metric": None, "champion_metric": None, "difference": None, "ci_low": None,
                  "ci_high": None, "slices": [], "reasons": [f"gate could not be evaluated: {e}"]}
    if reasons:  # never promote over a champion we could not compare against
        report["passed"] = False
        report["reasons"] = list(report.get("reasons", [])) + reasons
    report["candidate_version"] = candidate.version
    report["champion_version"] = champion.version if champion is not None else None
    report["spec"] = spec.name
    report["test_window"] = {
        "first_day": str(window[spec.label.date_column].min()), "last_day": str(window[spec.label.date_column].max()),
        "rows": int(len(window)),
    }
    return report
