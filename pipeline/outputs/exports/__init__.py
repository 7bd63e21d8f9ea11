"""Dataset exports of a gallery view or a whole task (CSV, JSON, JSONL, Parquet, ZIP, Hugging Face), the one
export code the gallery and the CLI both call. Imports ``core``, ``storage``, ``outputs.browse`` and ``db``."""

from __future__ import annotations

from pipeline.outputs.exports.files import export_task, export_view
from pipeline.outputs.exports.records import EXPORT_COLUMNS, FORMATS, IMAGE_FORMATS
from pipeline.outputs.exports.tables import neutralise_cell

__all__ = ["EXPORT_COLUMNS", "FORMATS", "IMAGE_FORMATS", "export_task", "export_view", "neutralise_cell"]
