"""The embedded ModelHunter simulator: ``with Simulator(speed=50) as sim: ...``."""

from .catalogue import CATALOGUE, ModelSpec
from .faults import KEY_STATES, Faults
from .others import Others
from .server import SimError, Simulator

__all__ = ["CATALOGUE", "KEY_STATES", "Faults", "ModelSpec", "Others", "SimError", "Simulator"]
