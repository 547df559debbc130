"""Latency summaries and plots of a history frame (:func:`~mh_notebook.history.history_frame`).

Pandas here as in :mod:`~mh_notebook.history`; matplotlib only inside the plot helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .records import ENDING, TaskStatus

__all__ = ["latency_summary", "plot_latency", "plot_timeline"]

_ENDING = [str(status) for status in ENDING]

_SUCCEEDED, _FAILED = TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value
"""The outcome count columns are named after their statuses."""


def latency_summary(history: pd.DataFrame, by: str | Sequence[str] = ("provider", "model")) -> pd.DataFrame:
    """Per group: tasks, outcomes, success rate, p50/p90/p99 latency, mean queue and run time,
    cost (the total, per success, and per second of video or audio output: NaN where the
    server said nothing) and the most common error codes. Latency percentiles are over
    succeeded tasks; cost per success is the whole group's cost (failures included) over
    its successes."""
    keys = [by] if isinstance(by, str) else list(by)
    ok = history["status"] == TaskStatus.SUCCEEDED
    ended = history["status"].isin(_ENDING)
    work = history.assign(
        _ok=ok,
        _failed=history["status"] == TaskStatus.FAILED,
        _ended=ended,
        _lat=history["latency_s"].where(ok),
    )
    grouped = work.groupby(keys, observed=True, sort=True)
    summary = pd.DataFrame(
        {
            "tasks": grouped.size(),
            _SUCCEEDED: grouped["_ok"].sum(),
            _FAILED: grouped["_failed"].sum(),
            "ended": grouped["_ended"].sum(),
            "latency_p50_s": grouped["_lat"].quantile(0.5),
            "latency_p90_s": grouped["_lat"].quantile(0.9),
            "latency_p99_s": grouped["_lat"].quantile(0.99),
            "mean_queue_s": grouped["queue_s"].mean(),
            "mean_run_s": grouped["run_s"].mean(),
            "mean_detection_delay_s": grouped["detection_delay_s"].mean(),
        }
    )
    summary["success_rate"] = summary[_SUCCEEDED] / summary["ended"].where(summary["ended"] > 0)
    summary["top_errors"] = grouped["error_code"].agg(_top_errors)
    summary = summary.join(_cost_summary(history, keys))
    order = [
        "tasks",
        _SUCCEEDED,
        _FAILED,
        "success_rate",
        "latency_p50_s",
        "latency_p90_s",
        "latency_p99_s",
    ]
    costs = ["total_cost_usd", "cost_per_success_usd", "cost_per_output_s_usd"]
    return summary[[*order, "mean_queue_s", "mean_run_s", "mean_detection_delay_s", *costs, "top_errors"]]


def _cost_summary(history: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group: what the server charged (NaN where it said nothing), per succeeded task, and
    per second of output (video and audio: succeeded tasks' cost over their ``duration_s``)."""
    cost = history["cost"].astype("float64")
    ok = history["status"] == TaskStatus.SUCCEEDED
    timed = ok & history["type"].isin(["video", "audio", "music"]) & history["duration_s"].gt(0)
    work = history[keys].assign(
        _cost=cost, _ok_cost=cost.where(ok), _timed_cost=cost.where(timed & cost.notna()),
        _timed_s=history["duration_s"].where(timed & cost.notna()), _ok=ok & cost.notna(),
    )  # fmt: skip
    grouped = work.groupby(keys, observed=True, sort=True)
    total = grouped["_cost"].sum(min_count=1)
    per_success = total / grouped["_ok"].sum().where(lambda n: n > 0)
    per_second = grouped["_timed_cost"].sum(min_count=1) / grouped["_timed_s"].sum(min_count=1)
    return pd.DataFrame(
        {"total_cost_usd": total, "cost_per_success_usd": per_success, "cost_per_output_s_usd": per_second}
    )


def _top_errors(codes: pd.Series, n: int = 3) -> str:
    counts = codes.dropna().astype(str).value_counts().head(n)
    return ", ".join(f"{code} ({count})" for code, count in counts.items())


def plot_latency(history: pd.DataFrame, by: str = "model", ax: Any = None) -> Any:
    """Box plot of succeeded tasks' latency per ``by`` (needs matplotlib); returns the axes."""
    import matplotlib.pyplot as plt

    ok = history[history["status"] == TaskStatus.SUCCEEDED]
    groups = [(str(k), g["latency_s"].dropna().to_numpy()) for k, g in ok.groupby(by, observed=True)]
    groups.sort(key=lambda kv: float(np.median(kv[1])) if len(kv[1]) else 0.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.35 * max(3, len(groups)) + 1))
    if groups:
        ax.boxplot([g for _, g in groups], orientation="horizontal", tick_labels=[k for k, _ in groups])
    ax.set_xlabel("latency (s, completed_at - created_at)")
    ax.set_title(f"Latency of succeeded tasks by {by}")
    return ax


_PHASE_COLOURS: dict[str, str] = {
    TaskStatus.SUCCEEDED: "#1a7f37",
    TaskStatus.FAILED: "#cf222e",
    TaskStatus.CANCELLED: "#bc4c00",
}


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
