"""One exception tree for everything mh_notebook raises on purpose.

::

    ModelHunterError                 base: catch this to catch them all
     ├── ConfigurationError          no API key, bad base URL, bad settings
     ├── MalformedResponseError      a body that is not the documented envelope
     ├── NetworkError                connection refused/reset, timeouts, dropped bodies
     │    └── CreationUnknownError   a creation/retry was sent, its answer lost: the task may exist
     └── APIError                    the API answered with an error (status, code, details)
          ├── InvalidRequestError    400/422: a missing or invalid parameter (details.field)
          ├── AuthenticationError    401/403: the key was refused (code: KEY_REVOKED...)
          ├── InsufficientBalanceError 402: top up (balance, if known)
          ├── NotFoundError          404: unknown task, model or provider
          ├── ConflictError          409: e.g. cancelling a task that has already ended
          ├── RateLimitedError       429: slow down (retry_after in seconds, if sent)
          └── ServerError            5xx: transient on the server or a proxy

Every error carries ``task_id`` where known. Messages never contain the API key: the
client scrubs it from any text it puts in an exception (see ``redact``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "CreationUnknownError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "MalformedResponseError",
    "ModelHunterError",
    "NetworkError",
    "NotFoundError",
    "RateLimitedError",
    "ServerError",
    "error_class",
    "redact",
]


def redact(text: str, secret: str | None) -> str:
    """Return ``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if secret and secret in text:
        return text.replace(secret, "***")
    return text


class ModelHunterError(Exception):
    """Base of every error mh_notebook raises on purpose."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id


class ConfigurationError(ModelHunterError):
    """The package is not set up to talk to the API (no key, bad URL, bad option)."""


class MalformedResponseError(ModelHunterError):
    """A response body that is not the documented envelope; ``field`` names the culprit."""

    def __init__(self, message: str, *, task_id: str | None = None, field: str | None = None) -> None:
        super().__init__(message, task_id=task_id)
        self.field = field


class NetworkError(ModelHunterError):
    """The request never got a complete answer: connect/read failure, timeout, drop."""


class CreationUnknownError(NetworkError):
    """A creation (or retry) request was sent but its answer was lost: the task may exist,
    and may be charged. It is never resent blindly; ``sent_at`` (UTC) and ``endpoint`` say
    where to look: ``list_tasks(since=sent_at - a minute)``."""

    def __init__(self, message: str, *, endpoint: str, sent_at: datetime, task_id: str | None = None) -> None:
        super().__init__(message, task_id=task_id)
        self.endpoint = endpoint
        self.sent_at = sent_at


class APIError(ModelHunterError):
    """The API answered with an error status; ``code`` is the API's error code if sent."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        task_id: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after
        self.details = details
        """The envelope's ``error.details`` (e.g. ``{"field": "prompt", "reason": ...}``)."""

    @property
    def status(self) -> int:
        """The HTTP status (alias of ``status_code``)."""
        return self.status_code


class InvalidRequestError(APIError):
    """400/422: a parameter is missing or invalid; ``field`` names it when the API did."""

    @property
    def field(self) -> str | None:
        """The offending field from ``details.field``, if sent."""
        field = (self.details or {}).get("field")
        return str(field) if field is not None else None


class AuthenticationError(APIError):
    """401/403: the API refused the key. Set another with ``MODELHUNTER_KEY``."""


class InsufficientBalanceError(APIError):
    """402: the balance is too low for this task; ``balance`` is the USD balance if known."""

    balance: float | None = None


class NotFoundError(APIError):
    """404: the API does not know this task id (or not yet, right after creation), or this
    model (``MODEL_NOT_FOUND``) or provider (``PROVIDER_NOT_FOUND``)."""


class ConflictError(APIError):
    """409: the task's state forbids it (cancelling an ended task, retrying a running one)."""


class RateLimitedError(APIError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if any."""


class ServerError(APIError):
    """5xx: a transient failure on the API or a proxy in front of it."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidRequestError,
    429: RateLimitedError,
}


def error_class(status: int, *, from_api: bool = True) -> type[APIError]:
    """The one HTTP-status-to-error mapping: the class of the tree for an error ``status``.

    A media host (``from_api=False``) is not the API: its 403 is an expired signed URL, not
    a refused key, and its 4xx say nothing of the API's codes; only 429 and 5xx keep their
    classes (both worth another try).
    """
    cls = _BY_STATUS.get(status) if from_api or status == 429 else None
    if cls is not None:
        return cls
    return ServerError if status >= 500 else APIError
