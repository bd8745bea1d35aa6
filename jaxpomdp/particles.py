"""Particle beliefs: a fixed number of weighted states, updated by simulation.

A :class:`ParticleBelief` holds ``P`` states (any state pytree with a leading axis
``P``: int32[P] for a :class:`~jaxpomdp.TabularPOMDP`, a stacked
``RockState`` for :class:`~jaxpomdp.problems.rocksample_sim.RockSampleSim`) and
their log-weights. :func:`update` is the bootstrap particle filter:

1. propagate every particle through the simulator, ``s'_i ~ T(. | s_i, a)``;
2. weight it by the observation's likelihood ``Z(o | a, s'_i)`` when the model
   gives one (``TabularPOMDP.obs_prob``, or a model method
   ``observation_probability(state, action, next_state, observation)``), otherwise
   rejection-style: weight 1 if the simulator's own sampled observation equals
   ``o``, else 0;
3. resample when the effective sample size falls below ``resample_threshold *
   P``: systematically (:func:`resample`), or by the model's own
   ``resample_particles(key, states, weights) -> states`` when it has one (``P``
   equally weighted states for the weighted ones; RockSample's draws each rock's
   quality from its marginal, :meth:`~jaxpomdp.problems.rocksample_sim.RockSampleSim.resample_particles`,
   so that repeated resampling does not collapse the particles onto a few masks).

**Fallback** when every particle is inconsistent with ``o`` (all weights zero,
e.g. a rejection filter with too few particles, or an observation the particles
deem impossible): the observation is ignored for this step: the propagated
particles are kept with uniform weights and ``fallback=True`` is returned, so the
belief stays a valid distribution (the predicted belief ``b^a``) and never NaN.

Everything is pure, jit- and vmap-able; the PRNG key comes first.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxpomdp.model import TabularPOMDP
from jaxpomdp.precision import exact

__all__ = ["ParticleBelief", "UpdateInfo", "init", "from_states", "update", "resample",
           "effective_sample_size", "normalized_weights", "expectation", "likelihood"]


@struct.dataclass
class ParticleBelief:
    """``P`` weighted particles.

    Fields:
      states: state pytree with leading axis ``P``.
      log_weights: float[P] unnormalised log-weights (``-inf`` = weight 0).
    """

    states: Any
    log_weights: jax.Array

    @property
    def num_particles(self) -> int:
        return self.log_weights.shape[-1]


class UpdateInfo(NamedTuple):
    """What :func:`update` reports.

    Attributes:
      log_likelihood: float[] ``log`` of the estimated ``P(o | b, a)`` (the weighted
        mean likelihood of the propagated particles); ``-inf`` on fallback.
      fallback: bool[] every particle was inconsistent with ``o`` (see module doc).
      resampled: bool[] the particles were resampled.
    """

    log_likelihood: jax.Array
    fallback: jax.Array
    resampled: jax.Array


def _float(model) -> Any:
    r = getattr(model, "reward", None)
    return r.dtype if r is not None else jnp.asarray(model.discount).dtype


def from_states(states: Any, dtype=None) -> ParticleBelief:
    """Equally weighted particles at the given states (leading axis ``P``)."""
    P = jax.tree.leaves(states)[0].shape[0]
    return ParticleBelief(states, jnp.zeros(P, dtype or jax.dtypes.canonicalize_dtype(jnp.float_)))


def init(key: jax.Array, model: Any, num_particles: int) -> ParticleBelief:
    """``num_particles`` draws from ``b0`` (``model.initial_state``), equally weighted."""
    states = jax.vmap(model.initial_state)(jax.random.split(key, num_particles))
    return ParticleBelief(states, jnp.zeros(num_particles, _float(model)))


def normalized_weights(belief: ParticleBelief) -> jax.Array:
    """float[P] weights summing to 1 (uniform if all are zero)."""
    lw = belief.log_weights
    ok = jnp.any(jnp.isfinite(lw))
    w = jax.nn.softmax(jnp.where(ok, lw, jnp.zeros_like(lw)))
    return w


def effective_sample_size(belief: ParticleBelief) -> jax.Array:
    """``1 / sum w_i^2`` of the normalised weights."""
    w = normalized_weights(belief)
    return 1.0 / jnp.sum(w * w)


@exact
def expectation(belief: ParticleBelief, values: jax.Array) -> jax.Array:
    """``sum_i w_i values[i, ...]`` over the particle axis (the first)."""
    w = normalized_weights(belief)
    return jnp.tensordot(w, values, axes=(0, 0))


def resample(key: jax.Array, belief: ParticleBelief) -> ParticleBelief:
    """Systematic resampling: ``P`` equally weighted particles drawn from the weights."""
    P = belief.num_particles
    w = normalized_weights(belief)
    u = (jax.random.uniform(key, (), w.dtype) + jnp.arange(P, dtype=w.dtype)) / P
    idx = jnp.clip(jnp.searchsorted(jnp.cumsum(w), u, side="right"), 0, P - 1)
    states = jax.tree.map(lambda x: x[idx], belief.states)
    return ParticleBelief(states, jnp.zeros_like(belief.log_weights))


def likelihood(model: Any, state: Any, action: jax.Array, next_state: Any, observation: jax.Array,
               sampled_observation: jax.Array) -> jax.Array:
    """``Z(o | a, s')`` if the model gives it, else ``[sampled_observation == o]``."""
    if isinstance(model, TabularPOMDP):
        return model.obs_prob[action, next_state, observation]
    fn = getattr(model, "observation_probability", None)
    if fn is not None:
        return fn(state, action, next_state, observation)
    return (sampled_observation == observation).astype(_float(model))


def update(key: jax.Array, model: Any, belief: ParticleBelief, action: jax.Array, observation: jax.Array,
           *, resample_threshold: float = 0.5) -> tuple[ParticleBelief, UpdateInfo]:
    """One step of the bootstrap particle filter (module docstring).

    Args:
      key: PRNG key.
      model: a :class:`~jaxpomdp.model.GenerativePOMDP` (a plain-class simulator goes
        through :func:`jaxpomdp.as_simulator` first when this runs under your own jit).
      belief: the particles before the step.
      action: int32[] the action taken.
      observation: int32[] the observation received.
      resample_threshold: resample when ESS < threshold * P (1: always, 0: never).

    Returns:
      ``(belief', UpdateInfo)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxpomdp import problems
      >>> m = problems.tiger()
      >>> b = init(jax.random.key(0), m, 1000)
      >>> b, info = update(jax.random.key(1), m, b, jnp.int32(0), jnp.int32(0))  # listen, hear left
      >>> round(float(expectation(b, (b.states == 0).astype(float))), 1)
      0.8
    """
    k_step, k_res = jax.random.split(key)
    P = belief.num_particles
    action = jnp.asarray(action, jnp.int32)
    observation = jnp.asarray(observation, jnp.int32)
    nxt, obs, _, _ = jax.vmap(lambda k, s: model.step(k, s, action))(jax.random.split(k_step, P), belief.states)
    lik = jax.vmap(lambda s, s2, o: likelihood(model, s, action, s2, observation, o))(belief.states, nxt, obs)
    w_prev = normalized_weights(belief)
    total = jnp.sum(w_prev * lik)
    fallback = ~(total > 0)
    lw = belief.log_weights + jnp.where(lik > 0, jnp.log(jnp.where(lik > 0, lik, 1)), -jnp.inf)
    lw = jnp.where(fallback, jnp.zeros_like(lw), lw)
    new = ParticleBelief(nxt, lw.astype(belief.log_weights.dtype))
    ess = effective_sample_size(new)
    do_resample = ess < resample_threshold * P
    own = getattr(model, "resample_particles", None)
    res = resample(k_res, new) if own is None else ParticleBelief(
        own(k_res, nxt, normalized_weights(new)), jnp.zeros_like(new.log_weights))
    new = jax.tree.map(lambda a, b: jnp.where(do_resample, a, b), res, new)
    loglik = jnp.where(fallback, -jnp.inf, jnp.log(jnp.where(fallback, 1, total)))
    return new, UpdateInfo(loglik, fallback, do_resample)
