"""The run executor: Dagster's in-process executor, which first records the run's process in the run's tags
(see ``batch_platform.run_health``), so that a run whose worker is killed is recognised as dead and its pool slot
freed instead of blocking the warehouse pool forever."""

import dagster as dg
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG, _core_in_process_executor_creation
from dagster._core.executor.in_process import InProcessExecutor

from batch_platform.run_health import process_tags


class ProcessRecordingExecutor(InProcessExecutor):
    def execute(self, plan_context, execution_plan):
        plan_context.instance.add_run_tags(plan_context.run_id, process_tags())
        yield from super().execute(plan_context, execution_plan)


@dg.executor(name="in_process", config_schema=IN_PROC_CONFIG)
def in_process_recording_executor(init_context) -> ProcessRecordingExecutor:
    """Steps of a run execute one after another in the run's process, which the run's tags name."""
    base = _core_in_process_executor_creation(init_context.executor_config)
    executor = ProcessRecordingExecutor(retries=base.retries, step_dependency_config=base.step_dependency_config)
    return executor
