"""One writer thread with group commit: the writes queued meanwhile share one transaction and one fsync.

Each write is a job run inside a SAVEPOINT of the batch's transaction, so a job
that fails is rolled back alone and its caller gets its error. Directories a
job renames into place are made durable by one directory fsync before the
single COMMIT (none is needed for a directory reserved and synced ahead,
`reserve.py`); if that COMMIT fails, every job's `undo` takes its directory
away and every caller gets the error. Under load this turns N fsync pairs into one,
which is what keeps concurrent writers close to containerd's own latency.

A job that judges the filesystem by what the store owns (Cleanup's scan) starts a batch
(`submit(..., starts_batch=True)`): a job ahead of it in the same batch may delete a row
whose COMMIT is still to come, and whose directory the store (and the loop's cache, which
learns of it only then) still lists.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from snapmux.adapters.overlay.sqlite_store import SqliteMetadataStore, Transaction

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 64


@dataclass(frozen=True)
class Written(Generic[T]):
    """A job's result, how to take its filesystem change back if the batch does not commit, and
    what to apply on the caller's event loop once it has (before the caller resumes)."""

    value: T
    undo: Callable[[], None] | None = None
    committed: Callable[[], None] | None = None
    synced: bool = False
    """The directory `undo` takes back is durable already (reserved ahead): the batch needs no
    directory fsync for it."""


Job = Callable[[Transaction], Written[Any]]


@dataclass
class _Pending:
    job: Job
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    starts_batch: bool = False
    outcome: Written[Any] | None = None
    error: BaseException | None = None


def _resolve(pending: _Pending) -> None:
    if pending.future.cancelled():
        return
    if pending.error is not None:
        pending.future.set_exception(pending.error)
    else:
        assert pending.outcome is not None
        pending.future.set_result(pending.outcome.value)


def _apply_then_resolve(batch: list[_Pending]) -> None:
    """On the loop: the whole batch's changes become visible, then its callers resume."""
    for pending in batch:
        if pending.error is None and pending.outcome is not None and pending.outcome.committed is not None:
            pending.outcome.committed()
    for pending in batch:
        _resolve(pending)


class BatchingWriter:
    def __init__(self, store: SqliteMetadataStore, before_commit: Callable[[], None]) -> None:
        self._store = store
        self._before_commit = before_commit
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._held: _Pending | None = None
        """A job taken from the queue that starts the next batch (writer thread only)."""
        self._thread = threading.Thread(target=self._serve, name="snapshots-write", daemon=True)
        self._thread.start()

    async def submit(self, job: Job, starts_batch: bool = False) -> Any:
        """`starts_batch`: `job` runs first in its batch, so its transaction holds nothing uncommitted,
        and the cache changes of every batch before it are posted to their loops before it runs."""
        loop = asyncio.get_running_loop()
        pending = _Pending(job, loop, loop.create_future(), starts_batch)
        self._queue.put(pending)
        return await pending.future

    def close(self) -> None:
        """Finishes everything queued, then stops the thread."""
        self._queue.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._apply(batch)
            except Exception:  # noqa: BLE001 - the thread must outlive any one batch, or every later write hangs
                log.exception("write batch of %d could not be completed", len(batch))

    def _next_batch(self) -> list[_Pending] | None:
        """What is queued, up to MAX_BATCH, and up to the next job that starts a batch; None once closed."""
        first = self._held if self._held is not None else self._queue.get()
        self._held = None
        if first is None:
            return None
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            if item.starts_batch:
                self._held = item
                break
            batch.append(item)
        return batch

    def _apply(self, batch: list[_Pending]) -> None:
        try:
            with self._store.transaction(write=True) as tx:
                for pending in batch:
                    self._run_one(tx, pending)
                if any(p.outcome is not None and p.outcome.undo is not None and not p.outcome.synced for p in batch):
                    self._before_commit()  # renamed directories are durable before the rows that own them
        except BaseException as error:  # noqa: BLE001 - the COMMIT (or BEGIN) failed: nothing of the batch stays
            log.warning("write batch of %d failed: %s", len(batch), error)
            for pending in batch:
                if pending.error is None:
                    self._undo(pending)
                    pending.error = error
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for pending in batch:
            by_loop.setdefault(pending.loop, []).append(pending)
        for loop, pendings in by_loop.items():
            try:
                loop.call_soon_threadsafe(_apply_then_resolve, pendings)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                log.debug("dropping results of %d writes for a closed event loop", len(pendings))

    @staticmethod
    def _run_one(tx: Transaction, pending: _Pending) -> None:
        try:
            with tx.savepoint():
                pending.outcome = pending.job(tx)
        except Exception as error:  # noqa: BLE001 - handed to the caller
            pending.error = error

    @staticmethod
    def _undo(pending: _Pending) -> None:
        if pending.outcome is not None and pending.outcome.undo is not None:
            try:
                pending.outcome.undo()
            except OSError as error:
                log.warning("cannot undo a write whose batch failed (Cleanup will reclaim it): %s", error)
