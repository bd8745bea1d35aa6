"""The generative RockSample against the exact tabular builder, state by state."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpomdp
from jaxpomdp import bounds, problems
from jaxpomdp.problems.rocksample import STANDARD_HALF_EFFICIENCY, STANDARD_LAYOUTS, random_layout, rocksample
from jaxpomdp.problems.rocksample_sim import (RockState, fully_observable_value, from_name,
                                              random_layout_unchecked, rocksample_sim)

FILE_4_4 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "problems", "RockSample_4_4.pomdp")


def _all_states(sim, S):
    return jax.vmap(sim.from_index)(jnp.arange(S, dtype=jnp.int32))


def _check_agrees(sim, m):
    S, A = m.num_states, m.num_actions
    states = _all_states(sim, S)
    np.testing.assert_array_equal(np.asarray(jax.vmap(sim.state_index)(states)), np.arange(S))

    @jax.jit
    def per_action(a):
        nxt, r = jax.vmap(lambda s: sim.transition(s, a))(states)
        z = jax.vmap(lambda s: sim.observation_probs(a, s))(nxt)
        return jax.vmap(sim.state_index)(nxt), r, z

    for a in range(A):
        ni, r, z = per_action(a)
        np.testing.assert_array_equal(np.asarray(ni), np.asarray(m.next_state[a, :, 0]), err_msg=f"action {a}")
        np.testing.assert_allclose(np.asarray(r), np.asarray(m.reward[a]), atol=1e-6)
        np.testing.assert_allclose(np.asarray(z), np.asarray(m.obs_prob[a])[np.asarray(ni)], atol=1e-6)


@pytest.mark.parametrize("n,k", [(4, 4), (5, 5), (5, 7), (3, 2)])
def test_generative_agrees_with_tabular_on_every_state_and_action(n, k):
    _check_agrees(rocksample_sim(n, k), rocksample(n, k))


def test_seeded_layout_agrees_with_tabular():
    _check_agrees(rocksample_sim(4, 3, seed=5), rocksample(4, 3, seed=5))


def test_4_4_is_the_file_model():
    path = FILE_4_4 if os.path.exists(FILE_4_4) else problems.data_file("rocksample_4_4")
    f = jaxpomdp.load_pomdp(path)
    m = rocksample(4, 4)
    assert m.state_names == f.state_names  # same order, so the generative check above covers the file
    _check_agrees(rocksample_sim(4, 4), f)


def test_layouts_and_sensor_match_the_tabular_choices():
    for (n, k), lay in STANDARD_LAYOUTS.items():
        sim = rocksample_sim(n, k)
        assert [tuple(r) for r in np.stack([sim.rock_x, sim.rock_y], 1).tolist()] == [tuple(r) for r in lay.rocks]
        assert (int(sim.start_x), int(sim.start_y)) == lay.start
        assert float(sim.half_efficiency) == pytest.approx(STANDARD_HALF_EFFICIENCY[(n, k)])
    sim = rocksample_sim(15, 15)
    assert [tuple(r) for r in np.stack([sim.rock_x, sim.rock_y], 1).tolist()] == list(random_layout(15, 15, 0).rocks)
    assert float(sim.half_efficiency) == 20.0
    # (20, 20) is past the tabular builder's size cap; the same draw is used
    lay = random_layout_unchecked(20, 20, 0)
    sim = rocksample_sim(20, 20)
    assert [tuple(r) for r in np.stack([sim.rock_x, sim.rock_y], 1).tolist()] == list(lay.rocks)
    assert sim.num_states == 20 * 20 * 2 ** 20 + 1
    assert from_name("rocksample:20,20:3").k == 20


def test_rocksample_20_20_steps_under_jit_and_vmap():
    sim = rocksample_sim(20, 20)
    keys = jax.random.split(jax.random.key(0), 64)
    s = jax.vmap(sim.initial_state)(keys)
    assert s.rocks.dtype == jnp.int32 and int(jnp.max(s.rocks)) < 2 ** 20
    step = jax.jit(jax.vmap(sim.step, in_axes=(0, 0, None)))
    s2, o, r, d = step(keys, s, jnp.int32(4 + 3))  # check rock 3
    assert o.dtype == jnp.int32 and bool(jnp.all((o == 0) | (o == 1)))
    assert bool(jnp.all(s2.rocks == s.rocks)) and not bool(jnp.any(d))
    f = jax.vmap(sim.features)(s2)
    assert f.shape == (64, sim.num_features)
    # west from x = 0 is illegal: -100 and terminal
    s3, _, r3, d3 = step(keys, s, jnp.int32(3))
    assert bool(jnp.all(d3)) and bool(jnp.all(r3 == -100))


def test_observation_sampling_follows_the_sensor():
    sim = rocksample_sim(7, 8)
    s = RockState(jnp.int32(0), jnp.int32(3), jnp.int32(0b10000000), jnp.bool_(False))  # rock 0 good
    keys = jax.random.split(jax.random.key(1), 20000)
    o = jax.vmap(lambda k: sim.step(k, s, jnp.int32(4))[1])(keys)
    p = float(sim.observation_probs(jnp.int32(4), s)[0])
    assert float(jnp.mean(o == 0)) == pytest.approx(p, abs=0.01)


@pytest.mark.parametrize("n,k", [(4, 4), (5, 5)])
def test_fully_observable_value_is_qmdp_at_b0(n, k):
    m = rocksample(n, k)
    q = np.asarray(jnp.max(bounds.qmdp(m), axis=0))
    fo = fully_observable_value(rocksample_sim(n, k))
    assert fo.exact
    assert fo.value == pytest.approx(float(q @ np.asarray(m.initial_belief)), abs=1e-3)


def test_upper_value_bounds_qmdp_and_is_exact_with_table():
    m = rocksample(5, 5)
    q = np.asarray(jnp.max(bounds.qmdp(m), axis=0))
    sim = rocksample_sim(5, 5)
    states = _all_states(sim, m.num_states)
    loose = np.asarray(jax.jit(jax.vmap(sim.upper_value))(states))
    assert np.all(loose >= q - 1e-3)
    exact = np.asarray(jax.jit(jax.vmap(sim.with_fully_observable_table().upper_value))(states))
    np.testing.assert_allclose(exact, q, atol=1e-3)


def test_invalid_sizes_raise():
    with pytest.raises(ValueError):
        rocksample_sim(4, 31)
    with pytest.raises(ValueError):
        rocksample_sim(2, 4)
