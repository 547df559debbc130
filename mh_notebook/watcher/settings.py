"""A watcher's settings: checked before anything is shared, and the display resolved."""

from __future__ import annotations

from typing import Literal

from ..view.output import in_kernel

__all__ = ["DisplayMode", "check_settings", "resolve_display"]

DisplayMode = Literal["auto", "widget", "text", "none"]
"""``auto``: the widget panel in a Jupyter kernel, text lines elsewhere."""


def check_settings(**settings: object) -> None:
    """``ValueError`` naming a setting that is not a positive number (``burst``: None or >= 1),
    before anything is shared with other watchers of the API."""
    for name, value in settings.items():
        if value is None and name == "burst":
            continue
        least = 1 if name in ("burst", "max_in_flight") else 0
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and isinstance(value, int | float) and (value >= least if least else value > 0)):
            bound = f">= {least}" if least else "> 0"
            raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def resolve_display(display: DisplayMode) -> DisplayMode:
    """``auto``: the widget panel in a Jupyter kernel (any shell with a ``kernel``, as in
    Colab), text lines elsewhere."""
    if display != "auto":
        return display
    return "auto" if in_kernel() else "text"
