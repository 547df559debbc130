"""A watcher's read-outs of its journal: history, events, saved files, latency analysis.

The journal is read as committed (never waiting for writes), with what still waits to be
written (or what ``stop()`` could not write) added; after ``stop()`` a closed SQLite journal
is opened again from its file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..journal.memory import MemoryStore
from ..journal.protocol import Store, Unwritten, with_pending
from ..journal.sqlite import SQLiteStore
from .tracked import Lifecycle, TrackedSet

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Analysis"]


class Analysis:
    """History and analysis of one watcher's tasks."""

    def __init__(self, tracked: TrackedSet) -> None:
        self._tracked = tracked

    def unjournalled(self) -> Unwritten:
        """What is known but not (yet) in the journal: waiting to be written, or left by ``stop()``."""
        tracked = self._tracked
        if not tracked.open:
            return tracked.unwritten or Unwritten([], [], [])
        return tracked.engine.pending(tracked.spec.store)

    @contextlib.contextmanager
    def journal(self) -> Iterator[Store]:
        """The journal as committed: the watcher's, the memory journal even after ``stop()``,
        or the file opened again after it."""
        store = self._tracked.spec.store
        if self._tracked.state is not Lifecycle.CLOSED or isinstance(store, MemoryStore):
            yield store
            return
        path = getattr(store, "path", None)
        if path is None:
            raise RuntimeError("this watcher's journal was closed by stop()")
        reopened = SQLiteStore(path, create=False)
        try:
            yield reopened
        finally:
            reopened.close()

    def saved_files(self) -> dict[str, list[Path]]:
        """Task id -> the result files saved on this machine (``save_to``), from the journal."""
        ids = self._tracked.task_ids
        with self.journal() as store:
            rows = {(r.task_id, r.idx): r for r in store.results(ids)}
        wanted = set(ids)  # saved files still waiting for a busy journal count too
        rows.update(((r.task_id, r.idx), r) for r in self.unjournalled().saved if r.task_id in wanted)
        files: dict[str, list[Path]] = {}
        for row in sorted(rows.values(), key=lambda r: (r.task_id, r.idx)):
            files.setdefault(row.task_id, []).append(Path(row.local_path))
        return files

    def history(self) -> pd.DataFrame:
        """One row per task this watcher watches; see
        :data:`mh_notebook.history.HISTORY_COLUMNS` for the columns and dtypes.
        ``mh_notebook.read_history(journal)`` covers the whole journal."""
        from ..history import store_history

        tracked = self._tracked
        with self.journal() as store:
            return store_history(store, tracked.polls, task_ids=tracked.task_ids, pending=self.unjournalled())

    def events(self) -> pd.DataFrame:
        """One row per observed transition of this watcher's tasks, by observation time."""
        from ..history import events_frame

        with self.journal() as store:
            events = with_pending(store.events(), self.unjournalled().events)
            return events_frame([e for e in events if self._tracked.watches(e.task_id)])

    def latency_summary(self, by: str | tuple[str, ...] = ("provider", "model")) -> pd.DataFrame:
        """Count, success rate, p50/p90/p99 latency, mean queue/run time and top errors."""
        from ..analysis import latency_summary

        return latency_summary(self.history(), by)

    def plot_latency(self, by: str = "model", ax: Any = None) -> Any:
        """Latency distribution per model (or per ``by``), on matplotlib axes."""
        from ..analysis import plot_latency

        return plot_latency(self.history(), by, ax)

    def plot_timeline(self, ax: Any = None, limit: int = 60) -> Any:
        """Queue and run phases of recent tasks as bars (matplotlib axes)."""
        from ..analysis import plot_timeline

        return plot_timeline(self.history(), ax, limit)

    def to_parquet(self, path: str | Path) -> Path:
        """Write :meth:`history` to Parquet (needs pyarrow); returns the path."""
        self.history().to_parquet(path, index=False)
        return Path(path)
