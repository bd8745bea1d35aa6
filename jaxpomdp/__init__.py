"""jaxpomdp: JAX-accelerated, functional POMDP solvers.

The public names below are stable; see README.md for a tour.
"""

from jaxpomdp.errors import InvalidModelError, PomdpFormatError
from jaxpomdp.model import (
    GenerativePOMDP,
    TabularPOMDP,
    dense_transitions,
    from_dense,
    validate,
)

__version__ = "0.1.0"

__all__ = [
    "GenerativePOMDP",
    "InvalidModelError",
    "PomdpFormatError",
    "TabularPOMDP",
    "dense_transitions",
    "from_dense",
    "validate",
    "__version__",
]
