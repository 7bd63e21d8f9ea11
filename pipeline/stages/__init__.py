"""Stages: one task's work. Its context (``context``), the orchestration (``run``), the data stage (``data``), the
image stage (``images``) and the review (``review``: quality, language, identity).

Imports ``core``, ``providers``, ``storage`` and ``db``; the worker calls ``run.run_task``.
"""
