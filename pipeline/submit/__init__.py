"""Submit: what a user asks of the system. Validate and snapshot a task, submit it, estimate and preview it;
its status, cancel, retry, delete and re-run; global settings; accounts; the connectivity check.

Imports ``core``, ``providers`` (preview, checks), ``storage`` (delete, checks) and ``db``.
"""
