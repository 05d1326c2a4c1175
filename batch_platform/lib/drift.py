"""Drift of scored batches against a reference frozen at training time, computed with Evidently.

**Reference.** When a candidate is trained, :func:`build_reference` samples up to ``reference_rows`` rows of its
training and validation windows (the model's features plus the model's score on them) and freezes what the tests
need: per numeric column its reference standard deviation, the categories of categorical columns, and fixed
decile edges of the score. :func:`save_reference` writes it content-addressed (one parquet file, the frozen parts
in its metadata) and the path and sha256 go into the model version's fingerprint in the registry, so the reference
travels with the version and is verified when loaded.

**Tests, chosen per column** (never Evidently's sample-size dependent defaults):

- numeric features: Evidently's ``wasserstein`` (first Wasserstein distance normed by the reference standard
  deviation): an effect size in reference-σ units, whose verdict does not tighten as batches grow;
- categorical features: ``psi`` over the reference's categories (values unseen in training are counted as one
  ``__other__`` category);
- the prediction score: ``psi`` over the score binned at the reference's frozen decile edges (a binned test whose
  bins do not move with each batch), plus the normed Wasserstein distance for information.

**False alarms across many columns** are controlled twice, without p-values: by effect-size thresholds (a column
is WARN at ``warn`` and ERROR at ``error`` from the spec, whatever the batch size; for a day's batch of about 1,000
rows the normed Wasserstein distance between two samples of one distribution stays below 0.1, see
``tests/test_drift.py``), and by requiring ``min_error_columns`` ERROR columns before the *batch* is ERROR (one
column over its threshold makes it WARN). Columns that vary by day by nature (weather, calendar position) are
listed in the spec's ``exclude`` and not tested.

Calibration on the real 2013 data (a model trained on February, windows 14/4/4): early-March days have at most one
numeric column at ≥ 1σ (7-day carrier cancellation or delay rates, which move with each storm) and a score PSI
≈ 0.25; July days have four to six (carrier/route/plane 7-day delay statistics at 1.5–4σ, the score's PSI 0.75–1.1).
Hence the shipped ERROR levels 1.0σ / PSI 0.5 with three columns.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SCORE = "prediction_score"
SCORE_BIN = "prediction_score_bin"
OTHER = "__other__"
WARN, ERROR, OK = "WARN", "ERROR", "OK"
_META_KEY = b"batch_platform.drift_reference"


class DriftReferenceError(RuntimeError):
    """A drift reference is missing, altered (sha256 mismatch) or does not fit the batch."""


@dataclass(frozen=True)
class DriftThresholds:
    wasserstein_warn: float = 0.1
    wasserstein_error: float = 1.0
    psi_warn: float = 0.1
    psi_error: float = 0.5
    min_error_columns: int = 3  # the batch is ERROR only when at least this many columns are

    def severity(self, method: str, value: float) -> str:
        warn, error = ((self.wasserstein_warn, self.wasserstein_error) if method == "wasserstein"
                       else (self.psi_warn, self.psi_error))
        if value is None or not math.isfinite(value):
            return OK
        return ERROR if value >= error else WARN if value >= warn else OK


@dataclass
class DriftReference:
    sample: pd.DataFrame  # feature columns + SCORE
    numeric: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    score_edges: list[float]
    reference_std: dict[str, float]
    source: dict = field(default_factory=dict)  # where it came from: spec, windows, rows sampled of how many

    def meta(self) -> dict:
        return {"numeric": self.numeric, "categorical": self.categorical, "categories": self.categories,
                "score_edges": self.score_edges, "reference_std": self.reference_std, "source": self.source}


def build_reference(frame: pd.DataFrame, features: list[str], categorical: list[str], scores: np.ndarray, *,
                    rows: int = 5000, seed: int = 0, exclude: list[str] = (), source: dict | None = None
                    ) -> DriftReference:
    """Freeze a reference from the training frame (the rows the model learned from) and the model's scores."""
    if len(frame) != len(scores):
        raise ValueError("one score per frame row")
    keep = [c for c in features if c not in set(exclude)]
    cats = [c for c in keep if c in set(categorical)]
    nums = [c for c in keep if c not in set(categorical) and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])]
    idx = np.sort(np.random.default_rng(seed).choice(len(frame), size=min(rows, len(frame)), replace=False))
    sample = frame.iloc[idx][nums + cats].reset_index(drop=True).copy()
    for c in nums:
        sample[c] = pd.to_numeric(sample[c], errors="coerce").astype("float64")
    for c in cats:
        sample[c] = sample[c].astype("string").fillna("__missing__").astype(str)
    sample[SCORE] = np.asarray(scores, dtype="float64")[idx]
    edges = np.unique(np.quantile(np.asarray(scores, dtype="float64"), np.linspace(0, 1, 11)[1:-1]))
    return DriftReference(
        sample=sample, numeric=nums, categorical=cats,
        categories={c: sorted(sample[c].unique().tolist()) for c in cats},
        score_edges=[float(e) for e in edges],
        reference_std={c: float(np.nanstd(sample[c].to_numpy())) for c in nums + [SCORE]},
        source={"rows": int(len(sample)), "of_rows": int(len(frame)), "seed": seed, **(source or {})},
    )


def save_reference(ref: DriftReference, directory: Path) -> tuple[Path, str]:
    """Write ``<directory>/<sha256[:16]>.parquet`` (the frozen parts in the file's metadata); returns path, sha256."""
    table = pa.Table.from_pandas(ref.sample, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                          _META_KEY: json.dumps(ref.meta(), sort_keys=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sha[:16]}.parquet"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path, sha


def load_reference(path: Path | str, sha256: str) -> DriftReference:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DriftReferenceError(f"drift reference {path} is missing") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DriftReferenceError(f"drift reference {path} was altered: sha256 {actual} != {sha256}")
    table = pq.read_table(io.BytesIO(data))
    meta = json.loads(table.schema.metadata[_META_KEY])
    return DriftReference(sample=table.to_pandas(), numeric=meta["numeric"], categorical=meta["categorical"],
                          categories=meta["categories"], score_edges=meta["score_edges"],
                          reference_std=meta["reference_std"], source=meta.get("source", {}))


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    value: float
    severity: str
    reference_mean: float | None = None
    current_mean: float | None = None
    current_missing_share: float | None = None


@dataclass
class DriftResult:
    columns: list[ColumnDrift]
    n_reference: int
    n_current: int
    thresholds: DriftThresholds
    html_path: Path | None = None

    @property
    def severity(self) -> str:
        """ERROR when at least ``min_error_columns`` columns are ERROR; WARN when any column is flagged."""
        if len(self.flagged(ERROR)) >= self.thresholds.min_error_columns:
            return ERROR
        return WARN if self.flagged() else OK

    @property
    def passed(self) -> bool:
        return self.severity == OK

    def flagged(self, severity: str | None = None) -> list[ColumnDrift]:
        return [c for c in self.columns if c.severity != OK and (severity is None or c.severity == severity)]

    def describe(self) -> str:
        if self.passed:
            return f"no drift in {len(self.columns)} columns ({self.n_current} rows vs {self.n_reference} reference)"
        worst = sorted(self.flagged(), key=lambda c: -c.value)[:5]
        return (f"{len(self.flagged(ERROR))} ERROR, {len(self.flagged(WARN))} WARN of {len(self.columns)} columns: "
                + ", ".join(f"{c.column} {c.method}={c.value:.3f} ({c.severity})" for c in worst))

    def to_dict(self) -> dict:
        return {"severity": self.severity, "n_reference": self.n_reference, "n_current": self.n_current,
                "thresholds": asdict(self.thresholds), "columns": [asdict(c) for c in self.columns],
                "html_path": str(self.html_path) if self.html_path else None}


def _current_frame(ref: DriftReference, features: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    missing = [c for c in ref.numeric + ref.categorical if c not in features.columns]
    if missing:
        raise DriftReferenceError(f"the scored batch lacks reference column(s) {missing}")
    cur = pd.DataFrame(index=range(len(features)))
    for c in ref.numeric:
        cur[c] = pd.to_numeric(features[c].reset_index(drop=True), errors="coerce").astype("float64")
    for c in ref.categorical:
        values = features[c].reset_index(drop=True).astype("string").fillna("__missing__").astype(str)
        cur[c] = values.where(values.isin(ref.categories[c]), OTHER)
    cur[SCORE] = np.asarray(scores, dtype="float64")
    return cur


def _score_bins(values: pd.Series, edges: list[float]) -> pd.Series:
    return pd.Series(np.digitize(values.to_numpy(), edges), index=values.index).map(lambda b: f"bin{b:02d}")


def evaluate(ref: DriftReference, features: pd.DataFrame, scores: np.ndarray, thresholds: DriftThresholds,
             *, html_path: Path | None = None) -> DriftResult:
    """Test every reference column of ``features`` (and ``scores``) against the reference with Evidently; write
    Evidently's HTML report to ``html_path`` when given."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    if len(features) == 0:
        raise DriftReferenceError("the scored batch is empty")
    cur = _current_frame(ref, features, scores)
    refs = ref.sample.copy()
    cur[SCORE_BIN] = _score_bins(cur[SCORE], ref.score_edges)
    refs[SCORE_BIN] = _score_bins(refs[SCORE], ref.score_edges)
    # Numeric columns entirely missing on either side cannot be compared: reported, not tested.
    numeric = [c for c in ref.numeric + [SCORE] if refs[c].notna().any() and cur[c].notna().any()]
    categorical = ref.categorical + [SCORE_BIN]
    tests = [(c, "wasserstein") for c in numeric] + [(c, "psi") for c in categorical]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    metrics = [ValueDrift(column=c, method=m, threshold=(thresholds.wasserstein_warn if m == "wasserstein"
                                                           else thresholds.psi_warn)) for c, m in tests]
    snapshot = Report(metrics).run(
        current_data=Dataset.from_pandas(cur[numeric + categorical], data_definition=definition),
        reference_data=Dataset.from_pandas(refs[numeric + categorical], data_definition=definition),
    )
    values = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m["config"]
        values[(cfg["column"], cfg["method"])] = float(m["value"])
    columns = []
    for c, method in tests:
        v = values[(c, method)]
        is_num = method == "wasserstein"
        sev = thresholds.severity(method, v)
        if c == SCORE:  # the score's verdict is its binned PSI; its Wasserstein distance is information
            sev = OK
        columns.append(ColumnDrift(
            column=c, method=method, value=v, severity=sev,
            reference_mean=float(np.nanmean(refs[c])) if is_num else None,
            current_mean=float(np.nanmean(cur[c])) if is_num else None,
            current_missing_share=float(cur[c].isna().mean()) if is_num else None,
        ))
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    return DriftResult(columns, len(refs), len(cur), thresholds, html_path)

