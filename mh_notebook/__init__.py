"""mh_notebook: ModelHunter.AI generations as first-class citizens of Jupyter.

Watch tasks live in a panel that never blocks the notebook, see finished media inline,
and analyse latency and failures as pandas DataFrames.
"""

from .client import AsyncClient, Client, RetryPolicy
from .errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    CreationUnknownError,
    InsufficientBalanceError,
    InvalidRequestError,
    MalformedResponseError,
    ModelHunterError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)
from .journal.memory import MemoryStore
from .journal.protocol import JournalError
from .journal.sqlite import SQLiteStore, default_journal_path
from .models import Balance, ResultItem, Task, TaskError, TaskPage, TaskStatus
from .polling.policy import PollPolicy
from .watcher import TaskWatcher

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Balance",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "CreationUnknownError",
    "InsufficientBalanceError",
    "InvalidRequestError",
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
    "TaskPage",
    "TaskStatus",
    "TaskWatcher",
    "default_journal_path",
    "list_tasks",
    "read_history",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``read_history`` and ``list_tasks`` are loaded on first use: ``import mh_notebook``
    does not import pandas."""
    if name == "read_history":
        from .history import read_history

        return read_history
    if name == "list_tasks":
        from .tasks import list_tasks

        return list_tasks
    raise AttributeError(f"module 'mh_notebook' has no attribute {name!r}")
