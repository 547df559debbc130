"""The quickstart in real JupyterLab, driven by headless Chromium through Playwright.

Screenshots land in ``test-artifacts/browser/`` (look at them: the panel should look good).
Built for a loaded 2-core CI machine: every wait is Playwright's auto-waiting with a generous
but bounded timeout, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
# JupyterLab user settings (keys and types from the apputils-extension notification.json schema):
# never fetch news, so no "official Jupyter news?" prompt; no update checks.
NOTIFICATION_SETTINGS = {"fetchNews": "false", "checkForUpdates": False}
PYTHON3 = '{"name":"python3"}'  # the Select Kernel dialog's option for a new python3 kernel
KERNEL_IDLE = re.compile(r"Python 3\b.*\| Idle")  # the status bar once the kernel is connected and idle
SECONDS = 1000  # Playwright timeouts are in milliseconds


@dataclass(frozen=True)
class Lab:
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 serving a copy of the quickstart with one hostile failure added.

    Its settings, workspaces, config and data directories are fresh and private to this run.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)")
    root = tmp_path_factory.mktemp("lab")
    notebooks, settings, workspaces = root / "notebooks", root / "settings", root / "workspaces"
    for d in (notebooks, workspaces, root / "config", root / "data"):
        d.mkdir()
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps(NOTIFICATION_SETTINGS))

    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "ids.append" in c.source) + 1
    hostile = f"ids.append(sim.submit(model='seedream-4.0', outcome='failed', latency=2, error_code='<b>BAD</b>', error_message={HOSTILE!r}))"
    nb.cells.insert(at, nbformat.v4.new_code_cell(hostile))
    # a known kernelspec: JupyterLab starts python3 itself instead of asking which kernel to use
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "quickstart.ipynb")

    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.root_dir={notebooks}",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / "config"), "XDG_DATA_HOME": str(root / "data")}
    log = root / "lab.log"
    with log.open("w") as stderr:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    base, auth = f"http://127.0.0.1:{port}", {"token": token}
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("JupyterLab did not start in 120 s: " + log.read_text()[-2000:])
            try:
                if httpx.get(f"{base}/api/status", params=auth, timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)  # poll interval while the server starts
        served = httpx.get(
            f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification", params=auth, timeout=30
        ).json()
        # our settings are the ones JupyterLab serves to the page
        assert served["settings"] == NOTIFICATION_SETTINGS, served.get("raw")
        specs = httpx.get(f"{base}/api/kernelspecs", params=auth, timeout=30).json()
        assert "python3" in specs["kernelspecs"], specs
        yield Lab(f"{base}/lab/tree/quickstart.ipynb?token={token}", log)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.mark.timeout(900)
def test_quickstart_runs_live_in_jupyterlab(lab: Lab) -> None:
    from playwright.sync_api import Locator, expect, sync_playwright

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
        # "Select Kernel" can still appear when the kernel list is slow: start python3. Playwright runs
        # this handler before every action, locator wait and expect(), so it cannot race them.
        kernel_dialogs: list[str] = []

        def accept_kernel(dialog: Locator) -> None:
            kernel_dialogs.append(dialog.inner_text())
            if dialog.locator(f"option[value='{PYTHON3}']").count():
                dialog.locator("select").select_option(value=PYTHON3)
            dialog.locator("button.jp-mod-accept").click()  # "Select"

        header = page.locator(".jp-Dialog-header", has_text="Select Kernel")
        page.add_locator_handler(page.locator(".jp-Dialog").filter(has=header), accept_kernel)
        try:
            page.goto(lab.url, timeout=120 * SECONDS)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120 * SECONDS)
            # the status bar names the kernel once one is connected; the toolbar's "Kernel status: Idle"
            # shows before any kernel exists ("No Kernel | Initializing")
            idle = page.locator("#jp-main-statusbar .jp-StatusBar-TextItem", has_text=KERNEL_IDLE)
            first_prompt = page.locator(".jp-CodeCell .jp-InputArea-prompt").first
            for _ in range(5):  # a Run All sent while the kernel connects can be dropped: retry
                idle.wait_for(timeout=120 * SECONDS)
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                try:  # [*] once queued, [1] once run; a dropped Run All leaves [ ]
                    expect(first_prompt).to_have_text(re.compile(r"\[[0-9*]+\]"), timeout=15 * SECONDS)
                    break
                except AssertionError:
                    continue
            else:
                pytest.fail("Run All Cells never started the notebook (5 tries)")

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
                panel.locator(f".jp-OutputArea {selector}").first.wait_for(timeout=120 * SECONDS)
            page.wait_for_function(
                """() => {
                    const p = document.querySelector('.mh-panel');
                    const v = [...p.querySelectorAll('video')], i = [...p.querySelectorAll('figure img')],
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
            # the news prompt is off through settings: no toast about news, long after the page loaded
            news = page.locator(".Toastify__toast").filter(has_text=re.compile("news", re.IGNORECASE))
            assert news.count() == 0, news.all_inner_texts()
            print(f"Select Kernel dialogs accepted: {kernel_dialogs}")
            page.screenshot(path=str(ARTIFACTS / "3-notebook.png"), full_page=True)
        except BaseException:  # pytest.fail and timeouts too
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / "failure.png"), timeout=30 * SECONDS)
            shutil.copy(lab.log, ARTIFACTS / "lab.log")
            raise
        finally:
            browser.close()
