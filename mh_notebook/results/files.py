"""The one atomic write with a checksum: a result file is written whole or not at all, and
a file saved before is trusted only while its SHA-256 still matches.

Blocking file work: callers on an event loop run it in an executor.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["AtomicWriter", "Checksum", "hash_file", "read_verified", "write_atomically"]


@dataclass(frozen=True)
class Checksum:
    """What was written: its SHA-256 (hex) and size in bytes."""

    sha256: str
    size: int


class AtomicWriter:
    """Takes a file chunk by chunk, with its SHA-256, into a temporary file beside ``target``;
    :meth:`commit` makes it durable (fsync) and renames it over ``target`` (atomic),
    :meth:`discard` drops it. With ``target=None`` only the checksum is kept.
    """

    def __init__(self, target: Path | None) -> None:
        self.target = target
        self.size = 0
        self._hash = hashlib.sha256()
        self._tmp: Path | None = None
        self._out: IO[bytes] | None = None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            self._tmp, self._out = Path(name), os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Take one chunk."""
        self.size += len(chunk)
        self._hash.update(chunk)
        if self._out is not None:
            self._out.write(chunk)

    @property
    def checksum(self) -> Checksum:
        """SHA-256 and size of what was written so far."""
        return Checksum(self._hash.hexdigest(), self.size)

    def commit(self) -> Checksum:
        """fsync the temporary file and rename it over ``target``; on failure nothing is left."""
        try:
            if self._out is not None and self._tmp is not None and self.target is not None:
                self._out.flush()
                os.fsync(self._out.fileno())
                self._out.close()
                os.replace(self._tmp, self.target)
                self._tmp = None
        finally:
            self.discard()
        return self.checksum

    def discard(self) -> None:
        """Drop the temporary file (a failed or cancelled write leaves nothing behind)."""
        if self._out is not None:
            self._out.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._tmp = None


def write_atomically(target: Path, data: bytes) -> Checksum:
    """Write ``data`` to ``target`` whole or not at all; its checksum."""
    writer = AtomicWriter(target)
    try:
        writer.write(data)
    except BaseException:
        writer.discard()
        raise
    return writer.commit()


def hash_file(path: Path) -> Checksum | None:
    """SHA-256 and size of a file, or ``None`` if it is gone."""
    if not path.is_file():
        return None
    writer = AtomicWriter(None)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            writer.write(chunk)
    return writer.checksum


def read_verified(path: str | Path, sha256: str) -> bytes | None:
    """The bytes of a file saved before, or ``None`` if it is gone or its SHA-256 is not ``sha256``."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    return data if hashlib.sha256(data).hexdigest() == sha256 else None
