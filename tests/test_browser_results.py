"""Results that outlive their URLs, in real JupyterLab and headless Chromium.

The simulator's result URLs live 3 seconds. After every one of them has expired, the panel's
gallery still plays (its bytes come from the kernel through binary widgets), also after the
page is saved and reloaded while the kernel runs, and in a second tab. ``show()`` is as
durable (issue 17, item 10): an image shown while its URL worked, and an image and an audio
shown after expiry, all load again after the reload, from the kernel's bytes; the page never
asks for a result URL. Screenshots land in ``test-artifacts/browser-results/``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from _lab import (
    CHROMIUM,
    FLAGS,
    KERNELSPEC,
    SECONDS,
    Lab,
    handle_kernel_dialogs,
    idle_kernel,
    jupyterlab,
    no_news_toast,
    require_chromium,
    run_all_cells,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser-results"
NOTEBOOK = "results.ipynb"
CELLS = [
    """from mh_notebook import TaskWatcher
from mh_notebook.sim import Simulator
import httpx, time

sim = Simulator(seed=11, speed=20, url_lifetime=3).start()  # every result URL lives 3 s
image_id = sim.submit(model="seedream-4.5", outcome="succeeded", latency=20)
png_id = sim.submit(model="nano-banana-2", outcome="succeeded", latency=30)
audio_id = sim.submit(model="eleven-v3", outcome="succeeded", latency=20)
video_id = sim.submit(model="viduq3-turbo", outcome="succeeded", latency=40)
ids = [image_id, png_id, audio_id, video_id]""",
    """w = TaskWatcher(sim.api_key, sim.url, time_scale=20, store=None)
w.watch(ids)
w""",
    "final = w.wait(timeout=120)",
    "w.show(png_id)  # while its URL still works",
    """urls = [t.result[0].url for t in final.values()]
deadline = time.monotonic() + 60
while any(httpx.get(u).status_code != 403 for u in urls):  # until every URL the API gave has expired
    assert time.monotonic() < deadline, "the result URLs did not expire"
    time.sleep(0.2)
print("all", len(urls), "result URLs have expired")""",
    "w.show(image_id)  # after expiry: the bytes the gallery kept",
    "w.show(audio_id)",
    'print("notebook done")',
]
# the gallery's media: blob URLs made from the widgets' bytes; all loaded
GALLERY_LOADED = """() => {
    const g = document.querySelector('.mh-panel .mh-gallery');
    if (!g) return false;
    const i = [...g.querySelectorAll('img')], a = [...g.querySelectorAll('audio')], v = [...g.querySelectorAll('video')];
    const all = [...i, ...a, ...v];
    return i.length === 2 && a.length === 1 && v.length === 1 && all.every(x => x.src.startsWith('blob:'))
        && i.every(x => x.complete && x.naturalWidth > 0) && a.every(x => x.readyState >= 1)
        && v.every(x => x.readyState >= 1);
}"""
# show()'s outputs: (cell text, element); all loaded, from the kernel's bytes once `blob` is set
SHOWN = (("w.show(png_id)", "img"), ("w.show(image_id)", "img"), ("w.show(audio_id)", "audio"))
SHOWN_LOADED = """([els, blob]) => els.every(e => (!blob || e.src.startsWith('blob:'))
    && (e.tagName === 'IMG' ? e.complete && e.naturalWidth > 0 : e.readyState >= 1))"""
SHOWN_STATE = """els => els.map(e => [e.tagName, (e.currentSrc || e.src).slice(0, 60),
    e.tagName === 'IMG' ? e.naturalWidth : e.readyState])"""
TILES_IN_ROWS = """() => {
    const tops = [...document.querySelectorAll('.mh-panel .mh-tile')].map(t => Math.round(t.getBoundingClientRect().top));
    return tops.length === 4 && new Set(tops).size <= 2;  // side by side, wrapping: not a column
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab serving the results notebook (fresh, private settings; news off)."""
    require_chromium()
    root = tmp_path_factory.mktemp("lab-results")
    (root / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = KERNELSPEC  # JupyterLab starts python3 without asking
    nbformat.write(nb, root / "notebooks" / NOTEBOOK)
    with jupyterlab(root, NOTEBOOK) as running:
        yield running


def _cell(page: Any, text: str) -> Any:
    return page.locator(".jp-CodeCell").filter(has_text=text).first


def _open(page: Any, lab: Lab) -> None:
    page.goto(lab.url, timeout=120 * SECONDS)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120 * SECONDS)


def _shows_work(page: Any, *, from_kernel: bool) -> None:
    """Every show() output loaded (from the kernel's bytes, a ``blob:`` URL, if ``from_kernel``)."""
    found = [_cell(page, text).locator(f".jp-OutputArea-output {tag}").first for text, tag in SHOWN]
    handles = [f.element_handle(timeout=120 * SECONDS) for f in found]
    try:
        page.wait_for_function(SHOWN_LOADED, arg=[handles, from_kernel], timeout=60 * SECONDS)
    except Exception:  # say what the page holds: an expired URL is an empty image
        pytest.fail(f"show() outputs did not load: {page.evaluate(SHOWN_STATE, handles)}")


def _gallery_works(page: Any, shot: str) -> None:
    """The panel's media loaded from the kernel's bytes, laid out in one row; its static twin hidden."""
    from playwright.sync_api import expect

    panel = page.locator(".mh-panel").first
    panel.wait_for(timeout=120 * SECONDS)
    page.wait_for_function(GALLERY_LOADED, timeout=120 * SECONDS)
    page.wait_for_function(TILES_IN_ROWS, timeout=30 * SECONDS)
    expect(page.locator(".mh-static").first).to_be_hidden()  # the saved-notebook view, not shown twice
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(ARTIFACTS / shot))


@pytest.mark.timeout(900)
def test_media_outlive_their_urls_in_jupyterlab(lab: Lab) -> None:
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    saved = Path(lab.log).parent / "notebooks" / NOTEBOOK
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS, timeout=60 * SECONDS)
        context = browser.new_context(viewport={"width": 1400, "height": 2000})
        page = context.new_page()
        page.set_default_timeout(60 * SECONDS)
        media_requests: list[str] = []
        page.on("request", lambda r: media_requests.append(r.url) if "/media/" in r.url else None)
        bad_media: list[str] = []
        page.on(
            "response",
            lambda r: (
                bad_media.append(f"{r.url} {r.status}") if "/media/" in r.url and r.status >= 400 else None
            ),
        )
        kernel_dialogs = handle_kernel_dialogs(page)
        try:
            _open(page, lab)
            run_all_cells(page)
            stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = stderr.filter(has_text="Traceback")
            expired = page.locator(".jp-OutputArea-output", has_text="all 4 result URLs have expired")
            expired.or_(tracebacks).first.wait_for(timeout=180 * SECONDS)
            assert tracebacks.count() == 0, "a cell raised:\n" + "\n\n".join(tracebacks.all_inner_texts())

            # 1. every URL has expired: the gallery still shows everything, from the kernel's bytes
            _gallery_works(page, "1-gallery-after-expiry.png")
            # 2. show(), before and after expiry: every image and audio loads
            page.locator(".jp-OutputArea-output", has_text="notebook done").wait_for(timeout=120 * SECONDS)
            _shows_work(page, from_kernel=False)
            _cell(page, "w.show(image_id)").screenshot(path=str(ARTIFACTS / "2-show-after-expiry.png"))

            # 3. save, reload the page while the kernel runs: widgets come back from the kernel
            page.locator(".jp-Notebook").first.click()
            page.keyboard.press("Control+s")
            _wait_saved(saved)
            page.reload(timeout=120 * SECONDS)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120 * SECONDS)
            idle_kernel(page).wait_for(timeout=120 * SECONDS)
            _gallery_works(page, "3-gallery-after-reload.png")
            _shows_work(page, from_kernel=True)  # every URL has expired: the kernel's bytes, again
            _cell(page, "w.show(png_id)").screenshot(path=str(ARTIFACTS / "3-show-after-reload.png"))

            # 4. a second tab of the same notebook
            second = context.new_page()
            second.set_default_timeout(60 * SECONDS)
            handle_kernel_dialogs(second)
            _open(second, lab)
            _gallery_works(second, "4-gallery-second-tab.png")
            _shows_work(second, from_kernel=True)
            # the page never asked for a result URL: every byte came from the kernel
            assert not media_requests and not bad_media, (media_requests, bad_media)
            no_news_toast(page)
            print(f"Select Kernel dialogs accepted: {kernel_dialogs}")
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True, timeout=30 * SECONDS)
            shutil.copy(lab.log, ARTIFACTS / "lab.log")
            raise
        finally:
            browser.close()


def _wait_saved(path: Path, timeout: float = 60.0) -> None:
    """Until the notebook on disk holds the watcher's outputs (the save reached the server)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nb = nbformat.read(path, as_version=4)
        if any("mh-static" in str(o.get("data", {})) for c in nb.cells for o in c.get("outputs", [])):
            return
        time.sleep(0.2)  # poll interval of a file the server writes
    pytest.fail("the notebook was not saved")
