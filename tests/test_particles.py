"""Particle beliefs against the exact belief update (Tiger) and the documented fallback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpomdp import belief, particles, problems
from jaxpomdp.model import from_dense


class _SimulatorOnly:
    """Tiger seen only through ``step`` (no likelihood): the rejection-style filter."""

    def __init__(self, m):
        self.m = m
        self.num_actions, self.num_observations, self.discount = m.num_actions, m.num_observations, m.discount

    def initial_state(self, key):
        return self.m.initial_state(key)

    def step(self, key, s, a):
        return self.m.step(key, s, a)

    def features(self, s):
        return self.m.features(s)


def _prob_left(b):
    return float(particles.expectation(b, (b.states == 0).astype(jnp.float32)))


@pytest.mark.parametrize("simulator_only", [False, True])
def test_tiger_particles_track_the_exact_belief(simulator_only):
    m = problems.tiger()
    model = _SimulatorOnly(m) if simulator_only else m
    update = jax.jit(lambda k, b, a, o: particles.update(k, model, b, a, o))
    b = particles.init(jax.random.key(0), model, 20000)
    exact = m.initial_belief
    history = [(0, 0), (0, 0), (0, 1), (0, 0)]  # listen: left, left, right, left
    for t, (a, o) in enumerate(history):
        b, info = update(jax.random.key(t + 1), b, jnp.int32(a), jnp.int32(o))
        exact = belief.update(m, exact, jnp.int32(a), jnp.int32(o))[0]
        assert not bool(info.fallback)
        assert _prob_left(b) == pytest.approx(float(exact[0]), abs=0.015)


def test_log_likelihood_estimates_observation_probability():
    m = problems.tiger()
    b = particles.init(jax.random.key(0), m, 5000)
    _, info = particles.update(jax.random.key(1), m, b, jnp.int32(0), jnp.int32(0))
    assert float(jnp.exp(info.log_likelihood)) == pytest.approx(0.5, abs=0.02)


def test_fallback_when_every_particle_is_inconsistent():
    # observation = state exactly; every particle in state 0 but we observe 1
    m = from_dense(np.stack([np.eye(2)]), np.stack([np.eye(2)]), np.zeros((1, 2)), np.array([1.0, 0.0]), 0.9)
    b = particles.init(jax.random.key(0), m, 16)
    b2, info = jax.jit(lambda b: particles.update(jax.random.key(1), m, b, jnp.int32(0), jnp.int32(1)))(b)
    assert bool(info.fallback)
    assert float(info.log_likelihood) == -np.inf
    w = particles.normalized_weights(b2)
    assert bool(jnp.all(jnp.isfinite(w))) and float(jnp.sum(w)) == pytest.approx(1.0)
    np.testing.assert_array_equal(np.asarray(b2.states), 0)  # the predicted particles, kept


def test_systematic_resampling_preserves_the_weights():
    states = jnp.arange(4, dtype=jnp.int32)
    b = particles.ParticleBelief(jnp.repeat(states, 250), jnp.log(jnp.repeat(jnp.array([0.1, 0.2, 0.3, 0.4]), 250)))
    r = particles.resample(jax.random.key(0), b)
    counts = np.bincount(np.asarray(r.states), minlength=4) / 1000
    np.testing.assert_allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.002)
    assert float(particles.effective_sample_size(r)) == pytest.approx(1000)


def test_update_vmaps_over_beliefs():
    m = problems.tiger()
    bs = jax.vmap(lambda k: particles.init(k, m, 64))(jax.random.split(jax.random.key(0), 5))
    out, info = jax.vmap(lambda k, b: particles.update(k, m, b, jnp.int32(0), jnp.int32(1)))(
        jax.random.split(jax.random.key(1), 5), bs)
    assert out.states.shape == (5, 64) and info.fallback.shape == (5,)
