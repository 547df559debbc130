"""The simulated list endpoint, ``GET /api/v1/tasks``: pages, cursor, lag and refusals.

Newest first. The cursor names the last item's creation position (tasks are numbered in
creation order, and creation times never go backwards), so a walk that follows it is
stable while tasks are created: new tasks go to the head of the list, never onto a later
page, and no task is missed or shown twice. Items have no ``result``; they carry
``status``, ``progress``, ``cost``, ``started_at``, ``completed_at`` and ``metadata``.

Switches (``Simulator.list_mode``, ``Simulator.list_lag``; ``MH_SIM_LIST`` and
``MH_SIM_LIST_LAG`` for every simulator):

- ``list_mode``: ``"ok"``; ``"missing"`` (404 ``NOT_FOUND``, an API without the list);
  ``"forbidden"`` (403 ``KEY_PERMISSION_DENIED`` with the documented error envelope);
  ``"garbage"`` (200 whose body is JSON but not a page: ``data`` is not a list).
- ``list_lag``: seconds the list runs behind the tasks' own GET (a read replica): items
  show each task as it was ``list_lag`` seconds ago, and tasks younger than that are not
  listed yet.
- ``list_end_lag`` (``Simulator.list_end_lag``, default 0): seconds after its end during
  which the list still shows a task as it was just before it (a cache that lags on
  changes, not on new tasks); the task's own GET tells the end at once.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web

from .api import ListQuery, encode_cursor
from .faults import envelope_error
from .task import SimTask

__all__ = ["LIST_LAG_ENV", "LIST_MODES", "LIST_MODE_ENV", "check_list_mode", "list_body", "list_refusal"]

LIST_MODES = ("ok", "missing", "forbidden", "garbage")
LIST_MODE_ENV = "MH_SIM_LIST"
"""Default ``list_mode`` of every simulator (e.g. ``MH_SIM_LIST=missing``)."""
LIST_LAG_ENV = "MH_SIM_LIST_LAG"
"""Default ``list_lag`` (seconds) of every simulator."""


class Account(Protocol):
    """What the list needs from the simulator."""

    clock_skew: float
    list_lag: float
    list_end_lag: float

    def ordered(self) -> tuple[list[SimTask], list[float]]:
        """Every task in creation order, and their (real) creation times."""

    def data(self, task: SimTask, now: float, *, view: str = "get") -> dict[str, Any]:
        """A task's ``data`` object at ``now``."""


def check_list_mode(mode: str | None) -> str:
    """``mode`` if it is one of :data:`LIST_MODES` (``None``: the environment's, else ``ok``)."""
    mode = os.environ.get(LIST_MODE_ENV, "ok") if mode is None else mode
    if mode not in LIST_MODES:
        raise ValueError(f"list_mode must be one of {LIST_MODES}, got {mode!r}")
    return mode


def list_refusal(mode: str) -> web.Response | None:
    """The answer of a list switched off (``missing``, ``forbidden``, ``garbage``), or ``None``."""
    if mode == "missing":
        return envelope_error(404, "NOT_FOUND", "Cannot GET /api/v1/tasks")
    if mode == "forbidden":
        return envelope_error(403, "KEY_PERMISSION_DENIED", "This API key lacks the permission to list tasks")
    if mode == "garbage":
        return web.json_response({"success": True, "data": {"tasks": "unavailable"}, "pagination": None})
    return None


def _window(query: ListQuery, created: Sequence[float], now: float, sim: Account) -> tuple[int, int]:
    """Index range ``[lo, hi)`` of the tasks in the query's dates (and visible despite lag)."""
    skew = sim.clock_skew
    hi = bisect.bisect_right(created, now - sim.list_lag)
    if query.end is not None:
        hi = min(hi, bisect.bisect_left(created, query.end - skew))
    lo = 0 if query.start is None else bisect.bisect_left(created, query.start - skew)
    return lo, max(lo, hi)


def _passes(query: ListQuery, data: dict[str, Any]) -> bool:
    return (
        (query.status is None or data["status"] == query.status)
        and (query.provider is None or data["provider"] == query.provider)
        and (query.model is None or data["model"] == query.model)
    )


def _shown_at(sim: Account, task: SimTask, seen_at: float) -> float:
    """The time a list item shows ``task`` at: just before its end during ``list_end_lag``."""
    end = task.end if task.cancelled_at is None else min(task.end, task.cancelled_at)
    return end - 1e-3 if end <= seen_at < end + sim.list_end_lag else seen_at


def list_body(sim: Account, query: ListQuery, now: float) -> dict[str, Any]:
    """The answer's body: one page of items, newest first, and ``pagination``."""
    tasks, created = sim.ordered()
    lo, hi = _window(query, created, now, sim)
    seen_at = now - sim.list_lag
    start = hi if query.after is None else max(lo, min(hi, query.after - 1))  # seq n is index n-1
    page: list[tuple[int, dict[str, Any]]] = []
    total = more = 0
    for index in range(hi - 1, lo - 1, -1):
        task = tasks[index]
        if (query.provider is not None and task.spec.provider != query.provider) or (
            query.model is not None and task.spec.model != query.model
        ):
            continue
        if query.status is None and (index >= start or len(page) == query.limit):
            total, more = total + 1, more + (index < start)  # counted without rendering
            continue
        data = sim.data(task, _shown_at(sim, task, seen_at), view="list")
        if not _passes(query, data):
            continue
        total += 1
        if index >= start:
            continue
        if len(page) < query.limit:
            page.append((task.seq, data))
        else:
            more += 1
    cursor = encode_cursor(page[-1][0], page[-1][1]["created_at"]) if page and more else None
    pagination = {"cursor": cursor, "hasMore": bool(more), "total": total}
    return {"success": True, "data": [d for _, d in page], "pagination": pagination}
