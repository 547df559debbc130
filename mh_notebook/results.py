"""Results that outlive their URLs: each fetched once, kept in memory (bounded) and on disk.

A result's signed URL expires (15 minutes with ModelHunter); a notebook session lasts
hours and a saved notebook forever. When a task succeeds, the engine keeps each of its
results with a :class:`Keeper`, on the poller's own event loop (a background job: it never
holds up a poll), through a connection pool of its own that never carries the API key:

- the bytes of a result of at most ``inline_limit`` bytes stay in memory, for the live
  gallery (ipywidgets' binary widgets: page reloads and second tabs are served by the
  kernel, not by the expiring URL);
- with a ``save_to`` directory, the file is streamed there (a temporary file, fsync, then an
  atomic rename) with its SHA-256, for the journal's ``results`` table;
- an image gets a small JPEG thumbnail (Pillow) for the static view of saved notebooks.

A 403 (the URL expired) fetches the task again through the poller, which spends the API's
request budget like any poll, and retries once with the fresh URL. One download serves every
watcher: bytes in memory are shared through a weak cache, and a file already saved whose
checksum still matches the journal is not downloaded again (after a kernel restart, it is
read from disk). Blocking work (fsync, hashing a saved file, decoding an image) runs in
the loop's default executor.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import os
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from .errors import APIError, ModelHunterError, NetworkError
from .formats import media_kind, safe_filename, safe_url
from .journal.protocol import JournalError, SavedResult, Store
from .models import ResultItem, Task
from .poller import Poller

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "KeepSpec",
    "Keeper",
    "KeptResult",
    "thumbnail_data_uri",
]

DEFAULT_INLINE_LIMIT = 8_000_000
"""Bytes of one result kept in memory for the live gallery (larger ones get a note)."""
THUMBNAIL_SIDE = 128
"""Longest side (pixels) of an image's thumbnail in the static view."""
_CHUNK = 1 << 16
_ATTEMPTS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class KeepSpec:
    """What a watcher wants kept of each succeeded result."""

    inline_limit: int
    """Bytes of one result kept in memory (0: none, the watcher shows no gallery)."""
    save_to: Path | None
    """Directory every result is saved to, or ``None``."""
    store: Store
    """The watcher's journal: files it records as saved are not downloaded again."""


@dataclass(eq=False)
class KeptResult:
    """What was kept of one result (shared read-only between threads once returned)."""

    task_id: str
    index: int
    format: str | None
    size_bytes: int | None
    """The file's size once fetched, else what the API said."""
    data: bytes | None = None
    """The bytes, if at most the watcher's ``inline_limit``."""
    sha256: str | None = None
    local_path: str | None = None
    """Absolute path of the saved file (``save_to``)."""
    saved_at: float | None = None
    thumbnail: str | None = None
    """``data:image/jpeg;base64,...`` (images only, when the bytes or the file were at hand)."""
    too_large: bool = False
    """Over ``inline_limit``: not kept in memory."""
    problem: str | None = None
    """Why nothing could be kept (e.g. the download failed); ``None`` when all went well."""

    @property
    def kind(self) -> str | None:
        """``image``, ``video``, ``audio`` or ``None`` (another format)."""
        return media_kind(self.format)

    def saved(self) -> SavedResult | None:
        """The journal row of the saved file, if one was saved."""
        if self.local_path is None or self.sha256 is None or self.size_bytes is None:
            return None
        return SavedResult(
            self.task_id, self.index, self.local_path, self.sha256, self.size_bytes, self.saved_at or 0.0
        )


@dataclass(frozen=True)
class _Fetched:
    data: bytes | None
    size: int | None
    sha256: str | None
    path: Path | None
    too_large: bool


class _ExpiredError(Exception):
    """The media URL answered 403 (signed URLs expire)."""


class _TransientError(Exception):
    """A 429 or 5xx from the media server: worth another try."""


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
                await _in_executor(_write_atomically, target, data)
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
            except _ExpiredError:
                if refreshed:
                    raise APIError(
                        "the result URL answered 403 even after a refresh", status_code=403
                    ) from None
                refreshed = True
                url = await self._fresh_url(task_id, index)
            except (_TransientError, httpx.TransportError) as exc:
                if attempt >= _ATTEMPTS:
                    raise NetworkError(f"result download failed: {type(exc).__name__}: {exc}") from None
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fresh_url(self, task_id: str, index: int) -> str:
        """The task fetched again through the poller (the API's request budget applies)."""
        task = await asyncio.wrap_future(self._poller.refresh(task_id))
        item = task.result[index] if task.status == "succeeded" and index < len(task.result) else None
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
                _check(response)
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


def _check(response: httpx.Response) -> None:
    code = response.status_code
    if code == 403:
        raise _ExpiredError
    if code == 429 or code >= 500:
        raise _TransientError(f"HTTP {code}")
    if code >= 400:
        raise APIError(f"the result download answered HTTP {code}", status_code=code)


class _Sink:
    """Where a download goes: a SHA-256, bytes in memory up to ``limit``, a temporary file."""

    def __init__(self, limit: int, target: Path | None) -> None:
        self.limit, self.target = limit, target
        self.hash = hashlib.sha256()
        self.size = 0
        self.buffer: bytearray | None = bytearray() if limit > 0 else None
        self.overflowed = False
        self.stopped = False
        self.tmp: Path | None = None
        self.out: IO[bytes] | None = None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            self.tmp, self.out = Path(name), os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> bool:
        """Take one chunk; False when there is no point reading on (too large, nothing to save)."""
        self.size += len(chunk)
        self.hash.update(chunk)
        if self.buffer is not None:
            if self.size <= self.limit:
                self.buffer += chunk
            else:
                self.buffer, self.overflowed = None, True
        if self.out is not None:
            self.out.write(chunk)
            return True
        if self.buffer is None:
            self.stopped = True
            return False
        return True

    async def finish(self, expected: int | None) -> _Fetched:
        """Check the size, then fsync and rename the file into place (in the executor)."""
        if self.stopped:
            return _Fetched(None, None, None, None, too_large=True)
        try:
            if expected is not None and self.size != expected:
                raise ModelHunterError(f"got {self.size} bytes of a result the API said has {expected}")
            if self.out is not None and self.tmp is not None and self.target is not None:
                await _in_executor(_commit, self.out, self.tmp, self.target)
        except BaseException:
            self.discard()
            raise
        data = bytes(self.buffer) if self.buffer is not None else None
        return _Fetched(data, self.size, self.hash.hexdigest(), self.target, too_large=self.overflowed)

    def discard(self) -> None:
        """Drop the temporary file (a failed or cancelled download leaves nothing behind)."""
        if self.out is not None:
            self.out.close()
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()


# ------------------------------------------------------------ blocking helpers (executor)
async def _in_executor(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the loop's default executor (blocking file work, image decoding)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _commit(out: IO[bytes], tmp: Path, target: Path) -> None:
    """Make the written file durable, then rename it over ``target`` (atomic)."""
    out.flush()
    os.fsync(out.fileno())
    out.close()
    os.replace(tmp, target)


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _hash_file(path: Path) -> tuple[str, int] | None:
    """SHA-256 and size of a file, or ``None`` if it is gone."""
    if not path.is_file():
        return None
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


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
    found = await _in_executor(_hash_file, target)
    return row if found == (row.sha256, row.size_bytes) else None


def thumbnail_data_uri(
    source: bytes | str | Path, side: int = THUMBNAIL_SIDE, quality: int = 60
) -> str | None:
    """A small JPEG of an image (at most ``side`` pixels a side) as a ``data:`` URI; ``None``
    if Pillow cannot read it. A few kB: 24 of them keep a saved notebook small."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.draft("RGB", (side * 2, side * 2))  # JPEG: decode at a fraction of the size
            small = ImageOps.exif_transpose(image)
            small.thumbnail((side, side))
            rgba = small.convert("RGBA")
            flat = Image.new("RGB", rgba.size, "white")  # transparency over white
            flat.paste(rgba, mask=rgba.getchannel("A"))
            out = io.BytesIO()
            flat.save(out, "JPEG", quality=quality, optimize=True)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
