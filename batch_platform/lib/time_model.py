"""The time model: when raw data is published and final, from when features are valid, when labels are final.

Declared in ``batch_platform/time_model.yaml`` (or the file in ``BATCH_PLATFORM_TIME_MODEL``), with each raw
table's publication and final times in its source contract (``published``, ``final``), and used by every
stage: the landing replay stamps each manifest with its batch's ``published_at`` (:func:`TimeModel.published_at`);
ingest records ``published_at`` and ``final_at`` per batch in the warehouse's load log; dbt computes each feature
row's ``feature_ts`` from those recorded instants; model specs are checked against the label rule
(:func:`TimeModel.check_label_embargo`); :mod:`batch_platform.lib.publication_check` verifies the feature tables
against the declaration, independently of the SQL that built them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batch_platform.lib import project

TIME_MODEL_VAR = project.TIME_MODEL_VAR
DEFAULT_TIME_MODEL = Path(__file__).resolve().parent.parent / "time_model.yaml"


class TimeModelError(ValueError):
    """The time model file is missing or inconsistent, or something disagrees with it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalTimeRule(_Strict):
    day_offset: int = Field(description="Days after the batch's day D (negative: before).")
    local_time: str = Field(description="Local wall-clock time HH:MM on that day.")

    @field_validator("local_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        dt.time.fromisoformat(v)
        return v

    def at(self, day: dt.date, tz: ZoneInfo) -> dt.datetime:
        local = dt.datetime.combine(day + dt.timedelta(days=self.day_offset), dt.time.fromisoformat(self.local_time),
                                    tz)
        return local.astimezone(dt.UTC)


class FeedRule(_Strict):
    published: LocalTimeRule
    final: LocalTimeRule | None = Field(default=None, description="Default: final when published.")
    snapshot: bool = Field(default=False, description="A reference snapshot (no day partitions).")


class FeatureRule(_Strict):
    feed: str
    day_column: str | None = Field(default=None, description="The row's day (daily feeds).")
    lookback_days: int = Field(default=1, gt=0, description="Batches read per row, ending at its day.")
    valid_when: str = Field(description="'published' or 'final': which instant of those batches the row waits for.")

    @field_validator("valid_when")
    @classmethod
    def _when(cls, v: str) -> str:
        if v not in ("published", "final"):
            raise ValueError(f"valid_when must be 'published' or 'final', not {v!r}")
        return v


class FeedRef(_Strict):
    """A label model or a scored frame: the feed it is computed from."""

    feed: str


class ServiceLevels(_Strict):
    """What the freshness policies hold the platform to, counted from the publication times above."""

    raw_loaded_within_hours: float = Field(default=2, gt=0, description="A published batch is in the "
                                           "warehouse within this many hours of its publication time.")
    features_built_within_hours: float = Field(default=1, gt=0, description="The feature tables are rebuilt "
                                               "within this many hours of their raw inputs' deadline.")


class TimeModelSpec(_Strict):
    timezone: str
    feeds: dict[str, FeedRule] = Field(description="Per raw table, from its source contract (published, final).")
    features: dict[str, FeatureRule]
    labels: dict[str, FeedRef] = Field(default_factory=dict)
    frames: dict[str, FeedRef] = Field(default_factory=dict)
    service_levels: ServiceLevels = Field(default_factory=ServiceLevels)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        ZoneInfo(v)
        return v

    @model_validator(mode="after")
    def _feeds_exist(self) -> TimeModelSpec:
        for kind, rules in (("feature", self.features), ("label", self.labels), ("frame", self.frames)):
            for name, rule in rules.items():
                if rule.feed not in self.feeds:
                    raise ValueError(f"{kind} {name!r} names unknown feed {rule.feed!r}")
        for name, rule in self.features.items():
            feed = self.feeds[rule.feed]
            if not feed.snapshot and rule.day_column is None:
                raise ValueError(f"feature {name!r} reads the daily feed {rule.feed!r}: it needs a day_column")
        return self


@dataclass(frozen=True)
class TimeModel:
    spec: TimeModelSpec
    source: Path

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.spec.timezone)

    def feed(self, table: str, contract=None) -> FeedRule:
        """The feed rule of ``table``: as its ``contract`` declares it when given, else the declared table's."""
        if contract is not None:
            return contract_feeds([contract])[contract.table]
        try:
            return self.spec.feeds[table]
        except KeyError:
            raise TimeModelError(f"{self.source}: no feed {table!r} in the time model") from None

    def published_at(self, table: str, day: dt.date, contract=None) -> dt.datetime:
        """When the batch of ``table`` for day ``day`` is published (UTC). For a snapshot, ``day`` is the first
        data day it serves."""
        return self.feed(table, contract).published.at(day, self.tz)

    def final_at(self, table: str, day: dt.date, published_at: dt.datetime | None = None,
                 contract=None) -> dt.datetime:
        """When the batch of ``table`` for ``day`` is final: its feed's ``final`` rule, never before it was
        published (``published_at``, default the rule's publication time)."""
        rule = self.feed(table, contract)
        published = published_at or self.published_at(table, day, contract)
        if rule.final is None:
            return published
        return max(published, rule.final.at(day, self.tz))

    def label_final_at(self, label_model: str, day: dt.date) -> dt.datetime:
        try:
            feed = self.spec.labels[label_model].feed
        except KeyError:
            raise TimeModelError(f"{self.source}: label model {label_model!r} has no rule (labels:)") from None
        return self.final_at(feed, day)

    def last_published_day(self, table: str, now: dt.datetime) -> dt.date:
        """The newest day whose batch of ``table`` is published at ``now``."""
        day = now.astimezone(self.tz).date() - dt.timedelta(days=self.feed(table).published.day_offset)
        while self.published_at(table, day) > now:
            day -= dt.timedelta(days=1)
        return day

    def check_label_embargo(self, spec) -> None:
        """A spec's labels may not be final before the time model says its label model's feed is final (so the
        labels and the outcome-derived features follow one rule). Raises :class:`TimeModelError`."""
        rule = self.spec.labels.get(spec.label.model)
        if rule is None:
            return
        probe = [dt.date(2013, 1, 7) + dt.timedelta(days=i) for i in range(0, 365, 7)]
        for day in probe:
            if spec.label_final_at(day) < self.label_final_at(spec.label.model, day):
                raise TimeModelError(
                    f"{spec.name}: labels of {day} would be final at {spec.label_final_at(day).isoformat()}, before "
                    f"feed {rule.feed!r} is final ({self.label_final_at(spec.label.model, day).isoformat()}): raise "
                    f"label.embargo_days to match the time model ({self.source.name})")

    def check_cutoff(self, spec) -> None:
        """The frame a spec scores must be published by its prediction cutoff."""
        rule = self.spec.frames.get(spec.scoring.model)
        if rule is None:
            return
        for day in (dt.date(2013, 1, 7), dt.date(2013, 7, 1)):
            if self.published_at(rule.feed, day) > spec.prediction_cutoff(day):
                raise TimeModelError(
                    f"{spec.name}: the prediction cutoff of {day} ({spec.prediction_cutoff(day).isoformat()}) is "
                    f"before {rule.feed!r} is published ({self.published_at(rule.feed, day).isoformat()})")


def time_model_path() -> Path:
    return project.part(TIME_MODEL_VAR, DEFAULT_TIME_MODEL)


def contract_feeds(contracts) -> dict[str, FeedRule]:
    """The feed rule of each raw table, as its source contract declares it (``published``, ``final``)."""

    def rule(p) -> LocalTimeRule | None:
        return None if p is None else LocalTimeRule(day_offset=p.day_offset, local_time=p.local_time)

    return {c.table: FeedRule(published=rule(c.published), final=rule(c.final), snapshot=c.is_snapshot)
            for c in contracts}


@cache
def _load(path: Path, mtime_ns: int, contracts: tuple | None = None) -> TimeModel:
    from batch_platform.lib.contracts import ALL_CONTRACTS

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise TimeModelError(f"{path}: cannot read the time model: {e}") from e
    if isinstance(raw, dict) and "feeds" in raw:
        raise TimeModelError(f"{path}: 'feeds' is not a time model field: each raw table's publication times are "
                             "declared in its source contract (published, final)")
    try:
        feeds = contract_feeds(ALL_CONTRACTS if contracts is None else contracts)
        return TimeModel(TimeModelSpec.model_validate({**(raw or {}), "feeds": feeds}), path)
    except ValidationError as e:
        raise TimeModelError(f"{path}: invalid time model:\n{e}") from e


def load_time_model(path: Path | None = None, contracts=None) -> TimeModel:
    """The time model of ``path`` (default :func:`time_model_path`) over the declared source contracts (or over
    ``contracts``: another project's, e.g. an example's read by a process configured for flights)."""
    path = Path(path or time_model_path())
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise TimeModelError(f"{path}: no time model file: {e}") from e
    return _load(path, mtime, None if contracts is None else tuple(contracts))


__all__ = ["TimeModel", "TimeModelError", "load_time_model", "time_model_path"]
