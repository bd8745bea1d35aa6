"""The generative RockSample against the exact tabular builder, state by state."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpomdp
from jaxpomdp import bounds, problems
from jaxpomdp.problems.rocksample import STANDARD_HALF_EFFICIENCY, STANDARD_LAYOUTS, random_layout, rocksample
from jaxpomdp.problems.rocksample_sim import (RockState, fully_observable_value, from_name, perfect_sensor_value,
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


def _perfect_sensor_by_value_iteration(sim, sweeps=700):
    """``V_PS(b0)`` by value iteration over every (cell, sigma) of the perfect-sensor belief MDP, with each
    action's reward, successor cell and ending taken from the simulator's own ``transition`` at every
    completion of the unknown rocks (sigma: base-3 digit i for rock i, 0 = bad or sampled, 1 = good, 2 =
    unknown at even odds); nothing of the dynamic programme under test is reused."""
    n, k, A = sim.n, sim.k, sim.num_actions
    gamma = float(sim.discount)
    states = _all_states(sim, n * n * 2 ** k)
    nxt, rew = jax.jit(jax.vmap(lambda a: jax.vmap(lambda s: sim.transition(s, a))(states)))(jnp.arange(A))
    nx, ny, term, rew = (np.asarray(v) for v in (nxt.x, nxt.y, nxt.terminal, rew))
    rocks = list(zip(np.asarray(sim.rock_x).tolist(), np.asarray(sim.rock_y).tolist()))
    cells = [(x, y) for x in range(n) for y in range(n)]
    rows, acts, cols, probs, rews, live = [], [], [], [], [], []
    for sig in range(3 ** k):
        digits = [(sig // 3 ** i) % 3 for i in range(k)]
        unknown = [i for i in range(k) if digits[i] == 2]
        for q in range(2 ** len(unknown)):
            good = [i for i in range(k) if digits[i] == 1] + [u for b, u in enumerate(unknown) if q >> b & 1]
            mask = sum(1 << (k - 1 - i) for i in good)
            for c, cell in enumerate(cells):
                for a in range(A):
                    s = c * 2 ** k + mask
                    d2 = list(digits)
                    if 4 <= a < 4 + k and d2[a - 4] == 2:
                        d2[a - 4] = 1 if (a - 4) in good else 0
                    if a == 4 + k and cell in rocks:
                        d2[rocks.index(cell)] = 0
                    rows.append(c * 3 ** k + sig)
                    acts.append(a)
                    sig2 = sum(d * 3 ** i for i, d in enumerate(d2))
                    cols.append((int(nx[a, s]) * n + int(ny[a, s])) * 3 ** k + sig2)
                    probs.append(0.5 ** len(unknown))
                    rews.append(float(rew[a, s]))
                    live.append(not term[a, s])
    rows, acts, cols, probs, rews, live = map(np.asarray, (rows, acts, cols, probs, rews, live))
    V = np.zeros(n * n * 3 ** k)
    for _ in range(sweeps):
        Q = np.zeros((A, len(V)))
        np.add.at(Q, (acts, rows), probs * (rews + gamma * live * V[cols]))
        V = Q.max(axis=0)
    start = int(sim.start_x) * n + int(sim.start_y)
    return V[start * 3 ** k + 3 ** k - 1]


@pytest.mark.parametrize("n,k,layout", [(4, 4, None), (5, 4, ((0, 2), [(0, 2), (4, 4), (2, 0), (3, 3)])),
                                        (4, 3, ((1, 3), [(3, 0), (0, 0), (2, 2)])), (3, 0, None)])
def test_perfect_sensor_value_solves_the_perfect_sensor_problem(n, k, layout):
    sim = rocksample_sim(n, k, layout=layout)
    assert perfect_sensor_value(sim) == pytest.approx(_perfect_sensor_by_value_iteration(sim), abs=1e-9)


def test_perfect_sensor_value_lies_between_a_policy_and_the_fully_observable_bound():
    from jaxpomdp import simulate
    from jaxpomdp.problems.rocksample_heuristic import CheckAndSamplePolicy
    for name in ["rocksample:4,4", "rocksample:7,8", "rocksample:8,10:3"]:
        sim = from_name(name)
        ps, fo = perfect_sensor_value(sim), fully_observable_value(sim).value
        ev = simulate.evaluate(jax.random.key(0), sim, CheckAndSamplePolicy.of(sim), num_episodes=2000)
        assert float(ev.mean) - 3 * float(ev.stderr) < ps < fo - 1.0, name
    assert perfect_sensor_value(rocksample_sim(7, 8)) == pytest.approx(22.9033, abs=1e-4)


def test_perfect_sensor_value_is_at_least_the_point_based_lower_bound():
    from jaxpomdp.solvers import point_based
    res = point_based.solve(rocksample(4, 4), time_limit=3.0)
    assert res.lower_bound > 17.9  # the optimum is 17.92 (SARSOP)
    assert perfect_sensor_value(rocksample_sim(4, 4)) >= res.lower_bound - 1e-4


def test_perfect_sensor_value_refuses_too_many_rocks():
    with pytest.raises(ValueError, match=r"3\^16 x 17 values .* at most 15 rocks"):
        perfect_sensor_value(rocksample_sim(20, 16))
    with pytest.raises(ValueError, match="at most 2 rocks"):
        perfect_sensor_value(rocksample_sim(4, 3), max_rocks=2)


def test_upper_value_bounds_qmdp_and_is_exact_with_table():
    m = rocksample(5, 5)
    q = np.asarray(jnp.max(bounds.qmdp(m), axis=0))
    sim = rocksample_sim(5, 5)
    states = _all_states(sim, m.num_states)
    loose = np.asarray(jax.jit(jax.vmap(sim.upper_value))(states))
    assert np.all(loose >= q - 1e-3)
    exact = np.asarray(jax.jit(jax.vmap(sim.with_fully_observable_table().upper_value))(states))
    np.testing.assert_allclose(exact, q, atol=1e-3)


def _bits(sim, rocks):
    return (np.asarray(rocks)[:, None] >> np.arange(sim.k - 1, -1, -1)) & 1


def test_factored_resampling_keeps_each_rocks_marginal():
    sim = rocksample_sim(11, 11)
    P = 200
    states = jax.vmap(sim.initial_state)(jax.random.split(jax.random.key(0), P))
    w = jax.random.uniform(jax.random.key(1), (P,)) ** 3
    w = w / jnp.sum(w)
    out = jax.jit(sim.resample_particles)(jax.random.key(2), states, w)
    assert bool(jnp.all(out.x == states.x[0])) and bool(jnp.all(out.y == states.y[0]))
    assert not bool(jnp.any(out.terminal))
    marg = np.asarray(w) @ _bits(sim, states.rocks)
    count = _bits(sim, out.rocks).sum(axis=0)
    assert np.all(np.abs(count - P * marg) < 1)          # unbiased rounding of P m_i, nothing else
    assert len(set(np.asarray(out.rocks).tolist())) > P // 2   # fresh combinations, not copies


def test_a_check_from_the_rocks_cell_fixes_that_rock_only():
    sim = rocksample_sim(7, 8)
    P = 128
    states = jax.vmap(sim.initial_state)(jax.random.split(jax.random.key(0), P))
    states = states.replace(x=jnp.full(P, sim.rock_x[0]), y=jnp.full(P, sim.rock_y[0]))
    bits = _bits(sim, states.rocks)
    w = jnp.asarray(bits[:, 0], jnp.float32)  # "good" heard from the rock's own cell: the bad ones are impossible
    out = jax.jit(sim.resample_particles)(jax.random.key(1), states, w / jnp.sum(w))
    after = _bits(sim, out.rocks)
    assert np.all(after[:, 0] == 1)
    assert np.all(np.abs(after[:, 1:].sum(axis=0) - bits[:, 1:].sum(axis=0)) < 1)  # the others keep their marginals


def test_particles_of_different_cells_resample_systematically():
    sim = rocksample_sim(7, 8)
    P = 64
    states = jax.vmap(sim.initial_state)(jax.random.split(jax.random.key(0), P))
    states = states.replace(x=jnp.arange(P, dtype=jnp.int32) % 2, rocks=jnp.arange(P, dtype=jnp.int32) * 3)
    w = jnp.full(P, 1.0 / P).at[:8].set(0.0)
    w = w / jnp.sum(w)
    out = sim.resample_particles(jax.random.key(3), states, w)
    pairs = set(zip(np.asarray(states.x).tolist(), np.asarray(states.rocks).tolist()))
    assert set(zip(np.asarray(out.x).tolist(), np.asarray(out.rocks).tolist())) <= pairs
    assert not set(np.asarray(out.rocks).tolist()) & set(np.asarray(states.rocks[:8]).tolist())


class _Systematic:
    """The simulator without its ``resample_particles``: plain systematic resampling."""

    def __init__(self, sim):
        self._sim = sim

    def __getattr__(self, name):
        if name == "resample_particles":
            raise AttributeError(name)
        return getattr(self._sim, name)


def _filter_checks(model, sim, checks, P, key):
    """A particle filter through checks of ``checks`` (rock indices) from the start, observations from a fixed
    hidden state; returns (particles' rock bits [P, k], exact posterior marginals [k])."""
    from jaxpomdp import particles
    upd = jax.jit(lambda k, b, a, o: particles.update(k, model, b, a, o, resample_threshold=1.0))
    b = particles.init(key, model, P)
    s = sim.initial_state(jax.random.key(42))
    logodds = np.zeros(sim.k)
    rx, ry = np.asarray(sim.rock_x), np.asarray(sim.rock_y)
    for t, i in enumerate(checks):
        kt = jax.random.fold_in(key, t)
        s, o, _, _ = sim.step(kt, s, jnp.int32(4 + i))
        b, _ = upd(jax.random.fold_in(kt, 1), b, jnp.int32(4 + i), o)
        eff = 2.0 ** (-np.hypot(int(s.x) - rx[i], int(s.y) - ry[i]) / float(sim.half_efficiency))
        good, bad = eff + (1 - eff) / 2, (1 - eff) / 2
        logodds[i] += np.log(good / bad) if int(o) == 0 else np.log((1 - good) / (1 - bad))
    assert bool(jnp.all(b.log_weights == 0))
    return _bits(sim, b.states.rocks), 1 / (1 + np.exp(-logodds))


def test_repeated_checks_keep_the_belief_spread_and_close_to_the_posterior():
    """Systematic resampling collapses the particles onto a few masks (rocks never checked look known); the
    simulator's factored resampling keeps every rock's posterior (up to Monte Carlo error)."""
    sim = rocksample_sim(15, 15)
    checks = np.random.default_rng(0).integers(0, sim.k, 12)
    P = 128
    bits, exact = _filter_checks(sim, sim, checks, P, jax.random.key(0))
    plain, exact2 = _filter_checks(_Systematic(sim), sim, checks, P, jax.random.key(0))
    np.testing.assert_allclose(exact, exact2)
    unchecked = np.setdiff1d(np.arange(sim.k), checks)
    assert len(unchecked) >= 3
    spread = lambda b: len({tuple(r) for r in b})  # noqa: E731
    assert spread(bits) > P // 2 > 8 > spread(plain)
    # measured: mean error 0.02, max 0.08 (the 128 draws from b0 are off by about 0.04 to begin with)
    assert np.abs(bits.mean(axis=0) - exact).mean() < 0.05
    assert np.abs(bits.mean(axis=0) - exact).max() < 0.15
    # rocks never checked: 0.5 each; the collapsed particles hold each at 0 or 1 but for a handful of masks
    assert np.all(np.abs(bits.mean(axis=0)[unchecked] - 0.5) < 0.15)
    assert np.abs(plain.mean(axis=0)[unchecked] - 0.5).mean() > np.abs(bits.mean(axis=0)[unchecked] - 0.5).mean()


def test_invalid_sizes_raise():
    with pytest.raises(ValueError):
        rocksample_sim(4, 31)
    with pytest.raises(ValueError):
        rocksample_sim(2, 4)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_a_bad_layout_seed_is_named(seed):
    """NumPy's own errors named its SeedSequence ("expected non-negative integer", "entropy not 1.5")."""
    from jaxpomdp.problems.rocksample import rocksample
    for build in (lambda: rocksample_sim(15, 15, seed=seed), lambda: rocksample(5, 3, seed=seed)):
        with pytest.raises(ValueError, match=f"a layout seed must be a non-negative integer; got {seed!r}"):
            build()
    assert rocksample_sim(15, 15, seed=np.int64(3)).k == 15  # NumPy integers are seeds too


def test_a_random_layout_of_a_huge_grid_draws_without_listing_its_cells():
    """The cells but the start were listed (np.delete of an arange of n²): 12 GiB for n = 40000, even with no
    rock. The draw is the same as choosing from that list, so the layouts stay as they were."""
    import tracemalloc
    from jaxpomdp.problems.rocksample import draw_rocks
    from jaxpomdp.problems.rocksample_sim import random_layout_unchecked

    def listed(n, k, start, seed):  # the former draw
        cells = np.delete(np.arange(n * n), start[0] * n + start[1])
        return tuple((int(c) // n, int(c) % n) for c in np.random.default_rng(seed).choice(cells, k, replace=False))

    for n, k, seed in [(1, 0, 0), (2, 3, 1), (7, 8, 2), (15, 15, 0), (40, 30, 5)]:
        for start in [(0, n // 2), (n - 1, n - 1)]:
            assert draw_rocks(n, k, start, seed) == listed(n, k, start, seed), (n, k, seed, start)
    tracemalloc.start()
    try:
        lay = random_layout_unchecked(40000, 5, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(set(lay.rocks)) == 5 and lay.start not in lay.rocks
    assert peak < 2 ** 20, peak
