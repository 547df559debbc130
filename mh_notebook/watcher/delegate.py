"""Delegating attributes: a facade's public names forward to its parts, one line each.

::

    delegate: Delegates[TaskWatcher] = Delegates()  # fixes the owner's type (module level)

    class TaskWatcher:
        wait = delegate(lambda w: w._waits, Waiters.wait)
        tasks = delegate.attribute(lambda w: w._tracked, TrackedSet.tasks)

The part's method (or property) is the one place its docstring is written. ``w.wait`` is
the part's bound method: ``help(w.wait)`` and ``w.wait?`` show its docstring and signature,
and mypy checks its callers (``reveal_type(w.wait)`` is ``def (timeout: float | None =) ->
dict[str, Task]``: ParamSpec carries the parameters over). On the class, ``TaskWatcher.wait``
is the :class:`DelegatedMethod` itself: it has the method's ``__doc__``, ``__name__`` and
``__wrapped__`` (so ``inspect.signature`` and pydoc see ``(self, timeout=None)``) and is
callable as ``TaskWatcher.wait(w, 5)``, as a method is. :meth:`Delegates.attribute` makes
a read-only :class:`DelegatedAttribute`, a ``property`` (IPython's ``w.tasks?`` and pydoc
treat it as one): assigning to it raises ``AttributeError``, and mypy refuses it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Concatenate, Generic, Never, NoReturn, ParamSpec, Self, TypeVar, overload

__all__ = ["DelegatedAttribute", "DelegatedMethod", "Delegates"]

Owner = TypeVar("Owner")
Part = TypeVar("Part")
P = ParamSpec("P")
R = TypeVar("R")


class DelegatedMethod(Generic[Owner, Part, P, R]):
    """``owner.name(...)`` is ``method(part(owner), ...)``: on an instance, ``method`` bound to
    the part; on the class, this descriptor (callable with the owner first)."""

    def __init__(self, part: Callable[[Owner], Part], method: Callable[Concatenate[Part, P], R]) -> None:
        self._part, self._method = part, method
        self.__wrapped__ = method
        self.__doc__ = method.__doc__
        self.__name__, self.__qualname__ = method.__name__, method.__qualname__

    def __set_name__(self, owner: type[Owner], name: str) -> None:
        self.__name__, self.__qualname__ = name, f"{owner.__qualname__}.{name}"
        self.__module__ = owner.__module__

    def __repr__(self) -> str:
        return f"<delegated method {self.__qualname__} -> {self._method.__qualname__}>"

    @overload
    def __get__(self, obj: None, owner: type[Owner] | None = None, /) -> Self: ...
    @overload
    def __get__(self, obj: Owner, owner: type[Owner] | None = None, /) -> Callable[P, R]: ...
    def __get__(self, obj: Owner | None, owner: type[Owner] | None = None, /) -> Self | Callable[P, R]:
        if obj is None:
            return self
        bound: Callable[P, R] = types.MethodType(self._method, self._part(obj))
        return bound

    def __call__(self, obj: Owner, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``Owner.name(owner, ...)``, as for a method looked up on the class."""
        return self._method(self._part(obj), *args, **kwargs)


class DelegatedAttribute(property, Generic[Owner, Part, R]):
    """A read-only ``owner.name``: ``read(part(owner))``, with ``read``'s docstring."""

    def __init__(self, part: Callable[[Owner], Part], read: Callable[[Part], R]) -> None:
        if isinstance(read, property) and read.fget is not None:
            read = read.fget  # a property of the part (mypy types ``Part.prop`` as its getter)
        self._part, self._read = part, read
        self._name = repr(read.__name__)
        super().__init__(self._value)
        self.__doc__ = read.__doc__  # here: a subclass's own docstring would shadow property's doc

    def __set_name__(self, owner: type[Owner], name: str) -> None:
        self._name = f"{name!r} of {owner.__name__!r}"

    def __repr__(self) -> str:
        return f"<delegated attribute {self._name} -> {self._read.__qualname__}>"

    def _value(self, obj: Owner) -> R:
        return self._read(self._part(obj))

    @overload
    def __get__(self, obj: None, owner: type | None = None, /) -> Self: ...
    @overload
    def __get__(self, obj: Owner, owner: type | None = None, /) -> R: ...
    def __get__(self, obj: Owner | None, owner: type | None = None, /) -> Self | R:
        if obj is None:
            return self
        return self._value(obj)

    def __set__(self, obj: Owner, value: Never, /) -> NoReturn:
        raise AttributeError(f"property {self._name} object has no setter")


class Delegates(Generic[Owner]):
    """Makes the delegating attributes of one owner class (its type fixed by annotation, so
    the lambdas that reach the parts are checked)."""

    def __call__(
        self, part: Callable[[Owner], Part], method: Callable[Concatenate[Part, P], R]
    ) -> DelegatedMethod[Owner, Part, P, R]:
        """A method forwarded to ``method`` of ``part(owner)``."""
        return DelegatedMethod(part, method)

    def attribute(
        self, part: Callable[[Owner], Part], read: Callable[[Part], R]
    ) -> DelegatedAttribute[Owner, Part, R]:
        """A read-only attribute: ``read`` (a property or a method without arguments) of
        ``part(owner)``."""
        return DelegatedAttribute(part, read)
