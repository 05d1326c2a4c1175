"""The second domain shipped beside flights runs its whole lifecycle the way a user starts it:
``batch-platform demo --example chicago_ridership`` (a process of its own, a data dir of its own). Its files hold no
Python; its data comes from a registry package; the platform lands, ingests, builds (dbt, Feast), trains a
regression, gates it on RMSE against the no-signal baseline, promotes it, scores the next day with a drift check,
serves it by key, and measures production accuracy once the labels are published."""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from batch_platform.lib import examples

ROOT = Path(__file__).resolve().parent.parent
DAYS = 90  # the spec's windows (56 + 14 + 14 days) and a week of history before them
SCORED = examples.load_example("chicago_ridership").replay[0] + dt.timedelta(days=DAYS)


def test_the_example_holds_no_python():
    folder = examples.load_example("chicago_ridership").folder
    listed = subprocess.run(["git", "ls-files", str(folder)], cwd=ROOT, capture_output=True, text=True, check=True)
    files = [ROOT / line for line in listed.stdout.splitlines()]  # what the example ships (not dbt's target/)
    assert files and not [p for p in files if p.suffix in (".py", ".pyc", ".ipynb")]
    assert {p.suffix for p in files} <= {".yaml", ".yml", ".sql"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data = tmp_path_factory.mktemp("chicago")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_PLATFORM_") and k != "DAGSTER_HOME"}
    out = subprocess.run([str(Path(sys.executable).parent / "batch-platform"), "demo", "--example",
                          "chicago_ridership", "--days", str(DAYS)], cwd=ROOT,
                         env={**env, "BATCH_PLATFORM_DATA_DIR": str(data)}, capture_output=True, text=True,
                         timeout=1200)
    print(out.stdout[-6000:])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return data, out.stdout


def _in_example(data: Path, code: str) -> str:
    """Run ``code`` in a process that is the example's platform (its project, its data dir)."""
    from batch_platform import example_demo

    env = {**os.environ, **example_demo.environment("chicago_ridership", data)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.timeout(1500)
def test_a_regression_is_gated_promoted_scored_monitored_and_served(demo):
    data, stdout = demo
    assert "gate passed against the floor" in stdout and f"{SCORED} production rmse" in stdout
    report = _in_example(data, """
import json
from batch_platform import settings
from batch_platform.lib.registry import ModelRegistry
r = ModelRegistry(settings.registry_path())
v = r.get_version('station_entries', r.get_alias('station_entries', 'champion').version)
print(json.dumps({'gate': v.gate_report, 'test': v.metrics['test'], 'params': v.fingerprint['params'],
                  'calibration': 'calibration' in v.metrics}))
""")
    import json

    champion = json.loads(report)
    gate, test = champion["gate"], champion["test"]
    # a regression, judged by its error: a first model must halve the error of one constant per test window
    assert champion["params"]["objective"] == "poisson" and not champion["calibration"]
    assert gate["passed"] and gate["metric"] == "rmse" and gate["baseline"] == "floor"
    assert gate["resampling"] == "day_blocks" and gate["n_blocks"] == 14
    assert gate["policy"]["floor_basis"] == "baseline"
    assert test["rmse"] == pytest.approx(gate["candidate_metric"])
    assert test["rmse"] < 0.5 * math.sqrt(test["rmse"] ** 2 / (1 - test["r2"]))  # beats half the baseline error
    assert 0.9 < test["r2"] < 1 and test["rows"] == 14 * 20

    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    predictions = con.sql("SELECT station_entries.station_day_id, score, model_version, decision, fallback_reason "
                          "FROM predictions.station_entries WHERE partition_date = ?", params=[SCORED]).fetchall()
    assert len(predictions) == 20 and {p[2] for p in predictions} == {1}
    assert all(p[1] > 0 for p in predictions) and {p[3] for p in predictions} == {None}  # counts; no threshold
    assert {p[0].split(":", 1)[0] for p in predictions} == {SCORED.isoformat()}
    labels = dict(con.sql("SELECT station_day_id, entries FROM marts.station_entry_labels WHERE service_date = ?",
                          params=[SCORED]).fetchall())
    errors = [p[1] - labels[p[0]] for p in predictions]
    accuracy = con.sql("SELECT metric, value, positives, rows, fallback_rows FROM monitoring.production_accuracy "
                       "WHERE spec = 'station_entries' AND partition_date = ?", params=[SCORED]).fetchall()
    assert accuracy == [("rmse", pytest.approx(math.sqrt(sum(e * e for e in errors) / 20)), None, 20, 0)]
    con.close()

    checks = json.loads(_in_example(data, f"""
import json, dagster as dg
from batch_platform.pipeline import latest_check
with dg.DagsterInstance.get() as i:
    print(json.dumps({{name: latest_check(i, dg.AssetKey([asset]), name) for asset, name in [
        ('station_entries_predictions', 'feature_drift'),
        ('station_entries_production_accuracy', 'production_accuracy_within_tolerance')]}}))
"""))
    drift, within = checks["feature_drift"], checks["production_accuracy_within_tolerance"]
    assert drift is not None and "ERROR" not in drift[1].split(":")[0], drift  # a day of the same season
    assert within is not None and within[0], within

    served = json.loads(_in_example(data, f"""
import json
from batch_platform.lib.feature_store import FeatureStoreClient
from batch_platform.lib.serving import lookup
from batch_platform.lib.specs import load_specs
p = lookup(FeatureStoreClient(), load_specs()['station_entries'], '{SCORED}:Clark_Lake')
print(json.dumps({{'score': p.score, 'version': p.model_version, 'partition': str(p.partition_date)}}))
"""))
    clark = next(p for p in predictions if p[0] == f"{SCORED}:Clark_Lake")
    assert served == {"score": pytest.approx(clark[1]), "version": 1, "partition": SCORED.isoformat()}
