"""Results that outlive their URLs: MIME types, labelled links, the keeper, save_to, the static view.

Against the simulator over real HTTP; tests expire result URLs at once (``expire_now``) where it
matters.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import mimetypes
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ipywidgets as widgets
import pytest
from hypothesis import given
from hypothesis import strategies as st
from IPython.display import HTML, Image

from mh_notebook import ResultItem, Task
from mh_notebook.formats import media_kind, mime_type, safe_filename
from mh_notebook.history import read_history
from mh_notebook.journal.memory import MemoryStore
from mh_notebook.journal.protocol import SavedResult, Store
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.results import thumbnail_data_uri
from mh_notebook.sim import Simulator
from mh_notebook.view.media import display_object
from mh_notebook.watcher import TaskWatcher

SPEED = 100.0
URL = "https://cdn.example/results/a.mp3?expires=1&signature=x"
MODELS = ("seedream-4.5", "nano-banana-2", "eleven-v3", "viduq3-turbo")  # jpg, png, mp3, mp4


@pytest.fixture
def short_urls() -> Iterator[Simulator]:
    """A simulator whose result URLs expire when a test says so (``expire_now``), else after 60 s.

    Not after a fraction of a second: on a loaded 2-core machine a task's first poll can come
    seconds after its end, and a URL that expired before its download is downloaded twice
    (the 403, then a fresh URL), which the tests' download counts would take for a bug.
    """
    with Simulator(seed=3, speed=SPEED, url_lifetime=60.0) as s:
        yield s


def _watcher(sim: Simulator, **kw: object) -> TaskWatcher:
    options: dict[str, object] = {"display": "widget", "time_scale": SPEED, "store": None}
    return TaskWatcher(sim.api_key, sim.url, refresh_interval=0.05, **(options | kw))  # type: ignore[arg-type]


def _redrawn(w: TaskWatcher) -> None:
    w.redraw(force=True)


# ------------------------------------------------------------------ MIME types and labelled links


@pytest.mark.parametrize(
    ("fmt", "mime", "kind"),
    [
        ("mp3", "audio/mpeg", "audio"),
        ("MP3", "audio/mpeg", "audio"),
        ("mp4", "video/mp4", "video"),
        ("webm", "video/webm", "video"),
        ("png", "image/png", "image"),
        ("jpg", "image/jpeg", "image"),
        ("jpeg", "image/jpeg", "image"),
        ("zip", "application/zip", None),
        ("", None, None),
        (None, None, None),
        ("../../x", None, None),
    ],
)
def test_mime_types_come_from_mimetypes(fmt: str | None, mime: str | None, kind: str | None) -> None:
    assert mime_type(fmt) == mime
    assert media_kind(fmt) == kind


def test_a_format_registered_with_mimetypes_is_shown_with_its_type() -> None:
    mimetypes.add_type("audio/x-mh-test", ".mhtest")  # no table of our own: the stdlib decides
    shown = display_object(ResultItem(url="https://cdn.example/a.mhtest", format="mhtest"))
    assert '<source src="https://cdn.example/a.mhtest" type="audio/x-mh-test">' in shown.data


def test_audio_from_a_url_carries_its_mime_type_escaped() -> None:
    shown = display_object(ResultItem(url=URL, format="mp3"))
    assert isinstance(shown, HTML)
    assert shown.data == (
        '<audio controls preload="metadata">'
        f'<source src="{html.escape(URL, quote=True)}" type="audio/mpeg"></audio>'
    )  # IPython's Audio(url=...) writes type="None", which Chromium never fetches
    assert "&amp;signature=x" in shown.data


@pytest.mark.parametrize(
    "url", ['https://cdn.example/a.mp3?x="><script>', "https://cdn.example/a b.mp3", "ftp://x/a.mp3"]
)
def test_a_url_with_quotes_spaces_or_another_scheme_is_never_a_source(url: str) -> None:
    shown = display_object(ResultItem(url=url, format="mp3"))
    assert "<source" not in shown.data and "<audio" not in shown.data and "not shown" in shown.data
    assert "<script>" not in shown.data


def test_video_from_a_url_carries_its_mime_type() -> None:
    shown = display_object(ResultItem(url="https://cdn.example/v.webm", format="webm"))
    assert '<source src="https://cdn.example/v.webm" type="video/webm">' in shown.data
    assert "<video controls" in shown.data


def test_embedded_mp3_is_labelled_audio_mpeg(sim: Simulator) -> None:
    data = (Path(__file__).parents[1] / "mh_notebook" / "sim" / "media" / "sample.mp3").read_bytes()
    shown = display_object(ResultItem(url="https://cdn.example/a.mp3", format="mp3"), data=data)
    assert 'type="audio/mpeg"' in shown.data and "data:audio/mpeg;base64," in shown.data
    assert "wav" not in shown.data
    assert base64.b64encode(data).decode() in shown.data


@pytest.mark.parametrize("fmt", ["glb", "zip", None])
def test_a_format_that_cannot_be_shown_is_a_labelled_link(fmt: str | None) -> None:
    item = ResultItem(url="https://cdn.example/model.bin?sig=1", format=fmt, size_bytes=2_500_000)
    shown = display_object(item, embed=True, label="meshy · task_x")
    assert isinstance(shown, HTML)
    assert (
        '<a href="https://cdn.example/model.bin?sig=1" target="_blank" rel="noopener noreferrer">'
        in shown.data
    )
    assert "meshy · task_x" in shown.data and "2.5 MB" in shown.data
    assert "cannot be shown inline" in shown.data


def test_an_image_format_ipython_cannot_embed_is_a_labelled_link() -> None:
    item = ResultItem(url="https://cdn.example/a.bmp", format="bmp")
    shown = display_object(item, data=b"BM" + bytes(64))  # IPython embeds png, jpeg, gif, webp only
    assert isinstance(shown, HTML)
    assert (
        '<a href="https://cdn.example/a.bmp"' in shown.data
        and "IPython cannot embed &#x27;bmp&#x27;" in shown.data
    )
    assert isinstance(display_object(ResultItem(url="https://cdn.example/a.bmp", format="bmp")), Image)


def test_an_unsafe_url_of_an_unknown_format_is_text() -> None:
    shown = display_object(ResultItem(url="javascript:alert(1)", format="glb"))
    assert "<a " not in shown.data and "href" not in shown.data
    assert "not shown: javascript:alert(1)" in shown.data


# ------------------------------------------------------------------ thumbnails


def _jpeg_noise(side: int) -> bytes:
    from PIL import Image as PILImage

    image = PILImage.frombytes("RGB", (side, side), bytes((i * 7919) % 251 for i in range(side * side * 3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def test_thumbnails_are_small_jpeg_data_uris() -> None:
    big = _jpeg_noise(1536)  # hard to compress: a worst case
    uri = thumbnail_data_uri(big)
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    raw = base64.b64decode(uri.split(",", 1)[1])
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(raw)) as small:
        assert max(small.size) == 128
    assert len(uri) < 12_000, len(uri)  # 24 of them stay far under 1 MB
    assert thumbnail_data_uri(b"not an image") is None


def test_a_transparent_png_gets_a_thumbnail() -> None:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGBA", (300, 200), (255, 0, 0, 0)).save(out, "PNG")
    uri = thumbnail_data_uri(out.getvalue())
    assert uri is not None and len(uri) < 4000


# ------------------------------------------------------------------ the live gallery


def test_the_gallery_keeps_bytes_that_outlive_their_urls(short_urls: Simulator) -> None:
    sim = short_urls
    ids = [sim.submit(model=m, latency=2) for m in MODELS]
    with _watcher(sim) as w:
        panel = w.panel
        w.watch(ids)
        w.wait(timeout=30)  # returns once the results are kept
        for task_id in ids:
            sim.expire_now(task_id)
        _redrawn(w)
        kinds = sorted(type(t.children[0]).__name__ for t in panel.gallery.children)
        assert kinds == ["Audio", "Image", "Image", "Video"]
        for tile in panel.gallery.children:
            media = tile.children[0]
            task_id = next(i for i in ids if i in tile.children[1].value)
            assert media.value == sim._tasks[task_id].media.data  # the very bytes the API served
            assert not (isinstance(media, widgets.Video | widgets.Audio) and media.autoplay)
        audio = next(
            t.children[0] for t in panel.gallery.children if isinstance(t.children[0], widgets.Audio)
        )
        assert audio.format == "mpeg"  # the page builds audio/mpeg
        assert w.engine.keeper.downloads == len(ids)  # one download per result, at success


def test_a_forced_redraw_waits_for_tiles_another_thread_is_adding(sim: Simulator) -> None:
    # wait() returns once every result is kept; a redraw(force=True) after it shows them all,
    # even while another redraw (the engine's, every tick) is still adding the tiles it took
    ids = [sim.submit(model=m, latency=1) for m in MODELS]
    with TaskWatcher(
        sim.api_key, sim.url, display="widget", time_scale=SPEED, store=None, refresh_interval=3600
    ) as w:
        panel = w.panel
        w.redraw(force=True)  # from now on only forced redraws draw: the tiles wait in the queue
        w.watch(ids)
        w.wait(timeout=30)
        assert len(w._gallery_queue) == len(ids) and not panel.gallery.children
        entered, release = threading.Event(), threading.Event()
        add = panel.add_result

        def slow_add(*args: object, **kw: object) -> None:
            if threading.current_thread() is drawer:
                entered.set()
                release.wait(10)  # as if the machine were loaded
            add(*args, **kw)  # type: ignore[arg-type]

        panel.add_result = slow_add  # type: ignore[method-assign]
        drawer = threading.Thread(target=w.redraw, kwargs={"force": True})
        drawer.start()
        assert entered.wait(30)  # the other redraw took every queued tile and is adding them
        threading.Timer(1.0, release.set).start()
        _redrawn(w)
        assert len(panel.gallery.children) == len(ids)
        drawer.join(30)


def test_a_403_refreshes_the_task_through_the_engine_and_retries_once(sim: Simulator) -> None:
    task_id = sim.submit(model="nano-banana-2", outcome="succeeded", latency=1)
    with _watcher(sim) as w:
        expired: list[str] = []

        @w.on_change
        def expire_first_url(task: Task) -> None:  # runs before the fetch starts
            if task.status == "succeeded" and not expired:
                expired.append(task.id)
                sim.expire_now(task.id)

        w.watch(task_id)
        w.wait(timeout=30)
        _redrawn(w)
        (tile,) = w.panel.gallery.children
        assert tile.children[0].value == sim._tasks[task_id].media.data
        assert w.engine.keeper.downloads == 2  # the 403, then the fresh URL
        statuses = [e.status for e in w.store.events() if e.task_id == task_id]
        assert statuses[-2:] == ["expired", "succeeded"]  # the refresh went through the engine...
        assert sim.requests[task_id] == w.polls[task_id]  # ...and was counted in its budget


def test_results_over_the_inline_cap_get_a_note(sim: Simulator) -> None:
    video = sim.submit(model="viduq3-turbo", outcome="succeeded", latency=1)  # 24.7 kB
    image = sim.submit(model="nano-banana-2", outcome="succeeded", latency=1)  # < 1 kB
    with _watcher(sim, inline_limit=2000) as w:
        w.watch(video, image)
        w.wait(timeout=30)
        _redrawn(w)
        tiles = {
            next(i for i in (video, image) if i in t.children[-1].value): t for t in w.panel.gallery.children
        }
        (note,) = tiles[video].children  # no media widget
        assert "too large to keep inline (over 2.0 kB)" in note.value
        assert f"watcher.download(&#x27;{video}&#x27;)" in note.value
        assert isinstance(tiles[image].children[0], widgets.Image)
        assert w.engine.keeper.downloads == 1  # the API said 24.7 kB: not even fetched


def test_the_gallery_keeps_the_newest_n(sim: Simulator) -> None:
    """Promise: the gallery shows, and memory holds, the newest ``gallery_limit`` results,
    newest meaning the last to arrive (each result appears the moment it is kept, never
    left out for having ended before the ones shown), in the order they arrived. That order
    is told by ``on_done`` (called as each task's results join the gallery), not taken for
    the order of the ends: ends 80 ms apart arrive in another order whenever polls come
    late (on a loaded 2-core machine the first polls came 0.2-0.7 s after these ends, and
    the four shown were the 3rd, 6th, 8th and 9th to end)."""
    ids = [
        sim.submit(model="nano-banana-2", outcome="succeeded", latency=1 + 8 * i) for i in range(9)
    ]  # 80 ms apart
    arrived: list[str] = []
    with _watcher(sim, gallery_limit=4) as w:
        w.on_done(lambda t: arrived.append(t.id))
        panel = w.panel
        w.watch(ids)
        w.wait(timeout=30)
        _redrawn(w)
        assert sorted(arrived) == sorted(ids)
        newest = arrived[-4:]
        shown = [i for t in panel.gallery.children for i in ids if i in t.children[-1].value]
        assert shown == newest  # the last four to arrive, oldest first
        assert {task_id for task_id, _ in w._kept} == set(newest)  # bytes in memory are bounded too


def test_tiles_beyond_the_limit_are_closed() -> None:
    from mh_notebook.results import KeptResult
    from mh_notebook.view.panel import Panel

    panel = Panel(on_pause=lambda: None, on_resume=lambda: None, on_stop=lambda: None, gallery_limit=2)
    for i in range(3):
        panel.add_result(KeptResult(f"task_{i}", 0, "png", 3, data=b"png"), f"m · task_{i}", "png · 3 B")
    first = None
    for tile in list(panel.gallery.children):
        assert tile.comm is not None
    assert [
        t.children[1].value.count("task_1") + t.children[1].value.count("task_2")
        for t in panel.gallery.children
    ] == [1, 1]
    panel.add_result(KeptResult("task_3", 0, "png", 3, data=b"png"), "m · task_3", "png · 3 B")
    first = panel.gallery.children[0]
    panel.add_result(KeptResult("task_4", 0, "png", 3, data=b"png"), "m · task_4", "png · 3 B")
    assert first not in panel.gallery.children
    assert first.comm is None and all(c.comm is None for c in first.children)  # closed: bytes gone


def test_a_rerun_cell_reuses_the_kept_bytes(sim: Simulator) -> None:
    ids = [sim.submit(model=m, latency=1) for m in MODELS]
    first = _watcher(sim)
    first.watch(ids)
    first.wait(timeout=30)
    with _watcher(sim) as again:  # the same cell run again: same tasks, already ended
        panel = again.panel
        again.watch(ids)
        again.wait(timeout=30)
        _redrawn(again)
        assert len(panel.gallery.children) == len(ids)
        assert again.engine.keeper.downloads == len(ids)  # nothing downloaded again
    first.stop()


def test_keeping_never_holds_up_polling(sim: Simulator) -> None:
    hung = socket.socket()  # accepts connections (backlog) and never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    url = f"http://127.0.0.1:{hung.getsockname()[1]}/stuck.png"
    stuck = Task.from_api(
        {"id": "task_stuck", "status": "succeeded", "model": "m", "result": [{"url": url, "format": "png"}]}
    )
    quick = [sim.submit(model="eleven-v3", latency=lat) for lat in (2, 4, 6)]
    try:
        with _watcher(sim) as w:
            w.watch(stuck)
            started = time.monotonic()
            while w.engine.keeper.downloads == 0 and time.monotonic() - started < 10:
                time.sleep(0.01)
            w.watch(quick)
            seen = set()
            for task in w.as_completed(timeout=10):  # the stuck download is still in flight...
                seen.add(task.id)
                if seen >= set(quick):
                    break
            assert seen == set(quick)  # ...while the others were polled, fetched and done
            assert "task_stuck" in w._keeping
            with pytest.raises(
                TimeoutError,
                match=re.escape("1 tasks' results were still being downloaded after 0.1 s: task_stuck"),
            ):
                w.wait(timeout=0.1)
    finally:
        hung.close()


# ------------------------------------------------------------------ save_to


def test_save_to_saves_every_result_atomically_with_a_checksum(short_urls: Simulator, tmp_path: Path) -> None:
    sim = short_urls
    ids = [sim.submit(model=m, latency=2) for m in MODELS]
    out, journal = tmp_path / "results", tmp_path / "journal.sqlite"
    with _watcher(sim, store=journal, save_to=out, display="none") as w:
        done: list[bool] = []
        w.on_done(
            lambda t: done.append(Path(w.save_to or "", safe_filename(t.id, 0, t.result[0].format)).exists())
        )
        w.watch(ids)
        final = w.wait(timeout=30)
        files = {p.name for p in out.iterdir()}  # wait() returned: every file is there
        assert files == {safe_filename(i, 0, final[i].result[0].format) for i in ids}  # download()'s names
        assert done == [True] * len(ids)  # on_done runs once the file is saved
        assert w.engine.keeper.downloads == len(ids)
        assert w.saved_files == {i: [out / safe_filename(i, 0, final[i].result[0].format)] for i in ids}
    rows = SQLiteStore(journal).results()
    assert {r.task_id for r in rows} == set(ids)
    for row in rows:
        data = Path(row.local_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256 and len(data) == row.size_bytes
        assert data == sim._tasks[row.task_id].media.data
    history = read_history(journal).set_index("task_id")
    assert history["local_path"].to_dict() == {r.task_id: r.local_path for r in rows}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_save_to_with_the_gallery_downloads_once(sim: Simulator, tmp_path: Path) -> None:
    ids = [sim.submit(model=m, latency=1) for m in MODELS]
    with _watcher(sim, save_to=tmp_path / "out") as w:
        w.panel  # noqa: B018 - the gallery too
        w.watch(ids)
        w.wait(timeout=30)
        assert w.engine.keeper.downloads == len(ids)
        assert len(list((tmp_path / "out").iterdir())) == len(ids)
        history = w.history().set_index("task_id")  # a memory journal: the same column
        assert history["local_path"].notna().all()


def test_without_save_to_nothing_is_written(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ids = [sim.submit(model=m, latency=1) for m in MODELS]
    with _watcher(sim) as w:
        w.panel  # noqa: B018
        w.watch(ids)
        w.wait(timeout=30)
        assert w.history()["local_path"].isna().all()
        assert w.saved_files == {}
    assert list(tmp_path.iterdir()) == []


def test_a_saved_file_is_not_downloaded_again(sim: Simulator, tmp_path: Path) -> None:
    ids = [sim.submit(model=m, latency=1) for m in MODELS]
    out, journal = tmp_path / "out", tmp_path / "journal.sqlite"
    with _watcher(sim, store=journal, save_to=out) as w:
        w.watch(ids)
        w.wait(timeout=30)
    victim = out / safe_filename(ids[0], 0, "jpg")
    victim.write_bytes(b"corrupted")  # a checksum that no longer matches: fetched again
    with _watcher(sim, store=journal, save_to=out) as again:  # a new engine: nothing in memory
        panel = again.panel
        again.watch(ids)
        again.wait(timeout=30)
        _redrawn(again)
        assert again.engine.keeper.downloads == 1
        assert victim.read_bytes() == sim._tasks[ids[0]].media.data
        assert len([t for t in panel.gallery.children if not isinstance(t.children[0], widgets.HTML)]) == len(
            ids
        )


# Ids that collide once cleaned: '.' becomes '_', leading '_' is stripped (issue 17, item 8).
COLLIDING_IDS = ["img.1", "img_1", "_img_1"]


def _rename(sim: Simulator, task_id: str, new_id: str, colour: int) -> str:
    """The API answers for ``task_id`` under ``new_id``, with a PNG of its own colour."""
    from mh_notebook.sim.media import media_for

    task = sim._tasks.pop(task_id)
    task.id, task.media = new_id, media_for("png", colour)
    sim._tasks[new_id] = task
    return new_id


def test_ids_that_collide_once_cleaned_save_to_files_of_their_own(sim: Simulator, tmp_path: Path) -> None:
    ids = [
        _rename(sim, sim.submit(model="nano-banana-2", outcome="succeeded", latency=1), new, colour)
        for colour, new in enumerate(COLLIDING_IDS)
    ]
    out, journal, by_hand = tmp_path / "out", tmp_path / "j.sqlite", tmp_path / "by-hand"
    with _watcher(sim, display="none", store=journal, save_to=out) as w:
        w.watch(ids)
        w.wait(timeout=30)
        downloaded = {i: w.download(i, by_hand, progress=False) for i in ids}
    rows = {r.task_id: r for r in SQLiteStore(journal, create=False).results()}
    assert set(rows) == set(ids)
    assert len({r.local_path for r in rows.values()}) == len(ids)  # one file per task, one checksum per file
    for task_id in ids:
        data = sim._tasks[task_id].media.data
        assert Path(rows[task_id].local_path).read_bytes() == data  # each file holds its own task's bytes
        assert rows[task_id].sha256 == hashlib.sha256(data).hexdigest()
        (path,) = downloaded[task_id]
        assert path.read_bytes() == data and path.name == Path(rows[task_id].local_path).name
    assert len({sim._tasks[i].media.data for i in ids}) == len(ids)  # three different images
    assert len(list(out.iterdir())) == len(list(by_hand.iterdir())) == len(ids)


@pytest.mark.parametrize("task_id", ["task_abc123", "task_0a1b2c3d4e5f", "A-b_9", "x" * 80])
def test_ids_that_need_no_cleaning_keep_their_file_names(task_id: str) -> None:
    # an existing save_to folder of such ids keeps its names (and is not downloaded again)
    assert safe_filename(task_id, 0, "png") == f"{task_id}_0.png"
    assert safe_filename(task_id, 3, "MP4") == f"{task_id}_3.mp4"


@given(st.lists(st.text(alphabet="aA1._-/é", min_size=1, max_size=6), min_size=2, max_size=8, unique=True))
def test_file_names_are_injective_in_the_task_id(ids: list[str]) -> None:
    # a tiny alphabet: most lists hold ids that collide once cleaned (60 examples)
    names = [safe_filename(i, 0, "png") for i in ids]
    assert len(set(names)) == len(ids)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*_0\.png", name), name


@pytest.mark.parametrize(
    "make", [lambda p: MemoryStore(), lambda p: SQLiteStore(p / "j.sqlite")], ids=["memory", "sqlite"]
)
def test_a_result_saved_again_replaces_its_row(tmp_path: Path, make: Callable[[Path], Store]) -> None:
    store = make(tmp_path)
    store.add_results([SavedResult("a", 0, "/x/a_0.png", "00", 3, 1.0)], wait=0.05)
    again = SavedResult("a", 0, "/y/a_0.png", "11", 4, 2.0)
    store.add_results(
        [
            again,
            SavedResult("b", 0, "/y/b_0.png", "22", 5, 2.0),
            SavedResult("a", 1, "/y/a_1.png", "33", 6, 2.0),
        ]
    )
    assert store.results(["a"]) == [again, SavedResult("a", 1, "/y/a_1.png", "33", 6, 2.0)]
    assert [(r.task_id, r.idx) for r in store.results()] == [("a", 0), ("a", 1), ("b", 0)]
    assert store.results([]) == []
    store.close()


# ------------------------------------------------------------------ the static view


def test_the_static_view_tells_the_truth(short_urls: Simulator) -> None:
    sim = short_urls
    ids = [sim.submit(model=m, latency=2) for m in MODELS]
    ids.append(sim.submit(model="kling-v3.0", outcome="failed", latency=1, error_code="PROVIDER_ERROR"))
    with _watcher(sim) as w:
        w.watch(ids)
        w.wait(timeout=30)
        bundle = w._static_bundle()
    page, text = bundle["text/html"], bundle["text/plain"]
    for shown in (page, text):
        assert not re.search(r"\b(pending|queued|running)\b", shown)
        assert "succeeded" in shown and "failed" in shown
    assert "succeeded</span> 4" in page and "succeeded 4" in text  # the same counts
    assert "failed</span> 1" in page and "failed 1" in text
    for task_id in ids:
        assert task_id in text and task_id in page
    thumbs = re.findall(r'src="(data:image/jpeg;base64,[^"]+)"', page)
    assert len(thumbs) == 2  # the two images; audio and video are labelled entries
    assert "[audio] eleven-v3" in text and "[video] viduq3-turbo" in text
    assert "http" not in page.split("mh-static-gallery", 1)[1]  # no expiring URL in the saved view


def test_the_static_view_is_updated_by_display_id(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    sent: list[tuple[str, dict[str, str]]] = []
    lock = threading.Lock()

    def record(kind: str) -> Callable[..., None]:
        def send(obj: object, **kw: object) -> None:
            with lock:
                assert isinstance(obj, dict) and kw.get("raw")
                if "text/html" in obj:
                    assert kw.get("display_id")  # every static output has its id
                else:  # the live widget: no display id (updating it would rebuild the view)
                    assert set(obj) == {"application/vnd.jupyter.widget-view+json"} and not kw.get(
                        "display_id"
                    )
                sent.append((kind, dict(obj)))

        return send

    monkeypatch.setattr(IPython.display, "display", record("display"))
    monkeypatch.setattr(IPython.display, "update_display", record("update"))
    ids = [sim.submit(model="eleven-v3", latency=lat) for lat in (2, 3, 60, 120)]
    w = _watcher(sim, static_interval=0.2)
    w._ipython_display_()
    assert [k for k, _ in sent] == ["display", "display"]  # the live widget, then its static twin
    assert "0 watched" in sent[1][1]["text/plain"]  # shown before any task was watched
    w.watch(ids)
    w.wait(timeout=30)
    w.stop()
    updates = [b for k, b in sent if k == "update"]
    assert updates, "no update_display was sent"
    final = updates[-1]
    assert "stopped" in final["text/plain"] and "succeeded 4" in final["text/plain"]
    assert not re.search(r"\b(pending|queued|running)\b", final["text/html"])
    assert len(updates) <= 2 + 1.2 / 0.2 + 2  # at most every static_interval, plus wait() and stop()


# ------------------------------------------------------------------ show() with local bytes, and the key


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    import IPython.display

    objects: list[object] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **_: objects.extend(objs))
    return objects


def test_show_embed_uses_the_kept_bytes_without_a_request(short_urls: Simulator, shown: list[object]) -> None:
    sim = short_urls
    image, audio = (
        sim.submit(model=m, outcome="succeeded", latency=1) for m in ("nano-banana-2", "eleven-v3")
    )
    with _watcher(sim) as w:
        w.watch(image, audio)
        w.wait(timeout=30)
        sim.expire_now(image)
        sim.expire_now(audio)
        requests, downloads = dict(sim.requests), w.engine.keeper.downloads
        w.show(image, embed=True)
        w.show(audio, embed=True)
        assert dict(sim.requests) == requests and w.engine.keeper.downloads == downloads  # nothing asked
    png, mp3 = shown
    assert isinstance(png, Image) and png.data == sim._tasks[image].media.data
    assert isinstance(mp3, HTML) and 'type="audio/mpeg"' in mp3.data
    assert base64.b64encode(sim._tasks[audio].media.data).decode() in mp3.data


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _live(obj: object, task_id: str, data: bytes, kind: type[widgets.Widget]) -> None:
    """``obj`` shows ``data`` through a binary media widget (a reload gets it from the kernel),
    with a saved-notebook fallback that holds no URL."""
    widget = getattr(obj, "widget", None)
    assert isinstance(widget, kind), obj
    assert widget.value == data
    bundle = obj._repr_mimebundle_()  # type: ignore[attr-defined]
    assert bundle[WIDGET_VIEW]["model_id"] == widget.model_id
    assert task_id in bundle["text/plain"] and task_id in html.unescape(bundle["text/html"])
    assert "://" not in bundle["text/html"]  # no URL: a thumbnail or a label


def test_show_of_a_kept_result_is_as_durable_as_the_gallery(
    short_urls: Simulator, shown: list[object]
) -> None:
    sim = short_urls
    ids = [
        sim.submit(model=m, outcome="succeeded", latency=1)
        for m in ("nano-banana-2", "eleven-v3", "viduq3-turbo")
    ]
    with _watcher(sim) as w:  # a notebook with the panel
        w.watch(ids)
        w.wait(timeout=30)
        for task_id in ids:
            sim.expire_now(task_id)
        requests, downloads = dict(sim.requests), w.engine.keeper.downloads
        for task_id in ids:
            w.show(task_id)
        assert dict(sim.requests) == requests and w.engine.keeper.downloads == downloads  # the kept bytes
    assert len(shown) == len(ids)
    for obj, task_id, kind in zip(shown, ids, (widgets.Image, widgets.Audio, widgets.Video), strict=True):
        _live(obj, task_id, sim._tasks[task_id].media.data, kind)
    assert shown[1].widget.format == "mpeg"  # type: ignore[attr-defined] # the page builds audio/mpeg


def test_show_of_a_result_no_longer_in_memory_fetches_it_once_for_a_widget(
    short_urls: Simulator, shown: list[object], tmp_path: Path
) -> None:
    sim = short_urls
    ids = [sim.submit(model="seedream-4.5", outcome="succeeded", latency=lat) for lat in (1, 40, 1, 40)]
    with _watcher(sim, gallery_limit=1) as w:  # only the newest stays in memory
        w.watch(ids[:2])
        w.wait(timeout=30)
        (old,) = [i for i in ids[:2] if (i, 0) not in w._kept]
        sim.expire_now(old)
        downloads = w.engine.keeper.downloads
        w.show(old)  # fetched again (a fresh URL through the engine), then a widget
        assert w.engine.keeper.downloads == downloads + 2  # the 403, then the fresh URL
        assert sim.requests[old] == w.polls[old]  # the refresh was counted in the budget
    with _watcher(sim, gallery_limit=1, save_to=tmp_path / "out") as w:
        w.watch(ids[2:])
        w.wait(timeout=30)
        (saved_old,) = [i for i in ids[2:] if (i, 0) not in w._kept]
        sim.expire_now(saved_old)
        downloads = w.engine.keeper.downloads
        w.show(saved_old)  # read from the saved file, checksum verified: no request
        assert w.engine.keeper.downloads == downloads
    for obj, task_id in zip(shown, (old, saved_old), strict=True):
        _live(obj, task_id, sim._tasks[task_id].media.data, widgets.Image)


def test_show_after_the_provider_forgot_the_task_uses_the_saved_file(
    sim: Simulator, tmp_path: Path, shown: list[object]
) -> None:
    task_id = sim.submit(model="seedream-4.5", outcome="succeeded", latency=1)
    w = _watcher(sim, display="none", save_to=tmp_path / "out", store=tmp_path / "j.sqlite")
    w.watch(task_id)
    w.wait(timeout=30)
    w.stop()
    data = sim._tasks.pop(task_id).media.data  # past the provider's retention: 404 from now on
    w.show(task_id)  # a stopped watcher, no URL that works: the saved file, embedded
    (image,) = shown
    assert isinstance(image, Image) and image.data == data


def test_result_downloads_never_carry_the_api_key(sim: Simulator) -> None:
    import http.server

    seen: list[dict[str, str]] = []
    png = (Path(__file__).parents[1] / "mh_notebook" / "sim" / "media" / "sample.jpg").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/r/0.jpg?sig=1"
        task = Task.from_api(
            {"id": "task_cdn", "status": "succeeded", "model": "m", "result": [{"url": url, "format": "jpg"}]}
        )
        with _watcher(sim) as w:
            w.watch(task)
            w.wait(timeout=30)
            assert w._kept[("task_cdn", 0)][0].data == png
    finally:
        server.shutdown()
    (headers,) = seen
    assert "authorization" not in headers
    assert sim.api_key not in json.dumps(headers)


def test_an_image_too_large_to_keep_inline_shows_its_thumbnail(sim: Simulator, tmp_path: Path) -> None:
    task_id = sim.submit(model="seedream-4.5", outcome="succeeded", latency=1)  # a 3.6 kB JPEG
    with _watcher(sim, inline_limit=1000, save_to=tmp_path / "out") as w:
        panel = w.panel
        w.watch(task_id)
        w.wait(timeout=30)
        _redrawn(w)
        (tile,) = panel.gallery.children
        thumb, note = tile.children
        assert isinstance(thumb, widgets.Image) and thumb.format == "jpeg" and len(thumb.value) < 3000
        assert "too large to keep inline" in note.value and "saved: " in note.value
        ((kept, _),) = w._kept.values()
        assert kept.data is None and kept.local_path is not None


def test_a_watcher_without_a_gallery_keeps_no_bytes_in_memory(sim: Simulator, tmp_path: Path) -> None:
    ids = [sim.submit(model=m, latency=1) for m in MODELS]
    with _watcher(sim, display="none", save_to=tmp_path / "out") as w:
        w.watch(ids)
        w.wait(timeout=30)
        kept = [k for k, _ in w._kept.values()]
    assert len(kept) == len(ids) and all(k.data is None and not k.too_large and k.local_path for k in kept)
