"""The task model: parse the documented ``GET /api/v1/tasks/{id}`` envelope.

Also the list page (:class:`TaskPage`) and the balance (:class:`Balance`). Fields the API
sends in some answers only (``progress``, ``cost``, ``started_at``, ``metadata``,
``estimated_seconds``, ``original_task_id``) are read when present, never required, and
``None`` when unreadable.

Pure data: no I/O. Validation is pydantic's; its errors are turned into
:class:`~mh_notebook.errors.MalformedResponseError` naming the field and the task id.
Unknown fields are kept (``Task.raw`` and ``model_extra``); unknown statuses are kept
as-is and are not terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from .errors import MalformedResponseError
from .records import TaskStatus

__all__ = ["Balance", "ResultItem", "Task", "TaskError", "TaskPage", "TaskStatus"]


_OPTIONAL = ("started_at", "progress", "cost", "metadata", "estimated_seconds", "original_task_id")
"""Fields the API sends in some answers only (list items, creation and retry answers)."""


class ResultItem(BaseModel):
    """One output file of a succeeded task. Missing fields are ``None``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    url: str | None = None
    """Signed URL of the file, valid 15 minutes after the task was fetched."""
    duration: float | None = None
    """Seconds of video or audio; ``None`` for images."""
    format: str | None = None
    """File format as the API names it: ``mp4``, ``png``, ``jpg``, ``mp3``..."""
    size_bytes: int | None = None
    """Exact file size in bytes."""


class TaskError(BaseModel):
    """Why a task failed: the API's error ``code`` and human ``message``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    code: str | None = None
    message: str | None = None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Task(BaseModel):
    """One generation task as the API last reported it.

    Build it with :meth:`Task.from_api`. ``raw`` is the ``data`` object as received.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1)
    """The task id, e.g. ``task_abc123``."""
    status: TaskStatus
    """Current status; compares equal to the API's string."""
    type: str | None = None
    """``video``, ``image`` or ``audio``."""
    provider: str | None = None
    """Who runs the model, e.g. ``vidu``."""
    model: str | None = None
    """Model id, e.g. ``viduq3-turbo``."""
    result: list[ResultItem] = Field(default_factory=list)
    """Output files; only when ``succeeded``."""
    error: TaskError | None = None
    """Why it failed; only when ``failed``."""
    created_at: datetime | None = None
    """When the task was created (timezone-aware UTC)."""
    completed_at: datetime | None = None
    """When it ended, once it has (timezone-aware UTC)."""
    started_at: datetime | None = None
    """When it started running, if the API said (list items carry it)."""
    progress: float | None = None
    """0-100 as the API reports it (list items carry it), else ``None``."""
    cost: float | None = None
    """USD charged for the task, if the API said (list items carry it)."""
    metadata: dict[str, Any] | None = None
    """The object given at creation, if the API sent it back (list items carry it)."""
    estimated_seconds: float | None = None
    """The API's estimate of the task's duration (creation and retry answers)."""
    original_task_id: str | None = None
    """The failed or expired task this one retries (retry answers)."""

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("status", mode="before")
    @classmethod
    def _status_is_string(cls, value: object) -> object:
        if not isinstance(value, str) or not value:
            raise ValueError(f"status must be a non-empty string, got {value!r}")
        return value

    @field_validator("result", mode="before")
    @classmethod
    def _null_result(cls, value: object) -> object:
        return [] if value is None else value

    @field_validator("error", mode="before")
    @classmethod
    def _error_as_text(cls, value: object) -> object:
        """An error sent as plain text (``"error": "moderation"``) is its message: the task's
        true end is kept, not refused with the whole answer."""
        return {"message": value} if isinstance(value, str) else value

    @field_validator("created_at", "completed_at", "started_at", mode="after")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @field_validator(*_OPTIONAL, mode="wrap")
    @classmethod
    def _lenient(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        """A field the docs do not promise never fails a task: unreadable means ``None``
        (the value stays in ``raw``)."""
        try:
            return handler(value)
        except ValidationError:
            return None

    @property
    def raw(self) -> dict[str, Any]:
        """The ``data`` object exactly as received, unknown fields included."""
        return self._raw

    @property
    def is_terminal(self) -> bool:
        """True once the task has succeeded, failed or been cancelled."""
        return self.status.is_terminal

    def carrying(self, previous: Task | None) -> Self:
        """This answer, with the fields only some answers send (``started_at``, ``cost``,
        ``metadata``, ``estimated_seconds``, ``original_task_id``...) taken from ``previous``
        where this one lacks them: a GET that does not repeat what the creation answer or a
        list page said forgets nothing. ``progress`` is not carried once the status changed."""
        if previous is None or previous.id != self.id:
            return self
        names = [n for n in _OPTIONAL if getattr(self, n) is None and getattr(previous, n) is not None]
        if "progress" in names and previous.status != self.status:
            names.remove("progress")
        if not names:
            return self
        return self.model_copy(update={n: getattr(previous, n) for n in names})

    @property
    def latency(self) -> float | None:
        """Seconds from ``created_at`` to ``completed_at`` (server clock), if both known."""
        if self.created_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.created_at).total_seconds()

    @classmethod
    def from_api(cls, obj: object) -> Self:
        """Parse the envelope ``{"success": true, "data": {...}}`` or a bare ``data`` object.

        Raises :class:`MalformedResponseError` naming the field (and task id if known).
        """
        data = _unwrap(obj)
        task_id = data.get("id") if isinstance(data.get("id"), str) else None
        try:
            task = cls.model_validate(data)
        except ValidationError as exc:
            raise _malformed(exc, task_id) from None
        task._raw = data
        return task


def _unwrap(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MalformedResponseError(f"expected a JSON object, got {type(obj).__name__}", field="<body>")
    if "success" not in obj and "data" not in obj:
        return obj  # a bare data object
    if obj.get("success") is False:
        err = obj.get("error")
        err = err if isinstance(err, dict) else {}
        raise MalformedResponseError(
            f"error envelope where a task was expected: {err.get('code')}: {err.get('message')}",
            field="success",
        )
    data = obj.get("data")
    if not isinstance(data, dict):
        got = "missing" if data is None else type(data).__name__
        raise MalformedResponseError(f"field 'data' must be an object, got {got}", field="data")
    return data


def _malformed(exc: ValidationError, task_id: str | None) -> MalformedResponseError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "<data>"
    where = f"task {task_id!r}" if task_id else "task with no id"
    msg = f"{where}: field {field!r}: {first['msg']}"
    if len(exc.errors()) > 1:
        msg += f" (and {len(exc.errors()) - 1} more problems)"
    return MalformedResponseError(msg, task_id=task_id, field=field)


_CAPABILITY_TYPES = {
    "video": "video",
    "image": "image",
    "speech": "audio",
    "audio": "audio",
    "music": "music",
}


def media_type(capability: str) -> str | None:
    """The media type (``video``...) of a creation endpoint's capability
    (``text-to-video``, ``multimodal-video``...), or ``None`` if it does not say."""
    return _CAPABILITY_TYPES.get(capability.rsplit("-", 1)[-1])


@dataclass(frozen=True)
class TaskPage:
    """One page of ``GET /api/v1/tasks``: tasks newest first, and where the next starts."""

    tasks: list[Task]
    cursor: str | None
    """Pass it back as ``cursor=`` for the next page (opaque)."""
    has_more: bool
    total: int | None
    """Tasks matching the filters in all pages, if the API said."""

    @classmethod
    def from_api(cls, obj: object) -> TaskPage:
        """Parse ``{"success": true, "data": [...], "pagination": {...}}``."""
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
            raise MalformedResponseError("a task list must be {'data': [...]}", field="data")
        tasks = [Task.from_api(item) for item in obj["data"]]
        page = obj.get("pagination")
        page = page if isinstance(page, dict) else {}
        cursor, total = page.get("cursor"), page.get("total")
        return cls(
            tasks=tasks,
            cursor=str(cursor) if cursor else None,
            has_more=bool(page.get("hasMore")),
            total=total if isinstance(total, int) and not isinstance(total, bool) else None,
        )


class Balance(BaseModel):
    """``GET /api/v1/balance``: the account's balance in USD and billing settings."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    balance: float
    """USD available."""
    billing_mode: str | None = Field(
        default=None, validation_alias=AliasChoices("billingMode", "billing_mode")
    )
    """``prepaid`` or ``postpaid``."""
    monthly_spend_limit: float | None = Field(default=None, validation_alias="monthlySpendLimit")
    auto_top_up_enabled: bool | None = Field(default=None, validation_alias="autoTopUpEnabled")

    @classmethod
    def from_api(cls, obj: object) -> Balance:
        """Parse the envelope or a bare ``data`` object; an unreadable one raises
        :class:`MalformedResponseError`."""
        data = _unwrap(obj)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "<data>"
            raise MalformedResponseError(f"balance: field {field!r}: {first['msg']}", field=field) from None
