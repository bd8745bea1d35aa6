"""Pruning alpha-vector sets: pointwise dominance, and vectors best at no kept belief.

Both return a boolean ``keep`` mask over the vectors; the caller compacts the
arrays (outside jit, where shapes may change). Pruning never lowers the value
``max_k alpha_k . b`` at the beliefs it keeps vectors for.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxpomdp.precision import exact

__all__ = ["pointwise_dominated", "dominators", "best_at_beliefs"]


@jax.jit
def pointwise_dominated(alphas: jax.Array, mask: jax.Array) -> jax.Array:
    """Vectors to keep after removing every one that another in use dominates.

    ``alpha_i`` is dominated when some other ``alpha_j`` has ``alpha_j >= alpha_i``
    in every state (for equal vectors the one with the lower index is kept).

    Args:
      alphas: float[M, S].
      mask: bool[M] vectors in use.

    Returns:
      bool[M] ``keep``: in use and not dominated. Cost ``O(M^2 S)``, one row at a time.
    """
    M = alphas.shape[0]
    idx = jnp.arange(M)

    def dominated(i):
        ge = jnp.all(alphas >= alphas[i], axis=1)  # alpha_j >= alpha_i everywhere
        equal = jnp.all(alphas == alphas[i], axis=1)
        beats = ge & (~equal | (idx < i)) & mask & (idx != i)
        return jnp.any(beats)

    return mask & ~lax.map(dominated, idx, batch_size=min(64, M))


@jax.jit
def dominators(alphas: jax.Array, mask: jax.Array) -> jax.Array:
    """For each vector, an undominated vector in use that dominates it pointwise.

    Args:
      alphas: float[M, S].
      mask: bool[M] vectors in use.

    Returns:
      int32[M]: ``j`` with ``alphas[j] >= alphas[i]`` everywhere and ``j`` kept by
      :func:`pointwise_dominated`; ``i`` itself for vectors that are kept; -1 for
      vectors not in use. Links to a dominated vector may be redirected to its
      dominator: the dominator is worth at least as much in every state.
    """
    M = alphas.shape[0]
    kept = pointwise_dominated(alphas, mask)

    def find(i):
        ge = jnp.all(alphas >= alphas[i], axis=1) & kept
        return jnp.where(kept[i], i, jnp.argmax(ge))

    out = lax.map(find, jnp.arange(M), batch_size=min(64, M)).astype(jnp.int32)
    return jnp.where(mask, out, -1)


@jax.jit
@exact
def best_at_beliefs(alphas: jax.Array, mask: jax.Array, beliefs: jax.Array,
                    belief_mask: jax.Array) -> jax.Array:
    """Vectors to keep: those that are the best (``argmax_k alpha_k . b``) at some belief.

    Args:
      alphas: float[M, S].
      mask: bool[M] vectors in use.
      beliefs: float[N, S] the kept beliefs.
      belief_mask: bool[N] which beliefs count.

    Returns:
      bool[M] ``keep``.
    """
    def best(b):
        return jnp.argmax(jnp.where(mask, alphas @ b, -jnp.inf))

    winners = lax.map(best, beliefs, batch_size=min(256, beliefs.shape[0]))
    hits = jnp.zeros(alphas.shape[0], bool).at[jnp.where(belief_mask, winners, alphas.shape[0])].set(
        True, mode="drop")
    return mask & hits
