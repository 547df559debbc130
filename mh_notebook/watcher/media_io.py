"""A watcher's media I/O: fresh result URLs, ``show`` and ``download``.

The bytes come from what the gallery kept or ``save_to`` saved (checksum verified) when they
are here, else from the API (a URL that works now, fetched again through the engine's budget).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelHunterError
from ..formats import media_kind, safe_filename
from ..models import Task
from ..records import TaskStatus
from ..results.files import read_verified
from ..view.output import put, put_html
from ..view.render import safe_text
from .analysis import Analysis
from .keeping import Keeping
from .tracked import TrackedSet
from .waiters import refuse_in_engine_thread

if TYPE_CHECKING:
    from ..view.panel import LiveResult

__all__ = ["MediaIO"]

_SHOW_TIMEOUT = 120.0
"""Seconds show() waits for a result's bytes (retries and a URL refresh included)."""


class MediaIO:
    """``refresh``, ``fresh_task``, ``show`` and ``download`` for one watcher."""

    def __init__(
        self, tracked: TrackedSet, keeping: Keeping, analysis: Analysis, *, embed_media: bool
    ) -> None:
        self._tracked, self._keeping, self._analysis = tracked, keeping, analysis
        self.embed_media = embed_media

    def refresh(self, task_id: str, timeout: float = 60.0) -> Task:
        """Fetch ``task_id`` now for fresh result URLs (within the shared request budget). Like
        ``show()``, ``download()``, ``wait()`` and ``as_completed()``, it raises
        ``RuntimeError`` at once in an engine's thread (a callback), where it would wait."""
        refuse_in_engine_thread(self._tracked.engine, "refresh()")
        return self._tracked.engine.refresh(task_id).result(timeout)

    def fresh_task(self, task_id: str, timeout: float = 60.0) -> Task:
        """The task with result URLs that work now: the known one if its URLs answer,
        else fetched again (the server's answer decides, never a guessed lifetime)."""
        refuse_in_engine_thread(self._tracked.engine, "fresh_task()")
        from ..results.download import urls_work

        state = self._tracked.engine.state(task_id)
        task = state.task if state is not None else None
        if task is not None and task.status == TaskStatus.SUCCEEDED and urls_work(task.result):
            return task
        return self.refresh(task_id, timeout)

    def show(self, task_id: str, *, embed: bool | None = None, embed_limit: int | None = None) -> None:
        """Display a task's media inline (Video/Image/Audio by format).

        With the panel (``display="auto"`` in Jupyter, or ``"widget"``), a succeeded result
        of at most ``inline_limit`` bytes is shown through ipywidgets' binary media widgets,
        as the gallery's are: page reloads and second tabs get the bytes from the kernel for
        its life, never from the expiring URL. The bytes are the ones the gallery kept or
        ``save_to`` saved (checksum verified), else fetched once through the engine.
        Saved notebooks show a thumbnail or a label instead.

        ``embed=True`` puts the bytes in the notebook (up to ``embed_limit``, default
        20 MB) so the media survive the URL's expiry: the bytes the gallery kept or
        ``save_to`` saved are used when there are some, else they are downloaded. Otherwise
        a URL that works now is used (the task is fetched again if the known one fails).
        When the API cannot give the task any more (past the provider's retention, or the
        watcher was stopped), a local copy is embedded.
        """
        from ..view.media import DEFAULT_EMBED_LIMIT, display_object

        refuse_in_engine_thread(self._tracked.engine, "show()")
        embed = self.embed_media if embed is None else embed
        live = self._live_results(task_id) if not embed else None
        if live is not None:
            for shown in live:
                put(shown)
            return
        known = self._tracked.tasks.get(task_id)
        local = self._local_copies(known) if known is not None and embed else None
        if known is not None and local is not None:
            task = known  # every byte is here: no request at all
        else:
            try:
                task = self.fresh_task(task_id)
            except (ModelHunterError, RuntimeError):
                local = self._local_copies(known) if known is not None else None
                if known is None or local is None:
                    raise
                task, embed = known, True
        if task.status != TaskStatus.SUCCEEDED or not task.result:
            put_html(f"<i>{safe_text(task_id)} is {safe_text(task.status)}: nothing to show</i>")
            return
        for index, item in enumerate(task.result):
            obj = display_object(
                item,
                embed=embed,
                embed_limit=embed_limit or DEFAULT_EMBED_LIMIT,
                refresh_url=self._url_refresher(task_id, index),
                data=local[index] if local is not None and index < len(local) else None,
                label=f"{task.model or 'result'} · {task_id}",
            )
            put(obj)

    def _live_results(self, task_id: str) -> list[LiveResult] | None:
        """The results of a succeeded task as live media widgets (the panel's kind of view),
        or ``None`` when one cannot be: no panel, a format not shown inline, over
        ``inline_limit``, the download failed, or the watcher was stopped."""
        from ..view.panel import LiveResult

        tracked = self._tracked
        task = tracked.tasks.get(task_id)
        if (
            not tracked.open
            or not tracked.flags.gallery_on
            or task is None
            or task.status != TaskStatus.SUCCEEDED
        ):
            return None
        if not task.result or not all(media_kind(item.format) for item in task.result):
            return None
        try:  # kept bytes, a saved file, or one download (a fresh URL through the engine)
            kept = tracked.engine.keep(task, self._keeping.spec()).result(_SHOW_TIMEOUT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return None
        if any(k.data is None for k in kept):
            return None
        caption = f"{task.model or 'result'} · {task_id}"
        return [LiveResult(k, caption, self._keeping.detail(k)) for k in kept]

    def _local_copies(self, task: Task) -> list[bytes] | None:
        """Every result's bytes without the network, or ``None`` if one is missing."""
        if task.status != TaskStatus.SUCCEEDED or not task.result:
            return None
        copies = [self._local_bytes(task.id, i) for i in range(len(task.result))]
        return None if any(c is None for c in copies) else [c for c in copies if c is not None]

    def _local_bytes(self, task_id: str, index: int) -> bytes | None:
        """A result's bytes without the network: kept in memory, or saved (checksum verified)."""
        with self._tracked.lock:
            kept = self._keeping.kept.get((task_id, index))
        if kept is not None and kept[0].data is not None:
            return kept[0].data
        with contextlib.suppress(Exception), self._analysis.journal() as store:
            for row in [*self._analysis.unjournalled().saved, *store.results([task_id])]:
                if row.task_id != task_id:
                    continue
                data = read_verified(row.local_path, row.sha256) if row.idx == index else None
                if data is not None:
                    return data
        return None

    def download(self, task_id: str, directory: str | Path = ".", *, progress: bool = True) -> list[Path]:
        """Save a task's result files into ``directory``; returns their paths. Streams to a
        temporary file and renames it (atomic), checks the size against ``size_bytes``, and
        gets a fresh URL when the old one has expired."""
        from ..results.download import download_file

        refuse_in_engine_thread(self._tracked.engine, "download()")
        task = self.fresh_task(task_id)
        if task.status != TaskStatus.SUCCEEDED:
            raise ModelHunterError(f"task {task_id!r} is {task.status}, not succeeded", task_id=task_id)
        paths = []
        for index, item in enumerate(task.result):
            target = Path(directory) / safe_filename(task.id, index, item.format)
            refresh = self._url_refresher(task_id, index)
            paths.append(
                download_file(
                    item.url, target, expected_size=item.size_bytes, refresh_url=refresh, progress=progress
                )
            )
        return paths

    def _url_refresher(self, task_id: str, index: int) -> Callable[[], str | None]:
        """A function that fetches the task again and returns result ``index``'s new URL."""

        def refresh() -> str | None:
            result = self.refresh(task_id).result
            return result[index].url if index < len(result) else None

        return refresh
