"""The clients' public methods, each bound once to the call :class:`~.core._Core` describes.

:class:`_Client` lists them; a client is a thin sender: :class:`~.sync.Client` turns a call
into a blocking method and :class:`~.asynchronous.AsyncClient` into a coroutine method
(or a generator for the pages), each with the core method's name, parameters and docstring.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import ClassVar, Concatenate, Generic, ParamSpec, TypeVar, overload

from ..models import TaskPage
from .core import Filters, _Call, _Core

__all__: list[str] = []

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")
A = TypeVar("A")
F = TypeVar("F", bound=Callable[..., object])
Spec = Callable[..., _Call[object]]
"""A core method describing a call (its parameters vary)."""


class _Sent(Generic[P, S, A]):
    """A public method of both clients: ``S`` what the sync one returns, ``A`` the async one."""

    def __init__(self, spec: Spec, paged: bool) -> None:
        self.spec, self.paged = spec, paged
        self._made: dict[type[_Client], Callable[..., object]] = {}

    def function(self, owner: type[_Client]) -> Callable[..., object]:
        """The function ``owner`` sends this call with (made once per class)."""
        if owner not in self._made:
            self._made[owner] = owner._sender(self.spec, self.paged)
        return self._made[owner]

    @overload
    def __get__(self, obj: None, owner: type[_Client]) -> Callable[..., object]: ...
    @overload
    def __get__(self, obj: _Blocking, owner: type[_Client]) -> Callable[P, S]: ...
    @overload
    def __get__(self, obj: _Awaiting, owner: type[_Client]) -> Callable[P, A]: ...
    def __get__(self, obj: _Client | None, owner: type[_Client]) -> Callable[..., object]:
        function = self.function(owner)
        return function if obj is None else types.MethodType(function, obj)


def _sent(spec: Callable[Concatenate[_Core, P], _Call[T]]) -> _Sent[P, T, Awaitable[T]]:
    return _Sent(spec, paged=False)


def _paged(
    spec: Callable[Concatenate[_Core, P], _Call[TaskPage]],
) -> _Sent[P, Iterator[TaskPage], AsyncIterator[TaskPage]]:
    return _Sent(spec, paged=True)


class _Client:
    """What both clients have: the API's calls (sent as each client sends), the base URL."""

    _core: _Core
    _returns: ClassVar[tuple[str, str]]
    """How ``help()`` names what a method returns: one result, and pages."""

    get_task = _sent(_Core.get_task)
    list_tasks = _sent(_Core.list_tasks)
    iter_pages = _paged(_Core.iter_pages)
    create_task = _sent(_Core.create_task)
    cancel_task = _sent(_Core.cancel_task)
    retry_task = _sent(_Core.retry_task)
    balance = _sent(_Core.balance)

    @property
    def base_url(self) -> str:
        """The API's base URL (no trailing slash)."""
        return self._core.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key=<redacted>)"

    @classmethod
    def _sender(cls, spec: Spec, paged: bool) -> Callable[..., object]:
        """The method sending ``spec``'s call (its pages if ``paged``), as ``help()`` shows it;
        each client says how. Here, in the bases that send nothing, the call's description."""
        return spec

    @classmethod
    def _signed(cls, method: F, spec: Spec, paged: bool) -> F:
        """``method`` shown by ``help()`` with ``spec``'s name, docstring and parameters."""
        module = method.__module__
        functools.update_wrapper(method, spec)
        method.__module__, method.__qualname__ = module, f"{cls.__qualname__}.{spec.__name__}"
        result = str(inspect.signature(spec).return_annotation).removeprefix("_Call[").removesuffix("]")
        returns = cls._returns[1 if paged else 0].format(result)
        method.__dict__["__signature__"] = _spelled_out(inspect.signature(spec), returns)
        return method


def _spelled_out(signature: inspect.Signature, returns: str) -> inspect.Signature:
    """``signature`` returning ``returns``, its ``**filters: Unpack[Filters]`` written out as
    the keyword arguments they are (first, each ``None`` by default)."""
    params = list(signature.parameters.values())
    spread = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    if spread:
        named = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_text(annotation)
            )
            for name, annotation in Filters.__annotations__.items()
        ]
        params = [params[0], *named, *(p for p in params[1:] if p not in spread)]
    return signature.replace(parameters=params, return_annotation=returns)


class _Blocking(_Client):
    """A client whose methods block until the answer."""


class _Awaiting(_Client):
    """A client whose methods are coroutines (and its pages an async generator)."""


def _text(annotation: object) -> object:
    """A TypedDict's field annotation as the string it was written as (not a ``ForwardRef``)."""
    return getattr(annotation, "__forward_arg__", annotation)
