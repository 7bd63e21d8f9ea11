"""What the data stage tells the image stage while both run: a batch of personas was stored, the data stage has
ended, or one of the two failed and the other must stop.

The image stage never learns *which* personas were stored from here: it reads the stored pending personas from the
database, so what it works on is always what is committed (a resume starts from the same place).
"""

from __future__ import annotations

import threading

from pipeline.stages.context import TaskContext


class StageAborted(Exception):
    """The other stage failed: this one stops at its next checkpoint, and the other's error is the task's.

    Not a ``PipelineError``: it is never a persona's failure."""


class Handoff:
    """The data stage's news for the image stage, and a stop signal for both."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._version = 0  # how many times there was news
        self._data_done = False
        self._aborted = threading.Event()

    def stored(self) -> None:
        """The data stage committed a batch: the image stage looks for new pending personas."""
        self._bump()

    def wake(self) -> None:
        """Something else changed (a persona under way ended): the image stage looks again."""
        self._bump()

    def _bump(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def data_done(self) -> None:
        """The data stage has ended: no persona will be stored after this."""
        with self._changed:
            self._data_done = True
        self._bump()

    def abort(self) -> None:
        """One stage failed: the other stops at its next checkpoint."""
        self._aborted.set()
        self._bump()

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def check(self, ctx: TaskContext) -> None:
        """``ctx.checkpoint()`` (cancel, lease loss, shutdown), and ``StageAborted`` once the other stage failed."""
        ctx.checkpoint()
        if self._aborted.is_set():
            raise StageAborted(f"task {ctx.task_id}: the other stage failed")

    def wait(self, seen: int, timeout: float) -> tuple[int, bool]:
        """Until there is news after ``seen`` (a version this returned before) or ``timeout`` passed; returns the
        current version and whether the data stage has ended. Called before the pending personas are read: when
        it says the data stage has ended, every persona it stored is among them."""
        with self._changed:
            if self._version == seen and not self._aborted.is_set():
                self._changed.wait(timeout)
            return self._version, self._data_done
