"""Shared fixtures: the documented example bodies, a running simulator, a PostgreSQL server."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from pg_server import PostgresServer, postgres_server

from mh_notebook.sim import Simulator

# Default journals go to a throw-away data directory, never the developer's own. This session-wide
# fallback covers what runs before the per-test directory below exists (imports, module- and
# session-scoped fixtures and the subprocesses they start).
os.environ["XDG_DATA_HOME"] = _SESSION_DATA = tempfile.mkdtemp(prefix="mh-test-data-")
atexit.register(shutil.rmtree, _SESSION_DATA, ignore_errors=True)

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


@pytest.fixture(autouse=True)
def data_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own XDG_DATA_HOME, so each has its own default journal (``default_journal_path()``).

    platformdirs reads the variable at call time; subprocesses started in the test inherit it.
    """
    data = tmp_path_factory.mktemp("xdg-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    return data


@pytest.fixture
def documented() -> dict[str, dict[str, Any]]:
    """The three example bodies of the API documentation, verbatim."""
    return {"succeeded": json.loads(SUCCEEDED), "running": json.loads(RUNNING), "failed": json.loads(FAILED)}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator at speed 100 (a 35 s video takes 0.35 s), seeded."""
    with Simulator(seed=1, speed=100) as s:
        yield s


# Hypothesis sized for a loaded 2-core CI machine: few examples, no deadline (timing on a
# shared machine is noise, not a property), and the same examples every run.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci")


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test module's own (started as a non-root user when root)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def url(pg: PostgresServer) -> str:
    """A fresh database of that server, for one test."""
    return pg.new_database()


@pytest.fixture
def new_york() -> Iterator[None]:
    """This process's local time zone is New York's (POSIX form: no tzdata needed)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "EST5"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
