"""Blind and QMDP bounds against linear solves and a plain NumPy value iteration."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpomdp import bounds, policy, problems
from test_model import dense_arrays, random_model, stack

# accuracy of the bounds, relative to max|R| / (1 - gamma) (float32 loses ~ K u / (1 - gamma))
ACC = 1e-9 if jax.config.jax_enable_x64 else 5e-5
REF = 1e-12  # accuracy of the float64 references, same units
blind_alphas, qmdp = bounds.blind_alphas, bounds.qmdp


def _models():
    rng = np.random.default_rng(0)
    return {
        "tiger": problems.tiger(),
        "three-state": problems.three_state(),
        "random-0.9": random_model(rng, 0.9, A=3, S=6, O=2)[0],
        "random-0.99": random_model(rng, 0.99, A=2, S=9, O=3)[0],
    }


MODELS = _models()


def exact_blind(m):
    """``alpha_a = (I - gamma T_a)^-1 R_a`` by a linear solve."""
    T, _, R, _, gamma = dense_arrays(m)
    return np.stack([np.linalg.solve(np.eye(len(R[a])) - gamma * T[a], R[a]) for a in range(len(R))])


def numpy_qmdp(m):
    """Plain value iteration on the MDP until it has converged to ~1e-14 relative."""
    T, _, R, _, gamma = dense_arrays(m)
    q = np.zeros_like(R)
    while True:
        q_new = R + gamma * T @ q.max(0)
        if np.abs(q_new - q).max() <= 1e-14 * (1 - gamma) * _scale(m):
            return q_new
        q = q_new


def _scale(m):
    return float(np.abs(m.reward).max()) / (1 - float(m.discount))


@pytest.mark.parametrize("name", MODELS)
def test_blind_alphas_solve_the_linear_systems(name):
    m = MODELS[name]
    np.testing.assert_allclose(blind_alphas(m), exact_blind(m), rtol=0, atol=ACC * _scale(m) + bounds.DEFAULT_TOL)


@pytest.mark.parametrize("name", MODELS)
def test_qmdp_matches_numpy_value_iteration(name):
    m = MODELS[name]
    np.testing.assert_allclose(qmdp(m), numpy_qmdp(m), rtol=0, atol=ACC * _scale(m) + bounds.DEFAULT_TOL)


def test_bounds_at_beliefs_under_jit_and_vmap():
    m = MODELS["random-0.9"]
    alphas, q = np.asarray(blind_alphas(m)), np.asarray(qmdp(m))
    assert np.all(alphas <= q)  # alpha_a <= Q_a state by state
    beliefs = np.random.default_rng(1).dirichlet(np.ones(m.num_states), size=20).astype(alphas.dtype)
    both = jax.jit(jax.vmap(lambda b: (bounds.blind_lower_bound(m, b), bounds.qmdp_upper_bound(m, b))))
    (lower, lower_action), (upper, upper_action) = both(beliefs)
    np.testing.assert_allclose(lower, (beliefs @ alphas.T).max(1), rtol=1e-5)
    np.testing.assert_array_equal(lower_action, (beliefs @ alphas.T).argmax(1))
    np.testing.assert_allclose(upper, (beliefs @ q.T).max(1), rtol=1e-5)
    np.testing.assert_array_equal(upper_action, (beliefs @ q.T).argmax(1))
    assert np.all(lower <= upper)


@pytest.mark.parametrize("name", MODELS)
def test_every_iterate_is_a_bound_and_tolerance_is_honoured(name):
    m = MODELS[name]
    exact_lower, exact_upper = exact_blind(m), numpy_qmdp(m)
    slack = REF * _scale(m)
    iterates = [(np.asarray(blind_alphas(m, max_iter=n)), np.asarray(qmdp(m, max_iter=n)))
                for n in (1, 2, 5, 20, bounds.DEFAULT_MAX_ITER)]
    for lower, upper in iterates:  # certified bounds after any number of sweeps, even in float32
        assert np.all(lower <= exact_lower + slack) and np.all(upper >= exact_upper - slack)
        assert np.all(lower <= upper)
    for (lower, upper), (next_lower, next_upper) in zip(iterates, iterates[1:]):  # they tighten
        assert np.all(next_lower >= lower - ACC * _scale(m)) and np.all(next_upper <= upper + ACC * _scale(m))
    tol = 1e-2 * _scale(m)
    assert np.abs(blind_alphas(m, tol=tol, max_iter=10_000) - exact_lower).max() <= tol + ACC * _scale(m)
    assert np.abs(qmdp(m, tol=tol, max_iter=10_000) - exact_upper).max() <= tol + ACC * _scale(m)


def test_tiger_blind_value_is_always_listen():
    value, action = jax.jit(bounds.blind_lower_bound)(problems.tiger())
    np.testing.assert_allclose(value, -1 / (1 - 0.95), rtol=1e-5)
    assert action == 0
    value, action = bounds.qmdp_upper_bound(problems.tiger())
    np.testing.assert_allclose(value, 189.0, rtol=1e-5)  # listen, then open the tiger-free door
    p, alpha = policy.blind_policy(problems.tiger())
    assert int(p.action) == 0
    np.testing.assert_allclose(alpha, [-20.0, -20.0], rtol=1e-5)


def test_discount_zero_gives_the_rewards():
    m = problems.tiger(0.0)
    lower, upper = np.asarray(blind_alphas(m)), np.asarray(qmdp(m))
    assert np.all(lower <= m.reward) and np.all(m.reward <= upper)  # padded by the rounding allowance
    np.testing.assert_allclose(lower, m.reward, rtol=ACC)
    np.testing.assert_allclose(upper, m.reward, rtol=ACC)


@pytest.mark.parametrize("fn", [bounds.blind_alphas, bounds.qmdp, bounds.blind_lower_bound,
                                bounds.qmdp_upper_bound, policy.greedy_qmdp_policy])
def test_discount_one_raises_outside_jit(fn):
    with pytest.raises(ValueError, match="discount < 1"):
        fn(problems.tiger(1.0))


def test_vmap_over_models_with_different_discounts():
    discounts = [0.5, 0.9, 0.99]
    models = [problems.tiger(g) for g in discounts]
    lower = jax.jit(jax.vmap(bounds.blind_alphas))(stack(models))
    upper = jax.jit(jax.vmap(bounds.qmdp))(stack(models))
    for i, m in enumerate(models):
        np.testing.assert_allclose(lower[i], exact_blind(m), rtol=0, atol=ACC * _scale(m) + bounds.DEFAULT_TOL)
        np.testing.assert_allclose(upper[i], numpy_qmdp(m), rtol=0, atol=ACC * _scale(m) + bounds.DEFAULT_TOL)


def test_float64_reaches_tight_tolerance():
    with jax.enable_x64(True):
        m = problems.tiger(0.99)
        alphas, q = blind_alphas(m, tol=1e-9), qmdp(m, tol=1e-9)
        assert alphas.dtype == jnp.float64
        slack = 2e-10  # rounding, ~K ulp(4555) / (1 - gamma)
        np.testing.assert_allclose(alphas, exact_blind(m), rtol=0, atol=1e-9 + slack)
        np.testing.assert_allclose(q, numpy_qmdp(m), rtol=0, atol=1e-9 + slack)


@pytest.mark.parametrize("module", [bounds, policy])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0
