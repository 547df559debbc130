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

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "MalformedResponseError",
    "ModelHunterError",
    "NetworkError",
    "NotFoundError",
    "RateLimitedError",
    "ResultItem",
    "RetryPolicy",
    "ServerError",
    "Task",
    "TaskError",
    "TaskStatus",
]

__version__ = "0.1.0"
