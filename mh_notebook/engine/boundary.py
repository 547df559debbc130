"""The two sides of the engine/watcher boundary, typed (dask's scheduler/client split).

:class:`Subscriber` is all the engine knows of a watcher: the :class:`SubscriberSpec` it
attaches with (journal, rate limit, burst), which tasks it watches, and two calls in the
poller thread. :class:`WatcherEngine` is all a watcher may ask of the engine: it never
reaches into the poller, the clock or the latency model behind it. The poller's
:class:`Observation` and :class:`TaskState` (what a change and a task's state are) are
re-exported here: they are what crosses the boundary.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..polling.state import Kind, Observation, TaskState

if TYPE_CHECKING:
    from ..errors import AuthenticationError
    from ..journal.protocol import Store, Unwritten, Watched
    from ..models import Task
    from ..polling.clock import ClockOffset
    from ..polling.policy import PollPolicy
    from ..polling.turns import UserRequests
    from ..results import KeepSpec, KeptResult
    from .account import AccountFollower, Follow

__all__ = ["Kind", "Observation", "Subscriber", "SubscriberSpec", "TaskState", "WatcherEngine"]


@dataclass(frozen=True)
class SubscriberSpec:
    """What a subscriber attaches with: its journal and the most it allows against the API."""

    store: Store
    rate_limit: float
    """The most requests per second this subscriber allows against the API."""
    burst: float | None
    """The most requests in one burst (None: the budget's default)."""


class Subscriber(Protocol):
    """What the engine needs of a watcher (a watcher's tracked set is one)."""

    @property
    def spec(self) -> SubscriberSpec:
        """The journal, rate limit and burst it attached with."""
        ...

    def watches(self, task_id: str) -> bool:
        """True if it watches ``task_id``."""
        ...

    def observe(self, observation: Observation) -> None:
        """Called in the poller thread for each change of a watched task, once journalled."""
        ...

    def tick(self) -> None:
        """Called in the poller thread every tick."""
        ...


class WatcherEngine(Protocol):
    """What a watcher may ask of its engine (:class:`~mh_notebook.engine.Engine` is one)."""

    @property
    def clock(self) -> ClockOffset:
        """The server's clock relative to this machine's."""
        ...

    @property
    def paused(self) -> bool:
        """True while polling is paused."""
        ...

    @property
    def auth_error(self) -> AuthenticationError | None:
        """The 401/403 that stopped polling, if the key has not worked since."""
        ...

    @property
    def rate_limit(self) -> float:
        """The shared budget's ceiling (requests/s)."""
        ...

    @property
    def effective_rate(self) -> float:
        """The rate the budget allows now (requests/s)."""
        ...

    @property
    def budget_belief(self) -> str | None:
        """What the budget believes of the server's limit, in words."""
        ...

    @property
    def polling_mode(self) -> str:
        """How the tasks are polled, in words: list pages and GETs, or per-task GETs and why."""
        ...

    @property
    def notice(self) -> str | None:
        """A problem every watcher of this API shows."""
        ...

    @property
    def in_poller_thread(self) -> bool:
        """True in the engine's own thread."""
        ...

    @property
    def requests(self) -> UserRequests:
        """Sends the user's requests (create, cancel, retry, balance) in the budget, ahead of polls."""
        ...

    def server_now(self, local: float) -> float:
        """``local`` (this machine's time) on the server's clock."""
        ...

    def predict(self, key: tuple[str, str]) -> float | None:
        """The learned latency (s) of a ``records.latency_key``, if any."""
        ...

    def states(self, task_ids: Iterable[str] | None = None) -> list[TaskState]:
        """The known states of these tasks (all if None)."""
        ...

    def state(self, task_id: str) -> TaskState | None:
        """The known state of one task."""
        ...

    def pause(self) -> None:
        """Stop polling (every watcher of this API)."""
        ...

    def resume(self) -> None:
        """Poll again; after a refused key, try it again at once."""
        ...

    def refresh(self, task_id: str) -> concurrent.futures.Future[Task]:
        """Fetch ``task_id`` now, within the budget."""
        ...

    def keep(self, task: Task, spec: KeepSpec) -> concurrent.futures.Future[list[KeptResult]]:
        """Keep ``task``'s results as ``spec`` asks."""
        ...

    def follow_account(self, follow: Follow) -> AccountFollower:
        """Walk the account's list for new tasks, handing them to ``follow.found`` (engine thread)."""
        ...

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in the engine's thread (``RuntimeError`` once it stopped)."""
        ...

    def unwatch(self, sub: Subscriber, task_ids: Iterable[str]) -> None:
        """Stop polling these tasks for ``sub`` unless another subscriber watches them."""
        ...

    def pending(self, store: Store) -> Unwritten:
        """What waits to be written to ``store``'s journal."""
        ...

    def journal_watched(self, store: Store, rows: list[Watched]) -> None:
        """Record newly watched tasks."""
        ...

    def watch(
        self,
        sub: Subscriber,
        items: Iterable[str | Task],
        policy: PollPolicy,
        fresh: Iterable[str] = (),
        seen: tuple[float, float] | None = None,
    ) -> list[str]:
        """Poll these tasks for ``sub``."""
        ...

    def detach(self, sub: Subscriber) -> Unwritten | None:
        """Remove ``sub``; what could not be written to its journal."""
        ...
