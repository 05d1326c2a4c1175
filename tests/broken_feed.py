"""A broken feature feed, injected on purpose: within each given flight day, every column of the scoring model's
published rows but the key and the day is shuffled (the same values, on the wrong flights), so a model scoring them
serves noise while every column keeps its distribution (no drift test sees it; only the labels do)."""

from __future__ import annotations

import datetime as dt

import duckdb

from batch_platform.lib.specs import ModelSpec


def misalign_scoring_rows(con: duckdb.DuckDBPyConnection, spec: ModelSpec, days: list[dt.date]) -> int:
    """Shuffle the non-key columns of ``spec``'s scoring rows of ``days`` in the published feature generation;
    returns the rows touched."""
    from batch_platform.lib.feature_generations import published_relation

    table = published_relation(con, f"marts.{spec.scoring.model}")
    touched = 0
    for day in days:
        frame = con.execute(f"SELECT * FROM {table} WHERE {spec.label.date_column} = ?", [day]).df()
        others = [c for c in frame.columns if c not in (spec.entity.key, spec.label.date_column)]
        frame[others] = frame[others].sample(frac=1, random_state=day.toordinal()).to_numpy()
        con.execute(f"DELETE FROM {table} WHERE {spec.label.date_column} = ?", [day])
        con.register("broken", frame)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM broken")
        con.unregister("broken")
        touched += len(frame)
    return touched
