"""The task model against the documented bodies, every status, and malformed input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mh_notebook import MalformedResponseError, ModelHunterError, ResultItem, Task, TaskStatus


def test_documented_succeeded(documented: dict[str, Any]) -> None:
    task = Task.from_api(documented["succeeded"])
    assert task.id == "task_abc123"
    assert task.type == "video"
    assert task.status == "succeeded"
    assert task.status is TaskStatus.SUCCEEDED
    assert task.provider == "vidu"
    assert task.model == "viduq3-turbo"
    assert task.result == [
        ResultItem(
            url="https://cdn.modelhunter.ai/results/task_abc123.mp4?signature=xxx",
            duration=4,
            format="mp4",
            size_bytes=12582912,
        )
    ]
    assert task.error is None
    assert task.created_at == datetime(2025, 1, 15, 10, 0, 0, tzinfo=UTC)
    assert task.completed_at == datetime(2025, 1, 15, 10, 0, 45, tzinfo=UTC)
    assert task.latency == 45.0
    assert task.is_terminal
    assert task.raw == documented["succeeded"]["data"]


def test_documented_running(documented: dict[str, Any]) -> None:
    task = Task.from_api(documented["running"])
    assert task.status == "running"
    assert not task.is_terminal
    assert task.result == []
    assert task.error is None
    assert task.completed_at is None
    assert task.latency is None
    assert task.created_at is not None and task.created_at.tzinfo is not None


def test_documented_failed(documented: dict[str, Any]) -> None:
    task = Task.from_api(documented["failed"])
    assert task.status == "failed"
    assert task.is_terminal
    assert task.error is not None
    assert task.error.code == "PROVIDER_ERROR"
    assert task.error.message == "Content moderation: prompt contains restricted content"
    assert task.completed_at == datetime(2025, 1, 15, 10, 0, 10, tzinfo=UTC)
    assert task.result == []


def test_bare_data_object_is_accepted(documented: dict[str, Any]) -> None:
    bare = documented["running"]["data"]
    assert Task.from_api(bare) == Task.from_api(documented["running"])


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("pending", False),
        ("queued", False),
        ("running", False),
        ("succeeded", True),
        ("failed", True),
        ("cancelled", True),
        ("expired", False),
        ("paused", False),  # unknown: kept as-is, not finished
    ],
)
def test_every_status(status: str, terminal: bool) -> None:
    task = Task.from_api({"id": "t1", "status": status})
    assert task.status == status
    assert str(task.status) == status
    assert task.is_terminal is terminal


def test_unknown_status_keeps_raw_string() -> None:
    task = Task.from_api({"id": "t1", "status": "paused"})
    assert task.status == "paused"
    assert task.status.value == "paused"
    assert not task.status.is_known
    assert TaskStatus.RUNNING.is_known


def test_unknown_fields_are_kept() -> None:
    body = {
        "success": True,
        "request_id": "r1",
        "data": {
            "id": "t1",
            "status": "succeeded",
            "cost_usd": 0.12,
            "result": [{"url": "https://x/y.png", "format": "png", "width": 1024}],
        },
    }
    task = Task.from_api(body)
    assert task.model_extra == {"cost_usd": 0.12}
    assert task.raw["cost_usd"] == 0.12
    assert task.result[0].model_extra == {"width": 1024}
    assert task.result[0].duration is None
    assert task.result[0].size_bytes is None


def test_naive_and_offset_timestamps_become_utc() -> None:
    task = Task.from_api(
        {
            "id": "t",
            "status": "failed",
            "created_at": "2025-01-15T10:00:00",
            "completed_at": "2025-01-15T12:00:10+02:00",
        }
    )
    assert task.created_at == datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
    assert task.completed_at == datetime(2025, 1, 15, 10, 0, 10, tzinfo=UTC)
    assert task.completed_at is not None and task.completed_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("body", "needle", "task_id"),
    [
        ({"success": True}, "'data'", None),
        ({"success": True, "data": None}, "'data'", None),
        ({"success": True, "data": [1, 2]}, "'data' must be an object, got list", None),
        ([{"id": "t"}], "expected a JSON object, got list", None),
        ("not an object", "expected a JSON object, got str", None),
        ({"success": True, "data": {"status": "running"}}, "field 'id'", None),
        ({"success": True, "data": {"id": "t9", "status": 3}}, "task 't9': field 'status'", "t9"),
        ({"success": True, "data": {"id": "t9"}}, "task 't9': field 'status'", "t9"),
        (
            {"success": True, "data": {"id": "t9", "status": "running", "created_at": "yesterday"}},
            "created_at",
            "t9",
        ),
        (
            {"success": True, "data": {"id": "t9", "status": "succeeded", "result": {"url": "x"}}},
            "result",
            "t9",
        ),
        ({"success": True, "data": {"id": "t9", "status": "failed", "error": 42}}, "field 'error'", "t9"),
        ({"success": False, "error": {"code": "UNAUTHORIZED", "message": "bad key"}}, "UNAUTHORIZED", None),
    ],
)
def test_malformed_bodies_raise_named_errors(body: object, needle: str, task_id: str | None) -> None:
    with pytest.raises(MalformedResponseError) as info:
        Task.from_api(body)
    assert isinstance(info.value, ModelHunterError)
    assert needle in str(info.value)
    assert info.value.task_id == task_id
    assert info.value.field


def test_importing_the_package_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, mh_notebook; print(sorted(m for m in ('pandas', 'ipywidgets', 'IPython') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # scripts that only fetch tasks need no pandas or Jupyter
