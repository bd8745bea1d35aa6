"""jaxpomdp: JAX-accelerated, functional POMDP solvers.

The public names below are stable; see README.md for a tour.
"""

from jaxpomdp import belief, bounds, checkpoint, policy, problems, simulate
from jaxpomdp.errors import (CheckpointError, ConfigError, InvalidModelError, InvalidPolicyError, NumericalError,
                             PomdpFormatError)
from jaxpomdp.io import load_pomdp, save_pomdp
from jaxpomdp.model import (
    GenerativePOMDP,
    TabularPOMDP,
    as_simulator,
    dense_transitions,
    from_dense,
    validate,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "GenerativePOMDP",
    "InvalidModelError",
    "InvalidPolicyError",
    "NumericalError",
    "PomdpFormatError",
    "TabularPOMDP",
    "as_simulator",
    "belief",
    "bounds",
    "checkpoint",
    "dense_transitions",
    "from_dense",
    "load_pomdp",
    "policy",
    "problems",
    "save_pomdp",
    "simulate",
    "validate",
    "__version__",
]
