"""The account's tasks as a DataFrame, from the list endpoint: :func:`list_tasks`.

No watcher and no journal: every page of ``GET /api/v1/tasks`` is read (newest first)
and turned into one row per task, with the columns of ``history()`` where they exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import pandas as pd

from .client import Client
from .history import HISTORY_COLUMNS
from .models import Task, TaskPage

__all__ = ["LIST_COLUMNS", "list_tasks", "tasks_frame"]

_SHARED = (
    "task_id",
    "base_url",
    "type",
    "provider",
    "model",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "queue_s",
    "run_s",
    "latency_s",
    "error_code",
    "error_message",
)
LIST_COLUMNS: dict[str, str] = {name: HISTORY_COLUMNS.get(name, "float64") for name in _SHARED} | {
    "cost": "float64",
    "progress": "float64",
    "original_task_id": "string",
}
"""The columns of :func:`list_tasks` and their dtypes, named and typed as ``history()``'s
where ``history()`` has them; ``metadata.<key>`` columns follow (``pandas.json_normalize``
names). ``queue_s``/``run_s`` are split at the server's ``started_at``."""

_BAR_AFTER_PAGES = 3
"""A progress bar is shown when the listing has more pages than this."""


def list_tasks(
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    *,
    status: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> pd.DataFrame:
    """The account's tasks created from ``since`` to before ``until`` as a DataFrame.

    Every page of the list endpoint is followed (100 tasks a request; a progress bar when
    there are more than three pages). Filters as :meth:`Client.list_tasks`; key and URL as
    for :class:`Client`. One row per task, newest first, with ``cost`` (USD),
    ``progress``, ``started_at``, ``original_task_id`` and one ``metadata.<key>`` column
    per metadata key, e.g. ``list_tasks(since="2026-11-23").groupby("model").cost.sum()``.
    """
    with Client(api_key, base_url) as client:
        pages = client.iter_pages(
            status=status, provider=provider, model=model, since=since, until=until, limit=100
        )
        first: dict[str, Task] = {}  # a task shown on two pages (pages shift as tasks are created) once
        for page in _with_bar(pages):
            for task in page.tasks:
                first.setdefault(task.id, task)
        return tasks_frame(list(first.values()), base_url=client.base_url)


def _with_bar(pages: Iterator[TaskPage]) -> Iterator[TaskPage]:
    """The pages, with a tqdm bar once the first page says there are many."""
    first = next(pages, None)
    if first is None:
        return
    expected = -(-(first.total or 0) // max(1, len(first.tasks)))
    if expected <= _BAR_AFTER_PAGES:
        yield first
        yield from pages
        return
    from tqdm.auto import tqdm

    with tqdm(total=expected, unit="page", desc="list_tasks", leave=False) as bar:
        for page in itertools.chain([first], pages):
            yield page
            bar.update(1)


def tasks_frame(tasks: Iterable[Task], *, base_url: str | None = None) -> pd.DataFrame:
    """Tasks (e.g. list items) as :func:`list_tasks`'s DataFrame."""
    rows = [_row(task, base_url) for task in tasks]
    frame = pd.DataFrame.from_records(rows, columns=list(LIST_COLUMNS))
    times = [name for name, dtype in LIST_COLUMNS.items() if dtype.startswith("datetime64")]
    frame = frame.astype({n: d for n, d in LIST_COLUMNS.items() if n not in times})
    for name in times:
        frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[ns, UTC]")
    seconds = {"queue_s": ("created_at", "started_at"), "run_s": ("started_at", "completed_at")}
    seconds["latency_s"] = ("created_at", "completed_at")
    for name, (start, end) in seconds.items():
        frame[name] = (frame[end] - frame[start]).dt.total_seconds().astype("float64")
    metadata = pd.json_normalize([{"metadata": task.metadata or {}} for task in tasks] if rows else [])
    metadata = metadata[[c for c in metadata.columns if c.startswith("metadata.")]]
    return pd.concat([frame, metadata.set_axis(frame.index)], axis=1) if len(metadata.columns) else frame


def _row(task: Task, base_url: str | None) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "base_url": base_url,
        "type": task.type,
        "provider": task.provider,
        "model": task.model,
        "status": str(task.status),
        "created_at": task.created_at,
        "started_at": task.started_at,
        "completed_at": task.completed_at,
        "error_code": task.error.code if task.error else None,
        "error_message": task.error.message if task.error else None,
        "cost": task.cost,
        "progress": task.progress,
        "original_task_id": task.original_task_id,
    }
