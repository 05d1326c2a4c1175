"""batch_platform: training, gating, scoring and monitoring models on daily batches, as one Dagster code location."""

import os

# LightGBM's OpenMP threads busy-wait between its many short parallel regions. When the cores are shared (the
# daemon's run workers, dbt, the webserver, a second training) a spinning thread holds the core the thread it
# waits for needs: on 2 cores with one other busy process, a 40k-row training took 1.3-2.4x the wall time and
# 2-2.6x the CPU time it takes with PASSIVE, where waiting threads sleep (same model). It must be set before
# LightGBM's OpenMP runtime loads, i.e. before `import lightgbm`; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
