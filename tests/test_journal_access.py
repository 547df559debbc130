"""Journals this process cannot write: read-only media, and an old schema another process holds.

Promises guarded here (issue 17, leftovers):

- ``read_history()`` of a journal on read-only media (a read-only directory or mount, a
  colleague's copy) reads it, older schemas too (upgraded in a copy in memory), and leaves
  the file untouched; writing to it says it is read-only.
- A failed opening leaks no file descriptor.
- A journal of an older schema whose write lock another process holds fails within about a
  second with a ``JournalError`` naming the file and saying so (``TaskWatcher(store=...)``
  does not hang the notebook), and ``read_history()`` reads it meanwhile.

The tests run as root in CI, where ``chmod a-w`` changes nothing: a read-only directory is
then a read-only bind mount in a mount namespace of a child process (``unshare``), and the
write-open is also replaced by a read-only one in-process (what the OS gives a process that
may not write the file).
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mh_notebook import TaskWatcher, read_history
from mh_notebook.journal.migrations import SCHEMA_VERSION
from mh_notebook.journal.protocol import JournalError
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.records import Event

DATA = Path(__file__).parent / "data"
FIXTURES = {1: DATA / "journal-v1.sqlite", 5: DATA / "journal-v5.sqlite"}
HOLD = 20.0
"""Seconds the lock holder holds at most: an opening that waits for it sees it released."""


def _copy(tmp_path: Path, version: int, name: str = "journal.sqlite") -> Path:
    folder = tmp_path / f"v{version}-{name}"
    folder.mkdir()
    shutil.copyfile(FIXTURES[version], folder / name)
    return folder / name


def _current(tmp_path: Path) -> Path:
    """A journal of the current schema with a few events, closed (its WAL checkpointed)."""
    folder = tmp_path / "current"
    folder.mkdir()
    path = folder / "journal.sqlite"
    store = SQLiteStore(path)
    events = [
        Event("task_a", status, at, 1, "video", "vidu", "viduq3-turbo", 100.0)
        for status, at in (("pending", 101.0), ("running", 103.0), ("succeeded", 110.0))
    ]
    store.add_many(events)
    store.close()
    return path


def _expected(tmp_path: Path, path: Path) -> pd.DataFrame:
    """The history of a writable copy of ``path`` (upgraded in place as usual)."""
    folder = tmp_path / f"writable-{path.parent.name}"
    folder.mkdir()
    shutil.copyfile(path, folder / path.name)
    return read_history(folder / path.name)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(path: Path) -> int:
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Garbage collection off: a descriptor freed only by a collection counts as leaked."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _read_only_connect(self: SQLiteStore, create: bool) -> sqlite3.Connection:
    """``SQLiteStore._connect`` as on read-only media: the connection can only read."""
    uri = f"{self.path.resolve().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


@pytest.fixture
def write_opens_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one open for writing answers as on read-only media: a read-only connection."""
    monkeypatch.setattr(SQLiteStore, "_connect", _read_only_connect)


# ------------------------------------------------------------- read-only media
def _read_in_read_only_directory(folder: Path) -> pd.DataFrame:
    """``read_history`` of ``folder/journal.sqlite`` with ``folder`` read-only for this user:
    ``chmod a-w`` for a user, a read-only bind mount (in a child's own mount namespace) for
    root, whom file modes do not stop."""
    path = folder / "journal.sqlite"
    if os.geteuid() != 0:
        folder.chmod(0o555)
        path.chmod(0o444)
        try:
            return read_history(path)
        finally:
            folder.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("root, and no unshare(1) to make a read-only mount")
    code = textwrap.dedent(f"""
        import sys
        from mh_notebook import read_history
        open({str(folder / "probe")!r}, "w").close() if len(sys.argv) > 1 else None
        sys.stdout.write(read_history({str(path)!r}).to_json(orient="split", date_unit="ns"))
    """)
    script = (
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} "
        f'&& ! {sys.executable} -c "$1" probe 2>/dev/null && {sys.executable} -c "$1"'
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", code],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    if run.returncode != 0 and "mount" in run.stderr and "read_history" not in run.stderr:
        pytest.skip(f"cannot make a read-only mount here: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stderr
    return pd.read_json(io.StringIO(run.stdout), orient="split", date_unit="ns")


@pytest.mark.parametrize("version", [1, 5, SCHEMA_VERSION])
def test_read_history_reads_a_journal_in_a_read_only_directory(tmp_path: Path, version: int) -> None:
    path = _current(tmp_path) if version == SCHEMA_VERSION else _copy(tmp_path, version)
    before = _digest(path)
    expected = _expected(tmp_path, path)
    frame = _read_in_read_only_directory(path.parent)
    assert len(frame) == len(expected) > 0
    assert list(frame["task_id"]) == list(expected["task_id"])
    assert list(frame["status"].astype(str)) == list(expected["status"].astype(str))
    assert _digest(path) == before  # untouched: not upgraded, nothing replayed into it
    assert sorted(p.name for p in path.parent.iterdir()) == ["journal.sqlite"]


@pytest.mark.parametrize("version", [1, 5])
def test_an_older_journal_this_process_cannot_write_is_read_from_an_upgraded_copy(
    tmp_path: Path, version: int, write_opens_read_only: None
) -> None:
    path = _copy(tmp_path, version)
    before = _digest(path)
    expected = _expected(tmp_path, path)
    frame = read_history(path)
    pd.testing.assert_frame_equal(frame, expected)
    assert _version(path) == version and _digest(path) == before
    store = SQLiteStore(path, create=False)
    try:
        assert store.read_only is not None and "cannot write" in store.read_only
        with pytest.raises(JournalError, match="read-only"):
            store.add_many([Event("task_x", "pending", 1.0, 1, "image", "p", "m", 1.0)])
    finally:
        store.close()
    assert _digest(path) == before


def test_a_watcher_on_a_journal_it_cannot_write_is_told_so(
    tmp_path: Path, write_opens_read_only: None
) -> None:
    path = _copy(tmp_path, 1)
    with pytest.raises(JournalError, match=r"for writing.*read_history\(\) reads it") as caught:
        TaskWatcher(api_key="river_test_x", base_url="http://127.0.0.1:9", store=path, display="none")
    assert str(path) in str(caught.value)
    assert _version(path) == 1


def test_failed_openings_leak_no_file_descriptor(
    tmp_path: Path, no_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database " * 1000)
    newer = _copy(tmp_path, 5, "newer.sqlite")
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    old = _copy(tmp_path, 1, "old.sqlite")  # its write-open answers read-only: a watcher's opening fails

    def read_only_old() -> None:
        with monkeypatch.context() as patch:
            patch.setattr(SQLiteStore, "_connect", _read_only_connect)
            SQLiteStore(old)

    opens = [lambda: read_history(garbage), lambda: read_history(newer), read_only_old]
    for attempt in opens:  # warm up: imports, caches
        with pytest.raises(JournalError):
            attempt()
    before = _fds()
    for i in range(50):
        for attempt in opens:
            with pytest.raises(JournalError):
                attempt()
        assert _fds() == before, f"after {i + 1} rounds of {len(opens)} failed openings"


# ------------------------------------------------- an old schema, locked elsewhere
_HOLDER = """
import select, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute(f"BEGIN {sys.argv[3] if len(sys.argv) > 3 else 'IMMEDIATE'}")
print("held", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))  # until told, or HOLD seconds
db.execute("ROLLBACK")
print("released", flush=True)
"""


@pytest.fixture
def held(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """An old journal whose write lock a second process holds (``BEGIN IMMEDIATE``)."""
    path = _copy(tmp_path, request.param)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(HOLD)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield path, holder
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=60)


@pytest.mark.parametrize("held", [1, 5], indirect=True)
def test_an_old_journal_locked_by_another_process_fails_fast_for_a_watcher(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, holder = held
    with pytest.raises(JournalError) as caught:
        TaskWatcher(api_key="river_test_x", base_url="http://127.0.0.1:9", store=path, display="none")
    assert holder.poll() is None, "the opening waited until the other process let go"
    message = str(caught.value)
    assert str(path) in message and "another process holds its write lock" in message
    assert "read_history()" in message


@pytest.mark.parametrize("held", [1, 5], indirect=True)
def test_read_history_reads_an_old_journal_another_process_holds(
    held: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    path, holder = held
    expected = _expected(tmp_path, path)
    frame = read_history(path)
    assert holder.poll() is None, "the reading waited until the other process let go"
    pd.testing.assert_frame_equal(frame, expected)
    assert _version(path) in (1, 5)  # not upgraded under another's lock


@pytest.mark.parametrize("version", [1, 5])
def test_an_old_journal_held_in_an_exclusive_transaction_fails_fast_with_a_clear_error(
    tmp_path: Path, version: int
) -> None:
    # a rollback-mode journal (as 0.2 wrote them) in BEGIN EXCLUSIVE: not even its schema
    # version can be read; the opening waited SQLite's 30 s busy timeout before
    path = _copy(tmp_path, version)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(HOLD), "EXCLUSIVE"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for open_it in (
            lambda: TaskWatcher(
                api_key="river_test_x", base_url="http://127.0.0.1:9", store=path, display="none"
            ),
            lambda: read_history(path),
        ):
            with pytest.raises(JournalError) as caught:
                open_it()
            assert holder.poll() is None, "the opening waited until the other process let go"
            assert str(path) in str(caught.value) and "exclusive transaction" in str(caught.value)
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=60)
    assert _version(path) == version


def test_the_journal_is_upgraded_once_the_other_process_lets_go(tmp_path: Path) -> None:
    path = _copy(tmp_path, 1)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(HOLD)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(JournalError):
        SQLiteStore(path)
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.stdout.readline().strip() == "released"
    holder.wait(timeout=60)
    SQLiteStore(path).close()
    assert _version(path) == SCHEMA_VERSION


def test_unwritten_rows_beside_a_read_only_journal_wait_for_a_writable_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _current(tmp_path)
    spill = path.with_name(path.name + ".unwritten.jsonl")
    row = ["task_b", "pending", 200.0, 1, "image", "p", "m", 199.0]
    spill.write_text(json.dumps({"kind": "event", "row": row}) + "\n")
    with monkeypatch.context() as patch:
        patch.setattr(SQLiteStore, "_connect", _read_only_connect)
        store = SQLiteStore(path, create=False)
        try:
            assert store.replayed == 0 and spill.exists()
        finally:
            store.close()
    store = SQLiteStore(path, create=False)
    try:
        assert store.replayed == 1 and not spill.exists()
    finally:
        store.close()
