"""Full float32 matrix products where results must be exact.

By default JAX computes a float32 matrix product (``@``, ``jnp.dot``, ``einsum``
and what is built on them) on an accelerator with fewer bits: TensorFloat-32 (a 10-bit
mantissa, relative error about 1e-3) on NVIDIA GPUs since Ampere, one bfloat16
pass on TPUs; CPUs always use full float32. That is right for neural networks and
wrong for the package's exact computations: the certified bounds pad their
rounding allowance for float32's unit roundoff (2^-24), a point-based backup
compares alpha-vectors that differ by far less than 1e-3, and a belief update
should not depend on the device it ran on.

So every function that takes a matrix product in an exact computation (belief
updates, the blind/QMDP/FIB/sawtooth bounds, point-based backups and pruning,
alpha-vector policies, a controller's exact evaluation, the Markov-chain
quantities behind the exact policy gradient) is traced under
``jax.default_matmul_precision("highest")`` (:func:`exact`), which also holds when
it is called inside someone else's ``jit``, ``vmap`` or ``grad``. The neural
networks (NVI's value networks, the policy-gradient policies) keep JAX's default,
which ``jax.default_matmul_precision`` or ``JAX_DEFAULT_MATMUL_PRECISION`` set as
usual. In float64 the setting changes nothing.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import jax
from jax import lax

__all__ = ["exact", "HIGHEST"]

#: For one product inside a function that should not be wrapped whole (it also evaluates networks,
#: or calls jit-compiled functions that would then compile twice): ``jnp.dot(x, y, precision=HIGHEST)``.
HIGHEST = lax.Precision.HIGHEST

F = TypeVar("F", bound=Callable)


def exact(fn: F) -> F:
    """``fn`` with every float32 matrix product it traces at full precision.

    Put it under ``jax.jit`` (``@jax.jit`` above ``@exact``) or anywhere else: the
    precision is recorded in the traced program, so the compiled code keeps it.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxpomdp import precision
      >>> dot = precision.exact(lambda x, y: x @ y)
      >>> "HIGHEST" in str(jax.make_jaxpr(dot)(jnp.ones(2), jnp.ones(2)))
      True
    """
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)
    return wrapped
