"""What the CLI prints for a failed step: the exception the step raised and its cause, not Dagster's wrapper."""

import dagster as dg

from batch_platform.pipeline import _failure_messages

DAYS = dg.DailyPartitionsDefinition("2024-01-01")


@dg.asset(partitions_def=DAYS)
def fails_with_a_cause():
    try:
        {}["tailnum"]
    except KeyError as e:
        raise ValueError("spec flight_delay names a feature the service lacks") from e


@dg.asset(partitions_def=DAYS)
def fails_named():
    raise dg.Failure(description="NoFallbackRate: no final labels between 2024-01-01 and 2024-01-02")


def test_the_root_cause_with_step_and_partition():
    result = dg.materialize([fails_with_a_cause], partition_key="2024-01-05", raise_on_error=False)
    (message,) = _failure_messages(result)
    assert message == ("fails_with_a_cause [partition 2024-01-05]: ValueError: spec flight_delay names a feature the "
                       "service lacks (caused by KeyError: 'tailnum')")
    assert "Error occurred while executing" not in message


def test_a_named_failure_keeps_its_own_description():
    result = dg.materialize([fails_named], partition_key="2024-01-05", raise_on_error=False)
    assert _failure_messages(result) == [
        "fails_named [partition 2024-01-05]: NoFallbackRate: no final labels between 2024-01-01 and 2024-01-02"]
