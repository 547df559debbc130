"""Task histories as pandas DataFrames (summaries and plots of them: :mod:`~mh_notebook.analysis`).

With :mod:`~mh_notebook.analysis`, the only module that imports pandas. Frames
are built column-wise from the journal's events with vectorised group-bys, so a
history of 100,000 tasks stays cheap (see ``benchmarks/history_build.py``).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .journal.factory import open_store
from .journal.memory import MemoryStore
from .journal.protocol import SavedResult, Store, Unwritten, Watched, with_pending
from .records import (
    ENDING,
    NOT_FOUND,
    NUMERIC_FIELDS,
    PER_TASK_FIELDS,
    REDUCED_COLUMNS,
    SERVER_FIELDS,
    Event,
    TaskStatus,
)

__all__ = [
    "HISTORY_COLUMNS",
    "events_frame",
    "history_frame",
    "read_history",
]

_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate: JSON may hold one (``\\ud800``), UTF-8 text (Arrow, a DataFrame) may not."""

_CATEGORIES = ("type", "provider", "model", "status", "format", "error_code")
_TIMES = ("created_at", "first_seen_at", "started_at", "completed_at")
HISTORY_COLUMNS: dict[str, str] = {
    "task_id": "string",
    "base_url": "category",
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
    "split_from": "category",
    "latency_s": "float64",
    "predicted_latency_s": "float64",
    "estimated_seconds": "float64",
    "detection_delay_s": "float64",
    "polls": "Int64",
    "n_results": "Int64",
    "format": "category",
    "duration_s": "float64",
    "size_bytes": "Int64",
    "local_path": "string",
    "error_code": "category",
    "error_message": "string",
    NOT_FOUND: "bool",
    "cost": "float64",
    "original_task_id": "string",
}
"""The columns of :func:`history_frame` and their dtypes (an empty history has them too).
``base_url`` is the API the task was watched against (missing if it never was);
``predicted_latency_s`` the poller's first prediction of ``latency_s`` (NaN if none was made);
``local_path`` the file the first result was saved to (``TaskWatcher(save_to=...)``; missing
if it was not saved); ``started_at`` when the task started running, as the server said it
(list items carry it) or else as first observed, and ``split_from`` says which (``"server"``
or ``"observed"``): ``queue_s`` and ``run_s`` split ``latency_s`` there; ``estimated_seconds``
the server's estimate at creation; ``cost`` the USD charged, if the server said;
``original_task_id`` the task a retry retries. A ``metadata.<key>`` column follows for each
key of the tasks' creation ``metadata`` (named as ``pandas.json_normalize`` names them)."""


def _micros(seconds: Any) -> Any:
    """Epoch seconds as whole microseconds (floats holding integers): exact differences (a
    server's absurd time overflows to infinity quietly, and is then left out as missing)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.round(np.asarray(seconds, dtype="float64") * 1e6)


_EPOCH_RANGE = 9.2e9
"""Epoch seconds a nanosecond timestamp can hold (1678 to 2261): a server's time outside is missing."""


def _utc(seconds: pd.Series) -> pd.Series:
    micros = pd.Series(_micros(seconds), index=seconds.index)
    micros = micros.where(micros.abs() < _EPOCH_RANGE * 1e6)  # a year-3000 timestamp never breaks a history
    return pd.to_datetime(micros, unit="us", utc=True).astype("datetime64[ns, UTC]")


_FIELDS = [f for f in Event._fields if f != "raw"]
_ENDING = [str(status) for status in ENDING]
_PER_TASK = ["task_id", *PER_TASK_FIELDS]


def columns_of(events: Sequence[Sequence[Any]]) -> dict[str, Sequence[Any]]:
    """Events (rows) as columns, the shape :func:`reduce_events` reads."""
    if not events:
        return dict.fromkeys(_FIELDS, ())
    return dict(zip(Event._fields, zip(*events, strict=True), strict=False))


def _event_columns(columns: Mapping[str, Sequence[Any]], names: Sequence[str] = _FIELDS) -> pd.DataFrame:
    """Floats for numbers, plain objects for text (typed later, once per task)."""
    data: dict[str, Any] = {}
    for name in names:
        values = columns[name]
        if name in NUMERIC_FIELDS:
            data[name] = np.array(values, dtype="float64")
        else:
            data[name] = pd.Series(np.array(values, dtype=object), dtype=object)
    return pd.DataFrame(data, columns=list(names))


def _take(values: Sequence[Any], positions: Sequence[int]) -> list[Any]:
    """``values`` at ``positions`` (C-speed gather for plain lists)."""
    if len(positions) == 0:
        return []
    if len(positions) == 1:
        return [values[positions[0]]]
    return list(operator.itemgetter(*positions)(values))


def reduce_events(columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """One row per task with :data:`REDUCED_COLUMNS`, from event columns (vectorised).

    Only the columns that decide the reduction are converted for every event; the rest
    are gathered at each task's last informative event only. Each event is expected once,
    as a journal holds them (:func:`~mh_notebook.journal.protocol.with_pending` merges without repeats).
    """
    codes, uniques = pd.factorize(np.array(columns["task_id"], dtype=object), sort=False)
    status = np.array(columns["status"], dtype=object)
    observed = pd.Series(np.array(columns["observed_at"], dtype="float64"))
    seq = np.arange(len(status))
    last_any = pd.Series(seq).groupby(codes, sort=True).max()
    keep = status != TaskStatus.EXPIRED
    informative = pd.Series(seq[keep]).groupby(codes[keep]).max()
    last = informative.reindex(last_any.index).fillna(last_any).astype("int64").tolist()

    def first_where(mask: Any) -> Any:
        return observed[mask].groupby(codes[mask]).min().reindex(last_any.index).to_numpy()

    picked = {name: _take(columns[name], last) for name in _PER_TASK if name != "task_id"}
    reduced = _event_columns({**picked, "task_id": list(uniques), "observed_at": [], "polls": []}, _PER_TASK)
    reduced["base_url"] = np.full(len(reduced), None, dtype=object)
    reduced["first_seen_at"] = observed.groupby(codes).min().to_numpy()
    reduced["started_at"] = first_where(status == TaskStatus.RUNNING)
    reduced["seen_end"] = first_where(np.isin(status, _ENDING))
    reduced["polls"] = pd.Series(np.array(columns["polls"], dtype="float64")).groupby(codes).max().to_numpy()
    reduced["predicted_latency_s"] = np.full(len(reduced), np.nan)
    reduced["local_path"] = np.full(len(reduced), None, dtype=object)
    for name in SERVER_FIELDS:
        reduced[name] = _latest_sent(columns.get(name, ()), codes, seq, last_any.index)
    return reduced[list(REDUCED_COLUMNS)]


def _latest_sent(values: Sequence[Any], codes: Any, seq: Any, tasks: pd.Index) -> Any:
    """Per task, the value of its latest event that sent one (``None`` where none did)."""
    out = np.full(len(tasks), None, dtype=object)
    if len(values) == 0:
        return out
    sent = pd.notna(np.array(values, dtype=object))
    if not sent.any():
        return out
    latest = pd.Series(seq[sent]).groupby(codes[sent]).max()
    out[latest.index.to_numpy()] = _take(values, latest.tolist())
    return out


def events_frame(events: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """One row per observed transition, ordered by observation time.

    Columns: ``task_id``, ``status``, ``observed_at``, ``created_at``, ``completed_at``
    (UTC datetimes) and ``polls`` (requests spent on the task by then).
    """
    raw = _event_columns(columns_of(events))
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
    events: Sequence[Sequence[Any]] | pd.DataFrame,
    watched: Sequence[Watched] = (),
    live_polls: Mapping[str, int] | None = None,
    results: Sequence[SavedResult] = (),
) -> pd.DataFrame:
    """One row per task, from events (or an already reduced frame), the watched list and the
    saved results (``local_path``: the first result's file).

    ``latency_s`` is exactly ``completed_at - created_at`` (server clock);
    ``queue_s``/``run_s`` split it at ``started_at``: the server's when it sent one, else the
    first observation of ``running`` clamped into ``[created_at, completed_at]`` (whole-second
    server times and the clock offset's error cannot make ``run_s`` negative or ``queue_s``
    exceed ``latency_s``); ``split_from`` says which;
    ``detection_delay_s`` is the first observation of the end minus ``completed_at``;
    ``polls`` counts requests (``live_polls`` from a running watcher wins when larger).
    A task whose last answer was ``expired`` is reported from its last answer before
    that, i.e. ``succeeded`` with its result (only the URL had expired).
    """
    reduced = events if isinstance(events, pd.DataFrame) else reduce_events(columns_of(events))
    frame = reduced.set_index("task_id")
    frame = _add_watched(frame, watched)
    frame = _add_results(frame, results)
    if live_polls:
        live = pd.Series(live_polls, dtype="float64").reindex(frame.index)
        frame["polls"] = np.fmax(frame["polls"].astype("float64"), live)
    server = frame["server_started_at"].astype("float64")
    observed = frame["started_at"].astype("float64")
    split = pd.Series(None, index=frame.index, dtype=object)
    frame["split_from"] = split.mask(observed.notna(), "observed").mask(server.notna(), "server")
    frame["started_at"] = server.fillna(observed)
    created, started, completed = (_micros(frame[c]) for c in ("created_at", "started_at", "completed_at"))
    started = _within(started, created, completed)
    frame["started_at"] = started / 1e6
    frame["latency_s"] = (completed - created) / 1e6
    frame["queue_s"] = (started - created) / 1e6
    frame["run_s"] = (completed - started) / 1e6
    frame["detection_delay_s"] = (_micros(frame["seen_end"]) - completed) / 1e6
    frame[NOT_FOUND] = (frame["status"] == NOT_FOUND).fillna(False).astype("bool")
    frame = frame.rename_axis("task_id").reset_index()  # first seen first (ties by id), whatever the source
    frame = frame.sort_values(["first_seen_at", "task_id"], kind="stable", ignore_index=True)
    return _with_metadata(_typed(frame), frame["metadata"].to_numpy())


def _with_metadata(frame: pd.DataFrame, metadata: Any) -> pd.DataFrame:
    """One ``metadata.<key>`` column per key of the tasks' metadata (JSON text or missing);
    nested objects give dotted keys, as ``pandas.json_normalize`` names them.

    Each distinct text is parsed once (a batch's tasks mostly share their tags)."""
    present = np.flatnonzero([isinstance(text, str) for text in metadata])
    if len(present) == 0:
        return frame
    codes, texts = pd.factorize(np.asarray(metadata, dtype=object)[present])
    flats = [_flatten(obj) for obj in _json_objects(list(texts))]
    names = dict.fromkeys(name for flat in flats for name in flat)
    if not names:
        return frame
    keys = pd.DataFrame({name: [flat.get(name) for flat in flats] for name in names})
    keys = keys.take(codes).add_prefix("metadata.").set_axis(frame.index[present])
    return pd.concat([frame, keys.reindex(frame.index)], axis=1)


def _flatten(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj``'s leaves by dotted key, every text in keys and values :func:`_text`-cleaned.
    A loop, not recursion: metadata nested 500 deep (valid JSON) broke ``history()`` for
    every task (attack s25)."""
    flat: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [(_text(k), v) for k, v in reversed(obj.items())]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict) and value:
            stack.extend((f"{key}.{_text(k)}", v) for k, v in reversed(value.items()))
        else:
            flat[key] = _clean(value)
    return flat


def _clean(value: Any) -> Any:
    """A leaf with every text in it :func:`_text`-cleaned (lists and objects in lists too)."""
    if isinstance(value, str):
        return _text(value)
    if not isinstance(value, list | dict):
        return value
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]  # (container, key, value): a loop
    while stack:
        container, key, item = stack.pop()
        if isinstance(item, str):
            container[key] = _text(item)
        elif isinstance(item, list):
            copy = list(item)
            container[key] = copy
            stack.extend((copy, i, v) for i, v in enumerate(copy))
        elif isinstance(item, dict):
            fresh: dict[str, Any] = {}
            container[key] = fresh
            for k, v in item.items():
                fresh[_text(k)] = v
                stack.append((fresh, _text(k), v))
    return root[0]


def _text(text: str) -> str:
    """Metadata text a DataFrame holds: a lone surrogate (valid JSON: ``"\\ud800"``, but no
    UTF-8 text) written as its escape. Unlike U+FFFD the escape keeps keys apart: ``run`` plus
    two different lone surrogates were one column, two values lost (attack s25)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(text) else text


def _json_objects(texts: list[str]) -> list[dict[str, Any]]:
    """JSON objects from their texts (one parse for all; anything but an object is ``{}``)."""
    try:
        values = json.loads("[" + ",".join(texts) + "]")
        if len(values) != len(texts):  # a text holding "1, 2" parses as two values
            raise ValueError("one text per value")
    except (ValueError, RecursionError):
        values = [_json_value(text) for text in texts]
    return [value if isinstance(value, dict) else {} for value in values]


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # nested past the parser's depth: no columns
        return None


def _within(started: Any, created: Any, completed: Any) -> Any:
    """First sightings of ``running`` moved into the task's life ``[created, completed]``.

    A server that reports whole seconds floors both ends (up to 1 s early), and the clock
    offset that puts an observation on the server's clock is an estimate: the running
    observation can fall after ``completed_at`` (``run_s < 0``) or before ``created_at``.
    A task cannot start outside its own life, so the split point is clamped; where an end
    is unknown, that side is left as observed.
    """
    clamped = np.fmin(np.fmax(started, created), completed)  # fmax/fmin ignore a NaN bound
    return np.where(np.isnan(started), np.nan, clamped)


def _add_watched(frame: pd.DataFrame, watched: Sequence[Watched]) -> pd.DataFrame:
    """Rows for watched tasks never observed; base URLs, first sightings and predictions from
    ``watched``."""
    if not watched:
        return frame
    table = pd.DataFrame.from_records(watched, columns=list(Watched._fields)).drop_duplicates("task_id")
    table = table.set_index("task_id")
    seen = table["first_seen_at"].astype("float64")
    frame = frame.reindex(frame.index.append(seen.index.difference(frame.index, sort=False)))
    frame["first_seen_at"] = np.fmin(frame["first_seen_at"].astype("float64"), seen.reindex(frame.index))
    frame["base_url"] = table["base_url"].reindex(frame.index)
    predicted = table["predicted_latency_s"].astype("float64").reindex(frame.index)
    frame["predicted_latency_s"] = predicted.fillna(frame["predicted_latency_s"].astype("float64"))
    return frame


def _add_results(frame: pd.DataFrame, results: Sequence[SavedResult]) -> pd.DataFrame:
    """``local_path`` of each task's first result from the saved results (kept where none)."""
    firsts = {r.task_id: r.local_path for r in results if r.idx == 0}
    if firsts:
        saved = pd.Series(firsts, dtype=object).reindex(frame.index)
        frame["local_path"] = saved.where(saved.notna(), frame["local_path"])
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
        elif dtype == "category":
            out[col] = _categorical(values)
        else:
            out[col] = values.astype(dtype)
    return out


def _categorical(values: pd.Series) -> pd.Series:
    """A categorical column; all missing, its (empty) categories are objects whatever the source
    (text read from SQLite and text gathered in memory infer different empty dtypes)."""
    typed = values.astype("category")
    if len(typed.cat.categories) == 0:
        return typed.cat.set_categories(pd.Index([], dtype=object))
    return typed


def reduced_journal(store: Store) -> pd.DataFrame:
    """The journal reduced to one row per task: by the journal where it can
    (``capabilities.reduced_rows``: SQLite and PostgreSQL), in pandas otherwise."""
    if store.capabilities.reduced_rows:
        return pd.DataFrame.from_records(store.reduced_rows(), columns=list(REDUCED_COLUMNS))
    if isinstance(store, MemoryStore):
        return reduce_events(store.columns())
    return reduce_events(columns_of(store.events()))


def store_history(
    store: Store,
    live_polls: Mapping[str, int] | None = None,
    task_ids: Collection[str] | None = None,
    pending: Unwritten | None = None,
) -> pd.DataFrame:
    """The history frame of an open store (``live_polls`` from a running watcher, if any).

    With ``task_ids``, only those tasks (the journal is reduced first, then filtered).
    ``pending`` is what is known but not in the journal yet (a busy journal): added to what
    the journal holds, and reduced in pandas (the SQL reduction gives the same frame).
    """
    if pending is not None and any(pending):
        reduced = reduce_events(columns_of(with_pending(store.events(), pending.events)))
        in_query = False
    else:
        reduced = reduced_journal(store)
        in_query = store.capabilities.reduced_rows  # the journal joins the watched list and results itself
    watched = [] if in_query else [*store.watched(), *(pending.watched if pending else [])]
    results = [] if in_query else [*store.results(task_ids), *(pending.saved if pending else [])]
    if task_ids is not None:
        wanted = set(task_ids)
        reduced = reduced[reduced["task_id"].isin(wanted)]  # hashed: thousands of ids stay cheap
        watched = [w for w in watched if w.task_id in wanted]
    return history_frame(reduced, watched, live_polls, results)


def read_history(store: Store | str | Path) -> pd.DataFrame:
    """The history frame of a whole journal (a path or a store): no watcher, no key needed.

    A path must name an existing journal (``JournalError`` otherwise; nothing is created).
    A file this process cannot write (read-only media, a colleague's copy) is read as it
    is, and so is one of an older schema whose lock another process holds: upgraded in a
    copy in memory, the file left untouched.
    """
    opened = open_store(store, create=False)
    try:
        return store_history(opened)
    finally:
        if opened is not store:
            opened.close()
