"""Real media files for the simulator's results: MP4 video, PNG/JPEG images, MP3 audio."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["MediaFile", "media_for"]


@dataclass(frozen=True)
class MediaFile:
    """Bytes of one result file with its API metadata."""

    data: bytes
    format: str
    content_type: str
    duration: float | None


_SHIPPED = {
    "mp4": ("sample.mp4", "video/mp4", 3.0),
    "mp3": ("sample.mp3", "audio/mpeg", 2.04),
    "jpg": ("sample.jpg", "image/jpeg", None),
}


@cache
def _shipped(fmt: str) -> MediaFile:
    name, ctype, duration = _SHIPPED[fmt]
    data = resources.files(__package__).joinpath("media", name).read_bytes()
    return MediaFile(data, fmt, ctype, duration)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG: a vertical gradient of ``rgb``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = []
    for y in range(height):
        shade = 0.55 + 0.45 * y / max(1, height - 1)
        pixel = bytes(int(c * shade) for c in rgb)
        rows.append(b"\x00" + pixel * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + chunk(b"IEND", b"")
    )


@cache
def _png_for(seed: int) -> MediaFile:
    palette = [(66, 135, 245), (245, 166, 35), (126, 211, 33), (208, 2, 27), (144, 19, 254), (80, 227, 194)]
    return MediaFile(png(192, 108, palette[seed % len(palette)]), "png", "image/png", None)


def media_for(fmt: str, seed: int = 0) -> MediaFile:
    """The file served for a result of format ``fmt`` (PNG colour varies with ``seed``)."""
    if fmt == "png":
        return _png_for(seed % 6)
    return _shipped(fmt)
