"""Outputs: what a user reads back. The gallery's filters, pages, facets and curation (``browse``), image
sources for pages, and the exports (``exports``). Imports only ``core``, ``storage`` and ``db``.
"""
