"""The keeper: each result of a succeeded task fetched once, on the poller's own event loop
(a background job: it never holds up a poll), through a connection pool of its own that
never carries the API key (see :mod:`mh_notebook.results`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ..errors import APIError, ModelHunterError, NetworkError, RateLimitedError, ServerError
from ..formats import safe_filename, safe_url
from ..journal.protocol import JournalError, SavedResult, Store
from ..models import ResultItem, Task
from ..polling.poller import Poller
from ..records import TaskStatus
from .download import media_error
from .files import AtomicWriter, hash_file, write_atomically
from .kept import KeepSpec, KeptResult, thumbnail_data_uri

__all__ = ["Keeper"]

_CHUNK = 1 << 16
_ATTEMPTS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class _Fetched:
    data: bytes | None
    size: int | None
    sha256: str | None
    path: Path | None
    too_large: bool


class Keeper:
    """Keeps the results of succeeded tasks for one engine, on its poller's loop.

    ``concurrency`` downloads at a time; ``timeout`` seconds per network operation.
    """

    def __init__(self, poller: Poller, *, timeout: float = 60.0, concurrency: int = 2) -> None:
        self._poller = poller
        self._timeout, self._concurrency = timeout, concurrency
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._users: Counter[tuple[str, int]] = Counter()
        self._cache: weakref.WeakValueDictionary[tuple[str, int], KeptResult] = weakref.WeakValueDictionary()
        self.downloads = 0
        """Media requests sent so far (each retry counts)."""

    def __repr__(self) -> str:
        return f"Keeper(downloads={self.downloads}, in_memory={len(self._cache)})"

    def keep(self, task: Task, spec: KeepSpec) -> concurrent.futures.Future[list[KeptResult]]:
        """Keep every result of ``task`` (succeeded) as ``spec`` asks; a future of what was kept."""
        return self._poller.spawn(lambda: self.keep_task(task, spec))

    async def keep_task(self, task: Task, spec: KeepSpec) -> list[KeptResult]:
        """Keep every result of ``task`` (on the poller's loop), one after the other."""
        return [await self._keep_item(task, i, item, spec) for i, item in enumerate(task.result)]

    async def aclose(self) -> None:
        """Close the connection pool (the poller calls this when it stops)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ----------------------------------------------------------- one result
    async def _keep_item(self, task: Task, index: int, item: ResultItem, spec: KeepSpec) -> KeptResult:
        """One result, one at a time per result (a second watcher finds the first one's bytes)."""
        key = (task.id, index)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                return await self._keep_safely(task, index, item, spec)
        finally:
            self._users[key] -= 1
            if self._users[key] <= 0:
                del self._users[key], self._locks[key]

    async def _keep_safely(self, task: Task, index: int, item: ResultItem, spec: KeepSpec) -> KeptResult:
        base = KeptResult(task.id, index, item.format, item.size_bytes)
        if safe_url(item.url) is None:
            return dataclasses.replace(base, problem="the result URL is not plain http(s)")
        try:
            kept = await self._obtain(task.id, index, item, spec, base)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure becomes a note on the tile
            problem = exc.message if isinstance(exc, ModelHunterError) else f"{type(exc).__name__}: {exc}"
            return dataclasses.replace(base, problem=problem)
        if kept.kind == "image" and kept.thumbnail is None:
            source: bytes | str | None = kept.data if kept.data is not None else kept.local_path
            if source is not None:
                kept.thumbnail = await _in_executor(thumbnail_data_uri, source)
        if kept.data is not None:
            self._cache[(task.id, index)] = kept
        return kept

    async def _obtain(
        self, task_id: str, index: int, item: ResultItem, spec: KeepSpec, base: KeptResult
    ) -> KeptResult:
        """From memory, from the file saved before, or from the network, in that order."""
        target = spec.save_to / safe_filename(task_id, index, item.format) if spec.save_to else None
        cached = self._cache.get((task_id, index))
        if cached is not None and cached.data is not None:
            return await self._from_memory(cached, spec, target)
        saved = await _saved_copy(spec.store, task_id, index, target) if target else None
        if saved is not None:
            return await self._from_disk(saved, spec, base)
        if target is None and item.size_bytes is not None and item.size_bytes > spec.inline_limit:
            return dataclasses.replace(base, too_large=True)  # nothing to save, too large to keep
        fetched = await self._download(
            task_id, index, item.url or "", spec.inline_limit, target, item.size_bytes
        )
        return dataclasses.replace(
            base,
            data=fetched.data,
            size_bytes=fetched.size if fetched.size is not None else base.size_bytes,
            sha256=fetched.sha256,
            local_path=str(fetched.path) if fetched.path else None,
            saved_at=time.time() if fetched.path else None,
            too_large=fetched.too_large,
        )

    async def _from_memory(self, cached: KeptResult, spec: KeepSpec, target: Path | None) -> KeptResult:
        """Another watcher's bytes: shared, and written to this watcher's ``save_to`` if needed."""
        data = cached.data or b""
        kept = dataclasses.replace(cached, local_path=None, saved_at=None, problem=None)
        if len(data) > spec.inline_limit:
            kept.data, kept.too_large = None, True
        if target is not None:
            saved = await _saved_copy(spec.store, cached.task_id, cached.index, target)
            if saved is None:
                await _in_executor(write_atomically, target, data)
            kept.local_path = str(target)
            kept.saved_at = saved.saved_at if saved is not None else time.time()
        return kept

    async def _from_disk(self, saved: SavedResult, spec: KeepSpec, base: KeptResult) -> KeptResult:
        """A file saved before (checksum verified): read back if small enough, never downloaded."""
        kept = dataclasses.replace(
            base,
            size_bytes=saved.size_bytes,
            sha256=saved.sha256,
            local_path=saved.local_path,
            saved_at=saved.saved_at,
        )
        if saved.size_bytes <= spec.inline_limit:
            kept.data = await _in_executor(Path(saved.local_path).read_bytes)
        else:
            kept.too_large = spec.inline_limit > 0
        return kept

    # -------------------------------------------------------------- network
    async def _download(
        self, task_id: str, index: int, url: str, limit: int, target: Path | None, expected: int | None
    ) -> _Fetched:
        """Fetch with retries: a 403 gets a fresh URL from the API once; 429/5xx and network
        errors are tried again after a short backoff."""
        refreshed = False
        for attempt in range(1, _ATTEMPTS + 2):
            try:
                return await self._stream(url, limit, target, expected)
            except (RateLimitedError, ServerError, httpx.TransportError) as exc:  # worth another try
                if attempt >= _ATTEMPTS:
                    raise NetworkError(f"result download failed: {type(exc).__name__}: {exc}") from None
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
            except APIError as exc:
                if exc.status_code != 403:
                    raise
                if refreshed:  # signed URLs expire: one fresh URL from the API, no more
                    raise APIError(
                        "the result URL answered 403 even after a refresh", status_code=403
                    ) from None
                refreshed = True
                url = await self._fresh_url(task_id, index)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fresh_url(self, task_id: str, index: int) -> str:
        """The task fetched again through the poller (the API's request budget applies)."""
        task = await asyncio.wrap_future(self._poller.refresh(task_id))
        item = (
            task.result[index] if task.status == TaskStatus.SUCCEEDED and index < len(task.result) else None
        )
        url = safe_url(item.url if item else None)
        if url is None:
            raise ModelHunterError(
                f"after a refresh the task is {task.status} with no usable URL", task_id=task_id
            )
        return url

    async def _stream(self, url: str, limit: int, target: Path | None, expected: int | None) -> _Fetched:
        client, slots = self._connection()
        async with slots:
            self.downloads += 1
            async with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise media_error(response.status_code, "the result download")
                sink = await _in_executor(_Sink, limit, target) if target else _Sink(limit, None)
                try:  # disk work in the executor: a slow disk never holds up the poller's loop
                    async for chunk in response.aiter_bytes(_CHUNK):
                        kept = await _in_executor(sink.write, chunk) if target else sink.write(chunk)
                        if not kept:
                            break  # too large to keep, and nothing to save: stop here
                except BaseException:
                    sink.discard()
                    raise
        return await sink.finish(expected)

    def _connection(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """The pool (no API key, ever: media live on other hosts) and the download slots."""
        if self._client is None or self._slots is None:
            timeout = httpx.Timeout(self._timeout, connect=min(10.0, self._timeout))
            self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=True)
            self._slots = asyncio.Semaphore(self._concurrency)
        return self._client, self._slots


class _Sink:
    """Where a download goes: its checksum and file (:class:`AtomicWriter`), and its bytes in
    memory up to ``limit``."""

    def __init__(self, limit: int, target: Path | None) -> None:
        self.limit = limit
        self.writer = AtomicWriter(target)
        self.buffer: bytearray | None = bytearray() if limit > 0 else None
        self.overflowed = False
        self.stopped = False

    def write(self, chunk: bytes) -> bool:
        """Take one chunk; False when there is no point reading on (too large, nothing to save)."""
        self.writer.write(chunk)
        if self.buffer is not None:
            if self.writer.size <= self.limit:
                self.buffer += chunk
            else:
                self.buffer, self.overflowed = None, True
        if self.writer.target is not None:
            return True
        if self.buffer is None:
            self.stopped = True
            return False
        return True

    async def finish(self, expected: int | None) -> _Fetched:
        """Check the size, then fsync and rename the file into place (in the executor)."""
        if self.stopped:
            return _Fetched(None, None, None, None, too_large=True)
        size = self.writer.size
        if expected is not None and size != expected:
            self.discard()
            raise ModelHunterError(f"got {size} bytes of a result the API said has {expected}")
        checksum = await _in_executor(self.writer.commit) if self.writer.target else self.writer.commit()
        data = bytes(self.buffer) if self.buffer is not None else None
        return _Fetched(data, size, checksum.sha256, self.writer.target, too_large=self.overflowed)

    def discard(self) -> None:
        """Drop the temporary file (a failed or cancelled download leaves nothing behind)."""
        self.writer.discard()


# ------------------------------------------------------------ blocking helpers (executor)
async def _in_executor(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the loop's default executor (blocking file work, image decoding)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _saved_copy(store: Store, task_id: str, index: int, target: Path | None) -> SavedResult | None:
    """The journal's row for ``target`` if the file is still there with the same SHA-256."""
    if target is None:
        return None
    try:  # in the executor: the journal may be busy in another thread (never the poller's loop)
        rows = await _in_executor(store.results, [task_id])
    except JournalError:
        return None
    row = next((r for r in rows if r.idx == index and r.local_path == str(target)), None)
    if row is None:
        return None
    found = await _in_executor(hash_file, target)
    return row if found is not None and (found.sha256, found.size) == (row.sha256, row.size_bytes) else None
