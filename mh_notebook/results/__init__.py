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

The parts: :mod:`.keeper` (the engine's :class:`Keeper`), :mod:`.kept` (what is asked and
what was kept, thumbnails), :mod:`.files` (the one atomic write with a checksum) and
:mod:`.download` (files fetched on request: embedding, ``TaskWatcher.download``).
"""

from .keeper import Keeper
from .kept import DEFAULT_INLINE_LIMIT, KeepSpec, KeptResult, thumbnail_data_uri

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "KeepSpec",
    "Keeper",
    "KeptResult",
    "thumbnail_data_uri",
]
