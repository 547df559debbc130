"""What a watcher asks to keep of each result, and what was kept: plain records, shared
read-only between threads, and the small thumbnail of an image for the static view."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from ..formats import media_kind
from ..journal.protocol import SavedResult, Store

__all__ = ["DEFAULT_INLINE_LIMIT", "THUMBNAIL_SIDE", "KeepSpec", "KeptResult", "thumbnail_data_uri"]

DEFAULT_INLINE_LIMIT = 8_000_000
"""Bytes of one result kept in memory for the live gallery (larger ones get a note)."""
THUMBNAIL_SIDE = 128
"""Longest side (pixels) of an image's thumbnail in the static view."""


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
