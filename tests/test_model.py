"""TabularPOMDP: canonical form, validation messages, pytree behaviour, sampling."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpomdp import InvalidModelError, TabularPOMDP, dense_transitions, from_dense, problems, validate


def random_dense(rng, A=3, S=5, O=4, max_successors=3):
    """A random POMDP as dense float64 NumPy arrays (T, Z, R, b0), with sparse rows.

    Each transition row has 1..max_successors positive entries; some observation
    probabilities are exactly zero.
    """
    T = np.zeros((A, S, S))
    for a in range(A):
        for s in range(S):
            k = rng.integers(1, max_successors + 1)
            T[a, s, rng.choice(S, k, replace=False)] = rng.dirichlet(np.ones(k))
    Z = rng.dirichlet(np.ones(O), size=(A, S)) * (rng.random((A, S, O)) < 0.7)
    Z[..., 0] += Z.sum(-1) == 0
    Z /= Z.sum(-1, keepdims=True)
    R = rng.normal(size=(A, S)) * 3
    b0 = rng.dirichlet(np.ones(S))
    return T, Z, R, b0


def random_model(rng, discount=0.9, **sizes):
    """``(model, (T, Z, R, b0))``: a random sparse TabularPOMDP and its dense arrays."""
    dense = random_dense(rng, **sizes)
    return from_dense(*dense, discount), dense


def dense_arrays(m):
    """``(T, Z, R, b0, gamma)`` of a model as float64 NumPy arrays (T scattered with NumPy)."""
    ns, prob = np.asarray(m.next_state), np.asarray(m.next_prob, float)
    A, S, _ = ns.shape
    T = np.zeros((A, S, S))
    np.add.at(T, (np.arange(A)[:, None, None], np.arange(S)[None, :, None], ns), prob)
    return (T, np.asarray(m.obs_prob, float), np.asarray(m.reward, float),
            np.asarray(m.initial_belief, float), float(m.discount))


def stack(models):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *models)


# ------------------------------------------------------------ canonical form
def test_create_sorts_merges_drops_zeros_and_pads_with_state_zero():
    next_state = np.array([[[2, 0, 1, 1], [3, 3, 3, 3], [0, 1, 2, 3], [1, 2, 3, 0]]])
    next_prob = np.array([[[0.3, 0.0, 0.7, 0.0], [0.5, 0, 0.25, 0.25], [0, 0, 0.25, 0.75], [0, 0, 0, 1.0]]])
    m = TabularPOMDP.create(next_state, next_prob, np.ones((1, 4, 1)), np.zeros((1, 4)),
                            np.full(4, 0.25), 0.9)
    np.testing.assert_array_equal(m.next_state, [[[1, 2], [3, 0], [2, 3], [0, 0]]])
    np.testing.assert_allclose(m.next_prob, [[[0.7, 0.3], [1.0, 0.0], [0.25, 0.75], [1.0, 0.0]]])
    assert m.next_state.dtype == jnp.int32 and m.num_successors == 2
    validate(m)
    # an invalid (negative) probability is kept, so that validate can name it
    bad = from_dense(np.array([[[0.5, -0.25], [0.0, 1.0]]]), np.ones((1, 2, 1)), np.zeros((1, 2)), [1.0, 0.0], 0.9)
    with pytest.raises(InvalidModelError, match=r"next_prob\[action='0', state='0', slot 1\] = .*-0\.25"):
        validate(bad)


def test_from_dense_and_dense_transitions_round_trip():
    rng = np.random.default_rng(0)
    T, Z, R, b0 = random_dense(rng, A=3, S=7, O=2, max_successors=4)
    m = from_dense(T, Z, R, b0, 0.9)
    assert m.num_successors == int((T > 0).sum(-1).max())
    positive = np.asarray(m.next_prob) > 0
    assert np.all(positive[..., :-1] >= positive[..., 1:])  # padding last
    assert np.all((np.diff(m.next_state, axis=-1) > 0) | ~positive[..., 1:])  # successors sorted
    assert np.all(m.next_state[m.next_prob == 0] == 0)
    np.testing.assert_allclose(dense_transitions(m), T, atol=1e-7)
    np.testing.assert_allclose(dense_arrays(m)[0], T, atol=1e-7)
    # a second description of the same model (successors shuffled) is identical
    order = rng.permuted(np.broadcast_to(np.arange(7), T.shape), axis=-1)
    m2 = TabularPOMDP.create(order, np.take_along_axis(T, order, -1), Z, R, b0, 0.9)
    chex.assert_trees_all_equal(m, m2)


def test_builtins_are_valid():
    for m in (problems.tiger(), problems.three_state()):
        assert validate(m) is m


def _tiger_with(**changes):
    m = problems.tiger()
    arrays = {k: np.array(getattr(m, k)) for k in changes}
    for k, fn in changes.items():
        fn(arrays[k])
    return m.replace(**{k: jnp.asarray(v) for k, v in arrays.items()})


def _set(index, value):
    def fn(x):
        x[index] = value
    return fn


@pytest.mark.parametrize("changes, message", [
    (dict(next_prob=_set((0, 1, 0), 0.75)),
     "next_prob[action='listen', state='tiger-right'] sums to 0.75 "),
    (dict(obs_prob=_set((1, 0, 1), 0.25)),
     "obs_prob[action='open-left', state='tiger-left'] sums to 0.75 "),
    (dict(obs_prob=_set((0, 1), [-0.25, 1.25])),
     "obs_prob[action='listen', state='tiger-right', observation='obs-left'] = "),
    (dict(next_prob=_set((2, 0), [1.5, -0.5])),
     "next_prob[action='open-right', state='tiger-left', slot 0] = "),
    (dict(reward=_set((2, 1), np.nan)),
     "reward[action='open-right', state='tiger-right'] = "),
    (dict(next_state=_set((1, 0, 1), 2)),
     "next_state[action='open-left', state='tiger-left', slot 1] = 2 is not a state index in [0, 2)"),
    (dict(next_state=_set((0, 1, 0), -1)),
     "next_state[action='listen', state='tiger-right', slot 0] = -1"),
    (dict(discount=lambda x: x.fill(1.5)), "discount = 1.5"),
    (dict(discount=lambda x: x.fill(np.nan)), "discount = nan"),
    (dict(initial_belief=_set(0, 0.25)), "initial_belief sums to 0.75"),
])
def test_validate_names_the_bad_entry(changes, message):
    with pytest.raises(InvalidModelError, match=re.escape(message)):
        validate(_tiger_with(**changes))


def test_validate_without_names_uses_indices():
    m = from_dense(np.eye(2)[None], np.full((1, 2, 2), 0.5), [[0.0, 1.0]], [0.5, 0.5], 0.9)
    with pytest.raises(InvalidModelError, match=re.escape("obs_prob[action='0', state='1'] sums to 1.125 ")):
        validate(m.replace(obs_prob=m.obs_prob.at[0, 1, 1].set(0.625)))


def _one_action(ns, obs=None, A=1):
    ns = np.asarray(ns)
    return dict(next_state=ns, next_prob=np.ones(ns.shape), obs_prob=np.ones(ns.shape[:2] + (1,)) if obs is None
                else obs, reward=np.zeros(ns.shape[:2]), initial_belief=np.full(ns.shape[1], 1 / max(ns.shape[1], 1)),
                discount=0.9)


@pytest.mark.parametrize("arrays, message", [
    # a float index would be truncated to a state other than the one meant
    (_one_action([[[0], [1.5]]]), "next_state[0, 1, 0] = 1.5 is not an integer state index"),
    (_one_action([[[0], [np.nan]]]), "next_state[0, 1, 0] = nan is not an integer state index"),
    (_one_action([[["a"], ["b"]]]), "next_state must hold integer state indices; got dtype <U1"),
    (_one_action(np.zeros((0, 2, 1), int)), "at least one action and one state; got A=0, S=2"),
    (_one_action(np.zeros((1, 0, 1), int)), "at least one action and one state; got A=1, S=0"),
    (_one_action(np.zeros((1, 2, 1), int), obs=np.ones((1, 2, 0))), "at least one observation; obs_prob has O=0"),
])
def test_create_refuses_non_integer_successors_and_empty_models(arrays, message):
    with pytest.raises(InvalidModelError, match=re.escape(message)):
        TabularPOMDP.create(**arrays)


def test_create_accepts_integral_float_successors():
    m = TabularPOMDP.create(**_one_action([[[0.0], [1.0]]]))
    np.testing.assert_array_equal(m.next_state[0, :, 0], [0, 1])


def test_validate_refuses_a_model_without_actions():
    m = problems.tiger()
    empty = m.replace(next_state=m.next_state[:0], next_prob=m.next_prob[:0], obs_prob=m.obs_prob[:0],
                      reward=m.reward[:0])
    with pytest.raises(InvalidModelError, match="at least one action, state and observation; got A=0, S=2, O=2"):
        validate(empty)


# ------------------------------------------------------------------ pytree
def test_pytree_flatten_unflatten_keeps_leaves_and_names():
    m = problems.three_state()
    leaves, treedef = jax.tree.flatten(m)
    assert len(leaves) == 8  # six arrays, the state and the observation features
    back = jax.tree.unflatten(treedef, leaves)
    chex.assert_trees_all_equal(back, m)
    assert back.state_names == ("A", "B", "C") and back.action_names == ("a1", "a2")
    doubled = jax.tree.map(lambda x: x * 2, m)
    np.testing.assert_allclose(doubled.reward, 2 * np.asarray(m.reward))
    assert doubled.observation_names == m.observation_names


def test_jit_and_vmap_over_a_stacked_batch_of_models():
    discounts = [0.5, 0.9, 0.95]
    models = [problems.tiger(g) for g in discounts]
    batch = stack(models)
    assert batch.discount.shape == (3,) and batch.num_actions == 3

    @jax.jit
    @chex.assert_max_traces(n=1)
    def summary(key, m):
        state, obs, reward, done = m.step(key, jnp.int32(1), jnp.int32(0))
        return jnp.max(m.reward) / (1 - m.discount), state, obs, reward, done

    key = jax.random.key(3)
    out = jax.vmap(summary, in_axes=(None, 0))(key, batch)
    np.testing.assert_allclose(out[0], [10 / (1 - g) for g in discounts], rtol=1e-5)
    for i, m in enumerate(models):  # unbatched calls: same shapes, no retrace
        single = summary(key, m)
        for x, y in zip(single, out):
            np.testing.assert_allclose(x, y[i], rtol=1e-6)


# ---------------------------------------------------------------- sampling
def _within_4_sigma(counts, probs, n):
    sigma = np.sqrt(n * probs * (1 - probs))
    np.testing.assert_array_less(np.abs(counts - n * probs), 4 * sigma + 1)


def test_step_and_initial_state_sample_from_t_z_and_b0():
    rng = np.random.default_rng(1)
    m, (T, Z, R, b0) = random_model(rng, A=2, S=4, O=3, max_successors=3)
    A, S, O = Z.shape
    n = 4000
    keys = jax.random.split(jax.random.key(0), n)
    a, s = np.meshgrid(np.arange(A), np.arange(S), indexing="ij")

    @jax.jit
    def sample(keys):
        per_pair = jax.vmap(jax.vmap(m.step, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))
        return jax.vmap(per_pair, in_axes=(0, None, None))(keys, jnp.asarray(s), jnp.asarray(a))

    nxt, obs, rew, done = map(np.asarray, sample(keys))  # each [n, A, S]
    assert nxt.dtype == np.int32 and obs.dtype == np.int32 and not done.any()
    np.testing.assert_allclose(rew, np.broadcast_to(R, rew.shape), rtol=1e-6)
    for i in range(A):
        for j in range(S):
            joint = np.zeros((S, O))
            np.add.at(joint, (nxt[:, i, j], obs[:, i, j]), 1)
            _within_4_sigma(joint, T[i, j][:, None] * Z[i], n)  # P(s', o) = T(s'|s,a) Z(o|a,s')
    s0 = np.asarray(jax.vmap(m.initial_state)(keys))
    _within_4_sigma(np.bincount(s0, minlength=S), b0, n)


def test_features_one_hot_or_state_features():
    tiger = problems.tiger()
    np.testing.assert_array_equal(jax.vmap(tiger.features)(jnp.arange(2)), np.eye(2))
    assert tiger.features(jnp.int32(0)).dtype == tiger.reward.dtype
    three = problems.three_state()
    np.testing.assert_allclose(jax.vmap(three.features)(jnp.arange(3)), problems.THREE_STATE_FEATURES, rtol=1e-6)
