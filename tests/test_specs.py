"""Model specs: validation with named errors, and the time rules (cutoff, embargo, windows)."""

import datetime as dt
import shutil

import pytest
import yaml

from batch_platform.lib.specs import DEFAULT_SPECS_DIR, ModelSpecError, load_spec, load_specs

UTC = dt.UTC


def test_shipped_specs_load():
    specs = load_specs(DEFAULT_SPECS_DIR)
    assert set(specs) == {"flight_delay", "flight_cancellation"}
    assert specs["flight_delay"].label.column == "is_delayed_15"
    assert specs["flight_cancellation"].label.column == "is_cancelled"


def test_prediction_cutoff_is_the_evening_before_in_new_york_time():
    spec = load_specs(DEFAULT_SPECS_DIR)["flight_delay"]
    assert spec.prediction_cutoff(dt.date(2013, 1, 15)) == dt.datetime(2013, 1, 14, 23, 0, tzinfo=UTC)  # EST
    assert spec.prediction_cutoff(dt.date(2013, 7, 15)) == dt.datetime(2013, 7, 14, 22, 0, tzinfo=UTC)  # EDT


def test_windows_end_at_the_last_day_whose_labels_are_final():
    spec = load_specs(DEFAULT_SPECS_DIR)["flight_delay"]  # embargo 2 days, final at 06:00 local
    cutoff = dt.datetime(2013, 3, 1, 11, 0, tzinfo=UTC)  # 2013-03-01 06:00 EST
    assert spec.label_final_at(dt.date(2013, 2, 27)) == cutoff
    assert spec.last_final_day(cutoff) == dt.date(2013, 2, 27)
    assert spec.last_final_day(cutoff - dt.timedelta(microseconds=1)) == dt.date(2013, 2, 26)
    splits = spec.split_days(cutoff)
    assert splits["test"] == (dt.date(2013, 2, 21), dt.date(2013, 2, 27))
    assert splits["validation"] == (dt.date(2013, 2, 14), dt.date(2013, 2, 20))
    assert splits["train"] == (dt.date(2013, 1, 10), dt.date(2013, 2, 13))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label": {"model": "flight_labels", "definition": "x", "date_column": "flight_date", "embargo_days": 1}},
         "exactly one of 'column' or 'expression'"),
        ({"gate": {"metric": "accuracy", "tolerance": 0.0, "floor": 0.5}}, "unknown metric"),
        ({"cutoff": {"days_before": 1, "local_time": "25:00"}}, "cutoff"),
        ({"name": "Flight-Delay"}, "lower_snake_case"),
        ({"windows": {"train_days": 0, "validation_days": 1, "test_days": 1}}, "train_days"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_specs_raise_a_named_error(tmp_path, change, message):
    raw = yaml.safe_load((DEFAULT_SPECS_DIR / "flight_delay.yaml").read_text())
    raw.update(change)
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelSpecError, match=message):
        load_spec(path)


def test_file_name_must_match_spec_name(tmp_path):
    shutil.copy(DEFAULT_SPECS_DIR / "flight_delay.yaml", tmp_path / "other.yaml")
    with pytest.raises(ModelSpecError, match="file name"):
        load_spec(tmp_path / "other.yaml")


def test_empty_spec_folder(tmp_path):
    with pytest.raises(ModelSpecError, match="no model specs"):
        load_specs(tmp_path)


def _regression(**change) -> dict:
    raw = yaml.safe_load((DEFAULT_SPECS_DIR / "flight_delay.yaml").read_text())
    raw["label"] = {**raw["label"], "column": "arr_delay"}
    raw["gate"] = {**raw["gate"], "metric": "rmse", "floor": 0.95, "floor_basis": "baseline"}
    raw["scoring"] = {**raw["scoring"], "decision_threshold": 30.0}  # minutes: flag flights predicted 30+ late
    return raw | change


def test_a_regression_spec_follows_its_metric_objective_and_label_type(tmp_path):
    from batch_platform.lib import gate, specs

    path = tmp_path / "flight_delay.yaml"
    path.write_text(yaml.safe_dump(_regression()))
    spec = load_spec(path)
    assert spec.is_regression and spec.lightgbm_objective == "regression" and spec.label_sql_type == "DOUBLE"
    path.write_text(yaml.safe_dump(_regression(objective="poisson")))
    assert load_spec(path).lightgbm_objective == "poisson"
    binary = load_specs(DEFAULT_SPECS_DIR)["flight_delay"]
    assert not binary.is_regression and binary.lightgbm_objective == "binary" and binary.label_sql_type == "INTEGER"
    assert set(specs.BINARY_METRICS) == set(gate.BINARY_METRICS)  # the spec's lists are the gate's
    assert set(specs.REGRESSION_METRICS) == set(gate.REGRESSION_METRICS)


@pytest.mark.parametrize(("change", "message"), [
    ({"objective": "binary"}, "objective 'binary' does not fit the regression metric rmse"),
    ({"objective": "lambdarank"}, "does not fit the regression metric"),
    ({"gate": {"metric": "mae", "tolerance": 0.1, "floor": 0.5, "floor_basis": "positive_rate"}},
     "positive_rate' has no meaning for mae"),
    ({"gate": {"metric": "roc_auc", "tolerance": 0.1, "floor": 0.5}}, "decision_threshold 30.0 must be a probability"),
])
def test_regression_and_binary_fields_must_agree(tmp_path, change, message):
    path = tmp_path / "flight_delay.yaml"
    path.write_text(yaml.safe_dump(_regression(**change)))
    with pytest.raises(ModelSpecError, match=message):
        load_spec(path)


@pytest.mark.parametrize(("change", "message"), [
    # names go into SQL and Feast: anything but a plain identifier is refused at load, with the field
    ({"label": {"model": "flight_labels; DROP TABLE raw.flights", "column": "is_delayed_15", "definition": "x",
                "date_column": "flight_date", "embargo_days": 2}}, r"label\n.*is not a plain identifier"),
    ({"entity": {"key": 'flight_id" OR 1=1 --', "join_keys": ["tailnum"]}}, r"entity\n.*is not a plain identifier"),
    ({"passthrough_features": ["distance", "distance)) FROM x; --"]}, "is not a plain identifier"),
    # a label expression is one expression over the model's columns, parsed, never pasted as text
    ({"label": {"model": "flight_labels", "expression": "arr_delay > 15) OR (1=1", "definition": "x",
                "date_column": "flight_date", "embargo_days": 2}}, "label.expression .* does not parse"),
    ({"label": {"model": "flight_labels", "expression": "arr_delay > 15; DELETE FROM marts.flight_labels",
                "definition": "x", "date_column": "flight_date", "embargo_days": 2}}, "2 statements"),
    ({"label": {"model": "flight_labels", "expression": "arr_delay > (SELECT max(x) FROM raw.flights)",
                "definition": "x", "date_column": "flight_date", "embargo_days": 2}}, "not only an expression"),
])
def test_injection_attempts_in_spec_names_and_the_label_expression_fail_at_load(tmp_path, change, message):
    raw = yaml.safe_load((DEFAULT_SPECS_DIR / "flight_delay.yaml").read_text()) | change
    path = tmp_path / "flight_delay.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelSpecError, match=message) as e:
        load_spec(path)
    assert str(path) in str(e.value)


def test_a_label_expression_runs_as_parsed_not_as_written(tmp_path):
    raw = yaml.safe_load((DEFAULT_SPECS_DIR / "flight_delay.yaml").read_text())
    raw["label"] = {**raw["label"], "column": None, "expression": "arr_delay > 15 -- minutes\n"}
    del raw["label"]["column"]
    path = tmp_path / "flight_delay.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path).label.sql == "(arr_delay > 15)"  # the comment cannot swallow the SQL around it
