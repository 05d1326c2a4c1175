"""Training out of core (``training.train_snapshot``, ``lib/snapshot_matrix.py``): the same model as in memory,
byte for byte, and under a memory cap that the in-memory path does not survive."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from batch_platform.lib import training
from batch_platform.lib.snapshot_matrix import WindowRows, model_matrix, read_layout
from batch_platform.lib.specs import load_specs
from batch_platform.lib.training_set import SPLIT
from tests.memory_cap import run_capped

REPO = Path(__file__).resolve().parent.parent
FAST = training.TrainConfig(n_trials=2, max_rounds=60)
SCALE = 50  # copies of the session platform's training set (~16k rows): ~800k rows
CAP = 1200 * 2**20  # trained out of core: ~0.8 GB at that size; in memory: ~2.2 GB


@pytest.fixture(autouse=True)
def _env(on_platform):
    return on_platform


def _snapshot(platform, name: str) -> Path:
    event = platform["instance"].get_latest_materialization_event(dg.AssetKey([f"{name}_training_set"]))
    return Path(event.asset_materialization.metadata["snapshot"].value)


@pytest.mark.parametrize("name", ["flight_delay", "flight_cancellation"])
def test_the_model_trained_out_of_core_is_the_in_memory_model_byte_for_byte(platform, name, tmp_path):
    """Row groups of 1,000 rows (LightGBM's sampling and batches cross them), and the rows shuffled (sorted into a
    copy first, as ``train`` sorts the frame): the same model text, categories included."""
    spec = load_specs()[name]
    frame = pd.read_parquet(_snapshot(platform, name))
    in_memory = training.train(frame, spec, FAST)
    small_groups = tmp_path / "groups.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), small_groups, row_group_size=1000)
    assert pq.ParquetFile(small_groups).metadata.num_row_groups > 10
    shuffled = tmp_path / "shuffled.parquet"
    pq.write_table(pa.Table.from_pandas(frame.sample(frac=1.0, random_state=3), preserve_index=False), shuffled,
                   row_group_size=4000)
    for path in (small_groups, shuffled):
        out_of_core = training.train_snapshot(path, spec, FAST)
        assert out_of_core.model_text == in_memory.model_text
        assert (out_of_core.features, out_of_core.categorical) == (in_memory.features, in_memory.categorical)
        assert out_of_core.trials == in_memory.trials
    assert in_memory.categorical, "the specs have categorical features: their codes are part of what is compared"


def test_window_rows_are_the_window_of_the_model_matrix(platform, tmp_path):
    """Single rows, slices across row groups and whole batches: the rows of the window's matrix as
    ``prepare_matrix`` makes it from the whole frame."""
    spec = load_specs()["flight_delay"]
    frame = pd.read_parquet(_snapshot(platform, "flight_delay"))
    path = tmp_path / "s.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=777)
    layout = read_layout(path, spec, batch_rows=500)
    for window in ("train", "validation", "test"):
        rows = frame[frame[SPLIT] == window].reset_index(drop=True)
        expected = model_matrix(rows, layout.features, layout.categorical, layout.categories)
        seq = WindowRows(layout, window, batch_size=1000)
        assert len(seq) == len(rows)
        np.testing.assert_array_equal(np.vstack(list(seq.batches())), expected)
        for i in (0, 776, 777, len(seq) - 1):
            np.testing.assert_array_equal(seq[i], expected[i])
        np.testing.assert_array_equal(seq[700:2400], expected[700:2400])
    train = frame[frame[SPLIT] == "train"]
    for c in layout.categorical:
        assert layout.categories[c] == sorted(train[c].dropna().astype(str).unique())


def _scaled(source: Path, out: Path, copies: int, key: str) -> int:
    """``copies`` copies of the training set at ``source``, each under its own keys (``<copy>:<key>``: the file
    stays in key order), written a copy at a time."""
    table = pq.read_table(source)
    i = table.column_names.index(key)
    with pq.ParquetWriter(out, table.schema) as writer:
        for k in range(copies):
            keys = pc.binary_join_element_wise(pa.scalar(f"{k:03d}"), table[key], ":")
            writer.write_table(table.set_column(i, key, keys), row_group_size=65_536)
    return table.num_rows * copies


def test_training_out_of_core_completes_under_a_memory_cap_the_in_memory_path_does_not(platform, tmp_path):
    """~800k rows (the session's training set, copied): capped at 1.2 GB, the in-memory path dies; out of core the
    same training completes, and its model has the test AUC of the in-memory one trained without the cap (the
    same model: the same bytes)."""
    spec = load_specs()["flight_delay"]
    scaled = tmp_path / "scaled.parquet"
    rows = _scaled(_snapshot(platform, spec.name), scaled, SCALE, spec.entity.key)
    assert rows > 600_000

    def train(mode: str, capped: bool):
        out = tmp_path / f"{mode}-{capped}.json"
        cmd = [sys.executable, "-m", "tests.train_capped", mode, str(scaled), spec.name, str(out)]
        kw = {"cwd": REPO, "capture_output": True, "text": True, "timeout": 600}
        result, how = run_capped(cmd, CAP, **kw) if capped else (subprocess.run(cmd, **kw), "none")
        return result, (json.loads(out.read_text()) if result.returncode == 0 else None), how

    uncapped, reference, _ = train("memory", capped=False)
    assert uncapped.returncode == 0, uncapped.stderr[-2000:]
    failed, _, how = train("memory", capped=True)
    assert failed.returncode != 0, f"the in-memory path fit under the cap ({how}): the cap does not test anything"
    streamed, result, how = train("out_of_core", capped=True)
    assert streamed.returncode == 0, f"out of core under the cap ({how}): {streamed.stderr[-2000:]}"
    assert abs(result["test_roc_auc"] - reference["test_roc_auc"]) <= 0.002
    assert result["model_text"] == reference["model_text"]


def test_a_window_or_the_tail_read_alone_is_typed_as_in_the_whole_frame(platform, tmp_path):
    """``read_windows`` and ``read_tail`` (the gate's test window, the smoke test's recent rows): the rows of
    ``pd.read_parquet`` of the whole file, with its types -- an integer column with nulls only in other windows is
    float64 there too (as a category its values read "1.0", not "1")."""
    from batch_platform.lib.snapshot_matrix import column_range, read_tail, read_windows, window_parts

    frame = pd.read_parquet(_snapshot(platform, "flight_delay"))
    frame["ext_int"] = pd.array(np.where(frame[SPLIT] == "train", None, 1), dtype="Int64")  # pandas-typed
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.append_column("late_int", pa.array(np.where(frame[SPLIT] == "train", None, 1), pa.int64()))
    path = tmp_path / "s.parquet"
    pq.write_table(table, path, row_group_size=1500)
    whole = pd.read_parquet(path)
    assert (whole["late_int"].dtype, whole["ext_int"].dtype) == ("float64", "Int64")
    for windows in (("test",), ("validation", "test"), ("train",), ("nowhere",)):
        expected = whole[whole[SPLIT].isin(windows)].reset_index(drop=True)
        pd.testing.assert_frame_equal(read_windows(path, windows), expected)
        # ... and a row group at a time (the drift reference's train window), each part typed as the whole
        total, parts = window_parts(path, windows)
        pieces = list(parts())
        assert total == len(expected) and all(len(p) <= 1500 for p in pieces)
        assert len(pieces) == (1 if expected.empty else len(set(np.arange(len(whole))[whole[SPLIT].isin(windows)]
                                                                // 1500)))
        pd.testing.assert_frame_equal(pd.concat(pieces, ignore_index=True), expected)
        if not expected.empty:
            assert column_range(path, windows, "flight_date") == (expected["flight_date"].min(),
                                                                  expected["flight_date"].max())
    for rows in (1, 1500, 2000, len(whole) + 5):
        pd.testing.assert_frame_equal(read_tail(path, rows), whole.tail(rows).reset_index(drop=True))
