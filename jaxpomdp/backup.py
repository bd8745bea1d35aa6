"""Point-based Bellman backups: the kernel of PBVI, Perseus and HSVI/SARSOP-style search.

For a belief ``b`` and an alpha set ``Gamma`` (ALGORITHMS.md §1), with the
unnormalised successor beliefs ``tau(b, a, o)(s') = Z(o|a, s') sum_s T(s'|s, a) b(s)``:

* ``k*(a, o) = argmax_k alpha_k . tau(b, a, o)`` (the same argmax as
  ``g_{a,o}^k . b``, since ``g_{a,o}^k . b = gamma alpha_k . tau(b, a, o)``);
* ``Q_L(b, a) = R_a . b + gamma sum_o alpha_{k*(a,o)} . tau(b, a, o)``;
* ``a* = argmax_a Q_L(b, a)`` and the new vector
  ``alpha(s) = R(s, a*) + gamma sum_o sum_s' T(s'|s, a*) Z(o|a*, s') alpha_{k*(a*,o)}(s')``,
  whose value at ``b`` is ``Q_L(b, a*)``.

Any choice of ``k*`` gives the alpha-vector of a real conditional plan, so when
``Gamma`` holds valid lower bounds so does every new vector. The successor
beliefs are a sparse push-forward (``O(A S K)``), the scores one batched matrix
product ``[A O, S] x [S, M]`` per belief, and only the winning action's vector is
built. Batches of beliefs go through ``jax.vmap`` in chunks (``lax.map``) so
memory stays bounded for large models.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax import lax

from jaxpomdp import belief
from jaxpomdp.model import TabularPOMDP
from jaxpomdp.precision import exact

__all__ = ["successor_beliefs", "Backup", "point_backup", "point_backup_used", "point_backup_batch",
           "lower_value", "lower_value_used", "best_used", "lower_value_batch", "backed_up_vector"]


def successor_beliefs(model: TabularPOMDP, b: jax.Array) -> jax.Array:
    """``tau[a, o, s'] = Z(o|a, s') sum_s T(s'|s, a) b(s)``, unnormalised: float[A, O, S].

    ``tau[a, o].sum()`` is ``P(o | b, a)``; ``tau[a, o] / P(o | b, a)`` the updated belief.
    """
    chex.assert_rank(b, 1)
    predicted = jax.vmap(lambda a: belief.predict(model, b, a))(jnp.arange(model.num_actions))  # [A, S]
    return predicted[:, None, :] * jnp.swapaxes(model.obs_prob, 1, 2)


class Backup(NamedTuple):
    """Result of a point-based backup at one belief (batched: a leading axis).

    Attributes:
      alpha: float[S] the new alpha-vector.
      action: int32[] its action ``a*``.
      value: float[] ``alpha . b = max_a Q_L(b, a)``.
      q: float[A] ``Q_L(b, a)`` for every action.
      successors: int32[O] ``k*(a*, o)``, the vector the new one continues with after
        each observation (so the set can be kept closed when pruned).
    """

    alpha: jax.Array
    action: jax.Array
    value: jax.Array
    q: jax.Array
    successors: jax.Array


@exact
def lower_value(alphas: jax.Array, mask: jax.Array, b: jax.Array) -> jax.Array:
    """``max_{k: mask[k]} alphas[k] . b`` (``-inf`` if no vector is in use)."""
    return jnp.max(jnp.where(mask, alphas @ b, -jnp.inf))


@exact
def best_used(alphas: jax.Array, count: jax.Array, x: jax.Array, *, chunk: int = 256):
    """``max`` and ``argmax`` over the first ``count`` rows ``k`` of ``alphas[k] . x``.

    ``x`` is float[..., S]; returns float[...] and int32[...] (the first maximiser,
    as :func:`jnp.argmax`). The rows are scanned ``chunk`` at a time, so the work
    grows with ``count`` rather than with the capacity ``alphas.shape[0]``.
    """
    capacity = alphas.shape[0]
    chunk = min(chunk, capacity)

    def body(i, carry):
        best, arg = carry
        start = jnp.minimum(i * chunk, capacity - chunk)  # the last chunk may overlap
        rows = lax.dynamic_slice_in_dim(alphas, start, chunk)
        scores = jnp.where(start + jnp.arange(chunk) < count, x @ rows.T, -jnp.inf)  # [..., chunk]
        j = jnp.argmax(scores, axis=-1)
        value = jnp.take_along_axis(scores, j[..., None], -1)[..., 0]
        better = value > best
        return jnp.where(better, value, best), jnp.where(better, start + j, arg).astype(jnp.int32)

    init = (jnp.full(x.shape[:-1], -jnp.inf, x.dtype), jnp.zeros(x.shape[:-1], jnp.int32))
    return lax.fori_loop(0, (count + chunk - 1) // chunk, body, init)


def lower_value_used(alphas: jax.Array, count: jax.Array, b: jax.Array) -> jax.Array:
    """:func:`lower_value` over the first ``count`` vectors (work grows with ``count``)."""
    return best_used(alphas, count, b)[0]


def lower_value_batch(alphas, mask, beliefs, *, chunk: int = 1024) -> jax.Array:
    """:func:`lower_value` for beliefs float[N, S] -> float[N]."""
    return lax.map(lambda b: lower_value(alphas, mask, b), beliefs, batch_size=min(chunk, beliefs.shape[0]))


@exact
def backed_up_vector(model: TabularPOMDP, alphas: jax.Array, a: jax.Array, chosen: jax.Array) -> jax.Array:
    """``alpha(s) = R(s, a) + gamma sum_o sum_s' T(s'|s, a) Z(o|a, s') alphas[chosen[o]](s')``.

    Args:
      model: the POMDP.
      alphas: float[M, S].
      a: int[] the action.
      chosen: int[O] the successor vector index for each observation.

    Returns:
      float[S] the new alpha-vector.
    """
    successor = jnp.einsum("so,os->s", model.obs_prob[a], alphas[chosen])  # [S']
    return model.reward[a] + model.discount * jnp.sum(model.next_prob[a] * successor[model.next_state[a]], axis=-1)


@exact
def point_backup(model: TabularPOMDP, alphas: jax.Array, mask: jax.Array, b: jax.Array) -> Backup:
    """The point-based Bellman backup of ``(alphas, mask)`` at belief ``b``.

    Args:
      model: the POMDP.
      alphas: float[M, S] the alpha set (valid lower bounds for a lower bound).
      mask: bool[M] which vectors are in use (at least one).
      b: float[S] the belief.

    Returns:
      A :class:`Backup`.

    Example:
      >>> from jaxpomdp import bounds, problems
      >>> m = problems.tiger()
      >>> gamma0 = bounds.blind_alphas(m)
      >>> out = point_backup(m, gamma0, jnp.ones(3, bool), m.initial_belief)
      >>> int(out.action), bool(out.value >= jnp.max(gamma0 @ m.initial_belief) - 1e-4)
      (0, True)
    """
    chex.assert_rank([alphas, mask, b], [2, 1, 1])
    tau = successor_beliefs(model, b)  # [A, O, S]
    scores = jnp.where(mask, tau @ alphas.T, -jnp.inf)  # [A, O, M]
    chosen = jnp.argmax(scores, axis=-1)  # [A, O]
    best = jnp.take_along_axis(scores, chosen[..., None], -1)[..., 0]
    q = model.reward @ b + model.discount * jnp.sum(best, axis=-1)  # [A]
    a = jnp.argmax(q).astype(jnp.int32)
    alpha = backed_up_vector(model, alphas, a, chosen[a])
    return Backup(alpha, a, q[a], q, chosen[a].astype(jnp.int32))


@exact
def point_backup_used(model: TabularPOMDP, alphas: jax.Array, count: jax.Array, b: jax.Array) -> Backup:
    """:func:`point_backup` against the first ``count`` vectors of ``alphas``, scanned in
    chunks, so the work grows with ``count`` rather than with the set's capacity."""
    tau = successor_beliefs(model, b)  # [A, O, S]
    best, chosen = best_used(alphas, count, tau)  # [A, O]
    q = model.reward @ b + model.discount * jnp.sum(best, axis=-1)  # [A]
    a = jnp.argmax(q).astype(jnp.int32)
    alpha = backed_up_vector(model, alphas, a, chosen[a])
    return Backup(alpha, a, q[a], q, chosen[a])


def point_backup_batch(model: TabularPOMDP, alphas: jax.Array, mask: jax.Array, beliefs: jax.Array,
                       *, chunk: int = 64) -> Backup:
    """:func:`point_backup` for beliefs float[N, S], ``chunk`` at a time (vmapped).

    Peak memory is about ``chunk * A * O * (S + M)`` floats.
    """
    return lax.map(lambda b: point_backup(model, alphas, mask, b), beliefs,
                   batch_size=min(chunk, beliefs.shape[0]))
