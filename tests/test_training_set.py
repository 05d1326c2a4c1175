"""The training-set fingerprint (pure): content only, streamed slice by slice, stable across releases."""

import numpy as np
import pandas as pd
import pytest

from batch_platform.lib import training_set
from batch_platform.lib.training_set import frame_fingerprint


def frame(n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "flight_id": [f"f{i:03d}" for i in range(n)],
        "event_timestamp": (pd.Timestamp("2013-02-20 23:00", tz="UTC")
                            + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s")).astype("datetime64[us, UTC]"),
        "plane_flights_7d": np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 40, n)).astype("float64"),
        "carrier": rng.choice(["UA", "AA", None], n),
        "label": rng.integers(0, 2, n).astype("int8"),
    })


@pytest.fixture(params=[training_set.FINGERPRINT_ROWS, 7], ids=["one_slice", "many_slices"])
def slice_rows(request, monkeypatch):
    monkeypatch.setattr(training_set, "FINGERPRINT_ROWS", request.param)
    return request.param


def test_same_content_same_fingerprint(slice_rows):
    df = frame()
    fp = frame_fingerprint(df, "flight_id")
    shuffled = df.sample(frac=1.0, random_state=1)[df.columns[::-1]]
    shuffled.index = np.arange(len(df)) * 3 + 11
    assert frame_fingerprint(shuffled, "flight_id") == fp  # row order, column order and index are not content
    pieces = pd.concat([df.iloc[:13], df.iloc[13:31], df.iloc[31:]])  # built from pieces
    assert frame_fingerprint(pieces, "flight_id") == fp


def test_any_change_changes_it(slice_rows):
    df = frame()
    fp = frame_fingerprint(df, "flight_id")
    last = df.copy()
    last.loc[len(df) - 1, "plane_flights_7d"] = 1234.0  # in the last slice
    nulled = df.copy()
    nulled.loc[0, "carrier"] = None if df.loc[0, "carrier"] is not None else "UA"
    renamed = df.rename(columns={"label": "label2"})
    retyped = df.astype({"label": "int64"})
    fewer = df.iloc[:-1]
    others = [frame_fingerprint(x, "flight_id") for x in (last, nulled, renamed, retyped, fewer)]
    assert fp not in others and len(set(others)) == len(others)
    # the content is what the snapshot stores: timestamps in µs, a column without values as strings
    assert frame_fingerprint(df.astype({"event_timestamp": "datetime64[ns, UTC]"}), "flight_id") == fp
    empty = df.assign(carrier=None)
    assert frame_fingerprint(empty, "flight_id") == frame_fingerprint(empty.astype({"carrier": "string"}), "flight_id")


def test_fed_in_parts_it_is_the_whole_frames(slice_rows):
    df = frame().sort_values("flight_id")
    table = training_set.snapshot_table(df)
    for sizes in ([50], [1, 6, 7, 36], [20, 30], [13] * 3 + [11]):
        fingerprint = training_set.Fingerprint(table.schema, table.num_rows)
        start = 0
        for n in sizes:
            fingerprint.update(table.slice(start, n))
            start += n
        assert fingerprint.hexdigest() == frame_fingerprint(df, "flight_id")
    short = training_set.Fingerprint(table.schema, table.num_rows + 1)
    short.update(table)
    with pytest.raises(ValueError, match="50 rows hashed of the 51 announced"):
        short.hexdigest()


def test_definition_is_pinned():
    """Stored fingerprints (snapshot file names, model metadata) stay comparable: changing the encoding must be a
    deliberate, visible change of this value."""
    assert frame_fingerprint(frame(), "flight_id") == PINNED


PINNED = "2f77045a8a60961585a6d422342be4b88d6823827f63c456a9eec0e9c79cfc07"  # definition /3
