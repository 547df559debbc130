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

from ..formats import media_kind, mime_type, safe_url
from ..records import DISPLAY_ORDER, NOT_FOUND, TaskStatus, status_label

__all__ = [
    "MediaEntry",
    "Row",
    "Snapshot",
    "human_size",
    "link_html",
    "media_element",
    "media_html",
    "media_kind",
    "mime_type",
    "safe_text",
    "safe_url",
    "static_html",
    "static_text",
    "summary_html",
    "table_html",
]

COLOURS: dict[str, str] = {
    TaskStatus.PENDING: "#8a8f98",
    TaskStatus.QUEUED: "#6b7c93",
    TaskStatus.RUNNING: "#1f6feb",
    TaskStatus.SUCCEEDED: "#1a7f37",
    TaskStatus.FAILED: "#cf222e",
    TaskStatus.CANCELLED: "#bc4c00",
    TaskStatus.EXPIRED: "#8250df",
    NOT_FOUND: "#57606a",
    "error": "#cf222e",
}
"""Badge colour per status key (the data spelling: ``records.NOT_FOUND``)."""
_UNKNOWN_COLOUR = "#9a6700"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_ORDER: tuple[str, ...] = DISPLAY_ORDER


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
    progress: float | None = None
    """The server's progress (0-100), when it sends one; the bar shows it over the prediction."""
    cost: float | None = None
    """USD charged for the task, when the server said."""
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
    """The ceiling of the shared request budget (requests per second)."""
    rate: float | None = None
    """The rate allowed now, under the ceiling once 429s showed the server's limit."""
    sandbox: bool = False
    """The key is a ``river_test_`` key: ModelHunter's sandbox, nothing is charged."""
    spend: float | None = None
    """USD the watched tasks cost, as far as the server said (``None``: it said nothing)."""
    budget_belief: str | None = None
    """What the 429s seen lately say: a server limit, or random (``None``: no 429 lately)."""
    polling_mode: str | None = None
    """How the tasks are polled: list pages and GETs, or per-task GETs and why (``None``: no tasks)."""


def safe_text(value: object, limit: int = 160) -> str:
    """Untrusted text made safe for HTML: control characters dropped, truncated, escaped."""
    text = _CONTROL.sub("", "" if value is None else str(value))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=True)


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
        f'font-size:11px;white-space:nowrap">{safe_text(status_label(status), 24)}</span>'
    )


def _spend(snapshot: Snapshot) -> str:
    if snapshot.spend is None:
        return ""
    return f' · <span class="mh-spend" title="as far as the server said">spent {usd(snapshot.spend)}</span>'


_SANDBOX = (
    ' <span class="mh-sandbox" style="background:#ddf4ff;color:#0969da;border-radius:9px;'
    'padding:1px 8px;font-size:11px" title="a river_test_ key: nothing is charged">sandbox</span>'
)


def summary_html(snapshot: Snapshot) -> str:
    """The summary line: counts per status, colour-coded, plus the engine's state."""
    known = [s for s in _ORDER if snapshot.counts.get(s)]
    unknown = sorted(s for s in snapshot.counts if s not in _ORDER)
    parts = [f"{_badge(s)} {snapshot.counts[s]}" for s in known + unknown]
    state = "stopped" if snapshot.stopped else "paused" if snapshot.paused else "live"
    dot = {"live": "#1a7f37", "paused": "#9a6700", "stopped": "#57606a"}[state]
    limit = f" · ≤ {snapshot.rate_limit:g} req/s" if snapshot.rate_limit else ""
    if snapshot.rate_limit and snapshot.rate is not None and snapshot.rate < 0.99 * snapshot.rate_limit:
        limit = f" · ≤ {snapshot.rate:.3g} of {snapshot.rate_limit:g} req/s"
    if snapshot.budget_belief:
        limit += f" · {safe_text(snapshot.budget_belief)}"
    if snapshot.polling_mode:
        limit += f" · {safe_text(snapshot.polling_mode)}"
    head = (
        f'<b style="font-size:13px">ModelHunter tasks</b>{_SANDBOX if snapshot.sandbox else ""} · '
        f"{snapshot.total} watched{_spend(snapshot)} · "
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
_COLUMNS = ("task", "type", "provider / model", "status", "time", "cost", "result", "error")


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


def usd(value: float | None) -> str:
    """``0.0425`` → ``$0.0425``; ``12.5`` → ``$12.50``; ``""`` for no value."""
    if value is None:
        return ""
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4g}"


def _time_cell(row: Row) -> str:
    """Elapsed time; for an active task, a progress bar: the server's progress when it sends
    one, else the ETA from the learned latency."""
    text = _seconds(row.seconds)
    if not row.ended and row.progress is not None:
        share, note = min(1.0, max(0.0, row.progress / 100)), f"{row.progress:.0f}%"
    else:
        estimate = None if row.ended else eta(row.seconds, row.expected)
        if estimate is None:
            return text
        share, note = estimate[1], eta_text(row.seconds, row.expected)
    width = round(60 * share)
    bar = (
        '<div style="width:60px;height:4px;background:#eaeef2;border-radius:2px;margin-top:2px">'
        f'<div style="width:{width}px;height:4px;background:#1f6feb;border-radius:2px"></div></div>'
    )
    return f'{text} <span style="color:#57606a">· {note}</span>{bar}'


def _result_cell(row: Row) -> str:
    if not row.format:
        return ""
    bits = [safe_text(row.format, 12)]
    if row.duration is not None:
        bits.append(f"{row.duration:g} s")
    if row.size_bytes is not None:
        bits.append(human_size(row.size_bytes))
    return " · ".join(bits)


_RETRY_HINT = (
    '<div style="color:#57606a;font-size:11px" class="mh-retry-hint">'
    "<code>watcher.retry(task_id)</code> starts it again: a new task, charged again</div>"
)


def _error_cell(row: Row) -> str:
    if row.error_code or row.error_message:
        code = f"<code>{safe_text(row.error_code, 40)}</code> " if row.error_code else ""
        hint = _RETRY_HINT if row.status == TaskStatus.FAILED else ""
        return f'<span style="color:#82071e">{code}{safe_text(row.error_message)}</span>{hint}'
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
        f'<span class="mh-cost">{usd(row.cost)}</span>' if row.cost is not None else "",
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
        detail = ", ".join(
            f"{n} {safe_text(status_label(s), 24)}" for s, n in sorted(rest.items(), key=lambda kv: -kv[1])
        )
        foot = (
            f'<div style="color:#57606a;padding:4px 8px">… and {hidden} more tasks not shown ({detail})</div>'
        )
    return (
        '<div class="mh-table" style="max-height:420px;overflow:auto">'
        '<table style="border-collapse:collapse;font-size:12px;width:100%">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{foot}</div>"
    )


def media_element(url: str | None, fmt: str | None, *, width: int | None = 256, alt: str = "") -> str | None:
    """A ``<video>``/``<img>``/``<audio>`` element for a safe ``http(s)`` URL, its ``<source>``
    labelled with the format's MIME type (so browsers fetch it); ``None`` for other URLs or kinds."""
    safe, kind = safe_url(url), media_kind(fmt)
    if safe is None or kind is None:
        return None
    src = html.escape(safe, quote=True)
    source = f'<source src="{src}" type="{html.escape(mime_type(fmt) or "", quote=True)}">'
    size = f' width="{width}"' if width else ""
    if kind == "image":
        return f'<img src="{src}"{size} alt="{safe_text(alt, 120)}">'
    if kind == "video":
        return f'<video controls muted playsinline preload="metadata"{size}>{source}</video>'
    style = f' style="width:{width}px"' if width else ""
    return f'<audio controls preload="metadata"{style}>{source}</audio>'


def link_html(url: str | None, label: str, note: str = "") -> str:
    """A labelled link to a result that cannot be shown inline (plain text if the URL is unsafe)."""
    safe = safe_url(url)
    text = safe_text(label, 160)
    tail = f' <span style="color:#57606a">{safe_text(note, 300)}</span>' if note else ""
    if safe is None:
        shown = safe_text(url, 200) if url else "no URL"
        return f'<div class="mh-link">{text}: not shown: {shown}{tail}</div>'
    link = f'<a href="{html.escape(safe, quote=True)}" target="_blank" rel="noopener noreferrer">{text}</a>'
    return f'<div class="mh-link">{link}{tail}</div>'


def media_html(url: str | None, fmt: str | None, caption: str, width: int = 256) -> str:
    """A ``<figure>`` with a video, image or audio element, a labelled link for a format that
    cannot be shown inline, or a note if the URL is unsafe."""
    cap = f'<figcaption style="font-size:11px;color:#57606a">{safe_text(caption, 120)}</figcaption>'
    style = f'style="display:inline-block;margin:4px;width:{width}px;vertical-align:top"'
    element = media_element(url, fmt, width=width, alt=caption)
    if element is None and safe_url(url) is not None:
        element = link_html(url, f"{fmt or 'file'} result", "cannot be shown inline")
    if element is None:
        note = safe_text(url, 200) if url else "no URL"
        element = f'<div style="color:#82071e">not shown: {note}</div>'
    return f"<figure {style}>{element}{cap}</figure>"


@dataclass(frozen=True)
class MediaEntry:
    """One result as the static (saved-notebook) view lists it."""

    kind: str | None
    """``image``, ``video``, ``audio`` or ``None`` (another format)."""
    caption: str
    """Who made it: model and task id."""
    detail: str
    """Format, duration, size, and where the bytes are (saved path, or why they were not kept)."""
    thumbnail: str | None = None
    """A ``data:image/jpeg;base64,...`` URI made by this package (images only)."""


_THUMBNAIL = re.compile(r"^data:image/jpeg;base64,[A-Za-z0-9+/]+=*$")
_ICONS = {"image": "🖼", "video": "🎞", "audio": "🔊"}


def _entry_html(entry: MediaEntry) -> str:
    thumb = entry.thumbnail if entry.thumbnail and _THUMBNAIL.match(entry.thumbnail) else None
    if thumb is not None:
        visual = f'<img src="{thumb}" alt="{safe_text(entry.caption, 120)}" style="max-width:128px">'
    else:
        icon = _ICONS.get(entry.kind or "", "📄")
        visual = (
            '<div style="width:128px;height:60px;display:flex;align-items:center;justify-content:center;'
            f'background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px">{icon} '
            f"{safe_text(entry.kind or 'file', 12)}</div>"
        )
    return (
        '<figure style="display:inline-block;margin:4px;width:136px;vertical-align:top">'
        f'{visual}<figcaption style="font-size:10px;color:#57606a;word-break:break-all">'
        f"{safe_text(entry.caption, 120)}<br>{safe_text(entry.detail, 300)}</figcaption></figure>"
    )


def static_html(snapshot: Snapshot, entries: Sequence[MediaEntry], css_class: str, note: str) -> str:
    """The saved-notebook view: summary, task table and the newest results (thumbnails for
    images, labelled entries for the rest), in a ``div`` of class ``css_class``."""
    gallery = ""
    if entries:
        gallery = '<div class="mh-static-gallery">' + "".join(map(_entry_html, entries)) + "</div>"
    foot = f'<div style="color:#57606a;font-size:11px;margin-top:4px">{safe_text(note, 300)}</div>'
    body = summary_html(snapshot) + table_html(snapshot.rows, snapshot.total, snapshot.counts)
    return f'<div class="{html.escape(css_class, quote=True)}">{body}{gallery}{foot}</div>'


def static_text(snapshot: Snapshot, entries: Sequence[MediaEntry], note: str) -> str:
    """The plain-text twin of :func:`static_html`: the same counts, rows and results."""
    state = "stopped" if snapshot.stopped else "paused" if snapshot.paused else "live"
    names = [s for s in _ORDER if snapshot.counts.get(s)]
    names += sorted(s for s in snapshot.counts if s not in _ORDER)
    sandbox = " (sandbox)" if snapshot.sandbox else ""
    spend = f" · spent {usd(snapshot.spend)}" if snapshot.spend is not None else ""
    lines = [f"ModelHunter tasks{sandbox} · {snapshot.total} watched{spend} · {state}"]
    lines.append(
        " · ".join(f"{_plain(status_label(s), 24)} {snapshot.counts[s]}" for s in names) or "no tasks"
    )
    if snapshot.notice:
        lines.append(f"! {_plain(snapshot.notice, 400)}")
    if snapshot.budget_belief:
        lines.append(f"requests: {_plain(snapshot.budget_belief, 200)}")
    if snapshot.polling_mode:
        lines.append(f"polling: {_plain(snapshot.polling_mode, 200)}")
    lines += [_text_row(row) for row in snapshot.rows]
    hidden = snapshot.total - len(snapshot.rows)
    if hidden > 0:
        lines.append(f"… and {hidden} more tasks not shown")
    if entries:
        lines.append(f"results ({len(entries)} newest):")
        lines += [
            f"  [{e.kind or 'file'}] {_plain(e.caption, 120)} · {_plain(e.detail, 300)}" for e in entries
        ]
    lines.append(_plain(note, 300))
    return "\n".join(lines)


def _plain(value: object, limit: int) -> str:
    """Untrusted text for ``text/plain``: control characters dropped, truncated."""
    text = _CONTROL.sub("", "" if value is None else str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text_row(row: Row) -> str:
    model = f"{row.provider}/{row.model}" if row.model else ""
    error = " ".join(x for x in (row.error_code, row.error_message) if x)
    cells = [
        row.task_id,
        row.type or "",
        model,
        status_label(row.status),
        _seconds(row.seconds),
        usd(row.cost),
    ]
    cells += [_result_cell(row), error]
    return "  " + "  ".join(_plain(c, 80) for c in cells if c)


def text_line(row: Row) -> str:
    """One concise console line for a status change."""
    what = " ".join(x for x in (row.type, f"{row.provider}/{row.model}" if row.model else None) if x)
    tail = ""
    if row.status == TaskStatus.SUCCEEDED and row.format:
        tail = f" → {row.format} {human_size(row.size_bytes)}".rstrip()
    elif row.error_code or row.error_message:
        tail = f" → {row.error_code}: {row.error_message}"
    secs = f" after {_seconds(row.seconds)}" if row.ended and row.seconds is not None else ""
    line = f"[mh] {row.task_id} {what}: {status_label(row.status)}{secs}{tail}"
    return _CONTROL.sub("", line)[:300]
