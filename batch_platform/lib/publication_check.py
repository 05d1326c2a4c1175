"""The publication-time leakage check: no feature row is valid before the raw data it was computed from was
published (and, for outcome-derived features, final).

It reads three things and nothing else: the feature tables (parquet, as Feast serves them), the load log
(``raw._batch_loads``: each batch's ``published_at`` from its manifest and ``final_at`` from the time model, as
ingest recorded them) and the time model's declaration of which feed and how many days of batches each feature table
reads (``features:``). It does not look at how dbt computed ``feature_ts``, so a feature back-dated by a change to the
SQL (or by hand) fails it, while a restatement of Feast's own point-in-time join could not.

Per feature row of day X it requires: the feed's batch of X is loaded, and ``feature_ts`` is no earlier than the
newest ``valid_when`` instant (``published_at``, or ``final_at`` for features built from outcomes) of the feed's
batches of the ``lookback_days`` days ending at X. A snapshot feed's rows must be no earlier than the snapshot's
publication. Frames (``frames:``): every day's scoring frame batch must be published by each spec's prediction cutoff.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from batch_platform.lib.feature_generations import feature_table
from batch_platform.lib.time_model import TimeModel
from batch_platform.lib.warehouse import LOADS_TABLE, table_exists

MAX_EXAMPLES = 5


@dataclass
class TableResult:
    table: str
    feed: str
    valid_when: str
    rows: int = 0
    early_rows: int = 0
    """Rows valid before their raw data was published / final."""
    unbacked_rows: int = 0
    """Rows of a day whose batch of the feed is not loaded at all."""
    examples: list[str] = field(default_factory=list)
    missing_file: bool = False

    @property
    def passed(self) -> bool:
        return not self.missing_file and not self.early_rows and not self.unbacked_rows


@dataclass
class PublicationReport:
    tables: list[TableResult]
    frame_violations: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tables) and not self.frame_violations

    def describe(self) -> str:
        if self.passed:
            n = sum(t.rows for t in self.tables)
            return (f"{n} feature rows in {len(self.tables)} tables: every row valid no earlier than its raw "
                    "batches were published (final, for outcome-derived features)")
        parts = []
        for t in self.tables:
            if t.missing_file:
                parts.append(f"{t.table}: no feature file")
            if t.early_rows:
                parts.append(f"{t.table}: {t.early_rows} of {t.rows} row(s) valid before their {t.feed} batches were "
                             f"{t.valid_when}")
            if t.unbacked_rows:
                parts.append(f"{t.table}: {t.unbacked_rows} row(s) of a day with no {t.feed} batch loaded")
        parts += self.frame_violations[:MAX_EXAMPLES]
        return "; ".join(parts)

    def as_metadata(self) -> dict:
        return {t.table: {"rows": t.rows, "early_rows": t.early_rows, "unbacked_rows": t.unbacked_rows,
                          "feed": t.feed, "valid_when": t.valid_when, "examples": t.examples}
                for t in self.tables}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_feature_tables(con: duckdb.DuckDBPyConnection, features_dir: Path, time_model: TimeModel,
                         specs=()) -> PublicationReport:
    """Check every feature table the time model declares (see the module docstring); ``specs``: model specs whose
    prediction cutoffs the scoring frames must precede."""
    if not table_exists(con, *LOADS_TABLE.split(".")):
        loads = "(SELECT NULL::VARCHAR AS feed, NULL::DATE AS batch_date, NULL::TIMESTAMPTZ AS published_at, " \
                "NULL::TIMESTAMPTZ AS final_at WHERE false)"
    else:
        loads = (f"(SELECT replace(table_name, 'raw.', '') AS feed, TRY_CAST(partition_key AS DATE) AS batch_date, "
                 f"published_at, final_at FROM {LOADS_TABLE})")
    results = []
    for table, rule in time_model.spec.features.items():
        feed = time_model.feed(rule.feed)
        result = TableResult(table, rule.feed, rule.valid_when)
        results.append(result)
        path = feature_table(features_dir, table)
        if not path.exists():
            result.missing_file = True
            continue
        when = f"{rule.valid_when}_at"
        src = f"read_parquet('{str(path).replace(chr(39), chr(39) * 2)}')"
        if feed.snapshot:
            sql = f"""
                WITH f AS (SELECT feature_ts, count(*) AS n FROM {src} GROUP BY feature_ts),
                s AS (SELECT max({when}) AS required FROM {loads} WHERE feed = ? AND batch_date IS NULL)
                SELECT CAST(NULL AS DATE) AS day, f.feature_ts, f.n, s.required, s.required IS NOT NULL AS backed
                FROM f CROSS JOIN s"""
        else:
            day = _q(rule.day_column)
            sql = f"""
                WITH f AS (SELECT CAST({day} AS DATE) AS day, feature_ts, count(*) AS n FROM {src} GROUP BY ALL),
                b AS (SELECT batch_date, {when} AS t FROM {loads} WHERE feed = ? AND batch_date IS NOT NULL)
                SELECT f.day, f.feature_ts, f.n,
                    (SELECT max(b.t) FROM b WHERE b.batch_date BETWEEN f.day - {rule.lookback_days - 1} AND f.day)
                        AS required,
                    EXISTS (SELECT 1 FROM b WHERE b.batch_date = f.day) AS backed
                FROM f"""
        rows = con.execute(sql, [rule.feed]).fetchall()
        for day, feature_ts, n, required, backed in rows:
            result.rows += n
            if not backed:
                result.unbacked_rows += n
                if len(result.examples) < MAX_EXAMPLES:
                    result.examples.append(f"{day}: no {rule.feed} batch loaded, yet {n} row(s) valid from {feature_ts}")
            elif required is not None and feature_ts < required:
                result.early_rows += n
                if len(result.examples) < MAX_EXAMPLES:
                    result.examples.append(f"{day or 'snapshot'}: {n} row(s) valid from {feature_ts}, but the "
                                           f"{rule.feed} data they use was {rule.valid_when} at {required}")
    report = PublicationReport(results)
    for spec in specs:
        feeds = {rule.feed for frame, rule in time_model.spec.frames.items()
                 if frame in (spec.scoring.model, spec.label.model)}
        for feed_name in sorted(feeds):
            published = con.execute(
                f"SELECT batch_date, published_at FROM {loads} WHERE feed = ? AND batch_date IS NOT NULL "
                "ORDER BY batch_date", [feed_name]).fetchall()
            for day, at in published:
                cutoff = spec.prediction_cutoff(day)
                if at > cutoff:
                    report.frame_violations.append(
                        f"{spec.name}: the {feed_name} batch of {day} was published {at.astimezone(dt.UTC)}, after "
                        f"the prediction cutoff {cutoff}")
    return report


__all__ = ["PublicationReport", "TableResult", "check_feature_tables"]
