"""Model specs: one YAML file per model declares what the platform builds for it.

A spec names the entity and label (a dbt model and a column, or a SQL expression over it), the prediction
cutoff rule, the label embargo, the Feast feature service, the training/validation/test windows, the gate and
the schedule. Dagster assets are generated per spec, so a new model needs a dbt model, a Feast feature
view/service and a YAML file — no Python.

Specs are read from ``batch_platform/models/*.yaml`` or from the folder in ``BATCH_PLATFORM_MODEL_SPECS``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batch_platform.lib import project

SPECS_DIR_VAR = project.SPECS_VAR
DEFAULT_SPECS_DIR = project.FLIGHTS_SPECS_DIR
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
"""A column, model, view or service a spec names: a plain SQL identifier (specs go into SQL and Feast names; a
name that would need quoting or escaping is refused at load)."""


def _names(*values: str) -> None:
    for v in values:
        if not _NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a plain identifier (letters, digits, underscores; no quotes, spaces "
                             "or SQL)")


class ModelSpecError(ValueError):
    """A model spec file is missing, malformed or inconsistent."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntitySpec(_Strict):
    key: str = Field(description="Column that identifies one prediction (one row per key per day).")
    join_keys: list[str] = Field(description="Feast entity join keys, columns of the label model.")

    @model_validator(mode="after")
    def _identifiers(self) -> EntitySpec:
        _names(self.key, *self.join_keys)
        return self


class LabelSpec(_Strict):
    model: str = Field(description="dbt model (schema marts) with one row per entity key.")
    column: str | None = Field(default=None, description="Label column of the model: boolean for a binary "
                               "metric, numeric for a regression metric (rmse, mae).")
    expression: str | None = Field(default=None, description="Or: a SQL expression over the model (boolean or "
                                   "numeric, as the column).")
    definition: str = Field(description="What the label means, in words.")
    date_column: str = Field(description="The entity's day (the partition a prediction belongs to).")
    embargo_days: int = Field(ge=0, description="Days after the entity's day until its label is final.")
    final_local_time: str = Field(default="06:00", description="Local time on that day when the label is final.")

    @model_validator(mode="after")
    def _one_of(self) -> LabelSpec:
        if (self.column is None) == (self.expression is None):
            raise ValueError("label needs exactly one of 'column' or 'expression'")
        _names(self.model, self.date_column, *([self.column] if self.column else []))
        if self.expression is not None:
            from batch_platform.lib.contracts import canonical_predicate

            try:
                canonical_predicate(self.expression)
            except ValueError as e:
                raise ValueError(f"label.expression {self.expression!r} {e}") from None
        return self

    @property
    def sql(self) -> str:
        """The label as SQL: the quoted column, or the expression as parsed and rendered back (one expression over
        the label model's own columns; never the file's text)."""
        if self.column:
            return f'"{self.column}"'
        from batch_platform.lib.contracts import canonical_predicate

        return f"({canonical_predicate(self.expression)})"


class CutoffSpec(_Strict):
    days_before: int = Field(ge=0, description="Features must be valid this many days before the entity's day...")
    local_time: str = Field(description="...at this local time (HH:MM).")
    timezone: str = Field(default="America/New_York")

    @field_validator("local_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        dt.time.fromisoformat(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        ZoneInfo(v)
        return v


class WindowSpec(_Strict):
    train_days: int = Field(gt=0)
    validation_days: int = Field(gt=0)
    test_days: int = Field(gt=0)

    @property
    def total_days(self) -> int:
        return self.train_days + self.validation_days + self.test_days


BINARY_METRICS = ("roc_auc", "average_precision", "log_loss")
REGRESSION_METRICS = ("rmse", "mae")  # (the gate's lists: lib/gate.py; tests/test_specs.py keeps them equal)
REGRESSION_OBJECTIVES = ("regression", "regression_l1", "huber", "poisson", "tweedie", "gamma")


class GateSpec(_Strict):
    metric: str = Field(description="roc_auc | average_precision | log_loss (a binary label) or rmse | mae (a "
                        "numeric label: regression)")
    tolerance: float = Field(ge=0, description="Largest accepted degradation of the candidate vs the champion.")
    floor: float = Field(description="Floor for the first model: a metric value, or see floor_basis.")
    floor_basis: str = Field(
        default="absolute",
        description="'absolute' (floor is a metric value; a ceiling for the losses and errors), 'positive_rate' "
        "(floor × the test window's positive rate: what a random ranking scores in average precision, so the "
        "floor follows the season) or 'baseline' (floor × what a model without signal scores on the test window: "
        "for rmse/mae the error of predicting one constant, the window's mean/median; 0.9 = 10 % less error).")
    slices: list[str] = Field(default_factory=list, description="Columns whose slices must not degrade.")
    max_slice_degradation: float = Field(default=0.05, ge=0)
    min_slice_positives: int = Field(default=20, gt=0, description=(
        "Rank metrics: a slice with fewer positives in the test window is reported, not judged."))

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in BINARY_METRICS + REGRESSION_METRICS:
            raise ValueError(f"unknown metric {v!r}: one of {', '.join(BINARY_METRICS + REGRESSION_METRICS)}")
        return v

    @field_validator("floor_basis")
    @classmethod
    def _floor_basis(cls, v: str) -> str:
        if v not in ("absolute", "positive_rate", "baseline"):
            raise ValueError(f"floor_basis must be 'absolute', 'positive_rate' or 'baseline', not {v!r}")
        return v

    @model_validator(mode="after")
    def _basis_fits_metric(self) -> GateSpec:
        if self.floor_basis == "positive_rate" and self.metric in REGRESSION_METRICS:
            raise ValueError(f"floor_basis 'positive_rate' has no meaning for {self.metric} (regression): use "
                             "'absolute' or 'baseline'")
        return self


class FallbackSpec(_Strict):
    """Cold start: rows whose entities have no features in a required view are not scored by the model."""

    required_feature_views: list[str] = Field(
        description="Feast views a row must have features from (all of the view's features missing = cold start).")
    segment: list[str] = Field(
        default_factory=list,
        description="Columns of the scoring model; a cold-start row gets its segment's recent label rate.")
    lookback_days: int = Field(default=28, gt=0, description="Label days (final at the cutoff) the rate uses.")
    min_segment_rows: int = Field(
        default=50, gt=0, description="Segments with fewer labelled rows use the overall rate instead.")
    max_share: float = Field(
        ge=0, le=1, description="The fallback-share check fails when more than this share of rows fell back.")


class ScoringSpec(_Strict):
    model: str = Field(
        description="dbt model (schema marts) with one row per entity to score, known before its day: entity "
        "key, date column, join keys, passthrough and segment columns, no outcomes.")
    decision_threshold: float | None = Field(
        default=None, description="Scores at or above it get decision = true (none: no decision). A probability "
        "in (0, 1) for a binary label; any value of the label's unit for regression.")
    chunk_rows: int = Field(default=50_000, gt=0, description="Rows scored per chunk (bounds memory).")
    online_ttl_hours: float = Field(
        default=36, gt=0, description="How long a served prediction stays valid (about 1.5 batch intervals).")
    deadline_local_time: str = Field(
        default="20:00", description="The predictions of a day are in place by this local time on the cutoff's "
        "day (HH:MM, after the cutoff): the predictions' freshness policy.")
    fallback: FallbackSpec


class DriftSpec(_Strict):
    """Drift of each scored day against the reference frozen with the model version (the rule: lib/drift.py)."""

    reference_rows: int = Field(default=5000, gt=0, description="Training-window rows frozen as the reference.")
    wasserstein_warn: float = Field(default=0.1, gt=0, description="Numeric column: normed Wasserstein (reference "
                                    "std devs) below which it is never WARN.")
    wasserstein_error: float = Field(default=0.15, gt=0, description="... below which it is never ERROR.")
    psi_warn: float = Field(default=0.1, gt=0, description="Categorical column / binned score: PSI below which it "
                            "is never WARN.")
    psi_error: float = Field(default=0.25, gt=0, description="... below which it is never ERROR.")
    calibration_ratio: float = Field(default=2.25, ge=1, description="A distance is ERROR beyond this multiple of "
                                     "the largest distance of a training day to the rest of the training window "
                                     "(WARN beyond that largest distance), and beyond the floors above.")
    min_error_columns: int = Field(default=1, gt=0, description="The day's drift is ERROR when at least this many "
                                   "groups of feature columns (correlated columns form one group) have an ERROR "
                                   "distance; a missing-share or score ERROR is enough on its own.")
    missing_share_jump: float = Field(default=0.1, gt=0, le=1, description="A column's missing share is ERROR when "
                                      "it rises above the reference's by more than this (absolute) and beyond the "
                                      "binomial bound; a column entirely missing is always ERROR.")
    missing_share_z: float = Field(default=5.0, gt=0, description="Binomial bound on the missing share, in standard "
                                   "errors of the reference share at the day's row count.")
    exclude: list[str] = Field(default_factory=list,
                               description="Features not tested: those that vary by day by nature (weather of "
                               "the day, calendar position), whose day-to-day change is not a population shift.")

    @model_validator(mode="after")
    def _floors_ordered(self) -> DriftSpec:
        if self.wasserstein_warn > self.wasserstein_error or self.psi_warn > self.psi_error:
            raise ValueError("drift WARN floors must not exceed the ERROR floors")
        return self


class RetrainSpec(_Strict):
    """When the retraining sensor requests a retrain (it never promotes: the retrain ends at the gate)."""

    window_partitions: int = Field(default=5, gt=0, description="The last N scored days the rule looks at.")
    drift_error_partitions: int = Field(default=3, gt=0,
                                        description="Retrain when at least this many of them had ERROR drift...")
    accuracy_failures: int = Field(default=2, gt=0,
                                   description="...or this many failed the production-accuracy check.")
    cooldown_hours: float = Field(default=24, ge=0,
                                  description="No second request for the spec within this time of the last one.")


class MonitoringSpec(_Strict):
    drift: DriftSpec = Field(default_factory=DriftSpec)
    accuracy_tolerance: float = Field(
        default=0.05, ge=0, description="Production metric may fall below validation by at most this.")
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)
    max_model_age_days: int = Field(default=45, gt=0, description="Freshness: the champion's maximum age.")


class PromotionSpec(_Strict):
    """The lifecycle after a passed gate: shadow, shadow comparison on final labels, canary, promotion; rollback
    (see :mod:`batch_platform.lib.promotion`)."""

    shadow_min_days: int = Field(default=3, ge=0, description=(
        "Shadow days with final labels before the comparison decides (0: promote when the gate passes)."))
    shadow_min_rows: int = Field(default=1000, ge=0, description="... and at least this many model-scored rows.")
    shadow_max_days: int = Field(default=14, gt=0, description=(
        "A challenger not confirmed after this many shadow (or canary) days is withdrawn."))
    canary_share: float = Field(default=0.0, ge=0, lt=1, description=(
        "Share of keys the challenger serves after a confirmed shadow comparison (0: no canary)."))
    canary_min_days: int = Field(default=2, gt=0, description="Canary days with final labels before promotion.")
    rollback_window_days: int = Field(default=7, gt=0, description=(
        "Days after a promotion during which the new champion is rolled back automatically."))
    rollback_min_days: int = Field(default=3, ge=3, description=(
        "Days served by the new champion with final labels before a rollback can be decided (at least 3: whole "
        "days are resampled, and two days hold no interval)."))
    rollback_floor: float | None = Field(default=None, description=(
        "Hard floor on the new champion's production metric (a ceiling for log_loss); none: no floor."))


class ModelSpec(_Strict):
    name: str
    description: str
    objective: str | None = Field(default=None, description=(
        "LightGBM objective. Follows the gate metric: 'binary' for a binary metric (the only one); for rmse/mae "
        "'regression' (squared error, the default), 'regression_l1', 'huber', 'poisson' (counts), 'tweedie' or "
        "'gamma'."))
    entity: EntitySpec
    label: LabelSpec
    cutoff: CutoffSpec
    feature_service: str
    passthrough_features: list[str] = Field(default_factory=list)
    categorical_features: list[str] = Field(default_factory=list)
    windows: WindowSpec
    gate: GateSpec
    scoring: ScoringSpec
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)

    @model_validator(mode="after")
    def _identifiers(self) -> ModelSpec:
        fallback = self.scoring.fallback
        _names(self.feature_service, self.scoring.model, *self.passthrough_features, *self.categorical_features,
               *self.gate.slices, *fallback.required_feature_views, *fallback.segment,
               *self.monitoring.drift.exclude)
        return self

    @model_validator(mode="after")
    def _objective_fits_metric(self) -> ModelSpec:
        if self.is_regression:
            if self.objective not in (None, *REGRESSION_OBJECTIVES):
                raise ValueError(f"objective {self.objective!r} does not fit the regression metric "
                                 f"{self.gate.metric}: one of {', '.join(REGRESSION_OBJECTIVES)}")
            if self.promotion.rollback_floor is not None and self.promotion.rollback_floor < 0:
                raise ValueError("promotion.rollback_floor is an error ceiling for a regression metric: >= 0")
        else:
            if self.objective not in (None, "binary"):
                raise ValueError(f"objective {self.objective!r} does not fit the binary metric {self.gate.metric}: "
                                 "'binary'")
            t = self.scoring.decision_threshold
            if t is not None and not 0 < t < 1:
                raise ValueError(f"scoring.decision_threshold {t} must be a probability in (0, 1) for a binary label")
        return self

    @property
    def is_regression(self) -> bool:
        """A numeric label judged by an error (rmse, mae); otherwise a binary label and a probability score."""
        return self.gate.metric in REGRESSION_METRICS

    @property
    def lightgbm_objective(self) -> str:
        return self.objective or ("regression" if self.is_regression else "binary")

    @property
    def label_sql_type(self) -> str:
        """The SQL type the label is read as: 0/1 for a binary label, a double for regression."""
        return "DOUBLE" if self.is_regression else "INTEGER"

    @model_validator(mode="after")
    def _deadline_after_cutoff(self) -> ModelSpec:
        cutoff = dt.time.fromisoformat(self.cutoff.local_time)
        deadline = dt.time.fromisoformat(self.scoring.deadline_local_time)
        if deadline <= cutoff:
            raise ValueError(f"scoring.deadline_local_time {self.scoring.deadline_local_time} must be after the "
                             f"cutoff {self.cutoff.local_time} (same day: predictions are made after the cutoff)")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"name {v!r} must be lower_snake_case (it becomes asset and table names)")
        return v

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()

    # -- time rules ------------------------------------------------------------------------------------
    def prediction_cutoff(self, day: dt.date) -> dt.datetime:
        """The instant (UTC) up to which features may be valid when predicting ``day``."""
        local = dt.datetime.combine(day - dt.timedelta(days=self.cutoff.days_before),
                                    dt.time.fromisoformat(self.cutoff.local_time), ZoneInfo(self.cutoff.timezone))
        return local.astimezone(dt.UTC)

    def prediction_deadline(self, day: dt.date) -> dt.datetime:
        """The instant (UTC) by which the predictions of ``day`` are in place."""
        local = dt.datetime.combine(day - dt.timedelta(days=self.cutoff.days_before),
                                    dt.time.fromisoformat(self.scoring.deadline_local_time),
                                    ZoneInfo(self.cutoff.timezone))
        return local.astimezone(dt.UTC)

    def label_final_at(self, day: dt.date) -> dt.datetime:
        """The instant (UTC) from which the labels of ``day`` are final."""
        local = dt.datetime.combine(day + dt.timedelta(days=self.label.embargo_days),
                                    dt.time.fromisoformat(self.label.final_local_time), ZoneInfo(self.cutoff.timezone))
        return local.astimezone(dt.UTC)

    def last_final_day(self, training_cutoff: dt.datetime) -> dt.date:
        """The last entity day whose labels are all final at ``training_cutoff``."""
        day = training_cutoff.astimezone(ZoneInfo(self.cutoff.timezone)).date()
        while self.label_final_at(day) > training_cutoff:
            day -= dt.timedelta(days=1)
        return day

    def split_days(self, training_cutoff: dt.datetime) -> dict[str, tuple[dt.date, dt.date]]:
        """Consecutive (first, last) day windows for train / validation / test, ending at the last final day."""
        end = self.last_final_day(training_cutoff)
        w = self.windows
        test = (end - dt.timedelta(days=w.test_days - 1), end)
        val = (test[0] - dt.timedelta(days=w.validation_days), test[0] - dt.timedelta(days=1))
        train = (val[0] - dt.timedelta(days=w.train_days), val[0] - dt.timedelta(days=1))
        return {"train": train, "validation": val, "test": test}


def specs_dir() -> Path:
    return project.specs_dir()


def load_spec(path: Path) -> ModelSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ModelSpecError(f"{path}: cannot read model spec: {e}") from e
    if not isinstance(raw, dict):
        raise ModelSpecError(f"{path}: a model spec is a YAML mapping")
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as e:
        raise ModelSpecError(f"{path}: invalid model spec:\n{e}") from e
    if path.stem != spec.name:
        raise ModelSpecError(f"{path}: file name must be the spec name ({spec.name}.yaml)")
    return spec


def load_specs(directory: Path | None = None) -> dict[str, ModelSpec]:
    directory = directory or specs_dir()
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ModelSpecError(f"no model specs (*.yaml) in {directory}")
    specs = [load_spec(f) for f in files]
    _check_time_model(specs)
    return {s.name: s for s in specs}


def _check_time_model(specs: list[ModelSpec]) -> None:
    """Labels final no earlier than the time model's rule for their feed (the rule outcome-derived features follow
    too), and the scored frame published by the prediction cutoff."""
    from batch_platform.lib.time_model import TimeModelError, load_time_model

    tm = load_time_model()
    for spec in specs:
        try:
            tm.check_label_embargo(spec)
            tm.check_cutoff(spec)
        except TimeModelError as e:
            raise ModelSpecError(str(e)) from e
