"""Child process of the scoring fault and memory tests and of the scoring benchmark: score one partition with
the lib, settings from the environment.

    python -m bench.scoring_child <spec> <day> [--kill-at EVENT[:N]] [--chunk-rows N] [--report FILE]

``--kill-at chunk:2`` SIGKILLs this process when the 2nd chunk has been scored, ``--kill-at deleted`` inside the
swap transaction right after the day's old rows were deleted, etc. (events: see ``lib.scoring.OnEvent``).
``--report`` writes JSON with the result and the peak RSS (``ru_maxrss``, KiB) when the run ends normally.
"""

import argparse
import datetime as dt
import json
import os
import resource
import signal
from functools import partial
from pathlib import Path

from batch_platform import settings
from batch_platform.lib import scoring, warehouse
from batch_platform.lib.feature_store import FeatureStoreClient
from batch_platform.lib.registry import ModelRegistry
from batch_platform.lib.specs import load_specs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("day", type=dt.date.fromisoformat)
    p.add_argument("--kill-at", default=None)
    p.add_argument("--chunk-rows", type=int, default=None)
    p.add_argument("--report", type=Path, default=None)
    args = p.parse_args()
    event, _, nth = (args.kill_at or "").partition(":")

    def on_event(name: str, info: dict) -> None:
        if name == event and (not nth or info.get("chunk") == int(nth)):
            os.kill(os.getpid(), signal.SIGKILL)

    result = scoring.score_partition(
        spec=load_specs()[args.spec], day=args.day, connect=partial(warehouse.connect, settings.warehouse_path()),
        feature_store=FeatureStoreClient(), registry=ModelRegistry(settings.registry_path()),
        staging_dir=settings.artifacts_dir() / "scoring_staging", chunk_rows=args.chunk_rows, on_event=on_event,
    )
    if args.report:
        args.report.write_text(json.dumps({"rows": result.rows, "chunks": result.chunks, "run_id": result.run_id,
                                           "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


if __name__ == "__main__":
    main()
