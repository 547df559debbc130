"""What an independent attacker broke, each kept broken-proof: stand-in servers of our own on
127.0.0.1 (not the package's simulator) and inputs a demanding user's world produces."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mh_notebook import (
    AsyncClient,
    Client,
    ConfigurationError,
    CreationUnknownError,
    MalformedResponseError,
    NetworkError,
    PollPolicy,
    Task,
    TaskWatcher,
    list_tasks,
    read_history,
)
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.records import event_from_task
from mh_notebook.sim import Simulator

KEY = "river_live_" + "fake-key-for-tests" * 2  # made up: no account has it
Answer = Callable[[BaseHTTPRequestHandler], tuple[int, bytes] | None]


@pytest.fixture
def stand_in() -> Iterator[Callable[[Answer], str]]:
    """``serve(answer)``: a server whose every request is answered by ``answer(handler)``."""
    servers: list[ThreadingHTTPServer] = []

    def serve(answer: Answer) -> str:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                if self.headers.get("Content-Length"):
                    self.rfile.read(int(self.headers["Content-Length"]))
                reply = answer(self)
                if reply is None:
                    return
                code, body = reply
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any  # noqa: N815

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _task(task_id: str, **data: object) -> bytes:
    body = {"id": task_id, "type": "image", "status": "failed", "created_at": "2026-01-01T00:00:00Z"}
    return json.dumps({"success": True, "data": {**body, **data}}).encode()


@pytest.mark.parametrize("odd", ["\n", "\u200b", " ", "\x00"])
def test_a_key_no_header_can_carry_is_refused_by_name_never_echoed(odd: str) -> None:
    """A two-line secrets file or a key pasted from a web page: said at once, the key never shown
    (it reached the panel through httpx's "Illegal header value" before)."""
    key = KEY[:20] + odd + KEY[20:]
    with pytest.raises(ConfigurationError, match="position 20") as info:
        Client(key, "http://127.0.0.1:9")
    assert KEY[:20] not in str(info.value) and KEY[20:] not in str(info.value)


def test_a_key_echoed_as_json_escapes_is_scrubbed(stand_in: Callable[[Answer], str], tmp_path: Path) -> None:
    """An API echoing the Authorization header as ``\\u0072...`` passed the raw-bytes check."""

    def echo(handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        escaped = "".join(f"\\u{ord(c):04x}" for c in handler.headers["Authorization"])
        body = _task("t1", completed_at="2026-01-01T00:00:05Z", error={"code": "X", "message": "for KEY"})
        return 200, body.replace(b"for KEY", f"for {escaped}".encode())

    journal = tmp_path / "j.sqlite"
    with TaskWatcher(KEY, stand_in(echo), store=journal, display="none") as w:
        w.watch("t1")
        final = w.wait(timeout=30)
        texts = [str(final["t1"].error), w.history().to_csv(), str(w.snapshot())]
    texts.append(read_history(journal).to_csv())
    assert all(KEY not in t for t in texts) and "***" in texts[0]


def test_an_answer_about_another_task_is_refused(stand_in: Callable[[Answer], str]) -> None:
    """A cache answering for ``A1`` when asked for ``a1`` journalled a task nobody watched."""
    url = stand_in(lambda h: (200, _task("A1")))
    with pytest.raises(MalformedResponseError, match="another task") as info:
        Client(KEY, url).get_task("a1")
    assert info.value.field == "id"


def test_an_error_sent_as_text_keeps_the_true_end() -> None:
    """``"error": "..."`` refused the whole answer: the task never ended for its watcher."""
    task = Task.from_api(json.loads(_task("t1", error="Content moderation")))
    assert task.is_terminal and task.error is not None and task.error.message == "Content moderation"


@pytest.mark.parametrize(
    "reply", [(504, b"<html>504 Gateway Time-out</html>"), (202, _task("task_9", created_at="soon"))]
)
def test_a_creation_answered_by_a_gateway_error_or_garbage_may_exist(
    stand_in: Callable[[Answer], str], reply: tuple[int, bytes]
) -> None:
    """The origin may have created (and charged) the task: say so, never resend it."""
    posts: list[str] = []

    def answer(handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        posts.append(handler.path)
        return reply

    with pytest.raises(CreationUnknownError, match="may exist") as info:
        Client(KEY, stand_in(answer)).create_task(
            "vidu/text-to-video", model="viduq3-turbo", input={"prompt": "x"}
        )
    assert len(posts) == 1 and "list_tasks(since=" in str(info.value)


def test_an_integer_no_journal_holds_is_left_out(tmp_path: Path) -> None:
    """``size_bytes: 2**64`` made SQLite refuse the event: the task's end was quarantined."""
    data = {
        "status": "succeeded",
        "result": [{"url": "https://cdn.example/x.png", "format": "png", "size_bytes": 2**64}],
    }
    event = event_from_task(Task.from_api(json.loads(_task("t1", **data))), 1000.0, 1)
    assert event.size_bytes is None and event.status == "succeeded"
    store = SQLiteStore(tmp_path / "j.sqlite")
    store.add(event, wait=0.05)
    assert store.events() == [event]
    store.close()


@pytest.mark.parametrize("bad", [{"burst": 0.5}, {"burst": "2"}, {"rate_limit": "10"}, {"max_in_flight": 0}])
def test_a_bad_setting_is_named_and_never_poisons_the_shared_engine(
    sim: Simulator, bad: dict[str, object]
) -> None:
    """One typo'd cell broke every later watcher of that API until the kernel restarted."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        TaskWatcher(sim.api_key, sim.url, store=None, display="none", **bad)  # type: ignore[arg-type]
    task_id = sim.submit(latency=0.1)
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none") as w:
        w.watch(task_id)
        assert w.wait(timeout=30)[task_id].is_terminal


def test_a_body_that_trickles_in_frees_its_request_slot(stand_in: Callable[[Answer], str]) -> None:
    """httpx bounds each read, not the answer: one byte every 0.2 s held a poll slot forever
    (eight such tasks stopped all polling)."""

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(150):  # 30 s at most
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    async def fetch() -> None:
        async with AsyncClient(KEY, stand_in(trickle), timeout=0.5) as client:
            await client.get_task("slow", retry=False)

    start = time.monotonic()
    with pytest.raises(NetworkError, match="whole answer"):
        asyncio.run(fetch())
    assert time.monotonic() - start < 20  # 0.5 s read + 5 s: well before the trickle ends


def test_a_store_that_is_no_journal_is_named_and_harms_no_other_watcher(sim: Simulator) -> None:
    """``store=123`` raised AttributeError and stayed attached: every later watch() of that API failed."""
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none") as good:
        with pytest.raises(TypeError, match=r"store= takes .* got int"):
            TaskWatcher(sim.api_key, sim.url, store=123, display="none")  # type: ignore[arg-type]
        task_id = sim.submit(latency=0.1)
        good.watch(task_id)
        assert good.wait(timeout=30)[task_id].is_terminal


def _pages(
    cursor: Callable[[int], str | None], more: Callable[[int], bool], ids: Callable[[int], list[int]]
) -> Answer:
    hits: list[str] = []

    def answer(handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        hits.append(handler.path)
        n = len(hits)
        items = [json.loads(_task(f"t{i}", status="succeeded"))["data"] for i in ids(n)]
        page = {"cursor": cursor(n), "hasMore": more(n) and n < 50, "total": 30}
        return 200, json.dumps({"success": True, "data": items, "pagination": page}).encode()

    return answer


@pytest.mark.parametrize(
    ("cursor", "why"),
    [(lambda n: "SAME", "sent before"), (lambda n: None if n == 2 else f"c{n}", "no cursor")],
    ids=["looping cursor", "more without a cursor"],
)
def test_a_list_whose_pages_loop_or_stop_short_is_an_error_not_a_wrong_frame(
    stand_in: Callable[[Answer], str], cursor: Callable[[int], str | None], why: str
) -> None:
    """A cursor that came back made list_tasks walk forever (cost summed 200 times); a page
    saying "more" with no cursor ended the walk silently, 20 of 50 tasks in the frame."""
    url = stand_in(_pages(cursor, lambda n: True, lambda n: list(range(10 * n, 10 * n + 10))))
    with pytest.raises(MalformedResponseError, match=why):
        list_tasks(api_key=KEY, base_url=url)


def test_a_task_on_two_pages_is_one_row(stand_in: Callable[[Answer], str]) -> None:
    """Pages shift as tasks are created while listing: a task shown twice was two rows (cost twice)."""
    url = stand_in(_pages(lambda n: f"c{n}", lambda n: n < 3, lambda n: list(range(5 * n, 5 * n + 10))))
    frame = list_tasks(api_key=KEY, base_url=url)
    assert frame["task_id"].is_unique and len(frame) == 20


def test_a_request_from_a_callback_is_refused_not_a_stall(sim: Simulator) -> None:
    """cancel() in an on_change callback held the engine's thread for its whole answer: no poll for 9 s."""
    ids = [sim.submit(latency=0.5) for _ in range(3)]
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none") as w:
        w.on_change(lambda task: w.cancel(task.id))
        w.watch(ids)
        assert all(t.is_terminal for t in w.wait(timeout=30).values())
    assert w.callback_errors and all("engine's thread" in str(e) for e in w.callback_errors)


def test_spellings_of_one_api_share_one_engine_and_odd_urls_are_refused(sim: Simulator) -> None:
    """``:80``, upper case or a trailing ``/api/v1/`` made separate engines (budgets) and journal keys."""
    host, port = sim.url.removeprefix("http://").split(":")
    spellings = [sim.url, f"HTTP://{host}:{port}/", f"http://{host}:{port}/api/v1/"]
    watchers = [TaskWatcher(sim.api_key, url, store=None, display="none") for url in spellings]
    try:
        assert len({id(w.engine) for w in watchers}) == 1
        assert {w.base_url for w in watchers} == {sim.url}
    finally:
        for w in watchers:
            w.stop()
    for odd in [f"{sim.url}?x=1", f"http://user:pw@{host}:{port}", f"{sim.url}#top"]:
        with pytest.raises(ConfigurationError, match="no query, fragment, user or password"):
            TaskWatcher(sim.api_key, odd, store=None, display="none")


def test_a_random_429_asking_for_days_holds_its_task_back_at_most_max_interval(
    stand_in: Callable[[Answer], str],
) -> None:
    """One 429 judged noise held its task back by the whole Retry-After (60 s, past max_interval)."""
    asked: list[float] = []

    def answer(handler: BaseHTTPRequestHandler) -> tuple[int, bytes] | None:
        asked.append(time.monotonic())
        if len(asked) == 2:
            handler.send_response(429)
            handler.send_header("Retry-After", "99999999")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        return 200, _task("slow", status="running", provider="vidu", model="viduq3-turbo")

    policy = PollPolicy(max_interval=2.0, list_polling=False)
    with TaskWatcher(KEY, stand_in(answer), store=None, display="none", policy=policy) as w:
        w.watch("slow")
        deadline = time.monotonic() + 30
        while len(asked) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(asked) >= 3 and asked[2] - asked[1] < 10  # max_interval 2 s, not a day (nor 60 s)


@pytest.mark.parametrize(
    "bad",
    [
        {"refresh_interval": -1},
        {"static_interval": 0},
        {"gallery_limit": -3},
        {"inline_limit": -1},
        {"timeout": -1},
        {"display": "bogus"},
    ],
)
def test_a_setting_out_of_range_is_named(sim: Simulator, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        TaskWatcher(sim.api_key, sim.url, store=None, **bad)  # type: ignore[arg-type]


def test_a_policy_out_of_range_or_of_another_type_and_a_changed_setting_are_refused(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="max_interval"):
        PollPolicy(max_interval=-1)
    with pytest.raises(ValueError, match="min_interval must be <= max_interval"):
        PollPolicy(min_interval=10, max_interval=1)
    with pytest.raises(TypeError, match="policy must be a PollPolicy"):
        TaskWatcher(sim.api_key, sim.url, store=None, policy="fast")  # type: ignore[arg-type]
    w = TaskWatcher(sim.api_key, sim.url, store=None, display="none")
    with w, pytest.raises(AttributeError, match="cannot be changed"):
        w.rate_limit = 1  # it would change nothing the engine uses
