"""Following the account: every new task the list shows, handed to a watcher (poller loop).

An :class:`AccountFollower` walks the list (``GET /api/v1/tasks``, newest first, following
the cursor) from a ``startDate`` it keeps, every ``interval`` seconds, each page in its turn
in the engine's request budget (:meth:`~mh_notebook.polling.lister.Lister.fetch_page`).
Tasks it has not seen yet, created at or after ``since``, are handed to ``found`` (in the
poller thread) at once.

Where it got to: after a complete walk sent at server time ``T``, every task created before
``T - overlap`` has been listed (``overlap`` covers a list that lags its tasks; it grows to
twice the largest lag seen), so the next walk starts there. With a ``status`` filter a task
is listed only once it has that status, which may be long after it was created: the walk
then keeps ``horizon`` seconds of the account instead. ``progress`` is told where it got to.
A turn reads at most ``_MAX_PAGES`` pages; a longer walk goes on from its cursor next turn.

It never dies: a 429 waits its turn (the budget's pause), a 5xx, a network error or a
malformed page backs off, and a list that is missing (404) or refused (403) is said once in
:attr:`AccountFollower.notice` and tried again later, backing off to ``max_backoff``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import AuthenticationError, MalformedResponseError, ModelHunterError, NotFoundError
from ..journal.protocol import AccountWatch
from ..models import Task
from ..polling.clock import ClockOffset
from ..polling.poller import Poller

__all__ = ["AccountFollower", "FollowSettings"]

log = logging.getLogger("mh_notebook.engine")

_MAX_PAGES = 10
"""Most pages read in one turn (1,000 tasks): a longer walk goes on from its cursor at the
next turn (the cursor is stable while tasks are created), so a busy account or a long
absence never costs more than this a turn."""


@dataclass(frozen=True)
class FollowSettings:
    """The follower's durations, in real seconds (a watcher scales them by its ``time_scale``)."""

    interval: float = 1.0
    """Between two walks."""
    overlap: float = 15.0
    """How far back from the last walk the next starts (the list may lag its tasks)."""
    horizon: float = 3600.0
    """How much of the account a walk with a ``status`` filter keeps reading."""
    max_backoff: float = 60.0
    """Longest wait after failed walks."""

    def scaled(self, time_scale: float) -> FollowSettings:
        """These durations divided by ``time_scale``."""
        return FollowSettings(*(value / time_scale for value in vars(self).values()))


@dataclass(frozen=True)
class Follow:
    """One account watch, as the engine is asked to follow it: where it starts (``row``),
    whom it tells (``found``: new tasks; ``progress``: how far it got, engine thread), its
    durations, and when it was asked for (``asked_at``, local time: ``row.since`` is then
    only a first guess) or the ids already seen (a resumed watch)."""

    row: AccountWatch
    found: Callable[[list[Task]], None]
    progress: Callable[[AccountWatch], None]
    settings: FollowSettings
    asked_at: float | None = None
    seen: Iterable[str] = ()


class AccountFollower:
    """Walks the account's list on the poller's loop; :meth:`stop` from any thread."""

    def __init__(self, poller: Poller, clock: ClockOffset, follow: Follow) -> None:
        """``follow.row.since`` is where to start; with ``follow.asked_at`` it is only a first
        guess, fixed on the server's clock once the first answer has taught it."""
        row, settings, found, progress = follow.row, follow.settings, follow.found, follow.progress
        asked_at, seen = follow.asked_at, follow.seen
        self.row, self.settings = row, settings
        self.notice: str | None = None
        """Why the list cannot be followed now (shown in the panel), or None."""
        self.pages = 0
        """Pages fetched so far."""
        self._poller, self._clock, self._found, self._progress = poller, clock, found, progress
        self._asked_at = asked_at
        self._start: float | None = None if asked_at is not None else row.since
        self._seen: dict[str, float] = dict.fromkeys(seen, row.since)
        self._overlap, self._failures = settings.overlap, 0
        self._last_walk: float | None = None
        """Server time the last complete walk was sent at."""
        self._unfinished: tuple[float, float, str] | None = None
        """``(sent, since, cursor)`` of a walk to go on with."""
        self._future: concurrent.futures.Future[None] | None = None

    def start(self) -> None:
        """Start walking (a job on the poller's loop)."""
        self._future = self._poller.spawn(self._run)

    def stop(self) -> None:
        """Stop walking (tasks already found stay watched)."""
        if self._future is not None:
            self._future.cancel()

    async def _run(self) -> None:
        while True:
            delay = self.settings.interval
            if not self._poller.paused:
                try:
                    await self._walk()
                    self._failures, self.notice = 0, None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - never dies: says why, backs off
                    delay = self._failed(exc)
            await asyncio.sleep(delay)

    def _failed(self, exc: Exception) -> float:
        """What went wrong, said once; seconds before the next walk."""
        self._failures += 1
        wait = min(self.settings.max_backoff, self.settings.interval * 2 ** min(self._failures, 16))
        what = None
        if isinstance(exc, NotFoundError | AuthenticationError):
            what = f"{'missing' if isinstance(exc, NotFoundError) else 'refused'} (HTTP {exc.status_code})"
        elif isinstance(exc, MalformedResponseError):
            what = "unreadable"
        if what is not None:
            notice = f"watch_account: the task list is {what}; trying again later"
            if notice != self.notice:
                log.warning("%s: %s", notice, exc)
            self.notice = notice
        elif isinstance(exc, ModelHunterError):
            log.debug("watch_account: a walk failed (%s); again in %.1f s", exc, wait)
        else:
            log.exception("watch_account: unexpected error; again in %.1f s", wait)
        return float(wait)

    async def _walk(self) -> None:
        """Up to ``_MAX_PAGES`` pages of a walk of the list from where it got to (the walk
        cut short last time, if any); new tasks handed over page by page."""
        if self._unfinished is not None:
            sent, since, cursor = self._unfinished
        else:
            sent, cursor = time.time(), None
            since = self._start if self._start is not None else self._guess()
        row = self.row
        query = {"limit": 100, "provider": row.provider, "model": row.model, "status": row.status}
        for _ in range(_MAX_PAGES):
            page = await self._poller.lister.fetch_page(**query, since=_iso(since), cursor=cursor)
            self.pages += 1
            self._sighted(page.tasks, since)
            if not page.has_more or page.cursor is None:
                break
            cursor = page.cursor
            self._unfinished = (sent, since, cursor)  # a failure goes on from here too
        else:
            return  # the rest at the next turn
        self._unfinished = None
        if self._start is None:  # the first answer taught the clock: since is now sure
            assert self._asked_at is not None
            self._start = self._clock.server_at_least(self._asked_at)
            self.row = row = row._replace(since=self._start)
            self._progress(row)
        else:
            self._last_walk = self._clock.server_at_least(sent)
            keep = self.settings.horizon if row.status is not None else self._overlap
            self._moved(self._last_walk - keep)

    def _guess(self) -> float:
        """A start before ``since`` whatever the server's clock (first walk only)."""
        assert self._asked_at is not None
        error = self._clock.error
        return float(self._clock.server_now(self._asked_at) - (error + 1.0 if error < 60 else 120.0))

    def _sighted(self, tasks: list[Task], since: float) -> None:
        """Hand over the tasks not seen yet, created from ``since`` on (from the sure
        ``since`` on, in the first walk, whose start was a guess)."""
        first = self._start is None
        floor = self._clock.server_at_least(self._asked_at or 0.0) if first else self.row.since
        fresh: list[Task] = []
        for task in tasks:
            created = task.created_at.timestamp() if task.created_at is not None else None
            if task.id in self._seen or (created is not None and created < floor):
                continue
            self._seen[task.id] = created if created is not None else since
            if created is not None and self._last_walk is not None and created < self._last_walk:
                lag = self._last_walk - created  # listed late: the next walks look further back
                self._overlap = min(self.settings.horizon, max(self._overlap, 2 * lag))
            fresh.append(task)
        if fresh:
            self._found(fresh)

    def _moved(self, start: float) -> None:
        """The next walk starts at ``start`` (never backwards); the ids seen before it are
        forgotten (no walk shows them again)."""
        if self._start is not None and start <= self._start:
            return
        self._start = start
        self._seen = {task_id: at for task_id, at in self._seen.items() if at >= start}
        self.row = self.row._replace(since=max(self.row.since, start))
        self._progress(self.row)


def _iso(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
