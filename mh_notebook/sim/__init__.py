"""The embedded ModelHunter simulator: ``with Simulator(speed=50) as sim: ...``."""

from .catalogue import CATALOGUE, ModelSpec
from .server import Faults, Simulator

__all__ = ["CATALOGUE", "Faults", "ModelSpec", "Simulator"]
