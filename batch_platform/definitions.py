"""The only assembly point: everything under ``batch_platform/defs`` plus cross-cutting settings."""

from pathlib import Path

import dagster as dg

from batch_platform import settings


@dg.definitions
def defs() -> dg.Definitions:
    settings.export_defaults()
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
