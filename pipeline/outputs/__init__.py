"""Outputs: what a user reads back. The gallery's filters, pages, facets and curation (``browse``), image
sources for pages, the exports (``exports``), the overview and the dataset map, and the notebook entry point
``from pipeline.outputs import open_dataset`` (``dataset``). Imports only ``core``, ``storage`` and ``db``.

``open_dataset`` is re-exported here rather than from ``pipeline`` itself: the package root stays light, so a
process that needs only a few modules (the identity check's analysis process) does not load the database layer.
"""

from pipeline.outputs.dataset import open_dataset

__all__ = ["open_dataset"]
