"""`mh-notebook demo` serves the quickstart in JupyterLab on 127.0.0.1 and prints its URL."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.lab  # starts a JupyterLab server; no browser


def test_demo_command_serves_the_quickstart() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its own process group, SIGINT as a terminal has it (a CI that runs the suite in the
    # background inherits SIGINT ignored: the Ctrl-C below then did nothing, and killing
    # the command after 20 s left its JupyterLab running, one server per run)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mh_notebook.cli", "demo", "--no-browser", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, process_group=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline() + proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/lab/tree/quickstart\.ipynb\?token=\w+", banner)
        assert url is not None, banner
        page = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                page = httpx.get(url.group(0), timeout=5)
                if page.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert page is not None, "JupyterLab never answered"
        assert page.status_code == 200, page.status_code
        assert "JupyterLab" in page.text
        token = url.group(0).rsplit("=", 1)[1]
        model = httpx.get(
            f"http://127.0.0.1:{port}/api/contents/quickstart.ipynb", params={"token": token}
        ).json()
        assert model["type"] == "notebook"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, proc.returncode  # Ctrl-C stops it (README)
    deadline = time.monotonic() + 20  # and JupyterLab with it
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("Ctrl-C stopped the command but left JupyterLab running")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
