"""Open a journal from what a user passes: a store, a path, ``"default"``, a
``postgresql://`` URL or ``None``. The one module that knows every kind of journal."""

from __future__ import annotations

from pathlib import Path

from .dialect import is_postgres_url
from .memory import MemoryStore
from .postgres import PostgresStore
from .protocol import Store
from .sqlite import SQLiteStore, default_journal_path, refuse_url

__all__ = ["open_store"]


def open_store(store: Store | str | Path | None, *, create: bool = True) -> Store:
    """A store from what a user passes: a store, a path, ``"default"``, a ``postgresql://``
    URL (a team journal) or ``None`` (memory).

    With ``create=False`` a journal that does not exist is a ``JournalError``.
    """
    if store is None:
        return MemoryStore()
    if isinstance(store, str | Path):
        text = str(store)
        if is_postgres_url(text):
            return PostgresStore(text, create=create)
        refuse_url(text)
        return SQLiteStore(default_journal_path() if text == "default" else store, create=create)
    missing = [name for name in _PROTOCOL if not hasattr(store, name)]
    if missing:
        raise TypeError(
            "store= takes None (memory), 'default', a file path, a postgresql:// URL or a journal "
            f"object such as MemoryStore or SQLiteStore; got {type(store).__name__}, which has no "
            + ", ".join(missing[:4])
        )
    return store


_PROTOCOL = sorted({name for name in dir(Store) if not name.startswith("_")})
"""What an object passed as ``store=`` must have: every name of the :class:`Store` protocol."""
