"""A watcher's settings: checked before anything is shared, and the display resolved."""

from __future__ import annotations

from typing import Literal, get_args

from ..view.output import in_kernel

__all__ = ["DisplayMode", "check_settings", "resolve_display"]

DisplayMode = Literal["auto", "widget", "text", "none"]
"""``auto``: the widget panel in a Jupyter kernel, text lines elsewhere."""


_AT_LEAST = {"burst": 1, "max_in_flight": 1, "gallery_limit": 1, "inline_limit": 0}
"""Settings with a least value; every other one must be > 0."""
_MAY_BE_NONE = ("burst", "timeout")


def check_settings(**settings: object) -> None:
    """``ValueError`` naming a setting that is not a number in its range (> 0 unless
    :data:`_AT_LEAST` says; ``burst`` and ``timeout`` may be None), before anything is
    shared with other watchers of the API."""
    for name, value in settings.items():
        if value is None and name in _MAY_BE_NONE:
            continue
        least = _AT_LEAST.get(name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (
            number and isinstance(value, int | float) and (value >= least if least is not None else value > 0)
        ):
            bound = f">= {least}" if least is not None else "> 0"
            raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def resolve_display(display: DisplayMode) -> DisplayMode:
    """``auto``: the widget panel in a Jupyter kernel (any shell with a ``kernel``, as in
    Colab), text lines elsewhere."""
    if display not in get_args(DisplayMode):
        raise ValueError(f"display must be one of {', '.join(get_args(DisplayMode))}, got {display!r}")
    if display != "auto":
        return display
    return "auto" if in_kernel() else "text"
