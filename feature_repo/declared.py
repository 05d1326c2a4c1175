"""For the `feast` CLI run in this folder (`feast apply`, `feast plan`): the objects `features.yaml` declares and the
served-prediction view of every model spec, built as the platform builds them
(`batch_platform/lib/feast_declarations.py`). The platform reads `features.yaml` itself; this file only lets the
CLI see the same objects."""

from pathlib import Path

from batch_platform.lib.feast_declarations import declared_objects, prediction_objects

globals().update(declared_objects(Path(__file__).resolve().parent))
globals().update(prediction_objects())
