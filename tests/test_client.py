"""The clients against the simulator over real HTTP on 127.0.0.1, sync and async."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mh_notebook import (
    APIError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConfigurationError,
    MalformedResponseError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    Task,
)
from mh_notebook.client import parse_retry_after, resolve_settings
from mh_notebook.sim import Faults, Simulator

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_time=10)
Getter = Callable[..., Task]


def _sync_get(sim: Simulator, task_id: str, **kwargs: Any) -> Task:
    kwargs = {"api_key": sim.api_key, "base_url": sim.url, "retry": FAST} | kwargs
    with Client(**kwargs) as client:
        return client.get_task(task_id)


def _async_get(sim: Simulator, task_id: str, **kwargs: Any) -> Task:
    kwargs = {"api_key": sim.api_key, "base_url": sim.url, "retry": FAST} | kwargs

    async def run() -> Task:
        async with AsyncClient(**kwargs) as client:
            return await client.get_task(task_id)

    return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def get(request: pytest.FixtureRequest) -> Getter:
    """Fetch a task with the sync or the async client (the same contract for both)."""
    return _sync_get if request.param == "sync" else _async_get


def test_success_end_to_end(sim: Simulator, get: Getter) -> None:
    task_id = sim.submit(model="viduq3-turbo", outcome="succeeded", latency=1.0)  # 10 ms at speed 100
    time.sleep(0.05)
    task = get(sim, task_id)
    assert task.id == task_id
    assert task.status == "succeeded"
    assert (task.type, task.provider, task.model) == ("video", "vidu", "viduq3-turbo")
    item = task.result[0]
    assert item.format == "mp4"
    assert item.duration == 3.0
    assert item.url is not None and item.url.startswith(sim.url + "/media/")
    assert item.size_bytes == len(httpx.get(item.url).content)
    assert task.created_at is not None and task.completed_at is not None
    assert task.completed_at > task.created_at


def test_failure_carries_error(sim: Simulator, get: Getter) -> None:
    task_id = sim.submit(model="kling-v3.0", outcome="failed", latency=0.5, error_code="PROVIDER_ERROR")
    time.sleep(0.02)
    task = get(sim, task_id)
    assert task.status == "failed"
    assert task.error is not None and task.error.code == "PROVIDER_ERROR"
    assert task.error.message


def test_pending_task_reads_pending(sim: Simulator, get: Getter) -> None:
    task_id = sim.submit(model="veo-3.1", latency=10_000)
    task = get(sim, task_id)
    assert task.status in ("pending", "queued")
    assert task.completed_at is None


def test_wrong_key_is_refused_without_retry_or_leak(sim: Simulator, get: Getter) -> None:
    task_id = sim.submit()
    bad_key = "river_live_wrong-key-for-tests"
    with pytest.raises(AuthenticationError) as info:
        get(sim, task_id, api_key=bad_key)
    assert info.value.status_code == 401
    assert "MODELHUNTER_KEY" in str(info.value)
    assert bad_key not in str(info.value) and bad_key not in repr(info.value)
    assert sim.requests[task_id] == 1  # not retried


def test_unknown_task_is_not_found(sim: Simulator, get: Getter) -> None:
    with pytest.raises(NotFoundError) as info:
        get(sim, "task_doesnotexist")
    assert info.value.status_code == 404
    assert info.value.task_id == "task_doesnotexist"
    assert info.value.code == "TASK_NOT_FOUND"
    assert sim.requests["task_doesnotexist"] == 1


def test_retry_after_is_honoured(sim: Simulator, get: Getter) -> None:
    sim.faults = sim.with_faults(retry_after=0.6)
    task_id = sim.submit(latency=0.1)
    sim.inject("429")
    task = get(sim, task_id)
    assert task.id == task_id
    times = [t for t, tid, _ in sim.request_log if tid == task_id]
    statuses = [s for _, tid, s in sim.request_log if tid == task_id]
    assert statuses == [429, 200]
    assert times[1] - times[0] >= 0.6  # the client waited what the server asked


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
def test_a_retry_after_date_from_a_skewed_server_asks_what_it_says(skew: float) -> None:
    """Attack s25, B2, over HTTP: a server an hour off asks for 2 s as an HTTP date; the
    error carries about 2 s (whole-second dates: 1 to 3), not the 60 s cap nor 0."""
    faults = Faults(rate_429=1.0, retry_after=2.0, retry_after_date=True)
    with Simulator(clock_skew=skew, faults=faults) as sim, Client(sim.api_key, sim.url) as client:
        task_id = sim.submit(latency=100.0)
        with pytest.raises(RateLimitedError) as info:
            client.get_task(task_id, retry=False)
    assert info.value.retry_after is not None and 1.0 <= info.value.retry_after <= 3.0


@pytest.mark.parametrize(
    "faults",
    [
        ("503", "502", "504", "503"),
        ("html", "truncated", "html"),
        ("drop", "drop"),
        ("502", "drop", "truncated", "429"),
    ],
)
def test_transient_bursts_are_ridden_out(sim: Simulator, get: Getter, faults: tuple[str, ...]) -> None:
    sim.with_faults(retry_after=0.01)
    task_id = sim.submit(latency=0.1)
    sim.inject(*faults)
    assert get(sim, task_id).id == task_id
    assert sim.requests[task_id] == len(faults) + 1


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        (("503",) * 5, ServerError),
        (("html",) * 5, MalformedResponseError),
        (("drop",) * 5, NetworkError),
        (("429",) * 5, RateLimitedError),
    ],
)
def test_gives_up_after_max_attempts(
    sim: Simulator, get: Getter, faults: tuple[str, ...], error: type
) -> None:
    sim.with_faults(retry_after=0.01)
    task_id = sim.submit(latency=0.1)
    sim.inject(*faults)
    with pytest.raises(error) as info:
        get(sim, task_id, retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.01))
    assert info.value.task_id == task_id
    assert sim.requests[task_id] == 3


def test_500_is_not_retried(sim: Simulator, get: Getter) -> None:
    task_id = sim.submit(latency=0.1)
    sim.inject("500")
    with pytest.raises(ServerError) as info:
        get(sim, task_id)
    assert info.value.status_code == 500
    assert sim.requests[task_id] == 1


def test_timeout_then_success(sim: Simulator, get: Getter) -> None:
    sim.with_faults(slow_seconds=1.5)
    task_id = sim.submit(latency=0.1)
    sim.inject("slow")
    assert get(sim, task_id, timeout=0.3).id == task_id
    assert sim.requests[task_id] == 2


def test_timeout_gives_up_as_network_error(sim: Simulator, get: Getter) -> None:
    sim.with_faults(slow_seconds=1.5)
    task_id = sim.submit(latency=0.1)
    sim.inject("slow", "slow")
    with pytest.raises(NetworkError, match="Timeout"):
        get(sim, task_id, timeout=0.2, retry=RetryPolicy(max_attempts=2, initial_backoff=0.01))


def test_dead_server_is_network_error(get: Getter) -> None:
    dead = Simulator()
    dead.url = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(NetworkError) as info:
        get(dead, "task_x", retry=RetryPolicy(max_attempts=2, initial_backoff=0.01))
    assert info.value.task_id == "task_x"


def test_total_retry_time_is_bounded(sim: Simulator) -> None:
    task_id = sim.submit(latency=0.1)
    sim.inject(*["503"] * 50)
    start = time.monotonic()
    with (
        pytest.raises(ServerError),
        Client(sim.api_key, sim.url, retry=RetryPolicy(max_time=0.5, initial_backoff=0.1)) as c,
    ):
        c.get_task(task_id)
    assert time.monotonic() - start < 3.0
    assert 2 <= sim.requests[task_id] < 10


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "a/b", "a\\b", "a?b", "a#b", "a%2Fb", "a b", "a\tb", "a\nb", "a\x00b", None, 42]
)
def test_bad_task_ids_are_rejected_before_any_request(sim: Simulator, bad: Any) -> None:
    with Client(sim.api_key, sim.url) as client, pytest.raises(ValueError, match="invalid task id"):
        client.get_task(bad)
    assert sum(sim.requests.values()) == 0


def test_key_and_url_from_environment(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELHUNTER_API_KEY", raising=False)
    monkeypatch.setenv("MODELHUNTER_KEY", sim.api_key)
    monkeypatch.setenv("MODELHUNTER_BASE_URL", sim.url)
    task_id = sim.submit(latency=0.1)
    with Client() as client:
        assert client.base_url == sim.url
        assert client.get_task(task_id).id == task_id


def test_default_base_url_is_the_documented_api_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELHUNTER_BASE_URL", raising=False)
    client = Client(api_key="k")
    assert client.base_url == "https://api.modelhunter.ai"
    assert client._core.url("task_1") == "https://api.modelhunter.ai/api/v1/tasks/task_1"


@pytest.mark.parametrize(
    "given",
    [
        "https://api.modelhunter.ai/api/v1",
        "https://api.modelhunter.ai/api/v1/",
        "https://api.modelhunter.ai/",
    ],
)
def test_base_url_given_with_the_api_prefix(given: str) -> None:
    assert Client(api_key="k", base_url=given).base_url == "https://api.modelhunter.ai"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MODELHUNTER_KEY": "river_live_docs", "MODELHUNTER_API_KEY": "river_live_old"}, "river_live_docs"),
        ({"MODELHUNTER_API_KEY": "river_live_old"}, "river_live_old"),
        ({"MODELHUNTER_KEY": "  ", "MODELHUNTER_API_KEY": "river_live_old"}, "river_live_old"),
    ],
)
def test_key_from_the_documented_variable_first(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name in ("MODELHUNTER_KEY", "MODELHUNTER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert resolve_settings(None, None)[0] == expected
    assert resolve_settings("river_live_arg", None)[0] == "river_live_arg"  # the argument wins


def test_missing_key_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELHUNTER_API_KEY", raising=False)
    monkeypatch.delenv("MODELHUNTER_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="MODELHUNTER_KEY"):
        Client()


def test_key_never_leaks(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    task_id = sim.submit(latency=0.1)
    sim.inject("503", "drop")
    client = Client(sim.api_key, sim.url, retry=FAST)
    texts = [repr(client), str(client), repr(AsyncClient(sim.api_key, sim.url)), repr(client._core.key)]
    client.get_task(task_id)
    for fault in ("503", "html"):
        sim.inject(*[fault] * 3)
        with pytest.raises(APIError if fault == "503" else MalformedResponseError) as info:
            Client(sim.api_key, sim.url, retry=RetryPolicy(max_attempts=2, initial_backoff=0.01)).get_task(
                task_id
            )
        texts += [str(info.value), repr(info.value)]
    texts += [r.getMessage() for r in caplog.records]
    assert any("retrying" in t for t in texts)  # the log records were really captured
    assert all(sim.api_key not in t for t in texts)


def test_error_echoing_the_key_is_scrubbed() -> None:
    key = "river_live_secret-key-for-tests"

    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers["Authorization"]
        return httpx.Response(
            403, json={"success": False, "error": {"code": "FORBIDDEN", "message": f"bad {auth}"}}
        )

    client = Client(key, "https://api.test", transport=httpx.MockTransport(echo))
    with pytest.raises(AuthenticationError) as info:
        client.get_task("t1")
    assert key not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("100000", 60.0),  # capped
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("garbage", None),
        ("nan", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(header, cap=60.0, now=now) == expected


@pytest.mark.parametrize(
    ("retry_after", "date", "expected"),
    [
        ("Wed, 21 Oct 2015 08:28:02 GMT", "Wed, 21 Oct 2015 08:28:00 GMT", 2.0),  # server 1 h ahead
        ("Wed, 21 Oct 2015 06:28:02 GMT", "Wed, 21 Oct 2015 06:28:00 GMT", 2.0),  # 1 h behind
        ("Wed, 21 Oct 2015 07:28:02 GMT", "not a date", 2.0),  # no usable Date: this machine's clock
        ("5", "Wed, 21 Oct 2015 08:28:00 GMT", 5.0),
        ("Wed Oct 21 08:28:02 2015", "Wed, 21 Oct 2015 08:28:00 GMT", 2.0),  # asctime: UTC too
    ],
)
@pytest.mark.usefixtures("new_york")  # local time is not UTC: the asctime form once read 60 s
def test_a_retry_after_date_is_read_on_the_servers_clock(
    retry_after: str, date: str, expected: float
) -> None:
    """Attack s25, B2: an HTTP-date ``Retry-After`` is a time on the server's clock; read on
    this machine's, a server 1 h ahead that asked for 2 s was waited 60 s (the cap) and
    one behind was hammered (0 s)."""
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC on this machine
    assert parse_retry_after(retry_after, cap=60.0, now=now, date=date) == expected
