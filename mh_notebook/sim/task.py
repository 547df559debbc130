"""A simulated task: its true timeline (real wall-clock seconds) and what it was created with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .catalogue import ModelSpec
from .media import MediaFile

__all__ = ["Knobs", "SimTask", "iso"]


@dataclass
class SimTask:
    """A simulated task and its true timeline (real wall-clock seconds)."""

    id: str
    spec: ModelSpec
    prompt: str
    created: float
    queued: float
    running: float
    end: float
    outcome: str
    error: tuple[str, str] | None
    media: MediaFile
    cancelled_at: float | None = None
    url_issued: float = 0.0
    url_version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    """Creation order (the list's cursor)."""
    endpoint: str = ""
    """``provider/capability`` it was created through."""
    inputs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    cost: float = 0.0
    """USD charged at creation."""
    original_task_id: str | None = None
    """The failed or expired task this one retries."""
    webhook_url: str | None = None


def iso(t: float, whole_seconds: bool = False) -> str:
    """ISO-8601 UTC with ``Z``: milliseconds, or whole seconds (floored)."""
    if whole_seconds:
        return datetime.fromtimestamp(math.floor(t), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Knobs(NamedTuple):
    """The simulator's extras of a creation (``sim.submit``, ``POST /sim/v1/tasks``)."""

    outcome: str | None = None
    latency: float | None = None
    error_code: str | None = None
    error_message: str | None = None
