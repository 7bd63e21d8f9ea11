"""Worker: the claim loop, leases and heartbeat (``executor``), and the runtime a process needs (``runtime``).

Imports ``core``, ``providers``, ``storage``, ``stages`` and ``db``; knows nothing of pages.
"""
