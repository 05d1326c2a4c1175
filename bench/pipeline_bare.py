"""The bare pipeline of ``bench_pipeline``: what a user would script with the bare libraries for the same work, from
the same landed files, run in a process of its own:

    python -m bench.pipeline_bare PLAN.json

1. **raw**: every landed batch file of a table read into one DuckDB table with ``read_csv`` (the column types and
   null tokens the files have; the lineage columns the dbt sources select, from the file name), no validation;
2. **features**: the dbt project's models, as dbt compiled them for the platform's build, executed in dependency
   order straight in DuckDB (views, tables, and the feature files the external models write), no dbt tests;
3. **training sets**: each spec's label rows with one hand-written DuckDB ``ASOF LEFT JOIN`` per feature view
   (``bench_pit.raw_sql``, the views' TTLs typed in);
4. **training**: per spec, one ``lgb.Dataset`` and one ``lgb.train`` per parameter set of the platform's search
   (the same trials), early stopping on the validation window, the best kept;
5. **scoring**: the next day, ``bench_scoring_asset.bare_score`` (ASOF join, predict, one insert).

The plan (written by ``bench_pipeline``) names the files and carries what is read off the platform's own build
beforehand: the compiled SQL and materialization of each model, the raw tables' column types, the ASOF queries.
Prints one JSON line: seconds per stage and the rows each stage produced.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def raw(con, plan: dict) -> dict[str, int]:
    rows = {}
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for table, t in plan["raw"].items():
        files = "[" + ", ".join(f"'{f}'" for f in t["files"]) + "]"
        columns = "{" + ", ".join(f"'{c}': '{typ}'" for c, typ in t["columns"].items()) + "}"
        nulls = "[" + ", ".join(f"'{n}'" for n in t["null_tokens"]) + "]"
        lineage = ""
        if t["partitioned"]:
            lineage += ", CAST(regexp_extract(filename, '(\\d{4}-\\d{2}-\\d{2})\\.csv$', 1) AS DATE) AS _partition_date"
        lineage += ", filename AS _batch_file, '' AS _batch_sha256"
        con.execute(f"CREATE TABLE raw.{_q(table)} AS SELECT * EXCLUDE (filename){lineage} FROM read_csv({files}, "
                    f"header = true, columns = {columns}, nullstr = {nulls}, filename = true, auto_detect = false)")
        rows[table] = con.execute(f"SELECT count(*) FROM raw.{_q(table)}").fetchall()[0][0]
    # the load log the staging models read (published/final instants from the time model): copied, it is metadata
    con.execute(f"ATTACH '{plan['platform_warehouse']}' AS platform (READ_ONLY)")
    con.execute("CREATE TABLE raw._batch_loads AS SELECT * FROM platform.raw._batch_loads")
    con.execute("DETACH platform")
    return rows


def features(con, plan: dict) -> dict[str, int]:
    rows = {}
    for node in plan["models"]:
        schema, name, sql = node["schema"], node["name"], node.get("sql")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
        target = f"{_q(schema)}.{_q(name)}"
        if node["materialized"] == "seed":
            types = "{" + ", ".join(f"'{c}': '{t}'" for c, t in node["types"].items()) + "}"
            con.execute(f"CREATE TABLE {target} AS SELECT * FROM read_csv('{node['file']}', header = true"
                        + (f", types = {types})" if node["types"] else ")"))
        elif node["materialized"] == "view":
            con.execute(f"CREATE VIEW {target} AS {sql}")
        elif node["materialized"] in ("table", "incremental"):  # (the platform's first build of one is whole)
            con.execute(f"CREATE TABLE {target} AS {sql}")
        elif node["materialized"] == "external":
            Path(node["location"]).parent.mkdir(parents=True, exist_ok=True)
            con.execute(f"COPY ({sql}) TO '{node['location']}' (FORMAT parquet)")
            con.execute(f"CREATE VIEW {target} AS SELECT * FROM read_parquet('{node['location']}')")
            rows[name] = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
        elif node["materialized"] == "parquet_dataset":  # one partitioned COPY (the platform writes a file per day)
            Path(node["location"]).mkdir(parents=True, exist_ok=True)
            if node["partition_by"]:
                con.execute(f"COPY ({sql}) TO '{node['location']}' (FORMAT parquet, "
                            f"PARTITION_BY ({_q(node['partition_by'])}), OVERWRITE_OR_IGNORE)")
            else:
                con.execute(f"COPY ({sql}) TO '{node['location']}/data_0.parquet' (FORMAT parquet)")
            con.execute(f"CREATE VIEW {target} AS SELECT * FROM read_parquet('{node['location']}')")
            rows[name] = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
        else:
            raise ValueError(f"{name}: materialization {node['materialized']!r}")
        if node["materialized"] in ("table", "incremental"):
            rows[name] = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
        if schema.startswith("marts"):  # read by scoring under the published name, as the platform's are
            con.execute("CREATE SCHEMA IF NOT EXISTS marts")
            con.execute(f"CREATE VIEW marts.{_q(name)} AS SELECT * FROM {target}")
    return rows


def training_sets(con, plan: dict) -> dict:
    import pandas as pd

    sets = {}
    for name, s in plan["specs"].items():
        frame = con.sql(s["label_sql"]).df()
        codes, uniques = pd.factorize(frame[s["date_column"]])
        cutoffs = pd.to_datetime([s["cutoffs"][pd.Timestamp(d).strftime("%Y-%m-%d")] for d in uniques], utc=True)
        frame["event_timestamp"] = cutoffs.astype("datetime64[us, UTC]")[codes]
        days = pd.Series(pd.to_datetime(uniques).strftime("%Y-%m-%d")[codes], index=frame.index)
        con.register("entities", frame)
        joined = con.sql(s["asof_sql"]).arrow()  # (Arrow, then pandas: faster than .df() for the string columns)
        joined = joined.read_all() if hasattr(joined, "read_all") else joined
        sets[name] = (joined.to_pandas(), days)
        con.unregister("entities")
    return sets


def train(sets: dict, plan: dict, out: Path) -> dict[str, str]:
    import lightgbm as lgb
    import pandas as pd

    models = {}
    for name, s in plan["specs"].items():
        frame, days = sets[name]
        excluded = set(s["excluded"])
        features = sorted(c for c in frame.columns if c not in excluded and not c.endswith("_valid_from"))
        categorical = [c for c in features if c in s["categorical"] or not pd.api.types.is_numeric_dtype(frame[c])]
        X = pd.DataFrame({c: pd.Categorical(frame[c].astype("string").astype(object).where(frame[c].notna(), None))
                          if c in categorical
                          else pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in features})
        train_rows = (days >= s["train"][0]) & (days <= s["train"][1])
        val_rows = (days >= s["validation"][0]) & (days <= s["validation"][1])
        dtrain = lgb.Dataset(X[train_rows], label=frame["label"][train_rows], categorical_feature=categorical,
                             params=s["trials"][0])
        dval = lgb.Dataset(X[val_rows], label=frame["label"][val_rows], reference=dtrain)
        best = None
        for params in s["trials"]:
            booster = lgb.train(params, dtrain, num_boost_round=300, valid_sets=[dval], valid_names=["validation"],
                                callbacks=[lgb.early_stopping(20, verbose=False)])
            score = booster.best_score["validation"][params["metric"]]
            if best is None or (score > best[0] if params["metric"] in ("auc", "average_precision") else score < best[0]):
                best = (score, booster)
        models[name] = str(out / f"{name}.txt")
        best[1].save_model(models[name], num_iteration=best[1].best_iteration)
    return models


def score(db: Path, plan: dict, models: dict[str, str]) -> dict[str, int]:
    import datetime as dt

    import pandas as pd

    from batch_platform.lib.specs import load_specs
    from bench.bench_scoring_asset import bare_score

    specs, day = load_specs(), dt.date.fromisoformat(plan["day"])
    return {name: bare_score(db, specs[name], day, Path(models[name]), s["score_sql"],
                             pd.Timestamp(s["score_cutoff"]))
            for name, s in plan["specs"].items()}


def main(plan_path: str) -> None:
    import duckdb

    plan = json.loads(Path(plan_path).read_text())
    out = Path(plan["out"])
    out.mkdir(parents=True, exist_ok=True)
    db = out / "warehouse.duckdb"  # the compiled SQL names the catalog "warehouse"
    seconds, rows = {}, {}
    t0 = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'UTC'")
    rows["raw"] = raw(con, plan)
    seconds["ingest"] = time.perf_counter() - t0
    t = time.perf_counter()
    rows["features"] = features(con, plan)
    seconds["features"] = time.perf_counter() - t
    t = time.perf_counter()
    sets = training_sets(con, plan)
    rows["training_sets"] = {name: len(frame) for name, (frame, _) in sets.items()}
    seconds["training_set"] = time.perf_counter() - t
    models = train(sets, plan, out)
    seconds["training"] = time.perf_counter() - t - seconds["training_set"]
    con.close()
    seconds["train"] = time.perf_counter() - t
    t = time.perf_counter()
    rows["scored"] = score(db, plan, models)
    seconds["score"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1])
