"""Watching the account: every new task it creates, as the list shows them (``watch_account``).

The walking is the engine's (:class:`~mh_notebook.engine.AccountFollower`, on the poller's
loop, each page in its turn in the request budget); this part starts and stops it, hands
what it finds to the watcher's intake, and keeps the watch in the journal (its filters and
how far it got), so that :meth:`AccountWatching.resume` after a kernel restart goes on from
there and finds the tasks created meanwhile.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from ..engine import JOURNAL_WAIT, AccountFollower, Follow, FollowSettings
from ..journal.protocol import AccountWatch
from ..models import Task
from ..records import TaskStatus
from .intake import Intake
from .tracked import TrackedSet

__all__ = ["AccountWatching"]

log = logging.getLogger("mh_notebook.watcher")

_SAVE_EVERY = 2.0
"""Most often how far a watch got is journalled (real seconds)."""
_STOP_WAIT = 1.0


class AccountWatching:
    """A watcher's watches of the account (one per call of ``watch_account``'s filters)."""

    def __init__(self, tracked: TrackedSet, intake: Intake, time_scale: float) -> None:
        self._tracked, self._intake = tracked, intake
        self.settings = FollowSettings().scaled(time_scale)
        """The followers' durations, in real seconds."""
        self._followers: list[AccountFollower] = []
        self._saved_at: dict[str, float] = {}

    def watch_account(
        self,
        since: datetime | str | float | None = None,
        *,
        provider: str | None = None,
        model: str | None = None,
        status: str | None = None,
    ) -> None:
        """Watch every task the account creates from ``since`` on, as the list shows them.

        Tasks started anywhere (a script, a teammate's notebook, the web playground) join
        this watcher within about a second of the list first showing them; ``provider``,
        ``model`` (a model id) and ``status`` filter them as the list does. ``since`` is a
        datetime (naive: UTC), an ISO 8601 string or epoch seconds on the server's clock;
        default: now. Returns at once: the list is walked about once a second in the
        background, each page within the request budget. A list that is missing (404) or
        refused (403) is said in the panel and tried again later; nothing stops.

        Replaces this watcher's earlier account watch. The watch is journalled: after a
        kernel restart, ``resume()`` goes on from where it got to. Stop it with
        :meth:`unwatch_account` (the tasks found stay watched).
        """
        self._tracked.check_open()
        checked = TaskStatus(status).value if status is not None else None
        asked_at = time.time() if since is None else None
        start = _epoch(since) if since is not None else self._tracked.engine.server_now(time.time())
        row = AccountWatch(self._tracked.base_url, provider, model, checked, start)
        self.unwatch_account()
        self._follow(row, asked_at=asked_at)

    def unwatch_account(self) -> None:
        """Stop watching the account's new tasks (the tasks found stay watched); ``resume()``
        no longer picks the watch up."""
        followers, self._followers = self._followers, []
        for follower in followers:
            follower.stop()
            self._write(follower.row, drop=True)

    def resume(self) -> list[str]:
        """Watch again every task of the journal (same ``base_url``) that had not ended, and
        the account watches of ``watch_account``, from where they got to.

        Use after a kernel restart: ``TaskWatcher(store=...).resume()``. Returns the ids of
        the tasks. Unlike ``resume_polling()`` (which lets a paused engine poll again), this
        adds tasks to this watcher: the journal's unfinished ones, and then every new task
        of the account its watches find (those created while the kernel was down too).
        A watcher already stopped raises ``RuntimeError`` naming the call that resumes in a
        new one (``TaskWatcher(store=...).resume()``): it would watch nothing."""
        self._tracked.check_resumable()
        ids = self._intake.resume()
        store = self._tracked.spec.store
        rows = store.account_watches(self._tracked.base_url)
        known = {f.row.filters for f in self._followers}
        if rows:
            watched = [w for w in store.watched() if w.base_url == self._tracked.base_url]
            for row in (r for r in rows if r.filters not in known):
                seen = [
                    w.task_id for w in watched if w.base_url == row.base_url and w.first_seen_at >= row.since
                ]
                self._follow(row, seen=seen)
        return ids

    def notice(self) -> str | None:
        """What the panel says about the account watch (a list missing or refused), or None."""
        return next((f.notice for f in self._followers if f.notice), None)

    @property
    def pages(self) -> int:
        """List pages fetched by this watcher's account watches."""
        return sum(f.pages for f in self._followers)

    def stop(self) -> None:
        """The watcher stops: the walks end, and how far they got is journalled (the watch
        itself stays, for ``resume()``)."""
        followers, self._followers = self._followers, []
        for follower in followers:
            follower.stop()
            self._write(follower.row, wait=_STOP_WAIT)

    # ---------------------------------------------------------------- inside
    def _follow(self, row: AccountWatch, *, asked_at: float | None = None, seen: Iterable[str] = ()) -> None:
        self._write(row, wait=JOURNAL_WAIT)
        follow = Follow(row, self._found, self._progress, self.settings, asked_at=asked_at, seen=seen)
        follower = self._tracked.engine.follow_account(follow)
        self._followers.append(follower)

    def _found(self, tasks: list[Task]) -> None:
        """New tasks from the list (engine thread): watched at once. One still running is
        handed over as listed (no GET needed to schedule it); one that has ended is fetched
        for its results (list items carry none)."""
        if not self._tracked.open:
            return
        self._intake.watch([t.id if t.is_terminal else t for t in tasks])

    def _progress(self, row: AccountWatch) -> None:
        """How far a watch got (engine thread): journalled now and then."""
        if time.monotonic() - self._saved_at.get(row.filters, -math.inf) >= _SAVE_EVERY:
            self._write(row, wait=JOURNAL_WAIT)

    def _write(self, row: AccountWatch, *, wait: float = JOURNAL_WAIT, drop: bool = False) -> None:
        store = self._tracked.spec.store
        try:
            if drop:
                store.drop_account_watch(row, wait=max(wait, _STOP_WAIT))
            else:
                store.set_account_watch(row, wait=wait)
                self._saved_at[row.filters] = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - busy or closed: tried again on the next progress
            log.debug("account watch not journalled: %s", exc)


def _epoch(since: datetime | str | float) -> float:
    """``since`` as epoch seconds (naive datetimes and ISO strings without a zone are UTC)."""
    if isinstance(since, int | float):
        return float(since)
    when = datetime.fromisoformat(since.replace("Z", "+00:00")) if isinstance(since, str) else since
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
