"""One exception tree for everything mh_notebook raises on purpose.

::

    ModelHunterError                 base: catch this to catch them all
     ├── ConfigurationError          no API key, bad base URL, bad settings
     ├── MalformedResponseError      a body that is not the documented envelope
     ├── NetworkError                connection refused/reset, timeouts, dropped bodies
     └── APIError                    the API answered with an error (has status_code, code)
          ├── AuthenticationError    401/403: the key was refused
          ├── NotFoundError          404: the task id is unknown
          ├── RateLimitedError       429: slow down (retry_after in seconds, if sent)
          └── ServerError            5xx: transient on the server or a proxy

Every error carries ``task_id`` where known. Messages never contain the API key: the
client scrubs it from any text it puts in an exception (see ``redact``).
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "MalformedResponseError",
    "ModelHunterError",
    "NetworkError",
    "NotFoundError",
    "RateLimitedError",
    "ServerError",
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
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after


class AuthenticationError(APIError):
    """401/403: the API refused the key. Set another with ``MODELHUNTER_KEY``."""


class NotFoundError(APIError):
    """404: the API does not know this task id (or not yet, right after creation)."""


class RateLimitedError(APIError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if any."""


class ServerError(APIError):
    """5xx: a transient failure on the API or a proxy in front of it."""
