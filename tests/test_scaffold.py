"""The scaffold and the project check: ``batch-platform new source NAME --from FILE`` drafts a contract from a
sample (types, nullability, null tokens, key, the day) that loads and accepts the sample as a batch; ``batch-platform
check`` reports every part of a project that fails, and what one part names that another lacks, in one run."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from batch_platform.lib import validation as v
from batch_platform.lib.contracts import SOURCES_DIR, SOURCES_VAR, load_contracts
from batch_platform.lib.scaffold import ScaffoldError, draft_contract, write_draft

CLI = Path(sys.executable).parent / "batch-platform"
TRIPS_CSV = """trip_id,vendor,pickup_at,trip_date,distance_km,fare,paid_cash
1,acme,2013-01-15 08:01:00,2013-01-15,3.2,12.5,true
2,acme,2013-01-15 09:10:00,2013-01-15,NA,7.0,false
3,zoom,2013-01-15 10:00:00,2013-01-15,1.1,NA,true
4,zoom,2013-01-15 11:30:00,2013-01-15,8.0,30.25,false
"""


def test_a_csv_sample_becomes_a_contract_that_accepts_it(tmp_path):
    sample = tmp_path / "2013-01-15.csv"
    sample.write_text(TRIPS_CSV)
    draft = draft_contract("trips", sample, timezone="America/New_York")
    path = write_draft(draft, tmp_path / "sources")
    text = path.read_text()
    assert "REVIEW" in text and "# seen: 7.0 .. 30.25, 1 null(s) of 4" in text  # ranges as comments, not bounds
    trips = load_contracts(tmp_path / "sources")["trips"]
    assert {c.name: (c.type, c.nullable) for c in trips.columns} == {
        "trip_id": ("BIGINT", False), "vendor": ("VARCHAR", False), "pickup_at": ("TIMESTAMPTZ", False),
        "trip_date": ("DATE", False), "distance_km": ("DOUBLE", True), "fare": ("DOUBLE", True),
        "paid_cash": ("VARCHAR", False)}
    assert all(c.min is None and c.max is None for c in trips.columns)
    assert trips.null_tokens == ("", "NA") and trips.key == ("trip_id",) and trips.file_format == "csv"
    assert trips.partitioning.date_columns == ("trip_date",) and trips.partitioning.timezone == "America/New_York"
    assert trips.published is not None and not trips.is_snapshot
    # the sample itself is a valid batch of its day under the draft
    with v.validate_batch(sample, trips, dt.date(2013, 1, 15), require_manifest=False) as batch:
        assert batch.row_count == 4
    with pytest.raises(ScaffoldError, match="exists"):
        write_draft(draft, tmp_path / "sources")


def test_a_parquet_sample_with_an_instant_and_a_composite_key(tmp_path):
    sample = tmp_path / "readings.parquet"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"""COPY (SELECT m AS meter, TIMESTAMPTZ '2013-01-15 00:00:00+00' + INTERVAL (h) HOUR AS read_at,
                                     h * 1.5 AS kwh
                              FROM range(3) r(m0), range(24) t(h), (SELECT 'm' || m0 AS m))
                        TO '{sample}' (FORMAT parquet)""")
    draft = draft_contract("readings", sample)
    path = write_draft(draft, tmp_path / "sources")
    readings = load_contracts(path.parent)["readings"]
    assert readings.file_format == "parquet" and readings.key == ("meter", "read_at")
    assert readings.partitioning.date_columns == () and readings.partitioning.instant_column == "read_at"
    with v.validate_batch(sample, readings, dt.date(2013, 1, 15), require_manifest=False) as batch:
        assert batch.row_count == 72


def test_what_cannot_be_a_draft_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('"Trip ID",fare\n1,2.0\n')
    with pytest.raises(ScaffoldError, match="not plain lower-case identifiers"):
        draft_contract("trips", bad)
    with pytest.raises(ScaffoldError, match="not a plain lower-case identifier"):
        draft_contract("Trips; drop", bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("a,b\nx,1.5\nx,1.5\n")
    with pytest.raises(ScaffoldError, match="declare the key by hand"):
        draft_contract("dups", dup)


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_new_source_from_the_command_line(tmp_path):
    sample = tmp_path / "trips.csv"
    sample.write_text(TRIPS_CSV)
    out = _cli("new", "source", "trips", "--from", str(sample), "--sources", str(tmp_path / "sources"),
               "--timezone", "America/New_York")
    assert out.returncode == 0, out.stderr
    assert "a daily table of 7 column(s), key trip_id, a day by trip_date" in out.stdout
    assert "published (when a batch lands" in out.stdout
    again = _cli("new", "source", "trips", "--from", str(sample), "--sources", str(tmp_path / "sources"))
    assert again.returncode == 1 and "ScaffoldError" in again.stderr and "--force" in again.stderr


def test_check_reports_every_problem_in_one_run(tmp_path):
    shipped = _cli("check")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "everything agrees" in shipped.stdout
    # a project whose sources lack the weather table dbt reads, and whose spec names a feature service that the
    # Feast repository does not define, and a label model dbt does not build
    sources = tmp_path / "sources"
    shutil.copytree(SOURCES_DIR, sources)
    (sources / "weather.yaml").unlink()
    specs = tmp_path / "specs"
    specs.mkdir()
    from batch_platform.lib.specs import DEFAULT_SPECS_DIR, SPECS_DIR_VAR

    raw = yaml.safe_load((DEFAULT_SPECS_DIR / "flight_delay.yaml").read_text())
    raw["feature_service"] = "flight_delay_v9"
    raw["label"]["model"] = "flight_outcomes"
    (specs / "flight_delay.yaml").write_text(yaml.safe_dump(raw))
    out = _cli("check", env={SOURCES_VAR: str(sources), SPECS_DIR_VAR: str(specs)})
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    # the time model names the weather feed the sources no longer declare: named, and the rest still runs
    assert any(line.startswith("FAIL time model") and "unknown feed 'weather'" in line for line in lines), out.stdout
    assert any(line.startswith("FAIL dbt") and "raw.weather have no source contract" in line for line in lines)
    assert any(line.split()[1] == "feast" for line in lines)  # the later parts ran and reported
    assert out.stdout.strip().endswith("problem(s)")
    # with the sources whole, the spec's own faults: the label model dbt lacks, the feature service Feast lacks
    out = _cli("check", env={SPECS_DIR_VAR: str(specs)})
    assert out.returncode == 1
    assert "the label model of spec flight_delay: 'flight_outcomes' is not a dbt model" in out.stdout, out.stdout
    assert "spec flight_delay: feature service 'flight_delay_v9' is not defined in the repository" in out.stdout


def test_new_model_drafts_a_spec_and_its_feature_service(tmp_path):
    from batch_platform import settings
    from batch_platform.lib.specs import DEFAULT_SPECS_DIR, load_spec

    specs, repo = tmp_path / "specs", tmp_path / "repo"
    shutil.copytree(DEFAULT_SPECS_DIR, specs)
    repo.mkdir()
    for name in ("features.yaml", "feature_store.yaml"):
        shutil.copy(settings.FEATURE_REPO_DIR / name, repo / name)
    comments = (repo / "features.yaml").read_text().count("#")
    args = ["new", "model", "flight_long_delay", "--like", "flight_delay", "--label", "arr_delay > 60", "--definition",
            "more than an hour late", "--views", "plane_daily_features,route_daily_features",
            "--specs", str(specs), "--feature-repo", str(repo)]
    out = _cli(*args)
    assert out.returncode == 0, out.stderr
    spec = load_spec(specs / "flight_long_delay.yaml")
    assert spec.feature_service == "flight_long_delay_v1" and spec.label.expression == "arr_delay > 60"
    assert spec.label.model == "flight_labels" and spec.gate.metric == "roc_auc"  # as the template has them
    declared = yaml.safe_load((repo / "features.yaml").read_text())
    (service,) = [s for s in declared["feature_services"] if s["name"] == "flight_long_delay_v1"]
    assert service["views"] == ["plane_daily_features", "route_daily_features"]
    assert (repo / "features.yaml").read_text().count("#") == comments  # the file's comments stay
    # the check sees the new spec and its service (the shipped repository does not have it: named)
    env = {"BATCH_PLATFORM_MODEL_SPECS": str(specs)}
    check = _cli("check", env=env)
    assert "spec flight_long_delay: feature service 'flight_long_delay_v1' is not defined" in check.stdout
    # again: the spec exists, nothing is changed
    before = (repo / "features.yaml").read_text()
    again = _cli(*args)
    assert again.returncode == 1 and "exists" in again.stderr and (repo / "features.yaml").read_text() == before
    # an unknown view: refused, nothing written
    bad = _cli("new", "model", "other", "--like", "flight_delay", "--views", "no_such_view", "--specs", str(specs),
               "--feature-repo", str(repo))
    assert bad.returncode == 1 and "no_such_view" in bad.stderr and not (specs / "other.yaml").exists()


def test_a_new_project_is_the_template_in_the_users_zone_and_lists_its_tables_for_dbt(tmp_path):
    from batch_platform.lib.project_scaffold import ProjectScaffoldError, list_dbt_source, new_project
    from batch_platform.lib.time_model import load_time_model

    folder = tmp_path / "shops"
    written = new_project(folder, "shops", "Europe/Berlin")
    assert {p.relative_to(folder).as_posix() for p in written} >= {
        "time_model.yaml", "dbt/dbt_project.yml", "dbt/profiles.yml", "dbt/models/staging/_sources.yml",
        "dbt/models/staging/stg_batch_loads.sql", "feature_repo/feature_store.yaml", "feature_repo/features.yaml"}
    assert (folder / "sources").is_dir() and (folder / "models").is_dir()
    assert load_time_model(folder / "time_model.yaml", contracts=()).spec.timezone == "Europe/Berlin"
    assert yaml.safe_load((folder / "dbt" / "dbt_project.yml").read_text())["vars"]["timezone"] == "Europe/Berlin"
    assert not re.search(r"__[A-Z]+__", "".join(p.read_text() for p in written))  # every placeholder filled
    assert list_dbt_source(folder, "sales", "Units per shop and day.")
    assert not list_dbt_source(folder, "sales", "again")  # listed once
    assert list_dbt_source(folder, "plan", "The plan.")
    raw = yaml.safe_load((folder / "dbt" / "models" / "staging" / "_sources.yml").read_text())["sources"][0]
    assert [t["name"] for t in raw["tables"]] == ["batch_loads", "sales", "plan"]
    assert "-- depends_on: {{ source('raw', 'sales') }}, {{ source('raw', 'plan') }}" in \
        (folder / "dbt" / "models" / "staging" / "stg_batch_loads.sql").read_text()
    with pytest.raises(ProjectScaffoldError, match="not empty"):
        new_project(folder, "shops", "UTC")
    with pytest.raises(ProjectScaffoldError, match="not an IANA time zone"):
        new_project(tmp_path / "x", "x", "Mars/Olympus")
    with pytest.raises(ProjectScaffoldError, match="identifier"):
        new_project(tmp_path / "y", "Shops; drop", "UTC")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
