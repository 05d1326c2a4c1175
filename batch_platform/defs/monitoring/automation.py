"""The automation sensor that evaluates every asset's automation condition (``policies.py``) each tick.

It runs in the code location (``use_user_code_server``) because the conditions include our own Python operand (the
due partition of a stage, ``conditions.PartitionDue``). On the live clock it runs by default — with the arrival
and retrain sensors, it is what makes the daily cycle run by itself; on the 2013 replay it is off by default
(nothing there is due: the replay's dates are not today's).
"""

import dagster as dg

from batch_platform import settings

AUTOMATION_SENSOR = "daily_cycle_automation"


def default_status() -> dg.DefaultSensorStatus:
    """Sensors of the daily cycle run by default on the live clock only."""
    return dg.DefaultSensorStatus.RUNNING if settings.data_clock().is_live else dg.DefaultSensorStatus.STOPPED


daily_cycle_automation = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=dg.AssetSelection.all(),
    use_user_code_server=True,
    minimum_interval_seconds=30,
    default_status=default_status(),
    description="Evaluates every asset's automation condition (features when raw data lands, the first champion, "
    "predictions of the due flight day after its cutoff, production accuracy of the newest day with final labels) "
    "and requests the runs that are due. Runs by default on the live clock.",
)


@dg.definitions
def automation() -> dg.Definitions:
    return dg.Definitions(sensors=[daily_cycle_automation])
