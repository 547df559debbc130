"""The simulator: contract, catalogue, real media, expiry, creation endpoint, CLI."""

from __future__ import annotations

import email.utils
import math
import re
import signal
import time

import httpx
import pytest

from mh_notebook import Client, Task
from mh_notebook.sim import CATALOGUE, Simulator
from mh_notebook.sim.process import SimulatorProcess

MAGIC = {
    "mp4": (4, b"ftyp"),
    "png": (0, b"\x89PNG\r\n\x1a\n"),
    "jpg": (0, b"\xff\xd8\xff"),
    "mp3": (0, b"ID3"),
}
EXPECTED_IDS = {
    "video": {
        "viduq3-pro",
        "viduq3-turbo",
        "seedance-1.5-pro",
        "seedance-1.0-pro",
        "seedance-1.0-lite",
        "kling-v3.0",
        "kling-v2.6",
        "veo-3.1",
        "veo-3.1-fast",
        "grok-imagine-video",
        "wan-2.6",
    },
    "image": {"seedream-5.0-lite", "seedream-4.5", "seedream-4.0", "seedream-3.0", "nano-banana-2"},
    "audio": {"eleven-v3"},
}
RANGES = {"video": (20, 180), "image": (3, 20), "audio": (2, 10)}


def _headers(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_key}"}


def _date(response: httpx.Response) -> float:
    """The response's HTTP ``Date`` header as epoch seconds."""
    return email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()


WHOLE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_catalogue_has_the_agreed_models() -> None:
    for kind, ids in EXPECTED_IDS.items():
        assert {m for m, s in CATALOGUE.items() if s.type == kind} == ids


@pytest.mark.parametrize("model", sorted(CATALOGUE))
def test_latencies_fall_in_the_type_range(model: str) -> None:
    sim = Simulator(seed=3, speed=1, fail_rate=0.0)
    lo, hi = RANGES[CATALOGUE[model].type]
    for _ in range(40):
        t = sim.timeline(sim.submit(model=model))
        assert lo <= t["end"] - t["created"] <= hi
        assert t["created"] < t["queued"] < t["running"] < t["end"]


def test_statuses_follow_the_timeline() -> None:
    with Simulator(seed=0, speed=1) as sim, Client(sim.api_key, sim.url) as client:
        task_id = sim.submit(model="veo-3.1", outcome="succeeded")
        t = sim.timeline(task_id)
        seen = {
            sim.data(sim._tasks[task_id], at)["status"]
            for at in (t["created"], t["queued"] + 0.01, t["running"] + 0.01, t["end"] + 0.01)
        }
        assert seen == {"pending", "queued", "running", "succeeded"}
        assert client.get_task(task_id).status == "pending"


def test_seed_makes_runs_repeatable() -> None:
    a, b = Simulator(seed=42), Simulator(seed=42)
    ids_a = [a.submit(model=m) for m in sorted(CATALOGUE)]
    ids_b = [b.submit(model=m) for m in sorted(CATALOGUE)]
    assert not set(ids_a) & set(ids_b)  # ids are unique across runs (journals outlive simulators)
    assert [a.timeline(i)["outcome"] for i in ids_a] == [b.timeline(i)["outcome"] for i in ids_b]
    durations = [a.timeline(i)["end"] - a.timeline(i)["created"] for i in ids_a]
    assert durations == pytest.approx(
        [b.timeline(i)["end"] - b.timeline(i)["created"] for i in ids_b], abs=0.01
    )


def test_failure_rate_is_realistic() -> None:
    sim = Simulator(seed=5, speed=1)
    outcomes = [sim.timeline(sim.submit(model="grok-imagine-video"))["outcome"] for _ in range(2000)]
    assert 0.05 < outcomes.count("failed") / len(outcomes) < 0.11


@pytest.mark.parametrize("fmt", ["mp4", "png", "jpg", "mp3"])
def test_media_are_real_files_with_exact_sizes(sim: Simulator, fmt: str) -> None:
    model = next(m for m, s in CATALOGUE.items() if s.format == fmt)
    task_id = sim.submit(model=model, outcome="succeeded", latency=0.5)
    time.sleep(0.02)
    with Client(sim.api_key, sim.url) as client:
        task = client.get_task(task_id)
    item = task.result[0]
    assert item.format == fmt
    assert item.url is not None
    response = httpx.get(item.url)
    assert response.status_code == 200
    offset, magic = MAGIC[fmt]
    assert response.content[offset : offset + len(magic)] == magic
    assert item.size_bytes == len(response.content)
    assert (item.duration is None) == (CATALOGUE[model].type == "image")
    assert response.headers["content-type"].split("/")[0] in ("video", "image", "audio")


def test_media_range_requests(sim: Simulator) -> None:
    task_id = sim.submit(model="viduq3-turbo", outcome="succeeded", latency=0.5)
    time.sleep(0.02)
    url = Client(sim.api_key, sim.url).get_task(task_id).result[0].url
    assert url is not None
    part = httpx.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert len(part.content) == 100
    assert part.headers["content-range"].endswith(f"/{len(httpx.get(url).content)}")


def test_url_expiry_as_documented() -> None:
    with Simulator(seed=0, speed=900) as sim, Client(sim.api_key, sim.url) as client:  # URLs live 1 s
        task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=1)
        time.sleep(0.01)
        first = client.get_task(task_id)
        url = first.result[0].url
        assert url is not None and httpx.get(url).status_code == 200
        time.sleep(1.05)
        assert httpx.get(url).status_code == 403  # the signed URL has expired
        expired = client.get_task(task_id)
        assert expired.status == "expired"
        assert expired.result == []
        assert expired.completed_at == first.completed_at
        fresh = client.get_task(task_id)
        assert fresh.status == "succeeded"
        assert fresh.result[0].url != url
        assert httpx.get(fresh.result[0].url or "").status_code == 200


def test_tampered_signature_is_refused(sim: Simulator) -> None:
    task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=0.1)
    time.sleep(0.01)
    url = Client(sim.api_key, sim.url).get_task(task_id).result[0].url or ""
    assert httpx.get(url[:-4] + "0000").status_code == 403


def test_create_over_http_and_errors(sim: Simulator) -> None:
    created = httpx.post(
        f"{sim.url}/sim/v1/tasks", json={"model": "eleven-v3", "prompt": "hi"}, headers=_headers(sim)
    )
    assert created.status_code == 201
    task = Task.from_api(created.json())
    assert (task.type, task.provider, task.status) == ("audio", "elevenlabs", "pending")
    unknown = httpx.post(f"{sim.url}/sim/v1/tasks", json={"model": "gpt-video-9"}, headers=_headers(sim))
    assert unknown.status_code == 400
    assert "unknown model 'gpt-video-9'" in unknown.json()["error"]["message"]
    mismatch = httpx.post(
        f"{sim.url}/sim/v1/tasks", json={"model": "veo-3.1", "type": "audio"}, headers=_headers(sim)
    )
    assert mismatch.status_code == 400
    assert httpx.post(f"{sim.url}/sim/v1/tasks", json={"model": "veo-3.1"}).status_code == 401


def test_cancel(sim: Simulator) -> None:
    task_id = sim.submit(model="veo-3.1", latency=10_000)
    answer = httpx.post(f"{sim.url}/api/v1/tasks/{task_id}/cancel", headers=_headers(sim))
    assert answer.json()["data"]["status"] == "cancelled"
    assert Client(sim.api_key, sim.url).get_task(task_id).status == "cancelled"
    again = httpx.post(f"{sim.url}/api/v1/tasks/{task_id}/cancel", headers=_headers(sim))
    assert again.status_code == 409


def test_error_envelopes(sim: Simulator) -> None:
    task_id = sim.submit()
    r401 = httpx.get(f"{sim.url}/api/v1/tasks/{task_id}", headers={"Authorization": "Bearer nope"})
    r404 = httpx.get(f"{sim.url}/api/v1/tasks/task_nope", headers=_headers(sim))
    assert (r401.status_code, r401.json()["success"], r401.json()["error"]["code"]) == (
        401,
        False,
        "AUTH_INVALID_TOKEN",
    )
    assert (r404.status_code, r404.json()["error"]["code"]) == (404, "TASK_NOT_FOUND")


def test_listens_on_loopback_only(sim: Simulator) -> None:
    assert sim.url.startswith("http://127.0.0.1:")
    assert sim._runner is not None
    assert all(addr[0] == "127.0.0.1" for addr in sim._runner.addresses)


def test_fault_rates_are_applied(sim: Simulator) -> None:
    sim.with_faults(rate_429=0.5, rate_html=0.5)
    task_id = sim.submit()
    codes = [httpx.get(f"{sim.url}/api/v1/tasks/{task_id}", headers=_headers(sim)) for _ in range(60)]
    n429 = sum(r.status_code == 429 for r in codes)
    nhtml = sum(r.headers["content-type"].startswith("text/html") for r in codes)
    assert n429 + nhtml == 60 and n429 > 10 and nhtml > 10
    assert all(r.headers["Retry-After"] == "1" for r in codes if r.status_code == 429)


def test_unknown_injected_fault_is_refused(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        sim.inject("explode")


def test_cli_serves_and_prints_url_and_key() -> None:
    with SimulatorProcess(speed=100) as proc:  # runs `mh-notebook sim` and reads what it prints
        assert proc.url.startswith("http://127.0.0.1:")
        headers = {"Authorization": f"Bearer {proc.api_key}"}
        created = httpx.post(f"{proc.url}/sim/v1/tasks", json={"model": "seedream-4.5"}, headers=headers)
        task_id = created.json()["data"]["id"]
        assert Client(proc.api_key, proc.url).get_task(task_id).id == task_id
        assert proc.process is not None
        proc.process.send_signal(signal.SIGINT)  # Ctrl-C ends it cleanly
        assert proc.process.wait(10) == 0


# ------------------------------------------------- real-service conditions
@pytest.mark.parametrize("skew", [-120.0, 0.0, 120.0])
def test_clock_skew_shifts_timestamps_and_date_not_latency(skew: float) -> None:
    with Simulator(seed=0, speed=100, clock_skew=skew) as sim, httpx.Client() as http:
        task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=5)  # 0.05 s
        true = sim.timeline(task_id)
        time.sleep(0.1)
        before = time.time()
        answer = http.get(f"{sim.url}/api/v1/tasks/{task_id}", headers=_headers(sim))
        after = time.time()
        task = Task.from_api(answer.json())
        assert task.status == "succeeded"
        assert task.created_at is not None and task.completed_at is not None
        assert task.created_at.timestamp() == pytest.approx(true["created"] + skew, abs=0.002)
        assert task.completed_at.timestamp() == pytest.approx(true["end"] + skew, abs=0.002)
        assert task.latency == pytest.approx(true["end"] - true["created"], abs=0.002)  # unchanged
        assert (true["created_at"], true["completed_at"]) == (
            answer.json()["data"]["created_at"],
            answer.json()["data"]["completed_at"],
        )
        assert true["created"] < time.time()  # the true timeline stays on the real clock
        assert before + skew - 2 <= _date(answer) <= after + skew + 2
        # Every response carries the skewed Date: errors, creation, media.
        others = [
            http.get(f"{sim.url}/api/v1/tasks/task_nope", headers=_headers(sim)),
            http.get(f"{sim.url}/api/v1/tasks/{task_id}", headers={"Authorization": "Bearer nope"}),
            http.post(f"{sim.url}/sim/v1/tasks", json={"model": "veo-3.1"}, headers=_headers(sim)),
            http.get(task.result[0].url or ""),
            http.get(f"{sim.url}/no/such/route"),
        ]
        now = time.time()
        assert [r.status_code for r in others] == [404, 401, 201, 200, 404]
        for response in others:
            assert before + skew - 2 <= _date(response) <= now + skew + 2


@pytest.mark.parametrize("whole_seconds", [False, True])
@pytest.mark.parametrize("skew", [0.0, -120.0])
def test_whole_seconds_timestamps(whole_seconds: bool, skew: float) -> None:
    with Simulator(seed=0, speed=100, whole_seconds=whole_seconds, clock_skew=skew) as sim:
        task_id = sim.submit(model="seedream-4.0", outcome="failed", latency=5)
        time.sleep(0.1)
        body = httpx.get(f"{sim.url}/api/v1/tasks/{task_id}", headers=_headers(sim)).json()
        true = sim.timeline(task_id)
    data = body["data"]
    pattern = WHOLE if whole_seconds else MILLIS
    assert pattern.match(data["created_at"]) and pattern.match(data["completed_at"])
    assert (true["created_at"], true["completed_at"]) == (data["created_at"], data["completed_at"])
    task = Task.from_api(body)
    assert task.created_at is not None and task.completed_at is not None
    if whole_seconds:
        assert task.created_at.timestamp() == math.floor(true["created"] + skew)
        assert task.completed_at.timestamp() == math.floor(true["end"] + skew)
        assert task.created_at.microsecond == task.completed_at.microsecond == 0
    else:
        assert task.created_at.timestamp() == pytest.approx(true["created"] + skew, abs=0.002)


def test_rate_limit_answers_429_with_retry_after_and_recovers() -> None:
    with Simulator(seed=0, speed=100, rate_limit=5, rate_burst=5) as sim, httpx.Client() as http:
        task_id = sim.submit(model="veo-3.1", latency=10_000)
        url = f"{sim.url}/api/v1/tasks/{task_id}"
        start = time.monotonic()
        answers = [http.get(url, headers=_headers(sim)) for _ in range(20)]
        elapsed = time.monotonic() - start
        accepted = [r for r in answers if r.status_code == 200]
        limited = [r for r in answers if r.status_code == 429]
        assert len(accepted) + len(limited) == 20
        assert [r.status_code for r in answers[:5]] == [200] * 5  # the burst
        assert limited, "a burst of 20 at 5 req/s with burst 5 must be limited"
        assert len(accepted) <= 5 + 5 * elapsed + 1  # refill is real time
        for r in limited:
            assert r.json() == {
                "success": False,
                "error": {"code": "RATE_LIMITED", "message": r.json()["error"]["message"]},
            }
            assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1
            # The next token is at most 1/5 s away, unless refused requests took tokens.
            assert r.headers["Retry-After"] == "1"
            assert "Date" in r.headers
        assert sim.requests[task_id] == 20
        assert sum(1 for _, tid, code in sim.request_log if tid == task_id and code == 429) == len(limited)
        # The limit is per API key: another key is not limited (and is refused as unknown).
        assert http.get(url, headers={"Authorization": "Bearer other"}).status_code == 401
        # Refused requests took no token: after Retry-After the key is served again.
        time.sleep(int(limited[-1].headers["Retry-After"]))
        assert http.get(url, headers=_headers(sim)).status_code == 200


@pytest.mark.parametrize("limit", [None, 1000.0])
def test_no_429_within_the_limit(limit: float | None) -> None:
    with Simulator(seed=0, speed=100, rate_limit=limit) as sim, httpx.Client() as http:
        task_id = sim.submit(model="veo-3.1", latency=10_000)
        codes = [
            http.get(f"{sim.url}/api/v1/tasks/{task_id}", headers=_headers(sim)).status_code
            for _ in range(40)
        ]
        assert codes == [200] * 40
        assert 429 not in {code for _, _, code in sim.request_log}


def test_options_are_settable_while_serving(sim: Simulator) -> None:
    task_id = sim.submit(model="veo-3.1", latency=10_000)
    url = f"{sim.url}/api/v1/tasks/{task_id}"
    sim.clock_skew, sim.whole_seconds = 600.0, True
    sim.rate_limit, sim.rate_burst = 0.1, 1  # one request, then 10 s until the next token
    first, second = httpx.get(url, headers=_headers(sim)), httpx.get(url, headers=_headers(sim))
    assert (first.status_code, second.status_code) == (200, 429)
    assert int(second.headers["Retry-After"]) >= 5
    assert abs(_date(first) - (time.time() + 600)) <= 3
    created = first.json()["data"]["created_at"]
    assert WHOLE.match(created)
    created_at = Task.from_api(first.json()).created_at
    assert created_at is not None
    assert created_at.timestamp() == math.floor(sim.timeline(task_id)["created"] + 600)
    sim.rate_limit = None
    assert httpx.get(url, headers=_headers(sim)).status_code == 200
    with pytest.raises(ValueError, match="rate_limit"):
        sim.rate_limit = 0
    with pytest.raises(ValueError, match="rate_burst"):
        Simulator(rate_limit=5, rate_burst=0.5)


def test_cli_real_service_flags() -> None:
    proc = SimulatorProcess(speed=100)
    proc.args += ["--clock-skew", "-120", "--whole-seconds", "--rate-limit", "1"]
    with proc:
        headers = {"Authorization": f"Bearer {proc.api_key}"}
        created = httpx.post(f"{proc.url}/sim/v1/tasks", json={"model": "seedream-4.5"}, headers=headers)
        assert WHOLE.match(created.json()["data"]["created_at"])
        assert abs(_date(created) - (time.time() - 120)) <= 3
        url = f"{proc.url}/api/v1/tasks/{created.json()['data']['id']}"
        with httpx.Client() as http:
            codes = [http.get(url, headers=headers).status_code for _ in range(10)]
        assert codes[0] == 200 and 429 in codes
