"""What the sync and async clients share: every call described once, as a :class:`_Call`
built by :class:`_Core`, and the answer read once, by :meth:`_Core.read`.

The clients only send: :mod:`.methods` makes each of the core's request methods a public
method of both clients, with the same name, parameters and docstring.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypedDict, TypeVar, Unpack

import httpx

from ..errors import APIError, MalformedResponseError, NetworkError, redact
from ..formats import snippet
from ..models import Balance, Task, TaskPage, media_type
from .answers import api_error, creation_unknown, error_fields
from .retries import RetryPlan, RetryPolicy, UnsentError
from .settings import API_PREFIX, _Secret, check_endpoint, check_task_id, resolve_settings

__all__ = ["CANCEL_PATH", "RETRY_PATH", "Filters", "http_timeout", "whole_answer_deadline"]

CANCEL_PATH = API_PREFIX + "/tasks/{id}/cancel"
"""Where a task is cancelled. The docs describe cancelling but did not show the request;
this is assumed by analogy with retry. Change it here only."""
RETRY_PATH = API_PREFIX + "/tasks/{id}/retry"
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class _Call(Generic[T_co]):
    """One request: what to send, how to read the answer, whether it may be resent."""

    method: str
    url: str
    what: str
    """What it does, for messages: ``task 'x'``, ``creating vidu/text-to-video``..."""
    parse: Callable[[object], T_co]
    params: dict[str, str] | None = None
    body: dict[str, Any] | None = None
    task_id: str | None = None
    resend: bool = True
    """False for requests that change something: resent only when certainly not done."""
    creates: bool = False
    """True for requests that may create a paid task (creation, retry)."""
    retry: bool = True
    """False: one attempt only."""
    cursors: tuple[str, ...] = ()
    """The cursors a listing has followed so far (a cursor met again is a loop)."""

    def after(self, page: object) -> _Call[T_co] | None:
        """The call for the page after ``page`` (a listing), or ``None`` after the last.

        A page that says there are more but sends no cursor, sends no task, or sends a
        cursor already followed would make the walk stop short or loop forever: each is a
        :class:`MalformedResponseError` saying so, never a silent end or an endless walk."""
        if not isinstance(page, TaskPage) or not page.has_more:
            return None
        pages = len(self.cursors) + 1
        if page.cursor is None or not page.tasks or page.cursor in self.cursors:
            why = (
                "no cursor" if page.cursor is None
                else "no task" if not page.tasks
                else f"a cursor it had sent before ({snippet(page.cursor, 40)}): the pages loop"
            )  # fmt: skip
            raise MalformedResponseError(
                f"listing tasks: page {pages} says there are more but sends {why}; stopped there",
                field="pagination",
            )
        params = {k: v for k, v in (self.params or {}).items() if k != "cursor"}
        params["cursor"] = page.cursor
        return dataclasses.replace(self, params=params, cursors=(*self.cursors, page.cursor))

    def unknown(self, detail: str, sent_at: datetime) -> NetworkError:
        """The error of a creation sent whose answer was lost or unreadable."""
        model = (self.body or {}).get("model")
        return creation_unknown(self.what, self.url, model, self.task_id, detail, sent_at)


class Filters(TypedDict, total=False):
    """The list's filters, as the clients' arguments name them (each optional, ``None``: any)."""

    status: str | None
    provider: str | None
    model: str | None
    since: datetime | str | None
    until: datetime | str | None


def _filter_params(filters: Filters) -> dict[str, str]:
    """The documented (camelCase) query parameters; ``TypeError`` for an unknown filter."""
    unknown = sorted(set(filters) - set(Filters.__annotations__))
    if unknown:
        raise TypeError(f"list_tasks() got an unexpected keyword argument {unknown[0]!r}")
    status = filters.get("status")
    pairs = {
        "status": str(status) if status is not None else None,
        "provider": filters.get("provider"),
        "modelId": filters.get("model"),
        "startDate": _when(filters.get("since")),
        "endDate": _when(filters.get("until")),
    }
    return {k: v for k, v in pairs.items() if v is not None}


class _Core:
    """Everything the sync and async clients share: the calls, the answers, the retry plan.

    Each public method here describes one call of the API once; the clients' methods of
    the same name send it (see :mod:`.methods`).
    """

    def __init__(
        self, api_key: str | None, base_url: str | None, retry: RetryPolicy, allow_insecure_http: bool
    ) -> None:
        key, self.base_url = resolve_settings(api_key, base_url, allow_insecure_http=allow_insecure_http)
        self.key = _Secret(key)
        self.retry = retry
        self.plan = RetryPlan(retry)

    def headers(self) -> dict[str, str]:
        """The request headers, the key among them."""
        return {"Authorization": f"Bearer {self.key.value}", "Accept": "application/json"}

    def request(self, call: _Call[Any]) -> dict[str, Any]:
        """httpx's arguments for ``call``: its query, the headers, and its body as ASCII JSON
        (a lone surrogate in a user's metadata goes escaped, as JSON allows; UTF-8 refused it
        with a ``UnicodeEncodeError`` from the engine's thread)."""
        args: dict[str, Any] = {"params": call.params, "headers": self.headers()}
        if call.body is not None:
            args["content"] = json.dumps(call.body).encode("ascii")
            args["headers"]["Content-Type"] = "application/json"
        return args

    def url(self, task_id: str) -> str:
        """A task's URL (the id checked first)."""
        return f"{self.base_url}/api/v1/tasks/{check_task_id(task_id)}"

    def scrub(self, text: str) -> str:
        """``text`` without the key."""
        return redact(text, self.key.value)

    # ------------------------------------------------------------ the calls
    def get_task(self, task_id: str, *, retry: bool = True) -> _Call[Task]:
        """Fetch one task; retries transient failures unless ``retry=False``."""
        return _Call(
            "GET", self.url(task_id), f"task {task_id!r}", Task.from_api, task_id=task_id, retry=retry
        )

    def list_tasks(
        self, *, limit: int = 20, cursor: str | None = None, retry: bool = True, **filters: Unpack[Filters]
    ) -> _Call[TaskPage]:
        """One page of the account's tasks, newest first (``GET /api/v1/tasks``).

        Filters: ``status``, ``provider``, ``model`` (the API's ``modelId``), ``since`` /
        ``until`` (created at or after / before; datetimes or ISO 8601 strings). ``limit``
        is 1-100 (checked here: ``ValueError``). Pass the page's ``cursor`` for the next
        page, or use :meth:`iter_pages`. Items carry no ``result``: get the task for URLs.
        """
        params = _filter_params(filters) | {"limit": str(_check_limit(limit))}
        if cursor is not None:
            params["cursor"] = cursor
        url = f"{self.base_url}{API_PREFIX}/tasks"
        return _Call("GET", url, "listing tasks", TaskPage.from_api, params, retry=retry)

    def iter_pages(self, *, limit: int = 100, **filters: Unpack[Filters]) -> _Call[TaskPage]:
        """Every page of :meth:`list_tasks` with these filters, following the cursor."""
        return self.list_tasks(limit=limit, **filters)

    def create_task(
        self,
        endpoint: str,
        *,
        model: str,
        input: dict[str, Any],  # noqa: A002 - the API's own name
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
    ) -> _Call[Task]:
        """Start a generation: ``POST /api/v1/{endpoint}`` (``endpoint`` is
        ``provider/capability``, e.g. ``"vidu/text-to-video"``); returns the new task
        (``pending``, with ``estimated_seconds``; ``capability`` holds the answer's ``type``).

        Never resent blindly: retried only when the server certainly did nothing (the
        connection was refused, or a 429). If the answer is lost after sending,
        :class:`CreationUnknownError` says the task may exist and how to find it.
        """
        endpoint = check_endpoint(endpoint)
        body: dict[str, Any] = {"model": model, "input": input}
        if metadata is not None:
            body["metadata"] = metadata
        if webhook_url is not None:
            body["webhookUrl"] = webhook_url
        url = f"{self.base_url}{API_PREFIX}/{endpoint}"
        return _Call("POST", url, f"creating {endpoint}", _created, body=body, resend=False, creates=True)

    def cancel_task(self, task_id: str) -> _Call[Task]:
        """Cancel a task still in progress (``POST`` :data:`CANCEL_PATH`); a task that
        has already ended gives :class:`ConflictError` (``.code`` says why)."""
        return self._task_action(CANCEL_PATH, "cancelling", task_id, creates=False)

    def retry_task(self, task_id: str) -> _Call[Task]:
        """Retry a ``failed`` or ``expired`` task: a *new* task, charged again, whose
        ``original_task_id`` is ``task_id`` (other states: :class:`ConflictError`)."""
        return self._task_action(RETRY_PATH, "retrying", task_id, creates=True)

    def balance(self, *, retry: bool = True) -> _Call[Balance]:
        """The account's balance (``GET /api/v1/balance``); ``.balance`` is USD."""
        url = f"{self.base_url}{API_PREFIX}/balance"
        return _Call("GET", url, "reading the balance", Balance.from_api, retry=retry)

    def _task_action(self, path: str, verb: str, task_id: str, *, creates: bool) -> _Call[Task]:
        url = self.base_url + path.format(id=check_task_id(task_id))
        what = f"{verb} task {task_id!r}"
        return _Call("POST", url, what, _created, task_id=task_id, resend=False, creates=creates)

    # -------------------------------------------------------- the answers
    def transport_error(self, call: _Call[T], exc: httpx.TransportError, sent_at: datetime) -> NetworkError:
        """The error of a request that got no answer, saying whether it may have been applied."""
        detail = self.scrub(str(exc) or type(exc).__name__)
        if isinstance(exc, _UNSENT):
            return UnsentError(
                f"{call.what}: could not connect ({type(exc).__name__}): {detail}", task_id=call.task_id
            )
        if call.creates:
            return call.unknown(f"{type(exc).__name__}: {detail}", sent_at)
        if not call.resend:
            return NetworkError(
                f"{call.what}: the answer was lost ({type(exc).__name__}: {detail}); the request may have "
                "been applied: check with get_task()",
                task_id=call.task_id,
            )
        return NetworkError(
            f"{call.what}: network error ({type(exc).__name__}): {detail}", task_id=call.task_id
        )

    def read(self, call: _Call[T], response: httpx.Response, sent_at: datetime) -> T:
        """Turn a response into the call's result or raise the matching error."""
        if response.status_code >= 500 and call.creates and error_fields(response)[0] is None:
            # not the API's own error envelope: a gateway gave up, and the task may exist
            error = self.api_error(call, response)
            raise call.unknown(f"HTTP {response.status_code}: {error.message}", sent_at)
        if response.status_code >= 400:
            raise self.api_error(call, response)
        body = self._decoded(call, response, sent_at)
        try:
            result = call.parse(body)
        except MalformedResponseError as exc:
            exc.task_id = exc.task_id or call.task_id
            if call.creates:  # the task may exist all the same
                raise call.unknown(f"the answer is malformed: {exc.message}", sent_at) from None
            raise
        about = getattr(result, "id", call.task_id)
        if call.method == "GET" and call.task_id is not None and about != call.task_id:
            raise MalformedResponseError(
                f"{call.what}: the answer is about another task ({self.scrub(str(about))[:80]!r})",
                task_id=call.task_id,
                field="id",
            )
        return result

    def api_error(self, call: _Call[T], response: httpx.Response) -> APIError:
        """The error an error answer to ``call`` stands for."""
        return api_error(
            response,
            what=call.what,
            task_id=call.task_id,
            secret=self.key.value,
            max_retry_after=self.retry.max_retry_after,
        )

    def _decoded(self, call: _Call[T], response: httpx.Response, sent_at: datetime) -> Any:
        """The JSON body, the key removed from the raw bytes and once decoded too (an echo
        written as JSON escapes, ``\\u0072...``, passes the check on the raw bytes)."""
        content = response.content
        secret = self.key.value.encode()
        if secret in content:  # an API echoing the key must not spread it to panels and journals
            content = content.replace(secret, b"***")
        try:
            body = json.loads(content)
        except ValueError:
            text = self.scrub(snippet(response.text))
            if call.creates:
                raise call.unknown(f"the answer is not JSON: {text!r}", sent_at) from None
            raise MalformedResponseError(
                f"{call.what}: HTTP {response.status_code} body is not JSON: {text!r}",
                task_id=call.task_id,
                field="<body>",
            ) from None
        text = json.dumps(body, ensure_ascii=False)
        if self.key.value not in text:
            return body
        return json.loads(text.replace(self.key.value, "***"))


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


def http_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """``None`` waits forever except to connect (5 s); a number bounds each request."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=5.0 if timeout is None else min(timeout, 5.0))


def whole_answer_deadline(timeout: float | httpx.Timeout | None) -> float | None:
    """The longest one whole answer may take: httpx's ``timeout`` bounds each read, so a body
    that trickles in a byte at a time would hold a request (and a poll slot) forever."""
    read = timeout.read if isinstance(timeout, httpx.Timeout) else timeout
    return None if read is None else read + 5.0
