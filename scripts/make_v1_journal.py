"""Writes tests/data/journal-v1.sqlite (a schema-1 journal) with mh_notebook 0.1.0's own code.

.venv/bin/python scripts/make_v1_journal.py

The 0.1.0 ``store.py`` and ``history.py`` are read from git (commit ``1a58de7``) and run as
modules ``mh_store_v010``/``mh_history_v010`` (their ``from .errors``/``from .models``
imports resolve against the installed package; the history's ``from .store`` is pointed at
the old store). The journal is written through the 0.1.0 ``SQLiteStore``; the expected
per-task values (``journal-v1.expected.json``) are what the 0.1.0 ``read_history`` gives
for it, made JSON by :func:`summarise` (the test summarises the current frame the same way).
Everything is fixed: no clock, no randomness.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REV = "1a58de7"
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
JOURNAL = DATA / "journal-v1.sqlite"
EXPECTED = DATA / "journal-v1.expected.json"
API = "https://api.modelhunter.ai"
LOCAL = "http://127.0.0.1:8765"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def old_module(name: str, path: str, replace: dict[str, str] | None = None) -> types.ModuleType:
    """The file ``path`` of commit ``REV`` run as module ``name`` (text replacements first)."""
    command = ["git", "show", f"{REV}:{path}"]
    source = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout  # noqa: S603
    for old, new in (replace or {}).items():
        assert old in source, f"{old!r} not in {path} at {REV}"
        source = source.replace(old, new)
    module = types.ModuleType(name)
    module.__package__ = "mh_notebook"  # relative imports: the current errors/models
    module.__file__ = f"{REV}:{path}"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102
    return module


def _raw(task_id: str, status: str, **data: Any) -> str:
    return json.dumps({"id": task_id, "status": status, **data})


def write_journal(store_module: types.ModuleType, path: Path) -> dict[str, str]:
    """Five tasks against two base URLs through the 0.1.0 store; returns task id -> base URL."""
    event, watched = store_module.Event, store_module.Watched
    video = {"type": "video", "provider": "vidu", "model": "viduq3-turbo", "created_at": T0 - 0.25}
    failing = {"type": "video", "provider": "kling", "model": "kling-v3.0", "created_at": T0 + 0.75}
    image = {"type": "image", "provider": "bytedance", "model": "seedream-4.0", "created_at": T0 + 1.875}
    bases = {
        "task_v1_ok": API,
        "task_v1_fail": API,
        "task_v1_expired": LOCAL,
        "task_v1_missing": LOCAL,
        "task_v1_unseen": API,
    }
    events = [
        event("task_v1_ok", "pending", T0 + 0.5, 1, **video, raw=_raw("task_v1_ok", "pending")),
        event("task_v1_fail", "queued", T0 + 1.5, 1, **failing, raw=_raw("task_v1_fail", "queued")),
        event("task_v1_expired", "running", T0 + 2.5, 1, **image, raw=_raw("task_v1_expired", "running")),
        event("task_v1_missing", "not_found", T0 + 3.5, 1),
        event("task_v1_expired", "succeeded", T0 + 9.0, 2, **image, completed_at=T0 + 8.625, n_results=1,
              format="png", size_bytes=2_048_000, raw=_raw("task_v1_expired", "succeeded")),
        event("task_v1_ok", "running", T0 + 12.0, 3, **video, raw=_raw("task_v1_ok", "running")),
        event("task_v1_fail", "failed", T0 + 21.0, 3, **failing, completed_at=T0 + 20.5,
              error_code="PROVIDER_ERROR", error_message="Content moderation: prompt contains restricted content",
              raw=_raw("task_v1_fail", "failed")),
        event("task_v1_ok", "succeeded", T0 + 46.25, 5, **video, completed_at=T0 + 45.75, n_results=1,
              format="mp4", duration_s=4.0, size_bytes=12_582_912, raw=_raw("task_v1_ok", "succeeded")),
        event("task_v1_expired", "expired", T0 + 1000.0, 3, **image, completed_at=T0 + 8.625,
              raw=_raw("task_v1_expired", "expired")),
    ]  # fmt: skip
    store = store_module.SQLiteStore(path)
    try:
        store.add_watched(watched(task_id, base, T0 + i) for i, (task_id, base) in enumerate(bases.items()))
        for e in events:
            store.add(e)
    finally:
        store.close()
    return bases


def single_file(path: Path, version: int = 1) -> None:
    """Checkpoint the WAL into the file and leave rollback-journal mode: one file, nothing else
    (its schema ``version`` checked)."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == version
        assert db.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    finally:
        db.close()
    extra = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
    assert not extra, extra


def _plain(value: Any) -> Any:
    if pd.isna(value):  # None, NaN, NaT, <NA>
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


def summarise(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A history frame as JSON values, row by row (times in ISO 8601, missing as null)."""
    return [{col: _plain(value) for col, value in row.items()} for row in frame.to_dict("records")]


def main() -> None:
    """Write the journal with the 0.1.0 store, then the expected values by the 0.1.0 history."""
    store_v010 = old_module("mh_store_v010", "mh_notebook/store.py")
    history_v010 = old_module(
        "mh_history_v010", "mh_notebook/history.py", {"from .store import": "from mh_store_v010 import"}
    )
    DATA.mkdir(parents=True, exist_ok=True)
    for stale in DATA.glob(f"{JOURNAL.name}*"):
        stale.unlink()
    bases = write_journal(store_v010, JOURNAL)
    tasks = summarise(history_v010.read_history(JOURNAL))
    single_file(JOURNAL)
    expected = {"made_by": f"mh_notebook {REV} (0.1.0) read_history", "base_urls": bases, "tasks": tasks}
    EXPECTED.write_text(json.dumps(expected, indent=1, allow_nan=False) + "\n")
    print(f"{JOURNAL.relative_to(ROOT)}: {JOURNAL.stat().st_size} bytes, {len(tasks)} tasks")


if __name__ == "__main__":
    main()
