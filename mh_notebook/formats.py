"""Result formats, URLs, file names and HTTP dates: pure helpers every layer may use (no I/O).

Everything here takes untrusted input from the API: a ``format`` becomes a MIME type
through the stdlib's :mod:`mimetypes` (no hand-written table), only plain ``http(s)`` URLs
pass :func:`safe_url`, and :func:`safe_filename` cannot leave its directory.
"""

from __future__ import annotations

import email.utils
import hashlib
import mimetypes
import re
from datetime import UTC

__all__ = [
    "http_date",
    "media_kind",
    "mime_subtype",
    "mime_type",
    "safe_filename",
    "safe_url",
    "snippet",
]

_KINDS = ("video", "image", "audio")
_CLEAN_ID_CHARS = 80
"""Longest task id used as it is in a file name."""


def mime_type(fmt: str | None) -> str | None:
    """The MIME type of a result ``format`` (``mp3`` → ``audio/mpeg``), from the stdlib's
    :mod:`mimetypes`; ``None`` if it knows none."""
    ext = re.sub(r"[^a-z0-9]", "", (fmt or "").lower())[:8]
    return mimetypes.guess_type(f"result.{ext}", strict=False)[0] if ext else None


def media_kind(fmt: str | None) -> str | None:
    """``video``, ``image`` or ``audio`` for a result ``format`` (its MIME type's); ``None`` otherwise."""
    major = (mime_type(fmt) or "").split("/")[0]
    return major if major in _KINDS else None


def mime_subtype(fmt: str | None) -> str | None:
    """The subtype of ``format``'s MIME type (``jpg`` → ``jpeg``, ``mp3`` → ``mpeg``), or ``None``."""
    mime = mime_type(fmt)
    return mime.split("/", 1)[1] if mime else None


def safe_url(url: object) -> str | None:
    """The URL if it is plain ``http(s)`` with no quote or space tricks, else ``None``."""
    if not isinstance(url, str) or not re.match(r"^https?://[^\s\"'<>`\\]+$", url, re.IGNORECASE):
        return None
    return url


def safe_filename(task_id: str, index: int, fmt: str | None) -> str:
    """A file name made from untrusted parts: only ``[A-Za-z0-9._-]``, no leading dot or dash.

    Distinct task ids get distinct names. An id of at most 80 characters of
    ``[A-Za-z0-9_-]`` that starts with a letter or digit is used as it is
    (``task_abc_0.mp4``): such names never change. Any other id is cleaned and followed by
    ``.`` and 12 hex digits of its SHA-256 (``img.1`` → ``img_1.aff416118231_0.png``): a dot never
    appears in the first kind, so the two kinds cannot meet.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", task_id)
    stem = cleaned.lstrip("_-")
    if stem != task_id or len(stem) > _CLEAN_ID_CHARS:
        digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        stem = f"{stem[:64] or 'task'}.{digest}"
    ext = re.sub(r"[^A-Za-z0-9]", "", fmt or "")[:8].lower() or "bin"
    return f"{stem}_{index}.{ext}"


def snippet(text: str, limit: int = 200) -> str:
    """Untrusted text for a message: whitespace runs made one space, cut at ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def http_date(value: str | None) -> float | None:
    """An HTTP date (``Date``, ``Retry-After``) as epoch seconds; ``None`` if it is not one.

    All three forms RFC 9110 asks recipients to accept are UTC, the asctime one too
    (``Sun Nov  6 08:49:37 1994``), which the stdlib returns without a zone: read as this
    machine's local time, a server's clock was learned 5 h off in New York (attack s25)."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        return None
