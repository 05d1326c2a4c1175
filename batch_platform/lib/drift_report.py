"""Evidently's HTML drift report of a scored day, rendered when someone asks for it.

The daily check (:func:`batch_platform.lib.drift.evaluate`) computes its verdict from the statistics alone; building
Evidently's report (a plotly widget per column) took most of the check's time and its HTML is read on few days.
So the check only :func:`save_inputs` beside where the report goes (``<name>.html`` -> ``<name>.inputs.parquet``:
the day's tested columns and scores, with the reference's path and sha256 and the thresholds in its metadata), and
:func:`render` builds the report from them on first request (the report server calls it when ``<name>.html`` is
asked for and does not exist yet; later requests get the saved file). :func:`evidently_snapshot` is also the
definition the fast statistics are tested against.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batch_platform.lib.drift_reference import (
    PSI, SCORE, SCORE_BIN, WASSERSTEIN, DriftReference, load_reference, prepare, score_bins)

INPUTS_SUFFIX = ".inputs.parquet"
_META_KEY = b"batch_platform.drift_report"


class DriftReportError(RuntimeError):
    """A drift report cannot be rendered: its inputs are missing or unreadable (or its reference, see
    :class:`batch_platform.lib.drift_reference.DriftReferenceError`)."""


def inputs_path(html_path: Path | str) -> Path:
    html_path = Path(html_path)
    return html_path.with_name(html_path.name.removesuffix(".html") + INPUTS_SUFFIX)


def import_evidently() -> None:
    """Import what :func:`render` uses (seconds, once per process)."""
    from evidently import DataDefinition, Dataset, Report  # noqa: F401
    from evidently.metrics import ValueDrift  # noqa: F401


def evidently_snapshot(ref: DriftReference, features: pd.DataFrame, scores: np.ndarray, warn_floors: dict[str, float]):
    """Evidently's ``Report`` of one ``ValueDrift`` per test (``warn_floors[method]`` as its threshold), run."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    cur = prepare(ref, features, scores)
    refs = ref.sample.copy()
    refs[SCORE_BIN] = score_bins(refs[SCORE], ref.score_edges)
    # a numeric column without any value on either side has no distance (Evidently refuses an empty column)
    tests = [(c, m) for c, m in ref.tests() if m == PSI or (refs[c].notna().any() and cur[c].notna().any())]
    numeric = [c for c, m in tests if m == WASSERSTEIN]
    categorical = [c for c, m in tests if m == PSI]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    metrics = [ValueDrift(column=c, method=m, threshold=warn_floors[m]) for c, m in tests]
    return Report(metrics).run(
        current_data=Dataset.from_pandas(cur[numeric + categorical], data_definition=definition),
        reference_data=Dataset.from_pandas(refs[numeric + categorical], data_definition=definition),
    )


def evidently_values(snapshot) -> dict[tuple[str, str], float]:
    """``{(column, method): value}`` of a snapshot's ``ValueDrift`` metrics."""
    return {(m["config"]["column"], m["config"]["method"]): float(m["value"]) for m in snapshot.dict()["metrics"]}


def save_inputs(html_path: Path, ref: DriftReference, reference_path: Path | str, reference_sha256: str,
                features: pd.DataFrame, scores: np.ndarray, thresholds) -> Path:
    """Write what :func:`render` needs to build ``html_path`` later; returns the inputs file. Categorical columns
    are stored as text and numeric ones as numbers, :func:`prepare`'s first step, so the report is the one the
    batch would have given."""
    frame = pd.DataFrame(index=range(len(features)))
    for c in ref.numeric:
        frame[c] = pd.to_numeric(features[c].reset_index(drop=True), errors="coerce").astype("float64")
    for c in ref.categorical:
        frame[c] = features[c].reset_index(drop=True).astype("string")
    frame[SCORE] = np.asarray(scores, dtype="float64")
    meta = {"reference": str(reference_path), "reference_sha256": reference_sha256, "thresholds": asdict(thresholds)}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
    path = inputs_path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda f: pq.write_table(table, f))
    return path


def render(html_path: Path | str) -> Path:
    """Build Evidently's report at ``html_path`` from its saved inputs, unless it exists; returns ``html_path``."""
    html_path = Path(html_path)
    if html_path.exists():
        return html_path
    source = inputs_path(html_path)
    try:
        table = pq.read_table(io.BytesIO(source.read_bytes()))
        meta = json.loads(table.schema.metadata[_META_KEY])
    except FileNotFoundError:
        raise DriftReportError(f"no drift report inputs at {source}") from None
    except (KeyError, ValueError, pa.ArrowException) as e:
        raise DriftReportError(f"drift report inputs {source} are unreadable: {e}") from e
    ref = load_reference(meta["reference"], meta["reference_sha256"])
    frame = table.to_pandas()
    floors = {WASSERSTEIN: meta["thresholds"]["wasserstein_warn"], PSI: meta["thresholds"]["psi_warn"]}
    snapshot = evidently_snapshot(ref, frame.drop(columns=[SCORE]), frame[SCORE].to_numpy(), floors)
    tmp = html_path.with_name(f".{html_path.name}.{os.getpid()}.tmp")
    snapshot.save_html(str(tmp))
    tmp.replace(html_path)
    return html_path


def renderable(html_path: Path | str) -> bool:
    """True when ``html_path`` is not rendered yet and its inputs are saved."""
    return not Path(html_path).exists() and inputs_path(html_path).exists()


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    tmp.replace(path)
