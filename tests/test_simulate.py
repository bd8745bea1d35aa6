"""Rollouts and evaluation against exact values and a plain NumPy simulation."""

import doctest
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxpomdp import problems, simulate
from jaxpomdp.policy import MIN_BUCKET, AlphaVectorPolicy, BlindPolicy, bucket_size, greedy_qmdp_policy
from test_model import dense_arrays, random_model


def exact_blind_value(m, action):
    """``b0 . (I - gamma T_a)^-1 R_a``."""
    T, _, R, b0, gamma = dense_arrays(m)
    return b0 @ np.linalg.solve(np.eye(len(b0)) - gamma * T[action], R[action])


def numpy_returns(rng, m, choose, num_episodes, horizon):
    """Plain NumPy simulation, one time step at a time (episodes side by side).

    ``choose(beliefs float[n, S]) -> actions int[n]``; the beliefs are tracked by
    Bayes' rule on the dense matrices.
    """
    T, Z, R, b0, gamma = dense_arrays(m)
    n = num_episodes
    rows = np.arange(n)

    def sample(p):  # one draw from each row of p [n, k] by inversion
        return np.minimum((p.cumsum(1) < rng.random((len(p), 1))).sum(1), p.shape[1] - 1)

    s = sample(np.tile(b0, (n, 1)))
    b = np.tile(b0, (n, 1))
    returns = np.zeros(n)
    for t in range(horizon):
        a = choose(b)
        returns += gamma ** t * R[a, s]
        s = sample(T[a, s])
        o = sample(Z[a, s])
        b = np.einsum("ns,nst->nt", b, T[a]) * Z[a][rows, :, o]
        b /= b.sum(1, keepdims=True)
    return returns


def _blind_cases():
    rng = np.random.default_rng(0)
    random_a, random_b = (random_model(rng, 0.9, A=3, S=5, O=3)[0] for _ in range(2))
    assert random_a.num_successors == random_b.num_successors  # one compiled evaluation for both
    return {
        "tiger-listen": (problems.tiger(), 0),
        "tiger-open-left": (problems.tiger(), 1),
        "random-a": (random_a, 1),
        "random-b": (random_b, 2),
    }


BLIND = _blind_cases()
NUM_EPISODES = 2000


@functools.lru_cache(maxsize=None)
def blind_evaluation(name, seed=7):
    m, action = BLIND[name]
    return simulate.evaluate(jax.random.key(seed), m, BlindPolicy(jnp.int32(action)), num_episodes=NUM_EPISODES)


@pytest.mark.parametrize("name", BLIND)
def test_blind_policy_value_lies_in_the_confidence_interval(name):
    m, action = BLIND[name]
    ev = blind_evaluation(name)
    gamma, r_max = float(m.discount), float(np.abs(m.reward).max())
    assert ev.horizon == simulate.default_horizon(gamma) and ev.num_episodes == NUM_EPISODES
    np.testing.assert_allclose(ev.truncation_bound, gamma ** ev.horizon * r_max / (1 - gamma), rtol=1e-6)
    assert ev.truncation_bound <= 0.01 * r_max
    lo, hi = ev.ci95
    np.testing.assert_allclose([lo, hi], [ev.mean - 1.96 * ev.stderr, ev.mean + 1.96 * ev.stderr], rtol=1e-6)
    exact = exact_blind_value(m, action)
    assert lo - ev.truncation_bound <= exact <= hi + ev.truncation_bound, (exact, ev)


@pytest.mark.parametrize("name", ["tiger-open-left", "random-a"])
def test_evaluate_agrees_with_a_numpy_simulation(name):
    m, action = BLIND[name]
    ev = blind_evaluation(name)
    ref = numpy_returns(np.random.default_rng(1), m, lambda b: np.full(len(b), action), NUM_EPISODES, ev.horizon)
    ref_stderr = ref.std(ddof=1) / np.sqrt(NUM_EPISODES)
    assert abs(float(ev.mean) - ref.mean()) <= 4 * np.hypot(float(ev.stderr), ref_stderr)
    np.testing.assert_allclose(ev.stderr, ref_stderr, rtol=0.15)


def test_qmdp_policy_on_tiger_matches_numpy_and_the_bounds():
    m = problems.tiger()
    p = greedy_qmdp_policy(m)
    alphas, actions = np.asarray(p.alphas, float), np.asarray(p.actions)
    ev = simulate.evaluate(jax.random.key(2), m, p, num_episodes=NUM_EPISODES)
    ref = numpy_returns(np.random.default_rng(2), m, lambda b: actions[(b @ alphas.T).argmax(1)],
                        NUM_EPISODES, ev.horizon)
    se = np.hypot(float(ev.stderr), ref.std(ddof=1) / np.sqrt(NUM_EPISODES))
    assert abs(float(ev.mean) - ref.mean()) <= 4 * se, (float(ev.mean), ref.mean(), se)
    # a real policy: its value lies between the blind lower bound and the QMDP upper bound
    slack = 4 * float(ev.stderr) + ev.truncation_bound
    assert -20 - slack <= float(ev.mean) <= 189 + slack
    # new key, new discount, same shapes (explicit horizon): no recompilation
    compiled = simulate._returns_stats._cache_size()
    simulate.evaluate(jax.random.key(3), problems.tiger(0.9), p, num_episodes=NUM_EPISODES, horizon=ev.horizon)
    assert simulate._returns_stats._cache_size() == compiled


HORIZON = 25


@jax.jit
@chex.assert_max_traces(n=1)  # for the whole session: new keys and discounts never retrace
def qmdp_episode(key, model):
    return simulate.rollout(key, model, greedy_qmdp_policy(model), HORIZON)


def test_alpha_vector_rollouts_pay_the_reward_of_each_state_and_action():
    m = problems.tiger()
    trajs = [qmdp_episode(k, m) for k in jax.random.split(jax.random.key(3), 16)]
    traj = jax.tree.map(lambda *xs: np.stack(xs), *trajs)
    chex.assert_shape([traj.actions, traj.observations, traj.rewards, traj.states], (16, HORIZON))
    assert traj.actions.dtype == np.int32 and traj.observations.dtype == np.int32
    np.testing.assert_array_equal(traj.rewards, np.asarray(m.reward)[traj.actions, traj.states])
    assert not traj.dones.any()
    assert set(np.unique(traj.actions)) == {0, 1, 2}  # listens, and opens doors
    discounts = float(m.discount) ** np.arange(HORIZON)
    np.testing.assert_allclose(traj.discounted_return, (discounts * traj.rewards).sum(1), rtol=1e-5)
    # the policy's memory is the exact belief, so each action is greedy on the replayed belief
    p = greedy_qmdp_policy(m)
    first_open = np.argmax(traj.actions[0] != 0)
    b, action_for, update = m.initial_belief, jax.jit(p.action_for), jax.jit(p.update)
    for t in range(first_open + 1):
        assert int(action_for(b)) == int(traj.actions[0, t])
        b = update(m, b, traj.actions[0, t], traj.observations[0, t])


def test_same_seed_same_result_different_seed_different():
    first, other = blind_evaluation("tiger-open-left", 0), blind_evaluation("tiger-open-left", 1)
    m, action = BLIND["tiger-open-left"]
    again = simulate.evaluate(jax.random.key(0), m, BlindPolicy(jnp.int32(action)), num_episodes=NUM_EPISODES)
    assert float(first.mean) == float(again.mean) and float(first.stderr) == float(again.stderr)
    assert float(first.mean) != float(other.mean)


def test_rollout_compiles_once_and_is_reproducible():
    a, b, c, d = (qmdp_episode(jax.random.key(seed), problems.tiger(gamma))  # new keys, new discount
                  for seed, gamma in [(0, 0.95), (0, 0.95), (1, 0.95), (0, 0.9)])
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a.states, c.states)
    np.testing.assert_array_equal(a.states[:2], d.states[:2])  # same draws until the policies differ
    assert float(a.discounted_return) != float(d.discounted_return)


@struct.dataclass
class Countdown:
    """A GenerativePOMDP that is not tabular: reward 1 per step, done on reaching 0."""

    start: int = struct.field(pytree_node=False, default=3)
    num_actions: int = struct.field(pytree_node=False, default=1)
    num_observations: int = struct.field(pytree_node=False, default=1)
    discount: float = 0.5

    def initial_state(self, key):
        return jnp.int32(self.start)

    def step(self, key, state, action):
        nxt = state - 1
        return nxt, jnp.int32(0), jnp.float32(1.0), nxt == 0

    def features(self, state):
        return state[None].astype(jnp.float32)


def test_rewards_stop_once_done_for_any_simulator():
    model = Countdown()
    traj = jax.jit(simulate.rollout, static_argnums=3)(jax.random.key(0), model, BlindPolicy(jnp.int32(0)), 6)
    np.testing.assert_array_equal(traj.rewards, [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(traj.dones, [False, False, True, True, True, True])
    np.testing.assert_array_equal(traj.states, [3, 2, 1, 0, 0, 0])  # frozen once done
    np.testing.assert_allclose(traj.discounted_return, 1 + 0.5 + 0.25)
    with pytest.raises(ValueError, match="horizon"):
        simulate.evaluate(jax.random.key(0), model, BlindPolicy(jnp.int32(0)))
    ev = simulate.evaluate(jax.random.key(0), model, BlindPolicy(jnp.int32(0)), num_episodes=4,
                           horizon=5, max_abs_reward=1.0)
    np.testing.assert_allclose([ev.mean, ev.stderr], [1.75, 0.0])
    np.testing.assert_allclose(ev.truncation_bound, 0.5 ** 5 / 0.5)
    one = simulate.evaluate(jax.random.key(0), model, BlindPolicy(jnp.int32(0)), num_episodes=1, horizon=5)
    assert float(one.mean) == 1.75 and float(one.stderr) == np.inf


def test_default_horizon():
    for gamma in (0.0, 0.5, 0.9, 0.95, 0.99):
        h = simulate.default_horizon(gamma)
        assert gamma ** h / (1 - gamma) <= 0.01
        assert h == 1 or gamma ** (h - 1) / (1 - gamma) > 0.01  # the smallest such H
    assert simulate.default_horizon(0.95) == 149
    assert simulate.default_horizon(0.9999) == simulate.MAX_DEFAULT_HORIZON
    with pytest.raises(ValueError, match="horizon"):
        simulate.default_horizon(1.0)
    with pytest.raises(ValueError, match="horizon"):
        simulate.evaluate(jax.random.key(0), problems.tiger(1.0), BlindPolicy(jnp.int32(0)))
    ev = simulate.evaluate(jax.random.key(0), problems.tiger(1.0), BlindPolicy(jnp.int32(0)),
                           num_episodes=NUM_EPISODES, horizon=149)  # the shapes of blind_evaluation
    np.testing.assert_allclose(ev.mean, -149.0)
    assert ev.truncation_bound == np.inf


def test_alpha_vector_policy_value_and_action():
    p = AlphaVectorPolicy(jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]]), jnp.asarray([2, 0, 1], jnp.int32))
    beliefs = jnp.asarray([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(jax.vmap(p.value)(beliefs), [0.9, 0.8, 0.6])
    np.testing.assert_array_equal(jax.vmap(p.action_for)(beliefs), [2, 0, 1])


def test_docstring_examples():
    assert doctest.testmod(simulate).failed == 0


def test_evaluate_batches_that_stop_when_done_give_the_rollouts_returns():
    # a terminating simulator and a random controller: the episodes end at different steps (some never);
    # evaluate's loop over time (stopped once a whole batch is done) gives each rollout's return
    from jaxpomdp.controller import Controller, ControllerPolicy
    from jaxpomdp.problems.rocksample_sim import rocksample_sim
    m = rocksample_sim(4, 4)
    rng = np.random.default_rng(3)
    N = 12
    c = Controller(jnp.asarray(rng.integers(0, m.num_actions, N), jnp.int32),
                   jnp.asarray(rng.integers(0, N, (N, m.num_observations)), jnp.int32), jnp.ones(N, bool), None,
                   jnp.int32(0))
    pol = ControllerPolicy(c)
    keys = jax.random.split(jax.random.key(5), 40)
    ref = jax.jit(jax.vmap(lambda k: simulate.rollout(k, m, pol, 25)))(keys)
    done_at = np.argmax(np.asarray(ref.dones), axis=1)
    assert np.asarray(ref.dones)[:, -1].any() and not np.asarray(ref.dones)[:, -1].all()
    assert len(set(done_at[np.asarray(ref.dones)[:, -1]].tolist())) > 3
    got = jax.jit(simulate._batch_returns, static_argnums=3)(keys, m, pol, 25)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref.discounted_return), rtol=1e-6, atol=1e-6)
    ev = simulate.evaluate(jax.random.key(5), m, pol, num_episodes=40, horizon=25, batch_size=16)
    r = np.asarray(ref.discounted_return, np.float64)
    assert float(ev.mean) == pytest.approx(r.mean(), rel=1e-5, abs=1e-5)
    assert float(ev.stderr) == pytest.approx(r.std(ddof=1) / np.sqrt(40), rel=1e-4)
    # every episode ends after 4 steps: a 500-step horizon gives the same return
    blind_east = simulate.evaluate(jax.random.key(5), m, BlindPolicy(jnp.int32(1)), num_episodes=8, horizon=500)
    assert float(blind_east.mean) == pytest.approx(10 * 0.95 ** 3, rel=1e-5)


def test_bucket_sizes_cover_every_size_with_at_most_half_again_and_two_per_doubling():
    sizes = [bucket_size(n) for n in range(1, 5000)]
    assert all(s >= n for n, s in zip(range(1, 5000), sizes))
    assert all(s <= max(MIN_BUCKET, 1.5 * n) for n, s in zip(range(1, 5000), sizes))
    assert sizes == sorted(sizes) and min(sizes) == MIN_BUCKET
    for k in range(4, 12):  # two sizes in each (2^k, 2^(k+1)]
        assert len({s for s in sizes if 2 ** k < s <= 2 ** (k + 1)}) == 2


@pytest.mark.parametrize("name", ["tiger", "4x3.95", "hallway", "network"])
def test_bucketed_alpha_vector_policy_has_the_same_actions_and_values(name):
    m = problems.get(name)
    policy = greedy_qmdp_policy(m)
    # more vectors than a bucket's size: QMDP's, then shifted copies with other actions
    rng = np.random.default_rng(0)
    extra = np.asarray(policy.alphas)[rng.integers(0, m.num_actions, 14)] + rng.normal(0, 0.5, (14, m.num_states))
    policy = AlphaVectorPolicy(jnp.concatenate([policy.alphas, jnp.asarray(extra, policy.alphas.dtype)]),
                               jnp.concatenate([policy.actions, jnp.asarray(rng.integers(0, m.num_actions, 14),
                                                                            jnp.int32)]))
    n = policy.alphas.shape[0]
    padded = policy.bucketed()
    assert padded.alphas.shape == (bucket_size(n), m.num_states) and bucket_size(n) > n
    np.testing.assert_array_equal(padded.alphas[:n], policy.alphas)
    beliefs = np.concatenate([np.eye(m.num_states), np.asarray(m.initial_belief)[None],
                              rng.dirichlet(np.ones(m.num_states), 500)])
    beliefs = jnp.asarray(beliefs, policy.alphas.dtype)
    acts = [np.asarray(jax.vmap(p.action_for)(beliefs)) for p in (policy, padded)]
    np.testing.assert_array_equal(acts[0], acts[1])
    assert len(set(acts[0].tolist())) > 1  # the beliefs do call for different actions
    np.testing.assert_array_equal(jax.vmap(policy.value)(beliefs), jax.vmap(padded.value)(beliefs))


def test_evaluate_simulates_policies_of_nearby_sizes_with_one_program_and_the_same_returns():
    m = problems.tiger()
    qmdp = greedy_qmdp_policy(m)
    stats = simulate._returns_stats
    before = stats._cache_size()
    results = []
    for n in (17, 20, 23):  # QMDP's three vectors, then copies of them: the same policy, three sizes
        rows = np.arange(n) % 3
        policy = AlphaVectorPolicy(qmdp.alphas[rows], qmdp.actions[rows])
        results.append(simulate.evaluate(jax.random.key(0), m, policy, num_episodes=203, horizon=31))
        # the padded simulation has the unpadded one's returns, to the bit
        unpadded = stats(jax.random.key(0), m, policy, 203, 31, 203)
        assert (float(results[-1].mean), float(results[-1].stderr)) == tuple(map(float, unpadded))
    assert stats._cache_size() - before == 1 + 3  # one padded program, and the three unpadded references
    assert len({float(r.mean) for r in results}) == 1


def test_bucketed_controller_policy_walks_the_same_nodes():
    from jaxpomdp.controller import Controller, ControllerPolicy
    from jaxpomdp.problems.rocksample_sim import rocksample_sim
    m = rocksample_sim(4, 4)
    rng = np.random.default_rng(3)
    N = 21
    c = Controller(jnp.asarray(rng.integers(0, m.num_actions, N), jnp.int32),
                   jnp.asarray(rng.integers(0, N, (N, m.num_observations)), jnp.int32), jnp.ones(N, bool),
                   {"w": jnp.ones((N, 3))}, jnp.int32(5))
    policy = ControllerPolicy(c)
    padded = policy.bucketed()
    assert padded.controller.actions.shape == (24,) and padded.controller.edges.shape == (24, m.num_observations)
    assert padded.controller.params is None and not np.asarray(padded.controller.active)[N:].any()
    keys = jax.random.split(jax.random.key(1), 64)
    run = jax.jit(jax.vmap(lambda p, k: simulate.rollout(k, m, p, 40), in_axes=(None, 0)))
    a, b = run(policy, keys), run(padded, keys)
    chex.assert_trees_all_equal((a.actions, a.rewards, a.discounted_return),
                                (b.actions, b.rewards, b.discounted_return))


def test_a_policy_that_does_not_fit_the_model_is_refused():
    """Indices past the end are clamped inside jit: action 17 of Tiger's 3 was simulated as 'open-right'."""
    from jaxpomdp.controller import Controller, ControllerPolicy
    from jaxpomdp.policy import AlphaVectorPolicy, BlindPolicy
    m, key = problems.tiger(), jax.random.key(0)
    node = (jnp.array([True, True]), None)
    bad = [
        (BlindPolicy(jnp.int32(17)), r"the action of the policy is 17, not in \[0, 3\)"),
        (AlphaVectorPolicy(jnp.zeros((1, 2)), jnp.array([9], jnp.int32)), r"an action of the policy is 9"),
        (AlphaVectorPolicy(jnp.zeros((1, 3)), jnp.array([0], jnp.int32)), "this model has 2 states"),
        (ControllerPolicy(Controller(jnp.array([0, 7], jnp.int32), jnp.array([[0, 1], [0, 0]], jnp.int32),
                                     *node, jnp.int32(0))), "an action of the policy is 7"),
        (ControllerPolicy(Controller(jnp.array([0, 1], jnp.int32), jnp.array([[5, 5], [0, 0]], jnp.int32),
                                     *node, jnp.int32(0))), r"an edge of the policy is 5, not in \[0, 2\)"),
        (ControllerPolicy(Controller(jnp.array([0, 1], jnp.int32), jnp.array([[0, 1], [0, 0]], jnp.int32),
                                     *node, jnp.int32(9))), "the start node of the policy is 9"),
        (ControllerPolicy(Controller(jnp.array([0, 1], jnp.int32), jnp.array([[0], [0]], jnp.int32),
                                     *node, jnp.int32(0))), "this model has 2 observations"),
    ]
    for policy, phrase in bad:
        with pytest.raises(ValueError, match=phrase):
            simulate.evaluate(key, m, policy, num_episodes=4, horizon=3)


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(num_episodes=0), "num_episodes = 0: need at least 1"),
    (dict(batch_size=0), "batch_size = 0: need at least 1"),  # was a division by zero deep in the batching
    (dict(horizon=0), "horizon = 0: need at least 1 step"),
])
def test_evaluate_refuses_empty_counts(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        simulate.evaluate(jax.random.key(0), problems.tiger(), BlindPolicy(jnp.int32(0)), **kwargs)


@pytest.mark.parametrize("batch_size", [1024, 7])
def test_legacy_uint32_keys_give_the_typed_keys_results(batch_size):
    # jax.random.PRNGKey(0) (uint32[2]) is the same threefry key as its typed wrapper; evaluate
    # reshaped its split keys as if they were scalars and failed with "cannot reshape array"
    m = problems.tiger()
    legacy = jax.random.PRNGKey(3)
    a = simulate.evaluate(legacy, m, greedy_qmdp_policy(m), num_episodes=20, batch_size=batch_size)
    b = simulate.evaluate(jax.random.wrap_key_data(legacy), m, greedy_qmdp_policy(m), num_episodes=20,
                          batch_size=batch_size)
    assert float(a.mean) == float(b.mean) and float(a.stderr) == float(b.stderr)
