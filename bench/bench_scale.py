"""The pipeline as data grows: wall time and peak RSS per stage at x1, x10 and x30 scaled replays (Jan-Feb 2013, each
copy with its own planes and routes), the platform on the local path and on a Dask cluster, the bare script beside.

Per scale: ``land --scale N`` once; then the platform's CLI stages in a fresh data dir (``bench_pipeline.platform``:
ingest, features, train, score, each its own process), once as shipped (local) and once with
``BATCH_PLATFORM_DASK_ADDRESS`` naming a ``distributed.LocalCluster`` of 2 worker processes (1 thread each) started
here (candidates trained data-parallel on the workers, each day's predictions computed on the workers); then the bare
script (``bench.pipeline_bare``) on the SQL read off the local run. One run of each (``BENCH_SCALE_REPEATS``, the
median of more): at x30 a platform run takes minutes.

The train stage is split by the run's own step records (Dagster's step start and end times): the training-set
steps (point-in-time join, snapshot, fingerprint) and the candidate steps (training, evaluation, registration); the
rest of the stage (process start-up, gate, promotion, drift reference) is its own row. Peak RSS is each CLI
process's own; on Dask, the workers' peaks are shown apart (each worker's lifetime peak, read from the workers at
the end of the scale). Not a target: a table printed into RESULTS.md.

    python -m bench --only scale      (BENCH_SCALE_SCALES=1,10 for fewer scales)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench import bench_pipeline

SCALES = [int(s) for s in os.environ.get("BENCH_SCALE_SCALES", "1,10,30").split(",")]
REPEATS = int(os.environ.get("BENCH_SCALE_REPEATS", "1"))
WORKERS = 2
ROWS = ["ingest", "features", "train: training sets", "train: candidates", "train: rest", "score"]


def scale_specs(root: Path) -> Path:
    """The shipped model specs with every gate floor at 0: a first model on a fresh data dir is judged against its
    floor only, and this benchmark times the stages rather than judging models (a refused model would leave the
    day to the fallback; a model trained on two Dask workers differs from the local one as another seed's does, and
    flight_delay's sits near its 0.6 floor on either path)."""
    import yaml

    folder = bench_pipeline.bench_specs(root)
    for path in folder.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["gate"] = {**raw["gate"], "floor": 0.0}
        path.write_text(yaml.safe_dump(raw))
    return folder


def _step_seconds(home: Path) -> dict[str, float]:
    """Seconds of the training-set and candidate steps of the data dir's train run (its instance at ``home``)."""
    import dagster as dg

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            run = instance.get_runs(filters=dg.RunsFilter(job_name="train_gate_promote"), limit=1)[0]
            stats = instance.get_run_step_stats(run.run_id)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    seconds = {"train: training sets": 0.0, "train: candidates": 0.0}
    for s in stats:
        if s.start_time is None or s.end_time is None:
            continue
        if s.step_key.endswith("_training_set"):
            seconds["train: training sets"] += s.end_time - s.start_time
        elif s.step_key.endswith("_candidate_model"):
            seconds["train: candidates"] += s.end_time - s.start_time
    return seconds


def _platform(root: Path, landing: Path, specs: Path, env: dict[str, str] | None = None) -> tuple[dict, dict, Path]:
    seconds, rss, data = bench_pipeline.platform(root, landing, specs, env)
    steps = _step_seconds(root / "home")
    by_row = {"ingest": seconds["ingest"], "features": seconds["features"], **steps,
              "train: rest": seconds["train"] - sum(steps.values()), "score": seconds["score"]}
    mib = {"ingest": rss["ingest"], "features": rss["features"], "train: training sets": rss["train"],
           "train: candidates": rss["train"], "train: rest": rss["train"], "score": rss["score"]}
    return by_row, {k: v / 1024 for k, v in mib.items()}, data


def _worker_peaks_mib(client) -> float:
    def peak() -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    return max(client.run(peak).values()) / 1024


def _median_rows(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _fmt(seconds: float | None, mib: float | None) -> str:
    if seconds is None:
        return f"{'-':>16}"
    return f"{seconds:7.1f} s {mib:5.0f} M" if mib is not None else f"{seconds:7.1f} s {'':>6}"


def run() -> dict:
    from distributed import Client, LocalCluster

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        specs = scale_specs(root)
        for n in SCALES:
            landing = bench_pipeline.land(root, n)
            local, dask, bare, rss_local, rss_dask, rss_bare = [], [], [], {}, {}, 0
            with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                for r in range(REPEATS):
                    seconds, rss_local, data = _platform(root / f"local-x{n}-{r}", landing, specs)
                    local.append(seconds)
                    if r == 0:
                        plan_file, out = root / f"plan-x{n}.json", root / f"bare-x{n}"
                        plan_file.write_text(json.dumps(bench_pipeline.plan(data, landing, out, specs)))
                    seconds, rss_dask, _ = _platform(root / f"dask-x{n}-{r}", landing, specs,
                                                     {"BATCH_PLATFORM_DASK_ADDRESS": cluster.scheduler_address})
                    dask.append(seconds)
                    shutil.rmtree(root / f"dask-x{n}-{r}", ignore_errors=True)
                    _, b_rss, result = bench_pipeline.bare(plan_file, out)
                    s = result["seconds"]
                    bare.append({"ingest": s["ingest"], "features": s["features"],
                                 "train: training sets": s["training_set"], "train: candidates": s["training"],
                                 "train: rest": None, "score": s["score"]})
                    rss_bare = max(rss_bare, b_rss / 1024)
                    shutil.rmtree(root / f"local-x{n}-{r}", ignore_errors=True)  # (the bare script read its warehouse)
                workers_mib = _worker_peaks_mib(client)
            shutil.rmtree(landing, ignore_errors=True)
            shutil.rmtree(root / f"bare-x{n}", ignore_errors=True)
            results[n] = {"local": _median_rows(local), "dask": _median_rows(dask),
                          "bare": {k: (statistics.median(b[k] for b in bare) if bare[0][k] is not None else None)
                                   for k in bare[0]},
                          "rss_local": rss_local, "rss_dask": rss_dask, "rss_bare": rss_bare,
                          "workers_mib": workers_mib}
    return results


def print_results(results: dict) -> None:
    print(f"\npipeline by scale, Jan-Feb 2013 replay: wall time and peak RSS (MiB) per stage; median of {REPEATS} "
          f"run(s); Dask = LocalCluster of {WORKERS} worker processes x 1 thread")
    print(f"{'scale':>5} {'stage':<22} {'local':>16} {'Dask':>16} {'bare':>16}")
    for n, r in results.items():
        for row in ROWS:
            print(f"{'x' + str(n):>5} {row:<22} {_fmt(r['local'][row], r['rss_local'][row])} "
                  f"{_fmt(r['dask'][row], r['rss_dask'][row])} {_fmt(r['bare'][row], None)}")
        total = {k: sum(v for v in r[k].values() if v is not None) for k in ("local", "dask", "bare")}
        print(f"{'x' + str(n):>5} {'total':<22} {_fmt(total['local'], max(r['rss_local'].values()))} "
              f"{_fmt(total['dask'], max(r['rss_dask'].values()))} {_fmt(total['bare'], r['rss_bare'])}")
        print(f"{'x' + str(n):>5} {'Dask workers (peak)':<22} {'':>16} {'':>10}{r['workers_mib']:5.0f} M")
    print("bare: one process for every stage (its peak RSS on the total row); its train is the training sets and "
          "lgb.train only (no gate, registry or drift reference: no 'rest')")


def main() -> None:
    print_results(run())


if __name__ == "__main__":
    main()
