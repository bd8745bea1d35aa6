"""Exact belief tracking for a :class:`~jaxpomdp.TabularPOMDP`.

A belief ``b`` is a distribution over states. After action ``a`` and observation
``o`` it becomes (Bayes' rule, the predict/condition step of an HMM filter with
the matrices chosen by the action)::

    b^{a,o}(s') = Z(o | a, s') sum_s T(s' | s, a) b(s) / P(o | b, a).

Every function handles one belief, action and observation; batch with
``jax.vmap`` (over beliefs, actions, observations, or stacked models: the model
is a pytree); they are jit-compiled already, so that calls from plain Python are
fast too. Transitions are used in their sparse form (a scatter-add over each
state's successors), never as a dense ``S x S`` matrix.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxpomdp.model import TabularPOMDP
from jaxpomdp.precision import exact

__all__ = ["predict", "observation_probs", "update"]


@jax.jit
def predict(model: TabularPOMDP, b: jax.Array, a: jax.Array) -> jax.Array:
    """The state distribution after action ``a``, before observing.

    ``b^a(s') = sum_s T(s' | s, a) b(s)``, a scatter-add over the sparse
    successors (``O(S K)``).

    Args:
      model: the POMDP.
      b: float[S] the current belief.
      a: int[] the action.

    Returns:
      float[S] the predicted belief (it sums to ``sum(b)``).

    Example:
      >>> from jaxpomdp import problems
      >>> m = problems.tiger()
      >>> predict(m, m.initial_belief, 0).tolist()  # listening does not move the tiger
      [0.5, 0.5]
    """
    S = model.next_prob.shape[1]
    if jnp.shape(b) != (S,) or jnp.ndim(a) != 0:  # shapes are static: checked while tracing, for free
        raise ValueError(f"expected a belief of shape ({S},) (this model's states) and a scalar action; "
                         f"got shapes {jnp.shape(b)} and {jnp.shape(a)}")
    weights = model.next_prob[a] * b[:, None]  # [S, K]: b(s) T(s_k | s, a)
    return jax.ops.segment_sum(weights.ravel(), model.next_state[a].ravel(), num_segments=b.shape[0])


@jax.jit
@exact
def observation_probs(model: TabularPOMDP, b: jax.Array, a: jax.Array) -> jax.Array:
    """The distribution of the next observation.

    ``P(o | b, a) = sum_{s'} Z(o | a, s') sum_s T(s' | s, a) b(s)``.

    Args:
      model: the POMDP.
      b: float[S] the current belief.
      a: int[] the action.

    Returns:
      float[O] ``P(o | b, a)`` for every observation ``o``.

    Example:
      >>> from jaxpomdp import problems
      >>> m = problems.tiger()
      >>> observation_probs(m, m.initial_belief, 0).tolist()
      [0.5, 0.5]
    """
    return predict(model, b, a) @ model.obs_prob[a]


@jax.jit
def update(model: TabularPOMDP, b: jax.Array, a: jax.Array, o: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The exact Bayes update of a belief and the log-likelihood of the observation.

    ``b'(s') = Z(o | a, s') b^a(s') / P(o | b, a)`` with ``b^a = predict(model, b, a)``
    and ``P(o | b, a) = sum_{s'} Z(o | a, s') b^a(s')``.

    An observation of probability zero under ``(b, a)`` is ignored: the result is
    ``b' = predict(model, b, a)`` and ``log_prob = -inf``. Neither the outputs nor
    their gradients are ever NaN (the division and the logarithm see a safe
    denominator in that branch).

    Args:
      model: the POMDP.
      b: float[S] the current belief (a distribution).
      a: int[] the action taken.
      o: int[] the observation received. ``a`` and ``o`` are not range-checked (they may be
        traced): as everywhere in JAX, an index past the end is clamped to the last one and
        a negative one counts from the end.

    Returns:
      ``(b', log_prob)``: float[S] the posterior belief and float[] ``log P(o | b, a)``.
      Summing ``log_prob`` along a history gives ``log P(o_1..o_t | a_1..a_t)``.

    Example:
      >>> from jaxpomdp import problems
      >>> m = problems.tiger()
      >>> b, log_p = update(m, m.initial_belief, 0, 0)  # listen, hear the tiger left
      >>> [round(float(x), 4) for x in b], round(float(jnp.exp(log_p)), 4)
      ([0.85, 0.15], 0.5)
    """
    chex.assert_rank(o, 0)
    predicted = predict(model, b, a)
    joint = predicted * model.obs_prob[a, :, o]
    total = joint.sum()
    possible = total > 0
    safe_total = jnp.where(possible, total, jnp.ones_like(total))
    posterior = jnp.where(possible, joint / safe_total, predicted)
    log_prob = jnp.where(possible, jnp.log(safe_total), -jnp.inf)
    return posterior, log_prob
