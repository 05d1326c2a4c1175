"""A brand-new domain from scratch, the way a user brings their own data: in an empty folder, with the scaffold
commands (``new project``, ``new source``, ``new model``) and configuration files only (YAML and SQL), on a small
generated data set of daily exports on the real calendar. ``check`` agrees, then ``land-file``, ``ingest``,
``features``, ``train`` and ``score`` -- the user's commands, each a process of its own -- take it to a gated champion
and served predictions. No Python is written into the project.

The domain: a few shops' daily units sold (a regression), with the promotion plan of each day published the morning
before (a derived table landed from its own export for the days to come)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pytest
import yaml

CLI = Path(sys.executable).parent / "batch-platform"
TZ = "Europe/Berlin"
SHOPS = ("north", "south", "east", "west", "harbour", "airport")
HISTORY_DAYS = 45  # windows of 21 + 7 + 7 label days, a few days before them, and the newest not yet final


def _cli(env: dict, *args: str, ok: bool = True) -> str:
    started = time.perf_counter()
    out = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=900, env=env)
    print(f"$ batch-platform {' '.join(args[:2])}: {time.perf_counter() - started:.1f} s")
    if ok:
        assert out.returncode == 0, f"{args}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _sales(days: list[dt.date], seed: int = 7) -> list[dict]:
    """Units per shop and day: a shop's own level, a weekly shape, promotions (known the day before), noise."""
    rng = np.random.default_rng(seed)
    level = dict(zip(SHOPS, (120, 80, 60, 200, 40, 150)))
    week = (0.8, 0.9, 0.9, 1.0, 1.2, 1.5, 0.6)
    rows = []
    for day in days:
        for shop in SHOPS:
            promo = int(rng.random() < 0.2)
            mean = level[shop] * week[day.weekday()] * (1.4 if promo else 1.0)
            rows.append({"sale_date": day.isoformat(), "shop": shop, "units": int(rng.poisson(mean)), "promo": promo})
    return rows


def _csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    path.write_text(",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows))
    return path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# The user's files beyond the drafts: SQL and YAML.
STAGING = {
    "stg_shop_sales.sql": "select sale_date, shop, units, promo\nfrom {{ source('raw', 'shop_sales') }}\n",
    "stg_shop_plan.sql": "select sale_date, shop, promo\nfrom {{ source('raw', 'shop_plan') }}\n",
}
MARTS = {
    "shop_daily_features.sql": """
with

windows as (

    select
        shop,
        sale_date as as_of_date,
        units as shop_units_1d,
        avg(units) over w7 as shop_mean_7d,
        avg(units) over w28 as shop_mean_28d,
        count(*) over w28 as shop_days_28d
    from {{ ref('stg_shop_sales') }}
    window
        w7 as (partition by shop order by sale_date range between interval 6 days preceding and current row),
        w28 as (partition by shop order by sale_date range between interval 27 days preceding and current row)

),

validity as (

    {{ feed_validity('shop_sales', 'published', lookback_days=28) }}

)

select
    windows.shop,
    windows.as_of_date,
    validity.valid_from as feature_ts,
    validity.valid_from as shop_valid_from,
    windows.shop_units_1d,
    windows.shop_mean_7d,
    windows.shop_mean_28d,
    windows.shop_days_28d
from windows
inner join validity on validity.batch_date = windows.as_of_date
order by shop, as_of_date
""",
    "shop_sales_labels.sql": """{{ config(materialized='table') }}
select strftime(sale_date, '%Y-%m-%d') || ':' || shop as shop_day_id, shop, sale_date,
       isodow(sale_date) as day_of_week, promo, units
from {{ ref('stg_shop_sales') }}
""",
    "shop_frame.sql": """{{ config(materialized='table') }}
select strftime(sale_date, '%Y-%m-%d') || ':' || shop as shop_day_id, shop, sale_date,
       isodow(sale_date) as day_of_week, promo
from {{ ref('stg_shop_plan') }}
""",
    "_marts.yml": """models:
  - name: shop_daily_features
    description: "Per shop and day: units that day and over the trailing 7 and 28 days."
    data_tests:
      - unique_combination:
          arguments:
            combination_of_columns: [shop, as_of_date]
  - name: shop_sales_labels
    columns:
      - {name: shop_day_id, data_tests: [not_null, unique]}
  - name: shop_frame
    columns:
      - {name: shop_day_id, data_tests: [not_null, unique]}
""",
}
PLAN_CONTRACT = """# The promotion plan of a day, published the morning before: what is scored the evening before.
table: shop_plan
version: "1"
kind: derived
description: "The shops open on a day and whether each runs a promotion, published the morning before."
published: {day_offset: -1, local_time: "06:00"}
derived_from: shop_sales
columns: [sale_date, shop, promo]
"""
TIME_MODEL_RULES = {
    "features": {"shop_daily_features": {"feed": "shop_sales", "day_column": "as_of_date", "lookback_days": 28,
                                         "valid_when": "published"}},
    "labels": {"shop_sales_labels": {"feed": "shop_sales"}},
    "frames": {"shop_frame": {"feed": "shop_plan"}, "shop_sales_labels": {"feed": "shop_plan"}},
}
FEAST = {
    "entities": [{"name": "shop", "description": "A shop, by its name."}],
    "feature_views": [{
        "name": "shop_daily_features", "entity": "shop", "ttl_days": 3,
        "description": "The shop's recent units sold.", "table_description": "Per shop and day: trailing units.",
        "features": {"shop_valid_from": "UnixTimestamp", "shop_units_1d": "Int64", "shop_mean_7d": "Float64",
                     "shop_mean_28d": "Float64", "shop_days_28d": "Int64"}}],
    "feature_services": [],
}


@pytest.mark.timeout(1500)
def test_a_new_domain_from_scratch_is_ingested_trained_gated_and_scored(tmp_path):
    project, data = tmp_path / "shops", tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_PLATFORM_") and k != "DAGSTER_HOME"}
    env.update(BATCH_PLATFORM_PROJECT=str(project), BATCH_PLATFORM_DATA_DIR=str(data),
               DAGSTER_HOME=str(data / "dagster_home"))
    today = dt.datetime.now(ZoneInfo(TZ)).date()
    history = [today - dt.timedelta(days=HISTORY_DAYS - i) for i in range(HISTORY_DAYS)]  # .. yesterday
    plan_days = [today, today + dt.timedelta(days=1)]
    rows = _sales(history + plan_days)

    # 1. the project folder, from the template
    out = _cli({k: v for k, v in env.items() if k != "BATCH_PLATFORM_PROJECT"}, "new", "project", str(project),
               "--timezone", TZ)
    assert f"export BATCH_PLATFORM_PROJECT={project}" in out
    assert _cli(env, "new", "project", str(project), ok=False).count("not empty")

    # 2. a contract drafted from one day's export, then reviewed: the key spans days, units are never negative
    sample = _csv(tmp_path / "sample.csv", [r for r in rows if r["sale_date"] == history[0].isoformat()],
                  ["sale_date", "shop", "units", "promo"])
    out = _cli(env, "new", "source", "shop_sales", "--from", str(sample))
    assert "Listed raw.shop_sales" in out
    path = project / "sources" / "shop_sales.yaml"
    contract = yaml.safe_load(path.read_text())
    assert contract["partitioning"] == {"date_columns": ["sale_date"], "timezone": TZ}  # the project's zone
    contract["key"] = ["sale_date", "shop"]
    contract["description"] = "Units sold per shop and day, exported the next morning."
    for column in contract["columns"]:
        column["description"] = f"The {column['name']}."
        if column["name"] == "units":
            column["min"] = 0
    path.write_text(yaml.safe_dump(contract, sort_keys=False))
    _write(project / "sources" / "shop_plan.yaml", PLAN_CONTRACT)
    sources = project / "dbt" / "models" / "staging" / "_sources.yml"
    sources.write_text(sources.read_text() + "      - name: shop_plan\n"
                       "        description: \"The promotion plan of a day, published the morning before.\"\n")
    view = project / "dbt" / "models" / "staging" / "stg_batch_loads.sql"
    view.write_text(view.read_text().replace("'shop_sales') }}", "'shop_sales') }}, {{ source('raw', 'shop_plan') }}"))

    # 3. the time model, dbt models, Feast views
    tm_path = project / "time_model.yaml"
    tm_path.write_text(yaml.safe_dump({**yaml.safe_load(tm_path.read_text()), **TIME_MODEL_RULES}, sort_keys=False))
    for name, sql in STAGING.items():
        _write(project / "dbt" / "models" / "staging" / name, sql)
    for name, sql in MARTS.items():
        _write(project / "dbt" / "models" / "marts" / name, sql)
    (project / "feature_repo" / "features.yaml").write_text(yaml.safe_dump(FEAST, sort_keys=False))

    # 4. the model: drafted from its names, then reviewed
    out = _cli(env, "new", "model", "shop_units", "--metric", "rmse", "--key", "shop_day_id", "--join-keys", "shop",
               "--label-model", "shop_sales_labels", "--label", "units", "--definition", "units sold that day",
               "--date-column", "sale_date", "--frame-model", "shop_frame", "--views", "shop_daily_features")
    assert "a skeleton" in out
    spec_path = project / "models" / "shop_units.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    assert spec["gate"]["metric"] == "rmse" and spec["label"]["column"] == "units"
    assert spec["cutoff"]["timezone"] == TZ
    spec["windows"] = {"train_days": 21, "validation_days": 7, "test_days": 7}
    spec["passthrough_features"] = ["day_of_week", "promo"]
    spec["categorical_features"] = ["shop"]
    spec["objective"] = "poisson"
    spec["monitoring"] = {"accuracy_tolerance": 20.0, "drift": {"reference_rows": 200}}
    spec["promotion"] = {"shadow_min_days": 0}  # a first champion at once
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    services = yaml.safe_load((project / "feature_repo" / "features.yaml").read_text())["feature_services"]
    assert services == [{"name": "shop_units_v1", "description": "REVIEW: the features of shop_units.",
                         "views": ["shop_daily_features"]}]

    # 5. everything agrees
    out = _cli(env, "check")
    assert "everything agrees" in out, out

    # 6. the exports land: the history of sales (with its plans), then the plan of the days to come
    columns = ["sale_date", "shop", "units", "promo"]
    out = _cli(env, "land-file", "shop_sales", str(_csv(tmp_path / "sales.csv", rows[:len(history) * len(SHOPS)],
                                                          columns)))
    assert "calendar dates (data from" in out and f"start on {history[0]}" in out
    future = [r for r in rows if dt.date.fromisoformat(r["sale_date"]) in plan_days]
    out = _cli(env, "land-file", "shop_plan", str(_csv(tmp_path / "plan.csv", future, ["sale_date", "shop", "promo"])))
    assert "shop_plan" in out
    # a malformed export is refused, named, and lands nothing
    bad = _csv(tmp_path / "bad.csv", [{**rows[0], "units": "many"}], columns)
    out = _cli(env, "land-file", "shop_sales", str(bad), ok=False)
    assert "ExportError" in out and "units" in out and "'many' is not a BIGINT" in out

    # 7. the user's commands
    out = _cli(env, "ingest")
    assert "0 failed" in out, out
    out = _cli(env, "features")
    assert "(dbt build, feast apply, online store): ok" in out, out
    out = _cli(env, "train")
    assert "Training sets → candidates → gate → champions: ok" in out, out
    out = _cli(env, "score")
    assert "(every spec, champion pinned at run start): ok" in out, out

    warehouse = data / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        loaded = dict(con.execute("SELECT table_name, count(DISTINCT partition_key) FROM raw._batch_loads "
                                  "GROUP BY 1").fetchall())
        last_sales = con.execute("SELECT max(sale_date) FROM raw.shop_sales").fetchall()[0][0]
        scored = last_sales + dt.timedelta(days=1)
        predictions = con.execute("SELECT shop_units.shop_day_id, score, model_version, fallback_reason FROM "
                                  "predictions.shop_units WHERE partition_date = ?", [scored]).fetchall()
    # every published day of the history, and the plans through the day scored
    assert loaded["raw.shop_sales"] == (last_sales - history[0]).days + 1 >= HISTORY_DAYS - 1
    assert loaded["raw.shop_plan"] >= loaded["raw.shop_sales"] + 1
    assert sorted(p[0] for p in predictions) == sorted(f"{scored}:{s}" for s in SHOPS)
    assert all(math.isfinite(p[1]) and p[1] > 0 and p[2] == 1 and p[3] is None for p in predictions)

    # the champion passed its gate on RMSE against the no-signal baseline of its test window
    from batch_platform.lib.registry import ModelRegistry

    registry = ModelRegistry(data / "registry.db")
    version = registry.get_version("shop_units", registry.get_alias("shop_units", "champion").version)
    gate, test = version.gate_report, version.metrics["test"]
    assert gate["passed"] and gate["metric"] == "rmse" and gate["baseline"] == "floor"
    assert gate["policy"]["floor_basis"] == "baseline" and gate["n_blocks"] == 7
    assert test["rmse"] == pytest.approx(gate["candidate_metric"]) and test["rows"] == 7 * len(SHOPS)
    assert version.fingerprint["params"]["objective"] == "poisson"
    # and the prediction is served by key
    north = next(p for p in predictions if p[0].endswith(":north"))
    (answer,) = json.loads(_cli(env, "predict", north[0], "--model", "shop_units", "--json"))
    assert answer["score"] == pytest.approx(north[1]) and answer["model_version"] == 1
