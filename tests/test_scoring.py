"""Batch scoring and serving on the session platform (copied per test, so nothing here changes other tests' state):
identical reruns, SIGKILL at several points, the champion pinned at run start, cold-start fallbacks and their
check, shadow scoring, online lookup by key, bounded memory."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from functools import partial
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from batch_platform.lib.feature_generations import published_relation
from batch_platform import settings
from batch_platform.lib import artifacts, report_server, scoring, serving, training, warehouse
from batch_platform.lib.feature_store import FeatureStoreClient
from batch_platform.lib.registry import CHALLENGER, CHAMPION, ModelRegistry
from batch_platform.lib.specs import SPECS_DIR_VAR, load_specs
from tests.conftest import PLATFORM_LAST, platform_env_vars

REPO = Path(__file__).resolve().parent.parent
SPEC = "flight_delay"
DAY = PLATFORM_LAST  # flights and schedule loaded
NEXT_DAY = PLATFORM_LAST + dt.timedelta(days=1)  # only its schedule is loaded: the evening-before case


@pytest.fixture
def scoring_env(on_platform, tmp_path, monkeypatch) -> dict:
    """A private copy of the session platform's data (warehouse, Feast registry + online store, model registry)."""
    src = on_platform["env"]
    shutil.copytree(src[settings.DATA_DIR_VAR], tmp_path / "data", ignore=shutil.ignore_patterns("*.lock", "logs"))
    env = platform_env_vars(tmp_path)
    env[SPECS_DIR_VAR] = src[SPECS_DIR_VAR]
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    specs = load_specs()
    return {
        "env": env,
        "spec": specs[SPEC],
        "specs": specs,
        "connect": partial(warehouse.connect, env[settings.WAREHOUSE_VAR]),
        "client": FeatureStoreClient(),
        "registry": ModelRegistry(env[settings.REGISTRY_VAR]),
        "staging": env[settings.ARTIFACTS_VAR] / "scoring_staging",
    }


def _score(s: dict, day: dt.date = NEXT_DAY, **kw) -> scoring.ScoringResult:
    return scoring.score_partition(spec=kw.pop("spec", s["spec"]), day=day, connect=s["connect"],
                                   feature_store=s["client"], registry=s["registry"], staging_dir=s["staging"], **kw)


def _stored(s: dict, day: dt.date = NEXT_DAY, *, shadow: bool = False, spec=None) -> pd.DataFrame:
    with s["connect"](read_only=True) as con:
        return scoring.read_partition(con, spec or s["spec"], day, shadow=shadow)


def _schedule_keys(s: dict, day: dt.date) -> list[str]:
    with s["connect"](read_only=True) as con:
        return [r[0] for r in con.execute(
            "SELECT flight_id FROM marts.flight_schedule WHERE flight_date = ? ORDER BY flight_id", [day]).fetchall()]


def _variant_version(s: dict, seed: int = 99):
    """Register a second, genuinely different model of the spec (fewer rounds, other seed) with a passed gate
    report, ready to be promoted or set as challenger."""
    reg: ModelRegistry = s["registry"]
    champion = reg.get_alias(SPEC, CHAMPION)
    frame = pd.read_parquet(champion.fingerprint["training_set_snapshot"])
    trained = training.train(frame, s["spec"], training.TrainConfig(n_trials=1, max_rounds=25, seed=seed))
    path, sha = artifacts.save_model_text(trained.model_text, s["env"][settings.ARTIFACTS_VAR] / "models" / SPEC)
    assert sha != champion.sha256
    mv = reg.register_version(SPEC, artifact_path=path, sha256=sha,
                              fingerprint=champion.fingerprint | {"categorical": trained.categorical},
                              metrics={}, run_id="test-variant")
    return mv, {"spec": SPEC, "candidate_version": mv.version, "passed": True, "reasons": ["test"],
                "champion_version": champion.version}


# ---------------------------------------------------------------------------------------------------------------
def test_scores_every_scheduled_flight_with_lineage_and_reruns_identically(scoring_env):
    s = scoring_env
    first = _score(s)
    rows = _stored(s)
    champion = s["registry"].get_alias(SPEC, CHAMPION)
    assert list(rows["flight_id"]) == _schedule_keys(s, NEXT_DAY) and first.rows == len(rows) > 500
    assert not rows["flight_id"].duplicated().any()
    assert (rows["model_version"] == champion.version).all() and (rows["model_sha256"] == champion.sha256).all()
    assert (rows["alias"] == CHAMPION).all() and (rows["run_id"] == first.run_id).all()
    assert rows["score"].between(0, 1).all() and rows["score"].nunique() > 50
    assert (rows["decision"] == (rows["score"] >= s["spec"].scoring.decision_threshold)).all()
    cutoff = s["spec"].prediction_cutoff(NEXT_DAY)
    assert (pd.to_datetime(rows["prediction_cutoff"], utc=True) == pd.Timestamp(cutoff)).all()
    assert rows["feature_fingerprint"].str.fullmatch(r"[0-9a-f]{16}").all()
    model_rows = rows[rows["fallback_reason"].isna()]
    assert len(model_rows) > 0.8 * len(rows)

    second = _score(s)
    again = _stored(s)
    assert second.run_id != first.run_id and second.replaced_rows == first.rows
    same = ["partition_date", "flight_id", "score", "decision", "model_version", "model_sha256",
            "feature_fingerprint", "fallback_reason"]
    pd.testing.assert_frame_equal(rows[same], again[same])
    assert (again["run_id"] == second.run_id).all()
    # Other days are untouched by a partition swap.
    _score(s, DAY)
    assert len(_stored(s, DAY)) == len(_schedule_keys(s, DAY)) and len(_stored(s)) == len(rows)


def test_nothing_to_score_and_no_champion_are_named_errors_and_keep_old_rows(scoring_env):
    s = scoring_env
    _score(s)
    before = _stored(s)
    with pytest.raises(scoring.NothingToScore):
        _score(s, NEXT_DAY + dt.timedelta(days=30))
    # A registry where the spec never had a champion.
    empty = ModelRegistry(s["env"][settings.DATA_DIR_VAR] / "empty_registry.db")
    with pytest.raises(scoring.NoChampionError):
        scoring.score_partition(spec=s["spec"], day=NEXT_DAY, connect=s["connect"], feature_store=s["client"],
                                registry=empty, staging_dir=s["staging"])
    pd.testing.assert_frame_equal(before, _stored(s))


@pytest.mark.parametrize("kill_at, expect_new", [
    # inside the swap transaction: old rows deleted, new ones inserted, not committed (the fault suite kills the
    # scoring CLI at five points, mid-chunks and after the commit included: tests/faults)
    ("inserted", False),
])
def test_sigkill_leaves_old_or_new_partition_never_a_mix(scoring_env, kill_at, expect_new):
    s = scoring_env
    old = _score(s)
    child = subprocess.run(
        [sys.executable, "-m", "bench.scoring_child", SPEC, NEXT_DAY.isoformat(), "--kill-at", kill_at,
         "--chunk-rows", "200"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr[-2000:]
    rows = _stored(s)
    assert len(rows) == old.rows and not rows["flight_id"].duplicated().any()
    assert rows["run_id"].nunique() == 1
    assert (rows["run_id"].iloc[0] != old.run_id) == expect_new
    # The served feature values swap in the same transaction: the same run's rows as the predictions.
    with s["connect"](read_only=True) as con:
        served = con.execute(f"SELECT flight_id, run_id FROM {scoring.served_features_table(s['spec'])} "
                             "WHERE partition_date = ? ORDER BY flight_id", [NEXT_DAY]).df()
    assert list(served["flight_id"]) == list(rows["flight_id"])
    assert set(served["run_id"]) == {rows["run_id"].iloc[0]}
    # The next run recovers whatever the kill left behind (the warehouse's WAL replays on open).
    new = _score(s)
    assert len(_stored(s)) == new.rows == old.rows


def test_rows_name_the_champion_pinned_at_run_start_despite_a_promotion_mid_run(scoring_env):
    s = scoring_env
    reg: ModelRegistry = s["registry"]
    before = reg.get_alias(SPEC, CHAMPION)
    variant, report = _variant_version(s)
    promoted = []

    def promote_after_first_chunk(event, info):
        if event == "chunk" and info["chunk"] == 1:
            reg.promote(SPEC, variant.version, gate_report=report, run_id="test-mid-run", reason="mid-run")
            promoted.append(True)

    result = _score(s, chunk_rows=200, on_event=promote_after_first_chunk)
    rows = _stored(s)
    assert promoted and result.chunks > 2 and reg.get_alias(SPEC, CHAMPION).version == variant.version
    assert (rows["model_version"] == before.version).all() and (rows["model_sha256"] == before.sha256).all()
    # The next run pins the new champion, and its scores differ (it is another model).
    _score(s)
    after = _stored(s)
    assert (after["model_version"] == variant.version).all()
    assert not (after["score"].to_numpy() == rows["score"].to_numpy()).all()


def test_challenger_scores_the_same_rows_into_the_shadow_table_only(scoring_env):
    s = scoring_env
    reg: ModelRegistry = s["registry"]
    variant, _ = _variant_version(s, seed=7)
    reg.set_alias(SPEC, CHALLENGER, variant.version, reason="shadow test", run_id="t")
    result = _score(s)
    served, shadow = _stored(s), _stored(s, shadow=True)
    champion = reg.get_alias(SPEC, CHAMPION)
    assert result.shadow_version == variant.version
    assert list(shadow["flight_id"]) == list(served["flight_id"])
    assert (shadow["alias"] == CHALLENGER).all() and (shadow["model_version"] == variant.version).all()
    assert (served["model_version"] == champion.version).all()
    # Same fallback rows in both: the fallback does not depend on the model.
    pd.testing.assert_series_equal(served["fallback_reason"], shadow["fallback_reason"])


def test_canary_keys_are_served_by_the_challenger_and_the_champion_scores_them_in_shadow(scoring_env):
    from batch_platform.lib import promotion

    s = scoring_env
    reg: ModelRegistry = s["registry"]
    variant, _ = _variant_version(s, seed=7)
    reg.set_alias(SPEC, CHALLENGER, variant.version, reason="canary test", run_id="t")
    reg.set_alias(SPEC, "canary", variant.version, reason="canary test", run_id="t")
    spec = s["spec"].model_copy(update={"promotion": s["spec"].promotion.model_copy(update={"canary_share": 0.25})})
    result = _score(s, spec=spec)
    served, shadow = _stored(s), _stored(s, shadow=True)
    champion = reg.get_alias(SPEC, CHAMPION)
    chosen = promotion.canary_selected(served["flight_id"].tolist(), 0.25, SPEC)
    assert result.canary_version == variant.version and result.canary_rows == int(chosen.sum()) > 0
    assert (served.loc[chosen, "model_version"] == variant.version).all() and (served.loc[chosen, "alias"] == "canary").all()
    assert (served.loc[~chosen, "model_version"] == champion.version).all()
    # both tables still hold both models' scores of every key, whichever serves it
    assert list(shadow["flight_id"]) == list(served["flight_id"])
    assert (shadow.loc[chosen, "model_version"] == champion.version).all()
    assert (shadow.loc[~chosen, "model_version"] == variant.version).all()
    again = _score(s, spec=spec)  # a re-score keeps every flight on its side
    assert again.canary_rows == result.canary_rows and _stored(s).equals(served.assign(
        run_id=again.run_id, scored_at=_stored(s)["scored_at"]))


def test_cold_start_rows_get_the_segment_rate_with_a_reason(scoring_env):
    s = scoring_env
    spec = s["spec"]
    with s["connect"]() as con:  # three flights by aircraft and on a route never seen before
        new = [r[0] for r in con.execute("SELECT flight_id FROM marts.flight_schedule WHERE flight_date = ? "
                                         "ORDER BY flight_id LIMIT 3", [NEXT_DAY]).fetchall()]
        con.execute(f"UPDATE {published_relation(con, 'marts.flight_schedule')} SET tailnum = 'NNEW' || "
                    "substr(flight_id, -7), route = origin || '-ZZZ' WHERE flight_id IN (SELECT unnest(?))", [new])
        rates = scoring.fallback_rates(con, spec, NEXT_DAY)
    result = _score(s)
    rows = _stored(s).set_index("flight_id")
    reason = "missing_features:plane_daily_features+route_daily_features"
    assert (rows.loc[new, "fallback_reason"] == reason).all()
    assert result.fallback_by_reason[reason] == 3
    with s["connect"](read_only=True) as con:
        segments = dict((k, (o, c)) for k, o, c in con.execute(
            "SELECT flight_id, origin, carrier FROM marts.flight_schedule WHERE flight_id IN (SELECT unnest(?))",
            [new]).fetchall())
    for key in new:
        expected = rates.by_segment.get(segments[key], rates.overall)
        assert rows.loc[key, "score"] == pytest.approx(expected)
    assert len(rates.by_segment) > 5 and 0 < rates.overall < 1
    # The label days used are final at the cutoff: none after the last final day.
    assert rates.label_days[1] == spec.last_final_day(spec.prediction_cutoff(NEXT_DAY))
    assert rows["fallback_reason"].isna().sum() == result.rows - result.fallback_rows


def _materialize_predictions(defs: dg.Definitions, day: dt.date) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("batch_scoring")
    return job.execute_in_process(partition_key=day.isoformat(), instance=dg.DagsterInstance.ephemeral(),
                                  raise_on_error=False)


def _check(result: dg.ExecuteInProcessResult, asset: str, name: str) -> dg.AssetCheckEvaluation:
    evals = [e.asset_check_evaluation_data for e in result.all_events
             if e.event_type_value == "ASSET_CHECK_EVALUATION"
             and e.asset_check_evaluation_data.asset_key == dg.AssetKey([asset])
             and e.asset_check_evaluation_data.check_name == name]
    assert len(evals) == 1
    return evals[0]


def test_scoring_job_checks_fallback_share_and_serves_by_key(scoring_env, monkeypatch):
    from batch_platform.definitions import defs as lazy_defs

    s = scoring_env
    defs = lazy_defs()
    server = report_server.make_server(settings.artifacts_dir(), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(settings.REPORTS_URL_VAR, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        ok = _materialize_predictions(defs, NEXT_DAY)
        assert ok.success
        assert _check(ok, "flight_delay_predictions", "fallback_share_within_limit").passed
        assert _check(ok, "flight_delay_predictions", "one_row_per_key").passed
        # the drift check links its Evidently report by a URL the browser can open from the UI (not file://)
        drift = _check(ok, "flight_delay_predictions", "feature_drift").metadata
        url = drift["html_report_url"].value
        assert url == settings.report_url(drift["html_report"].value)
        assert not Path(drift["html_report"].value).exists()  # rendered when first asked for, not by the check
        with urllib.request.urlopen(url, timeout=180) as resp:  # this request renders it (Evidently's import too)
            assert resp.status == 200 and resp.read() == Path(drift["html_report"].value).read_bytes()
    finally:
        server.shutdown()
        server.server_close()
    rows = _stored(s)
    key = rows["flight_id"].iloc[len(rows) // 2]
    found = serving.lookup(s["client"], s["spec"], key)
    assert isinstance(found, serving.Prediction)
    stored = rows.set_index("flight_id").loc[key]
    assert found.score == pytest.approx(stored["score"]) and found.model_version == stored["model_version"]
    assert found.model_sha256 == stored["model_sha256"] and found.partition_date == NEXT_DAY.isoformat()
    assert dt.timedelta(0) <= found.age < dt.timedelta(minutes=10)
    missing = serving.lookup(s["client"], s["spec"], "2013-01-25_XX_0000_EWR")
    assert isinstance(missing, serving.NoPrediction) and "never scored" in missing.reason
    late = serving.lookup(s["client"], s["spec"], key, now=found.scored_at + dt.timedelta(hours=37))
    assert isinstance(late, serving.NoPrediction) and "expired" in late.reason

    # Half the day's flights by unknown aircraft: the fallback share exceeds the spec's limit -> the check fails
    # (the predictions are still stored: the check reports, it does not hide the day).
    with s["connect"]() as con:
        con.execute(f"UPDATE {published_relation(con, 'marts.flight_schedule')} SET tailnum = 'NNEW' || "
                    "substr(flight_id, -7) WHERE flight_date = ? AND hash(flight_id) % 2 = 0", [NEXT_DAY])
    bad = _materialize_predictions(defs, NEXT_DAY)
    check = _check(bad, "flight_delay_predictions", "fallback_share_within_limit")
    assert not check.passed and check.metadata["fallback_share"].value > 0.3
    assert bad.success  # a failed check does not fail the run


def test_predict_cli_prints_the_served_score_and_a_clear_no_prediction(scoring_env):
    s = scoring_env
    result = _score(s)
    with s["connect"](read_only=True) as con:
        serving.push_partition(con, s["client"], s["spec"], NEXT_DAY)
    key = _stored(s)["flight_id"].iloc[0]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "batch_platform.cli", "predict", key, "--model", SPEC, "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout)[0]
    assert answer["found"] and answer["key"] == key and answer["model_version"] == result.champion_version
    text = subprocess.run([sys.executable, "-m", "batch_platform.cli", "predict", "no-such-flight"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert text.returncode == 1 and "no prediction" in text.stdout


def test_peak_memory_does_not_grow_with_rows_scored(scoring_env):
    """Score N and then 10×N rows (the day's schedule replicated under new keys) in chunks of N rows, each in a
    fresh process: the peak RSS of the 10× run stays within 20% of the 1× run."""
    s = scoring_env
    chunk = 50_000  # one chunk of 1M rows peaks at 2.8x (bench/bench_scoring.py): 500k unchunked breaks the bound

    def replicate(copies: int) -> int:
        with s["connect"]() as con:
            con.execute("CREATE TABLE IF NOT EXISTS marts._schedule_day AS "
                        "SELECT * FROM marts.flight_schedule WHERE flight_date = ?", [NEXT_DAY])
            schedule = published_relation(con, "marts.flight_schedule")
            con.execute(f"DELETE FROM {schedule} WHERE flight_date = ?", [NEXT_DAY])
            con.execute(f"INSERT INTO {schedule} SELECT s.* REPLACE (s.flight_id || '_c' || t.c AS flight_id) "
                        "FROM marts._schedule_day s, range(?) t(c)", [copies])
            return con.execute("SELECT count(*) FROM marts.flight_schedule WHERE flight_date = ?",
                               [NEXT_DAY]).fetchall()[0][0]

    def peak(rows_wanted: int) -> tuple[int, dict]:
        per_day = len(_schedule_keys(s, NEXT_DAY)) if not hasattr(peak, "day") else peak.day
        peak.day = per_day
        n = replicate(max(1, round(rows_wanted / per_day)))
        report = s["env"][settings.DATA_DIR_VAR] / f"mem-{rows_wanted}.json"
        out = subprocess.run([sys.executable, "-m", "bench.scoring_child", SPEC, NEXT_DAY.isoformat(),
                              "--chunk-rows", str(chunk), "--report", str(report)],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        data = json.loads(report.read_text())
        assert data["rows"] == n
        return data["peak_rss_kib"], data

    small, small_data = peak(chunk)
    large, large_data = peak(10 * chunk)
    assert large_data["rows"] >= 9.5 * small_data["rows"] and large_data["chunks"] >= 10
    print(f"peak RSS: {small_data['rows']} rows {small / 1024:.0f} MiB, {large_data['rows']} rows "
          f"{large / 1024:.0f} MiB (x{large / small:.3f})")
    assert large < 1.2 * small, f"peak RSS {small} KiB for {small_data['rows']} rows, {large} KiB for " \
                                f"{large_data['rows']} rows"
