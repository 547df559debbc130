"""Shared helpers of the browser tests: a private JupyterLab server and a headless Chromium page.

Built for a loaded 2-core CI machine: every wait is Playwright's auto-waiting with a generous
but bounded timeout, never a fixed sleep. JupyterLab's news prompt and update checks are off
through user settings (no clicks), and a "Select Kernel" dialog is answered by a locator
handler that Playwright runs before every action, so it cannot race them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
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
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: ``url`` opens ``notebook``; ``log`` is the server's stderr."""

    url: str
    log: Path
    base: str = ""
    token: str = ""

    def tree_url(self, name: str) -> str:
        """The URL that opens notebook ``name`` (relative to the server's root)."""
        return f"{self.base}/lab/tree/{name}?token={self.token}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)")


@contextmanager
def jupyterlab(root: Path, notebook: str) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 serving ``root / "notebooks"``, opening ``notebook``.

    Its settings, workspaces, config and data directories are fresh and private to this run
    (made under ``root``).
    """
    notebooks, settings, workspaces = root / "notebooks", root / "settings", root / "workspaces"
    for d in (notebooks, workspaces, root / "config", root / "data"):
        d.mkdir(exist_ok=True)
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps(NOTIFICATION_SETTINGS))

    port, token = free_port(), secrets.token_hex(16)
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
        _wait_until_up(server, base, auth, log)
        served = httpx.get(
            f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification", params=auth, timeout=30
        ).json()
        # our settings are the ones JupyterLab serves to the page
        assert served["settings"] == NOTIFICATION_SETTINGS, served.get("raw")
        specs = httpx.get(f"{base}/api/kernelspecs", params=auth, timeout=30).json()
        assert "python3" in specs["kernelspecs"], specs
        yield Lab(f"{base}/lab/tree/{notebook}?token={token}", log, base, token)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _wait_until_up(server: subprocess.Popen[bytes], base: str, auth: dict[str, str], log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail("JupyterLab did not start in 120 s: " + log.read_text()[-2000:])
        try:
            if httpx.get(f"{base}/api/status", params=auth, timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)  # poll interval while the server starts


def handle_kernel_dialogs(page: Any) -> list[str]:
    """Answer any "Select Kernel" dialog with a new python3 kernel; returns the texts seen.

    Playwright runs this handler before every action, locator wait and expect(), so it cannot
    race them (the dialog can still appear when the kernel list is slow).
    """
    seen: list[str] = []

    def accept_kernel(dialog: Any) -> None:
        seen.append(dialog.inner_text())
        if dialog.locator(f"option[value='{PYTHON3}']").count():
            dialog.locator("select").select_option(value=PYTHON3)
        dialog.locator("button.jp-mod-accept").click()  # "Select"

    header = page.locator(".jp-Dialog-header", has_text="Select Kernel")
    page.add_locator_handler(page.locator(".jp-Dialog").filter(has=header), accept_kernel)
    return seen


def idle_kernel(page: Any) -> Any:
    """The status bar item naming a connected, idle kernel.

    The toolbar's "Kernel status: Idle" shows before any kernel exists ("No Kernel |
    Initializing"); the status bar names the kernel only once one is connected.
    """
    return page.locator("#jp-main-statusbar .jp-StatusBar-TextItem", has_text=KERNEL_IDLE)


def run_all_cells(page: Any) -> None:
    """Run All Cells once the kernel is idle; retried when a Run All sent while the kernel
    connects is dropped (the first prompt then stays ``[ ]``)."""
    from playwright.sync_api import expect

    first_prompt = page.locator(".jp-CodeCell .jp-InputArea-prompt").first
    for _ in range(5):
        idle_kernel(page).wait_for(timeout=120 * SECONDS)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:  # [*] once queued, [1] once run; a dropped Run All leaves [ ]
            expect(first_prompt).to_have_text(re.compile(r"\[[0-9*]+\]"), timeout=15 * SECONDS)
            return
        except AssertionError:
            continue
    pytest.fail("Run All Cells never started the notebook (5 tries)")


def no_news_toast(page: Any) -> None:
    """The news prompt is off through settings: no toast about news, long after the page loaded."""
    news = page.locator(".Toastify__toast").filter(has_text=re.compile("news", re.IGNORECASE))
    assert news.count() == 0, news.all_inner_texts()
