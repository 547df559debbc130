"""List polling: the pure planner that chooses, each tick, between list pages and GETs.

No I/O, no threads, no clock of its own: every function takes ``now`` (epoch seconds on
the **server's** clock, the clock of the tasks' ``created_at``) and returns values. The
poller's :mod:`.lister` keeps one :class:`ListState` and, when polls are due: ``plan()``
with one :class:`Watched` per task it polls; walks each :class:`PageWalk`
(``client.list_tasks(**walk.query(), cursor=...)``, at most ``max_pages``), each item a
:class:`Sighting`; ``walk_outcome()`` (:mod:`.learning`: each task once across the cursor; ``missing``:
covered tasks not shown keep their due times); ``after_walk()`` (learns the account) or,
on 404, 403 or garbage, ``after_failure()`` (per-task GETs until ``health.retry_at``; 429,
5xx and network errors are the budget's business); GETs ``p.gets`` and one per result;
folds every sighting in with :func:`merge` (never regresses a status; the newest wins).

Costs are in requests. A walk's cost is estimated from what the last pages held: the
watched tasks in its window are known exactly, the account's other tasks from the rate at
which they were seen (per provider and model, so filters are priced too).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypedDict

from ..records import ENDED, TaskStatus
from .sightings import Sighting, Source, merge, status_rank

__all__ = [
    "Health",
    "ListFailure",
    "ListState",
    "PageWalk",
    "Plan",
    "Settings",
    "Sighting",
    "Source",
    "WalkQuery",
    "Watched",
    "merge",
    "plan",
    "status_rank",
]


class ListFailure(StrEnum):
    """Why the list cannot be used (per-task polling for a while): 404 (no list endpoint),
    403 (the key lacks the permission), a 200 whose body is not a page of tasks."""

    MISSING = "missing"
    REFUSED = "refused"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Settings:
    """The planner's constants (defaults suit the documented API)."""

    page_size: int = 100
    """Items per page (the API's maximum)."""
    margin: float = 1.0
    """Seconds a window starts before its oldest task (whole-second timestamps, rounding)."""
    prior_rate: float = 0.05
    """Other tasks per second assumed on the account before pages have shown any."""
    prior_seconds: float = 60.0
    """Weight of ``prior_rate``, in seconds of observation."""
    overrun: float = 2.0
    """A walk stops after ``overrun`` times its estimated pages (plus one)."""
    backoff: float = 30.0
    """Seconds of per-task polling after the first list failure; doubles per failure."""
    backoff_cap: float = 1800.0
    riders: int = 1
    """Pages a plan's walks may grow by to observe every watched task, due or not (one
    unfiltered walk instead of filtered ones): ends seen sooner, tasks kept in step."""
    memory: float = 3600.0
    """Seconds of the account's other tasks remembered (by creation time)."""
    max_remembered: int = 20_000


@dataclass(frozen=True)
class Watched:
    """One task the poller polls, as the planner needs it (times: server epoch seconds)."""

    id: str
    created: float
    due: float
    """When its promise (5% of its age, or its learned window) needs an observation."""
    status: str = TaskStatus.PENDING
    provider: str | None = None
    model: str | None = None
    needs_result: bool = False
    """Seen succeeded (or expired) without result URLs that are still wanted: one GET."""


@dataclass(frozen=True)
class Health:
    """Whether the list may be used; after a failure, when to try it again."""

    failures: int = 0
    """Consecutive failures (0: the list works, or was never tried)."""
    retry_at: float = 0.0
    reason: str | None = None
    """Why the list cannot be used, e.g. "the API has no task list (404)" (``None`` when it works)."""

    @property
    def available(self) -> bool:
        """True unless the last list request failed."""
        return self.failures == 0


_Seen = tuple[float, str | None, str | None]
"""An unwatched task seen on a page: ``(created, provider, model)``."""


@dataclass(frozen=True)
class ListState:
    """What the planner knows between ticks: list health and the account's other tasks."""

    health: Health = Health()
    others: Mapping[str, _Seen] = field(default_factory=dict)
    """Unwatched tasks seen on pages, by id (never mutated: each update copies)."""
    observed_since: float | None = None
    """Start of the creation-time span pages have covered."""
    observed_until: float | None = None
    """When the last walk was sent."""
    settings: Settings = Settings()

    def other_rate(self, provider: str | None = None, model: str | None = None) -> float:
        """Estimated unwatched tasks created per second (matching the filters)."""
        s = self.settings
        span = 0.0
        if self.observed_since is not None and self.observed_until is not None:
            span = max(0.0, self.observed_until - self.observed_since)
        count = sum(1 for seen in self.others.values() if _match(seen, provider, model))
        share = 1.0 if provider is None and model is None else 0.5
        return (count + share * s.prior_rate * s.prior_seconds) / (span + s.prior_seconds)


def _match(seen: _Seen, provider: str | None, model: str | None) -> bool:
    return (provider is None or seen[1] == provider) and (model is None or seen[2] == model)


class WalkQuery(TypedDict):
    """``Client.list_tasks`` keyword arguments of a walk (``since``: ISO 8601 UTC)."""

    since: str
    provider: str | None
    model: str | None
    status: str | None
    limit: int


@dataclass(frozen=True)
class PageWalk:
    """Follow the list's cursor over one window: tasks created at or after ``since``."""

    since: float
    provider: str | None = None
    model: str | None = None
    status: str | None = None
    limit: int = 100
    max_pages: int = 1
    """Stop after this many pages even if ``has_more`` (the estimate was wrong)."""
    est_pages: int = 1
    covers: frozenset[str] = frozenset()
    """Watched tasks this walk observes (created in its window, matching its filters)."""
    probe: bool = False
    """A one-page test of a list that failed before; covers nothing."""

    def query(self) -> WalkQuery:
        """Keyword arguments for ``Client.list_tasks`` (add ``cursor=`` per page)."""
        since = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
        return WalkQuery(
            since=since, provider=self.provider, model=self.model, status=self.status, limit=self.limit
        )

    def shows(self, task: Watched) -> bool:
        """Whether ``task`` falls in this walk's window and filters."""
        return (
            not self.probe
            and task.created >= self.since
            and (self.provider is None or task.provider == self.provider)
            and (self.model is None or task.model == self.model)
        )


@dataclass(frozen=True)
class Plan:
    """One tick's requests: page walks, per-task GETs, and result GETs."""

    walks: tuple[PageWalk, ...] = ()
    gets: tuple[str, ...] = ()
    """Due tasks no walk covers."""
    result_gets: tuple[str, ...] = ()
    """Succeeded tasks whose result URLs are wanted: one GET each."""
    per_task: bool = False
    """True while the list is unavailable (``walks`` is then at most one probe)."""

    @property
    def est_requests(self) -> int:
        """Estimated requests: pages plus GETs."""
        return sum(w.est_pages for w in self.walks) + len(self.gets) + len(self.result_gets)

    def describe(self) -> str:
        """A line for the panel, e.g. ``"3 list pages + 1 GET + 2 result GETs"``."""
        pages = sum(w.est_pages for w in self.walks)
        counts = ((pages, "list page"), (len(self.gets), "GET"), (len(self.result_gets), "result GET"))
        parts = [f"{n} {what}{'' if n == 1 else 's'}" for n, what in counts if n]
        return " + ".join(parts) or "nothing due"


# ----------------------------------------------------------------- costs and the plan
_Choice = tuple[int, list["PageWalk"], list[str]]
"""A candidate plan: its cost in requests, its walks, its GETs."""


def _pages(count: float, size: int) -> int:
    return max(1, math.ceil(count / size))


class _Estimator:
    """Page counts for windows and filters, over one tick's watched tasks."""

    def __init__(self, state: ListState, watched: Sequence[Watched], now: float) -> None:
        self.state, self.watched, self.now = state, watched, now
        self._cache: dict[tuple[str | None, str | None], tuple[list[float], list[float], float]] = {}

    def _sorted(self, provider: str | None, model: str | None) -> tuple[list[float], list[float], float]:
        key = (provider, model)
        if key not in self._cache:
            mine = sorted(w.created for w in self.watched if _match((0.0, w.provider, w.model), *key))
            others = sorted(seen[0] for seen in self.state.others.values() if _match(seen, *key))
            self._cache[key] = (mine, others, self.state.other_rate(provider, model))
        return self._cache[key]

    def count(self, since: float, provider: str | None, model: str | None) -> float:
        """Estimated tasks a walk from ``since`` lists: watched ones exactly, others by rate."""
        mine, others, rate = self._sorted(provider, model)
        state = self.state
        lo = state.observed_since if state.observed_since is not None else self.now
        hi = state.observed_until if state.observed_until is not None else self.now
        known = len(mine) - bisect.bisect_left(mine, since)
        seen = len(others) - bisect.bisect_left(others, max(since, lo))
        unseen = rate * (max(0.0, lo - since) + max(0.0, self.now - hi))
        return known + seen + unseen

    def pages(self, since: float, provider: str | None, model: str | None) -> int:
        """Estimated pages of a walk from ``since`` with these filters."""
        return _pages(self.count(since, provider, model), self.state.settings.page_size)


def _best_for_group(
    est: _Estimator, due: Sequence[Watched], provider: str | None, model: str | None
) -> tuple[int, PageWalk | None, tuple[str, ...]]:
    """The cheapest split of a group's due tasks: GET the oldest ``i``, walk over the rest."""
    s = est.state.settings
    ordered = sorted(due, key=lambda w: w.created)
    best: tuple[int, PageWalk | None, tuple[str, ...]] = (len(ordered), None, tuple(w.id for w in ordered))
    for i, oldest in enumerate(ordered):
        since = oldest.created - s.margin
        pages = est.pages(since, provider, model)
        if i + pages < best[0]:
            walk = PageWalk(since, provider, model, limit=s.page_size, est_pages=pages)
            best = (i + pages, walk, tuple(w.id for w in ordered[:i]))
    return best


def _grouped(est: _Estimator, due: Sequence[Watched], by: str | None) -> _Choice:
    """Walks per provider, per model, or one unfiltered walk (``by`` None)."""
    groups: dict[tuple[str | None, str | None], list[Watched]] = {}
    for w in due:
        key = (None, None) if by is None else (w.provider, None) if by == "provider" else (None, w.model)
        groups.setdefault(key, []).append(w)
    cost, walks, gets = 0, list[PageWalk](), list[str]()
    for (provider, model), members in groups.items():
        if (by == "provider" and provider is None) or (by == "model" and model is None):
            cost, gets = cost + len(members), gets + [w.id for w in members]  # unfilterable
            continue
        c, walk, g = _best_for_group(est, members, provider, model)
        cost, walks = cost + c, walks + ([] if walk is None else [walk])
        gets.extend(g)
    return cost, walks, gets


def _active(watched: Iterable[Watched]) -> tuple[list[Watched], list[str]]:
    """Tasks still polled, and the result GETs (each succeeded task once)."""
    polled, results = [], []
    for w in watched:
        if w.needs_result:
            results.append(w.id)
        elif w.status not in ENDED:
            polled.append(w)
    return polled, list(dict.fromkeys(results))


def plan(state: ListState, watched: Iterable[Watched], now: float, ahead: float = 0.0) -> Plan:
    """The cheapest requests that observe every task due at ``now`` (or within ``ahead``
    seconds: the time a round takes, so groups due one after the other share one round
    instead of each waiting for the other's).

    Candidates: all GETs; one unfiltered walk; walks per provider; walks per model. In
    each, a group's oldest tasks may be left to GETs (a single old task is cheaper by
    GET than a window hours long). Ties go to fewer walks. Every walk ``covers`` all
    watched tasks in its window, due or not. While the list is unavailable: GETs for
    every due task, plus a one-page probe once ``state.health.retry_at`` has passed.
    """
    polled, results = _active(watched)
    due = [w for w in polled if w.due <= now + ahead]
    if not state.health.available:
        probe = PageWalk(now - state.settings.margin, limit=1, probe=True)
        probes = (probe,) if now >= state.health.retry_at else ()
        return Plan(probes, tuple(w.id for w in due), tuple(results), per_task=True)
    if not due:
        return Plan(result_gets=tuple(results))
    est = _Estimator(state, polled, now)
    best: _Choice = (len(due), [], [w.id for w in due])
    for by in (None, "provider", "model"):
        candidate = _grouped(est, due, by)
        if (candidate[0], len(candidate[1])) < (best[0], len(best[1])):
            best = candidate
    if best[1] and not best[2]:  # (an old task left to its GET stays so)
        best = _with_riders(est, polled, best)
    walks = tuple(_finish(w, polled, state.settings) for w in best[1])
    covered = set().union(*(w.covers for w in walks)) if walks else set()
    gets = tuple(i for i in best[2] if i not in covered)
    return Plan(walks, gets, tuple(results))


def _with_riders(est: _Estimator, polled: Sequence[Watched], best: _Choice) -> _Choice:
    """One unfiltered walk over every polled task instead, if at most ``riders`` more pages."""
    s, since = est.state.settings, min(w.created for w in polled) - est.state.settings.margin
    pages = est.pages(since, None, None)
    walk = PageWalk(since, limit=s.page_size, est_pages=pages)
    return best if pages > best[0] + s.riders else (pages, [walk], [])


def _finish(walk: PageWalk, polled: Sequence[Watched], s: Settings) -> PageWalk:
    covers = frozenset(w.id for w in polled if walk.shows(w))
    return replace(walk, covers=covers, max_pages=math.ceil(s.overrun * walk.est_pages) + 1)
