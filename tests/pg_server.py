"""A real, throw-away PostgreSQL server for the tests (as pytest-postgresql starts one).

Debian's ``postgresql`` package provides ``initdb`` and ``pg_ctl`` (``scripts/test.sh``
installs it). The cluster lives in a temporary directory, listens on 127.0.0.1 on a free
port, trusts local connections, and runs as the ``postgres`` user when the tests run as
root (PostgreSQL refuses to run as root). ``fsync=off``: it is thrown away anyway, and a
crash of the server (:meth:`PostgresServer.stop`) leaves the operating system's copy of
the log, so nothing committed is lost. ``synchronous_commit`` stays on: off, a commit is
acknowledged before its log is written, and the tests that crash the server would lose
writes the package had every right to count as done (it made "the server going away loses
nothing" fail under load, on the server's setting rather than the package's code).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql (scripts/test.sh does)")
    return found


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` run as ``postgres`` when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster: ``url`` for a database per test (``new_database()``)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mh-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._dbs = 0
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o755)

    @property
    def admin_url(self) -> str:
        """The maintenance database, as the superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """initdb, then start and wait until it accepts connections."""
        subprocess.run(
            _as_server_user(
                [_binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        self.restart()

    def new_database(self) -> str:
        """A fresh empty database on this server; returns its URL."""
        import psycopg

        self._dbs += 1
        name = f"journal_{os.getpid()}_{self._dbs}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: like a crash)."""
        subprocess.run(
            _as_server_user([_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends, background workers)."""
        pid_file = self.data / "postmaster.pid"
        try:
            postmaster = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        children = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
            except (OSError, ValueError):
                continue  # not a process, or gone meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
        return [postmaster, *children]

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to the postmaster and its children (SIGSTOP: the server stops
        answering, its connections stay open, like a network black hole)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def pause(self) -> None:
        """Freeze every process of the server (SIGSTOP); :meth:`resume` thaws them."""
        self.signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw the server after :meth:`pause` (SIGCONT; harmless if it is not paused)."""
        self.signal_all(signal.SIGCONT)

    def kill(self) -> None:
        """Kill every process of the server at once (SIGKILL), like a machine losing power
        (the operating system keeps what was written); :meth:`restart` starts it again."""
        pids = self.pids()
        if not pids:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGSTOP)  # the postmaster starts no process from here on
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        # an unreaped (zombie) postmaster still looks alive to the next start: its locks go
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        (self.root / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def restart(self) -> None:
        """Start the server (again, after :meth:`stop`: same port, same data)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c full_page_writes=off -c max_connections=200"
        subprocess.run(
            _as_server_user(
                [
                    _binary("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def close(self) -> None:
        """Stop and delete everything (thawed first: a paused server would not stop)."""
        self.resume()
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A started server, stopped and removed afterwards."""
    server = PostgresServer()
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        log = (server.root / "log").read_text() if (server.root / "log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r} {log[-2000:]}") from None
    try:
        yield server
    finally:
        server.close()


def wait_for(predicate: object, timeout: float = 30.0) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
