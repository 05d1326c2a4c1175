"""Entry point for the dead-run tests: run, the way the CLI runs a job (``pipeline.run_job``: in this process,
against $DAGSTER_HOME), a one-step job that claims the warehouse pool, writes a marker file, then sleeps.

    python -m tests.pool_holder MARKER SECONDS
"""

import sys
import time
from pathlib import Path

import dagster as dg

from batch_platform import settings

KILLED_ON_PURPOSE = "batch_platform/test_killed_on_purpose"  # tag of the holder's run: tests expect it to fail


def definitions(marker: Path, seconds: float) -> dg.Definitions:
    @dg.asset(pool=settings.WAREHOUSE_POOL)
    def holds_the_warehouse_pool() -> None:
        marker.write_text("holding")
        time.sleep(seconds)

    return dg.Definitions(assets=[holds_the_warehouse_pool],
                          jobs=[dg.define_asset_job("hold_pool", selection=[holds_the_warehouse_pool])])


if __name__ == "__main__":
    from batch_platform import pipeline

    marker, seconds = Path(sys.argv[1]), float(sys.argv[2])
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as the CLI does
    try:
        with dg.DagsterInstance.get() as instance:
            outcome = pipeline.run_job(definitions(marker, seconds), instance, "hold_pool",
                                       tags={KILLED_ON_PURPOSE: "true"})
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    print(f"run {outcome.run_id} success={outcome.success}", flush=True)
    sys.exit(0 if outcome.success else 1)
