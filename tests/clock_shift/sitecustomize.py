"""Shifts the clock of every Python process started with this folder on PYTHONPATH (the Dagster daemon, its code
servers, run workers and dbt) by BATCH_PLATFORM_TEST_CLOCK_SHIFT_S seconds: forward, so tests reach the evening
cutoff or the next morning without waiting for them; backward, so the daily cycle's daemon joins its live days in
the past. Inert without that variable.

Most processes travel with time-machine (every clock function of the process). A gRPC *server* cannot: its
completion queue polls with absolute deadlines computed from ``time.time()``, which its C core compares with the real
clock, so a shifted server stalls. Code servers (``dagster api grpc``) therefore shift Dagster's own clock only
(``dagster._time``, which sensors, automation and partitions read); our sensors take "now" from it too. A gRPC
*client* travels forward only (its deadlines would be in the past of the real clock otherwise): a daemon shifted
backward (the daily cycle's live days, in the past of the real clock) shifts Dagster's clock only, like a code
server.
"""

import os

_shift = os.environ.get("BATCH_PLATFORM_TEST_CLOCK_SHIFT_S")
if _shift:
    import datetime as _dt

    try:
        with open("/proc/self/cmdline", "rb") as _f:
            _argv = _f.read().split(b"\0")
    except OSError:
        _argv = []
    _daemon = any(a.endswith(b"dagster-daemon") for a in _argv)
    if (b"api" in _argv and b"grpc" in _argv) or (_daemon and float(_shift) < 0):
        import dagster._time as _dagster_time

        _delta = _dt.timedelta(seconds=float(_shift))
        _now, _ts = _dagster_time._mockable_get_current_datetime, _dagster_time._mockable_get_current_timestamp
        _dagster_time._mockable_get_current_datetime = lambda: _now() + _delta
        _dagster_time._mockable_get_current_timestamp = lambda: _ts() + _delta.total_seconds()
    else:
        import time_machine as _tm

        _tm.travel(_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=float(_shift)), tick=True).start()
