"""Output into the running cell: the watcher's one way to IPython's display machinery.

IPython is imported on first use, so importing :mod:`mh_notebook` stays light.
"""

from __future__ import annotations

__all__ = ["in_kernel", "put", "put_html"]


def put(*objects: object) -> None:
    """Display these objects in the current cell's output (``IPython.display.display``)."""
    from IPython.display import display

    display(*objects)


def put_html(markup: str) -> None:
    """Display ``markup`` (already escaped by the caller) as HTML in the current cell."""
    from IPython.display import HTML, display

    display(HTML(markup))


def in_kernel() -> bool:
    """True in a Jupyter kernel: any IPython shell with a ``kernel`` (as in Colab)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    return getattr(get_ipython(), "kernel", None) is not None
