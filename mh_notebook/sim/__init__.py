"""The embedded ModelHunter simulator: ``with Simulator(speed=50) as sim: ...``."""

from .catalogue import CATALOGUE, ModelSpec
from .server import KEY_STATES, Faults, SimError, Simulator

__all__ = ["CATALOGUE", "KEY_STATES", "Faults", "ModelSpec", "SimError", "Simulator"]
