"""The fixed-belief-set solver: one compiled call for a batch of models, each the same as
solved alone, bounds that bracket the exact optimum, forward-mode gradients, user errors."""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exact_pomdp
import jaxpomdp
from jaxpomdp import bounds, problems
from jaxpomdp.solvers import batched

DISCOUNTS = np.linspace(0.85, 0.95, 8)
ACCURACIES = np.linspace(0.6, 0.95, 8)
NUM_BELIEFS = 16
ITERATIONS = 250


# the second set: all the numbers of a model vary (discount, observation and transition
# probabilities, rewards): 4 discounts x 4 accuracies x 2 listening costs x 2 chances that
# the tiger moves while we listen, 64 models
MIXED = [(g, p, c, m) for g in (0.86, 0.9, 0.93, 0.95) for p in (0.65, 0.75, 0.85, 0.95)
         for c in (0.5, 2.0) for m in (0.02, 0.1)]


def tiger_variant(base, discount, accuracy, listen_cost=None, move=None):
    """Tiger with another discount and listening accuracy (traceable in both) and, if
    given, another cost of listening (a reward) and a chance ``move`` that the tiger
    changes sides while we listen (a transition probability)."""
    dtype = base.obs_prob.dtype
    acc = jnp.asarray(accuracy, dtype)
    listen = jnp.stack([jnp.stack([acc, 1 - acc]), jnp.stack([1 - acc, acc])])
    model = base.replace(obs_prob=base.obs_prob.at[0].set(listen), discount=jnp.asarray(discount, dtype))
    if listen_cost is not None:
        model = model.replace(reward=model.reward.at[0].set(-jnp.asarray(listen_cost, dtype)))
    if move is not None:  # listen: stay with 1 - move, change sides with move (K = 2 already)
        m = jnp.asarray(move, dtype)
        model = model.replace(next_state=model.next_state.at[0].set(jnp.array([[0, 1], [1, 0]], jnp.int32)),
                              next_prob=model.next_prob.at[0].set(jnp.stack([jnp.stack([1 - m, m])] * 2)))
    return model


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
def _mixed_variants():
    base = problems.tiger()
    models = [tiger_variant(base, *params) for params in MIXED]
    beliefs = np.stack([batched.reachable_beliefs(m, NUM_BELIEFS) for m in models])
    return models, beliefs


@functools.lru_cache(maxsize=None)
def _alone():
    """The single-model solve, compiled once for every test."""
    return jax.jit(lambda m, b: batched.solve_fixed(m, b, ITERATIONS))


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
    alone = _alone()
    for i, (m, b) in enumerate(zip(models, beliefs)):
        one = alone(m, jnp.asarray(b))
        assert close(sol.lower[i], one.lower) and close(sol.upper[i], one.upper), i
        assert close(sol.lower_values[i], one.lower_values) and close(sol.upper_values[i], one.upper_values), i
        assert close(sol.alphas[i], one.alphas), i
    # model_at takes a model back out of the stack
    back = batched.model_at(batched.stack_models(models), 9)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(models[9])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_models_varying_in_every_number_are_solved_in_one_call_each_as_solved_alone():
    models, beliefs = _mixed_variants()
    stacked = batched.stack_models(models)
    # every kind of number differs somewhere in the batch
    for field in ("discount", "reward", "next_prob", "obs_prob"):
        x = np.asarray(getattr(stacked, field))
        assert np.ptp(x, axis=0).max() > 0.01, field
    jaxpomdp.validate(models[-1])
    sol = jax.block_until_ready(batched.solve_fixed_batch(stacked, beliefs, ITERATIONS))
    assert sol.lower.shape == (64,) and sol.history.shape == (64, ITERATIONS + 1, 2)
    alone = _alone()
    for i, (m, b) in enumerate(zip(models, beliefs)):
        one = alone(m, jnp.asarray(b))
        assert close(sol.lower[i], one.lower) and close(sol.upper[i], one.upper), i
        assert close(sol.lower_values[i], one.lower_values) and close(sol.upper_values[i], one.upper_values), i
        assert close(sol.alphas[i], one.alphas), i
    lower, upper = np.asarray(sol.lower), np.asarray(sol.upper)
    assert np.all(lower <= upper + 1e-5 * (1 + np.abs(upper)))
    # the iterations closed most of the initial (blind, FIB) gap of every model; a tiger that
    # moves reaches beliefs beyond the 16 points, so its upper bound stays looser
    hist = np.asarray(sol.history)
    assert np.all(upper - lower <= 0.25 * (hist[:, 0, 1] - hist[:, 0, 0]))
    # the numbers matter: a costlier listen or a moving tiger is worth less, all else equal
    by = dict(zip(MIXED, lower))
    assert all(by[(g, p, 2.0, m)] < by[(g, p, 0.5, m)] - 1 for (g, p, c, m) in MIXED if c == 0.5)
    assert all(by[(g, p, c, 0.1)] < by[(g, p, c, 0.02)] for (g, p, c, m) in MIXED if m == 0.02)
    # a shared belief set works too (in_axes None for the beliefs)
    grid = batched.simplex_grid(2, 8)
    shared = batched.solve_fixed_batch(stacked, grid, 20, upper=False)
    assert close(shared.lower[5], batched.solve_fixed(models[5], grid, 20, upper=False).lower)


def test_mixed_variant_bounds_bracket_the_exact_optimum():
    models, _ = _mixed_variants()
    stacked = batched.stack_models(models)
    sol = batched.solve_fixed_batch(stacked, _mixed_variants()[1], ITERATIONS)
    # moving tigers (the reference solves these three in about a second)
    for params in [(0.9, 0.85, 2.0, 0.1), (0.9, 0.95, 2.0, 0.1), (0.95, 0.95, 0.5, 0.1)]:
        i = MIXED.index(params)
        ref = exact_pomdp.exact_value_bounds(models[i], tol=1e-3, time_limit=30.0)
        assert ref.upper - ref.lower < 1e-3
        lower, upper = float(sol.lower[i]), float(sol.upper[i])
        pad = 1e-5 * (1 + abs(ref.upper))
        assert lower <= ref.upper + pad and upper >= ref.lower - pad, (params, lower, upper, ref)
        # the lower bound is close; the upper one only where the 16 points hold the successors
        assert lower >= ref.lower - 0.01 and upper <= ref.upper + 0.6, (params, lower, upper, ref)


def _reference_vectors(model):
    """float64 blind, QMDP and FIB vectors of one model, independent of jaxpomdp (exact_pomdp)."""
    T, Z, R, _, gamma = exact_pomdp.model_arrays(model)
    return (exact_pomdp.blind_vectors(T, R, gamma), exact_pomdp.qmdp_vectors(T, R, gamma),
            exact_pomdp.fib_vectors(T, Z, R, gamma, iterations=5000))


@pytest.mark.parametrize("which", ["grid", "mixed"])
def test_blind_qmdp_fib_of_a_batch_in_one_call_each_as_computed_alone(which):
    models, _ = _variants() if which == "grid" else _mixed_variants()
    stacked = batched.stack_models(models)
    out = jax.block_until_ready(batched.bounds_batch(stacked))
    assert out.qmdp.shape == out.fib.shape == out.blind.shape == (64, 3, 2) and out.lower.shape == (64,)
    # the one-kind batch functions give the same vectors
    for name, fn in (("blind", batched.blind_batch), ("qmdp", batched.qmdp_batch), ("fib", batched.fib_batch)):
        assert close(fn(stacked), getattr(out, name), rel=1e-6), name
    unit = float(np.finfo(np.float32).eps) / 2
    for i, m in enumerate(models):
        gamma, rmax = float(m.discount), float(np.abs(m.reward).max())
        alone = {"blind": bounds.blind_alphas(m), "qmdp": bounds.qmdp(m), "fib": bounds.fib(m)}
        exact = dict(zip(("blind", "qmdp", "fib"), _reference_vectors(m)))
        for name in ("blind", "qmdp", "fib"):
            x, y, ref = (np.asarray(v, np.float64) for v in (getattr(out, name)[i], alone[name], exact[name]))
            # tol and twice the rounding pad the certification adds, (K + 3) u (|R| + gamma |x|) / (1 - gamma)
            # (K = 2; the measured distance is 1.0-1.1 times one pad: the pad is most of it)
            pad = bounds.DEFAULT_TOL + 2 * 5 * unit * (rmax + gamma * np.abs(ref).max()) / (1 - gamma)
            # batched = alone, up to rounding far below that pad (in practice bit for bit: a
            # vmapped while_loop keeps the carry of a model whose loop has stopped)
            assert np.abs(x - y).max() <= 1e-6 * (1 + np.abs(y).max()), (i, name, np.abs(x - y).max())
            # and both are certified bounds on the same exact vectors, within the pad of them. The reference is
            # itself a bound, widened by exact_pomdp.PAD (1e-10) of its largest entry over 1 - gamma: a solve in
            # float64 (JAX_ENABLE_X64) lands between it and the exact vector, as close as 6e-8 to the latter
            slack = 10 * exact_pomdp.PAD * (1 + np.abs(ref).max()) / (1 - gamma)
            side = -1 if name == "blind" else 1
            for v in (x, y):
                assert np.all(side * (v - ref) >= -slack), (i, name, v, ref)
                assert np.abs(v - ref).max() <= pad, (i, name, np.abs(v - ref).max(), pad)
        lower, lower_action = bounds.blind_lower_bound(m)
        upper, upper_action = bounds.qmdp_upper_bound(m)
        assert close(out.lower[i], lower, rel=1e-6) and int(out.lower_action[i]) == int(lower_action)
        assert close(out.qmdp_upper[i], upper, rel=1e-6) and int(out.qmdp_action[i]) == int(upper_action)
        assert close(out.fib_upper[i], jnp.max(alone["fib"] @ m.initial_belief), rel=1e-6)
    assert np.all(np.asarray(out.lower) <= np.asarray(out.fib_upper))
    assert np.all(np.asarray(out.fib_upper) <= np.asarray(out.qmdp_upper) + 1e-5 * (1 + np.abs(out.qmdp_upper)))
    # at a belief shared by every model, or one per model
    b = jnp.array([0.9, 0.1], jnp.float32)
    shared = batched.bounds_batch(stacked, b)
    assert close(shared.fib_upper[3], jnp.max(bounds.fib(models[3]) @ b), rel=1e-6)
    per_model = batched.bounds_batch(stacked, jnp.broadcast_to(b, (64, 2)))
    assert close(per_model.fib_upper, shared.fib_upper, rel=1e-6)


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
    # the batch functions want a stacked batch, a discount in [0, 1) and beliefs of its shapes
    pair = batched.stack_models([tiger, problems.tiger(0.9)])
    assert batched.batch_size(pair) == 2
    for fn in (batched.qmdp_batch, batched.fib_batch, batched.blind_batch, batched.bounds_batch):
        with pytest.raises(ValueError, match="leading batch axis"):
            fn(tiger)
    with pytest.raises(ValueError, match="leading batch axis"):
        batched.solve_fixed_batch(tiger, batched.simplex_grid(2, 2), 3)
    with pytest.raises(ValueError, match="discount"):
        batched.qmdp_batch(batched.stack_models([tiger, problems.tiger(1.0)]))
    with pytest.raises(ValueError, match="discount"):
        batched.solve_fixed_batch(batched.stack_models([tiger, problems.tiger(1.0)]), batched.simplex_grid(2, 2), 3)
    with pytest.raises(ValueError, match="leading axis of 2"):
        batched.bounds_batch(pair.replace(discount=jnp.float32(0.9)))
    with pytest.raises(ValueError, match="beliefs must be"):
        batched.solve_fixed_batch(pair, np.ones((3, 3, 2)) / 2, 3)
    with pytest.raises(ValueError, match="beliefs must be"):
        batched.bounds_batch(pair, np.ones(3) / 3)
    with pytest.raises(ValueError, match="num_iterations"):
        batched.solve_fixed_batch(pair, batched.simplex_grid(2, 2), -1)


def test_docstring_examples():
    assert doctest.testmod(batched).failed == 0
