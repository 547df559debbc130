"""Shared fixtures: the documented example bodies and a running simulator."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from mh_notebook.sim import Simulator

# Default journals go to a throw-away data directory, never the developer's own.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="mh-test-data-")

SUCCEEDED = """{"success": true, "data": {"id": "task_abc123", "type": "video", "status": "succeeded",
  "provider": "vidu", "model": "viduq3-turbo",
  "result": [{"url": "https://cdn.modelhunter.ai/results/task_abc123.mp4?signature=xxx",
              "duration": 4, "format": "mp4", "size_bytes": 12582912}],
  "created_at": "2025-01-15T10:00:00Z", "completed_at": "2025-01-15T10:00:45Z"}}"""
RUNNING = """{"success": true, "data": {"id": "task_abc123", "type": "video", "status": "running",
  "provider": "vidu", "model": "viduq3-turbo", "created_at": "2025-01-15T10:00:00Z"}}"""
FAILED = """{"success": true, "data": {"id": "task_abc123", "type": "video", "status": "failed",
  "provider": "vidu", "model": "viduq3-turbo",
  "error": {"code": "PROVIDER_ERROR", "message": "Content moderation: prompt contains restricted content"},
  "created_at": "2025-01-15T10:00:00Z", "completed_at": "2025-01-15T10:00:10Z"}}"""


@pytest.fixture
def documented() -> dict[str, dict[str, Any]]:
    """The three example bodies of the API documentation, verbatim."""
    return {"succeeded": json.loads(SUCCEEDED), "running": json.loads(RUNNING), "failed": json.loads(FAILED)}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator at speed 100 (a 35 s video takes 0.35 s), seeded."""
    with Simulator(seed=1, speed=100) as s:
        yield s
