"""The daily cycle runs itself: 15 live days driven by Dagster's evaluation APIs at explicit times (see
``tests/daily_cycle.py``, run in a process of its own because partitions follow the data dir's clock at import):
ingest, features, scoring, checks, a drift retrain, and the promotion lifecycle (shadow, rollback) on the live
clock; the rollback's morning is judged by the real Dagster daemon on the cycle's instance."""

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batch_platform import settings
from batch_platform.lib import clock as clocks
from batch_platform.lib.time_model import load_time_model
from tests.conftest import platform_env_vars, project_dagster_home, write_test_specs
from tests.daily_cycle import LIVE_DAYS, SHADOW_MAX_DAYS, SHADOW_MIN_DAYS, SHADOWED

ROOT = Path(__file__).resolve().parent.parent
SOURCE_FIRST_LIVE_DAY = dt.date(2013, 6, 2)  # the 2013 day the first live day is
# The live clock of the story: the one live on this date (first live day 2026-11-01), not today's. The live clock moves
# a week each week, and with it the calendar position of every live date (month, day of year, days to the nearest
# holiday: features of both models), so the models, and the gate verdicts the story needs, would change from one
# week to the next. On this clock the input is fixed; its dates stay live dates in the past (asserted below).
STORY_CLOCK_AT = dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC)


@pytest.mark.timeout(3300)
def test_each_day_exactly_the_due_runs_are_requested(tmp_path):
    env = {k: str(v) for k, v in platform_env_vars(tmp_path).items()}
    write_test_specs(Path(env["BATCH_PLATFORM_MODEL_SPECS"]))
    import yaml

    specs = Path(env["BATCH_PLATFORM_MODEL_SPECS"])
    (specs / "flight_long_delay.yaml").unlink()
    for path in specs.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["gate"]["floor"] = 0.0  # the cycle needs a champion, not a good one (a month of history)
        # and its drift retrain must reach the promotion lifecycle: 4 test days give day-block intervals too wide to
        # show non-inferiority at the shipped tolerance (the gate's statistics: test_gate.py, test_loop.py)
        raw["gate"].update(tolerance=1.0, max_slice_degradation=1.0)
        # A month of history trains on 10 days, so ordinary days drift by up to ~2 reference std devs (7-day
        # carrier rates, the score's bins). The episode shifts one column (distance) by ~4: thresholds above the
        # ordinary and one ERROR column making an ERROR day.
        raw["monitoring"]["drift"].update(wasserstein_error=3.0, psi_error=3.0, min_error_columns=1)
        # the episode under test is drift: models trained on 10 days miss their validation metric by more than
        # the shipped tolerance on ordinary days, which would be accuracy episodes of their own
        raw["monitoring"]["accuracy_tolerance"] = 1.0
        if raw["name"] in SHADOWED:  # the drift retrain's challenger shadows, judged on final labels each morning
            raw["promotion"].update(shadow_min_days=SHADOW_MIN_DAYS, shadow_min_rows=500,
                                    shadow_max_days=SHADOW_MAX_DAYS)
        path.write_text(yaml.safe_dump(raw))
    # the story's live clock (STORY_CLOCK_AT); the simulated days are its live dates of fixed source days (a fixed
    # input, like a seed: on them the drift retrain of flight_delay passes its gate, which the rollback half of the
    # story needs, and a day later or earlier -- or a week later, with the calendar features -- it is a coin toss:
    # "not worse on the point estimate" between two models trained on 10 days each)
    tm = load_time_model()
    now = dt.datetime.now(dt.UTC)
    clock = clocks.live_clock_for(tm.last_published_day("flights", STORY_CLOCK_AT))
    clocks.record_clock(Path(env[settings.DATA_DIR_VAR]) / "clock.json", clock)
    first_live_day = SOURCE_FIRST_LIVE_DAY + dt.timedelta(days=clock.shift_days)
    assert first_live_day + dt.timedelta(days=LIVE_DAYS + 2) < now.astimezone(tm.tz).date()
    from tests.test_daemon import free_port

    env[settings.REPORTS_URL_VAR] = f"http://127.0.0.1:{free_port()}"  # the charts' links (served after the cycle)
    home = project_dagster_home(tmp_path)  # the cycle's instance, which the daemon shares for one morning
    log = ROOT / ".test-artifacts" / "daily_cycle.log"  # the whole story, as it goes (pytest shows the tail)
    log.parent.mkdir(exist_ok=True)
    errors = log.with_name("daily_cycle.stderr.log")
    with log.open("w") as sink, errors.open("w") as error_sink:  # written as it runs: a timeout leaves the story
        returncode = subprocess.run([sys.executable, "-m", "tests.daily_cycle", first_live_day.isoformat()],
                                    cwd=ROOT, env={**os.environ, **env, "DAGSTER_HOME": str(home)}, stdout=sink,
                                    stderr=error_sink, text=True, timeout=3000).returncode  # 905-1500+ s
    out = subprocess.CompletedProcess([], returncode, log.read_text(), errors.read_text())
    if (home / "daemon.log").exists():
        shutil.copy(home / "daemon.log", log.with_name("daily_cycle_daemon.log"))
    print(out.stdout[-20000:])
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    assert out.stdout.strip().endswith("OK")
    check_the_ui({**env, "DAGSTER_HOME": str(home)}, home / "workspace.yaml")


SCREENSHOTS = ROOT / ".test-artifacts" / "ui"


def check_the_ui(env: dict[str, str], workspace: Path) -> None:
    """The webserver over the cycle's instance, in headless Chromium: the delay champion's page shows the daemon's
    rollback (its newest materialization: action, reason); the operational SLIs' page shows the chart of the live
    days (served by the report server). Screenshots in .test-artifacts/ui/."""
    from playwright.sync_api import sync_playwright

    from tests.test_daemon import _wait_http, dismiss_welcome, free_port

    port = free_port()
    reports = subprocess.Popen([sys.executable, "-m", "batch_platform.lib.report_server", "--port",
                                env[settings.REPORTS_URL_VAR].rsplit(":", 1)[1], "--directory",
                                env[settings.ARTIFACTS_VAR]], env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    web = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-w", str(workspace),
                            "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env={**os.environ, **env},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        _wait_http(f"{base}/server_info")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1800, "height": 1400})
            try:
                page.goto(f"{base}/assets/flight_delay_champion_model", wait_until="networkidle")
                page.wait_for_timeout(2000)
                dismiss_welcome(page)
                page.screenshot(path=str(SCREENSHOTS / "champion_rollback.png"), full_page=True)
                body = page.inner_text("body")
                assert "rollback" in body and "production roc_auc" in body, body[:3000]
                page.goto(f"{base}/assets/flight_delay_operational_slis", wait_until="networkidle")
                page.wait_for_timeout(3000)
                page.screenshot(path=str(SCREENSHOTS / "operational_slis.png"), full_page=True)
                chart = page.locator("img[src*='/slis/flight_delay/']").first
                assert chart.count(), "the SLI asset's page shows no SLI chart"
                width = chart.evaluate("img => img.complete ? img.naturalWidth : 0")
                assert width > 500, f"the SLI chart did not load ({chart.get_attribute('src')})"
                chart.screenshot(path=str(SCREENSHOTS / "operational_slis_chart.png"))
            finally:
                browser.close()
    finally:
        for process in (web, reports):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
