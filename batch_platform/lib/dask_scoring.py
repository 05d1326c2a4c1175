"""Batch scoring on a Dask cluster: the pinned model's scores of each chunk of the day computed on the workers.

:func:`scoring.score_partition` reads the spine, joins the features as of the cutoff and writes the staged rows
as on the local path; only the model's predictions move: the chunk is split into one part per worker, each part is
scored on a worker by the pinned version (its verified artefact text sent to every worker once per run, the booster
loaded once per worker process), and the parts' scores come back in row order. The day is committed by the step in
one transaction, as on the local path, so a worker lost mid-day fails the run with :class:`ClusterScoringError` and
leaves the day's previous predictions as they were; a re-run scores the day again from the start. The scores are
LightGBM's for the same rows and the same model text: identical to the local path's, row for row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batch_platform.lib import artifacts, faults, training
from batch_platform.lib.dask_workers import current_workers
from batch_platform.lib.scoring import PinnedModel, ScoringError

if TYPE_CHECKING:
    from distributed import Client

_BOOSTERS: dict[str, object] = {}  # on a worker: model sha256 -> booster (the versions of recent runs)
_KEEP = 4


class ClusterScoringError(ScoringError):
    """Scoring on the Dask cluster failed (a worker died, the scheduler went away, a task raised)."""


def score_part(model_text: str, sha256: str, frame: pd.DataFrame, categorical: list[str] | None) -> np.ndarray:
    """On a worker: the model's scores of ``frame``'s rows."""
    faults.point("score.dask_part")
    booster = _BOOSTERS.get(sha256)
    if booster is None:
        while len(_BOOSTERS) >= _KEEP:
            _BOOSTERS.pop(next(iter(_BOOSTERS)))
        booster = _BOOSTERS[sha256] = training.load_booster(model_text)
    return np.asarray(training.score(booster, frame, categorical), dtype="float64")


class ClusterScorer:
    """``scorer(model, frame) -> scores``: :func:`scoring.score_partition`'s ``predict`` on the cluster ``client``
    is connected to (see the module docstring)."""

    def __init__(self, client: Client):
        self.client = client
        self._texts: dict[str, object] = {}  # sha256 -> the model text, scattered to every worker

    def __call__(self, model: PinnedModel, frame: pd.DataFrame) -> np.ndarray:
        version = model.version
        try:
            if version.sha256 not in self._texts:
                text = artifacts.read_verified(version.artifact_path, version.sha256)
                self._texts[version.sha256] = self.client.scatter(text, broadcast=True, hash=False)
            workers = max(1, len(current_workers(self.client)))
            parts = [p for p in np.array_split(np.arange(len(frame)), min(workers, max(1, len(frame)))) if len(p)]
            futures = [self.client.submit(score_part, self._texts[version.sha256], version.sha256,
                                          frame.iloc[p], model.categorical, pure=False) for p in parts]
            scores = self.client.gather(futures)
        except artifacts.ArtifactError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the cluster raised, named and with its cause
            raise ClusterScoringError(f"{version.spec} v{version.version}: scoring on the Dask cluster failed: "
                                      f"{type(e).__name__}: {e}") from e
        return np.concatenate(scores) if scores else np.empty(0)
