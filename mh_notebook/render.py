"""Pure HTML and text rendering of watcher snapshots: no widgets, no I/O.

Everything that came from the API is untrusted: it is stripped of control characters,
truncated and HTML-escaped here, and only ``http(s)`` URLs are ever put in an attribute.
The live panel, the static ``text/html`` fallback and the console lines all use this.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Row",
    "Snapshot",
    "human_size",
    "media_html",
    "safe_text",
    "safe_url",
    "summary_html",
    "table_html",
]

COLOURS = {
    "pending": "#8a8f98",
    "queued": "#6b7c93",
    "running": "#1f6feb",
    "succeeded": "#1a7f37",
    "failed": "#cf222e",
    "cancelled": "#bc4c00",
    "expired": "#8250df",
    "not found": "#57606a",
    "error": "#cf222e",
}
_UNKNOWN_COLOUR = "#9a6700"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_ORDER = ["running", "queued", "pending", "succeeded", "failed", "cancelled", "expired", "not found"]


@dataclass(frozen=True)
class Row:
    """One task as the panel shows it (all fields already plain Python values)."""

    task_id: str
    status: str
    type: str | None = None
    provider: str | None = None
    model: str | None = None
    seconds: float | None = None
    """Elapsed so far (active) or total latency (ended)."""
    expected: float | None = None
    """The latency its kind of task usually has (active tasks, once learned)."""
    ended: bool = False
    format: str | None = None
    duration: float | None = None
    size_bytes: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    problem: str | None = None
    """The last request error, while it lasts (network, 5xx...)."""
    sort_key: float = 0.0
    """Most recent change (wall clock); newest rows first among the ended."""


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh of the panel draws."""

    rows: Sequence[Row]
    counts: Counter[str]
    total: int
    paused: bool = False
    stopped: bool = False
    notice: str | None = None
    """A problem for everyone, e.g. the key was refused."""
    rate_limit: float | None = None


def safe_text(value: object, limit: int = 160) -> str:
    """Untrusted text made safe for HTML: control characters dropped, truncated, escaped."""
    text = _CONTROL.sub("", "" if value is None else str(value))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=True)


def safe_url(url: object) -> str | None:
    """The URL if it is plain ``http(s)`` with no quote or space tricks, else ``None``."""
    if not isinstance(url, str) or not re.match(r"^https?://[^\s\"'<>`\\]+$", url, re.IGNORECASE):
        return None
    return url


def human_size(size: int | None) -> str:
    """``12582912`` → ``12.0 MB``."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""  # pragma: no cover


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {value % 60:02.0f} s"


def _badge(status: str) -> str:
    colour = COLOURS.get(status, _UNKNOWN_COLOUR)
    return (
        f'<span style="background:{colour};color:#fff;border-radius:9px;padding:1px 8px;'
        f'font-size:11px;white-space:nowrap">{safe_text(status, 24)}</span>'
    )


def summary_html(snapshot: Snapshot) -> str:
    """The summary line: counts per status, colour-coded, plus the engine's state."""
    known = [s for s in _ORDER if snapshot.counts.get(s)]
    unknown = sorted(s for s in snapshot.counts if s not in _ORDER)
    parts = [f"{_badge(s)} {snapshot.counts[s]}" for s in known + unknown]
    state = "stopped" if snapshot.stopped else "paused" if snapshot.paused else "live"
    dot = {"live": "#1a7f37", "paused": "#9a6700", "stopped": "#57606a"}[state]
    limit = f" · ≤ {snapshot.rate_limit:g} req/s" if snapshot.rate_limit else ""
    head = (
        f'<b style="font-size:13px">ModelHunter tasks</b> · {snapshot.total} watched · '
        f'<span style="color:{dot}">● {state}</span><span style="color:#57606a">{limit}</span>'
    )
    notice = ""
    if snapshot.notice:
        notice = (
            '<div style="margin-top:4px;padding:4px 8px;border-left:3px solid #cf222e;'
            f'background:#ffebe9;color:#82071e">{safe_text(snapshot.notice, 400)}</div>'
        )
    return f'<div class="mh-summary">{head}<div style="margin-top:4px">{" ".join(parts)}</div>{notice}</div>'


_TH = "text-align:left;padding:3px 8px;border-bottom:1px solid #d0d7de;font-weight:600"
_TD = "padding:3px 8px;border-bottom:1px solid #eaeef2;vertical-align:top;white-space:nowrap"
_TD_WRAP = "padding:3px 8px;border-bottom:1px solid #eaeef2;vertical-align:top;min-width:240px"
_COLUMNS = ("task", "type", "provider / model", "status", "time", "result", "error")


def eta(elapsed: float | None, expected: float | None) -> tuple[float, float] | None:
    """``(seconds left, progress 0..1)`` from elapsed and expected latency; progress stays
    below 1 while the task runs, and ``seconds left`` is 0 once overdue."""
    if elapsed is None or expected is None or expected <= 0:
        return None
    return max(0.0, expected - elapsed), min(0.95, max(0.0, elapsed / expected))


def eta_text(elapsed: float | None, expected: float | None) -> str:
    """``~12 s left`` (or ``any moment``), or ``""`` when nothing is learned yet."""
    estimate = eta(elapsed, expected)
    if estimate is None:
        return ""
    left = estimate[0]
    return "any moment" if left < 0.5 else f"~{_seconds(left).replace('.0 s', ' s')} left"


def _time_cell(row: Row) -> str:
    """Elapsed time; for an active task with a learned latency, a progress bar and the ETA."""
    text = _seconds(row.seconds)
    estimate = None if row.ended else eta(row.seconds, row.expected)
    if estimate is None:
        return text
    width = round(60 * estimate[1])
    bar = (
        '<div style="width:60px;height:4px;background:#eaeef2;border-radius:2px;margin-top:2px">'
        f'<div style="width:{width}px;height:4px;background:#1f6feb;border-radius:2px"></div></div>'
    )
    return f'{text} <span style="color:#57606a">· {eta_text(row.seconds, row.expected)}</span>{bar}'


def _result_cell(row: Row) -> str:
    if not row.format:
        return ""
    bits = [safe_text(row.format, 12)]
    if row.duration is not None:
        bits.append(f"{row.duration:g} s")
    if row.size_bytes is not None:
        bits.append(human_size(row.size_bytes))
    return " · ".join(bits)


def _error_cell(row: Row) -> str:
    if row.error_code or row.error_message:
        code = f"<code>{safe_text(row.error_code, 40)}</code> " if row.error_code else ""
        return f'<span style="color:#82071e">{code}{safe_text(row.error_message)}</span>'
    if row.problem:
        return f'<span style="color:#9a6700" title="retrying">⚠ {safe_text(row.problem, 120)}</span>'
    return ""


def _row_html(row: Row) -> str:
    short = row.task_id if len(row.task_id) <= 18 else row.task_id[:8] + "…" + row.task_id[-6:]
    model = f"{safe_text(row.provider, 30)} / <b>{safe_text(row.model, 40)}</b>" if row.model else ""
    cells = (
        f'<code title="{safe_text(row.task_id, 200)}">{safe_text(short, 20)}</code>',
        safe_text(row.type, 12),
        model,
        _badge(row.status),
        _time_cell(row),
        _result_cell(row),
        _error_cell(row),
    )
    styles = [_TD] * (len(cells) - 1) + [_TD_WRAP]  # only the error column wraps
    return (
        "<tr>" + "".join(f'<td style="{st}">{c}</td>' for st, c in zip(styles, cells, strict=True)) + "</tr>"
    )


def table_html(rows: Sequence[Row], total: int, counts: Counter[str]) -> str:
    """The task table for the given rows; a footer counts the tasks not shown."""
    head = "".join(f'<th style="{_TH}">{c}</th>' for c in _COLUMNS)
    body = "".join(_row_html(r) for r in rows)
    hidden = total - len(rows)
    foot = ""
    if hidden > 0:
        shown = Counter(r.status for r in rows)
        rest = {s: n - shown.get(s, 0) for s, n in counts.items() if n - shown.get(s, 0) > 0}
        detail = ", ".join(f"{n} {safe_text(s, 24)}" for s, n in sorted(rest.items(), key=lambda kv: -kv[1]))
        foot = (
            f'<div style="color:#57606a;padding:4px 8px">… and {hidden} more tasks not shown ({detail})</div>'
        )
    return (
        '<div class="mh-table" style="max-height:420px;overflow:auto">'
        '<table style="border-collapse:collapse;font-size:12px;width:100%">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{foot}</div>"
    )


def media_html(url: str | None, fmt: str | None, caption: str, width: int = 256) -> str:
    """A ``<figure>`` with a video, image or audio element, or a note if the URL is unsafe."""
    safe = safe_url(url)
    kind = media_kind(fmt)
    cap = f'<figcaption style="font-size:11px;color:#57606a">{safe_text(caption, 120)}</figcaption>'
    style = f'style="display:inline-block;margin:4px;width:{width}px;vertical-align:top"'
    if safe is None or kind is None:
        note = safe_text(url, 200) if url else "no URL"
        return f'<figure {style}><div style="color:#82071e">not shown: {note}</div>{cap}</figure>'
    src = html.escape(safe, quote=True)
    element = {
        "video": f'<video src="{src}" controls muted playsinline preload="metadata" width="{width}"></video>',
        "image": f'<img src="{src}" width="{width}" alt="{safe_text(caption, 120)}">',
        "audio": f'<audio src="{src}" controls preload="metadata" style="width:{width}px"></audio>',
    }[kind]
    return f"<figure {style}>{element}{cap}</figure>"


_KINDS = {
    "video": {"mp4", "webm", "mov", "m4v", "ogv"},
    "image": {"png", "jpg", "jpeg", "webp", "gif", "bmp"},
    "audio": {"mp3", "wav", "ogg", "m4a", "aac", "flac", "opus"},
}


def media_kind(fmt: str | None) -> str | None:
    """``video``, ``image`` or ``audio`` for a result ``format``; ``None`` if unknown."""
    fmt = (fmt or "").lower().lstrip(".")
    return next((kind for kind, formats in _KINDS.items() if fmt in formats), None)


def text_line(row: Row) -> str:
    """One concise console line for a status change."""
    what = " ".join(x for x in (row.type, f"{row.provider}/{row.model}" if row.model else None) if x)
    tail = ""
    if row.status == "succeeded" and row.format:
        tail = f" → {row.format} {human_size(row.size_bytes)}".rstrip()
    elif row.error_code or row.error_message:
        tail = f" → {row.error_code}: {row.error_message}"
    secs = f" after {_seconds(row.seconds)}" if row.ended and row.seconds is not None else ""
    line = f"[mh] {row.task_id} {what}: {row.status}{secs}{tail}"
    return _CONTROL.sub("", line)[:300]
