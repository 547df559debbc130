"""The quickstart in real JupyterLab, driven by headless Chromium through Playwright.

Screenshots land in ``test-artifacts/browser/`` (look at them: the panel should look good).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 serving a copy of the quickstart with one hostile failure added."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)")
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "ids.append" in c.source) + 1
    hostile = f"ids.append(sim.submit(model='seedream-4.0', outcome='failed', latency=2, error_code='<b>BAD</b>', error_message={HOSTILE!r}))"
    nb.cells.insert(at, nbformat.v4.new_code_cell(hostile))
    nbformat.write(nb, root / "quickstart.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.root_dir={root}",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(root / "lab.log").open("w"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/status", params={"token": token}).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start: " + (root / "lab.log").read_text()[-2000:])
    yield f"{base}/lab/tree/quickstart.ipynb?token={token}"
    server.terminate()
    server.wait(20)


def test_quickstart_runs_live_in_jupyterlab(lab: str) -> None:
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
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
        try:
            page.goto(lab)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=90_000)
            for _ in range(5):  # a Run All sent while the kernel connects can be dropped: retry
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                try:
                    page.wait_for_function(
                        "() => /\\[[0-9*]+\\]/.test(document.querySelector('.jp-CodeCell .jp-InputArea-prompt').innerText)",
                        timeout=10_000,
                    )
                    break
                except Exception:
                    continue

            panel = page.locator(".mh-panel").first
            panel.wait_for(timeout=60_000)
            panel.locator(".mh-summary", has_text="live").wait_for(timeout=90_000)  # the panel went live...
            page.wait_for_function(  # ...and shows answers from the API
                "() => /running|succeeded/.test(document.querySelector('.mh-panel .mh-summary').innerText)",
                timeout=90_000,
            )
            for button in page.get_by_role("button", name="No").all():  # JupyterLab's news prompt
                button.click()
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(ARTIFACTS / "1-panel-live.png"))

            for selector in ("video", "img", "audio"):
                panel.locator(f".jp-OutputArea {selector}").first.wait_for(timeout=120_000)
            page.wait_for_function(
                """() => {
                    const p = document.querySelector('.mh-panel');
                    const v = [...p.querySelectorAll('video')], i = [...p.querySelectorAll('figure img')],
                          a = [...p.querySelectorAll('audio')];
                    return v.length && i.length && a.length && v.every(x => x.readyState >= 1)
                        && i.every(x => x.complete && x.naturalWidth > 0) && a.every(x => x.readyState >= 1);
                }""",
                timeout=120_000,
            )
            media_failures = list(failed_media) + list(bad_media)  # the last cell stops the simulator later
            summary = panel.locator(".mh-summary")
            page.wait_for_function(
                "() => !/\\b(running|queued|pending)\\b/.test(document.querySelector('.mh-panel .mh-summary').innerText)",
                timeout=180_000,
            )
            assert "succeeded" in summary.inner_text()
            table_text = panel.locator(".mh-table").inner_text()
            assert '<img src=x onerror="window.__pwned=1">' in table_text  # shown as text...
            assert "<b>BAD</b>" in table_text
            assert page.evaluate("() => window.__pwned") is None  # ...and nothing ran
            assert panel.locator(".mh-table img, .mh-table script").count() == 0
            assert not media_failures, media_failures
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(ARTIFACTS / "2-panel-done.png"))
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-Cell .jp-InputArea-prompt')].every(e => !e.innerText.includes('*'))",
                timeout=180_000,
            )
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert errors.count() == 0 or "Traceback" not in errors.all_inner_texts()
            page.screenshot(path=str(ARTIFACTS / "3-notebook.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        browser.close()
