"""The rendering and the ipywidgets panel, headless: trait values, escaping, bounds."""

from __future__ import annotations

import time
from collections import Counter

import ipywidgets as widgets
import pytest

from mh_notebook import ModelHunterError
from mh_notebook.sim import Simulator
from mh_notebook.view.render import Row, human_size, media_html, safe_text, safe_url, table_html
from mh_notebook.watcher import TaskWatcher

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://cdn.modelhunter.ai/results/a.mp4?signature=x", True),
        ("http://127.0.0.1:8000/media/a/0.png?expires=1&signature=2", True),
        ("javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("data:text/html;base64,PHNjcmlwdD4=", False),
        ('https://x/"><script>alert(1)</script>', False),
        ("https://x/a b", False),
        ("//evil.example/a.mp4", False),
        (None, False),
    ],
)
def test_only_plain_http_urls_pass(url: str | None, ok: bool) -> None:
    assert (safe_url(url) is not None) is ok


def test_safe_text_escapes_strips_and_truncates() -> None:
    assert safe_text(HOSTILE) == html_escaped(HOSTILE)
    assert safe_text("a\x00b\x1b[31mc\u2028d") == "ab[31mcd"
    long = safe_text("x" * 10_000, limit=50)
    assert len(long) == 50
    assert long.endswith("…")


def html_escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#x27;")
    )


@pytest.mark.parametrize(
    ("size", "text"), [(None, ""), (512, "512 B"), (12582912, "12.6 MB"), (3_500, "3.5 kB")]
)
def test_human_size(size: int | None, text: str) -> None:
    assert human_size(size) == text


def test_javascript_media_url_is_text_not_a_source() -> None:
    out = media_html("javascript:alert(1)", "mp4", "cap")
    assert "<video" not in out
    assert "src=" not in out
    assert "not shown: javascript:alert(1)" in out
    ok = media_html("https://cdn/x.mp4", "mp4", HOSTILE)
    assert '<source src="https://cdn/x.mp4" type="video/mp4">' in ok
    assert "<script>" not in ok
    assert "<img src=x" not in ok


def test_hostile_row_is_escaped() -> None:
    row = Row("task_<b>1</b>", HOSTILE, "video", HOSTILE, HOSTILE, error_code=HOSTILE, error_message=HOSTILE)
    out = table_html([row], 1, Counter({HOSTILE: 1}))
    assert "<script>" not in out
    assert "<img src=x" not in out
    assert "&lt;script&gt;" in out


def test_table_is_bounded_with_thousands_of_tasks() -> None:
    rows = [Row(f"task_{i:06d}", "running", "video", "vidu", "viduq3-turbo", seconds=i) for i in range(45)]
    counts = Counter({"running": 3000, "succeeded": 6000, "failed": 1000})
    out = table_html(rows, 10_000, counts)
    assert out.count("<tr>") == 46  # header + rows
    assert "… and 9955 more tasks not shown (6000 succeeded, 2955 running, 1000 failed)" in out
    assert len(out.encode()) < 64 * 1024


def test_panel_shows_hostile_failure_as_text(sim: Simulator) -> None:
    task_id = sim.submit(
        model="seedream-4.0", outcome="failed", latency=1, error_code="<b>X</b>", error_message=HOSTILE
    )
    ok_id = sim.submit(model="nano-banana-2", outcome="succeeded", latency=1)
    with TaskWatcher(sim.api_key, sim.url, display="widget", time_scale=100, refresh_interval=0.05) as w:
        panel = w.panel
        w.watch(task_id, ok_id)
        w.wait(timeout=30)
        time.sleep(0.2)
        table = panel.table.value
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&lt;script&gt;" in table
        assert "<script>" not in table and "<img src=x" not in table
        assert "&lt;b&gt;X&lt;/b&gt;" in table
        assert "succeeded</span> 1" in panel.summary.value and "failed</span> 1" in panel.summary.value
        (tile,) = panel.gallery.children
        image, caption = tile.children
        assert isinstance(image, widgets.Image) and image.format == "png"
        assert image.value[:8] == b"\x89PNG\r\n\x1a\n"  # the bytes, not the expiring URL
        assert ok_id in caption.value
        bundle = w._repr_mimebundle_()
        assert {WIDGET_VIEW, "text/html", "text/plain"} <= bundle.keys()
        assert bundle[WIDGET_VIEW]["model_id"] == panel.widget.model_id
        assert "<script>" not in bundle["text/html"]
        assert "2 watched" in bundle["text/html"]


def test_panel_refreshes_are_throttled(sim: Simulator) -> None:
    ids = [sim.submit(model="eleven-v3", latency=lat) for lat in range(2, 302, 2)]  # a change every few ms
    with TaskWatcher(
        sim.api_key, sim.url, display="widget", time_scale=100, rate_limit=1000, max_in_flight=16
    ) as w:
        panel = w.panel
        start = time.monotonic()
        w.watch(ids)
        w.wait(timeout=60)
        elapsed = time.monotonic() - start
        changes = sum(1 for e in w.store.events())
    assert changes > 3 * elapsed * 2  # far more changes than refreshes allowed...
    assert panel.refreshes <= elapsed * 2 + 3  # ...yet at most ~2 refreshes a second


def test_panel_controls_pause_and_stop(sim: Simulator) -> None:
    task_id = sim.submit(model="veo-3.1", latency=100_000)
    w = TaskWatcher(sim.api_key, sim.url, display="widget", refresh_interval=0.05)
    panel = w.panel
    panel.pause_button.value = True
    assert w.paused
    w.watch(task_id)
    time.sleep(0.2)
    assert sim.requests[task_id] == 0
    assert panel.pause_button.description == "Resume"
    panel.pause_button.value = False
    assert not w.paused
    panel.stop_button.click()
    assert not w.engine.running
    assert panel.stop_button.disabled
    assert "stopped" in panel.summary.value


def test_cancel_asks_for_confirmation_and_shows_what_went_wrong() -> None:
    from mh_notebook.panel import CancelControl

    cancelled: list[str] = []
    control = CancelControl(cancelled.append)
    control.offer([Row("task_a", "running", model="kling-v3"), Row("task_b", "queued")])
    assert [value for _, value in control.choice.options] == ["task_a", "task_b"]
    control.choice.value = "task_b"
    control.ask.click()
    assert control.confirm.layout.display is None and "cannot be undone" in control.message.value
    control.keep.click()  # changed their mind
    assert cancelled == [] and control.confirm.layout.display == "none"
    control.ask.click()
    control.confirm.click()
    assert cancelled == ["task_b"] and "cancelled" in control.message.value

    def refuse(task_id: str) -> None:
        raise ModelHunterError(f"task {task_id} has already ended <b>")

    refusing = CancelControl(refuse)
    refusing.offer([Row("task_c", "running")])
    refusing.ask.click()
    refusing.confirm.click()
    assert "already ended &lt;b&gt;" in refusing.message.value  # shown, escaped, never raised
    refusing.offer([])
    assert refusing.ask.disabled


def test_the_panel_cancels_a_running_task_over_http(sim: Simulator) -> None:
    slow, quick = sim.submit(latency=300), sim.submit(latency=0.5)
    with TaskWatcher(sim.api_key, sim.url, store=None, display="widget", time_scale=20) as w:
        w.watch(slow, quick)
        panel = w.panel
        assert panel.cancel is not None
        deadline = time.monotonic() + 30
        while [v for _, v in panel.cancel.choice.options] != [slow] and time.monotonic() < deadline:
            panel.draw(w.snapshot())  # until the quick one has ended
            time.sleep(0.05)
        assert [v for _, v in panel.cancel.choice.options] == [slow]  # only active tasks are offered
        panel.cancel.choice.value = slow
        panel.cancel.ask.click()
        panel.cancel.confirm.click()
        assert "cancelled" in panel.cancel.message.value
        assert str(w.wait(timeout=30)[slow].status) == "cancelled"
        assert sim.timeline(slow)["outcome"] == "cancelled"
