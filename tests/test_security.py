"""Security sweep: the key appears nowhere; hostile API text and URLs are neutralised."""

from __future__ import annotations

import html
import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from mh_notebook import Client, ModelHunterError, ResultItem, Task
from mh_notebook.sim import Simulator
from mh_notebook.view.media import display_object
from mh_notebook.view.render import Row, table_html
from mh_notebook.watcher import TaskWatcher

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_key_appears_nowhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    journal = tmp_path / "journal.sqlite"
    with Simulator(seed=2, speed=100) as sim:
        sim.with_faults(rate_5xx=0.2, rate_drop=0.1, rate_html=0.1)
        ids = [sim.submit(model=m, latency=5) for m in ("viduq3-turbo", "seedream-4.5", "eleven-v3")]
        failed = sim.submit(
            model="kling-v3.0", outcome="failed", latency=5, error_message=f"bad key {sim.api_key}?"
        )
        with TaskWatcher(
            sim.api_key, sim.url, store=journal, display="widget", time_scale=100, refresh_interval=0.05
        ) as w:
            w.watch(*ids, failed, "task_unknown")
            w.wait(timeout=60)
            time.sleep(0.2)
            texts = [repr(w), str(w), repr(w.panel), repr(w.store), repr(Client(sim.api_key, sim.url))]
            texts += [w.panel.summary.value, w.panel.table.value]
            texts += [t.children[-1].value for t in w.panel.gallery.children]  # the tiles' captions
            texts += [json.dumps(w._repr_mimebundle_(), default=str)]
            texts += [w.history().to_csv(), w.events().to_csv(), w.latency_summary().to_csv()]
        try:
            Client("river_live_" + "x" * 30, sim.url).get_task(ids[0])
        except ModelHunterError as exc:
            texts += [str(exc), repr(exc)]
        key = sim.api_key
    texts += [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    db = sqlite3.connect(journal)
    texts += [json.dumps(db.execute(f"SELECT * FROM {t}").fetchall()) for t in ("events", "watched")]
    raw = journal.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite-*"))
    assert len(caplog.records) > 0
    assert all(key not in t for t in texts)
    assert key.encode() not in raw
    assert "***" in " ".join(texts) or "bad key" not in " ".join(texts)  # echoed keys are scrubbed


def test_hostile_text_is_escaped_and_truncated() -> None:
    huge = HOSTILE + "A" * 100_000 + "\x00\x1b[2J\u202e"
    row = Row("t" * 5000, "failed", HOSTILE, HOSTILE, HOSTILE, error_code=huge, error_message=huge)
    out = table_html([row], 1, __import__("collections").Counter({"failed": 1}))
    assert "<script>" not in out and "<img" not in out
    assert "\x00" not in out and "\x1b" not in out
    assert len(out) < 4000  # every field truncated


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:video/mp4;base64,AAAA", "file:///etc/passwd", "//evil/x.mp4"]
)
def test_unsafe_result_urls_are_never_sources(url: str) -> None:
    item = ResultItem(url=url, format="mp4", size_bytes=10)
    shown = display_object(item)
    html = shown._repr_html_() if hasattr(shown, "_repr_html_") else shown.data
    assert "<video" not in html
    assert "src=" not in html
    assert "not shown" in html


def test_unsafe_url_in_a_watched_task_stays_text(sim: Simulator) -> None:
    task = Task.from_api(
        {
            "id": "task_js",
            "status": "succeeded",
            "model": "m",
            "result": [{"url": "javascript:alert(1)", "format": "mp4"}],
        }
    )
    with TaskWatcher(sim.api_key, sim.url, store=None, display="widget", refresh_interval=0.05) as w:
        w.panel  # noqa: B018 - create the view
        w.watch(task)
        w.wait(timeout=5)
        time.sleep(0.2)
        (tile,) = w.panel.gallery.children
        static = w._repr_mimebundle_()["text/html"]
    (caption,) = tile.children  # no media widget: only the note
    assert "not kept: the result URL is not plain http(s)" in caption.value
    for shown in (caption.value, static):
        assert "<video" not in shown and "javascript:" not in shown


def test_media_over_the_embed_cap_are_not_embedded(sim: Simulator) -> None:
    task_id = sim.submit(model="viduq3-turbo", outcome="succeeded", latency=1)
    time.sleep(0.05)
    item = Client(sim.api_key, sim.url).get_task(task_id).result[0]
    small_cap = display_object(item, embed=True, embed_limit=1000)
    assert f'<source src="{html.escape(item.url or "")}" type="video/mp4">' in small_cap.data  # the URL
    assert "base64" not in small_cap.data
    embedded = display_object(item, embed=True)
    assert embedded.embed is True and "base64" in embedded._repr_html_()
