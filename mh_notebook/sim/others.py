"""Someone else on the account: tasks created at a set rate that nobody in the test watches.

A teammate's batch, a script, the web playground: the account's list fills with tasks the
client did not create. ``Simulator(others=Others(rate=2))`` (or ``sim.others = ...`` while
serving, or ``MH_SIM_OTHERS="rate=2;models=seedream-4-5:3,viduq3-turbo"`` for every
simulator, including ``mh-notebook sim``) creates them while the simulator serves: models
drawn by weight, the catalogue's realistic durations, and failures at the models' own rates
unless ``fail_rate`` says otherwise. ``sim.spawn_others(n)`` creates ``n`` at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["OTHERS_ENV", "Others", "drive_others"]

OTHERS_ENV = "MH_SIM_OTHERS"
"""Default ``others`` of every simulator, as :meth:`Others.parse` reads it."""

DEFAULT_MIX: tuple[tuple[str, float], ...] = (
    ("seedream-4-5", 3.0),
    ("nano-banana-2", 1.0),
    ("viduq3-turbo", 2.0),
    ("kling-v3", 1.0),
)
"""Images and videos of documented models, by weight."""


@dataclass(frozen=True)
class Others:
    """Tasks someone else creates on the account."""

    rate: float = 0.0
    """Tasks per simulated second (real seconds: ``rate * speed``); 0 creates none."""
    models: tuple[tuple[str, float], ...] = DEFAULT_MIX
    """``(model id, weight)`` pairs the models are drawn from."""
    fail_rate: float | None = None
    """Share that fails (``None``: each model's own rate)."""
    count: int | None = None
    """Stop after this many (``None``: as long as the simulator serves)."""

    def __post_init__(self) -> None:
        if not self.rate >= 0 or not self.models or any(w <= 0 for _, w in self.models):
            raise ValueError(f"others need rate >= 0 and models with positive weights: {self!r}")
        if self.fail_rate is not None and not 0 <= self.fail_rate <= 1:
            raise ValueError(f"fail_rate must be in [0, 1], got {self.fail_rate!r}")

    @classmethod
    def parse(cls, spec: str) -> Others:
        """``"rate=2;models=seedream-4-5:3,viduq3-turbo;fail_rate=0.1;count=500"`` (any
        part may be left out; a model's weight defaults to 1)."""
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in ("rate", "models", "fail_rate", "count"):
                raise ValueError(f"bad part {part!r} in others {spec!r}")
            fields[name.strip()] = value.strip()
        models = DEFAULT_MIX
        if "models" in fields:
            pairs = [m.partition(":") for m in fields["models"].split(",") if m.strip()]
            models = tuple((m.strip(), float(w) if w else 1.0) for m, _, w in pairs)
        return cls(
            rate=float(fields.get("rate", "0")),
            models=models,
            fail_rate=float(fields["fail_rate"]) if "fail_rate" in fields else None,
            count=int(fields["count"]) if "count" in fields else None,
        )

    @classmethod
    def from_environment(cls) -> Others:
        """``MH_SIM_OTHERS``, or none."""
        spec = os.environ.get(OTHERS_ENV, "")
        return cls.parse(spec) if spec.strip() else cls()

    def draw(self, rng: random.Random) -> tuple[str, str | None]:
        """A model and a forced outcome (``None``: the model's own failure rate)."""
        names, weights = zip(*self.models, strict=True)
        model = rng.choices(names, weights)[0]
        if self.fail_rate is None:
            return model, None
        return model, "failed" if rng.random() < self.fail_rate else "succeeded"


async def drive_others(
    current: Callable[[], Others], speed: Callable[[], float], spawn: Callable[[Others], None]
) -> None:
    """Create others' tasks on time while the simulator's loop runs (cancelled at stop).

    ``current()`` is read at each step, so a new setting takes effect within 50 ms; each
    new setting starts its own count and clock."""
    active, made, next_at = None, 0, 0.0
    while True:
        others = current()
        if others is not active:
            active, made, next_at = others, 0, time.time()
        done = others.count is not None and made >= others.count
        if others.rate <= 0 or done:
            await asyncio.sleep(0.05)
            continue
        interval = 1.0 / (others.rate * speed())
        now = time.time()
        while next_at <= now and (others.count is None or made < others.count):
            spawn(others)
            made, next_at = made + 1, next_at + interval
        await asyncio.sleep(min(0.05, max(0.0, next_at - time.time())))
