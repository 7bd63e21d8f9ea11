"""The review: per-persona quality flags (``quality``, ``language``), the identity check (``identity``, run in
child processes through ``frames``, fed by ``identity_lane``) and the task's review (``task_review``).
Imports ``core``, ``storage``, ``stages.context`` and ``db``.
"""
