"""mh_notebook: ModelHunter.AI generations as first-class citizens of Jupyter.

Watch tasks live in a panel that never blocks the notebook, see finished media inline,
and analyse latency and failures as pandas DataFrames.
"""

from .client import AsyncClient, Client, RetryPolicy
from .errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    MalformedResponseError,
    ModelHunterError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)
from .models import ResultItem, Task, TaskError, TaskStatus
from .policy import PollPolicy
from .store import JournalError, MemoryStore, SQLiteStore, default_journal_path
from .watcher import TaskWatcher

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "JournalError",
    "MalformedResponseError",
    "MemoryStore",
    "ModelHunterError",
    "NetworkError",
    "NotFoundError",
    "PollPolicy",
    "RateLimitedError",
    "ResultItem",
    "RetryPolicy",
    "SQLiteStore",
    "ServerError",
    "Task",
    "TaskError",
    "TaskStatus",
    "TaskWatcher",
    "default_journal_path",
    "read_history",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``read_history`` is loaded on first use: ``import mh_notebook`` does not import pandas."""
    if name == "read_history":
        from .history import read_history

        return read_history
    raise AttributeError(f"module 'mh_notebook' has no attribute {name!r}")
