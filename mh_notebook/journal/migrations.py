"""The journal's SQL schema as its history: every migration since 0.1.0, written once for
every SQL database (dialect slots in braces, filled by :mod:`mh_notebook.journal.dialect`).

The scripts are history and stay literal: a migration means what it meant when it shipped.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_SERVER_FIELDS = (
    ("server_started_at", "{real}"),
    ("progress", "{real}"),
    ("cost", "{real}"),
    ("estimated_seconds", "{real}"),
    ("original_task_id", "TEXT"),
    ("metadata", "TEXT"),
)
"""The columns migration 6 added (``records.SERVER_FIELDS``, as they were then: history)."""
_SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS watched (
    task_id TEXT PRIMARY KEY, base_url TEXT NOT NULL, first_seen_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq {serial},
    task_id TEXT NOT NULL, status TEXT NOT NULL, observed_at {real} NOT NULL, polls {int} NOT NULL,
    type TEXT, provider TEXT, model TEXT, created_at {real}, completed_at {real}, n_results {int},
    format TEXT, duration_s {real}, size_bytes {int}, error_code TEXT, error_message TEXT, raw TEXT
);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);
CREATE TABLE IF NOT EXISTS task_summary (
    task_id TEXT PRIMARY KEY, first_seq {int} NOT NULL, last_seq {int} NOT NULL,
    last_informative_seq {int}, first_seen_at {real}, started_at {real}, seen_end {real}, polls {int}
);
"""
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_1,  # 0 -> 1: the schema of mh_notebook 0.1.0
    """
    CREATE INDEX watched_base_url ON watched(base_url, first_seen_at);
    CREATE INDEX events_status ON events(status);
    """,  # 1 -> 2: the journal is queried per base URL and for recent ends
    """
    ALTER TABLE watched ADD COLUMN predicted_latency_s {real}
    """,  # 2 -> 3: the poller's first latency prediction per task (NULL for older rows)
    """
    CREATE TABLE results (
        task_id TEXT NOT NULL, idx {int} NOT NULL, local_path TEXT NOT NULL, sha256 TEXT NOT NULL,
        size_bytes {int} NOT NULL, saved_at {real} NOT NULL, PRIMARY KEY (task_id, idx)
    )
    """,  # 3 -> 4: result files saved on this machine (TaskWatcher(save_to=...))
    """
    DELETE FROM events WHERE seq NOT IN (
        SELECT MIN(seq) FROM events GROUP BY task_id, status, observed_at, polls);
    UPDATE task_summary SET last_seq = (
        SELECT MAX(e.seq) FROM events AS e WHERE e.task_id = task_summary.task_id)
    WHERE last_seq NOT IN (SELECT seq FROM events);
    UPDATE task_summary SET last_informative_seq = (
        SELECT MAX(e.seq) FROM events AS e WHERE e.task_id = task_summary.task_id AND e.status <> 'expired')
    WHERE last_informative_seq NOT IN (SELECT seq FROM events);
    CREATE UNIQUE INDEX events_once ON events(task_id, status, observed_at, polls);
    CREATE TABLE leases (task_id TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at {real} NOT NULL)
    """,  # 4 -> 5: an event is written once however often its transaction is retried; leases
    ";".join(
        f"ALTER TABLE {table} ADD COLUMN {column} {kind}"
        for table in ("events", "task_summary")
        for column, kind in _SERVER_FIELDS
    ),  # 5 -> 6: what the documented API adds (list items, creation and retry answers)
    """
    CREATE TABLE results_by_host (
        task_id TEXT NOT NULL, idx {int} NOT NULL, host TEXT NOT NULL, local_path TEXT NOT NULL,
        sha256 TEXT NOT NULL, size_bytes {int} NOT NULL, saved_at {real} NOT NULL,
        PRIMARY KEY (task_id, idx, host)
    );
    INSERT INTO results_by_host (task_id, idx, host, local_path, sha256, size_bytes, saved_at)
        SELECT task_id, idx, '', local_path, sha256, size_bytes, saved_at FROM results;
    DROP TABLE results;
    ALTER TABLE results_by_host RENAME TO results
    """,  # 6 -> 7: saved files per machine (a team journal is shared); older rows: host ''
    """
    CREATE TABLE account_watches (
        base_url TEXT NOT NULL, filters TEXT NOT NULL, provider TEXT, model TEXT, status TEXT,
        since {real} NOT NULL, PRIMARY KEY (base_url, filters)
    )
    """,  # 7 -> 8: watch_account(): its filters and how far it got (server clock), for resume()
)
"""SQL scripts (dialect slots in braces); ``MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``."""
SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this package writes (it reads and upgrades every older one)."""
