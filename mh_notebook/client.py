"""HTTP clients for the task status API: :class:`Client` (sync) and :class:`AsyncClient`.

The logic lives once in :class:`_Core` (building the request, interpreting the
response, deciding what to retry and how long to wait); the two clients only differ in
how they send. Retries are tenacity's: exponential backoff with jitter, ``Retry-After``
honoured (seconds or HTTP date, capped), bounded by attempts and total time.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from .errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    MalformedResponseError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    redact,
)
from .models import Task

__all__ = ["AsyncClient", "Client", "RetryPolicy", "is_sandbox_key", "is_transient", "resolve_settings"]

log = logging.getLogger("mh_notebook.client")

DEFAULT_BASE_URL = "https://api.modelhunter.ai"
"""The documented API host; every path is under ``/api/v1/``."""
KEY_ENVS = ("MODELHUNTER_KEY", "MODELHUNTER_API_KEY")
"""Where the key is looked for, in order: the docs' own name first, 0.2's second."""
KEY_ENV = KEY_ENVS[0]
URL_ENV = "MODELHUNTER_BASE_URL"
_API_PREFIX = "/api/v1"
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_BAD_ID = re.compile(r"[/\\?#%\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a request rides out transient failures before it gives up.

    The defaults ride out about 30 seconds of trouble. ``max_attempts=1`` disables retries.
    """

    max_attempts: int = 10
    """Attempts in all, the first included."""
    max_time: float = 30.0
    """Seconds from the first attempt after which no new attempt starts."""
    initial_backoff: float = 0.5
    """First backoff in seconds; doubles each attempt (plus jitter)."""
    max_backoff: float = 8.0
    """Longest backoff between two attempts."""
    max_retry_after: float = 60.0
    """Cap on a server's ``Retry-After``."""


class _Secret:
    """Holds the API key; its repr and str never show it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def resolve_settings(
    api_key: str | None, base_url: str | None, *, allow_insecure_http: bool = False
) -> tuple[str, str]:
    """Return ``(api_key, base_url)`` from the arguments or the environment.

    Raises :class:`ConfigurationError` saying how to set a key when there is none, and
    for a plain ``http://`` URL to anything but this machine (the key would travel in
    clear text) unless ``allow_insecure_http`` is set.
    """
    key = api_key if api_key is not None else _key_from_environment()
    if not key or not key.strip():
        raise ConfigurationError(
            f"no ModelHunter API key: pass api_key=... or set the {KEY_ENV} environment "
            f"variable ({' or '.join(KEY_ENVS[1:])} is read too; for the embedded simulator use "
            "sim.api_key)"
        )
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
    if url.startswith("http://") and not allow_insecure_http and not _is_loopback(url):
        raise ConfigurationError(
            f"refusing plain http to {url!r}: the API key would be sent unencrypted; use https://, "
            "or pass allow_insecure_http=True if you really mean it"
        )
    url = url.rstrip("/")
    if url.endswith(_API_PREFIX):  # the docs write the API's address with its prefix
        url = url[: -len(_API_PREFIX)]
    return key.strip(), url


def _key_from_environment() -> str | None:
    """The first non-empty key of :data:`KEY_ENVS`."""
    for name in KEY_ENVS:
        value = os.environ.get(name)
        if value and value.strip():
            return value
    return None


def is_sandbox_key(api_key: str) -> bool:
    """True for a ``river_test_`` key: ModelHunter's sandbox, which charges nothing."""
    return api_key.strip().startswith("river_test_")


def _is_loopback(url: str) -> bool:
    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_task_id(task_id: object) -> str:
    """Return ``task_id`` if it is a usable task id, else raise ``ValueError``."""
    if not isinstance(task_id, str) or task_id in ("", ".", "..") or _BAD_ID.search(task_id):
        raise ValueError(
            f"invalid task id {task_id!r}: must be a non-empty string, not '.' or '..', without "
            "'/', '\\', '?', '#', '%', whitespace or control characters (it becomes part of a URL path)"
        )
    return task_id


def parse_retry_after(value: str | None, cap: float, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, min(seconds, cap))


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: network errors, 429, 502/503/504, non-JSON bodies."""
    if isinstance(exc, NetworkError):
        return True
    if isinstance(exc, APIError):
        return exc.status_code in _RETRY_STATUSES
    return isinstance(exc, MalformedResponseError) and exc.field == "<body>"


class _Core:
    """Everything the sync and async clients share: request, response, retry plan."""

    def __init__(
        self, api_key: str | None, base_url: str | None, retry: RetryPolicy, allow_insecure_http: bool
    ) -> None:
        key, self.base_url = resolve_settings(api_key, base_url, allow_insecure_http=allow_insecure_http)
        self.key = _Secret(key)
        self.retry = retry
        self._backoff = wait_exponential_jitter(
            multiplier=retry.initial_backoff, max=retry.max_backoff, jitter=retry.initial_backoff
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key.value}", "Accept": "application/json"}

    def url(self, task_id: str) -> str:
        return f"{self.base_url}/api/v1/tasks/{check_task_id(task_id)}"

    def scrub(self, text: str) -> str:
        return redact(text, self.key.value)

    def network_error(self, task_id: str, exc: httpx.TransportError) -> NetworkError:
        detail = self.scrub(str(exc) or type(exc).__name__)
        return NetworkError(
            f"task {task_id!r}: network error ({type(exc).__name__}): {detail}", task_id=task_id
        )

    def interpret(self, task_id: str, response: httpx.Response) -> Task:
        """Turn a response into a :class:`Task` or raise the matching error."""
        if response.status_code >= 400:
            raise self.api_error(task_id, response)
        content = response.content
        secret = self.key.value.encode()
        if secret in content:  # an API echoing the key must not spread it to panels and journals
            content = content.replace(secret, b"***")
        try:
            body = json.loads(content)
        except ValueError:
            snippet = self.scrub(_snippet(response.text))
            raise MalformedResponseError(
                f"task {task_id!r}: HTTP {response.status_code} body is not JSON: {snippet!r}",
                task_id=task_id,
                field="<body>",
            ) from None
        try:
            return Task.from_api(body)
        except MalformedResponseError as exc:
            exc.task_id = exc.task_id or task_id
            raise

    def api_error(self, task_id: str, response: httpx.Response) -> APIError:
        status = response.status_code
        code, message = _error_fields(response)
        message = self.scrub(message)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self.retry.max_retry_after)
        kwargs: dict[str, Any] = {
            "status_code": status,
            "code": code,
            "task_id": task_id,
            "retry_after": retry_after,
        }
        if status in (401, 403):
            return AuthenticationError(
                f"HTTP {status}: the API refused the key ({message}); set a valid key with "
                f"api_key=... or the {KEY_ENV} environment variable",
                **kwargs,
            )
        if status == 404:
            return NotFoundError(f"task {task_id!r} not found (HTTP 404: {message})", **kwargs)
        if status == 429:
            wait = f", retry after {retry_after:g} s" if retry_after is not None else ""
            return RateLimitedError(f"rate limited (HTTP 429{wait}): {message}", **kwargs)
        cls = ServerError if status >= 500 else APIError
        return cls(f"task {task_id!r}: HTTP {status}: {code or 'error'}: {message}", **kwargs)

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: ``Retry-After`` if sent, else backoff."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def retry_kwargs(self, retry: bool) -> dict[str, Any]:
        attempts = self.retry.max_attempts if retry else 1
        return {
            "retry": retry_if_exception(is_transient),
            "wait": self.wait,
            "stop": stop_after_attempt(attempts) | stop_before_delay(self.retry.max_time),
            "reraise": True,
            "before_sleep": _log_retry,
        }


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info("attempt %d failed (%s); retrying in %.2f s", state.attempt_number, exc, wait)


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_fields(response: httpx.Response) -> tuple[str | None, str]:
    """``(code, message)`` from an error envelope, or a snippet of a non-JSON page."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None, _snippet(response.text) or response.reason_phrase
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        message = err.get("message")
        return (str(code) if code is not None else None), str(message or response.reason_phrase)
    return None, _snippet(response.text)


def _timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """``None`` waits forever except to connect (5 s); a number bounds each request."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=5.0 if timeout is None else min(timeout, 5.0))


class Client:
    """Synchronous client: ``Client(api_key=None, base_url=None).get_task(task_id)``.

    The key comes from ``api_key``, then ``MODELHUNTER_KEY``, then ``MODELHUNTER_API_KEY``;
    the base URL from ``base_url`` or ``MODELHUNTER_BASE_URL`` (default
    ``https://api.modelhunter.ai``).
    ``timeout`` is per request in seconds (``None``: no limit but 5 s to connect);
    ``retry`` bounds how long transient failures (network errors, 429, 502/503/504,
    non-JSON bodies) are ridden out. A plain ``http://`` URL is refused except to this
    machine, unless ``allow_insecure_http=True``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self._core = _Core(api_key, base_url, retry or RetryPolicy(), allow_insecure_http)
        self._http = httpx.Client(timeout=_timeout(timeout), transport=transport)

    @property
    def base_url(self) -> str:
        """The API's base URL (no trailing slash)."""
        return self._core.base_url

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, api_key=<redacted>)"

    def get_task(self, task_id: str, *, retry: bool = True) -> Task:
        """Fetch one task; retries transient failures unless ``retry=False``."""
        url = self._core.url(task_id)
        for attempt in Retrying(**self._core.retry_kwargs(retry)):
            with attempt:
                return self._core.interpret(task_id, self._send(task_id, url))
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, task_id: str, url: str) -> httpx.Response:
        try:
            return self._http.get(url, headers=self._core.headers())
        except httpx.TransportError as exc:
            raise self._core.network_error(task_id, exc) from None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """Asynchronous twin of :class:`Client`: ``await client.get_task(task_id)``.

    Same arguments and behaviour; use it with ``async with`` or call ``aclose()``.
    ``on_response(sent_at, received_at, date_header)`` is called for every answer (error
    answers too), with local wall-clock times: the poller learns the server's clock from it.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        allow_insecure_http: bool = False,
        on_response: Callable[[float, float, str | None], None] | None = None,
    ) -> None:
        self._core = _Core(api_key, base_url, retry or RetryPolicy(), allow_insecure_http)
        self._on_response = on_response
        self._http = httpx.AsyncClient(
            timeout=_timeout(timeout), transport=transport, limits=limits or httpx.Limits()
        )

    @property
    def base_url(self) -> str:
        """The API's base URL (no trailing slash)."""
        return self._core.base_url

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r}, api_key=<redacted>)"

    async def get_task(self, task_id: str, *, retry: bool = True) -> Task:
        """Fetch one task; retries transient failures unless ``retry=False``."""
        url = self._core.url(task_id)
        async for attempt in AsyncRetrying(**self._core.retry_kwargs(retry)):
            with attempt:
                return self._core.interpret(task_id, await self._send(task_id, url))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, task_id: str, url: str) -> httpx.Response:
        sent_at = time.time()
        try:
            response = await self._http.get(url, headers=self._core.headers())
        except httpx.TransportError as exc:
            raise self._core.network_error(task_id, exc) from None
        if self._on_response is not None:
            self._on_response(sent_at, time.time(), response.headers.get("date"))
        return response

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
