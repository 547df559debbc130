"""The simulator in a process of its own (``mh-notebook sim``), for benchmarks and tests
that must not share a GIL with it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Self

from .listing import LIST_LAG_ENV, LIST_MODE_ENV
from .others import OTHERS_ENV

__all__ = ["SimulatorProcess"]


class SimulatorProcess:
    """``with SimulatorProcess(speed=20) as sim:`` runs ``mh-notebook sim`` and exposes
    ``sim.url`` and ``sim.api_key`` as printed by it; the process ends on exit.
    ``others``, ``list_mode`` and ``list_lag`` set the account's switches."""

    def __init__(
        self,
        *,
        speed: float = 1.0,
        seed: int | None = 0,
        port: int = 0,
        others: str | None = None,
        list_mode: str | None = None,
        list_lag: float | None = None,
    ) -> None:
        self.args = ["sim", "--port", str(port), "--speed", str(speed)]
        if seed is not None:
            self.args += ["--seed", str(seed)]
        switches = {OTHERS_ENV: others, LIST_MODE_ENV: list_mode, LIST_LAG_ENV: list_lag}
        self.env = {name: str(value) for name, value in switches.items() if value is not None}
        """The account switches, passed as the environment (``others``: an
        :meth:`~.others.Others.parse` spec)."""
        self.url = self.api_key = ""
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
            [sys.executable, "-m", "mh_notebook.cli", *self.args],
            stdout=subprocess.PIPE, text=True, env=os.environ | self.env | {"PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert self.process.stdout is not None
        lines = [self.process.stdout.readline() for _ in range(3)]
        if not lines[2].strip():
            self.__exit__()
            raise RuntimeError(f"the simulator did not start: {''.join(lines)!r}")
        self.url, self.api_key = (line.split("=", 1)[1].strip() for line in lines[1:3])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
