"""The embedded ModelHunter simulator: a real HTTP server (aiohttp) on 127.0.0.1.

It speaks the documented contract (``GET /api/v1/tasks/{id}``) and adds endpoints of
its own, which are **not** part of the ModelHunter API:

- ``POST /sim/v1/tasks`` with ``{"model": ..., "type": ..., "prompt": ...}`` (and the
  optional test knobs ``outcome``, ``latency``, ``error_code``, ``error_message``)
  creates a task and answers the task envelope with HTTP 201;
- ``POST /sim/v1/tasks/{id}/cancel`` cancels a task that has not ended;
- ``GET /media/{id}/{n}.{format}?expires=..&signature=..`` serves result files.

Time: every duration of the catalogue is divided by ``speed``. Timestamps are real
wall-clock UTC with millisecond precision unless the options below say otherwise.

Real-service conditions (for benchmarks and tests of clients; all off by default, all
constructor arguments that are also plain attributes, settable while serving, and flags of
``mh-notebook sim``):

- ``clock_skew`` (``--clock-skew``): the server's clock runs this many seconds ahead of
  the real one (negative: behind), as a real service's clock is not the client's. It
  shifts every timestamp reported (``created_at``, ``completed_at``) and the HTTP ``Date``
  header of every response. The true timeline (phases, URL expiry, ``timeline()``'s epoch
  floats) stays on the real clock.
- ``whole_seconds`` (``--whole-seconds``): timestamps are reported floored to whole
  seconds (``2025-01-15T10:00:00Z``), like the API documentation's example bodies.
- ``rate_limit``, ``rate_burst`` (``--rate-limit``, ``--rate-burst``): ``GET
  /api/v1/tasks/{id}`` is limited per API key (the ``Authorization`` header) by a token
  bucket of ``rate_limit`` requests per real second (regardless of ``speed``) and
  ``rate_burst`` tokens (default ``max(1, rate_limit)``). Over the limit the answer is 429
  with the ``RATE_LIMITED`` error envelope and ``Retry-After`` in whole seconds (the
  ceiling of the wait for the next token, at least 1); rejected requests take no token.

Every response the application answers carries a ``Date`` header (HTTP-date, 1 s
resolution) from the server's clock, skew included.

Expiry: a result URL is valid for ``900 / speed`` seconds from when it was issued
(at completion, then at each re-issue). After that the media URL answers 403, and the
next ``GET`` of the task answers ``status: "expired"`` (no ``result``) and re-issues the
URL; the ``GET`` after that answers ``succeeded`` with the fresh URL.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import math
import random
import secrets
import threading
import time
import urllib.parse
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Self

from aiohttp import web

from .catalogue import CATALOGUE, ERRORS, ModelSpec
from .media import MediaFile, media_for

__all__ = ["Faults", "SimTask", "Simulator"]

URL_LIFETIME = 900.0
_OUTCOMES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Faults:
    """Rates (0..1, per status request) of injected faults; they add up to at most 1."""

    rate_429: float = 0.0
    """429 with the error envelope and ``Retry-After: retry_after``."""
    retry_after: float = 1.0
    rate_5xx: float = 0.0
    """500/502/503/504, half with the JSON envelope and half with an HTML page."""
    rate_html: float = 0.0
    """200 with a proxy's HTML page instead of JSON."""
    rate_truncated: float = 0.0
    """200 with the JSON body cut in half."""
    rate_drop: float = 0.0
    """The connection is closed without an answer."""
    rate_slow: float = 0.0
    """The right answer, after ``slow_seconds``."""
    slow_seconds: float = 2.0

    def pick(self, r: float) -> str | None:
        """The fault for a uniform draw ``r`` in [0, 1), or ``None``."""
        for name in ("429", "5xx", "html", "truncated", "drop", "slow"):
            rate = getattr(self, f"rate_{name}")
            if r < rate:
                return name
            r -= rate
        return None


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


def _iso(t: float, whole_seconds: bool = False) -> str:
    """ISO-8601 UTC with ``Z``: milliseconds, or whole seconds (floored)."""
    if whole_seconds:
        return datetime.fromtimestamp(math.floor(t), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _TokenBucket:
    """A token bucket on real (monotonic) time; a refused request takes no token."""

    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens, self.last = tokens, now

    def take(self, rate: float, burst: float, now: float) -> float:
        """Take a token and return 0, or return the seconds until one is available."""
        self.tokens = min(burst, self.tokens + max(0.0, now - self.last) * rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


def _envelope_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = json.dumps({"success": False, "error": {"code": code, "message": message}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


_HTML_PAGE = "<html><head><title>{0}</title></head><body><h1>{0}</h1><hr>nginx</body></html>"


class Simulator:
    """A ModelHunter API simulator on 127.0.0.1, for tests, demos and benchmarks.

    ``with Simulator(seed=0, speed=50) as sim:`` starts it in a background thread on a
    free port; ``sim.url`` and ``sim.api_key`` are what a client needs, and
    ``sim.submit(model="viduq3-turbo")`` creates a task.

    Real-service conditions (see the module docstring), all settable after construction:

    - ``clock_skew``: seconds the server's clock runs ahead of the real one (negative:
      behind); shifts ``created_at``, ``completed_at`` and every ``Date`` header.
    - ``whole_seconds``: report timestamps floored to whole seconds instead of milliseconds.
    - ``rate_limit``: requests per real second allowed on ``GET /api/v1/tasks/{id}`` per API
      key (``None``: unlimited); over it, 429 ``RATE_LIMITED`` with ``Retry-After``.
    - ``rate_burst``: the token bucket's size (``None``: ``max(1, rate_limit)``).

    :meth:`add_key` accepts more keys (accounts); ``requests_by_key`` counts each key's requests.
    """

    def __init__(
        self,
        *,
        seed: int | None = 0,
        speed: float = 1.0,
        port: int = 0,
        api_key: str | None = None,
        faults: Faults | None = None,
        fail_rate: float | None = None,
        url_lifetime: float | None = None,
        host: str = "127.0.0.1",
        clock_skew: float = 0.0,
        whole_seconds: bool = False,
        rate_limit: float | None = None,
        rate_burst: float | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.clock_skew = float(clock_skew)
        """Seconds the server's clock runs ahead of the real one (negative: behind)."""
        self.whole_seconds = bool(whole_seconds)
        """Report timestamps floored to whole seconds (else milliseconds)."""
        self._rate_limit: float | None = None
        self._rate_burst: float | None = None
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self._buckets: dict[str, _TokenBucket] = {}
        self.speed = float(speed)
        self.url_lifetime = URL_LIFETIME / self.speed if url_lifetime is None else float(url_lifetime)
        """Seconds a result URL stays valid (default 15 minutes divided by ``speed``)."""
        self.api_key = api_key or "river_test_sim" + secrets.token_hex(12)
        self.faults = faults or Faults()
        self.fail_rate = fail_rate
        self._host, self._port = host, port
        self._rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else seed + 1)
        self._secret = secrets.token_bytes(16)
        self._tasks: dict[str, SimTask] = {}
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        """Status requests received per task id (faulted answers included)."""
        self.request_log: deque[tuple[float, str, int]] = deque(maxlen=500_000)
        """``(time, task_id, http_status)`` of recent status requests; 0 = dropped."""
        self._extra_keys: list[str] = []
        self.requests_by_key: Counter[tuple[str, str | None]] = Counter()
        """Status requests per ``(task_id, key)``: the accepted key the request carried, or
        ``None`` for any other ``Authorization`` (a refused key is never stored)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def rate_limit(self) -> float | None:
        """Status requests per real second allowed per API key; ``None``: unlimited."""
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ValueError(f"rate_limit must be > 0 or None, got {value!r}")
        self._rate_limit = None if value is None else float(value)

    @property
    def rate_burst(self) -> float | None:
        """Size of each API key's token bucket; ``None``: ``max(1, rate_limit)``."""
        return self._rate_burst

    @rate_burst.setter
    def rate_burst(self, value: float | None) -> None:
        if value is not None and not value >= 1:
            raise ValueError(f"rate_burst must be >= 1 or None, got {value!r}")
        self._rate_burst = None if value is None else float(value)

    def server_time(self) -> float:
        """The server's clock: real time plus ``clock_skew`` (epoch seconds)."""
        return time.time() + self.clock_skew

    def stamp(self, t: float) -> str:
        """How the server reports the real instant ``t``: skewed, in ms or whole seconds."""
        return _iso(t + self.clock_skew, self.whole_seconds)

    def add_key(self, key: str | None = None) -> str:
        """Accept another API key besides ``api_key`` (another account on the same API);
        returns it."""
        key = key or "river_test_sim" + secrets.token_hex(12)
        self._extra_keys.append(key)
        return key

    def __repr__(self) -> str:
        return f"Simulator(url={self.url!r}, speed={self.speed:g}, tasks={len(self._tasks)})"

    # ----------------------------------------------------------------- tasks
    def submit(
        self,
        model: str = "viduq3-turbo",
        type: str | None = None,  # noqa: A002 - the API's own name
        prompt: str = "",
        *,
        outcome: str | None = None,
        latency: float | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> str:
        """Create a task and return its id.

        ``outcome`` forces ``succeeded``/``failed``/``cancelled``; ``latency`` forces the
        total seconds at ``speed=1``; ``error_code``/``error_message`` force the failure.
        Raises ``ValueError`` for an unknown model or a type that does not match it.
        """
        spec = CATALOGUE.get(model)
        if spec is None:
            raise ValueError(f"unknown model {model!r}; known models: {', '.join(CATALOGUE)}")
        if type is not None and type != spec.type:
            raise ValueError(f"model {model!r} makes {spec.type}, not {type!r}")
        if outcome is not None and outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {_OUTCOMES}, got {outcome!r}")
        with self._lock:
            task = self._new_task(spec, prompt, outcome, latency, error_code, error_message)
            self._tasks[task.id] = task
        return task.id

    def _new_task(
        self,
        spec: ModelSpec,
        prompt: str,
        outcome: str | None,
        latency: float | None,
        error_code: str | None,
        error_message: str | None,
    ) -> SimTask:
        rng = self._rng
        fail_rate = spec.fail_rate if self.fail_rate is None else self.fail_rate
        outcome = outcome or ("failed" if rng.random() < fail_rate else "succeeded")
        total = latency if latency is not None else self._draw_latency(spec)
        pending = min(total * 0.1, rng.uniform(0.2, 1.5))
        queued = pending + (total - pending) * rng.uniform(0.05, 0.2)
        code, message = ERRORS[rng.randrange(len(ERRORS))]
        if outcome == "failed" and latency is None:
            if code == "PROVIDER_ERROR" and message.startswith("Content moderation"):
                total = pending = queued = rng.uniform(0.5, 3.0)  # rejected before it is queued
            else:
                total = queued + (total - queued) * rng.uniform(0.1, 1.0)  # fails while running
        now = time.time()
        error = None
        if outcome == "failed":
            error = (error_code or code, error_message if error_message is not None else message)
        task = SimTask(
            id=f"task_{secrets.token_hex(6)}",  # unique across runs: journals outlive simulators
            spec=spec,
            prompt=prompt,
            created=now,
            queued=now + pending / self.speed,
            running=now + queued / self.speed,
            end=now + total / self.speed,
            outcome=outcome,
            error=error,
            media=media_for(spec.format, rng.randrange(1 << 16)),
        )
        if outcome == "cancelled":
            task.cancelled_at = task.running + (task.end - task.running) / 2
        task.url_issued = task.end
        return task

    def _draw_latency(self, spec: ModelSpec) -> float:
        for _ in range(100):  # a truncated log-normal: redraw what falls outside the range
            value = spec.median * math.exp(self._rng.gauss(0.0, spec.sigma))
            if spec.low <= value <= spec.high:
                return value
        return spec.median

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not ended; return whether it was cancelled."""
        task = self._tasks[task_id]
        now = time.time()
        if now >= task.end or task.cancelled_at is not None:
            return False
        task.cancelled_at = now
        return True

    def timeline(self, task_id: str) -> dict[str, Any]:
        """The true timeline of a task: real wall-clock seconds of each phase and the
        outcome, with ``created_at``/``completed_at`` as the server reports them (skewed
        by ``clock_skew``, whole seconds if ``whole_seconds``)."""
        t = self._tasks[task_id]
        end = t.cancelled_at if t.cancelled_at is not None and t.cancelled_at < t.end else t.end
        outcome = "cancelled" if end != t.end else t.outcome
        return {
            "id": t.id,
            "model": t.spec.model,
            "provider": t.spec.provider,
            "type": t.spec.type,
            "created": t.created,
            "queued": t.queued,
            "running": t.running,
            "end": end,
            "outcome": outcome,
            "created_at": self.stamp(t.created),
            "completed_at": self.stamp(end),
        }

    @property
    def task_ids(self) -> list[str]:
        """Ids of every task created so far, oldest first."""
        return list(self._tasks)

    def set_status(self, task_id: str, status: str | None) -> None:
        """Force the status the API reports for a task (e.g. a new one, ``"paused"``);
        ``None`` goes back to the timeline. For tests of forward compatibility."""
        self._tasks[task_id].extra["status"] = status

    def expire_now(self, task_id: str) -> None:
        """Make a succeeded task's result URL expire at once (for tests)."""
        task = self._tasks[task_id]
        task.url_issued = min(task.url_issued, time.time() - self.url_lifetime - 1)

    # ------------------------------------------------------------ rendering
    def data(self, task: SimTask, now: float) -> dict[str, Any]:
        """The ``data`` object the API would answer for ``task`` at ``now``."""
        spec = task.spec
        data: dict[str, Any] = {
            "id": task.id,
            "type": spec.type,
            "status": "pending",
            "provider": spec.provider,
            "model": spec.model,
        }
        cancelled = (
            task.cancelled_at is not None and task.cancelled_at <= now and task.cancelled_at < task.end
        )
        if cancelled:
            data["status"] = "cancelled"
            data["completed_at"] = self.stamp(task.cancelled_at or now)
        elif now >= task.end:
            data["completed_at"] = self.stamp(task.end)
            self._render_end(task, now, data)
        elif now >= task.running:
            data["status"] = "running"
        elif now >= task.queued:
            data["status"] = "queued"
        data["created_at"] = self.stamp(task.created)
        if task.extra.get("status"):
            data["status"] = task.extra["status"]
            data.pop("completed_at", None)
            data.pop("result", None)
        return data

    def _render_end(self, task: SimTask, now: float, data: dict[str, Any]) -> None:
        if task.outcome == "failed":
            code, message = task.error or ("PROVIDER_ERROR", "failed")
            data.update(status="failed", error={"code": code, "message": message})
            return
        if now >= task.url_issued + self.url_lifetime:
            data["status"] = "expired"
            task.url_issued, task.url_version = now, task.url_version + 1
            return
        data["status"] = "succeeded"
        expires = int((task.url_issued + self.url_lifetime) * 1000)
        item: dict[str, Any] = {
            "url": self._media_url(task, expires),
            "format": task.media.format,
            "size_bytes": len(task.media.data),
        }
        if task.media.duration is not None:
            item["duration"] = task.media.duration
        data["result"] = [item]

    def _sign(self, task_id: str, expires: int) -> str:
        msg = f"{task_id}/0/{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def _media_url(self, task: SimTask, expires: int) -> str:
        sig = self._sign(task.id, expires)
        path = urllib.parse.quote(task.id, safe="")
        return f"{self.url}/media/{path}/0.{task.media.format}?expires={expires}&signature={sig}"

    # ------------------------------------------------------------ handlers
    def _authorised(self, request: web.Request) -> bool:
        return self._key_of(request) is not None

    def _key_of(self, request: web.Request) -> str | None:
        """The accepted key the request's ``Authorization`` carries, else ``None``."""
        sent = request.headers.get("Authorization", "").encode()
        keys = (self.api_key, *self._extra_keys)
        return next((k for k in keys if hmac.compare_digest(sent, f"Bearer {k}".encode())), None)

    async def _get_task(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["id"]
        self.requests[task_id] += 1
        self.requests_by_key[(task_id, self._key_of(request))] += 1
        wait = self._rate_wait(request)
        if wait > 0:
            self._log(task_id, 429)
            return _envelope_error(
                429,
                "RATE_LIMITED",
                "Rate limit exceeded; retry after the Retry-After delay",
                **{"Retry-After": str(max(1, math.ceil(wait)))},
            )
        fault = self._script.popleft() if self._script else self.faults.pick(self._fault_rng.random())
        if fault is not None and fault not in ("slow", "ok"):
            return await self._fault(request, task_id, fault)
        if fault == "slow":
            await asyncio.sleep(self.faults.slow_seconds)
        return self._answer(request, task_id)

    def _rate_wait(self, request: web.Request) -> float:
        """0 if the request is within the API key's limit (and takes a token), else the
        seconds until a token is available."""
        rate = self._rate_limit
        if rate is None:
            return 0.0
        burst = self._rate_burst if self._rate_burst is not None else max(1.0, rate)
        key = request.headers.get("Authorization", "")
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _TokenBucket(burst, now)
        return bucket.take(rate, burst, now)

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        """aiohttp dates responses from the local clock; date them from the server's."""
        response.headers["Date"] = email.utils.formatdate(self.server_time(), usegmt=True)

    def _answer(self, request: web.Request, task_id: str) -> web.Response:
        if not self._authorised(request):
            self._log(task_id, 401)
            return _envelope_error(401, "UNAUTHORIZED", "Invalid or missing API key")
        task = self._tasks.get(task_id)
        if task is None:
            self._log(task_id, 404)
            return _envelope_error(404, "TASK_NOT_FOUND", f"Task {task_id} not found")
        self._log(task_id, 200)
        body = {"success": True, "data": self.data(task, time.time())}
        return web.Response(text=json.dumps(body), content_type="application/json")

    def _log(self, task_id: str, status: int) -> None:
        self.request_log.append((time.time(), task_id, status))

    async def _fault(self, request: web.Request, task_id: str, fault: str) -> web.StreamResponse:
        if fault == "429":
            self._log(task_id, 429)
            return _envelope_error(
                429, "RATE_LIMITED", "Too many requests", **{"Retry-After": f"{self.faults.retry_after:g}"}
            )
        if fault in ("5xx", "500", "502", "503", "504"):
            status = self._fault_rng.choice((500, 502, 503, 504)) if fault == "5xx" else int(fault)
            self._log(task_id, status)
            if self._fault_rng.random() < 0.5:
                return _envelope_error(status, "INTERNAL_ERROR", "Upstream failure")
            return web.Response(
                status=status, text=_HTML_PAGE.format(f"{status} Bad Gateway"), content_type="text/html"
            )
        if fault == "html":
            self._log(task_id, 200)
            return web.Response(text=_HTML_PAGE.format("Please wait..."), content_type="text/html")
        if fault == "truncated":
            full = self._answer(request, task_id)
            text = full.text or ""
            return web.Response(
                status=full.status, text=text[: len(text) // 2], content_type="application/json"
            )
        self._log(task_id, 0)  # drop
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError  # aiohttp drops the request without answering

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _envelope_error(401, "UNAUTHORIZED", "Invalid or missing API key")
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            task_id = self.submit(
                model=str(body.get("model", "")),
                type=body.get("type"),
                prompt=str(body.get("prompt", "")),
                outcome=body.get("outcome"),
                latency=body.get("latency"),
                error_code=body.get("error_code"),
                error_message=body.get("error_message"),
            )
        except (ValueError, TypeError) as exc:
            return _envelope_error(400, "INVALID_REQUEST", str(exc))
        data = self.data(self._tasks[task_id], time.time())
        return web.json_response({"success": True, "data": data}, status=201)

    async def _cancel(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _envelope_error(401, "UNAUTHORIZED", "Invalid or missing API key")
        task_id = request.match_info["id"]
        if task_id not in self._tasks:
            return _envelope_error(404, "TASK_NOT_FOUND", f"Task {task_id} not found")
        if not self.cancel(task_id):
            return _envelope_error(409, "TASK_ENDED", f"Task {task_id} has already ended")
        return web.json_response({"success": True, "data": self.data(self._tasks[task_id], time.time())})

    async def _media(self, request: web.Request) -> web.StreamResponse:
        task = self._tasks.get(request.match_info["id"])
        try:
            expires = int(request.query.get("expires", ""))
        except ValueError:
            expires = -1
        sig = request.query.get("signature", "")
        if task is None or not hmac.compare_digest(sig, self._sign(task.id, expires)):
            return web.Response(status=403, text="invalid signature")
        current = int((task.url_issued + self.url_lifetime) * 1000)
        if time.time() * 1000 >= expires or expires > current:
            return web.Response(status=403, text="URL expired")
        return _serve_bytes(request, task.media)

    def _app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(self._date_header)
        app.router.add_get("/api/v1/tasks/{id}", self._get_task)
        app.router.add_post("/sim/v1/tasks", self._create)
        app.router.add_post("/sim/v1/tasks/{id}/cancel", self._cancel)
        app.router.add_get("/media/{id}/{name}", self._media)
        return app

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start serving in a daemon thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, errors), name="mh-sim", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            self._thread = None
            raise errors[0]
        return self

    def _serve(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._start_site())
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            errors.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
        loop.close()

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (for the command line)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *faults: str) -> None:
        """Answer the next status requests with these faults, in order, then as usual.

        Names: ``429``, ``5xx``, ``500``, ``502``, ``503``, ``504``, ``html``,
        ``truncated``, ``drop``, ``slow``; ``ok`` answers normally.
        """
        known = {"429", "5xx", "500", "502", "503", "504", "html", "truncated", "drop", "slow", "ok"}
        unknown = [f for f in faults if f not in known]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {sorted(known)}")
        self._script.extend(faults)

    def with_faults(self, **rates: float) -> Faults:
        """Set new fault rates (keyword arguments of :class:`Faults`); returns them."""
        self.faults = replace(Faults(), **rates)
        return self.faults


def _serve_bytes(request: web.Request, media: MediaFile) -> web.Response:
    """Serve ``media`` with single-range support (browsers seek video with Range)."""
    data, size = media.data, len(media.data)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    rng = request.http_range
    if rng.start is None and rng.stop is None:
        return web.Response(body=data, content_type=media.content_type, headers=headers)
    start, stop, _ = rng.indices(size)
    if start >= size or stop <= start:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return web.Response(status=206, body=data[start:stop], content_type=media.content_type, headers=headers)
