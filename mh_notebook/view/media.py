"""Inline display of result files.

``display_object`` builds what shows one result in a cell: from its URL (``<video>`` and
``<audio>`` with a ``<source>`` whose ``type`` is the format's MIME type from the stdlib's
:mod:`mimetypes`, so browsers do fetch it), or with ``embed=True`` from its bytes, so a
saved notebook keeps it after the URL expires. A format that cannot be shown inline, or
that IPython cannot embed, gets a labelled link instead of an exception. The bytes are
fetched by :mod:`mh_notebook.results.download` (only ``http(s)`` URLs, capped).
"""

from __future__ import annotations

import base64
import contextlib
import html
from collections.abc import Callable
from typing import Any

from IPython.display import HTML, Image, Video

from ..errors import APIError
from ..formats import media_kind, mime_subtype, mime_type, safe_url
from ..models import ResultItem
from ..results.download import MediaTooLargeError, fetch_bytes, require_safe
from .render import human_size, link_html, media_element, media_html

__all__ = ["DEFAULT_EMBED_LIMIT", "display_object"]

DEFAULT_EMBED_LIMIT = 20_000_000


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
        return fetch_bytes(require_safe(fresh), limit)
