"""The documented API's request rules, as the simulator enforces them (pure functions).

Creation bodies (``POST /api/v1/{provider}/{capability}``) and list queries
(``GET /api/v1/tasks``) are checked here; each refusal is a :class:`SimError` carrying the
HTTP status, the documented error code and ``details`` (``{"field", "reason"}``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .catalogue import SIM_ENDPOINTS, ApiModel

__all__ = ["Creation", "ListQuery", "SimError", "envelope", "parse_creation", "parse_list_query"]

PROVIDERS = frozenset(path.split("/", 1)[0] for path in SIM_ENDPOINTS)
STATUSES = ("pending", "queued", "running", "succeeded", "failed", "cancelled", "expired")
MAX_PROMPT = 5000
RESOLUTIONS = ("480p", "540p", "720p", "1080p")
_IMAGE_INPUTS = ("image", "image_url", "reference_images")


class SimError(ValueError):
    """An error answer of the simulated API: HTTP ``status``, ``code``, ``details``."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def envelope(exc: SimError) -> dict[str, Any]:
    """The documented error envelope of ``exc``."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details is not None:
        error["details"] = exc.details
    return {"success": False, "error": error}


@dataclass(frozen=True)
class Creation:
    """A validated creation request."""

    endpoint: str
    model: ApiModel
    inputs: dict[str, Any]
    metadata: dict[str, Any] | None
    webhook_url: str | None


def _missing(field: str) -> SimError:
    return SimError(
        400,
        "MISSING_PARAMETER",
        f"Missing required parameter: {field}",
        {"field": field, "reason": "Required field is missing"},
    )


def _invalid(field: str, reason: str) -> SimError:
    return SimError(
        400, "INVALID_PARAMETER", f"Invalid parameter {field}: {reason}", {"field": field, "reason": reason}
    )


def find_endpoint(provider: str, capability: str) -> dict[str, ApiModel]:
    """The models of ``provider/capability``; 404 ``PROVIDER_NOT_FOUND`` or ``NOT_FOUND``."""
    if provider not in PROVIDERS:
        raise SimError(
            404,
            "PROVIDER_NOT_FOUND",
            f"Provider {provider!r} not found; providers: {', '.join(sorted(PROVIDERS))}",
        )
    models = SIM_ENDPOINTS.get(f"{provider}/{capability}")
    if models is None:
        raise SimError(404, "NOT_FOUND", f"Provider {provider!r} has no capability {capability!r}")
    return models


def parse_creation(endpoint: str, body: object) -> Creation:
    """Check a creation body against the documented rules and the model's bounds."""
    provider, _, capability = endpoint.partition("/")
    models = find_endpoint(provider, capability)
    if not isinstance(body, dict):
        raise SimError(400, "VALIDATION_ERROR", "The request body must be a JSON object")
    name = body.get("model")
    if name is None or name == "":
        raise _missing("model")
    model = models.get(name) if isinstance(name, str) else None
    if model is None:
        known = ", ".join(m for m, spec in models.items() if spec.documented)
        raise SimError(404, "MODEL_NOT_FOUND", f"Model {name!r} not found for {endpoint}; models: {known}")
    inputs = body.get("input")
    if inputs is None:
        raise _missing("input")
    if not isinstance(inputs, dict):
        raise _invalid("input", "must be an object")
    _check_inputs(capability, model, inputs)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("metadata", "must be an object")
    hook = body.get("webhookUrl")
    if hook is not None and not (isinstance(hook, str) and hook.startswith(("http://", "https://"))):
        raise _invalid("webhookUrl", "must be an http(s) URL")
    return Creation(endpoint, model, dict(inputs), metadata, hook)


def _check_inputs(capability: str, model: ApiModel, inputs: dict[str, Any]) -> None:
    prompt = inputs.get("prompt")
    if prompt is None or prompt == "":
        raise _missing("prompt")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
        raise _invalid("prompt", f"must be a string of at most {MAX_PROMPT} characters")
    if capability.startswith("image-to-") and not any(inputs.get(k) for k in _IMAGE_INPUTS):
        raise _missing("image")
    duration = inputs.get("duration")
    if duration is not None and (
        not model.durations or isinstance(duration, bool) or duration not in model.durations
    ):
        allowed = f"{model.durations[0]}-{model.durations[-1]}" if model.durations else "none"
        raise _invalid("duration", f"must be whole seconds in {allowed} for {model.model}")
    resolution = inputs.get("resolution")
    if resolution is not None and resolution not in RESOLUTIONS:
        raise _invalid("resolution", f"must be one of {', '.join(RESOLUTIONS)}")


@dataclass(frozen=True)
class ListQuery:
    """A validated ``GET /api/v1/tasks`` query."""

    status: str | None = None
    provider: str | None = None
    model: str | None = None
    start: float | None = None
    end: float | None = None
    limit: int = 20
    after: int | None = None
    """The sequence number the previous page ended at (from the cursor)."""


def parse_list_query(query: dict[str, str]) -> ListQuery:
    """Check the list query parameters (camelCase, as documented)."""
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise _invalid("status", f"must be one of {', '.join(STATUSES)}")
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise SimError(
            400,
            "VALIDATION_ERROR",
            "limit must be an integer from 1 to 100",
            {"field": "limit", "reason": "must be 1-100"},
        )
    return ListQuery(
        status=status,
        provider=query.get("provider"),
        model=query.get("modelId"),
        start=_date(query, "startDate"),
        end=_date(query, "endDate"),
        limit=limit,
        after=decode_cursor(query["cursor"]) if "cursor" in query else None,
    )


def _date(query: dict[str, str], name: str) -> float | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(name, "must be an ISO 8601 date-time") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def encode_cursor(seq: int, created_at: str) -> str:
    """An opaque cursor: the last item's position (and, for humans, its ``created_at``)."""
    return base64.urlsafe_b64encode(json.dumps([seq, created_at]).encode()).decode()


def decode_cursor(cursor: str) -> int:
    """The position a cursor points after; 400 ``INVALID_PARAMETER`` if it is not ours."""
    try:
        seq = json.loads(base64.urlsafe_b64decode(cursor.encode()))[0]
    except (ValueError, TypeError, IndexError, KeyError, binascii.Error):
        raise _invalid("cursor", "not a cursor this API returned") from None
    if not isinstance(seq, int):
        raise _invalid("cursor", "not a cursor this API returned")
    return seq
