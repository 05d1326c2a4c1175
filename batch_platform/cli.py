"""``batch-platform``: the user-facing command.

    batch-platform land   --start 2013-01-01 --end 2013-01-31 [--scale N] [--seed S]
    batch-platform ingest --start 2013-01-01 --end 2013-01-31 [--force]
    batch-platform demo   [--start ...] [--end ...]
    batch-platform features
    batch-platform status
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from batch_platform import settings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from e


def _range(parser: argparse.ArgumentParser, start: dt.date, end: dt.date) -> argparse.ArgumentParser:
    parser.add_argument("--start", type=_date, default=start, help=f"first flight day (default {start})")
    parser.add_argument("--end", type=_date, default=end, help=f"last flight day, inclusive (default {end})")
    return parser


def cmd_land(args: argparse.Namespace) -> int:
    from batch_platform.lib.landing import replay

    landing = args.landing_dir or settings.landing_dir()
    t0 = time.perf_counter()
    summary = replay(landing, args.start, args.end, scale=args.scale, seed=args.seed)
    print(
        f"Landed {len(summary.days)} day(s) {args.start}..{args.end} at scale {args.scale} into {landing} "
        f"({len(summary.files_written)} of {len(summary.files)} files written, {time.perf_counter() - t0:.1f}s)"
    )
    for table, rows in summary.rows.items():
        print(f"  {table:<10} {rows:>10,} rows")
    return 0


def _print_status() -> None:
    from batch_platform.pipeline import warehouse_summary

    db = settings.warehouse_path()
    if not db.exists():
        print(f"No warehouse yet at {db}.")
        return
    print(f"Warehouse: {db}")
    print(f"  {'table':<14} {'partitions':>10} {'rows':>10}  range")
    for name, parts, rows, lo, hi in warehouse_summary(db):
        rng = f"{lo} .. {hi}" if lo else ("snapshot" if parts else "-")
        print(f"  {name:<14} {parts:>10} {rows:>10,}  {rng}")


def cmd_ingest(args: argparse.Namespace) -> int:
    import dagster as dg

    from batch_platform.pipeline import ensure_dagster_home, ingest_range, load_definitions

    home = ensure_dagster_home()
    defs = load_definitions()
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        outcomes = ingest_range(defs, instance, args.start, args.end, force=args.force)
    ran = [o for o in outcomes if o.skipped_reason is None]
    failed = [o for o in outcomes if not o.success]
    skipped = len(outcomes) - len(ran)
    print(
        f"Ingest {args.start}..{args.end}: {len(ran)} run(s), {skipped} unchanged and skipped, "
        f"{len(failed)} failed ({time.perf_counter() - t0:.1f}s); runs recorded in {home}"
    )
    for o in failed:
        print(f"  FAILED {o.job} {o.partition or ''} run {o.run_id}: {'; '.join(o.errors)}")
    if failed:
        print(f"  Rejected batches are in {settings.quarantine_dir()} with a .reason.json beside each.")
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    _print_status()
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    import dagster as dg

    from batch_platform.pipeline import build_features, ensure_dagster_home, load_definitions

    ensure_dagster_home()
    defs = load_definitions()
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        outcome = build_features(defs, instance)
        print(f"Features and training sets: {'ok' if outcome.success else 'FAILED'} "
              f"(run {outcome.run_id}, {time.perf_counter() - t0:.1f}s)")
        for err in outcome.errors:
            print(f"  {err}")
        print(f"  dbt's console output: {settings.data_dir() / 'logs' / 'features_and_training_sets.log'}")
        _print_training_sets(instance)
    return 0 if outcome.success else 1


def _print_training_sets(instance) -> None:
    import dagster as dg

    from batch_platform.defs.training.assets import LEAKAGE_CHECK
    from batch_platform.lib.specs import load_specs
    from batch_platform.pipeline import latest_check, latest_metadata

    print(f"  {'training set':<34} {'rows':>7} {'pos.rate':>8}  {'days':<24} {'leakage check':<14} fingerprint")
    for name in load_specs():
        key = dg.AssetKey([f"{name}_training_set"])
        md = latest_metadata(instance, key)
        if not md:
            print(f"  {key.to_user_string():<34} (not materialized)")
            continue
        check = latest_check(instance, key, LEAKAGE_CHECK)
        verdict = "n/a" if check is None else ("passed" if check[0] else "FAILED")
        print(f"  {key.to_user_string():<34} {md['dagster/row_count']:>7,} {md['positive_rate']:>8.3f}  "
              f"{md['first_day'] + ' .. ' + md['last_day']:<24} {verdict:<14} {md['data_fingerprint'][:12]}")
        print(f"  {'':<34} splits {md['rows_per_split']}; snapshot {md['snapshot']}")


def cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    paths = settings.export_defaults()
    print(f"== batch_platform demo: flight days {args.start} .. {args.end} (data in {paths[settings.DATA_DIR_VAR]})")
    print("-- 1/3 land the upstream batches")
    args.scale, args.seed, args.landing_dir = 1, 13, None
    rc = cmd_land(args)
    print("-- 2/3 ingest into the warehouse (validated, one Dagster run per day)")
    args.force = False
    rc = cmd_ingest(args) or rc
    _print_status()
    print("-- 3/3 features (dbt), Feast registry + online store, point-in-time training sets")
    rc = cmd_features(args) or rc
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f}s.")
    print("Open the UI:  DAGSTER_HOME=dagster_home .venv/bin/dagster dev -w workspace.yaml   (then http://127.0.0.1:3000)")
    return rc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batch-platform", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = _range(sub.add_parser("land", help="replay the source into daily landing batches"),
               settings.DEMO_START, settings.DEMO_END)
    p.add_argument("--scale", type=int, default=1, help="land N copies of every flight (benchmarks)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--landing-dir", default=None, help="default: $BATCH_PLATFORM_LANDING_DIR")
    p.set_defaults(func=cmd_land)

    p = _range(sub.add_parser("ingest", help="load landed days into the warehouse (Dagster runs)"),
               settings.DEMO_START, settings.DEMO_END)
    p.add_argument("--force", action="store_true", help="reload days whose landed files are unchanged")
    p.set_defaults(func=cmd_ingest)

    p = _range(sub.add_parser("demo", help="land and run the platform end to end, then print a summary"),
               settings.DEMO_START, settings.DEMO_END)
    p.set_defaults(func=cmd_demo)

    sub.add_parser("status", help="what the warehouse holds").set_defaults(func=cmd_status)
    sub.add_parser("features", help="dbt build, feast apply + online store, training sets (one Dagster run)"
                   ).set_defaults(func=cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # third-party noise (ibis, dbt) on the console
    args = build_parser().parse_args(argv)
    settings.export_defaults()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
