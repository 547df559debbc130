"""Task histories as pandas DataFrames, latency summaries and plots.

The only module that imports pandas (matplotlib only inside the plot helpers). Frames
are built column-wise from the journal's events with vectorised group-bys, so a
history of 100,000 tasks stays cheap (see ``benchmarks/history_build.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .store import Event, SQLiteStore, Store, Watched, open_store

__all__ = [
    "HISTORY_COLUMNS",
    "events_frame",
    "history_frame",
    "latency_summary",
    "plot_latency",
    "plot_timeline",
    "read_history",
]

_CATEGORIES = ("type", "provider", "model", "status", "format", "error_code")
_TIMES = ("created_at", "first_seen_at", "started_at", "completed_at")
HISTORY_COLUMNS: dict[str, str] = {
    "task_id": "string",
    "type": "category",
    "provider": "category",
    "model": "category",
    "status": "category",
    "created_at": "datetime64[ns, UTC]",
    "first_seen_at": "datetime64[ns, UTC]",
    "started_at": "datetime64[ns, UTC]",
    "completed_at": "datetime64[ns, UTC]",
    "queue_s": "float64",
    "run_s": "float64",
    "latency_s": "float64",
    "detection_delay_s": "float64",
    "polls": "Int64",
    "n_results": "Int64",
    "format": "category",
    "duration_s": "float64",
    "size_bytes": "Int64",
    "error_code": "category",
    "error_message": "string",
    "not_found": "bool",
}
"""The columns of :func:`history_frame` and their dtypes (an empty history has them too)."""

_EVENT_COLUMNS = [f for f in Event._fields if f != "raw"]
_TERMINAL = ["succeeded", "failed", "cancelled"]


def _utc(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds.astype("float64"), unit="s", utc=True)


def _raw_events(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    records: Any = rows
    frame = pd.DataFrame.from_records(records, columns=list(Event._fields), exclude=["raw"], nrows=len(rows))
    for col in ("observed_at", "created_at", "completed_at", "duration_s"):
        frame[col] = frame[col].astype("float64")
    return frame


def events_frame(events: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """One row per observed transition, ordered by observation time.

    Columns: ``task_id``, ``status``, ``observed_at``, ``created_at``, ``completed_at``
    (UTC datetimes) and ``polls`` (requests spent on the task by then).
    """
    raw = _raw_events(events)
    frame = pd.DataFrame(
        {
            "task_id": raw["task_id"].astype("string"),
            "status": raw["status"].astype("category"),
            "observed_at": _utc(raw["observed_at"]),
            "created_at": _utc(raw["created_at"]),
            "completed_at": _utc(raw["completed_at"]),
            "polls": raw["polls"].astype("Int64"),
        }
    )
    return frame.sort_values("observed_at", kind="stable", ignore_index=True)


def history_frame(
    events: Sequence[Sequence[Any]],
    watched: Sequence[Watched] = (),
    live_polls: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """One row per task, from events (and the watched list, for tasks not yet observed).

    ``latency_s`` is exactly ``completed_at - created_at`` (server clock);
    ``queue_s``/``run_s`` split it at the first observation of ``running``;
    ``detection_delay_s`` is the first observation of the end minus ``completed_at``;
    ``polls`` counts requests (``live_polls`` from a running watcher wins when larger).
    A task whose last answer was ``expired`` is reported ``succeeded`` (its URL expired).
    """
    ev = _raw_events(events)
    by_task = ev.groupby("task_id", sort=False)
    last = by_task.last()
    frame = pd.DataFrame(index=pd.Index(last.index, name="task_id"))
    for col in (
        "type",
        "provider",
        "model",
        "format",
        "error_code",
        "error_message",
        "n_results",
        "duration_s",
        "size_bytes",
    ):
        frame[col] = last[col]
    frame["status"] = last["status"].replace({"expired": "succeeded"})
    frame["created_at"] = last["created_at"]
    frame["completed_at"] = last["completed_at"]
    frame["first_seen_at"] = by_task["observed_at"].min()
    frame["started_at"] = (
        ev.loc[ev["status"] == "running"].groupby("task_id", sort=False)["observed_at"].min()
    )
    seen_end = ev.loc[ev["status"].isin(_TERMINAL)].groupby("task_id", sort=False)["observed_at"].min()
    frame["polls"] = by_task["polls"].max()
    frame = _add_unobserved(frame, watched)
    if live_polls:
        live = pd.Series(live_polls, dtype="float64").reindex(frame.index)
        frame["polls"] = np.fmax(frame["polls"].astype("float64"), live)
    frame["latency_s"] = frame["completed_at"] - frame["created_at"]
    frame["queue_s"] = frame["started_at"] - frame["created_at"]
    frame["run_s"] = frame["completed_at"] - frame["started_at"]
    frame["detection_delay_s"] = seen_end.reindex(frame.index) - frame["completed_at"]
    frame["not_found"] = (frame["status"] == "not_found").fillna(False).astype("bool")
    return _typed(frame.reset_index())


def _add_unobserved(frame: pd.DataFrame, watched: Sequence[Watched]) -> pd.DataFrame:
    if not watched:
        return frame
    table = pd.DataFrame.from_records(watched, columns=list(Watched._fields)).drop_duplicates("task_id")
    seen = table.set_index("task_id")["first_seen_at"].astype("float64")
    frame = frame.reindex(frame.index.union(seen.index, sort=False))
    frame["first_seen_at"] = np.fmin(frame["first_seen_at"].astype("float64"), seen.reindex(frame.index))
    return frame


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    dtype: Any
    for col, dtype in HISTORY_COLUMNS.items():
        values: Any = frame[col] if col in frame else pd.Series(np.nan, index=frame.index)
        if col in _TIMES:
            out[col] = _utc(values)
        elif dtype == "Int64":
            out[col] = pd.array(values.astype("float64").round(), dtype="Int64")
        else:
            out[col] = values.astype(dtype)
    return out


def latency_summary(history: pd.DataFrame, by: str | Sequence[str] = ("provider", "model")) -> pd.DataFrame:
    """Per group: tasks, outcomes, success rate, p50/p90/p99 latency, mean queue and run time,
    and the most common error codes. Latency percentiles are over succeeded tasks."""
    keys = [by] if isinstance(by, str) else list(by)
    ok = history["status"] == "succeeded"
    ended = history["status"].isin(_TERMINAL)
    work = history.assign(
        _ok=ok, _failed=history["status"] == "failed", _ended=ended, _lat=history["latency_s"].where(ok)
    )
    grouped = work.groupby(keys, observed=True, sort=True)
    summary = pd.DataFrame(
        {
            "tasks": grouped.size(),
            "succeeded": grouped["_ok"].sum(),
            "failed": grouped["_failed"].sum(),
            "ended": grouped["_ended"].sum(),
            "latency_p50_s": grouped["_lat"].quantile(0.5),
            "latency_p90_s": grouped["_lat"].quantile(0.9),
            "latency_p99_s": grouped["_lat"].quantile(0.99),
            "mean_queue_s": grouped["queue_s"].mean(),
            "mean_run_s": grouped["run_s"].mean(),
            "mean_detection_delay_s": grouped["detection_delay_s"].mean(),
        }
    )
    summary["success_rate"] = summary["succeeded"] / summary["ended"].where(summary["ended"] > 0)
    summary["top_errors"] = grouped["error_code"].agg(_top_errors)
    order = [
        "tasks",
        "succeeded",
        "failed",
        "success_rate",
        "latency_p50_s",
        "latency_p90_s",
        "latency_p99_s",
    ]
    return summary[[*order, "mean_queue_s", "mean_run_s", "mean_detection_delay_s", "top_errors"]]


def _top_errors(codes: pd.Series, n: int = 3) -> str:
    counts = codes.dropna().astype(str).value_counts().head(n)
    return ", ".join(f"{code} ({count})" for code, count in counts.items())


def plot_latency(history: pd.DataFrame, by: str = "model", ax: Any = None) -> Any:
    """Box plot of succeeded tasks' latency per ``by`` (needs matplotlib); returns the axes."""
    import matplotlib.pyplot as plt

    ok = history[history["status"] == "succeeded"]
    groups = [(str(k), g["latency_s"].dropna().to_numpy()) for k, g in ok.groupby(by, observed=True)]
    groups.sort(key=lambda kv: float(np.median(kv[1])) if len(kv[1]) else 0.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.35 * max(3, len(groups)) + 1))
    if groups:
        ax.boxplot([g for _, g in groups], orientation="horizontal", tick_labels=[k for k, _ in groups])
    ax.set_xlabel("latency (s, completed_at - created_at)")
    ax.set_title(f"Latency of succeeded tasks by {by}")
    return ax


_PHASE_COLOURS = {"succeeded": "#1a7f37", "failed": "#cf222e", "cancelled": "#bc4c00"}


def plot_timeline(history: pd.DataFrame, ax: Any = None, limit: int = 60) -> Any:
    """Queue and run phases of the most recent tasks as horizontal bars; returns the axes."""
    import matplotlib.pyplot as plt

    frame = history.dropna(subset=["created_at"]).sort_values("created_at").tail(limit)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.22 * max(5, len(frame)) + 1))
    if frame.empty:
        return ax
    origin = frame["created_at"].min()
    start = (frame["created_at"] - origin).dt.total_seconds()
    queue = frame["queue_s"].fillna(0.0)
    run = frame["run_s"].fillna(frame["latency_s"].fillna(0.0) - queue)
    colours = [_PHASE_COLOURS.get(str(s), "#1f6feb") for s in frame["status"]]
    rows = np.arange(len(frame))
    ax.barh(rows, queue, left=start, color="#d0d7de", label="waiting (pending/queued)")
    ax.barh(rows, run, left=start + queue, color=colours, label="running → end")
    ax.set_yticks(
        rows,
        [f"{m} {t[-6:]}" for m, t in zip(frame["model"].astype(str), frame["task_id"], strict=True)],
        fontsize=7,
    )
    ax.set_xlabel("seconds since the first task was created")
    ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    return ax


def read_history(store: Store | str | Path) -> pd.DataFrame:
    """The history frame from a journal (a path or a store): no watcher, no key needed."""
    opened = open_store(store)
    try:
        rows = opened.event_rows() if isinstance(opened, SQLiteStore) else opened.events()
        return history_frame(rows, opened.watched())
    finally:
        if opened is not store:
            opened.close()
