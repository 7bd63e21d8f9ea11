"""Every database read and write, split by noun. Pages and the executor never build ``select()`` themselves."""

from db.queries.cleanups import *  # noqa: F403
from db.queries.dataset_map import *  # noqa: F403
from db.queries.gallery import *  # noqa: F403
from db.queries.identity import *  # noqa: F403
from db.queries.limits import *  # noqa: F403
from db.queries.overview import *  # noqa: F403
from db.queries.results import *  # noqa: F403
from db.queries.samples import *  # noqa: F403
from db.queries.settings import *  # noqa: F403
from db.queries.tasks import *  # noqa: F403
from db.queries.usage import *  # noqa: F403
from db.queries.users import *  # noqa: F403
from db.queries.workers import *  # noqa: F403
