"""Gallery queries: server-side filter, facet counts, sort and paging of personas, curation, saved views and the
rows an export streams.

One module per job: ``criteria`` (a view in database terms and its WHERE clauses, shared by the others),
``scope`` (the tasks a view spans), ``page`` (count, page, one persona), ``facets`` (facet counts and
distributions), ``curation`` (favourite, tags, rating, bulk), ``saved_views`` and ``export_rows``. Callers import
from ``db.queries``; every statement here runs on SQLite and PostgreSQL.
"""

from db.queries.gallery import criteria, curation, export_rows, facets, page, saved_views, scope
from db.queries.gallery.criteria import *  # noqa: F403
from db.queries.gallery.curation import *  # noqa: F403
from db.queries.gallery.export_rows import *  # noqa: F403
from db.queries.gallery.facets import *  # noqa: F403
from db.queries.gallery.page import *  # noqa: F403
from db.queries.gallery.saved_views import *  # noqa: F403
from db.queries.gallery.scope import *  # noqa: F403

__all__ = [
    *criteria.__all__,
    *curation.__all__,
    *export_rows.__all__,
    *facets.__all__,
    *page.__all__,
    *saved_views.__all__,
    *scope.__all__,
]
