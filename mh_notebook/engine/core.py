"""The engine: one per API (base URL and key) per process, shared by every watcher of it.

It owns what must not multiply when a notebook cell is re-run: the poller thread, the
request budget (the API's limit is per key, not per watcher), the connection pool and
the journal writes. :class:`~mh_notebook.watcher.TaskWatcher` objects attach to it; a
task watched by several watchers is polled once, journalled once per journal file, and
every watcher of it sees its changes. The engine ends when its last watcher stops.

Observation times are journalled on the server's clock (local time plus the learned
offset, see :mod:`mh_notebook.polling.clock`), so that every duration in a history is a
difference of two times on one clock, whatever the skew between the two machines; one
journalled while the offset was still unsure is corrected once it is known
(:class:`~.journalling.ObservedTimes`).

Journal writes happen in the poller thread but never stall it (see :mod:`.writes`); a
watcher's :meth:`~mh_notebook.watcher.TaskWatcher.stop` tries for ``STOP_WAIT`` seconds at
most, and names what is still unwritten in an :class:`~.writes.UnwrittenWarning`.

The results of succeeded tasks are kept by the engine's :class:`~mh_notebook.results.Keeper`
(:meth:`Engine.keep`): fetched once on the poller's loop, never holding up a poll; saved
files are journalled like events.

A watcher whose journal is shared by several processes (PostgreSQL) brings shared polling
(:mod:`.team`): its tasks are polled here only while this process holds their lease or the
account's list duty, and the others' changes arrive from the journal.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable

from ..client import AsyncClient, RetryPolicy
from ..errors import AuthenticationError
from ..journal.protocol import Store, Unwritten, Watched
from ..journal.team import TeamPolling
from ..models import Task
from ..polling.clock import ClockOffset
from ..polling.policy import LatencyModel, PollPolicy
from ..polling.poller import Observation, Poller, TaskState
from ..polling.state import Kind
from ..polling.turns import UserRequests
from ..records import event_from_task
from ..results import Keeper, KeepSpec, KeptResult
from .account import AccountFollower, Follow
from .boundary import Subscriber
from .journalling import FirstSeen, ObservedTimes, event_of, journalled_polls, learned
from .team import EngineTeam, duty_name
from .team import is_team as _is_team
from .writes import JOURNAL_WAIT, STOP_WAIT, TICK, JournalWrites, Quarantined, store_key

__all__ = ["Engine", "engine_for", "running_engines"]

log = logging.getLogger("mh_notebook.engine")

_TEAM_CLOSE_WAIT = 3.0


class Engine:
    """The shared poller, budget and journal writer of one API in this process.

    Get it with :func:`engine_for`; attach watchers with :meth:`attach`.
    """

    def __init__(self, api_key: str, base_url: str, *, timeout: float | None, max_in_flight: int) -> None:
        self.base_url = base_url
        self._subs: list[Subscriber] = []
        self._lock = threading.RLock()
        self.writes = JournalWrites()
        """The journal write queue (what waits for each journal, and its one writer)."""
        self._seeded: set[object] = set()
        self.clock = ClockOffset()
        """The server's clock relative to this machine's, learned from its answers."""
        self._first_seen = FirstSeen(self.clock)
        self._observed = ObservedTimes(self.clock, self.writes)
        self.poller = Poller(
            lambda: AsyncClient(
                api_key,
                base_url,
                timeout=timeout,
                retry=RetryPolicy(max_attempts=1),
                allow_insecure_http=True,  # the watcher checked the URL
                on_response=self.clock.observe_date,
            ),
            clock=self.clock,
            on_observation=self._observe,
            on_tick=self._tick,
            on_close=lambda: self.keeper.aclose(),
            max_in_flight=max_in_flight,
            tick_interval=TICK,
            name=f"mh-poller {base_url}",
        )
        self.requests = UserRequests(self.poller, api_key, base_url, timeout=timeout)
        """The user's requests (create, cancel, retry, balance), in the budget ahead of polls."""
        self.keeper = Keeper(self.poller, timeout=max(timeout or 60.0, 60.0))
        """Fetches, keeps and saves the results of succeeded tasks (see :meth:`keep`)."""
        self._team = EngineTeam(self.poller, duty_name(base_url, api_key), self.unwatch)

    @property
    def team(self) -> TeamPolling | None:
        """Shared polling through a team journal (PostgreSQL), once a watcher brings one."""
        return self._team.polling

    def __repr__(self) -> str:
        return (
            f"Engine(base_url={self.base_url!r}, watchers={len(self._subs)}, "
            f"tasks={len(self.poller.states())}, rate_limit={self.poller.rate_limit:g}/s)"
        )

    @property
    def running(self) -> bool:
        """True until the last watcher has detached."""
        return self.poller.running

    @property
    def latency(self) -> LatencyModel:
        """What the engine has learned of latencies (real seconds) for this API."""
        return self.poller.latency

    @property
    def journal_error(self) -> str | None:
        """Why the last journal write failed, until a write succeeds again."""
        return self.writes.journal_error

    @property
    def quarantined(self) -> list[Quarantined]:
        """Events a working journal refused even cleaned (each logged once)."""
        return self.writes.quarantined

    # ------------------------------------------- what a watcher may ask (WatcherEngine)
    @property
    def paused(self) -> bool:
        """True while polling is paused (every watcher of this API)."""
        return self.poller.paused

    @property
    def auth_error(self) -> AuthenticationError | None:
        """The 401/403 that stopped polling, if the key has not worked since."""
        return self.poller.auth_error

    @property
    def rate_limit(self) -> float:
        """The shared budget's ceiling (requests/s)."""
        return self.poller.rate_limit

    @property
    def effective_rate(self) -> float:
        """Requests per second allowed now (under the ceiling after the server's 429s)."""
        return self.poller.effective_rate

    @property
    def budget_belief(self) -> str | None:
        """What the budget believes of the server's limit, in words."""
        return self.poller.budget_belief

    @property
    def polling_mode(self) -> str:
        """How the tasks are polled, in words: list pages and GETs, or per-task GETs and why."""
        return self.poller.polling_mode

    @property
    def in_poller_thread(self) -> bool:
        """True in the engine's own thread (a callback, a tick)."""
        return self.poller.in_poller_thread

    def server_now(self, local: float) -> float:
        """``local`` (this machine's time) on the server's clock (fixed while unknown)."""
        return self.clock.server_now(local)

    def predict(self, key: tuple[str, str]) -> float | None:
        """The learned latency (s) of a :func:`~mh_notebook.records.latency_key`, if any."""
        return self.poller.latency.predict(key)

    def states(self, task_ids: Iterable[str] | None = None) -> list[TaskState]:
        """The live states of these tasks (default: all)."""
        return self.poller.states(task_ids)

    def state(self, task_id: str) -> TaskState | None:
        """The live state of one task, if it is polled."""
        return self.poller.state(task_id)

    def pause(self) -> None:
        """Stop polling until :meth:`resume`."""
        self.poller.pause()

    def resume(self) -> None:
        """Poll again; after a refused key, try the key again at once."""
        self.poller.resume()

    def refresh(self, task_id: str) -> concurrent.futures.Future[Task]:
        """Fetch ``task_id`` now (within the request budget)."""
        return self.poller.refresh(task_id)

    def follow_account(self, follow: Follow) -> AccountFollower:
        """Walk the account's list for new tasks (see :class:`~.account.AccountFollower`), started."""
        follower = AccountFollower(self.poller, self.clock, follow)
        follower.start()
        return follower

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in the poller thread (``RuntimeError`` once it stopped)."""
        self.poller.call_soon(fn, *args)

    def unwatch(self, sub: Subscriber, task_ids: Iterable[str]) -> None:
        """Stop polling these tasks for ``sub``, unless another watcher watches them."""
        subs = [o for o in self.subscribers() if o is not sub]
        self.poller.unwatch([t for t in task_ids if not any(o.watches(t) for o in subs)])

    # ------------------------------------------------------------ watchers
    def attach(self, sub: Subscriber) -> None:
        """Add a watcher: the budget becomes the lowest limit of all, and its journal teaches."""
        key, _ = store_key(sub.spec.store), sub.spec.store.team_journal()  # before it joins: may raise
        with self._lock:
            self._subs.append(sub)
            self._apply_rate()
            fresh = key not in self._seeded
            self._seeded.add(key)
            self._team.join(sub.spec.store, f"mh-team {self.base_url}")
        if fresh:
            ends = sub.spec.store.recent_ends(2000, self.base_url)
            self.poller.call_soon(self.poller.learn, learned(ends))

    def detach(self, sub: Subscriber, timeout: float = STOP_WAIT) -> Unwritten | None:
        """Remove a watcher: its journal is written (``timeout`` seconds at most), tasks nobody
        else watches are dropped, and the engine stops with its last watcher.

        Returns what could not be written to the watcher's journal (also named in an
        :class:`UnwrittenWarning` and, for SQLite, kept in
        :func:`~mh_notebook.store.unwritten_path`), or None when everything was written or
        another watcher of the same journal writes it on.
        """
        with _REGISTRY_LOCK, self._lock:
            if sub not in self._subs:
                return None
            self._subs.remove(sub)
            mine = [s for s in self.poller.states() if sub.watches(s.task_id)]
            ids = [s.task_id for s in mine]
            self.poller.unwatch(t for t in ids if not any(o.watches(t) for o in self._subs))
            last = not self._subs
            handed_over = self._team.hand_over(sub, self._subs)
            if last:
                _REGISTRY.pop(_registry_key(self), None)
            else:
                self._apply_rate()
        self._journal_counts(sub.spec.store, mine)
        if handed_over is not None:  # our leases given back before the journal closes, if it answers
            concurrent.futures.wait([handed_over], timeout=_TEAM_CLOSE_WAIT)
        unwritten = self._settle(sub.spec.store, timeout)
        if last:
            self.poller.stop()
            self._team.stop()
        return unwritten

    def _settle(self, store: Store, timeout: float) -> Unwritten | None:
        """Write what waits for ``store`` of a leaving watcher; give up what is left, unless
        another attached watcher writes the same journal."""
        key = store_key(store)
        if any(store_key(o.spec.store) == key for o in self.subscribers()):
            return None
        self.flush(store, timeout)
        return self.writes.give_up(store)

    def watch(
        self,
        sub: Subscriber,
        items: Iterable[str | Task],
        policy: PollPolicy,
        fresh: Iterable[str] = (),
        seen: tuple[float, float] | None = None,
    ) -> list[str]:
        """Poll these tasks for ``sub`` (once, whoever else watches them); returns their ids.

        ``fresh`` are the ids new to ``sub``: what is known of them already is journalled in
        its journal unless another watcher of that journal watches them too. ``seen`` is
        ``(local time, first_seen_at journalled)`` of ``fresh``: corrected in the journal
        once the server's clock is known, if it was not then.
        """
        items = list(items)
        mine = store_key(sub.spec.store)
        with self._lock:
            ids = list(fresh)
            others = [o for o in self._subs if o is not sub and store_key(o.spec.store) == mine]
            new_here = [s for s in self.poller.states(ids) if not any(o.watches(s.task_id) for o in others)]
        events = [  # a journal new to a known task gets its state so far
            event_from_task(s.task, self.clock.server_now(s.fetched_at or 0.0), s.polls)
            for s in new_here
            if s.task is not None
        ]
        if events:
            self.poller.call_soon(self.writes.events, sub.spec.store, events)
        if seen is not None and ids:
            self.poller.call_soon(self._first_seen.unsure, sub.spec.store, ids, *seen)
        spent = journalled_polls(sub.spec.store, [i for i in ids if self.poller.state(i) is None])
        team = _is_team(sub.spec.store)
        if team:
            self._team.policy = policy  # the schedule the list duty's adopted tasks get
        return self.poller.watch(items, policy, leased=not team, polls=spent)

    def _journal_counts(self, store: Store, states: list[TaskState]) -> None:
        """Journal the requests spent on unfinished tasks since their last change, so that
        the next engine watching them counts on from there (issue 17, item 16)."""
        events = [
            event_from_task(s.task, self.clock.server_now(s.fetched_at or 0.0), s.polls)
            for s in states
            if s.task is not None and not s.ended and s.polls > s.reported_polls
        ]
        self.writes.events(store, events)  # queued in order (any thread), written as it can be

    def journal_watched(self, store: Store, rows: list[Watched]) -> None:
        """Record newly watched tasks (any thread): written now if the journal is free within
        ``JOURNAL_WAIT``, else kept and written by the poller thread."""
        self.writes.watched(store, rows)

    def pending(self, store: Store) -> Unwritten:
        """What waits to be written to ``store``'s journal (copies; any thread)."""
        return self.writes.pending(store)

    def keep(self, task: Task, spec: KeepSpec) -> concurrent.futures.Future[list[KeptResult]]:
        """Keep ``task``'s results as ``spec`` asks (on the poller's loop); saved files are
        journalled in ``spec.store`` before the future is done."""
        return self.poller.spawn(lambda: self._keep(task, spec))

    async def _keep(self, task: Task, spec: KeepSpec) -> list[KeptResult]:
        kept = await self.keeper.keep_task(task, spec)
        rows = [row for row in (k.saved() for k in kept) if row is not None]
        if rows and not spec.store.closed:  # a watcher stopped meanwhile closed its journal
            await self.writes.saved_now(spec.store, rows)
        return kept

    def _apply_rate(self) -> None:
        rate = min(s.spec.rate_limit for s in self._subs)
        bursts = [s.spec.burst for s in self._subs if s.spec.burst is not None]
        self.poller.set_rate(rate, min(bursts) if bursts else None)

    def subscribers(self) -> list[Subscriber]:
        """The attached watchers (a copy)."""
        with self._lock:
            return list(self._subs)

    # --------------------------------------------------------- poller thread
    def _observe(self, obs: Observation) -> None:
        subs = [s for s in [*self.subscribers(), *self._team.observers()] if s.watches(obs.task_id)]
        if obs.kind in (Kind.CHANGE, Kind.NOT_FOUND):
            event = event_of(obs, self.clock.server_now(obs.observed_at))
            stores = [  # a change another process saw is in the team journal already
                store
                for store in {store_key(s.spec.store): s.spec.store for s in subs}.values()
                if not (obs.elsewhere and _is_team(store))
            ]
            for store in stores:
                self.writes.events(store, [event])
            self._observed.journalled(stores, event, obs.observed_at)  # corrected once the clock is known
            if obs.previous is None:
                self._journal_prediction(obs.task_id, stores)
        for sub in subs:
            try:
                sub.observe(obs)
            except Exception:
                log.exception("a watcher failed on %s", obs.task_id)

    def _journal_prediction(self, task_id: str, stores: Iterable[Store]) -> None:
        """Record the latency predicted at first sight (analysis only: under another
        process's lock it is skipped rather than waited for)."""
        state = self.poller.state(task_id)
        if state is None or state.predicted_latency is None:
            return
        for store in stores:
            try:
                store.set_predictions([(task_id, state.predicted_latency)], wait=JOURNAL_WAIT)
            except Exception:
                log.debug("prediction for %s not journalled", task_id, exc_info=True)

    @property
    def notice(self) -> str | None:
        """A problem every watcher of this API shows: the journal or the team journal."""
        team = self.team.error if self.team is not None else None
        quarantined = (
            f"{len(self.quarantined)} events refused by the journal (engine.quarantined)"
            if self.quarantined
            else None
        )
        return self.journal_error or team or quarantined

    def _tick(self) -> None:
        subs = self.subscribers()
        self._first_seen.correct()
        self._observed.correct()
        self._team.tick(subs)
        waiting = self.writes.behind()
        behind = {store_key(s.spec.store): s.spec.store for s in subs if store_key(s.spec.store) in waiting}
        for store in behind.values():
            self.writes.write(store, JOURNAL_WAIT)
        for sub in subs:
            try:
                sub.tick()
            except Exception:
                log.exception("a watcher failed to redraw")

    def flush(self, store: Store, timeout: float = STOP_WAIT) -> bool:
        """Write what is waiting for ``store``, trying for ``timeout`` seconds at most; True if
        nothing is left waiting. From the poller thread (a callback), one bounded try only."""
        if self.poller.in_poller_thread:
            return self.writes.write(store, JOURNAL_WAIT, lock_wait=TICK, now=True)
        self._first_seen.correct(only=store)
        self._observed.correct(only=store, lock_wait=TICK, final=True)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if (
                self.writes.write(store, max(0.0, min(0.1, left)), lock_wait=max(0.0, left), now=True)
                or left <= 0
            ):
                return self.writes.settled(store)
            time.sleep(min(0.05, max(0.0, left)))


_REGISTRY: dict[tuple[str, str], Engine] = {}
_REGISTRY_LOCK = threading.RLock()


def _key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _registry_key(engine: Engine) -> tuple[str, str]:
    return next((k for k, e in _REGISTRY.items() if e is engine), ("", ""))


def engine_for(
    sub: Subscriber, api_key: str, base_url: str, *, timeout: float | None = 10.0, max_in_flight: int = 8
) -> Engine:
    """The running engine of this API (base URL and key) with ``sub`` attached; started if none.

    ``timeout`` and ``max_in_flight`` apply when the engine is started here.
    """
    key = (base_url, _key_digest(api_key))
    with _REGISTRY_LOCK:
        engine = _REGISTRY.get(key)
        if engine is None or not engine.running:
            engine = _REGISTRY[key] = Engine(api_key, base_url, timeout=timeout, max_in_flight=max_in_flight)
        engine.attach(sub)
    return engine


def running_engines() -> list[Engine]:
    """The engines of this process (for diagnostics and tests)."""
    with _REGISTRY_LOCK:
        return [e for e in _REGISTRY.values() if e.running]
