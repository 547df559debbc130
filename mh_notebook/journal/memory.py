"""The journal in memory (``store=None``): lost with the process, kept column-wise."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ..records import ENDED, LEARNED_FROM, Event, TaskStatus
from .protocol import (
    AccountWatch,
    Capabilities,
    ObservedFix,
    OwnJournal,
    SavedResult,
    Watched,
    first_time,
    usable_predictions,
)

__all__ = ["MemoryStore"]


class MemoryStore(OwnJournal):
    """A journal in memory, lost with the process (``store=None``).

    Events are kept column-wise, so that a history of many tasks builds fast. ``wait`` is
    accepted and ignored (nothing else holds a lock for long); closing releases nothing and
    the store stays readable. Like a SQL journal, an event already recorded (same task,
    status, time and request count) is not recorded again.
    """

    capabilities = Capabilities()
    """Nothing beyond the protocol: a memory journal is one process's, reduced in pandas."""
    location = "in memory"

    def latest_events(self, task_ids: list[str], *, wait: float | None = None) -> list[Event]:
        """The last informative event (not ``expired``, if any) of each of these tasks."""
        wanted, latest = set(task_ids), dict[str, Event]()
        for event in self.events():
            if event.task_id in wanted and (
                event.status != TaskStatus.EXPIRED or event.task_id not in latest
            ):
                latest[event.task_id] = event
        return list(latest.values())

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {name: [] for name in Event._fields}
        self._keys: set[tuple[Any, ...]] = set()
        self._watched: dict[str, Watched] = {}
        self._results: dict[tuple[str, int], SavedResult] = {}
        self._accounts: dict[tuple[str, str], AccountWatch] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(tasks={len(self._watched)}, events={len(self._cols['task_id'])})"

    def add_watched(self, items: Iterable[Watched], *, wait: float | None = None) -> None:
        """Record tasks a watcher started watching (``wait`` is ignored)."""
        rows = [Watched(*item) for item in items]
        with self._lock:
            for item in rows:
                self._watched.setdefault(item.task_id, item)

    def set_predictions(self, items: Iterable[tuple[str, float]], *, wait: float | None = None) -> None:
        """Record the first predicted latency of each watched task (``wait`` is ignored)."""
        rows = usable_predictions(items)
        with self._lock:
            for task_id, predicted in rows:
                known = self._watched.get(task_id)
                if known is not None and known.predicted_latency_s is None:
                    self._watched[task_id] = known._replace(predicted_latency_s=predicted)

    def correct_first_seen(
        self, items: Iterable[tuple[str, float, float]], *, wait: float | None = None
    ) -> None:
        """``(task_id, journalled, corrected)``: a first-seen time journalled before the
        server's clock was known, now on it (rows journalled otherwise are left alone)."""
        with self._lock:
            for task_id, old, new in items:
                known = self._watched.get(task_id)
                if known is not None and known.first_seen_at == old:
                    self._watched[task_id] = known._replace(first_seen_at=new)

    def correct_observed(self, items: Iterable[ObservedFix], *, wait: float | None = None) -> None:
        """Put events journalled before the server's clock was known on it (``wait`` is
        ignored); events not recorded, or whose corrected identity is, are left alone."""
        fixes = {fix.old_key: fix for fix in items}
        with self._lock:
            cols = self._cols
            keys = zip(cols["task_id"], cols["status"], cols["observed_at"], cols["polls"], strict=True)
            for at, key in enumerate(list(keys)):
                fix = fixes.get(key)
                if fix is not None and fix.new_key not in self._keys:
                    cols["observed_at"][at] = fix.corrected
                    self._keys.discard(key)
                    self._keys.add(fix.new_key)

    def add(self, event: Event, *, wait: float | None = None) -> None:
        """Record one event (``wait`` is ignored)."""
        self.add_many([event])

    def add_many(self, events: Iterable[Event], *, wait: float | None = None) -> None:
        """Record events (``wait`` is ignored)."""
        with self._lock:
            rows = [Event._make(e) for e in events]
            rows = [e for e in rows if first_time(e, self._keys)]
            for column, values in zip(self._cols.values(), zip(*rows, strict=True), strict=False):
                column.extend(values)

    def add_results(self, items: Iterable[SavedResult], *, wait: float | None = None) -> None:
        """Record saved result files (``wait`` is ignored)."""
        rows = [SavedResult(*item) for item in items]
        with self._lock:
            for row in rows:
                self._results[(row.task_id, row.idx)] = row

    def results(self, task_ids: Iterable[str] | None = None) -> list[SavedResult]:
        """The saved result files (of these tasks), by task id and index."""
        wanted = None if task_ids is None else set(task_ids)
        with self._lock:
            rows = [r for r in self._results.values() if wanted is None or r.task_id in wanted]
        return sorted(rows, key=lambda r: (r.task_id, r.idx))

    def set_account_watch(self, row: AccountWatch, *, wait: float | None = None) -> None:
        """Record an account watch, or how far it got (``wait`` is ignored)."""
        with self._lock:
            self._accounts[(row.base_url, row.filters)] = AccountWatch(*row)

    def drop_account_watch(self, row: AccountWatch, *, wait: float | None = None) -> None:
        """Forget the account watch of ``row``'s API and filters (``wait`` is ignored)."""
        with self._lock:
            self._accounts.pop((row.base_url, row.filters), None)

    def account_watches(self, base_url: str) -> list[AccountWatch]:
        """The account watches recorded against ``base_url``."""
        with self._lock:
            return [row for (url, _), row in self._accounts.items() if url == base_url]

    def columns(self) -> dict[str, list[Any]]:
        """The events column by column (copies)."""
        with self._lock:
            return {name: list(values) for name, values in self._cols.items()}

    def events(self) -> list[Event]:
        """Every event, in the order observed."""
        return list(map(Event._make, zip(*self.columns().values(), strict=True)))

    def watched(self) -> list[Watched]:
        """Every task ever watched."""
        with self._lock:
            return list(self._watched.values())

    def unfinished(self, base_url: str) -> list[str]:
        """Ids watched against ``base_url`` that have not ended."""
        return _unfinished(self.watched(), self.events(), base_url)

    def recent_ends(self, limit: int, base_url: str | None = None) -> list[Event]:
        """The latest ``limit`` succeeded/failed events (of tasks watched against ``base_url``)."""
        scope = None if base_url is None else {w.task_id for w in self.watched() if w.base_url == base_url}
        ends = [
            e for e in self.events() if e.status in LEARNED_FROM and (scope is None or e.task_id in scope)
        ]
        return ends[len(ends) - min(max(limit, 0), len(ends)) :]

    def reduced_rows(self) -> list[tuple[Any, ...]]:
        """Not here (``capabilities.reduced_rows`` is False): the history reduces :meth:`columns`."""
        raise NotImplementedError("a memory journal is reduced by the history, in pandas")

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Mark the store closed (nothing to release)."""
        self._closed = True


def _unfinished(watched: list[Watched], events: list[Event], base_url: str) -> list[str]:
    last = {e.task_id: e.status for e in events}
    return [w.task_id for w in watched if w.base_url == base_url and last.get(w.task_id) not in ENDED]
