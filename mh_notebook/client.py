"""HTTP clients for the task status API: :class:`Client` (sync) and :class:`AsyncClient`.

The logic lives once in :class:`_Core` (building the request, interpreting the
response, deciding what to retry and how long to wait); the two clients only differ in
how they send. Retries are tenacity's: exponential backoff with jitter, ``Retry-After``
honoured (seconds or HTTP date, capped), bounded by attempts and total time.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    redact,
)
from .models import Balance, Task, TaskPage, media_type

__all__ = [
    "CANCEL_PATH",
    "AsyncClient",
    "Client",
    "RetryPolicy",
    "check_endpoint",
    "is_sandbox_key",
    "is_transient",
    "resolve_settings",
]

log = logging.getLogger("mh_notebook.client")

DEFAULT_BASE_URL = "https://api.modelhunter.ai"
"""The documented API host; every path is under ``/api/v1/``."""
KEY_ENVS = ("MODELHUNTER_KEY", "MODELHUNTER_API_KEY")
"""Where the key is looked for, in order: the docs' own name first, 0.2's second."""
KEY_ENV = KEY_ENVS[0]
URL_ENV = "MODELHUNTER_BASE_URL"
_API_PREFIX = "/api/v1"
CANCEL_PATH = _API_PREFIX + "/tasks/{id}/cancel"
"""Where a task is cancelled. The docs describe cancelling but did not show the request;
this is assumed by analogy with retry. Change it here only."""
RETRY_PATH = _API_PREFIX + "/tasks/{id}/retry"
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
    _check_key(key.strip())
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


def _whole_answer_deadline(timeout: float | httpx.Timeout | None) -> float | None:
    """The longest one whole answer may take: httpx's ``timeout`` bounds each read, so a body
    that trickles in a byte at a time would hold a request (and a poll slot) forever."""
    read = timeout.read if isinstance(timeout, httpx.Timeout) else timeout
    return None if read is None else read + 5.0


def _check_key(key: str) -> None:
    """``ConfigurationError`` for a key no Bearer header can carry (it is never echoed)."""
    for at, char in enumerate(key):
        if not 33 <= ord(char) <= 126:
            what = "a space or line break" if char.isspace() else f"the character U+{ord(char):04X}"
            raise ConfigurationError(
                f"the API key has {what} at position {at} (of {len(key)}): keys are printable ASCII "
                "with no spaces; copy it again (a two-line secrets file or a web page can add one)"
            )


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


@dataclass(frozen=True)
class _Call:
    """One request: what to send, how to read the answer, whether it may be resent."""

    method: str
    url: str
    what: str
    """What it does, for messages: ``task 'x'``, ``creating vidu/text-to-video``..."""
    parse: Callable[[object], Any]
    params: dict[str, str] | None = None
    body: dict[str, Any] | None = None
    task_id: str | None = None
    resend: bool = True
    """False for requests that change something: resent only when certainly not done."""
    creates: bool = False
    """True for requests that may create a paid task (creation, retry)."""


class _UnsentError(NetworkError):
    """The connection failed before the request was sent: resending is safe."""


_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _resend_safe(exc: BaseException) -> bool:
    """For creations: only when the server certainly did nothing (not sent, or 429)."""
    return isinstance(exc, _UnsentError | RateLimitedError)


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

    # ------------------------------------------------------------ the calls
    def get_call(self, task_id: str) -> _Call:
        return _Call("GET", self.url(task_id), f"task {task_id!r}", Task.from_api, task_id=task_id)

    def list_call(self, filters: _Filters, limit: int, cursor: str | None) -> _Call:
        params = filters.params() | {"limit": str(_check_limit(limit))}
        if cursor is not None:
            params["cursor"] = cursor
        return _Call("GET", f"{self.base_url}{_API_PREFIX}/tasks", "listing tasks", TaskPage.from_api, params)

    def create_call(
        self,
        endpoint: str,
        model: str,
        inputs: dict[str, Any],
        metadata: dict[str, Any] | None,
        webhook_url: str | None,
    ) -> _Call:
        endpoint = check_endpoint(endpoint)
        body: dict[str, Any] = {"model": model, "input": inputs}
        if metadata is not None:
            body["metadata"] = metadata
        if webhook_url is not None:
            body["webhookUrl"] = webhook_url
        url = f"{self.base_url}{_API_PREFIX}/{endpoint}"
        return _Call("POST", url, f"creating {endpoint}", _created, body=body, resend=False, creates=True)

    def task_action_call(self, path: str, verb: str, task_id: str) -> _Call:
        url = self.base_url + path.format(id=check_task_id(task_id))
        creates = verb == "retrying"
        return _Call(
            "POST", url, f"{verb} task {task_id!r}", _created, task_id=task_id, resend=False, creates=creates
        )

    def balance_call(self) -> _Call:
        return _Call("GET", f"{self.base_url}{_API_PREFIX}/balance", "reading the balance", Balance.from_api)

    # -------------------------------------------------------- the answers
    def transport_error(self, call: _Call, exc: httpx.TransportError, sent_at: datetime) -> NetworkError:
        detail = self.scrub(str(exc) or type(exc).__name__)
        if isinstance(exc, _UNSENT):
            return _UnsentError(
                f"{call.what}: could not connect ({type(exc).__name__}): {detail}", task_id=call.task_id
            )
        if call.creates:
            return _creation_unknown(call, f"{type(exc).__name__}: {detail}", sent_at)
        if not call.resend:
            return NetworkError(
                f"{call.what}: the answer was lost ({type(exc).__name__}: {detail}); the request may have "
                "been applied: check with get_task()",
                task_id=call.task_id,
            )
        return NetworkError(
            f"{call.what}: network error ({type(exc).__name__}): {detail}", task_id=call.task_id
        )

    def network_error(self, task_id: str, exc: httpx.TransportError) -> NetworkError:
        return self.transport_error(self.get_call(task_id), exc, datetime.now(UTC))

    def read(self, call: _Call, response: httpx.Response, sent_at: datetime) -> Any:
        """Turn a response into the call's result or raise the matching error."""
        if response.status_code >= 500 and call.creates and _error_fields(response)[0] is None:
            # not the API's own error envelope: a gateway gave up, and the task may exist
            error = self.api_error(call.task_id, response, what=call.what)
            raise _creation_unknown(call, f"HTTP {response.status_code}: {error.message}", sent_at)
        if response.status_code >= 400:
            raise self.api_error(call.task_id, response, what=call.what)
        content = response.content
        secret = self.key.value.encode()
        if secret in content:  # an API echoing the key must not spread it to panels and journals
            content = content.replace(secret, b"***")
        try:
            body = json.loads(content)
        except ValueError:
            snippet = self.scrub(_snippet(response.text))
            if call.creates:
                raise _creation_unknown(call, f"the answer is not JSON: {snippet!r}", sent_at) from None
            raise MalformedResponseError(
                f"{call.what}: HTTP {response.status_code} body is not JSON: {snippet!r}",
                task_id=call.task_id,
                field="<body>",
            ) from None
        body = self._scrub_decoded(body)
        try:
            result = call.parse(body)
        except MalformedResponseError as exc:
            exc.task_id = exc.task_id or call.task_id
            if call.creates:  # the task may exist all the same
                raise _creation_unknown(call, f"the answer is malformed: {exc.message}", sent_at) from None
            raise
        if (
            call.method == "GET"
            and call.task_id is not None
            and getattr(result, "id", call.task_id) != call.task_id
        ):
            raise MalformedResponseError(
                f"{call.what}: the answer is about another task ({self.scrub(str(result.id))[:80]!r})",
                task_id=call.task_id,
                field="id",
            )
        return result

    def _scrub_decoded(self, body: Any) -> Any:
        """``body`` with the key removed once decoded too (an echo written as JSON escapes,
        ``\\u0072...``, passes the check on the raw bytes)."""
        text = json.dumps(body, ensure_ascii=False)
        if self.key.value not in text:
            return body
        return json.loads(text.replace(self.key.value, "***"))

    def interpret(self, task_id: str, response: httpx.Response) -> Task:
        """Turn a task's GET response into a :class:`Task` or raise the matching error."""
        result: Task = self.read(self.get_call(task_id), response, datetime.now(UTC))
        return result

    def api_error(
        self, task_id: str | None, response: httpx.Response, *, what: str | None = None
    ) -> APIError:
        status = response.status_code
        code, message, details = _error_fields(response)
        message = self.scrub(message)
        if details is not None:
            details = json.loads(self.scrub(json.dumps(details)))
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self.retry.max_retry_after)
        kwargs: dict[str, Any] = {
            "status_code": status,
            "code": code,
            "task_id": task_id,
            "retry_after": retry_after,
            "details": details,
        }
        what = what or f"task {task_id!r}"
        said = f"HTTP {status} {code}: {message}" if code else f"HTTP {status}: {message}"
        if status in (401, 403):
            return AuthenticationError(_auth_advice(status, code, message, what), **kwargs)
        if status == 402:
            error = InsufficientBalanceError(_balance_advice(what, said, details), **kwargs)
            error.balance = _number((details or {}).get("balance"))
            return error
        if status in (400, 422):
            return InvalidRequestError(_request_advice(what, said, code, details), **kwargs)
        if status == 404:
            if code in ("MODEL_NOT_FOUND", "PROVIDER_NOT_FOUND", "NOT_FOUND") or task_id is None:
                return NotFoundError(f"{what}: not found ({said})", **kwargs)
            return NotFoundError(f"task {task_id!r} not found (HTTP 404: {message})", **kwargs)
        if status == 409:
            return ConflictError(f"{what}: refused, the task's state does not allow it ({said})", **kwargs)
        if status == 429:
            wait = f", retry after {retry_after:g} s" if retry_after is not None else ""
            return RateLimitedError(f"rate limited (HTTP 429{wait}): {message}", **kwargs)
        cls = ServerError if status >= 500 else APIError
        return cls(f"{what}: HTTP {status}: {code or 'error'}: {message}", **kwargs)

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: ``Retry-After`` if sent, else backoff."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def retry_kwargs(self, retry: bool, *, resend: bool = True) -> dict[str, Any]:
        attempts = self.retry.max_attempts if retry else 1
        return {
            "retry": retry_if_exception(is_transient if resend else _resend_safe),
            "wait": self.wait,
            "stop": stop_after_attempt(attempts) | stop_before_delay(self.retry.max_time),
            "reraise": True,
            "before_sleep": _log_retry,
        }


_KEY_GONE = {
    "KEY_REVOKED": "the API key has been revoked",
    "KEY_EXPIRED": "the API key has expired",
    "AUTH_TOKEN_EXPIRED": "the API key's token has expired",
}


def _auth_advice(status: int, code: str | None, message: str, what: str) -> str:
    """What to do about a refused key, by code."""
    said = f"HTTP {status} {code}: {message}"
    if code in _KEY_GONE:
        return (
            f"{_KEY_GONE[code]} ({said}): create a new key in the ModelHunter dashboard and pass it "
            f"as api_key=... or set the {KEY_ENV} environment variable"
        )
    if code in ("KEY_PERMISSION_DENIED", "FORBIDDEN"):
        return (
            f"{what}: refused, this key lacks the permission ({said}): use a key that has it "
            "(e.g. video:create), or allow this machine's IP address for the key"
        )
    return (
        f"HTTP {status}: the API refused the key ({message}); set a valid key with "
        f"api_key=... or the {KEY_ENV} environment variable"
    )


def _balance_advice(what: str, said: str, details: dict[str, Any] | None) -> str:
    balance = _number((details or {}).get("balance"))
    required = _number((details or {}).get("required"))
    have = f"; the balance is ${balance:.2f}" if balance is not None else ""
    need = f", this task needs ${required:.2f}" if required is not None else ""
    return f"{what}: the balance is too low ({said}){have}{need}: top up the ModelHunter account"


def _request_advice(what: str, said: str, code: str | None, details: dict[str, Any] | None) -> str:
    field = (details or {}).get("field")
    reason = (details or {}).get("reason")
    if code == "MISSING_PARAMETER" and field:
        where = "the body" if field in ("model", "input") else "input={...}"
        return f"{what}: the required field {field!r} is missing ({said}): add it to {where}"
    if field:
        return f"{what}: invalid {field!r}{f' ({reason})' if reason else ''} ({said}): fix it and send again"
    return f"{what}: the API refused the request ({said})"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _creation_unknown(call: _Call, detail: str, sent_at: datetime) -> CreationUnknownError:
    """The error of a creation whose answer was lost: where to look instead of resending."""
    since = (sent_at - timedelta(minutes=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    model = (call.body or {}).get("model")
    hint = f", model={model!r}" if model else ""
    return CreationUnknownError(
        f"{call.what}: the request was sent at {_iso(sent_at)} but its answer was lost ({detail}). "
        "The task may exist, and be charged: it was NOT sent again (the API has no idempotency key). "
        f"Look for it with mh_notebook.list_tasks(since={since!r}{hint}) "
        f"(or Client.list_tasks(since={since!r}{hint})) before creating it again.",
        endpoint=call.url,
        sent_at=sent_at,
        task_id=call.task_id,
    )


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _created(obj: object) -> Task:
    """A creation or retry answer: its ``type`` is the capability (``text-to-video``); the
    task's ``type`` becomes the media type and ``capability`` keeps the capability."""
    task = Task.from_api(obj)
    kind = task.type or ""
    media = media_type(kind) if "-" in kind else None
    if media is None:
        return task
    data = dict(task.raw) | {"type": media, "capability": kind}
    return Task.from_api(data)


@dataclass(frozen=True)
class _Filters:
    """The list's filters, as the client's arguments name them."""

    status: str | None = None
    provider: str | None = None
    model: str | None = None
    since: datetime | str | None = None
    until: datetime | str | None = None

    def params(self) -> dict[str, str]:
        """The documented (camelCase) query parameters."""
        pairs = {
            "status": str(self.status) if self.status is not None else None,
            "provider": self.provider,
            "modelId": self.model,
            "startDate": _when(self.since),
            "endDate": _when(self.until),
        }
        return {k: v for k, v in pairs.items() if v is not None}


def _when(value: datetime | str | None) -> str | None:
    """ISO 8601 UTC (``Z``) for a datetime (naive ones are taken as UTC); strings as given."""
    if value is None or isinstance(value, str):
        return value
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise ValueError(f"limit must be a whole number from 1 to 100 (the API's bounds), got {limit!r}")
    return limit


_ENDPOINT = re.compile(r"^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$")


def check_endpoint(endpoint: str) -> str:
    """``provider/capability`` (e.g. ``vidu/text-to-video``); a leading ``/api/v1/`` is
    accepted. Raises ``ValueError`` for anything else."""
    path = endpoint.strip().lstrip("/")
    path = path[len("api/v1/") :] if path.startswith("api/v1/") else path
    if not _ENDPOINT.match(path):
        raise ValueError(
            f"endpoint must be 'provider/capability' such as 'vidu/text-to-video', got {endpoint!r}"
        )
    return path


def _with_balance(exc: InsufficientBalanceError, balance: float) -> InsufficientBalanceError:
    """``exc`` again, its message ending with the balance read just now."""
    fresh = InsufficientBalanceError(
        f"{exc.message}; the balance is ${balance:.2f}",
        status_code=exc.status_code,
        code=exc.code,
        task_id=exc.task_id,
        details=exc.details,
    )
    fresh.balance = balance
    return fresh


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info("attempt %d failed (%s); retrying in %.2f s", state.attempt_number, exc, wait)


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_fields(response: httpx.Response) -> tuple[str | None, str, dict[str, Any] | None]:
    """``(code, message, details)`` from an error envelope, or a snippet of a non-JSON page."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None, _snippet(response.text) or response.reason_phrase, None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        message = err.get("message")
        details = err.get("details")
        details = details if isinstance(details, dict) else None
        return (str(code) if code is not None else None), str(message or response.reason_phrase), details
    return None, _snippet(response.text), None


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
        task: Task = self._call(self._core.get_call(task_id), retry)
        return task

    def list_tasks(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        retry: bool = True,
    ) -> TaskPage:
        """One page of the account's tasks, newest first (``GET /api/v1/tasks``).

        Filters: ``status``, ``provider``, ``model`` (the API's ``modelId``), ``since`` /
        ``until`` (created at or after / before; datetimes or ISO 8601 strings). ``limit``
        is 1-100 (checked here: ``ValueError``). Pass the page's ``cursor`` for the next
        page, or use :meth:`iter_pages`. Items carry no ``result``: get the task for URLs.
        """
        filters = _Filters(status, provider, model, since, until)
        page: TaskPage = self._call(self._core.list_call(filters, limit, cursor), retry)
        return page

    def iter_pages(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
    ) -> Iterator[TaskPage]:
        """Every page of :meth:`list_tasks` with these filters, following the cursor."""
        filters = _Filters(status, provider, model, since, until)
        cursor: str | None = None
        while True:
            page: TaskPage = self._call(self._core.list_call(filters, limit, cursor), True)
            yield page
            if not page.has_more:
                return
            cursor = page.cursor

    def create_task(
        self,
        endpoint: str,
        *,
        model: str,
        input: dict[str, Any],  # noqa: A002 - the API's own name
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
    ) -> Task:
        """Start a generation: ``POST /api/v1/{endpoint}`` (``endpoint`` is
        ``provider/capability``, e.g. ``"vidu/text-to-video"``); returns the new task
        (``pending``, with ``estimated_seconds``; ``capability`` holds the answer's ``type``).

        Never resent blindly: retried only when the server certainly did nothing (the
        connection was refused, or a 429). If the answer is lost after sending,
        :class:`CreationUnknownError` says the task may exist and how to find it.
        """
        call = self._core.create_call(endpoint, model, input, metadata, webhook_url)
        return self._created(call)

    def cancel_task(self, task_id: str) -> Task:
        """Cancel a task still in progress (``POST`` :data:`CANCEL_PATH`); a task that
        has already ended gives :class:`ConflictError` (``.code`` says why)."""
        task: Task = self._call(self._core.task_action_call(CANCEL_PATH, "cancelling", task_id), True)
        return task

    def retry_task(self, task_id: str) -> Task:
        """Retry a ``failed`` or ``expired`` task: a *new* task, charged again, whose
        ``original_task_id`` is ``task_id`` (other states: :class:`ConflictError`)."""
        return self._created(self._core.task_action_call(RETRY_PATH, "retrying", task_id))

    def balance(self, *, retry: bool = True) -> Balance:
        """The account's balance (``GET /api/v1/balance``); ``.balance`` is USD."""
        balance: Balance = self._call(self._core.balance_call(), retry)
        return balance

    def _created(self, call: _Call) -> Task:
        try:
            task: Task = self._call(call, True)
        except InsufficientBalanceError as exc:
            balance = exc.balance
            if balance is None:
                with contextlib.suppress(ModelHunterError):
                    balance = self.balance(retry=False).balance
            if balance is None or exc.balance is not None:
                raise
            raise _with_balance(exc, balance) from None
        return task

    def _call(self, call: _Call, retry: bool) -> Any:
        for attempt in Retrying(**self._core.retry_kwargs(retry, resend=call.resend)):
            with attempt:
                sent_at = datetime.now(UTC)
                return self._core.read(call, self._send(call, sent_at), sent_at)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, call: _Call, sent_at: datetime) -> httpx.Response:
        try:
            return self._http.request(
                call.method, call.url, params=call.params, json=call.body, headers=self._core.headers()
            )
        except httpx.TransportError as exc:
            raise self._core.transport_error(call, exc, sent_at) from None

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
        self._deadline = _whole_answer_deadline(timeout)
        """The longest one whole answer may take (``None``: no limit)."""
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
        task: Task = await self._call(self._core.get_call(task_id), retry)
        return task

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        retry: bool = True,
    ) -> TaskPage:
        """One page of the account's tasks, newest first; as :meth:`Client.list_tasks`."""
        filters = _Filters(status, provider, model, since, until)
        page: TaskPage = await self._call(self._core.list_call(filters, limit, cursor), retry)
        return page

    async def iter_pages(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
    ) -> AsyncIterator[TaskPage]:
        """Every page of :meth:`list_tasks` with these filters, following the cursor."""
        filters = _Filters(status, provider, model, since, until)
        cursor: str | None = None
        while True:
            page: TaskPage = await self._call(self._core.list_call(filters, limit, cursor), True)
            yield page
            if not page.has_more:
                return
            cursor = page.cursor

    async def create_task(
        self,
        endpoint: str,
        *,
        model: str,
        input: dict[str, Any],  # noqa: A002 - the API's own name
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
    ) -> Task:
        """Start a generation; as :meth:`Client.create_task` (never resent blindly)."""
        call = self._core.create_call(endpoint, model, input, metadata, webhook_url)
        return await self._created(call)

    async def cancel_task(self, task_id: str) -> Task:
        """Cancel a task still in progress; as :meth:`Client.cancel_task`."""
        task: Task = await self._call(self._core.task_action_call(CANCEL_PATH, "cancelling", task_id), True)
        return task

    async def retry_task(self, task_id: str) -> Task:
        """Retry a failed or expired task (a new task, charged again); as :meth:`Client.retry_task`."""
        return await self._created(self._core.task_action_call(RETRY_PATH, "retrying", task_id))

    async def balance(self, *, retry: bool = True) -> Balance:
        """The account's balance (``GET /api/v1/balance``); ``.balance`` is USD."""
        balance: Balance = await self._call(self._core.balance_call(), retry)
        return balance

    async def _created(self, call: _Call) -> Task:
        try:
            task: Task = await self._call(call, True)
        except InsufficientBalanceError as exc:
            balance = exc.balance
            if balance is None:
                with contextlib.suppress(ModelHunterError):
                    balance = (await self.balance(retry=False)).balance
            if balance is None or exc.balance is not None:
                raise
            raise _with_balance(exc, balance) from None
        return task

    async def _call(self, call: _Call, retry: bool) -> Any:
        async for attempt in AsyncRetrying(**self._core.retry_kwargs(retry, resend=call.resend)):
            with attempt:
                sent_at = datetime.now(UTC)
                return self._core.read(call, await self._send(call, sent_at), sent_at)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, call: _Call, sent_at: datetime) -> httpx.Response:
        sent = time.time()
        try:
            async with asyncio.timeout(self._deadline):  # httpx bounds each read, not the whole answer
                response = await self._http.request(
                    call.method, call.url, params=call.params, json=call.body, headers=self._core.headers()
                )
        except TimeoutError:
            slow = httpx.ReadTimeout(f"no whole answer within {self._deadline:g} s (a body that trickles in)")
            raise self._core.transport_error(call, slow, sent_at) from None
        except httpx.TransportError as exc:
            raise self._core.transport_error(call, exc, sent_at) from None
        if self._on_response is not None:
            self._on_response(sent, time.time(), response.headers.get("date"))
        return response

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
