"""Reading the evidence the promotion lifecycle decides on, from the warehouse: rows scored by two model versions
on the same keys (served table + shadow table), and rows served by one version, each with its final label.

Only model-scored rows count (``fallback_reason`` null in both tables: a cold-start row gets the same fallback
score from every model), and only days whose labels are final at ``now`` (the spec's embargo).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from batch_platform.lib import promotion, scoring
from batch_platform.lib.specs import ModelSpec
from batch_platform.lib.training_set import LABEL_SCHEMA
from batch_platform.lib.warehouse import table_exists


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".", 1)
    return table_exists(con, schema, name)


def paired_rows(con: duckdb.DuckDBPyConnection, spec: ModelSpec, *, champion: int, challenger: int,
                first_day: dt.date, now: dt.datetime) -> pd.DataFrame:
    """One row per (day, key) from ``first_day`` on, scored by both versions (whichever of the two served it),
    labels final at ``now``: columns ``day``, ``key``, ``y``, ``champion_score``, ``challenger_score``,
    ``served_version``."""
    served, shadow = scoring.table_name(spec), scoring.table_name(spec, shadow=True)
    columns = [promotion.DAY, "key", promotion.LABEL, promotion.CHAMPION_SCORE, promotion.CHALLENGER_SCORE,
               "served_version"]
    last = spec.last_final_day(now)
    if last < first_day or not (_exists(con, served) and _exists(con, shadow)):
        return pd.DataFrame(columns=columns)
    key, part = _q(spec.entity.key), scoring.PARTITION
    return con.execute(
        f"SELECT p.{part} AS {promotion.DAY}, p.{key} AS key, "
        f"CAST({spec.label.sql} AS {spec.label_sql_type}) AS {promotion.LABEL}, "
        f"CASE WHEN p.model_version = $champion THEN p.score ELSE s.score END AS {promotion.CHAMPION_SCORE}, "
        f"CASE WHEN p.model_version = $challenger THEN p.score ELSE s.score END AS {promotion.CHALLENGER_SCORE}, "
        "p.model_version AS served_version "
        f"FROM {served} p JOIN {shadow} s ON s.{part} = p.{part} AND s.{key} = p.{key} "
        f"JOIN {LABEL_SCHEMA}.{spec.label.model} l ON CAST(l.{key} AS VARCHAR) = p.{key} "
        f"WHERE p.{part} BETWEEN $first AND $last AND ({spec.label.sql}) IS NOT NULL "
        "AND p.fallback_reason IS NULL AND s.fallback_reason IS NULL "
        "AND ((p.model_version = $champion AND s.model_version = $challenger) "
        "  OR (p.model_version = $challenger AND s.model_version = $champion)) "
        f"ORDER BY 1, 2",
        {"champion": champion, "challenger": challenger, "first": first_day, "last": last},
    ).df()[columns].pipe(_dates)


def served_rows(con: duckdb.DuckDBPyConnection, spec: ModelSpec, *, version: int, first_day: dt.date,
                now: dt.datetime, last_day: dt.date | None = None) -> pd.DataFrame:
    """The model-scored rows ``version`` served from ``first_day`` (through ``last_day``, if given), labels final at
    ``now``: columns ``day``, ``key``, ``y``, ``champion_score``."""
    served = scoring.table_name(spec)
    columns = [promotion.DAY, "key", promotion.LABEL, promotion.CHAMPION_SCORE]
    last = spec.last_final_day(now) if last_day is None else min(last_day, spec.last_final_day(now))
    if last < first_day or not _exists(con, served):
        return pd.DataFrame(columns=columns)
    key, part = _q(spec.entity.key), scoring.PARTITION
    return con.execute(
        f"SELECT p.{part} AS {promotion.DAY}, p.{key} AS key, "
        f"CAST({spec.label.sql} AS {spec.label_sql_type}) AS {promotion.LABEL}, "
        f"p.score AS {promotion.CHAMPION_SCORE} "
        f"FROM {served} p JOIN {LABEL_SCHEMA}.{spec.label.model} l ON CAST(l.{key} AS VARCHAR) = p.{key} "
        f"WHERE p.{part} BETWEEN $first AND $last AND ({spec.label.sql}) IS NOT NULL "
        "AND p.fallback_reason IS NULL AND p.model_version = $version ORDER BY 1, 2",
        {"version": version, "first": first_day, "last": last},
    ).df()[columns].pipe(_dates)


def _dates(frame: pd.DataFrame) -> pd.DataFrame:
    """DuckDB DATE arrives as datetime64: back to dates (the days compare() names and blocks on)."""
    return frame.assign(**{promotion.DAY: pd.to_datetime(frame[promotion.DAY]).dt.date})
