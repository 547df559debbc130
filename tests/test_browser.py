"""The quickstart in real JupyterLab, driven by headless Chromium through Playwright.

Screenshots land in ``test-artifacts/browser/`` (look at them: the panel should look good).
Built for a loaded 2-core CI machine: every wait is Playwright's auto-waiting with a generous
but bounded timeout, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from _lab import (
    CHROMIUM,
    FLAGS,
    KERNELSPEC,
    SECONDS,
    Lab,
    handle_kernel_dialogs,
    jupyterlab,
    no_news_toast,
    require_chromium,
    run_all_cells,
)

from mh_notebook.sim.server import GET_LIST_FIELDS_ENV

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 serving a copy of the quickstart with one hostile failure added.

    Its settings, workspaces, config and data directories are fresh and private to this run.
    """
    require_chromium()
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "ids.append" in c.source) + 1
    hostile = f"watcher.watch(sim.submit(model='seedream-4.0', outcome='failed', latency=2, error_code='<b>BAD</b>', error_message={HOSTILE!r}))"
    nb.cells.insert(at, nbformat.v4.new_code_cell(hostile))
    # a known kernelspec: JupyterLab starts python3 itself instead of asking which kernel to use
    nb.metadata["kernelspec"] = KERNELSPEC
    nbformat.write(nb, root / "notebooks" / "quickstart.ipynb")
    with jupyterlab(root, "quickstart.ipynb") as running:
        yield running


@pytest.mark.timeout(900)
def test_quickstart_runs_live_in_jupyterlab(lab: Lab) -> None:
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS, timeout=60 * SECONDS)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.set_default_timeout(60 * SECONDS)  # any wait without its own timeout
        failed_media: list[str] = []
        # a <video> aborts its own range requests once it has what it needs (net::ERR_ABORTED)
        page.on(
            "requestfailed",
            lambda r: (
                failed_media.append(f"{r.url} {r.failure}")
                if "/media/" in r.url and "ABORTED" not in str(r.failure)
                else None
            ),
        )
        bad_media: list[str] = []
        page.on(
            "response",
            lambda r: (
                bad_media.append(f"{r.url} {r.status}") if "/media/" in r.url and r.status >= 400 else None
            ),
        )
        kernel_dialogs = handle_kernel_dialogs(page)
        try:
            page.goto(lab.url, timeout=120 * SECONDS)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120 * SECONDS)
            run_all_cells(page)

            panel = page.locator(".mh-panel").first
            stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = stderr.filter(has_text="Traceback")
            panel.or_(tracebacks).first.wait_for(timeout=120 * SECONDS)  # fail fast if a cell raised
            assert tracebacks.count() == 0, "a cell raised:\n" + "\n\n".join(tracebacks.all_inner_texts())
            summary = panel.locator(".mh-summary")
            # the panel went live and shows answers from the API
            summary.filter(has_text="live").wait_for(timeout=120 * SECONDS)
            expect(summary).to_contain_text(
                re.compile("running|succeeded"), use_inner_text=True, timeout=120 * SECONDS
            )
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(ARTIFACTS / "1-panel-live.png"))

            for selector in ("video", "img", "audio"):
                panel.locator(f".mh-gallery {selector}").first.wait_for(timeout=120 * SECONDS)
            page.wait_for_function(
                """() => {
                    const p = document.querySelector('.mh-panel');
                    const v = [...p.querySelectorAll('video')], i = [...p.querySelectorAll('.mh-gallery img')],
                          a = [...p.querySelectorAll('audio')];
                    return v.length && i.length && a.length && v.every(x => x.readyState >= 1)
                        && i.every(x => x.complete && x.naturalWidth > 0) && a.every(x => x.readyState >= 1);
                }""",
                timeout=120 * SECONDS,
            )
            media_failures = list(failed_media) + list(bad_media)  # the last cell stops the simulator later
            # innerText: textContent runs the header into the badges ("req/srunning 2")
            unfinished = re.compile(r"\b(running|queued|pending)\b")
            expect(summary).not_to_contain_text(unfinished, use_inner_text=True, timeout=180 * SECONDS)
            assert "succeeded" in summary.inner_text()
            table_text = panel.locator(".mh-table").inner_text()
            assert '<img src=x onerror="window.__pwned=1">' in table_text  # shown as text...
            assert "<b>BAD</b>" in table_text
            assert "sandbox" in summary.inner_text()  # a river_test_ key
            if os.environ.get(GET_LIST_FIELDS_ENV, "1") != "0":  # the server said what each task cost
                assert re.search(r"spent \$\d", summary.inner_text()), summary.inner_text()
                assert re.search(r"\$\d", " ".join(panel.locator(".mh-table .mh-cost").all_inner_texts()))
            assert page.evaluate("() => window.__pwned") is None  # ...and nothing ran
            assert panel.locator(".mh-table img, .mh-table script").count() == 0
            assert not media_failures, media_failures
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(ARTIFACTS / "2-panel-done.png"))
            prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt")
            expect(prompts.filter(has_text="*")).to_have_count(0, timeout=180 * SECONDS)
            printed = [text for text in stderr.all_inner_texts() if "Traceback" in text]
            assert not printed, "a cell printed a traceback:\n" + "\n\n".join(printed)
            ran = prompts.filter(has_text=re.compile(r"\[\d+\]"))
            expect(ran).to_have_count(prompts.count(), timeout=30 * SECONDS)  # every code cell ran
            no_news_toast(page)
            print(f"Select Kernel dialogs accepted: {kernel_dialogs}")
            page.screenshot(path=str(ARTIFACTS / "3-notebook.png"), full_page=True)
        except BaseException:  # pytest.fail and timeouts too
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / "failure.png"), timeout=30 * SECONDS)
            shutil.copy(lab.log, ARTIFACTS / "lab.log")
            raise
        finally:
            browser.close()
