"""Exact belief updates against brute force and dense NumPy references."""

import doctest
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpomdp import belief, from_dense, problems
from test_model import dense_arrays, random_model, stack

ATOL = 1e-10 if jax.config.jax_enable_x64 else 2e-6
update = jax.jit(belief.update)


def _filter(model, b, actions, observations):
    """Repeated ``belief.update`` along one history: beliefs [T, S], cumulative log-probs [T]."""
    def step(b, ao):
        b, log_p = belief.update(model, b, *ao)
        return b, (b, log_p)

    _, (beliefs, log_probs) = jax.lax.scan(step, b, (actions, observations))
    return beliefs, jnp.cumsum(log_probs)


def _brute_force(T, Z, b0, actions, observations):
    """Posterior over s_t and P(o_1..o_t | a_1..a_t) by summing over every state sequence."""
    S = len(b0)
    posterior, total = np.zeros(S), 0.0
    for path in itertools.product(range(S), repeat=len(actions) + 1):
        p = b0[path[0]]
        for t, (a, o) in enumerate(zip(actions, observations)):
            p *= T[a, path[t], path[t + 1]] * Z[a, path[t + 1], o]
        posterior[path[-1]] += p
        total += p
    return posterior / total, total


def test_tiger_every_history_to_depth_4_matches_brute_force():
    m = problems.tiger()
    T, Z, _, b0, _ = dense_arrays(m)
    depth = 4
    steps = list(itertools.product(range(3), range(2)))  # (action, observation)
    histories = np.array(list(itertools.product(steps, repeat=depth)))  # [6^4, depth, 2]
    run = jax.jit(jax.vmap(_filter, in_axes=(None, None, 0, 0)))
    beliefs, log_liks = map(np.asarray, run(m, m.initial_belief, jnp.asarray(histories[..., 0]),
                                             jnp.asarray(histories[..., 1])))
    checked = set()
    for h, history in enumerate(histories):
        for t in range(1, depth + 1):
            prefix = tuple(map(tuple, history[:t]))
            if prefix in checked:
                continue
            checked.add(prefix)
            posterior, likelihood = _brute_force(T, Z, b0, history[:t, 0], history[:t, 1])
            np.testing.assert_allclose(beliefs[h, t - 1], posterior, atol=ATOL, err_msg=str(prefix))
            np.testing.assert_allclose(log_liks[h, t - 1], np.log(likelihood), atol=ATOL, err_msg=str(prefix))
    assert len(checked) == sum(6 ** t for t in range(1, depth + 1))


def _dense_update(T, Z, b, a, o):
    joint = (b @ T[a]) * Z[a, :, o]
    return joint / joint.sum(), np.log(joint.sum())


def test_random_sparse_model_matches_dense_numpy():
    rng = np.random.default_rng(0)
    m, (T, Z, R, b0) = random_model(rng, A=3, S=8, O=4, max_successors=3)
    A, S, O = Z.shape
    beliefs = rng.dirichlet(np.ones(S), size=5) * (rng.random((5, S)) < 0.8)
    beliefs = np.vstack([beliefs / beliefs.sum(1, keepdims=True), np.eye(S)])
    bs, as_, os_ = (x.ravel() for x in np.meshgrid(np.arange(len(beliefs)), np.arange(A), np.arange(O),
                                                   indexing="ij"))

    @jax.jit
    @jax.vmap
    def batched(b, a, o):
        return belief.update(m, b, a, o), belief.predict(m, b, a), belief.observation_probs(m, b, a)

    (new_b, log_p), pred, obs_p = batched(jnp.asarray(beliefs[bs], m.reward.dtype), as_, os_)
    seen_impossible = False
    for i, (b, a, o) in enumerate(zip(beliefs[bs], as_, os_)):
        np.testing.assert_allclose(pred[i], b @ T[a], atol=ATOL)
        np.testing.assert_allclose(obs_p[i], b @ T[a] @ Z[a], atol=ATOL)
        if (b @ T[a] @ Z[a])[o] > 0:
            expected_b, expected_log_p = _dense_update(T, Z, b, a, o)
            np.testing.assert_allclose(new_b[i], expected_b, atol=ATOL)
            np.testing.assert_allclose(log_p[i], expected_log_p, rtol=1e-5, atol=ATOL)
        else:  # the documented convention for an impossible observation
            seen_impossible = True
            np.testing.assert_allclose(new_b[i], b @ T[a], atol=ATOL)
            assert log_p[i] == -np.inf
    assert seen_impossible  # the random model has some zero observation probabilities


def test_vmap_over_stacked_models_matches_one_at_a_time():
    rng = np.random.default_rng(2)
    A, S, O = 2, 4, 3
    models = [from_dense(rng.dirichlet(np.ones(S), (A, S)), rng.dirichlet(np.ones(O), (A, S)),
                         np.zeros((A, S)), np.full(S, 1 / S), 0.9) for _ in range(3)]
    b = models[0].initial_belief
    out_b, out_p = jax.jit(jax.vmap(belief.update, in_axes=(0, None, None, None)))(stack(models), b, 1, 2)
    for i, m in enumerate(models):
        single_b, single_p = update(m, b, jnp.int32(1), jnp.int32(2))
        np.testing.assert_allclose(out_b[i], single_b, atol=ATOL)
        np.testing.assert_allclose(out_p[i], single_p, atol=ATOL)


def test_zero_probability_observation_is_ignored_without_nan():
    m = problems.three_state()  # observations reveal the state exactly
    b = jnp.asarray([1.0, 0.0, 0.0], m.reward.dtype)  # from A, a1 leads to B or C, never A
    new_b, log_p = update(m, b, jnp.int32(0), jnp.int32(0))
    np.testing.assert_allclose(new_b, [0.0, 0.8, 0.2], atol=ATOL)
    assert log_p == -jnp.inf

    def loss(b, z):
        new_b, log_p = belief.update(m.replace(obs_prob=z), b, jnp.int32(0), jnp.int32(0))
        return jnp.sum(new_b ** 2) + jnp.where(jnp.isfinite(log_p), log_p, 0.0)

    for grad in jax.jit(jax.grad(loss, argnums=(0, 1)))(b, m.obs_prob):
        assert np.all(np.isfinite(grad))
    grad_log_p = jax.jit(jax.grad(lambda b, a, o: belief.update(m, b, a, o)[1]))
    # the gradient of log_prob itself is finite (zero) where log_prob = -inf
    np.testing.assert_array_equal(grad_log_p(b, jnp.int32(0), jnp.int32(0)), np.zeros(3))
    # and a possible observation differentiates normally: log P(o=C | b, a2) = log(0.8 sum(b))
    np.testing.assert_allclose(grad_log_p(b, jnp.int32(1), jnp.int32(2)), np.ones(3), rtol=1e-5)


def test_float64_under_enable_x64():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        m, (T, Z, _, b0) = random_model(rng, A=2, S=5, O=3)
        assert m.reward.dtype == jnp.float64
        o = int(np.argmax(b0 @ T[1] @ Z[1]))
        new_b, log_p = jax.jit(belief.update)(m, m.initial_belief, jnp.int32(1), jnp.int32(o))
        assert new_b.dtype == jnp.float64 and log_p.dtype == jnp.float64
        expected_b, expected_log_p = _dense_update(T, Z, b0, 1, o)
        np.testing.assert_allclose(new_b, expected_b, atol=1e-13)
        np.testing.assert_allclose(log_p, expected_log_p, atol=1e-13)


def test_docstring_examples():
    assert doctest.testmod(belief).failed == 0


@pytest.mark.parametrize("b", [[1.0], [0.5, 0.5, 0.0], [[0.25, 0.25], [0.25, 0.25]]])
def test_a_belief_of_the_wrong_shape_is_refused(b):
    """A belief of length 1 for Tiger's 2 states was broadcast and 'updated' to [0.85, 0.15]."""
    m = problems.tiger()
    with pytest.raises(ValueError, match=r"expected a belief of shape \(2,\)"):
        belief.update(m, jnp.asarray(b), 0, 0)
