"""Entry point for the concurrency tests: run one partition of ``raw_daily_ingest`` with Dagster's default
multiprocess executor (each step in its own process) against the instance in $DAGSTER_HOME."""

import sys

import dagster as dg


def raw_daily_ingest() -> dg.JobDefinition:
    from batch_platform.definitions import defs

    return defs().resolve_job_def("raw_daily_ingest")


if __name__ == "__main__":
    partition = sys.argv[1]
    with dg.DagsterInstance.get() as instance:
        with dg.execute_job(
            dg.reconstructable(raw_daily_ingest), instance=instance, tags={"dagster/partition": partition}
        ) as result:
            print(f"run {result.run_id} success={result.success}")
            for event in result.all_events:
                if event.is_step_failure:
                    print("STEP FAILURE", event.step_key, event.step_failure_data.error.message)
            sys.exit(0 if result.success else 1)
