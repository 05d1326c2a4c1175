"""The operational SLIs over time: each platform day's values kept in the warehouse (``monitoring.operational_slis``,
one row per spec, day and SLI, replaced when the day is computed again) and charted as one figure of small
multiples, one panel per SLI, for the UI (Dagster's OSS UI charts no metadata series of its own)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import duckdb

from batch_platform.lib.slis import DaySlis

SCHEMA = "monitoring"
TABLE = f"{SCHEMA}.operational_slis"
CHARTED = ("pipeline_success_rate", "model_age_days", "feature_age_hours", "production_gap", "drift_score",
           "promotions_attempted", "promotions_failed", "rollbacks", "training_seconds", "peak_memory_mb")
"""The SLIs the batch-learning guides list, in the figure's order (``production_gap`` is production vs
validation; ``rollbacks`` beside the promotions)."""


def store(con: duckdb.DuckDBPyConnection, slis: DaySlis, run_id: str) -> int:
    """Replace ``slis.day``'s rows of ``slis.spec`` with its numeric SLIs (NULL where nothing was measured), in one
    transaction. Returns the rows written."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (spec VARCHAR NOT NULL, day DATE NOT NULL, sli VARCHAR NOT NULL, "
                "value DOUBLE, run_id VARCHAR NOT NULL, computed_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (spec, day, sli))")
    now = dt.datetime.now(dt.UTC)
    rows = [(slis.spec, slis.day, name, None if value is None or math.isnan(value) else float(value), run_id, now)
            for name, value in slis.numeric().items()]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {TABLE} WHERE spec = ? AND day = ?", [slis.spec, slis.day])
        con.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(rows)


def series(con: duckdb.DuckDBPyConnection, spec: str, through: dt.date, days: int = 60,
           names: tuple[str, ...] = CHARTED) -> dict[str, list[tuple[dt.date, float | None]]]:
    """Each SLI of ``names`` over the ``days`` days ending at ``through``, oldest first (days never computed are
    absent; ``None``: computed, nothing to measure)."""
    first = through - dt.timedelta(days=days - 1)
    rows = con.execute(f"SELECT sli, day, value FROM {TABLE} WHERE spec = ? AND day BETWEEN ? AND ? "
                       f"AND sli IN ({', '.join('?' for _ in names)}) ORDER BY day",
                       [spec, first, through, *names]).fetchall()
    out: dict[str, list[tuple[dt.date, float | None]]] = {n: [] for n in names}
    for name, day, value in rows:
        out[name].append((day, value))
    return out


def chart(data: dict[str, list[tuple[dt.date, float | None]]], path: Path, title: str) -> Path:
    """One PNG: a panel per SLI (its days on x; a day with nothing measured is a gap in the line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    names = list(data)
    cols = 2
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.1 * rows), sharex=True, squeeze=False)
    for ax, name in zip(axes.flat, names):
        points = data[name]
        ax.plot([d for d, _ in points], [math.nan if v is None else v for _, v in points], marker="o", ms=3)
        ax.set_title(name, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
