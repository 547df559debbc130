"""The whole documented API over real HTTP: the simulator's endpoints, the clients' calls,
the error codes, creation that is never resent blindly, cancel, retry, list, balance."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mh_notebook
from mh_notebook import (
    APIError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    CreationUnknownError,
    InsufficientBalanceError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    Task,
    TaskWatcher,
)
from mh_notebook.client import CANCEL_PATH
from mh_notebook.sim import Simulator

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_time=10)
PROMPT = {"prompt": "a red fox in the snow"}
SPEED = 100


@pytest.fixture
def client(sim: Simulator) -> Iterator[Client]:
    with Client(sim.api_key, sim.url, retry=FAST) as c:
        yield c


def _headers(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_key}"}


def _wait_status(client: Client, task_id: str, statuses: set[str], timeout: float = 30.0) -> Task:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get_task(task_id)
        if task.status in statuses or time.monotonic() > deadline:
            return task
        time.sleep(0.02)


# ------------------------------------------------------------------ creation
def test_creation_answers_202_with_the_documented_fields_and_charges(sim: Simulator) -> None:
    before = sim.balance
    answer = httpx.post(
        f"{sim.url}/api/v1/seedream/text-to-image",
        json={"model": "seedream-4-5", "input": PROMPT, "metadata": {"project": "fox"}},
        headers=_headers(sim),
    )
    assert answer.status_code == 202
    data = answer.json()["data"]
    assert set(data) == {"id", "status", "type", "provider", "model", "created_at", "estimated_seconds"}
    assert (data["status"], data["type"], data["provider"], data["model"]) == (
        "pending",
        "text-to-image",
        "seedream",
        "seedream-4-5",
    )
    assert data["estimated_seconds"] > 0
    assert sim.balance == pytest.approx(before - 0.04)
    listed = httpx.get(f"{sim.url}/api/v1/tasks", headers=_headers(sim)).json()["data"][0]
    assert (listed["id"], listed["type"], listed["cost"], listed["metadata"]) == (
        data["id"],
        "image",
        0.04,
        {"project": "fox"},
    )


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_client_creates_a_task(sim: Simulator, flavour: str) -> None:
    args: dict[str, Any] = {"model": "viduq3-turbo", "input": PROMPT | {"duration": 4}, "metadata": {"n": 1}}
    if flavour == "sync":
        with Client(sim.api_key, sim.url, retry=FAST) as c:
            task = c.create_task("vidu/text-to-video", **args)
    else:

        async def run() -> Task:
            async with AsyncClient(sim.api_key, sim.url, retry=FAST) as c:
                return await c.create_task("/api/v1/vidu/text-to-video", **args)

        task = asyncio.run(run())
    assert task.status == "pending"
    assert (task.type, task.raw["capability"], task.model, task.provider) == (
        "video",
        "text-to-video",
        "viduq3-turbo",
        "vidu",
    )
    assert task.estimated_seconds is not None and task.estimated_seconds > 0
    assert sim.calls["create"] == 1
    assert sim._tasks[task.id].cost == pytest.approx(0.06 * 4)  # turbo at 720p, 4 s


@pytest.mark.parametrize(
    ("endpoint", "body", "cls", "code", "field"),
    [
        ("vidu/text-to-video", {"input": PROMPT}, InvalidRequestError, "MISSING_PARAMETER", "model"),
        ("vidu/text-to-video", {"model": "viduq3-pro", "input": {}}, InvalidRequestError, "MISSING_PARAMETER", "prompt"),
        ("vidu/image-to-video", {"model": "viduq3-pro", "input": PROMPT}, InvalidRequestError, "MISSING_PARAMETER", "image"),
        ("kling/text-to-video", {"model": "kling-v2-6", "input": PROMPT | {"duration": 7}}, InvalidRequestError, "INVALID_PARAMETER", "duration"),
        ("vidu/text-to-video", {"model": "viduq3-pro", "input": PROMPT | {"resolution": "8k"}}, InvalidRequestError, "INVALID_PARAMETER", "resolution"),
        ("vidu/text-to-video", {"model": "viduq3-pro", "input": {"prompt": "x" * 5001}}, InvalidRequestError, "INVALID_PARAMETER", "prompt"),
        ("seedream/text-to-image", {"model": "seedream-4.5", "input": PROMPT}, NotFoundError, "MODEL_NOT_FOUND", None),
        ("openai/text-to-video", {"model": "sora", "input": PROMPT}, NotFoundError, "PROVIDER_NOT_FOUND", None),
    ],
)  # fmt: skip
def test_creation_is_validated(
    client: Client,
    sim: Simulator,
    endpoint: str,
    body: dict[str, Any],
    cls: type[APIError],
    code: str,
    field: str | None,
) -> None:
    before = sim.balance
    with pytest.raises(cls) as info:
        client.create_task(endpoint, model=body.get("model", ""), input=body["input"])
    error = info.value
    assert (error.code, error.status) == (code, error.status_code)
    assert error.status == (404 if cls is NotFoundError else 400)
    if field is not None:
        assert isinstance(error, InvalidRequestError)
        assert error.details is not None and error.details["field"] == field
        assert error.field == field
        assert repr(field) in str(error)
    if code == "MISSING_PARAMETER":
        assert "missing" in str(error) and "add it" in str(error)
    assert sim.balance == before and not sim.task_ids  # nothing created, nothing charged


def test_insufficient_balance_says_top_up_with_the_balance(client: Client, sim: Simulator) -> None:
    sim.balance = 0.05
    with pytest.raises(InsufficientBalanceError) as info:
        client.create_task("kling/text-to-video", model="kling-v3", input=PROMPT)
    error = info.value
    assert (error.code, error.status) == ("INSUFFICIENT_BALANCE", 402)
    assert "top up" in str(error) and "$0.05" in str(error)
    assert error.balance == pytest.approx(0.05)
    assert sim.balance == 0.05 and not sim.task_ids


def test_insufficient_balance_without_details_reads_the_balance(client: Client, sim: Simulator) -> None:
    sim.balance = 12.5
    sim.inject_error(402, "INSUFFICIENT_BALANCE", "Insufficient balance")
    with pytest.raises(InsufficientBalanceError) as info:
        client.create_task("seedream/text-to-image", model="seedream-4-0", input=PROMPT)
    assert info.value.balance == 12.5 and "$12.50" in str(info.value)
    assert sim.calls["balance"] == 1


# ------------------------------------------- a creation is never resent blindly
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_dropped_creation_answer_is_not_repeated(sim: Simulator, flavour: str) -> None:
    sim.drop_creations = 1
    args: dict[str, Any] = {"model": "seedream-4-5", "input": PROMPT}
    before = datetime.now(UTC)
    if flavour == "sync":
        with Client(sim.api_key, sim.url, retry=FAST) as c, pytest.raises(CreationUnknownError) as info:
            c.create_task("seedream/text-to-image", **args)
    else:

        async def run() -> None:
            async with AsyncClient(sim.api_key, sim.url, retry=FAST) as c:
                await c.create_task("seedream/text-to-image", **args)

        with pytest.raises(CreationUnknownError) as info:
            asyncio.run(run())
    assert sim.calls["create"] == 1  # exactly one POST: not resent
    assert len(sim.task_ids) == 1  # ...and it did create a task
    error = info.value
    assert isinstance(error, NetworkError)
    assert "may exist" in str(error) and "list_tasks(since=" in str(error)
    assert before - timedelta(seconds=2) <= error.sent_at <= datetime.now(UTC)
    since = error.sent_at - timedelta(minutes=1)
    with Client(sim.api_key, sim.url) as c:
        found = c.list_tasks(since=since, model="seedream-4-5").tasks
    assert [t.id for t in found] == sim.task_ids  # the hint finds it


def test_a_creation_timing_out_after_sending_is_not_repeated(sim: Simulator) -> None:
    sim.creation_delay = 3.0
    with Client(sim.api_key, sim.url, retry=FAST, timeout=0.5) as c, pytest.raises(CreationUnknownError):
        c.create_task("seedream/text-to-image", model="seedream-4-5", input=PROMPT)
    assert sim.calls["create"] == 1


def test_a_watcher_stopped_while_a_creation_waits_says_the_task_may_exist(sim: Simulator) -> None:
    sim.creation_delay = 3.0  # the task is made at once; its answer comes after stop()
    w = TaskWatcher(sim.api_key, sim.url, store=None, display="none")
    try:

        def stop_once_sent() -> None:
            deadline = time.monotonic() + 60
            while sim.calls["create"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            w.stop()

        threading.Thread(target=stop_once_sent, daemon=True).start()
        with pytest.raises(CreationUnknownError) as caught:
            w.submit("seedream/text-to-image", model="seedream-4-5", input=PROMPT)
    finally:
        w.stop()
    assert sim.calls["create"] == 1
    assert "may exist" in str(caught.value) and "list_tasks(since=" in str(caught.value)
    with Client(sim.api_key, sim.url) as c:
        found = c.list_tasks(since=caught.value.sent_at - timedelta(minutes=1)).tasks
    assert [t.id for t in found] == sim.task_ids and len(found) == 1  # the hint finds it


def test_a_creation_is_retried_when_the_server_certainly_did_nothing(client: Client, sim: Simulator) -> None:
    sim.inject_error(429, "RATE_LIMITED", "Too many requests")
    task = client.create_task("seedream/text-to-image", model="seedream-4-5", input=PROMPT)
    assert sim.calls["create"] == 2 and sim.task_ids == [task.id]
    with Simulator() as dead:
        url = dead.url
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01)
    with Client("river_test_x", url, retry=policy) as c, pytest.raises(NetworkError) as info:
        c.create_task("seedream/text-to-image", model="seedream-4-5", input=PROMPT)
    assert not isinstance(info.value, CreationUnknownError)  # refused: nothing was sent


def test_a_creation_answered_with_a_server_error_is_not_repeated(client: Client, sim: Simulator) -> None:
    sim.inject_error(503, "SERVICE_UNAVAILABLE", "provider temporarily down")
    with pytest.raises(ServerError):
        client.create_task("seedream/text-to-image", model="seedream-4-5", input=PROMPT)
    assert sim.calls["create"] == 1


# -------------------------------------------------------------- error codes
DOCUMENTED_ERRORS = [
    (400, "VALIDATION_ERROR", InvalidRequestError),
    (400, "INVALID_PARAMETER", InvalidRequestError),
    (400, "MISSING_PARAMETER", InvalidRequestError),
    (422, "FILE_TOO_LARGE", InvalidRequestError),
    (401, "AUTH_REQUIRED", AuthenticationError),
    (401, "AUTH_INVALID_TOKEN", AuthenticationError),
    (401, "AUTH_TOKEN_EXPIRED", AuthenticationError),
    (402, "INSUFFICIENT_BALANCE", InsufficientBalanceError),
    (403, "FORBIDDEN", AuthenticationError),
    (403, "KEY_PERMISSION_DENIED", AuthenticationError),
    (403, "KEY_EXPIRED", AuthenticationError),
    (403, "KEY_REVOKED", AuthenticationError),
    (404, "NOT_FOUND", NotFoundError),
    (404, "TASK_NOT_FOUND", NotFoundError),
    (404, "MODEL_NOT_FOUND", NotFoundError),
    (404, "PROVIDER_NOT_FOUND", NotFoundError),
    (409, "CONFLICT", ConflictError),
    (429, "RATE_LIMITED", RateLimitedError),
    (500, "INTERNAL_ERROR", ServerError),
    (502, "PROVIDER_ERROR", ServerError),
    (503, "SERVICE_UNAVAILABLE", ServerError),
]


@pytest.mark.parametrize(("status", "code", "cls"), DOCUMENTED_ERRORS)
def test_every_documented_error_code_gives_its_exception(
    sim: Simulator, status: int, code: str, cls: type[APIError]
) -> None:
    sim.inject_error(status, code, "as documented", {"field": "prompt", "reason": "why"})
    with Client(sim.api_key, sim.url, retry=RetryPolicy(max_attempts=1)) as c, pytest.raises(cls) as info:
        c.create_task("seedream/text-to-image", model="seedream-4-5", input=PROMPT)
    error = info.value
    assert (type(error), error.code, error.status, error.status_code) == (cls, code, status, status)
    assert error.details == {"field": "prompt", "reason": "why"}
    assert sim.api_key not in str(error) and sim.api_key not in repr(error)


@pytest.mark.parametrize(
    ("state", "status", "code", "advice"),
    [
        ("revoked", 403, "KEY_REVOKED", "create a new key"),
        ("expired", 403, "KEY_EXPIRED", "create a new key"),
        ("token_expired", 401, "AUTH_TOKEN_EXPIRED", "create a new key"),
        ("forbidden", 403, "FORBIDDEN", "permission"),
        ("permission_denied", 403, "KEY_PERMISSION_DENIED", "permission"),
    ],
)
def test_key_states_give_their_codes_and_advice(
    client: Client, sim: Simulator, state: str, status: int, code: str, advice: str
) -> None:
    task_id = sim.submit(latency=10_000)
    sim.key_state = state
    with pytest.raises(AuthenticationError) as info:
        client.create_task("seedream/text-to-image", model="seedream-4-5", input=PROMPT)
    assert (info.value.code, info.value.status) == (code, status)
    assert advice in str(info.value)
    if advice == "create a new key":
        assert "MODELHUNTER_KEY" in str(info.value)
    if state == "permission_denied":  # reading is still allowed; creating is not
        assert client.get_task(task_id).id == task_id
    else:
        with pytest.raises(AuthenticationError, match=code):
            client.get_task(task_id)
    assert len(sim.task_ids) == 1


def test_missing_and_wrong_keys(sim: Simulator) -> None:
    none = httpx.get(f"{sim.url}/api/v1/balance")
    wrong = httpx.get(f"{sim.url}/api/v1/balance", headers={"Authorization": "Bearer river_test_nope"})
    assert (none.status_code, none.json()["error"]["code"]) == (401, "AUTH_REQUIRED")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "AUTH_INVALID_TOKEN")
    with Client("river_test_nope", sim.url) as c, pytest.raises(AuthenticationError) as info:
        c.balance()
    assert info.value.code == "AUTH_INVALID_TOKEN"


# ---------------------------------------------------------- cancel and retry
def test_cancel(client: Client, sim: Simulator) -> None:
    task_id = sim.submit(model="veo-3.1", latency=10_000)
    assert CANCEL_PATH == "/api/v1/tasks/{id}/cancel"
    cancelled = client.cancel_task(task_id)
    assert cancelled.status == "cancelled"
    assert client.get_task(task_id).status == "cancelled"
    with pytest.raises(ConflictError) as info:
        client.cancel_task(task_id)
    assert (info.value.code, info.value.status) == ("TASK_ALREADY_ENDED", 409)
    assert "cancelled" in str(info.value)
    with pytest.raises(NotFoundError):
        client.cancel_task("task_nope")


def test_retry_makes_a_new_charged_task_for_failed_or_expired_only(client: Client, sim: Simulator) -> None:
    failed = sim.submit(model="seedream-4-5", outcome="failed", latency=0.5, metadata={"k": "v"})
    running = sim.submit(model="seedream-4-5", latency=10_000)
    done = sim.submit(model="seedream-4-5", outcome="succeeded", latency=0.5)
    _wait_status(client, done, {"succeeded"})
    _wait_status(client, failed, {"failed"})
    before = sim.balance
    new = client.retry_task(failed)
    assert new.id != failed and new.original_task_id == failed
    assert (new.model, new.provider, new.type, new.status) == ("seedream-4-5", "seedream", "image", "pending")
    assert new.estimated_seconds is not None
    assert sim.balance == pytest.approx(before - 0.04)  # charged again
    assert client.get_task(new.id).original_task_id == failed
    assert {t.id: t.metadata for t in client.list_tasks(limit=100).tasks}[new.id] == {"k": "v"}
    assert client.get_task(failed).status == "failed"  # the original is unchanged
    for task_id in (running, done):
        with pytest.raises(ConflictError) as info:
            client.retry_task(task_id)
        assert info.value.code == "TASK_NOT_RETRYABLE" and info.value.status == 409
    sim.expire_now(done)
    assert {t.id: t.status for t in client.list_tasks(limit=100).tasks}[done] == "expired"
    assert client.retry_task(done).original_task_id == done  # expired: allowed


def test_a_dropped_retry_answer_is_not_repeated(client: Client, sim: Simulator) -> None:
    failed = sim.submit(model="seedream-4-5", outcome="failed", latency=0.5)
    _wait_status(client, failed, {"failed"})
    sim.drop_creations = 1
    with pytest.raises(CreationUnknownError, match="may exist"):
        client.retry_task(failed)
    assert sim.calls["retry"] == 1 and len(sim.task_ids) == 2


# -------------------------------------------------------------------- list
def _many(sim: Simulator, n: int) -> list[str]:
    models = ["seedream-4-5", "viduq3-turbo", "kling-v3"]
    return [
        sim.submit(
            model=models[i % 3],
            outcome="failed" if i % 5 == 0 else "succeeded",
            latency=0.1,
            metadata={"project": f"p{i % 2}", "run": i},
        )
        for i in range(n)
    ]


def test_list_pages_newest_first_with_filters(client: Client, sim: Simulator) -> None:
    ids = _many(sim, 25)
    time.sleep(0.05)
    pages = list(client.iter_pages(limit=10))
    assert [len(p.tasks) for p in pages] == [10, 10, 5]
    assert [p.has_more for p in pages] == [True, True, False]
    assert {p.total for p in pages} == {25}
    assert [t.id for p in pages for t in p.tasks] == ids[::-1]  # newest first
    first = pages[0].tasks[0]
    assert first.result == [] and "result" not in first.raw
    assert first.cost is not None and first.progress is not None and first.metadata is not None
    vidu = [t for p in client.iter_pages(provider="vidu", limit=3) for t in p.tasks]
    assert [t.id for t in vidu] == ids[1::3][::-1]
    kling = client.list_tasks(model="kling-v3", status="failed", limit=100)
    assert {t.id for t in kling.tasks} == {ids[i] for i in range(2, 25, 3) if i % 5 == 0}


def test_list_dates_bound_the_creation_time(client: Client, sim: Simulator) -> None:
    batches, marks = [], []
    for _ in range(3):
        marks.append(datetime.now(UTC))
        time.sleep(0.02)
        batches.append(_many(sim, 4))
        time.sleep(0.02)
    window = client.list_tasks(since=marks[1], until=marks[2], limit=100).tasks
    assert [t.id for t in window] == batches[1][::-1]
    since = client.list_tasks(since=marks[1].isoformat(), limit=100).tasks
    assert {t.id for t in since} == set(batches[1] + batches[2])


def test_list_limit_is_checked_on_both_sides(client: Client, sim: Simulator) -> None:
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match="1 to 100"):
            client.list_tasks(limit=bad)  # type: ignore[arg-type]
    assert sim.calls["list"] == 0
    for raw in ("0", "101", "x"):
        answer = httpx.get(f"{sim.url}/api/v1/tasks", params={"limit": raw}, headers=_headers(sim))
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "VALIDATION_ERROR")
    with pytest.raises(InvalidRequestError) as info:
        client.list_tasks(cursor="not-ours")
    assert info.value.field == "cursor"
    with pytest.raises(InvalidRequestError, match="startDate"):
        client.list_tasks(since="yesterday")


def test_list_tasks_frame_over_pages(sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    ids = _many(sim, 100)
    time.sleep(0.02)
    mark = datetime.now(UTC)
    time.sleep(0.02)
    ids += _many(sim, 320)  # 420 tasks: five pages of 100
    time.sleep(0.1)
    frame = mh_notebook.list_tasks(api_key=sim.api_key, base_url=sim.url)
    assert list(frame["task_id"]) == ids[::-1]
    assert "list_tasks" in capsys.readouterr().err  # the progress bar
    history_like = [
        "task_id",
        "provider",
        "model",
        "type",
        "status",
        "created_at",
        "completed_at",
        "latency_s",
    ]
    assert set(history_like) <= set(frame.columns)
    for extra in ("cost", "progress", "started_at", "original_task_id", "metadata.project", "metadata.run"):
        assert extra in frame.columns
    assert str(frame["created_at"].dtype) == "datetime64[ns, UTC]"
    by_model = frame.groupby("model", observed=True)["cost"].sum()
    kling = sum(1 for i in range(100) if i % 3 == 2) + sum(1 for i in range(320) if i % 3 == 2)
    assert by_model["kling-v3"] == pytest.approx(kling * 0.126 * 5)
    assert (frame["queue_s"] + frame["run_s"]).dropna().sub(frame["latency_s"]).abs().max() < 1e-6
    some = mh_notebook.list_tasks(
        since=mark,
        status="failed",
        provider="seedream",
        model="seedream-4-5",
        api_key=sim.api_key,
        base_url=sim.url,
    )
    expected = {ids[i] for i in range(100, 420) if (i - 100) % 3 == 0 and (i - 100) % 5 == 0}
    assert set(some["task_id"]) == expected and set(some["metadata.project"]) <= {"p0", "p1"}
    assert (some["status"] == "failed").all()


def test_list_tasks_of_nothing_has_the_columns(sim: Simulator) -> None:
    frame = mh_notebook.list_tasks(api_key=sim.api_key, base_url=sim.url)
    assert frame.empty and "cost" in frame.columns and "task_id" in frame.columns


# ----------------------------------------------------------------- GET fields
@pytest.mark.parametrize("carries", [True, False])
def test_get_with_and_without_the_list_fields(carries: bool) -> None:
    with Simulator(seed=1, speed=SPEED, get_has_list_fields=carries) as sim:
        task_id = sim.submit(model="viduq3-pro", latency=10_000, metadata={"shot": 3})
        time.sleep(0.05)
        with Client(sim.api_key, sim.url) as c:
            task = c.get_task(task_id)
            listed = c.list_tasks().tasks[0]
    present = (task.cost, task.metadata, task.progress is not None)
    assert present == ((0.575, {"shot": 3}, True) if carries else (None, None, False))
    assert (listed.cost, listed.metadata) == (0.575, {"shot": 3})  # the list always has them
    assert listed.started_at is not None or listed.status in ("pending", "queued")


def test_optional_fields_never_fail_a_task() -> None:
    task = Task.from_api(
        {
            "id": "t",
            "status": "running",
            "progress": "lots",
            "cost": {},
            "metadata": [1],
            "started_at": "soon",
        }
    )
    assert (task.progress, task.cost, task.metadata, task.started_at) == (None, None, None, None)
    assert task.raw["progress"] == "lots"


def test_balance(client: Client, sim: Simulator) -> None:
    sim.balance = 45.0
    answer = httpx.get(f"{sim.url}/api/v1/balance", headers=_headers(sim)).json()["data"]
    assert answer["balance"] == 45.0 and answer["billingMode"] == "prepaid"
    balance = client.balance()
    assert (balance.balance, balance.billing_mode) == (45.0, "prepaid")


def test_sim_submit_keeps_old_ids_and_takes_documented_ones(sim: Simulator) -> None:
    old = sim.submit(model="seedream-4.5", outcome="succeeded", latency=0.1)
    new = sim.submit(model="seedream-4-5", outcome="succeeded", latency=0.1)
    video = sim.submit(model="seedance-1-0-lite-i2v", latency=0.1)  # an image-to-video model
    time.sleep(0.05)
    with Client(sim.api_key, sim.url) as c:
        assert (c.get_task(old).provider, c.get_task(old).model) == ("bytedance", "seedream-4.5")
        assert (c.get_task(new).provider, c.get_task(new).model) == ("seedream", "seedream-4-5")
        assert c.get_task(video).type == "video"
    assert sim.calls["create"] == 0  # a helper over the creation rules, not a request


# ------------------------------------------------------------- watcher verbs
def test_watcher_submit_cancel_retry_balance(sim: Simulator) -> None:
    sim.balance, sim.fail_rate = 100.0, 0.0
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as w:
        task_id = w.submit("seedream/text-to-image", model="seedream-4-5", input=PROMPT, metadata={"a": 1})
        assert w.watches(task_id) and sim.calls["create"] == 1
        long = w.submit("vidu/text-to-video", model="viduq3-pro", input=PROMPT | {"duration": 8})
        assert w.cancel(long).status == "cancelled"
        w.wait(timeout=60)
        assert w.tasks[long].status == "cancelled"
        with pytest.raises(ConflictError) as info:
            w.cancel(long)
        assert info.value.code == "TASK_ALREADY_ENDED"
        failed = sim.submit(model="seedream-4-5", outcome="failed", latency=0.5)
        w.watch(failed)
        w.wait(timeout=60)
        again = w.retry(failed)
        assert w.watches(again)
        w.wait(timeout=60)
        assert w.tasks[again].original_task_id == failed
        with pytest.raises(ConflictError):
            w.retry(again)  # succeeded: not retryable
        assert w.balance() == pytest.approx(sim.balance)
        assert sim.balance == pytest.approx(100.0 - 0.04 - 0.92 - 0.04 - 0.04)
        texts = [repr(w), repr(w._actions), str(info.value), repr(info.value)]
    assert not any(sim.api_key in text for text in texts)


def test_the_key_never_appears_in_new_messages(sim: Simulator) -> None:
    key = sim.api_key
    errors: list[BaseException] = []
    with Client(key, sim.url, retry=RetryPolicy(max_attempts=1)) as c:
        sim.drop_creations = 1
        sim.inject_error(400, "MISSING_PARAMETER", f"echo {key}", {"field": "prompt", "reason": key})
        for call in (
            lambda: c.create_task("seedream/text-to-image", model="seedream-4-5", input={}),
            lambda: c.create_task("seedream/text-to-image", model="seedream-4-5", input=PROMPT),
            lambda: c.cancel_task("task_nope"),
            lambda: c.list_tasks(cursor="x"),
        ):
            with pytest.raises(mh_notebook.ModelHunterError) as info:
                call()
            errors.append(info.value)
        assert key not in repr(c)
    assert {type(e) for e in errors} >= {InvalidRequestError, CreationUnknownError, NotFoundError}
    for error in errors:
        assert (
            key not in str(error)
            and key not in repr(error)
            and key not in repr(getattr(error, "details", ""))
        )


def test_a_stopped_watcher_creates_nothing(sim: Simulator) -> None:
    w = TaskWatcher(sim.api_key, sim.url, store=None, display="none")
    w.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        w.submit("seedream/text-to-image", model="seedream-4-5", input=PROMPT)
    assert sim.calls["create"] == 0 and not sim.task_ids


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    """One simulator for every example of a property (each example lists its own tasks)."""
    with Simulator(seed=2, speed=SPEED) as s:
        yield s


@settings(max_examples=15)
@given(n=st.integers(min_value=0, max_value=25), limit=st.integers(min_value=1, max_value=100))
def test_pages_hold_every_task_once_newest_first(shared_sim: Simulator, n: int, limit: int) -> None:
    sim = shared_sim
    with Client(sim.api_key, sim.url) as c:
        mark = datetime.now(UTC)
        time.sleep(0.002)
        ids = [sim.submit(model="seedream-4-5", latency=10_000) for _ in range(n)]
        pages = list(c.iter_pages(since=mark, limit=limit))
    assert [t.id for p in pages for t in p.tasks] == ids[::-1]
    assert len(pages) == max(1, -(-n // limit))
    assert all(p.total == n for p in pages)
