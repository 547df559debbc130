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
    Task,
    TaskWatcher,
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
