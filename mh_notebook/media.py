"""Inline preview and download of result files.

``display_object`` builds what shows one result in a cell: from its URL (``<video>`` and
``<audio>`` with a ``<source>`` whose ``type`` is the format's MIME type from the stdlib's
:mod:`mimetypes`, so browsers do fetch it), or with ``embed=True`` from its bytes, so a
saved notebook keeps it after the URL expires. A format that cannot be shown inline, or
that IPython cannot embed, gets a labelled link instead of an exception.
``download_file`` streams a result to disk with a progress bar, atomically, and checks
the size. Only ``http(s)`` URLs are ever used; file names are built from untrusted ids
and formats and cannot leave the target directory.
"""

from __future__ import annotations

import base64
import contextlib
import html
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from IPython.display import HTML, Image, Video

from .errors import APIError, ModelHunterError, NetworkError
from .formats import media_kind, mime_subtype, mime_type, safe_filename, safe_url
from .models import ResultItem
from .view.render import human_size, link_html, media_element, media_html, safe_text

__all__ = ["DEFAULT_EMBED_LIMIT", "display_object", "download_file", "safe_filename", "urls_work"]

DEFAULT_EMBED_LIMIT = 20_000_000


class MediaTooLargeError(ModelHunterError):
    """A result is larger than the embed cap (it is then shown from its URL instead)."""


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
    data: bytes | None = None,
    label: str = "",
) -> Any:
    """What shows one result item in a cell: an IPython ``Image``/``Video`` or ``HTML``.

    With ``embed`` (or ``data``, bytes already at hand) the bytes go into the output, up
    to ``embed_limit``; a 403 from the media URL (expired) gets a fresh URL from
    ``refresh_url`` once. Otherwise the URL is used. A format that cannot be shown inline
    or embedded is a labelled link; an unsafe URL is a note.
    """
    kind, url = media_kind(item.format), safe_url(item.url)
    name = label or "result"
    if kind is None:
        return HTML(
            link_html(item.url, _described(name, item), "cannot be shown inline: download() saves it")
        )
    if data is None and embed and url is not None and (item.size_bytes or 0) <= embed_limit:
        with contextlib.suppress(MediaTooLargeError):
            data = _fetch_refreshing(url, embed_limit, refresh_url)
    if data is not None:
        embedded = _embedded(kind, item.format, data)
        if embedded is not None:
            return embedded
        note = f"IPython cannot embed {item.format!r}: download() saves it"
        return HTML(link_html(item.url, _described(name, item), note))
    if url is None:
        return HTML(media_html(item.url, item.format, name))
    if kind == "image":
        return Image(url=url)
    return HTML(media_element(url, item.format, width=None))


def _described(name: str, item: ResultItem) -> str:
    return " · ".join(x for x in (name, item.format or "", human_size(item.size_bytes)) if x)


def _embedded(kind: str, fmt: str | None, data: bytes) -> Any:
    """The bytes as an IPython object, MIME type from :mod:`mimetypes`; ``None`` if IPython
    cannot embed that format."""
    mime = mime_type(fmt) or ""
    if kind == "image":
        try:
            return Image(data=data, format=mime_subtype(fmt))
        except ValueError:  # e.g. bmp, tiff, svg: IPython embeds png, jpeg, gif and webp
            return None
    if kind == "video":
        return Video(data=data, embed=True, mimetype=mime, html_attributes="controls")
    src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    source = f'<source src="{src}" type="{html.escape(mime, quote=True)}">'
    return HTML(f'<audio controls preload="metadata">{source}</audio>')


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
