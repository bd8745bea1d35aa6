"""The fixed-belief-set solver: one compiled call for a batch of models, each the same as
solved alone, bounds that bracket the exact optimum, forward-mode gradients, user errors."""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exact_pomdp
from jaxpomdp import problems
from jaxpomdp.solvers import batched

DISCOUNTS = np.linspace(0.85, 0.95, 8)
ACCURACIES = np.linspace(0.6, 0.95, 8)
NUM_BELIEFS = 16
ITERATIONS = 250


def tiger_variant(base, discount, accuracy):
    """Tiger with another discount and listening accuracy (traceable in both)."""
    acc = jnp.asarray(accuracy, base.obs_prob.dtype)
    listen = jnp.stack([jnp.stack([acc, 1 - acc]), jnp.stack([1 - acc, acc])])
    return base.replace(obs_prob=base.obs_prob.at[0].set(listen),
                        discount=jnp.asarray(discount, base.discount.dtype))


def close(a, b, rel=2e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.all(np.abs(a - b) <= rel * (1 + np.abs(b)))


@functools.lru_cache(maxsize=None)
def _variants():
    base = problems.tiger()
    models = [tiger_variant(base, float(g), float(p)) for g in DISCOUNTS for p in ACCURACIES]
    beliefs = np.stack([batched.reachable_beliefs(m, NUM_BELIEFS) for m in models])
    return models, beliefs


@functools.lru_cache(maxsize=None)
def _batched_solution():
    models, beliefs = _variants()
    traces = []

    def solve(model, b):
        traces.append(1)  # runs once per trace, never per model
        return batched.solve_fixed(model, b, ITERATIONS)

    fn = jax.jit(jax.vmap(solve))
    sol = jax.block_until_ready(fn(batched.stack_models(models), jnp.asarray(beliefs)))
    return sol, len(traces)


def test_64_models_are_solved_in_one_compiled_call_each_as_solved_alone():
    models, beliefs = _variants()
    sol, traces = _batched_solution()
    assert len(models) == 64 and traces == 1
    assert sol.lower.shape == (64,) and sol.alphas.shape == (64, 3 + NUM_BELIEFS + 1, 2)
    alone = jax.jit(lambda m, b: batched.solve_fixed(m, b, ITERATIONS))
    for i, (m, b) in enumerate(zip(models, beliefs)):
        one = alone(m, jnp.asarray(b))
        assert close(sol.lower[i], one.lower) and close(sol.upper[i], one.upper), i
        assert close(sol.lower_values[i], one.lower_values) and close(sol.upper_values[i], one.upper_values), i
        assert close(sol.alphas[i], one.alphas), i
    # model_at takes a model back out of the stack
    back = batched.model_at(batched.stack_models(models), 9)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(models[9])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_batched_bounds_are_ordered_and_monotone():
    sol, _ = _batched_solution()
    lower, upper = np.asarray(sol.lower), np.asarray(sol.upper)
    scale = 1e-5 * (1 + np.abs(upper))
    assert np.all(lower <= upper + scale)
    assert np.all(np.asarray(sol.lower_values) <= np.asarray(sol.upper_values) + 1e-5 * (1 + np.abs(sol.upper_values)))
    hist = np.asarray(sol.history)  # [64, T + 1, 2]
    assert hist.shape == (64, ITERATIONS + 1, 2)
    assert np.all(np.diff(hist[:, :, 0], axis=1) >= -1e-6 * (1 + np.abs(hist[:, 1:, 0])))
    assert np.all(np.diff(hist[:, :, 1], axis=1) <= 1e-6 * (1 + np.abs(hist[:, 1:, 1])))
    # the iterations did something: every model's lower bound rose from the blind one
    assert np.all(hist[:, -1, 0] > hist[:, 0, 0] + 0.1)


@pytest.mark.parametrize("discount, accuracy", [(0.95, 0.85), (0.85, 0.6), (0.9, 0.8)])
def test_batched_bounds_bracket_the_exact_optimum(discount, accuracy):
    models, _ = _variants()
    sol, _ = _batched_solution()
    i = int(np.argmin(np.abs(DISCOUNTS - discount))) * len(ACCURACIES) + int(np.argmin(np.abs(ACCURACIES - accuracy)))
    if (discount, accuracy) == (0.95, 0.85):  # Tiger itself: the reference shared with the other tests
        assert np.allclose(models[i].obs_prob, problems.tiger().obs_prob)
        assert float(models[i].discount) == pytest.approx(0.95)
        ref = exact_pomdp.exact_reference("tiger")
        assert ref.lower == pytest.approx(19.3714, abs=1e-3)
    else:
        ref = exact_pomdp.exact_value_bounds(models[i], tol=1e-3, time_limit=30.0)
    lower, upper = float(sol.lower[i]), float(sol.upper[i])
    pad = 1e-5 * (1 + abs(ref.upper))
    assert lower <= ref.upper + pad and upper >= ref.lower - pad  # both certified: they must overlap
    # and close: within 0.01 of V* after enough iterations on the reachable beliefs
    assert lower >= ref.lower - 0.01 and upper <= ref.upper + 0.01, (lower, upper, ref.lower, ref.upper)


def test_grid_points_give_valid_but_loose_upper_bounds_and_upper_false_skips_it():
    tiger = problems.tiger()
    ref = exact_pomdp.exact_reference("tiger")
    grid = batched.simplex_grid(2, 16)
    sol = batched.solve_fixed(tiger, grid, 100)
    assert float(sol.lower) <= ref.upper and float(sol.upper) >= ref.lower
    assert sol.points.shape == (18, 2) and np.allclose(sol.points[0], tiger.initial_belief)
    lower_only = batched.solve_fixed(tiger, grid, 100, upper=False)
    assert float(lower_only.lower) == pytest.approx(float(sol.lower), rel=1e-6)
    assert np.isinf(float(lower_only.upper))


def test_forward_mode_gradient_matches_finite_differences():
    base = problems.tiger()
    beliefs = batched.reachable_beliefs(base, NUM_BELIEFS)

    def value(accuracy):
        return batched.solve_fixed(tiger_variant(base, 0.95, accuracy), beliefs, 200).lower

    g = float(jax.jit(jax.jacfwd(value))(jnp.float32(0.85)))
    h = 1e-2
    fd = float(value(jnp.float32(0.85 + h)) - value(jnp.float32(0.85 - h))) / (2 * h)
    assert g > 0  # a better sensor is worth more
    assert g == pytest.approx(fd, rel=2e-2)


def test_simplex_grid_and_reachable_beliefs():
    g = batched.simplex_grid(3, 4)
    assert g.shape == (15, 3) and np.allclose(g.sum(1), 1) and len({tuple(r) for r in g}) == 15
    assert sorted(batched.simplex_grid(2, 4)[:, 0].tolist()) == [0, 0.25, 0.5, 0.75, 1]
    tiger = problems.tiger()
    b = batched.reachable_beliefs(tiger, 4)
    np.testing.assert_allclose(b[:2, 0], [0.85, 0.15], rtol=1e-6)  # one listen, either way
    # blind models reach nothing new: padding with b0 keeps the shape
    blind = tiger.replace(obs_prob=jnp.full_like(tiger.obs_prob, 0.5))
    assert np.allclose(batched.reachable_beliefs(blind, 5), 0.5)
    with pytest.raises(ValueError, match="num_beliefs"):
        batched.reachable_beliefs(tiger, 0)
    with pytest.raises(ValueError, match="resolution"):
        batched.simplex_grid(2, 0)


def test_user_errors():
    tiger = problems.tiger()
    with pytest.raises(ValueError, match="discount"):
        batched.solve_fixed(problems.tiger(1.0), batched.simplex_grid(2, 2), 3)
    with pytest.raises(ValueError, match="states"):
        batched.solve_fixed(tiger, np.ones((3, 4)) / 4, 3)
    with pytest.raises(ValueError, match="num_iterations"):
        batched.solve_fixed(tiger, batched.simplex_grid(2, 2), -1)
    with pytest.raises(ValueError, match="state names"):
        batched.stack_models([tiger, problems.get("three-state")])
    with pytest.raises(ValueError, match="reward has shape"):
        batched.stack_models([tiger, tiger.replace(reward=jnp.zeros((3, 3)))])
    with pytest.raises(ValueError, match="at least one"):
        batched.stack_models([])


def test_docstring_examples():
    assert doctest.testmod(batched).failed == 0
