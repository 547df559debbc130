"""What a watcher does to tasks besides watching them: create, cancel, retry, balance.

:class:`TaskWatcher` delegates ``submit``, ``cancel``, ``retry`` and ``balance`` here.
These requests are not polls: they go through a synchronous :class:`~mh_notebook.Client`
of their own, outside the poller's rate budget (they are few, started by the user, and
must not queue behind polls), with the client's rule for requests that change things:
a creation or retry is never resent blindly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..client import Client, _Secret
from .waiters import refuse_in_engine_thread

if TYPE_CHECKING:
    from ..models import Task

__all__ = ["Actions"]


class Actions:
    """A watcher's verbs; the HTTP client is made on first use and closed by :meth:`close`."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        timeout: float | None,
        allow_insecure_http: bool,
        watch: Callable[[Task], object],
        check_open: Callable[[], None],
    ) -> None:
        self._watch, self._check_open = watch, check_open
        self._key = _Secret(api_key)
        self._base_url, self._timeout, self._insecure = base_url, timeout, allow_insecure_http
        self._client: Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Actions(base_url={self._base_url!r}, api_key=<redacted>)"

    @property
    def client(self) -> Client:
        """The synchronous client these requests go through (refused in an engine's thread,
        a callback, where its wait would hold up every poll)."""
        refuse_in_engine_thread(None, "submit(), cancel(), retry() and balance()")
        with self._lock:
            if self._client is None:
                self._client = Client(
                    self._key.value,
                    self._base_url,
                    timeout=self._timeout,
                    allow_insecure_http=self._insecure,
                )
            return self._client

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
        :class:`~mh_notebook.CreationUnknownError` saying how to find the task."""
        self._check_open()  # never create a paid task nobody will watch
        task = self.client.create_task(
            endpoint, model=model, input=input, metadata=metadata, webhook_url=webhook_url
        )
        if task.metadata is None and metadata:  # the creation answer need not echo it: we know it
            task = task.model_copy(update={"metadata": dict(metadata)})
        self._watch(task)
        return task.id

    def cancel(self, task_id: str) -> Task:
        """Cancel a task in progress (cannot be undone); an ended task raises
        :class:`~mh_notebook.ConflictError` (``.code`` says why)."""
        return self.client.cancel_task(task_id)

    def retry(self, task_id: str) -> str:
        """Retry a ``failed`` or ``expired`` task and watch the new one; returns its id.
        The retry is a new task and is **charged again**; its ``original_task_id`` is
        ``task_id``. Other states raise :class:`~mh_notebook.ConflictError`."""
        self._check_open()
        task = self.client.retry_task(task_id)
        self._watch(task)
        return task.id

    def balance(self) -> float:
        """The account's balance in USD (``GET /api/v1/balance``)."""
        return self.client.balance().balance

    def close(self) -> None:
        """Close the HTTP client, if one was made."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
