"""Operational service-level indicators (SLIs) of one model spec for one platform day, from plain inputs (run
records, alias-log entries, check and materialization metadata, rows of ``monitoring.production_accuracy``).

**The platform day.** Runs, promotions and trainings happen at wall-clock instants, while partitions are data days
(on the 2013 replay they are not even this year's). An instant belongs to the data day that was current then: the
local date of the newest batch publication loaded into the warehouse by that instant (the load history's
``loaded_at`` / ``published_at``; see :class:`PlatformDays`). On the live clock a day so runs from one morning's
publication to the next; on a replay, everything done after the last load belongs to the newest data day. Ages are
measured on the same data clock (publication instants), so they mean the same on both clocks.

**The SLIs of day D** (``None`` when there is nothing to measure; the asset shows it as NaN):

- ``pipeline_success_rate``: runs created during D that succeeded / runs created during D that ended (succeeded,
  failed or canceled); runs still queued or running are not counted. Platform-wide (runs are not per spec).
- ``model_age_days``: the champion at the end of D (the last champion move of the alias log before then), its
  version's registration instant to the end of D, on the data clock, in days.
- ``feature_age_hours``: the newest feature build before the end of D, how many hours of loaded publications it
  lags: newest publication loaded by the end of D minus newest publication loaded when the build ran (0: the
  features were rebuilt after the last load).
- ``production_gap``: of the newest flight day up to D with a measured production accuracy, the champion's row (the
  version that scored most rows): validation minus production for a higher-is-better metric (production minus
  validation otherwise), the ``degradation`` the accuracy check holds to its tolerance; positive = worse.
- ``drift_score``: of the drift check of D's predictions (the newest evaluation), the share of tested columns at
  WARN or ERROR (0..1), beside the count of ERROR columns and the largest normed Wasserstein distance and PSI.
- ``promotions_attempted``: model versions put up for champion during D: gated (``gate_vs_champion`` evaluated) or
  promoted; ``promotions_failed``: of those, versions whose last gate of D failed and which were not promoted;
  ``promotions_succeeded``: champion promotions of D; ``rollbacks``: champion rollbacks of D.
- ``training_seconds`` / ``peak_memory_mb`` / ``training_memory_increase_mb``: of the candidates trained in runs
  created during D, the longest training and the largest peak (see :class:`batch_platform.lib.resource_usage.PeakRss`), ``trainings`` their count.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

SUCCESS = "SUCCESS"
FAILED = frozenset({"FAILURE", "CANCELED"})
CHAMPION = "champion"
PROMOTE, ROLLBACK = "promote", "rollback"
WARN, ERROR = "WARN", "ERROR"


def _utc(t: dt.datetime | str) -> dt.datetime:
    t = dt.datetime.fromisoformat(t) if isinstance(t, str) else t
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


# ------------------------------------------------------------------------------------------------ the platform day
@dataclass(frozen=True)
class Load:
    """One batch load of the warehouse's load history: when it was loaded and when the batch was published."""

    loaded_at: dt.datetime
    published_at: dt.datetime


class PlatformDays:
    """Maps wall-clock instants to data days through the load history (see the module docstring)."""

    def __init__(self, loads: Iterable[Load], timezone: str):
        self.tz = ZoneInfo(timezone)
        ordered = sorted((_utc(ld.loaded_at), _utc(ld.published_at)) for ld in loads if ld.published_at is not None)
        self._loaded = [at for at, _ in ordered]
        self._newest: list[dt.datetime] = []  # running max of published_at, by load instant
        for _, published in ordered:
            self._newest.append(max(published, self._newest[-1]) if self._newest else published)

    def published_before(self, t: dt.datetime) -> dt.datetime | None:
        """The data clock at ``t``: the newest publication among batches loaded before ``t`` (None: none yet)."""
        i = bisect.bisect_left(self._loaded, _utc(t))
        return self._newest[i - 1] if i else None

    def day_of(self, t: dt.datetime) -> dt.date | None:
        now = self.published_before(t)
        return None if now is None else now.astimezone(self.tz).date()

    def _start(self, day: dt.date) -> dt.datetime | None:
        """The first instant whose data day is ``day`` or later."""
        for loaded, newest in zip(self._loaded, self._newest):
            if newest.astimezone(self.tz).date() >= day:
                return loaded + dt.timedelta(microseconds=1)  # published_before is strict
        return None

    def window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime | None] | None:
        """The wall-clock interval ``[start, end)`` whose instants belong to ``day`` (``end`` None: ``day`` is still
        the current data day); None when ``day`` was never current (not loaded yet, or skipped by a catch-up)."""
        start, end = self._start(day), self._start(day + dt.timedelta(days=1))
        if start is None or (end is not None and end <= start):
            return None
        return start, end


def in_window(t: dt.datetime | str, window: tuple[dt.datetime, dt.datetime | None] | None) -> bool:
    if window is None:
        return False
    t = _utc(t)
    return window[0] <= t and (window[1] is None or t < window[1])


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class RunRecord:
    run_id: str
    status: str  # Dagster's run status name: SUCCESS, FAILURE, CANCELED, STARTED, QUEUED, ...
    created_at: dt.datetime


@dataclass(frozen=True)
class AliasMove:
    alias: str
    action: str  # promote | rollback | set | clear
    to_version: int | None
    at: str | dt.datetime


@dataclass(frozen=True)
class GateEvaluation:
    candidate_version: int
    passed: bool
    at: dt.datetime  # when the candidate it judged was materialized


@dataclass(frozen=True)
class AccuracyRow:
    """One row of ``monitoring.production_accuracy`` (the columns the SLIs read)."""

    partition_date: dt.date
    model_version: int
    value: float | None
    validation_value: float | None
    degradation: float | None
    rows: int


# ------------------------------------------------------------------------------------------------ the SLIs
def _finite(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def pipeline_runs(runs: Iterable[RunRecord]) -> dict[str, float | int | None]:
    runs = list(runs)
    succeeded = sum(r.status == SUCCESS for r in runs)
    failed = sum(r.status in FAILED for r in runs)
    ended = succeeded + failed
    return {"pipeline_success_rate": succeeded / ended if ended else None, "runs_succeeded": succeeded,
            "runs_failed": failed, "runs_not_ended": len(runs) - ended}


def champion_at(moves: Iterable[AliasMove], end: dt.datetime | None) -> int | None:
    """The version the champion alias pointed at just before ``end`` (None: now), from the alias log."""
    version = None
    for m in sorted((m for m in moves if m.alias == CHAMPION), key=lambda m: _utc(m.at)):
        if end is not None and _utc(m.at) >= end:
            break
        version = m.to_version
    return version


def model_age_days(days: PlatformDays, created_at: dt.datetime | str | None, as_of: dt.datetime) -> float | None:
    """Days on the data clock from a version's registration to ``as_of``."""
    if created_at is None:
        return None
    then, now = days.published_before(_utc(created_at)), days.published_before(as_of)
    if then is None or now is None:
        return None
    return (now - then).total_seconds() / 86400


def feature_age_hours(days: PlatformDays, built_at: dt.datetime | None, as_of: dt.datetime) -> float | None:
    """Hours of loaded publications the feature build at ``built_at`` lags at ``as_of``."""
    if built_at is None:
        return None
    then, now = days.published_before(built_at), days.published_before(as_of)
    if now is None:
        return None
    if then is None:  # built before any load: as old as all the data
        return None
    return (now - then).total_seconds() / 3600


def production_gap(rows: Iterable[AccuracyRow], day: dt.date) -> dict:
    """The champion's gap on the newest flight day up to ``day`` with a measured production accuracy."""
    rows = [r for r in rows if r.partition_date <= day]
    if not rows:
        return {"production_gap": None, "production_value": None, "validation_value": None,
                "production_gap_flight_day": None, "production_gap_version": None}
    newest = max(r.partition_date for r in rows)
    champion = max((r for r in rows if r.partition_date == newest), key=lambda r: (r.rows, r.model_version))
    return {"production_gap": _finite(champion.degradation), "production_value": _finite(champion.value),
            "validation_value": _finite(champion.validation_value), "production_gap_flight_day": newest.isoformat(),
            "production_gap_version": champion.model_version}


def drift_score(check: Mapping | None) -> dict:
    """From the metadata of one drift check evaluation (``drift_severity``, ``error_columns``, ``warn_columns``,
    ``columns_tested``, ``column_values`` keyed ``<column>:<method>``)."""
    empty = {"drift_score": None, "drift_error_columns": None, "drift_max_wasserstein": None, "drift_max_psi": None}
    if not check or not check.get("columns_tested"):
        return empty
    errors, warns = len(check.get("error_columns") or []), len(check.get("warn_columns") or [])
    values = check.get("column_values") or {}

    def largest(method: str) -> float | None:
        vs = [float(v) for k, v in values.items() if k.rsplit(":", 1)[-1] == method]
        return max(vs) if vs else None

    return {"drift_score": (errors + warns) / int(check["columns_tested"]), "drift_error_columns": errors,
            "drift_max_wasserstein": largest("wasserstein"), "drift_max_psi": largest("psi")}


def promotions(gates: Iterable[GateEvaluation], moves: Iterable[AliasMove]) -> dict[str, int]:
    """Gate evaluations and champion moves of one day (see the module docstring)."""
    last_gate: dict[int, GateEvaluation] = {}
    for g in sorted(gates, key=lambda g: g.at):
        last_gate[g.candidate_version] = g
    champion_moves = [m for m in moves if m.alias == CHAMPION]
    promoted = {m.to_version for m in champion_moves if m.action == PROMOTE}
    attempted = set(last_gate) | promoted
    failed = {v for v, g in last_gate.items() if not g.passed and v not in promoted}
    return {"promotions_attempted": len(attempted), "promotions_failed": len(failed),
            "promotions_succeeded": sum(m.action == PROMOTE for m in champion_moves),
            "rollbacks": sum(m.action == ROLLBACK for m in champion_moves)}


TRAINING_KEYS = ("training_seconds", "peak_memory_mb", "training_memory_increase_mb")


def training(candidates: Iterable[Mapping]) -> dict:
    """From the metadata of the candidate materializations of one day: the largest of each measurement."""
    candidates = list(candidates)
    out: dict = {"trainings": len(candidates)}
    for k in TRAINING_KEYS:
        vs = [v for c in candidates if (v := _finite(c.get(k))) is not None]
        out[k] = max(vs) if vs else None
    return out


# ------------------------------------------------------------------------------------------------ one day
@dataclass
class DaySlis:
    spec: str
    day: dt.date
    values: dict = field(default_factory=dict)

    NUMERIC = ("pipeline_success_rate", "runs_succeeded", "runs_failed", "runs_not_ended", "model_age_days",
               "feature_age_hours", "production_gap", "production_value", "validation_value", "drift_score",
               "drift_error_columns", "drift_max_wasserstein", "drift_max_psi", "promotions_attempted",
               "promotions_failed", "promotions_succeeded", "rollbacks", "trainings", *TRAINING_KEYS)

    def numeric(self) -> dict[str, float]:
        """Every numeric SLI (NaN where there was nothing to measure), for top-level metadata entries."""
        return {k: float("nan") if self.values.get(k) is None else self.values[k] for k in self.NUMERIC}

    def markdown(self) -> str:
        def fmt(v) -> str:
            if v is None:
                return "n/a"
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        lines = [f"**{self.spec}, platform day {self.day.isoformat()}**", "", "| SLI | value |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in self.values.items()]
        return "\n".join(lines)


def day_slis(spec: str, day: dt.date, *, days: PlatformDays, now: dt.datetime, runs: Iterable[RunRecord],
             moves: Iterable[AliasMove], created_at: Mapping[int, str | dt.datetime],
             feature_built_at: dt.datetime | None, accuracy: Iterable[AccuracyRow], drift_check: Mapping | None,
             gates: Iterable[GateEvaluation], candidates: Iterable[Mapping]) -> DaySlis:
    """Every SLI of ``day``. ``runs`` / ``gates`` / ``candidates`` may hold other days' too (filtered here by the
    platform day); ``moves`` is the spec's whole alias log; ``created_at`` each version's registration instant;
    ``feature_built_at`` the newest feature build before the end of the day; ``drift_check`` the metadata of the
    newest drift evaluation of the day's predictions; ``candidates`` the candidate metadata of the day's runs."""
    window = days.window(day)
    end = window[1] if window else None
    # the last instant of the day (or now, for the current day)
    as_of = min(end - dt.timedelta(microseconds=1), _utc(now)) if end is not None else _utc(now)
    moves = list(moves)
    champion = champion_at(moves, end) if window else None
    values: dict = {}
    values |= pipeline_runs(r for r in runs if in_window(r.created_at, window))
    values["champion_version"] = champion
    values["model_age_days"] = (model_age_days(days, created_at.get(champion), as_of)
                                if window and champion is not None else None)
    values["feature_age_hours"] = feature_age_hours(days, feature_built_at, as_of) if window else None
    values |= production_gap(accuracy, day)
    values |= drift_score(drift_check)
    values |= promotions((g for g in gates if in_window(g.at, window)), (m for m in moves if in_window(m.at, window)))
    values |= training(candidates)
    return DaySlis(spec, day, values)
