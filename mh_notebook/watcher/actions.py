"""What a watcher does to tasks besides watching them: create, cancel, retry, balance.

:class:`TaskWatcher` delegates ``submit``, ``cancel``, ``retry`` and ``balance`` here.
These requests are not polls, but they count against the API's limit as polls do: the
engine sends them (:class:`~mh_notebook.polling.turns.UserRequests`), each attempt in its
turn in the shared request budget, ahead of the polls waiting, and paused by a server
limit's 429 like everything else. The client's rule for requests that change things
holds: a creation or retry is never resent blindly.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..client.answers import creation_unknown
from ..client.core import RETRY_PATH
from ..client.settings import API_PREFIX
from .waiters import refuse_in_engine_thread

if TYPE_CHECKING:
    from ..client import AsyncClient
    from ..models import Task
    from .tracked import TrackedSet

__all__ = ["Actions"]

T = TypeVar("T")
_VERBS = "submit(), cancel(), retry() and balance()"


class Actions:
    """A watcher's verbs, sent through its engine (refused once the watcher stopped)."""

    def __init__(self, tracked: TrackedSet, *, watch: Callable[[Task], object]) -> None:
        self._tracked, self._watch = tracked, watch

    def __repr__(self) -> str:
        return f"Actions(base_url={self._tracked.base_url!r})"

    def _send(
        self,
        request: Callable[[AsyncClient], Awaitable[T]],
        creation: tuple[str, str, str | None] | None = None,
    ) -> T:
        """``request(client)`` sent by the engine in its budget; waits for the answer (refused
        in the engine's thread, a callback, where the wait would hold up every poll).
        ``creation`` (what, API path, model) for a request that creates a task: if the watcher
        stops before its answer, :class:`~mh_notebook.CreationUnknownError` says it may exist."""
        engine = self._tracked.engine
        refuse_in_engine_thread(engine, _VERBS)
        self._tracked.check_open()  # a stopped watcher has left its engine
        asked_at = datetime.now(UTC)
        try:
            return engine.requests.send(request).result()
        except concurrent.futures.CancelledError:
            if creation is None:
                raise RuntimeError("the watcher's engine stopped before the request was answered") from None
            what, path, model = creation  # it may have been sent: say where to look, as for a lost answer
            url = f"{self._tracked.base_url}{path}"
            detail = "the watcher stopped while it waited for the answer"
            raise creation_unknown(what, url, model, None, detail, asked_at) from None

    def submit(
        self,
        endpoint: str,
        *,
        model: str,
        input: dict[str, Any],  # noqa: A002 - the API's own name
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
    ) -> str:
        """Start a generation and watch it; returns its id. ``endpoint`` is
        ``provider/capability``: ``w.submit("vidu/text-to-video", model="viduq3-turbo",
        input={"prompt": "..."})``. Never resent blindly: a lost answer raises
        :class:`~mh_notebook.CreationUnknownError` saying how to find the task. Like every
        request of the watcher, it takes its turn in the request budget (before the polls
        waiting) and waits out a server limit's pause."""
        task = self._send(
            lambda c: c.create_task(
                endpoint, model=model, input=input, metadata=metadata, webhook_url=webhook_url
            ),
            (f"creating {endpoint}", f"{API_PREFIX}/{endpoint}", model),
        )
        if task.metadata is None and metadata:  # the creation answer need not echo it: we know it
            task = task.model_copy(update={"metadata": dict(metadata)})
        self._watch(task)
        return task.id

    def cancel(self, task_id: str) -> Task:
        """Cancel a task in progress (cannot be undone); an ended task raises
        :class:`~mh_notebook.ConflictError` (``.code`` says why). Within the request budget."""
        return self._send(lambda c: c.cancel_task(task_id))

    def retry(self, task_id: str) -> str:
        """Retry a ``failed`` or ``expired`` task and watch the new one; returns its id.
        The retry is a new task and is **charged again**; its ``original_task_id`` is
        ``task_id``. Other states raise :class:`~mh_notebook.ConflictError`."""
        creation = (f"retrying task {task_id!r}", RETRY_PATH.format(id=task_id), None)
        task = self._send(lambda c: c.retry_task(task_id), creation)
        self._watch(task)
        return task.id

    def balance(self) -> float:
        """The account's balance in USD (``GET /api/v1/balance``), within the request budget."""
        return self._send(lambda c: c.balance()).balance
