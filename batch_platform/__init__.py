"""batch_platform: an asset-oriented platform for batch learning on Dagster (see README.md)."""

import os

# LightGBM's OpenMP threads busy-wait between parallel regions by default (libgomp's active wait). Beside another
# process on the same cores (two runs at once under the daemon, a training beside a dbt build) that spinning takes
# the cores from the work: measured on 2 cores, one training alone 7.5 s; two at once 20.7 s each, and 11-12.6 s
# each with passive waiting (alone 8.0 s). libgomp reads this when it loads (LightGBM's import), so it is set here,
# before anything imports it; a value exported by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
