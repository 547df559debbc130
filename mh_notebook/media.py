"""Inline preview and download of result files.

``display_object`` builds an IPython ``Video``/``Image``/``Audio`` for a result (from its
URL, or with ``embed=True`` from its bytes, so a saved notebook keeps it after the URL
expires). ``download_file`` streams a result to disk with a progress bar, atomically, and
checks the size. Only ``http(s)`` URLs are ever used; file names are built from
untrusted ids and formats and cannot leave the target directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from IPython.display import HTML, Audio, Image, Video

from .errors import APIError, ModelHunterError, NetworkError
from .models import ResultItem
from .render import media_html, media_kind, safe_text, safe_url

__all__ = ["DEFAULT_EMBED_LIMIT", "display_object", "download_file", "safe_filename", "urls_work"]

DEFAULT_EMBED_LIMIT = 20_000_000
_MIME = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
}


class MediaTooLargeError(ModelHunterError):
    """A result is larger than the embed cap (it is then shown from its URL instead)."""


def safe_filename(task_id: str, index: int, fmt: str | None) -> str:
    """A file name made from untrusted parts: only ``[A-Za-z0-9._-]``, no leading dots."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", task_id)[:80].lstrip("._-") or "task"
    ext = re.sub(r"[^A-Za-z0-9]", "", fmt or "")[:8].lower() or "bin"
    return f"{stem}_{index}.{ext}"


def fetch_bytes(url: str, limit: int, timeout: float = 30.0) -> bytes:
    """Download ``url`` into memory, refusing more than ``limit`` bytes."""
    safe = _require_safe(url)
    chunks, size = [], 0
    with httpx.stream("GET", safe, timeout=timeout, follow_redirects=True) as response:
        _check_status(response)
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise MediaTooLargeError(f"result is larger than the embed limit of {limit} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def urls_work(items: list[ResultItem], timeout: float = 10.0) -> bool:
    """True if every item's URL answers now (a one-byte ranged GET; 403 means expired)."""
    for item in items:
        url = safe_url(item.url)
        if url is None:
            return False
        try:
            response = httpx.get(url, headers={"Range": "bytes=0-0"}, timeout=timeout, follow_redirects=True)
        except httpx.TransportError:
            return False
        if response.status_code >= 400:
            return False
    return True


def display_object(
    item: ResultItem,
    *,
    embed: bool = False,
    embed_limit: int = DEFAULT_EMBED_LIMIT,
    refresh_url: Callable[[], str | None] | None = None,
) -> Any:
    """An IPython display object for one result item (``HTML`` note if it cannot be shown).

    With ``embed``, a 403 from the media URL (expired) gets a fresh URL from
    ``refresh_url`` once.
    """
    kind = media_kind(item.format)
    url = safe_url(item.url)
    if kind is None or url is None:
        return HTML(media_html(item.url, item.format, f"cannot show format {item.format!r}"))
    fmt = (item.format or "").lower()
    if embed and (item.size_bytes is None or item.size_bytes <= embed_limit):
        with contextlib.suppress(MediaTooLargeError):
            data = _fetch_refreshing(url, embed_limit, refresh_url)
            if kind == "video":
                return Video(
                    data=data, embed=True, mimetype=_MIME.get(fmt, f"video/{fmt}"), html_attributes="controls"
                )
            if kind == "image":
                return Image(data=data, format="jpeg" if fmt == "jpg" else fmt)
            return Audio(data=data, embed=True)
    if kind == "video":
        return Video(url=url, html_attributes="controls muted playsinline")
    if kind == "image":
        return Image(url=url)
    return Audio(url=url)


def _fetch_refreshing(url: str, limit: int, refresh_url: Callable[[], str | None] | None) -> bytes:
    try:
        return fetch_bytes(url, limit)
    except APIError as exc:
        fresh = refresh_url() if exc.status_code == 403 and refresh_url is not None else None
        if fresh is None:
            raise
        return fetch_bytes(_require_safe(fresh), limit)


def download_file(
    url: str | None,
    target: Path,
    *,
    expected_size: int | None,
    refresh_url: Callable[[], str | None],
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Stream ``url`` to ``target`` atomically; on 403 get a fresh URL once and retry."""
    for attempt in range(2):
        if url is None:
            raise ModelHunterError(f"{target.name}: the result has no URL")
        try:
            return _stream_to(_require_safe(url), target, expected_size, progress, timeout)
        except APIError as exc:
            if exc.status_code != 403 or attempt == 1:
                raise
            url = refresh_url()  # expired signed URL: ask the API for a fresh one
    raise AssertionError("unreachable")  # pragma: no cover


def _stream_to(url: str, target: Path, expected: int | None, progress: bool, timeout: float) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response,
        ):
            _check_status(response)
            total = expected or int(response.headers.get("content-length", 0)) or None
            with _progress(total, target.name, progress) as bar:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    bar.update(len(chunk))
        size = os.path.getsize(tmp)
        if expected is not None and size != expected:
            raise ModelHunterError(f"{target.name}: got {size} bytes, the API said {expected}")
        os.replace(tmp, target)
        return target
    except httpx.TransportError as exc:
        raise NetworkError(f"{target.name}: download failed: {type(exc).__name__}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _progress(total: int | None, name: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not enabled, leave=False)


def _check_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        response.read()
        raise APIError(
            f"media download answered HTTP {response.status_code}: {safe_text(response.text, 100)}",
            status_code=response.status_code,
        )


def _require_safe(url: str) -> str:
    safe = safe_url(url)
    if safe is None:
        raise ModelHunterError(f"refusing a result URL that is not plain http(s): {safe_text(url, 80)}")
    return safe
