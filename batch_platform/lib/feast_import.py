"""Import Feast once per process, without typeguard's instrumentation: every entry point that imports from
``feast`` calls :func:`import_feast` first (``tests/test_feature_store.py`` checks that they do)."""

from __future__ import annotations

import sys
import threading

_FEAST_IMPORT_LOCK = threading.Lock()


def import_feast() -> None:
    """Import Feast (once per process) with typeguard's ``@typechecked`` as the identity.

    Feast decorates its classes with typeguard's ``@typechecked``, which recompiles each decorated function's
    source with argument and return checks when the module is imported: 4 of the 5.5 s ``import feast`` takes
    here, paid by every process that opens the feature store (a run worker's feature build, training set or
    scoring step). typeguard is a development aid that does nothing under ``python -O``; Feast is the only
    installed package that uses it (``tests/test_feature_store.py`` checks both), and a well-typed call behaves the
    same either way. Called before the first ``from feast ...`` of this module's entry points."""
    with _FEAST_IMPORT_LOCK:
        if "feast" in sys.modules:
            return
        import typeguard

        def typechecked(target=None, **_options):
            return target if target is not None else (lambda target: target)

        typeguard.typechecked = typechecked
        import feast  # noqa: F401
