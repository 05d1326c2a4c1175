"""Entry point of the memory-capped training test: train one spec's model on a training-set snapshot in this
process, in memory (``training.train`` on the whole frame) or out of core (``training.train_snapshot``), then
write the model text and its test-window ROC AUC to OUT (JSON).

    python -m tests.train_capped memory|out_of_core SNAPSHOT SPEC OUT
"""

import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from batch_platform.lib import evaluation, training
from batch_platform.lib.specs import load_specs
from batch_platform.lib.training_set import LABEL, SPLIT

CONFIG = training.TrainConfig(n_trials=1, max_rounds=150)

if __name__ == "__main__":
    mode, snapshot, name, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    spec = load_specs()[name]
    if mode == "memory":
        trained = training.train(pd.read_parquet(snapshot), spec, CONFIG)
    else:
        trained = training.train_snapshot(snapshot, spec, CONFIG)
    test = pq.read_table(snapshot, filters=[(SPLIT, "=", "test")]).to_pandas()  # the test window alone
    booster = training.load_booster(trained.model_text)
    auc = evaluation.metrics(test[LABEL].to_numpy(), training.score(booster, test, trained.categorical))["roc_auc"]
    out.write_text(json.dumps({"model_text": trained.model_text, "test_roc_auc": auc, "test_rows": len(test)}))
