"""Gallery queries: server-side filter, facet counts, sort and paging of personas, curation, saved views and the
rows an export streams.

One module per job: ``criteria`` (a view in database terms and its WHERE clauses, shared by the others),
``scope`` (the tasks a view spans), ``page`` (count, page, one persona), ``facets`` (facet counts and
distributions), ``curation`` (favourite, tags, rating, bulk), ``saved_views`` and ``export_rows``. Callers import
from ``db.queries``; every statement here runs on SQLite and PostgreSQL.
"""

from db.queries.gallery.criteria import *  # noqa: F403
from db.queries.gallery.curation import *  # noqa: F403
from db.queries.gallery.export_rows import *  # noqa: F403
from db.queries.gallery.facets import *  # noqa: F403
from db.queries.gallery.page import *  # noqa: F403
from db.queries.gallery.saved_views import *  # noqa: F403
from db.queries.gallery.scope import *  # noqa: F403

# Listed here as well as in each module: a type checker follows a star import only through a written list.
__all__ = [
    "FILTER_EXPRESSIONS",
    "GALLERY_PERSONA_FIELDS",
    "GALLERY_SORT_COLUMNS",
    "GALLERY_TEXT_FIELDS",
    "Condition",
    "Facet",
    "PersonaCriteria",
    "delete_saved_view",
    "gallery_bulk_update",
    "gallery_count",
    "gallery_distributions",
    "gallery_export_rows",
    "gallery_facets",
    "gallery_ids_and_tags",
    "gallery_page",
    "gallery_persona",
    "gallery_task_choices",
    "gallery_tasks_info",
    "gallery_update_persona",
    "gallery_view_version",
    "gallery_visible_task_ids",
    "list_saved_views",
    "save_view",
    "set_persona_tags",
]
