"""``batch-platform``: the user-facing command.

    batch-platform land   [--live] [--start 2013-01-01 --end 2013-01-31] [--scale N] [--seed S]
    batch-platform land-file TABLE FILE      (an export of your own data, see "Bring your own data")
    batch-platform ingest [--start 2013-01-01 --end 2013-01-31] [--force]
    batch-platform cycle  [--start ...] [--end ...] [--day D] [--force]   (ingest, features, train, score: one process)
    batch-platform demo   [--live] [--start ...] [--end ...]
    batch-platform features
    batch-platform train
    batch-platform models list | show SPEC [VERSION] | promote SPEC VERSION | rollback SPEC VERSION
    batch-platform score  [--day D]          (default: the day after the last loaded day)
    batch-platform predict FLIGHT_ID [--model SPEC] [--json]
    batch-platform serve  [--host 127.0.0.1] [--port 8000]
    batch-platform status
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from batch_platform import settings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from e


LIVE_DEFAULT_DAYS = (settings.DEMO_END - settings.DEMO_START).days + 1
"""Live clock: the default range is this many days (as many as the 2013 demo) ending at the last published day."""


def _range(parser: argparse.ArgumentParser, start: dt.date, end: dt.date) -> argparse.ArgumentParser:
    parser.add_argument("--start", type=_date, default=None,
                        help=f"first flight day (default {start} on the 2013 replay clock; live: "
                        f"{LIVE_DEFAULT_DAYS} days before --end)")
    parser.add_argument("--end", type=_date, default=None,
                        help=f"last flight day, inclusive (default {end} on the 2013 replay clock; live: the last "
                        "day whose batch is published)")
    return parser


def _live_window(clock, now: dt.datetime | None = None) -> tuple[dt.date, dt.date | None]:
    """On a live or calendar clock: (the last day every declared daily table has published, the last day the tables
    published ahead of their day -- a schedule, a plan -- have published; None without such tables) at ``now``,
    within the data."""
    from batch_platform.lib.contracts import DAILY_CONTRACTS
    from batch_platform.lib.ingest import lead_days
    from batch_platform.lib.time_model import load_time_model

    now = now or dt.datetime.now(dt.UTC)
    tm = load_time_model()
    after = [c for c in DAILY_CONTRACTS if not lead_days(c)]
    ahead = [c for c in DAILY_CONTRACTS if lead_days(c)]
    last = min(min(tm.last_published_day(c.table, now) for c in after), clock.last_source_day)
    ahead_last = min((tm.last_published_day(c.table, now) for c in ahead), default=None)
    return last, None if ahead_last is None else min(ahead_last, clock.last_source_day)


def _resolve_clock(args: argparse.Namespace):
    """The data dir's clock (a first ``--live`` replay chooses and records it) and the flight-day range: the
    arguments, else the clock's default range. Also sets ``args.schedule_through`` (live: the last published
    schedule day, so tomorrow's flights can be scored tonight) and ``args.clock``."""
    from batch_platform.lib import clock as clocks
    from batch_platform.lib.time_model import load_time_model

    clock = settings.data_clock()
    if getattr(args, "live", False) and not clock.is_live:
        tm = load_time_model()
        clock = clocks.live_clock_for(tm.last_published_day("flights", dt.datetime.now(dt.UTC)))
    args.clock, args.schedule_through = clock, None
    if clock.is_live:
        last, schedule_last = _live_window(clock)
        args.end = args.end or last
        # the calendar (one's own data): everything landed; a live replay: as many days as the 2013 demo
        args.start = args.start or (clock.first_day if clock.is_calendar
                                    else max(args.end - dt.timedelta(days=LIVE_DEFAULT_DAYS - 1), clock.first_day))
        if args.end == last:
            args.schedule_through = schedule_last
    else:
        args.start = args.start or settings.DEMO_START
        args.end = args.end or settings.DEMO_END
    return clock


def cmd_land(args: argparse.Namespace) -> int:
    from batch_platform.lib.clock import ClockMismatch, record_clock
    from batch_platform.lib.landing import replay

    clock = _resolve_clock(args)
    if clock.is_calendar:
        print(f"land: the data in {settings.data_dir()} is your own, on {clock.label}: `land` replays the flights "
              "data set; land your exports with `batch-platform land-file TABLE FILE`")
        return 2
    landing = args.landing_dir or settings.landing_dir()
    t0 = time.perf_counter()
    try:
        record_clock(settings.clock_path(), clock)
        summary = replay(landing, args.start, args.end, scale=args.scale, seed=args.seed, clock=clock,
                         schedule_through=args.schedule_through,
                         published_by=dt.datetime.now(dt.UTC) if clock.is_live else None)
    except (ClockMismatch, ValueError) as e:
        print(f"land: {e}")
        return 2
    print(
        f"Landed {len(summary.days)} day(s) {clock.describe(args.start)} .. {clock.describe(args.end)} at scale "
        f"{args.scale} into {landing} ({len(summary.files_written)} of {len(summary.files)} files written, "
        f"{time.perf_counter() - t0:.1f}s); schedules through "
        f"{clock.describe(summary.schedule_days[-1]) if summary.schedule_days else '-'}"
    )
    for table, rows in summary.rows.items():
        print(f"  {table:<10} {rows:>10,} rows")
    return 0


def cmd_land_file(args: argparse.Namespace) -> int:
    """A user's export of a declared table landed as its daily batches (and its derived tables'); the first
    export into a data dir with no clock puts it on the calendar clock, from the first day landed."""
    from batch_platform.lib.clock import ClockMismatch, calendar_clock, read_clock, record_clock
    from batch_platform.lib.contracts import DECLARED, DECLARED_DERIVED
    from batch_platform.lib.exports import ExportError, export_days, land_export, read_export
    from batch_platform.lib.time_model import load_time_model

    now = dt.datetime.now(dt.UTC)
    landing = settings.landing_dir()
    try:
        contract = DECLARED.get(args.table)
        clock = read_clock(settings.clock_path())
        rows = read_export(args.file, contract) if contract is not None else None
        if contract is not None and not contract.is_snapshot:
            days = export_days(rows, contract)
            if clock is None and days:
                clock = record_clock(settings.clock_path(), calendar_clock(days[0]))
                print(f"{settings.data_dir()} is on {clock.label}: its partitions start on {clock.first_day}")
            if clock is not None and not clock.is_calendar:
                raise ClockMismatch(f"the data in {settings.data_dir()} is on {clock.label}: an export of your own "
                                    "days goes into a data dir of its own (BATCH_PLATFORM_DATA_DIR)")
            if clock is not None and days and days[0] < clock.first_day:
                raise ExportError(f"{args.file}: rows of {days[0]}, before the data dir's first day "
                                  f"{clock.first_day} (its first partition): use a new data dir to start earlier")
        landed = land_export(landing, DECLARED, DECLARED_DERIVED, args.table, args.file,
                             time_model=load_time_model(), now=now, rows=rows)
    except (ExportError, ClockMismatch) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for item in landed:
        span = f"{len(item.days)} day(s) {item.days[0]} .. {item.days[-1]}" if item.days else "the snapshot"
        print(f"  {item.table:<24} {span} ({item.files_written} file(s) written) into {landing / item.table}")
        if item.not_yet_published:
            print(f"  {'':<24} not yet published, left for a later land-file: "
                  f"{', '.join(str(d) for d in item.not_yet_published)}")
    return 0


def _print_status() -> None:
    from batch_platform.pipeline import warehouse_summary

    db = settings.warehouse_path()
    if not db.exists():
        print(f"No warehouse yet at {db}.")
        return
    print(f"Warehouse: {db} — dates on {settings.data_clock().label}")
    print(f"  {'table':<14} {'partitions':>10} {'rows':>10}  range")
    for name, parts, rows, lo, hi in warehouse_summary(db):
        rng = f"{lo} .. {hi}" if lo else ("snapshot" if parts else "-")
        print(f"  {name:<14} {parts:>10} {rows:>10,}  {rng}")


def cmd_ingest(args: argparse.Namespace) -> int:
    import dagster as dg

    from batch_platform.pipeline import ensure_dagster_home, ingest_range, load_definitions

    clock = _resolve_clock(args)
    home = ensure_dagster_home()
    defs = load_definitions()
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        outcomes = ingest_range(defs, instance, args.start, args.end, force=args.force,
                                schedule_through=args.schedule_through)
    ran = [o for o in outcomes if o.skipped_reason is None]
    failed = [o for o in outcomes if not o.success]
    skipped = len(outcomes) - len(ran)
    print(
        f"Ingest {clock.describe(args.start)} .. {clock.describe(args.end)}: {len(ran)} run(s), {skipped} "
        f"unchanged and skipped, {len(failed)} failed ({time.perf_counter() - t0:.1f}s); runs recorded in {home}"
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

    from batch_platform.pipeline import build_features, ensure_dagster_home, load_definitions, step_log

    ensure_dagster_home()
    defs = load_definitions()
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        outcome = build_features(defs, instance, full_refresh=getattr(args, "full_refresh", False))
        print(f"Features (dbt build, feast apply, online store): {'ok' if outcome.success else 'FAILED'} "
              f"(run {outcome.run_id}, {time.perf_counter() - t0:.1f}s); dbt's console output: "
              f"{step_log('build_features')}")
        for err in outcome.errors:
            print(f"  {err}")
        _print_feature_summary(instance)
    return 0 if outcome.success else 1


def _print_feature_summary(instance) -> None:
    import dagster as dg

    from batch_platform.pipeline import latest_metadata

    online = latest_metadata(instance, dg.AssetKey(["feast", "online_store"]))
    feast = latest_metadata(instance, dg.AssetKey(["feast", "feature_definitions"]))
    if feast:
        print(f"  Feast registry {feast.get('registry')} (definitions {str(feast.get('feature_definitions_fingerprint'))[:12]})")
    if online:
        print(f"  Online store {online.get('online_store')} materialized until {online.get('materialized_until')}")


def cmd_train(args: argparse.Namespace) -> int:
    import dagster as dg

    from batch_platform.pipeline import ensure_dagster_home, load_definitions, run_job, step_log

    ensure_dagster_home()
    defs = load_definitions()
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        outcome = run_job(defs, instance, "train_gate_promote", tags={"batch_platform/trigger": "cli"},
                          stdout_log=step_log("train_gate_promote"))
        print(f"Training sets → candidates → gate → champions: {'ok' if outcome.success else 'FAILED'} "
              f"(run {outcome.run_id}, {time.perf_counter() - t0:.1f}s)")
        for err in outcome.errors:
            print(f"  {err}")
        if not outcome.success:
            _print_where_logged(outcome.run_id, step_log("train_gate_promote"))
        _print_training_sets(instance)
        _print_gates(instance)
    _print_registry()
    return 0 if outcome.success else 1


def _print_where_logged(run_id: str | None, step_output: Path | None = None) -> None:
    """Where a failed run's whole story is: its event log (the UI's run page) and what its steps printed."""
    print(f"  Full event log: run {run_id} in the Dagster UI (`make ui-demo`, Runs)"
          + (f"; step output: {step_output}" if step_output else ""))


def _print_registry(spec: str | None = None) -> None:
    from batch_platform.lib.registry import ModelRegistry
    from batch_platform.lib.specs import load_specs

    path = settings.registry_path()
    if not path.exists():
        print(f"No model registry yet at {path}.")
        return
    registry = ModelRegistry(path)
    specs = load_specs()
    print(f"Model registry: {path}")
    print(f"  {'spec':<20} {'ver':>3}  {'created (UTC)':<20} {'sha256':<12} {'test metric':<26} {'gate':<7} aliases")
    for mv in registry.list_versions(spec):
        metric = specs[mv.spec].gate.metric if mv.spec in specs else "roc_auc"
        value = mv.metrics.get("test", {}).get(metric)
        gate = "-" if not mv.gate_report else ("passed" if mv.gate_report.get("passed") else "failed")
        aliases = ",".join(a for a, v in registry.aliases(mv.spec).items() if v == mv.version)
        shown = f"{metric} {value:.4f}" if isinstance(value, float) else "-"
        print(f"  {mv.spec:<20} {mv.version:>3}  {mv.created_at[:19]:<20} {mv.sha256[:12]:<12} {shown:<26} "
              f"{gate:<7} {aliases}")


def cmd_models(args: argparse.Namespace) -> int:
    from batch_platform.lib.registry import ModelRegistry, RegistryError

    if args.action == "list":
        _print_registry(args.spec)
        return 0
    registry = ModelRegistry(settings.registry_path())
    if args.action == "show":
        if not args.spec:
            print("models show needs a spec")
            return 2
        versions = registry.list_versions(args.spec)
        if not versions:
            print(f"no versions of {args.spec!r}")
            return 1
        mv = registry.get_version(args.spec, args.version) if args.version else versions[-1]
        import json

        print(json.dumps({"spec": mv.spec, "version": mv.version, "sha256": mv.sha256,
                          "artifact": str(mv.artifact_path), "created_at": mv.created_at, "run_id": mv.run_id,
                          "aliases": registry.aliases(mv.spec), "metrics": mv.metrics.get("test"),
                          "fingerprint": mv.fingerprint, "gate_report": mv.gate_report}, indent=2, default=str))
        print("alias history:")
        for e in registry.alias_history(mv.spec):
            print(f"  {e.at}  {e.alias:<10} {e.from_version or '-'} -> {e.to_version or '-'}  {e.action:<8} "
                  f"{e.reason} (run {(e.run_id or '')[:8]})")
        return 0
    # promote / rollback: the same Dagster jobs the UI offers, recorded in the instance, run as every CLI job is
    # (pipeline.run_job: the process recorded on the run, runs killed earlier marked failed first)
    import dagster as dg

    from batch_platform.pipeline import ensure_dagster_home, load_definitions, run_job

    if not (args.spec and args.version):
        print(f"models {args.action} needs a spec and a version")
        return 2
    ensure_dagster_home()
    job_name, op_name = {"promote": ("models_promote", "promote_model"),
                         "rollback": ("models_rollback", "rollback_model")}[args.action]
    with dg.DagsterInstance.get() as instance:
        outcome = run_job(load_definitions(), instance, job_name, tags={"batch_platform/trigger": "cli"},
                          ops_config={op_name: {"config": {"spec": args.spec, "version": args.version,
                                                           "reason": args.reason}}})
    if not outcome.success:
        print(f"{args.action} refused: " + "; ".join(outcome.errors))
        return 1
    try:
        champion = registry.get_alias(args.spec, "champion")
    except RegistryError:
        champion = None
    print(f"{args.spec}: champion is now v{champion.version if champion else '-'} (run {outcome.run_id})")
    return 0


def _print_gates(instance) -> None:
    import dagster as dg

    from batch_platform.defs.training.models import GATE_CHECK
    from batch_platform.lib.specs import load_specs
    from batch_platform.pipeline import latest_check

    for name in load_specs():
        check = latest_check(instance, dg.AssetKey([f"{name}_candidate_model"]), GATE_CHECK)
        if check is not None:
            print(f"  gate {name}: {'PASSED' if check[0] else 'FAILED'} — {check[1]}")


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
        label = md.get("positive_rate", md.get("label_mean"))  # (the label mean of a regression spec)
        print(f"  {key.to_user_string():<34} {md['dagster/row_count']:>7,} {label:>8.3f}  "
              f"{md['first_day'] + ' .. ' + md['last_day']:<24} {verdict:<14} {md['data_fingerprint'][:12]}")
        print(f"  {'':<34} splits {md['rows_per_split']}; snapshot {md['snapshot']}")


def _next_day() -> dt.date:
    """The day after the last one every declared daily table (published after its day) has loaded."""
    from batch_platform.lib import warehouse
    from batch_platform.lib.contracts import DAILY_CONTRACTS
    from batch_platform.lib.ingest import lead_days

    tables = [c for c in DAILY_CONTRACTS if not lead_days(c)]
    with warehouse.connect(settings.warehouse_path(), read_only=True) as con:
        lasts = [con.execute(f"SELECT max({warehouse.PARTITION_COLUMN}) FROM {c.qualified_name}").fetchall()[0][0]
                 if warehouse.table_exists(con, c.source, c.table) else None for c in tables]
    if not lasts or None in lasts:
        raise SystemExit(f"nothing loaded yet of {', '.join(c.qualified_name for c in tables)}: ingest some days first")
    return min(lasts) + dt.timedelta(days=1)


def cmd_score(args: argparse.Namespace) -> int:
    import dagster as dg

    from batch_platform.defs.scoring.assets import DRIFT_CHECK, FALLBACK_CHECK, SCORING_JOB
    from batch_platform.lib import drift_report
    from batch_platform.lib.specs import load_specs
    from batch_platform.defs.monitoring.history import check_evaluations
    from batch_platform.pipeline import ensure_dagster_home, latest_check, latest_metadata, load_definitions, run_job

    ensure_dagster_home()
    day = args.day or _next_day()
    defs = load_definitions()
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        outcome = run_job(defs, instance, SCORING_JOB, day.isoformat(), tags={"batch_platform/trigger": "cli"})
        print(f"Score day {settings.data_clock().describe(day)} (every spec, champion pinned at run start): "
              f"{'ok' if outcome.success else 'FAILED'} (run {outcome.run_id}, {time.perf_counter() - t0:.1f}s)")
        for err in outcome.errors:
            print(f"  {err}")
        if not outcome.success:
            _print_where_logged(outcome.run_id)
        for name in load_specs():
            key = dg.AssetKey([f"{name}_predictions"])
            md = latest_metadata(instance, key)
            if not md:
                continue
            check = latest_check(instance, key, FALLBACK_CHECK)
            verdict = "n/a" if check is None else ("ok" if check[0] else "FAILED")
            print(f"  {md['table']:<34} {md['dagster/row_count']:>6,} rows  v{md['model_version']}  "
                  f"mean score {md['score_mean']:.3f}  fallback {md['fallback_share']:.1%} ({verdict})"
                  + (f"  shadow v{md['shadow_version']}" if md.get("shadow_version") else ""))
            drift_evals = check_evaluations(instance, key, DRIFT_CHECK, limit=5)
            if drift_evals:
                ev = drift_evals[0]
                meta = {k: v.value for k, v in ev.metadata.items()}
                print(f"  {'':<34} drift vs v{meta.get('model_version')}'s training sample: "
                      f"{meta.get('drift_severity', 'n/a')} — {ev.description}")
                if meta.get("html_report"):  # the check saves its inputs; the report is rendered when asked
                    html = meta["html_report"]
                    where = f"{settings.report_url(html)} (rendered when opened, with make ui / ui-demo)"
                    print(f"  {'':<34} Evidently report: {html if Path(html).exists() else where}")
                    if not Path(html).exists():
                        print(f"  {'':<34}   or now: batch-platform report {html}")
    return 0 if outcome.success else 1


def _print_prediction(answer) -> None:
    if not answer.found:
        print(f"  {answer.spec:<20} no prediction: {answer.reason}")
        return
    decision = "" if answer.decision is None else f"  decision {'YES' if answer.decision else 'no'}"
    fallback = f"  fallback ({answer.fallback_reason})" if answer.fallback_reason else ""
    print(f"  {answer.spec:<20} score {answer.score:.3f}{decision}  model v{answer.model_version} "
          f"({answer.model_sha256[:12]})  "
          f"day {settings.data_clock().describe(dt.date.fromisoformat(str(answer.partition_date)))}  "
          f"scored {answer.age.total_seconds():.0f}s ago{fallback}")


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from batch_platform.lib import serving

    specs = serving.served_specs()
    if args.model and args.model not in specs:
        print(f"unknown model spec {args.model!r}; specs: {sorted(specs)}")
        return 2
    reader = serving.PredictionReader(specs)
    answers = [reader.lookup(name, args.key) for name in specs if args.model in (None, name)]
    if args.json:
        print(json.dumps([a.to_dict() for a in answers], indent=2, default=str))
    else:
        print(f"{args.key}:")
        for a in answers:
            _print_prediction(a)
    return 0 if any(a.found for a in answers) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from batch_platform.lib import prediction_api

    print(f"serving predictions on http://{args.host}:{args.port}/predictions/<spec>/<key> (Ctrl-C stops)")
    prediction_api.run(args.host, args.port)
    return 0


def _print_lookups(day: dt.date, n: int = 3) -> None:
    """Look a few of the day's flights up in the online store, as a caller would."""
    from batch_platform.lib import scoring, serving, warehouse
    from batch_platform.lib.specs import load_specs

    specs = load_specs()
    first = next(iter(specs.values()))
    with warehouse.connect(settings.warehouse_path(), read_only=True) as con:
        rows = scoring.read_partition(con, first, day).sort_values("score", ascending=False)
    if rows.empty:
        return
    picks = list(dict.fromkeys([rows[first.entity.key].iloc[0], rows[first.entity.key].iloc[len(rows) // 2],
                                *rows.loc[rows["fallback_reason"].notna(), first.entity.key].head(1)]))[:n]
    reader = serving.PredictionReader(specs)
    for key in picks + [f"{day.isoformat()}_XX_0000_JFK"]:
        print(f"$ batch-platform predict {key}")
        for name in specs:
            _print_prediction(reader.lookup(name, key))


CYCLE_STAGES = (
    ("ingest", "ingest into the warehouse (validated; one Dagster run over the range of days, each day its partition)"),
    ("features", "features: dbt models and tests, Feast registry and online store"),
    ("train", "point-in-time training sets, LightGBM candidates, gate against the champion, promote"),
    ("score", "score the next flight day ({day}, schedule published the day before) and serve it by key"),
)
"""The stages of the daily cycle in the order one run of each performs it (the commands of the same names)."""


def _cycle(args: argparse.Namespace, announce, stop_on_failure: bool) -> int:
    """Ingest ``args.start .. args.end``, build the features, train and score ``args.day`` (default: the day after
    the range, or on a live clock the last day whose schedule is published) in this process: the definitions load
    once. Each stage is the Dagster job its own command runs, recorded in the instance. ``announce(i, text)`` comes
    before each stage, its wall time after it. ``stop_on_failure``: a failed stage ends the cycle (the later stages
    would work on what it did not deliver). Returns 1 when a stage failed."""
    t_start = time.perf_counter()
    clock = _resolve_clock(args)  # the range and, live, the schedule's reach (the scored day)
    args.force = getattr(args, "force", False)
    args.day = getattr(args, "day", None) or args.schedule_through or args.end + dt.timedelta(days=1)
    commands = {"ingest": cmd_ingest, "features": cmd_features, "train": cmd_train, "score": cmd_score}
    rc = 0
    for i, (stage, text) in enumerate(CYCLE_STAGES):
        announce(i, text.format(day=clock.describe(args.day)))
        t0 = time.perf_counter()
        failed = commands[stage](args)
        print(f"-- stage {stage}: {'FAILED' if failed else 'ok'} in {time.perf_counter() - t0:.2f}s")
        if stage == "ingest":
            _print_status()
        rc = rc or failed
        if failed and stop_on_failure:
            print(f"-- the cycle stopped at {stage}: the later stages did not run")
            break
    print(f"-- cycle {'FAILED' if rc else 'ok'} in {time.perf_counter() - t_start:.2f}s")
    return 1 if rc else 0


def cmd_cycle(args: argparse.Namespace) -> int:
    return _cycle(args, announce=lambda n, text: print(f"-- {n + 1}/{len(CYCLE_STAGES)} {text}"),
                  stop_on_failure=True)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.example:
        return _demo_example(args)
    t0 = time.perf_counter()
    paths = settings.export_defaults()
    clock = _resolve_clock(args)
    print(f"== batch_platform demo: flight days {clock.describe(args.start)} .. {clock.describe(args.end)} "
          f"(data in {paths[settings.DATA_DIR_VAR]})")
    print("-- 1/5 land the upstream batches")
    args.seed, args.landing_dir = 13, None
    rc = cmd_land(args)
    if rc:
        return rc
    # (the demo goes on past a failed stage: its summary shows what did run)
    rc = _cycle(args, announce=lambda n, text: print(f"-- {n + 2}/5 {text}"), stop_on_failure=False) or rc
    _print_lookups(args.day)
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f}s.")
    print("Browse these runs:  make ui-demo   (http://127.0.0.1:3000); the daily cycle running by itself:  make ui")
    return rc


def _demo_example(args: argparse.Namespace) -> int:
    """An example project, in a process of its own: the definitions and partitions follow the project and the data
    dir when they load."""
    import os
    import subprocess

    from batch_platform import example_demo
    from batch_platform.lib.project import PROJECT_VAR

    env = example_demo.environment(args.example, os.environ.get(settings.DATA_DIR_VAR) or None)
    if os.environ.get(PROJECT_VAR) == env[PROJECT_VAR]:
        settings.export_defaults()
        return example_demo.run(args.example, args.days)
    return subprocess.call([sys.executable, "-m", "batch_platform.cli", "demo", "--example", args.example,
                            "--days", str(args.days)], env={**os.environ, **env})


def cmd_report(args: argparse.Namespace) -> int:
    """Render drift reports from the inputs their checks saved (the report server does it when one is opened)."""
    from batch_platform.lib import drift_report

    rc = 0
    for path in args.paths:
        try:
            print(drift_report.render(path))
        except drift_report.DriftReportError as e:
            print(f"{path}: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_doctor(args: argparse.Namespace) -> int:
    """What could wedge the platform, and its repair: runs whose process is gone (still STARTED, holding the
    warehouse pool), pool slots of ended runs, an interrupted feature build. ``--dry-run`` only reports."""
    import os

    import dagster as dg

    from batch_platform import run_health
    from batch_platform.pipeline import ensure_dagster_home

    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    health = run_health.examine(instance)
    print(f"instance: {os.environ['DAGSTER_HOME']}")
    for line in health.lines():
        print(f"  {'found' if args.dry_run else 'repaired'}: {line}")
    if health.wedged and not args.dry_run:
        run_health.repair(instance, health)
    for run_id in health.unknown:
        run = instance.get_run_by_id(run_id)
        proc = run_health.run_process(run) if run else None
        print(f"  in progress, cannot be judged from here: run {run_id[:8]} ({run.job_name if run else '?'}"
              f"{', ' + str(proc) if proc else ', no process recorded'})")
    for entry in run_health.pool_entries(instance):
        if not any(d.run_id == entry.run_id for d in health.dead_runs) and entry not in health.orphaned:
            print(f"  pool {entry.pool}: {'held' if entry.claimed else 'queued'} by live run {entry.run_id[:8]} "
                  f"({entry.step_key})")
    if not health.wedged:
        print("  no dead run, no stale pool slot")
    stale_link = _doctor_features(args.dry_run)
    return 1 if (health.wedged or stale_link) and args.dry_run else 0


def _doctor_features(dry_run: bool) -> bool:
    """Report the published feature generation; complete a publication interrupted between the warehouse and the
    files. Returns True when the features link was (or, dry, would be) repaired."""
    from batch_platform.lib import feature_generations as generations
    from batch_platform.lib import warehouse

    db = settings.warehouse_path()
    if not db.exists():
        print("features: no warehouse yet")
        return False
    features, root = settings.features_dir(), settings.feature_generations_dir()
    with warehouse.connect(db, read_only=True) as con:
        current = generations.published(con)
        if current is None:
            print("features: no feature generation published yet")
            return False
        stale = generations.linked(features) != current.generation and features.is_symlink()
        print(f"features: generation {current.generation} published by run {(current.run_id or '?')[:8]} at "
              f"{current.published_at:%Y-%m-%d %H:%M:%S %Z}; files {features} -> "
              f"{generations.linked(features) or '(a plain folder)'}")
        if stale:
            if dry_run:
                print(f"  found: the features link names another generation than the warehouse ({current.generation})")
            else:
                print(f"  repaired: {generations.reconcile(con, features, root)}")
    return stale


LIVE_DATA_DIR = settings.REPO_ROOT / ".data" / "live"


def cmd_ui(args: argparse.Namespace) -> int:
    """The Dagster UI and daemon (`dagster dev`) with the report server beside it. Live (default): its own data dir
    and instance, on the live clock, with the upstream feed and every sensor of the daily cycle running."""
    import os
    import shutil
    import subprocess

    from batch_platform.lib import clock as clocks
    from batch_platform.lib.time_model import load_time_model

    if not args.replay:
        os.environ.setdefault(settings.DATA_DIR_VAR, str(LIVE_DATA_DIR))
        home = settings.data_dir() / "dagster_home"  # the live cycle's runs, apart from the demo's
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():
            shutil.copy(settings.DEFAULT_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
        now = dt.datetime.now(dt.UTC)
        try:
            clock = clocks.record_clock(settings.clock_path(), clocks.live_clock_for(
                load_time_model().last_published_day("flights", now)))
        except clocks.ClockMismatch as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        from batch_platform.pipeline import ensure_dagster_home

        ensure_dagster_home()
        clock = settings.data_clock()
    paths = settings.export_defaults()
    os.environ[settings.REPORTS_URL_VAR] = f"http://127.0.0.1:{args.reports_port}"
    artifacts = settings.artifacts_dir()
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"Data: {paths[settings.DATA_DIR_VAR]} ({clock.label}); instance: {os.environ['DAGSTER_HOME']}")
    print(f"UI: http://127.0.0.1:{args.port}   reports: {os.environ[settings.REPORTS_URL_VAR]}")
    reports = subprocess.Popen([sys.executable, "-m", "batch_platform.lib.report_server", "--port",
                                str(args.reports_port), "--directory", str(artifacts)])
    dagster = str(Path(sys.executable).parent / "dagster")
    try:
        return subprocess.call([dagster, "dev", "-w", str(settings.REPO_ROOT / "workspace.yaml"),
                                "-h", "127.0.0.1", "-p", str(args.port)])
    except KeyboardInterrupt:
        return 0
    finally:
        reports.terminate()
        reports.wait(timeout=10)


def cmd_new_source(args: argparse.Namespace) -> int:
    """A draft contract inferred from a sample file, written beside the declared ones for review."""
    from batch_platform.lib.contracts import ContractError, sources_dir
    from batch_platform.lib.project import project_dir
    from batch_platform.lib.project_scaffold import ProjectScaffoldError, list_dbt_source
    from batch_platform.lib.scaffold import ScaffoldError, draft_contract, write_draft
    from batch_platform.lib.time_model import load_time_model

    folder = Path(args.sources) if args.sources else sources_dir()
    project = project_dir() if not args.sources else None
    timezone = args.timezone or (load_time_model().spec.timezone if project else "UTC")
    try:
        draft = draft_contract(args.name, Path(args.sample), timezone=timezone)
        if project is not None:  # checked before anything is written
            list_dbt_source(project, args.name, draft.doc["description"], dry_run=True)
        path = write_draft(draft, folder, force=args.force)
        if project is not None and list_dbt_source(project, args.name, draft.doc["description"]):
            print(f"Listed raw.{args.name} in {project}/dbt: source('raw', '{args.name}') reads it.")
    except (ScaffoldError, ContractError, ProjectScaffoldError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    kind = draft.doc["kind"]
    day = draft.doc.get("partitioning", {})
    print(f"Wrote {path}: a {kind} table of {len(draft.doc['columns'])} column(s), key {', '.join(draft.doc['key'])}"
          + (f", a day by {', '.join(day.get('date_columns') or [day.get('instant_column')])}" if day else "") + ".")
    print("Review, then land batches as <landing>/" f"{args.name}/<YYYY-MM-DD>{'.parquet' if draft.doc.get('format') == 'parquet' else '.csv'}"
          " with a manifest (see the README, \"Bring your own data\"):")
    for item in draft.review:
        print(f"  - {item}")
    return 0


def cmd_new_model(args: argparse.Namespace) -> int:
    """A model spec -- drafted from an existing one (``--like``) or from its names alone -- and its feature service
    added to the Feast declaration."""
    import yaml

    from batch_platform.lib.feast_declarations import DECLARATION, declared_objects
    from batch_platform.lib.scaffold import SKELETON_REVIEW, ScaffoldError, add_feature_service, draft_spec, \
        skeleton_spec
    from batch_platform.lib.specs import ModelSpecError, load_spec, specs_dir
    from batch_platform.lib.time_model import load_time_model

    folder = Path(args.specs) if args.specs else specs_dir()
    path = folder / f"{args.name}.yaml"
    repo = Path(args.feature_repo) if args.feature_repo else settings.FEATURE_REPO_DIR
    declaration = repo / DECLARATION
    views = [v for v in (args.views or "").split(",") if v] or None
    try:
        if path.exists():
            raise ScaffoldError(f"{path} exists: review it, or choose another name")
        if args.like:
            template_path = folder / f"{args.like}.yaml"
            if not template_path.exists():
                raise ScaffoldError(f"no spec {args.like!r} in {folder} to start from (--like)")
            template = yaml.safe_load(template_path.read_text())
            spec = draft_spec(args.name, template, label_model=args.label_model, label=args.label,
                              definition=args.definition)
            like, header = template["feature_service"], f"from {args.like}.yaml: REVIEW every field"
        else:
            needed = {"--label-model": args.label_model, "--label": args.label, "--key": args.key,
                      "--join-keys": args.join_keys, "--date-column": args.date_column,
                      "--frame-model": args.frame_model, "--views": views}
            missing = [flag for flag, value in needed.items() if not value]
            if missing:
                raise ScaffoldError(f"without --like, a spec is drafted from its names: give {', '.join(missing)}")
            spec = skeleton_spec(args.name, metric=args.metric, key=args.key, join_keys=args.join_keys.split(","),
                                 label_model=args.label_model, label=args.label, definition=args.definition,
                                 date_column=args.date_column, frame_model=args.frame_model, views=views,
                                 timezone=load_time_model().spec.timezone)
            like, header = None, "from its names: REVIEW " + "; ".join(SKELETON_REVIEW)
        folder.mkdir(parents=True, exist_ok=True)
        before = declaration.read_text()
        add_feature_service(declaration, spec["feature_service"], like, views)
        try:
            declared_objects(repo)
            path.write_text(f"# Drafted by `batch-platform new model` {header}.\n"
                            + yaml.safe_dump(spec, sort_keys=False, width=120))
            load_spec(path)
        except Exception:
            declaration.write_text(before)
            path.unlink(missing_ok=True)
            raise
    except (ScaffoldError, ModelSpecError, ValueError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {path} ({'from ' + args.like if args.like else 'a skeleton'}) and feature service "
          f"{spec['feature_service']} in {declaration}.")
    print(f"Review the spec (label, cutoff, windows, gate, monitoring), then `batch-platform check`: the label model "
          f"{spec['label']['model']!r} must be a dbt model of {settings.DBT_PROJECT_DIR}.")
    return 0


def cmd_new_project(args: argparse.Namespace) -> int:
    """A project folder from the platform's template."""
    from batch_platform.lib.project_scaffold import ProjectScaffoldError, new_project

    folder = Path(args.folder).resolve()
    try:
        new_project(folder, args.name or folder.name, args.timezone)
    except ProjectScaffoldError as e:
        print(f"ProjectScaffoldError: {e}", file=sys.stderr)
        return 1
    print(f"Wrote project {args.name or folder.name} into {folder} (its README lists what to write next). Use it:")
    print(f"  export BATCH_PLATFORM_PROJECT={folder}")
    print("  batch-platform new source TABLE --from SAMPLE.csv")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Sources, time model, specs, dbt models and Feast views checked together; exit 1 on any failure."""
    import json

    from batch_platform.lib import project_check as pc
    from batch_platform.lib.contracts import sources_dir
    from batch_platform.lib.specs import specs_dir

    findings: list[pc.Finding] = []
    contracts = pc.check_sources(findings, sources_dir())
    tm = pc.check_time_model(findings) if contracts is not None else None
    specs = pc.check_specs(findings, specs_dir()) if tm is not None else None

    def manifest():
        from batch_platform.defs.features.project import ensure_manifest

        return json.loads(ensure_manifest().read_text())

    parsed = pc.attempt("dbt", findings, manifest, lambda m: f"{settings.DBT_PROJECT_DIR} parses")
    pc.check_dbt(findings, parsed, contracts, tm, specs)

    def feast_repo():
        from batch_platform.lib.feature_store import load_repo_contents

        return load_repo_contents(settings.FEATURE_REPO_DIR, project=None)

    repo = pc.attempt("feast", findings, feast_repo, lambda r: f"{settings.FEATURE_REPO_DIR} imports")
    if repo is not None:
        from batch_platform.lib.feature_store import is_prediction_view

        tables = {v.name: v.batch_source.name for v in repo.feature_views if not is_prediction_view(v)}
        pc.check_feast(findings, [s.name for s in repo.feature_services], tables, parsed, specs)
    for f in findings:
        print(f.line())
    failed = sum(not f.ok for f in findings)
    print(f"{failed} problem(s)" if failed else "everything agrees")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batch-platform", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = _range(sub.add_parser("land", help="replay the source into daily landing batches"),
               settings.DEMO_START, settings.DEMO_END)
    p.add_argument("--scale", type=int, default=1, help="land N copies of every flight (benchmarks)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--landing-dir", default=None, help="default: $BATCH_PLATFORM_LANDING_DIR")
    p.add_argument("--live", action="store_true",
                   help="re-date the 2013 data by whole weeks onto live dates, yesterday half a year before its end (recorded in "
                   "the data dir: later commands stay on that clock)")
    p.set_defaults(func=cmd_land)

    p = sub.add_parser("land-file", help="land an export of a declared table (CSV or Parquet, any number of days) as "
                       "its daily batches, and the derived tables cut from it")
    p.add_argument("table", help="the declared table (raw.<table>)")
    p.add_argument("file", type=Path, help="the export file (.csv or .parquet)")
    p.set_defaults(func=cmd_land_file)
    p = _range(sub.add_parser("ingest", help="load landed days into the warehouse (Dagster runs)"),
               settings.DEMO_START, settings.DEMO_END)
    p.add_argument("--force", action="store_true", help="reload days whose landed files are unchanged")
    p.set_defaults(func=cmd_ingest)

    p = _range(sub.add_parser("cycle", help="the daily cycle over a range in one process: ingest the landed days, "
                              "build the features, train, score the next day (the commands of the same names)"),
               settings.DEMO_START, settings.DEMO_END)
    p.add_argument("--day", type=_date, default=None, help="the day to score (default: the day after --end; live: the "
                   "last day whose schedule is published)")
    p.add_argument("--force", action="store_true", help="reload days whose landed files are unchanged")
    p.set_defaults(func=cmd_cycle)

    p = _range(sub.add_parser("demo", help="land and run the platform end to end, then print a summary"),
               settings.DEMO_START, settings.DEMO_END)
    p.add_argument("--live", action="store_true", help="on live dates (see land --live)")
    p.add_argument("--example", default=None, metavar="NAME",
                   help="run a shipped example project instead of flights (batch_platform/examples/NAME: "
                   "chicago_ridership), in a data dir of its own (.data/examples/NAME unless BATCH_PLATFORM_DATA_DIR)")
    p.add_argument("--days", type=int, default=120, help="--example: days of history to land before the scored day")
    p.add_argument("--scale", type=int, default=1, help="land N copies of every flight (benchmarks: python -m bench)")
    p.set_defaults(func=cmd_demo)

    sub.add_parser("status", help="what the warehouse holds").set_defaults(func=cmd_status)
    sub.add_parser("train", help="training sets → candidates → gate → champions for every spec (one run)").set_defaults(
        func=cmd_train)
    p = sub.add_parser("models", help="the model registry: list | show | promote | rollback")
    p.add_argument("action", choices=["list", "show", "promote", "rollback"])
    p.add_argument("spec", nargs="?")
    p.add_argument("version", nargs="?", type=int)
    p.add_argument("--reason", default="manual (cli)")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("features", help="dbt build, feast apply + online store (one Dagster run); the daily "
                       "feature tables rebuild only the days whose raw batches changed")
    p.add_argument("--full-refresh", action="store_true",
                   help="rewrite every day of the daily feature tables (an incremental build writes the same bytes)")
    p.set_defaults(func=cmd_features)
    p = sub.add_parser("score", help="score one day with every spec's champion; push it online")
    p.add_argument("--day", type=_date, default=None, help="the day to score (default: the day after the last one "
                   "loaded)")
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("ui", help="the Dagster UI and daemon with the report server; live by default: the upstream "
                       "feed publishes each morning and the daily cycle runs by itself")
    p.add_argument("--replay", action="store_true",
                   help="browse the default data dir (what `demo` recorded) instead of running the live cycle")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--reports-port", type=int, default=3001)
    p.set_defaults(func=cmd_ui)
    p = sub.add_parser("doctor", help="find and repair what a killed process left: runs still STARTED, pool slots")
    p.add_argument("--dry-run", action="store_true", help="only report (exit 1 when something needs repair)")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("predict", help="the served prediction of one flight, by key (e.g. 2013-03-01_UA_1545_EWR)")
    p.add_argument("key", help="the prediction key (flight_id: YYYY-MM-DD_CARRIER_FLIGHT_ORIGIN)")
    p.add_argument("--model", default=None, help="one spec (default: every spec)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("report", help="render drift reports (Evidently HTML) now, from the inputs their checks saved "
                       "(the report server renders one when it is first opened)")
    p.add_argument("paths", nargs="+", help="the reports' .html paths, as score prints them")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("serve", help="the serving endpoint: GET /predictions/<spec>/<key>, POST /predictions/<spec> "
                       "{\"keys\": [...]}, /healthz, /readyz (loopback by default)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("new", help="scaffold: a project folder, a draft source contract from a sample file, a model "
                       "spec")
    kinds = p.add_subparsers(dest="what", required=True)
    p = kinds.add_parser("source", help="infer a draft contract (types, nullability, key, the day) from a sample "
                         "CSV or Parquet file, for review")
    p.add_argument("name", help="the table's name (raw.<name>)")
    p.add_argument("--from", dest="sample", required=True, help="a sample file (.csv or .parquet)")
    p.add_argument("--timezone", default=None, help="the zone of a day's local date (default: the project's time "
                   "model's, else UTC)")
    p.add_argument("--sources", default=None, help="the contracts folder (default: $BATCH_PLATFORM_SOURCES or the "
                   "shipped one)")
    p.add_argument("--force", action="store_true", help="replace an existing contract file")
    p.set_defaults(func=cmd_new_source)
    p = kinds.add_parser("model", help="draft a model spec (from an existing one, or from its names) and add its "
                         "feature service")
    p.add_argument("name", help="the spec's name")
    p.add_argument("--like", default=None, help="a spec to start from (default: none, a skeleton from the names "
                   "below)")
    p.add_argument("--metric", default="roc_auc", help="without --like: the gate metric (roc_auc, average_precision, "
                   "log_loss for a binary label; rmse, mae for regression)")
    p.add_argument("--key", default=None, help="without --like: the column naming one prediction")
    p.add_argument("--join-keys", default=None, help="without --like: comma-separated Feast entity keys (columns "
                   "of the label model and the frame)")
    p.add_argument("--date-column", default=None, help="without --like: the entity's day")
    p.add_argument("--frame-model", default=None, help="without --like: the dbt model scored each evening")
    p.add_argument("--label-model", default=None, help="the dbt model holding the label (default: the template's)")
    p.add_argument("--label", default=None, help="the label: a SQL expression over that model")
    p.add_argument("--definition", default=None, help="what the label means, in words")
    p.add_argument("--views", default=None, help="comma-separated feature views of its service (default: the "
                   "template's service's)")
    p.add_argument("--specs", default=None, help="the specs folder (default: $BATCH_PLATFORM_MODEL_SPECS or the "
                   "shipped one)")
    p.add_argument("--feature-repo", default=None, help="the Feast repository whose features.yaml gets the service "
                   "(default: feature_repo/)")
    p.set_defaults(func=cmd_new_model)
    p = kinds.add_parser("project", help="a project folder for your own data (sources, models, time model, dbt "
                         "project, Feast repository), from the platform's template")
    p.add_argument("folder", help="a new or empty folder")
    p.add_argument("--name", default=None, help="the project's name (default: the folder's)")
    p.add_argument("--timezone", default="UTC", help="the zone whose local dates are the project's days")
    p.set_defaults(func=cmd_new_project)
    sub.add_parser("check", help="source contracts, time model, model specs, dbt models and Feast views checked "
                   "together: what is missing, in one run").set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # third-party noise (ibis, dbt) on the console
    warnings.filterwarnings("ignore", message=".*is currently in preview.*")  # dagster: map_asset_specs
    warnings.filterwarnings("ignore", message=".*[Dd]eprecated.*")  # litestar (dagster-webserver), evidently
    args = build_parser().parse_args(argv)
    if args.func is not cmd_ui and not getattr(args, "example", None):  # the UI, an example: their own data dir
        settings.export_defaults()
    import signal

    # SIGTERM stops a command like Ctrl-C does (a wait ends; a run in progress is interrupted, not left STARTED)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
