"""Policies that ``simulate`` can run: a small pytree interface and two policies.

A policy is a pytree with three pure methods::

    memory = policy.init(model)                              # before the first step
    action = policy.act(key, memory)                         # int32[]
    memory = policy.update(model, memory, action, observation)

``memory`` is whatever the policy remembers of the history (a belief, a
controller node, nothing); it must keep one shape and dtype, so that it can be a
``lax.scan`` carry. A policy whose memory changes at random when it acts (a
stochastic finite-state controller, :mod:`jaxpomdp.stochastic`) may define
``action, memory = policy.sample(key, memory)`` as well; ``simulate.rollout``
then calls it instead of ``act`` and passes the memory it returns to ``update``. Policies are frozen ``flax.struct`` dataclasses, so they can be
passed through ``jit`` and stacked and vmapped like any pytree.

A policy whose arrays grow with what was solved (alpha-vectors, controller nodes)
may define ``policy.bucketed()``: the same policy with those arrays padded to
:func:`bucket_size` rows. :func:`jaxpomdp.simulate.evaluate` simulates that, so
one compiled simulation serves every policy of nearby size (a compilation takes
seconds; a new size would otherwise compile again).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxpomdp import belief, bounds
from jaxpomdp.errors import InvalidPolicyError
from jaxpomdp.model import TabularPOMDP, as_pytree, check_methods, same_types, spec, specs, trace
from jaxpomdp.precision import HIGHEST, exact

__all__ = ["Policy", "as_policy", "BlindPolicy", "AlphaVectorPolicy", "greedy_qmdp_policy", "blind_policy",
           "bucket_size", "MIN_BUCKET"]

#: The smallest size :func:`bucket_size` pads to.
MIN_BUCKET = 16


def bucket_size(n: int) -> int:
    """The number of rows ``bucketed()`` pads ``n`` rows to: :data:`MIN_BUCKET`, then
    the next of 24, 32, 48, 64, 96, ... (two sizes per doubling), so at most 50% more
    rows and two compiled simulations per doubling of the policy's size.

    Example:
      >>> [bucket_size(n) for n in (1, 16, 17, 24, 25, 33, 100)]
      [16, 16, 24, 24, 32, 48, 128]
    """
    n = int(n)
    if n <= MIN_BUCKET:
        return MIN_BUCKET
    p = 1 << (n - 1).bit_length()
    return 3 * p // 4 if n <= 3 * p // 4 else p


@runtime_checkable
class Policy(Protocol):
    """The interface ``simulate.rollout`` uses (see the module docstring)."""

    def init(self, model: Any) -> Any: ...

    def act(self, key: jax.Array, memory: Any) -> jax.Array: ...

    def update(self, model: Any, memory: Any, action: jax.Array, observation: jax.Array) -> Any: ...


def as_policy(policy: Any, model: Any, *, name: str = "policy") -> Any:
    """Checks that ``policy`` follows the interface above on ``model`` and returns it in a form jit accepts.

    :func:`jaxpomdp.simulate.evaluate` calls it, so a policy written as a plain Python
    class works (held as static data, :class:`~jaxpomdp.model.StaticObject`), and a
    broken one is refused with what is wrong instead of a JAX traceback from inside
    the compiled simulation. Checked by tracing (``jax.eval_shape``): ``init(model)``,
    ``act(key, memory)`` (or ``sample``) and ``update(model, memory, action,
    observation)`` can be traced with a traced action and observation; the action is
    an integer scalar; ``update`` (and ``sample``) keep the memory's structure, shapes
    and dtypes (it is a ``lax.scan`` carry).

    Args:
      policy: the policy; a pytree is returned as it is (after the checks).
      model: the model it will act on (a pytree, e.g. from
        :func:`~jaxpomdp.model.as_simulator`).
      name: how messages call the policy.

    Raises:
      InvalidPolicyError: naming the method and what it gave.
    """
    chooses = "sample" if callable(getattr(policy, "sample", None)) else "act"
    check_methods(InvalidPolicyError, policy, name, ("init", chooses, "update"), "a policy")
    policy = as_pytree(policy)
    for path, leaf in jax.tree_util.tree_flatten_with_path(policy)[0]:
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool, complex)):
            raise InvalidPolicyError(
                f"{name}{jax.tree_util.keystr(path)} is a {type(leaf).__name__}, not an array: a policy's fields "
                "are arrays, or static (struct.field(pytree_node=False)); pass a plain-class model held by a "
                "policy through jaxpomdp.as_simulator first")
    memory = trace(InvalidPolicyError, f"{name}.init(model)", lambda: policy.init(model))
    key = jax.random.key(0)
    if chooses == "sample":
        out = trace(InvalidPolicyError, f"{name}.sample(key, memory)", lambda k, m: policy.sample(k, m), key, memory)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise InvalidPolicyError(f"{name}.sample(key, memory) must return (action, memory)")
        action, after = out
        if not same_types(after, memory):
            raise InvalidPolicyError(f"{name}.sample returned a memory {specs(after)} unlike init's {specs(memory)}: "
                                     "the memory must keep its structure, shapes and dtypes")
    else:
        action = trace(InvalidPolicyError, f"{name}.act(key, memory)", lambda k, m: policy.act(k, m), key, memory)
    if not hasattr(action, "shape") or action.shape != () or np.dtype(action.dtype).kind not in "iub":
        raise InvalidPolicyError(f"{name}.{chooses}(key, memory) must give an integer scalar (an action); it gives "
                                 f"{spec(action)}")
    i32 = jax.ShapeDtypeStruct((), jnp.int32)
    nxt = trace(InvalidPolicyError, f"{name}.update(model, memory, action, observation) with a traced action and "
                "observation", lambda m, a, o: policy.update(model, m, a, o), memory, i32, i32)
    if not same_types(nxt, memory):
        raise InvalidPolicyError(f"{name}.update returned a memory {specs(nxt)} unlike init's {specs(memory)}: the "
                                 "memory must keep its structure, shapes and dtypes (it is a lax.scan carry)")
    return policy


@struct.dataclass
class BlindPolicy:
    """Always the same action, whatever is observed.

    Its value from state ``s`` on a tabular model is ``alpha_a(s)`` of
    :func:`jaxpomdp.bounds.blind_alphas`. The memory is a dummy int32 0.

    Fields:
      action: int32[] the action.

    Example:
      >>> import jax
      >>> p = BlindPolicy(jnp.int32(2))
      >>> int(p.act(jax.random.key(0), p.init(None)))
      2
    """

    action: jax.Array

    def init(self, model: Any) -> jax.Array:
        del model
        return jnp.zeros((), jnp.int32)

    def act(self, key: jax.Array, memory: jax.Array) -> jax.Array:
        del key, memory
        return jnp.asarray(self.action, jnp.int32)

    def update(self, model: Any, memory: jax.Array, action: jax.Array, observation: jax.Array) -> jax.Array:
        del model, action, observation
        return memory


@struct.dataclass
class AlphaVectorPolicy:
    """Acts greedily on a set of alpha-vectors over an exactly tracked belief.

    ``V(b) = max_k alphas[k] . b``; the action at ``b`` is ``actions[argmax_k
    alphas[k] . b]``. The memory is the belief, started at the model's initial
    belief and updated by :func:`jaxpomdp.belief.update`.

    Fields:
      alphas: float[N, S] the alpha-vectors.
      actions: int32[N] the action of each vector.

    Example:
      >>> from jaxpomdp import problems
      >>> m = problems.tiger()
      >>> p = greedy_qmdp_policy(m)
      >>> b = p.update(m, p.init(m), jnp.int32(0), jnp.int32(0))  # listen, hear left
      >>> int(p.action_for(b)), round(float(p.value(b)), 2)
      (0, 189.0)
    """

    alphas: jax.Array
    actions: jax.Array

    @exact
    def value(self, b: jax.Array) -> jax.Array:
        """float[] ``max_k alphas[k] . b`` for a belief float[S]."""
        chex.assert_rank(b, 1)
        return jnp.max(self.alphas @ b)

    @exact
    def action_for(self, b: jax.Array) -> jax.Array:
        """int32[] the action of the best vector at belief float[S]."""
        chex.assert_rank(b, 1)
        return jnp.asarray(self.actions, jnp.int32)[jnp.argmax(self.alphas @ b)]

    def bucketed(self) -> "AlphaVectorPolicy":
        """The same policy with :func:`bucket_size` vectors: the last vector repeated
        (with its action). ``max`` is over the same values, and ``argmax`` takes the
        first maximum, so a copy can only be chosen over the original if rounding
        made it larger, and it has the original's action: every belief gets the
        same action and value. For concrete arrays (it pads on the host)."""
        n = self.alphas.shape[0]
        size = bucket_size(n)
        if n == 0 or size == n:
            return self
        alphas, actions = np.asarray(self.alphas), np.asarray(self.actions)
        rows = np.minimum(np.arange(size), n - 1)
        return AlphaVectorPolicy(jnp.asarray(alphas[rows]), jnp.asarray(actions[rows]))

    def init(self, model: TabularPOMDP) -> jax.Array:
        return model.initial_belief

    def act(self, key: jax.Array, memory: jax.Array) -> jax.Array:
        del key
        return self.action_for(memory)

    def update(self, model: TabularPOMDP, memory: jax.Array, action: jax.Array,
               observation: jax.Array) -> jax.Array:
        return belief.update(model, memory, action, observation)[0]


def greedy_qmdp_policy(model: TabularPOMDP, **kwargs) -> AlphaVectorPolicy:
    """The QMDP policy: greedy on the MDP's Q-vectors over the exact belief.

    Args:
      model: the POMDP, with ``0 <= discount < 1``.
      **kwargs: ``tol``, ``max_iter`` of :func:`jaxpomdp.bounds.qmdp`.

    Returns:
      An :class:`AlphaVectorPolicy` with one vector ``Q_a`` per action ``a``.
    """
    return AlphaVectorPolicy(bounds.qmdp(model, **kwargs), jnp.arange(model.num_actions, dtype=jnp.int32))


def blind_policy(model: TabularPOMDP, **kwargs) -> tuple[BlindPolicy, jax.Array]:
    """The best fixed action at the initial belief, and its alpha-vector.

    Args:
      model: the POMDP, with ``0 <= discount < 1``.
      **kwargs: ``tol``, ``max_iter`` of :func:`jaxpomdp.bounds.blind_alphas`.

    Returns:
      ``(policy, alpha)``: the :class:`BlindPolicy` and float[S] its value from
      each state, so that its value at ``b0`` is ``alpha . b0``.

    Example:
      >>> from jaxpomdp import problems
      >>> p, alpha = blind_policy(problems.tiger())
      >>> int(p.action), [round(float(x), 3) for x in alpha]
      (0, [-20.0, -20.0])
    """
    alphas = bounds.blind_alphas(model, **kwargs)
    best = jnp.argmax(jnp.matmul(alphas, model.initial_belief, precision=HIGHEST)).astype(jnp.int32)
    return BlindPolicy(best), alphas[best]
