"""Objects in a persona's storage folder that its row does not point to, removed before the persona's images
are made (again).

Image keys are new on every write (``core.keys``), so a late upload of a worker whose lease expired never
replaces a recorded image; what such an upload, or one cut short by a crash between the put and the commit,
leaves behind is unreferenced, and this removes it the next time the persona is worked on.
"""

from __future__ import annotations

import db.queries as q
from pipeline.core.keys import persona_prefix
from pipeline.stages.context import TaskContext


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]  # keys and URIs (s3://bucket/prefix/key) end alike within one folder


def sweep_unreferenced(ctx: TaskContext, result_id: int, batch: int, slot: int) -> int:
    """Remove the objects of the persona's folder that its row does not reference; returns how many. Done while
    this worker holds the task's lease (``ctx.guarded``): no other run may be writing there then."""
    keys = ctx.storage.list_keys(persona_prefix(ctx.task_id, batch, slot) + "/")
    if not keys:
        return 0
    with ctx.guarded() as (session, _task):
        row = q.get_result(session, result_id)
        if row is None:
            return 0
        thumbs = [m.get("thumb_key") for m in (row.image_meta or {}).get("images", []) if isinstance(m, dict)]
        referenced = {_name(str(uri)) for uri in [row.base_image_url, *(row.images or []), *thumbs] if uri}
        doomed = [key for key in keys if _name(key) not in referenced]
        for key in doomed:
            ctx.storage.delete(key)
    if doomed:
        ctx.log.info("removed %d unrecorded object(s) of persona %d (an earlier run's)", len(doomed), result_id)
    return len(doomed)
