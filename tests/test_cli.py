"""The README's demo command, end to end in a subprocess, on a short range: summary, re-runnability, and
runs recorded in the persistent instance."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, env):
    cli = Path(sys.executable).parent / "batch-platform"
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


def test_demo_prints_summary_is_rerunnable_and_records_runs(platform_env, tmp_path, monkeypatch):
    """The whole demo on 24 days (specs with windows shortened to fit), then its ingest and training again."""
    from batch_platform.lib.specs import SPECS_DIR_VAR
    from tests.conftest import write_test_specs

    write_test_specs(tmp_path / "specs")
    monkeypatch.setenv(SPECS_DIR_VAR, str(tmp_path / "specs"))
    env = dict(os.environ)
    first = run_cli("demo", "--start", "2013-01-01", "--end", "2013-01-24", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    # the reference snapshots, one run over the 24 flight days, the schedule of the 25th (published the day before)
    assert "3 run(s), 0 unchanged" in out
    assert all(f"2013-01-{d:02d}: loaded" in out for d in range(1, 25))
    assert "2013-01-25: loaded (flight_schedule)" in out
    assert f"Warehouse: {platform_env['warehouse']}" in out
    assert "raw.flights" in out and "2013-01-01 .. 2013-01-24" in out
    assert "Features (dbt build, feast apply, online store): ok" in out
    assert "flight_delay_training_set" in out and "passed" in out
    assert "gate flight_delay: PASSED" in out
    assert "make ui-demo" in out
    # ends by scoring the next day (its schedule is loaded) and looking a few flights up by key
    assert "Score day 2013-01-25" in out and "predictions.flight_delay" in out
    lookups = out.split("$ batch-platform predict ")[1:]
    assert len(lookups) >= 3 and all("flight_delay" in block for block in lookups)
    assert "score 0." in lookups[0] and "model v1" in lookups[0]
    assert "no prediction" in lookups[-1]  # a flight that does not exist
    # and shows the day's drift verdict against the champion's frozen training sample, with Evidently's report
    assert "drift vs v1's training sample:" in out
    # served by the report server (rendered when opened), or rendered now by `report`
    report = next(line for line in out.splitlines() if "or now: batch-platform report" in line).split("report ")[-1]
    assert "Evidently report: http://127.0.0.1:3001/drift_reports/" in out and not Path(report).exists()
    rendered = run_cli("report", report, env=env)
    assert rendered.returncode == 0 and rendered.stdout.strip() == report and Path(report).is_file(), rendered.stderr
    text = Path(report).read_text()
    assert "<html" in text[:1000] and "drift" in text.lower()
    registry_lines = [line for line in out.splitlines() if line.strip().startswith("flight_") and "champion" in line]
    assert len(registry_lines) == 3  # three specs, each with a first champion

    # Re-running its steps changes nothing: unchanged batches are skipped, retraining on the same data reproduces
    # the same models (no new versions, same champions). (Each step's idempotency has its own tests; the whole
    # demo twice would double the suite's longest test.)
    second = run_cli("ingest", "--start", "2013-01-01", "--end", "2013-01-24", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 run(s), 26 unchanged and skipped, 0 failed" in second.stdout
    status = run_cli("status", env=env).stdout
    rows = [line for line in out.splitlines() if line.strip().startswith("raw.")]
    assert rows == [line for line in status.splitlines() if line.strip().startswith("raw.")]
    retrain = run_cli("train", env=env)
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr
    again = [line for line in retrain.stdout.splitlines() if line.strip().startswith("flight_") and "champion" in line]
    assert again == registry_lines

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert all(r.is_success for r in runs)
        assert sorted(r.job_name for r in runs if r.job_name != "raw_daily_ingest") == [
            "batch_scoring", "build_features", "raw_reference_refresh", "train_gate_promote", "train_gate_promote"]
        event = instance.get_latest_materialization_event(dg.AssetKey(["raw", "flights"]))
        assert event.asset_materialization.metadata["dagster/row_count"].value > 0


def test_ingest_reports_a_rejected_day_and_exits_nonzero(platform_env):
    env = dict(os.environ)
    path = platform_env["landing"] / "flights" / "2013-01-02.csv"
    from tests.bad_batches import duplicate_key

    duplicate_key(path)
    res = run_cli("ingest", "--start", "2013-01-01", "--end", "2013-01-03", env=env)
    assert res.returncode == 1
    assert "2013-01-02: FAILED" in res.stdout and "DuplicateKeyError" in res.stdout
    assert "1 failed" in res.stdout
    assert list((platform_env["quarantine"] / "flights").glob("*2013-01-02.csv.reason.json"))


def test_cycle_stops_at_a_failed_stage(platform_env):
    """`cycle` runs the stages in one process and stops at the first that fails: a rejected day fails the ingest,
    and no feature build, training or scoring runs on what it did not load."""
    from tests.bad_batches import duplicate_key

    duplicate_key(platform_env["landing"] / "flights" / "2013-01-02.csv")
    res = run_cli("cycle", "--start", "2013-01-01", "--end", "2013-01-03", env=dict(os.environ))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "2013-01-02: FAILED" in res.stdout and "DuplicateKeyError" in res.stdout
    assert "-- stage ingest: FAILED" in res.stdout and "the cycle stopped at ingest" in res.stdout
    assert "-- 2/4" not in res.stdout and "-- cycle FAILED" in res.stdout
    with dg.DagsterInstance.get() as instance:
        assert {r.job_name for r in instance.get_runs()} <= {"raw_daily_ingest", "raw_reference_refresh"}


def test_land_live_redates_to_yesterday_and_keeps_the_clock(platform_env):
    """`land --live` on a fresh data dir: the newest published flight day is yesterday (New York), schedules through
    tomorrow, every printed date says its clock; a 2013-dated replay into the same data dir is refused."""
    import datetime as dt
    import json

    from batch_platform import settings
    from batch_platform.lib.time_model import load_time_model

    landing = platform_env["data"] / "landing-live"  # the fixture's landing zone holds 2013 days
    env = {**os.environ, settings.LANDING_VAR: str(landing)}
    tm = load_time_model()
    now = dt.datetime.now(dt.UTC)
    yesterday = tm.last_published_day("flights", now)
    res = run_cli("land", "--live", "--start", (yesterday - dt.timedelta(days=2)).isoformat(), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{yesterday.isoformat()} (live; 2013 source day" in res.stdout
    clock = json.loads((platform_env["data"] / settings.CLOCK_FILE).read_text())
    assert clock["kind"] == "live" and clock["shift_days"] % 7 == 0
    flights = sorted(p.name for p in (landing / "flights").glob("*.csv"))
    assert flights[-1] == f"{yesterday.isoformat()}.csv" and len(flights) == 3
    schedules = sorted(p.name for p in (landing / "flight_schedule").glob("*.csv"))
    assert schedules[-1] == f"{tm.last_published_day('flight_schedule', now).isoformat()}.csv"
    manifest = json.loads((landing / "flights" / flights[-1]).with_suffix(".csv.manifest.json")
                          .read_text())
    assert manifest["clock"] == "live" and dt.datetime.fromisoformat(
        manifest["published_at"].replace("Z", "+00:00")) <= now
    mixed = run_cli("land", "--start", "2013-01-01", "--end", "2013-01-02", env=env)
    assert mixed.returncode == 2 and "outside the source's days" in mixed.stdout and "live dates" in mixed.stdout
