"""Result files fetched on request, outside the engine: into memory for embedding (capped),
or streamed to disk with a progress bar, atomically (:mod:`.files`), the size checked.

Only ``http(s)`` URLs are ever used. A media host's error status becomes an error of the
tree through the one mapping (:func:`~mh_notebook.errors.error_class`): see :func:`media_error`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ..errors import APIError, ModelHunterError, NetworkError, error_class
from ..formats import safe_url, snippet
from ..models import ResultItem
from .files import AtomicWriter

__all__ = ["MediaTooLargeError", "download_file", "fetch_bytes", "media_error", "require_safe", "urls_work"]


class MediaTooLargeError(ModelHunterError):
    """A result is larger than the embed cap (it is then shown from its URL instead)."""


def media_error(status: int, what: str, text: str = "") -> APIError:
    """The error of a media host's answer ``status`` (a 403 is an expired signed URL; 429
    and 5xx are worth another try), ``text`` (the body, if read) quoted shortly."""
    said = f": {snippet(text, 100)}" if text else ""
    return error_class(status, from_api=False)(f"{what} answered HTTP {status}{said}", status_code=status)


def fetch_bytes(url: str, limit: int, timeout: float = 30.0) -> bytes:
    """Download ``url`` into memory, refusing more than ``limit`` bytes."""
    safe = require_safe(url)
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
            return _stream_to(require_safe(url), target, expected_size, progress, timeout)
        except APIError as exc:
            if exc.status_code != 403 or attempt == 1:
                raise
            url = refresh_url()  # expired signed URL: ask the API for a fresh one
    raise AssertionError("unreachable")  # pragma: no cover


def _stream_to(url: str, target: Path, expected: int | None, progress: bool, timeout: float) -> Path:
    writer = AtomicWriter(target)
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            _check_status(response)
            total = expected or int(response.headers.get("content-length", 0)) or None
            with _progress(total, target.name, progress) as bar:
                for chunk in response.iter_bytes():
                    writer.write(chunk)
                    bar.update(len(chunk))
        if expected is not None and writer.size != expected:
            raise ModelHunterError(f"{target.name}: got {writer.size} bytes, the API said {expected}")
        writer.commit()
        return target
    except httpx.TransportError as exc:
        raise NetworkError(f"{target.name}: download failed: {type(exc).__name__}: {exc}") from None
    finally:
        writer.discard()


def _progress(total: int | None, name: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not enabled, leave=False)


def _check_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        response.read()
        raise media_error(response.status_code, "media download", response.text)


def require_safe(url: str) -> str:
    """``url`` if it is plain ``http(s)``, else :class:`ModelHunterError` (never fetched)."""
    safe = safe_url(url)
    if safe is None:
        raise ModelHunterError(f"refusing a result URL that is not plain http(s): {snippet(url, 80)}")
    return safe
