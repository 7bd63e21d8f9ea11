"""Gallery queries: server-side filter, facet counts, sort and paging of personas, curation, saved views and the
rows an export streams.

One module per job: ``criteria`` (a view in database terms and its WHERE clauses, shared by the others),
``scope`` (the tasks a view spans), ``page`` (count, page, one persona), ``facets`` (facet counts and
distributions), ``curation`` (favourite, tags, rating, bulk), ``saved_views`` and ``export_rows``. Callers import
from ``db.queries``; every statement here runs on SQLite and PostgreSQL.
"""

from db.queries.gallery.criteria import (
    FILTER_EXPRESSIONS,
    GALLERY_PERSONA_FIELDS,
    GALLERY_TEXT_FIELDS,
    Condition,
    Facet,
    PersonaCriteria,
)
from db.queries.gallery.curation import (
    gallery_add_tag,
    gallery_bulk_update,
    gallery_count_full_without_tag,
    gallery_curation_for_update,
    gallery_update_persona,
)
from db.queries.gallery.export_rows import (
    gallery_export_rows,
    gallery_view_version,
)
from db.queries.gallery.facets import (
    gallery_distributions,
    gallery_facets,
)
from db.queries.gallery.page import (
    GALLERY_SORT_COLUMNS,
    gallery_count,
    gallery_page,
    gallery_persona,
)
from db.queries.gallery.saved_views import (
    delete_saved_view,
    list_saved_views,
    save_view,
)
from db.queries.gallery.scope import (
    gallery_task_choices,
    gallery_tasks_info,
    gallery_visible_task_ids,
)

__all__ = [
    "FILTER_EXPRESSIONS",
    "GALLERY_PERSONA_FIELDS",
    "GALLERY_SORT_COLUMNS",
    "GALLERY_TEXT_FIELDS",
    "Condition",
    "Facet",
    "PersonaCriteria",
    "delete_saved_view",
    "gallery_add_tag",
    "gallery_bulk_update",
    "gallery_count",
    "gallery_count_full_without_tag",
    "gallery_curation_for_update",
    "gallery_distributions",
    "gallery_export_rows",
    "gallery_facets",
    "gallery_page",
    "gallery_persona",
    "gallery_task_choices",
    "gallery_tasks_info",
    "gallery_update_persona",
    "gallery_view_version",
    "gallery_visible_task_ids",
    "list_saved_views",
    "save_view",
]
