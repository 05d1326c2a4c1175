"""batch_platform: training, gating, scoring and monitoring models on daily batches, as one Dagster code location."""

import os

# LightGBM's OpenMP threads busy-wait between its many short parallel regions. When the cores are shared (the
# daemon's run workers, dbt, the webserver, a second training) a spinning thread holds the core the thread it
# waits for needs. Measured here on 2 cores (40k rows x 30 features, 3 x 200 rounds, num_threads=2): with one
# other busy process, 16.5 s by default and 10.6 s with PASSIVE (shorter spins, GOMP_SPINCOUNT 3000-30000: 22-48
# s); alone on the machine PASSIVE costs 4.7 -> 6.4 s. The platform runs beside its daemon, dbt and other steps,
# and the tests run two at a time: PASSIVE, where waiting threads sleep (the same model either way). It must be
# set before LightGBM's OpenMP runtime loads, i.e. before `import lightgbm`; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
