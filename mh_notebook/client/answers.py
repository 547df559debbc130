"""What an error answer says: the API's envelope read, the key scrubbed, the class chosen by
:func:`~mh_notebook.errors.error_class` and a message saying what to do about it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from ..errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    CreationUnknownError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    error_class,
    redact,
)
from ..formats import snippet
from .retries import parse_retry_after
from .settings import KEY_ENV

__all__ = ["api_error", "creation_unknown", "error_fields", "with_balance"]

_KEY_GONE = {
    "KEY_REVOKED": "the API key has been revoked",
    "KEY_EXPIRED": "the API key has expired",
    "AUTH_TOKEN_EXPIRED": "the API key's token has expired",
}


@dataclass(frozen=True)
class _Answer:
    """An error answer, read: what was asked and what the API said."""

    what: str
    status: int
    code: str | None
    message: str
    details: dict[str, Any] | None
    task_id: str | None
    retry_after: float | None

    @property
    def said(self) -> str:
        """``HTTP 404 NOT_FOUND: ...`` (the code only when the API sent one)."""
        head = f"HTTP {self.status} {self.code}" if self.code else f"HTTP {self.status}"
        return f"{head}: {self.message}"


def api_error(
    response: httpx.Response, *, what: str, task_id: str | None, secret: str, max_retry_after: float
) -> APIError:
    """The error an error answer stands for, its texts free of ``secret``."""
    code, message, details = error_fields(response)
    if details is not None:
        details = json.loads(redact(json.dumps(details), secret))
    headers = response.headers
    retry_after = parse_retry_after(headers.get("Retry-After"), max_retry_after, date=headers.get("Date"))
    answer = _Answer(what, response.status_code, code, redact(message, secret), details, task_id, retry_after)
    cls = error_class(answer.status)
    error = cls(
        _ADVICE.get(cls, _other)(answer),
        status_code=answer.status,
        code=code,
        task_id=task_id,
        retry_after=retry_after,
        details=details,
    )
    if isinstance(error, InsufficientBalanceError):
        error.balance = _number((details or {}).get("balance"))
    return error


def _auth(a: _Answer) -> str:
    """What to do about a refused key, by code."""
    said = f"HTTP {a.status} {a.code}: {a.message}"
    if a.code in _KEY_GONE:
        return (
            f"{_KEY_GONE[a.code]} ({said}): create a new key in the ModelHunter dashboard and pass it "
            f"as api_key=... or set the {KEY_ENV} environment variable"
        )
    if a.code in ("KEY_PERMISSION_DENIED", "FORBIDDEN"):
        return (
            f"{a.what}: refused, this key lacks the permission ({said}): use a key that has it "
            "(e.g. video:create), or allow this machine's IP address for the key"
        )
    return (
        f"HTTP {a.status}: the API refused the key ({a.message}); set a valid key with "
        f"api_key=... or the {KEY_ENV} environment variable"
    )


def _balance(a: _Answer) -> str:
    balance = _number((a.details or {}).get("balance"))
    required = _number((a.details or {}).get("required"))
    have = f"; the balance is ${balance:.2f}" if balance is not None else ""
    need = f", this task needs ${required:.2f}" if required is not None else ""
    return f"{a.what}: the balance is too low ({a.said}){have}{need}: top up the ModelHunter account"


def _request(a: _Answer) -> str:
    field = (a.details or {}).get("field")
    reason = (a.details or {}).get("reason")
    if a.code == "MISSING_PARAMETER" and field:
        where = "the body" if field in ("model", "input") else "input={...}"
        return f"{a.what}: the required field {field!r} is missing ({a.said}): add it to {where}"
    if field:
        return (
            f"{a.what}: invalid {field!r}{f' ({reason})' if reason else ''} ({a.said}): fix it and send again"
        )
    return f"{a.what}: the API refused the request ({a.said})"


def _not_found(a: _Answer) -> str:
    if a.code in ("MODEL_NOT_FOUND", "PROVIDER_NOT_FOUND", "NOT_FOUND") or a.task_id is None:
        return f"{a.what}: not found ({a.said})"
    return f"task {a.task_id!r} not found (HTTP 404: {a.message})"


def _conflict(a: _Answer) -> str:
    return f"{a.what}: refused, the task's state does not allow it ({a.said})"


def _rate_limited(a: _Answer) -> str:
    wait = f", retry after {a.retry_after:g} s" if a.retry_after is not None else ""
    return f"rate limited (HTTP 429{wait}): {a.message}"


def _other(a: _Answer) -> str:
    return f"{a.what}: HTTP {a.status}: {a.code or 'error'}: {a.message}"


_ADVICE: dict[type[APIError], Callable[[_Answer], str]] = {
    AuthenticationError: _auth,
    InsufficientBalanceError: _balance,
    InvalidRequestError: _request,
    NotFoundError: _not_found,
    ConflictError: _conflict,
    RateLimitedError: _rate_limited,
}
"""The message of each class :func:`error_class` picks (others: :func:`_other`)."""


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def error_fields(response: httpx.Response) -> tuple[str | None, str, dict[str, Any] | None]:
    """``(code, message, details)`` from an error envelope, or a snippet of a non-JSON page."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None, snippet(response.text) or response.reason_phrase, None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        message = err.get("message")
        details = err.get("details")
        details = details if isinstance(details, dict) else None
        return (str(code) if code is not None else None), str(message or response.reason_phrase), details
    return None, snippet(response.text), None


def with_balance(exc: InsufficientBalanceError, balance: float) -> InsufficientBalanceError:
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


def creation_unknown(
    what: str, url: str, model: object, task_id: str | None, detail: str, sent_at: datetime
) -> CreationUnknownError:
    """The error of a creation whose answer was lost: where to look instead of resending."""
    since = (sent_at - timedelta(minutes=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    hint = f", model={model!r}" if model else ""
    return CreationUnknownError(
        f"{what}: the request was sent at {_iso(sent_at)} but its answer was lost ({detail}). "
        "The task may exist, and be charged: it was NOT sent again (the API has no idempotency key). "
        f"Look for it with mh_notebook.list_tasks(since={since!r}{hint}) "
        f"(or Client.list_tasks(since={since!r}{hint})) before creating it again.",
        endpoint=url,
        sent_at=sent_at,
        task_id=task_id,
    )


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")
