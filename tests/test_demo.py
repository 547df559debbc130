"""`mh-notebook demo` serves the quickstart in JupyterLab on 127.0.0.1 and prints its URL."""

from __future__ import annotations

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
    proc = subprocess.Popen(
        [sys.executable, "-m", "mh_notebook.cli", "demo", "--no-browser", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
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
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
