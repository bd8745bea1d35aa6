"""GPOMDP, OLPOMDP, CONJPOMDP and the exact references they are checked against.

Exact quantities (``jaxpomdp.markov``) are checked against finite differences and
against each other (the identities of Baxter & Bartlett), the Monte Carlo
estimator against the exact ``E[Delta_T]``, GSEARCH and CONJPOMDP against
quadratics whose maxima are known in closed form.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxpomdp import markov, problems, simulate, stochastic
from jaxpomdp.model import from_dense
from jaxpomdp.solvers import SOLVERS, conjpomdp, gpomdp


def random_model(seed, S=4, A=2, O=3, discount=0.9):
    rng = np.random.default_rng(seed)
    T = rng.dirichlet(np.ones(S), size=(A, S))
    Z = rng.dirichlet(np.ones(O), size=(A, S))
    R = rng.normal(size=(A, S))
    return from_dense(T, Z, R, rng.dirichlet(np.ones(S)), discount)


def fsc(model, memory=2, scale=1.0):
    return stochastic.FiniteStateController(num_features=stochastic.observation_feature_size(model),
                                            num_actions=model.num_actions, num_memory=memory, init_scale=scale)


def cases():
    """(name, model, policy, params) for the exact checks (built under x64 by the caller)."""
    three = problems.three_state()
    logistic = stochastic.LogisticPolicy(num_features=2)
    tiger = problems.tiger()
    rnd = random_model(3)
    soft = stochastic.SoftmaxPolicy(num_features=3, num_actions=2)
    soft_params = jax.tree.map(lambda x: jax.random.normal(jax.random.key(5), x.shape, x.dtype),
                               soft.init_params(None))
    return [
        ("three-state logistic", three, logistic, jnp.array([0.7, -1.3])),
        ("tiger fsc", tiger, fsc(tiger, 2), fsc(tiger, 2).init_params(jax.random.key(1))),
        ("random softmax", rnd, soft, soft_params),
        ("random fsc3", rnd, fsc(rnd, 3), fsc(rnd, 3).init_params(jax.random.key(2))),
    ]


def to64(tree):
    """The same numbers as float64 arrays (call under ``jax.enable_x64``)."""
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64), tree)


# The exact references are jitted, with the model, the parameters, ``restart`` and
# ``beta`` as arguments (the policy is a pytree of static fields): one compiled
# program per case serves every test, parametrization and value of beta, where the
# op-by-op evaluation compiled dozens of small programs per case.
def _chain_fn(model, policy, restart):
    return lambda p: markov.induced_chain(model, policy, p, restart)


@jax.jit
def exact(model, policy, params, restart, beta):
    """The chain, ``pi``, ``grad eta``, ``grad_beta eta``, ``grad pi'`` and ``J_beta`` (flat gradients)."""
    chain_fn = _chain_fn(model, policy, restart)
    chain = chain_fn(params)
    P = chain.transition
    flat = lambda tree: ravel_pytree(tree)[0]  # noqa: E731
    return {"chain": chain, "pi": markov.stationary_distribution(P),
            "gradient": flat(markov.gradient(chain_fn, params)),
            "beta_gradient": flat(markov.beta_gradient(chain_fn, params, beta)),
            "stationary_gradient": markov.stationary_gradient(chain_fn, params),
            "J": jnp.linalg.solve(jnp.eye(P.shape[0], dtype=P.dtype) - beta * P, chain.reward)}


@functools.partial(jax.jit, static_argnames="num_steps")
def expected_estimate(model, policy, params, restart, beta, num_steps):
    """``E[Delta_T]`` (flat) of the chain restarted with ``restart``."""
    return ravel_pytree(markov.expected_estimate(_chain_fn(model, policy, restart), params, beta, num_steps))[0]


def num_params(params):
    return sum(np.size(x) for x in jax.tree.leaves(params))


@jax.jit
def _average_reward(model, policy, params, restart, shift):
    flat, unravel = ravel_pytree(params)
    return markov.average_reward(_chain_fn(model, policy, restart), unravel(flat + shift))


def average_reward(model, policy, params, restart, shift=None):
    """``eta`` of the chain restarted with ``restart``, at ``params`` moved by ``shift`` (flat; default 0)."""
    shift = np.zeros(num_params(params)) if shift is None else shift
    return float(_average_reward(model, policy, params, restart, shift))


def central_difference(model, policy, params, restart, h=1e-6):
    """``(eta(theta + h e_k) - eta(theta - h e_k)) / 2h`` for every flat parameter ``k``.

    One compiled ``eta`` called 2K times (not vmapped: a batched solve once left
    XLA:CPU's thread pool waiting for ever here).
    """
    eta = functools.partial(average_reward, model, policy, params, restart)
    return np.array([(eta(e) - eta(-e)) / (2 * h) for e in np.eye(num_params(params)) * h])


# ------------------------------------------------------------ exact references
@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("restart", [0.0, 0.1])
def test_gradient_matches_finite_differences(index, restart):
    with jax.enable_x64(True):
        name, model, policy, params = cases()[index]
        exact_gradient = exact(model, policy, params, restart, 0.0)["gradient"]
        fd = central_difference(model, policy, params, restart)
        np.testing.assert_allclose(exact_gradient, fd, rtol=1e-6, atol=1e-8, err_msg=name)
        assert np.linalg.norm(exact_gradient) > 1e-3  # not trivially zero


def test_stationary_distribution_is_stationary():
    with jax.enable_x64(True):
        _, model, policy, params = cases()[1]
        ref = exact(model, policy, params, 0.0, 0.0)
        P, pi = ref["chain"].transition, ref["pi"]
        np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(pi @ P, pi, atol=1e-12)
        np.testing.assert_allclose(pi.sum(), 1.0, atol=1e-12)
        assert np.all(pi >= -1e-15)


def paper_chain(seed=0, S=5):
    """A chain on states with a reward on arrival r_s(i'), the paper's own setting.

    Two actions with random transitions; the policy sees random features of the
    current state: P(theta)[i, j] = sum_u mu(u | theta, phi(i)) P_u[i, j].
    """
    rng = np.random.default_rng(seed)
    P_u = jnp.asarray(rng.dirichlet(np.ones(S), size=(2, S)))
    phi = jnp.asarray(rng.normal(size=(S, 3)))
    r_s = jnp.asarray(rng.normal(size=S))
    policy = stochastic.LogisticPolicy(num_features=3)

    def chain_fn(theta):
        mu = jnp.exp(jax.vmap(lambda f: policy.log_probs(theta, 0, f)[0])(phi))  # [S, 2]
        P = jnp.einsum("iu,uij->ij", mu, P_u)
        # reward of the step from i: the expected arrival reward (the estimator's expectation)
        return markov.Chain(P, P @ r_s, jnp.full(S, 1.0 / S))

    return chain_fn, r_s, jnp.asarray(rng.normal(size=3))


@functools.lru_cache(maxsize=None)
def paper_identity_terms():
    """A jitted ``beta -> (grad, grad_beta, grad pi', J_beta, pi' (grad P) J_beta)`` of :func:`paper_chain`
    (built under x64; beta traced: one program for every beta)."""
    chain_fn, r_s, theta = paper_chain()

    @jax.jit
    def terms(beta):
        P = chain_fn(theta).transition
        J = jnp.linalg.solve(jnp.eye(P.shape[0]) - beta * P, r_s)
        dP = markov.chain_derivatives(chain_fn, theta)[1]
        pi = markov.stationary_distribution(P)
        return (markov.gradient(chain_fn, theta), markov.beta_gradient(chain_fn, theta, beta),
                markov.stationary_gradient(chain_fn, theta), J, jnp.einsum("x,kxy,y->k", pi, dP, J))

    return terms


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.8, 0.95])
def test_paper_identity_holds_to_1e8(beta):
    """grad eta = (1 - beta) (grad pi') J_beta + beta grad_beta eta, J_beta = (I - beta P)^{-1} r_s."""
    with jax.enable_x64(True):
        grad, grad_beta, grad_pi, J, paper_grad_beta = paper_identity_terms()(beta)  # grad_pi: [K, X]
        np.testing.assert_allclose(grad, (1 - beta) * grad_pi @ J + beta * grad_beta, rtol=0, atol=1e-8)
        # grad_beta eta is the paper's pi' (grad P) J_beta
        np.testing.assert_allclose(grad_beta, paper_grad_beta, atol=1e-10)


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("beta", [0.2, 0.9])
def test_identity_with_rewards_of_steps(index, beta):
    """With a reward R(s, u) of the step: grad eta = (1 - beta) (grad pi') J_beta + grad_beta eta."""
    with jax.enable_x64(True):
        _, model, policy, params = cases()[index]
        ref = exact(model, policy, params, 0.0, beta)  # J: (I - beta P)^{-1} r
        np.testing.assert_allclose(ref["gradient"], (1 - beta) * ref["stationary_gradient"] @ ref["J"]
                                   + ref["beta_gradient"], rtol=0, atol=1e-8)


def test_bias_shrinks_as_beta_goes_to_one():
    with jax.enable_x64(True):
        for _, model, policy, params in cases()[1:]:
            refs = [exact(model, policy, params, 0.0, b) for b in (0.0, 0.5, 0.9, 0.99, 0.999)]
            bias = [float(jnp.linalg.norm(r["beta_gradient"] - r["gradient"])) for r in refs]
            assert all(b1 > b2 for b1, b2 in zip(bias, bias[1:])), bias
            assert bias[-1] < 0.01 * bias[0]


def test_expected_estimate_tends_to_beta_gradient():
    with jax.enable_x64(True):
        _, model, policy, params = cases()[1]
        limit = exact(model, policy, params, 0.0, 0.7)["beta_gradient"]
        e_short = expected_estimate(model, policy, params, 0.0, 0.7, 10)
        e_long = expected_estimate(model, policy, params, 0.0, 0.7, 5000)
        assert jnp.linalg.norm(e_long - limit) < 0.01 * jnp.linalg.norm(e_short - limit)


# ------------------------------------------------------------- the estimator
#: Chains of the Monte Carlo checks.
CHAINS = 20000
#: T of the checks on tiger: one shape, so one compiled ``_gpomdp`` (beta, restart and baseline are traced).
TIGER_T = 30
MC_CASES = [  # (case index, beta, T, restart)
    (0, 0.5, 30, 0.0),
    (1, 0.8, TIGER_T, 0.0),
    (1, 0.8, TIGER_T, 0.05),
    (3, 0.6, 15, 0.0),
]


@pytest.mark.parametrize("index,beta,T,restart", MC_CASES)
def test_monte_carlo_mean_within_3_standard_errors_of_exact(index, beta, T, restart):
    _, model, policy, params = cases()[index]
    est = gpomdp.gpomdp(jax.random.key(11), model, policy, params, num_steps=T, beta=beta,
                        num_chains=CHAINS, restart_prob=restart)
    with jax.enable_x64(True):
        _, model64, policy64, _ = cases()[index]
        params64 = to64(params)  # the same numbers (x64 draws different random ones)
        expected = np.asarray(expected_estimate(model64, policy64, params64, restart, beta, T))
    mean = np.asarray(ravel_pytree(est.gradient)[0])
    se = np.asarray(ravel_pytree(est.stderr)[0])
    z = np.abs(mean - expected) / se
    assert np.all(z < 3), (z, mean, expected)
    assert est.num_steps == CHAINS * T


def test_baseline_leaves_the_expectation_and_lowers_the_variance():
    _, model, policy, params = cases()[1]
    plain = gpomdp.gpomdp(jax.random.key(3), model, policy, params, num_steps=TIGER_T, beta=0.8, num_chains=CHAINS)
    based = gpomdp.gpomdp(jax.random.key(4), model, policy, params, num_steps=TIGER_T, beta=0.8, num_chains=CHAINS,
                          baseline=float(plain.average_reward))
    a, sa = (np.asarray(ravel_pytree(x)[0]) for x in (plain.gradient, plain.stderr))
    b, sb = (np.asarray(ravel_pytree(x)[0]) for x in (based.gradient, based.stderr))
    assert np.all(np.abs(a - b) < 3 * np.hypot(sa, sb))
    # tiger's rewards are far from 0: the baseline about halves the standard errors (mean ratio 0.46-0.47 for
    # keys 3-10 in float32, 0.503 with these keys under JAX_ENABLE_X64, where a bound of 0.5 failed)
    assert np.mean(sb) < 0.6 * np.mean(sa)


def test_average_reward_matches_exact_eta():
    _, model, policy, params = cases()[1]
    est = gpomdp.gpomdp(jax.random.key(0), model, policy, params, num_steps=2000, beta=0.5, num_chains=256)
    with jax.enable_x64(True):
        _, m64, p64, _ = cases()[1]
        eta = average_reward(m64, p64, to64(params), 0.0)
    assert abs(float(est.average_reward) - eta) < 4 * float(est.average_reward_stderr) + 0.02


def test_reproducible_and_compiled_once_per_shape():
    _, model, policy, params = cases()[1]
    gpomdp._gpomdp.clear_cache()
    # the shape of the Monte Carlo checks on tiger: their compiled program, from the persistent cache
    shape = {"num_steps": TIGER_T, "num_chains": CHAINS}
    a = gpomdp.gpomdp(jax.random.key(0), model, policy, params, beta=0.5, **shape)
    b = gpomdp.gpomdp(jax.random.key(0), model, policy, params, beta=0.5, **shape)
    c = gpomdp.gpomdp(jax.random.key(0), model, policy, params, beta=0.9, restart_prob=0.1, baseline=-1.0, **shape)
    chex_equal = jax.tree.map(lambda x, y: np.array_equal(x, y), a.gradient, b.gradient)
    assert all(jax.tree.leaves(chex_equal))
    assert not np.array_equal(ravel_pytree(a.gradient)[0], ravel_pytree(c.gradient)[0])
    assert gpomdp._gpomdp._cache_size() == 1  # beta, restart and baseline are traced


def test_one_chain_is_the_paper_recursion_step_by_step():
    """A NumPy loop of the paper's recursion over the same sampled path gives the same Delta_T."""
    model = problems.three_state()
    policy = stochastic.LogisticPolicy(num_features=2)
    theta = jnp.array([0.4, -0.9])
    beta, T = 0.7, 40
    key = jax.random.key(8)
    # replay the chain's own draws to get the path, then apply the recursion in NumPy (each piece
    # jitted whole: one compilation instead of one per operation)
    delta, _ = jax.jit(gpomdp._one_chain, static_argnums=7)(key, model, policy, theta, jnp.float32(beta),
                                                            jnp.float32(0.0), jnp.float32(0.0), T)
    key_init, key_steps = jax.random.split(key)
    carry = jax.jit(gpomdp._start)(key_init, model, theta)
    chain_step = jax.jit(gpomdp._chain_step)
    z = np.zeros(2)
    ref = np.zeros(2)
    feats = np.asarray(problems.THREE_STATE_FEATURES)
    for t, k in enumerate(jax.random.split(key_steps, T)):
        state, phi = int(carry[0]), np.asarray(carry[2])
        carry, reward, _ = chain_step(model, policy, theta, carry, k, trace_decay=jnp.float32(beta),
                                      restart_prob=jnp.float32(0.0))
        # which action was drawn: the reward R(s, u) of three-state differs between actions
        u = int(np.argmin(np.abs(np.asarray(model.reward)[:, state] - float(reward))))
        p0 = 1 / (1 + np.exp(-np.dot(np.asarray(theta), phi)))
        score = phi * ((1 - p0) if u == 0 else -p0)   # d/dtheta log sigmoid(+-theta.phi)
        z = beta * z + score
        ref = ref + (float(reward) * z - ref) / (t + 1)
        assert int(carry[0]) in (0, 1, 2)
        np.testing.assert_allclose(np.asarray(carry[2]), feats[int(carry[0])])
    np.testing.assert_allclose(np.asarray(delta), ref, rtol=1e-4, atol=1e-6)


def test_olpomdp_improves_three_state():
    model = problems.three_state()
    policy = stochastic.LogisticPolicy(num_features=2)
    params, rewards = gpomdp.olpomdp(jax.random.key(0), model, policy, policy.init_params(None),
                                     num_steps=3000, beta=0.5, step_size=1.0, num_chains=32)
    assert rewards.shape == (3000,)
    eta = gpomdp.exact_average_reward(model, policy, params)
    assert eta > 0.7 and float(jnp.mean(rewards[-500:])) > float(jnp.mean(rewards[:100]))


def test_invalid_arguments_are_refused():
    model = problems.three_state()
    policy = stochastic.LogisticPolicy(num_features=2)
    with pytest.raises(ValueError, match="beta"):
        gpomdp.gpomdp(jax.random.key(0), model, policy, jnp.zeros(2), num_steps=5, beta=1.0)
    with pytest.raises(ValueError, match="restart_prob"):
        gpomdp.gpomdp(jax.random.key(0), model, policy, jnp.zeros(2), num_steps=5, beta=0.5, restart_prob=2)
    with pytest.raises(ValueError, match="objective"):
        gpomdp.restart_probability(model, "total")


# ------------------------------------------------------------------ policies
@pytest.mark.parametrize("make", [
    lambda F, A: stochastic.SoftmaxPolicy(num_features=F, num_actions=A),
    lambda F, A: stochastic.FiniteStateController(num_features=F, num_actions=A, num_memory=3),
    lambda F, A: stochastic.MLPPolicy(num_features=F, num_actions=A, hidden=(8,)),
])
def test_policies_are_normalised_and_jittable(make):
    policy = make(4, 3)
    params = policy.init_params(jax.random.key(0))
    phis = jax.random.normal(jax.random.key(1), (10, 4))
    mems = jnp.arange(10) % policy.num_memory
    logp = jax.jit(jax.vmap(policy.log_probs, in_axes=(None, 0, 0)))(params, mems, phis)
    assert logp.shape == (10, policy.num_memory, 3)
    np.testing.assert_allclose(jax.scipy.special.logsumexp(logp.reshape(10, -1), axis=1), 0, atol=1e-5)
    h, u = stochastic.sample(jax.random.key(2), policy, params, jnp.int32(0), phis[0])
    assert h.dtype == jnp.int32 and u.dtype == jnp.int32 and 0 <= int(u) < 3


def test_inverse_cdf_draws_the_distribution_and_never_a_zero():
    from jaxpomdp.model import inverse_cdf
    probs = jnp.array([0.0, 0.2, 0.0, 0.5, 0.3, 0.0])
    u = jax.random.uniform(jax.random.key(0), (200_000,))
    draws = np.asarray(jax.vmap(lambda x: inverse_cdf(x, probs))(u))
    freq = np.bincount(draws, minlength=6) / draws.size
    np.testing.assert_allclose(freq, probs, atol=0.005)
    edges = [0.0, np.nextafter(np.float32(1), np.float32(0)), 1.0]  # the ends, and beyond
    picks = [int(inverse_cdf(jnp.float32(x), probs)) for x in edges]
    assert picks == [1, 4, 4]
    assert int(inverse_cdf(jnp.float32(0.5), probs * 7)) == 3  # unnormalised is fine


def test_logistic_policy_is_the_papers():
    policy = stochastic.LogisticPolicy(num_features=2)
    theta, phi = jnp.array([1.5, -0.5]), jnp.array([0.3, 0.8])
    p = jnp.exp(policy.log_probs(theta, 0, phi))[0]
    np.testing.assert_allclose(p[0], 1 / (1 + np.exp(-(1.5 * 0.3 - 0.5 * 0.8))), rtol=1e-6)
    with pytest.raises(ValueError):
        stochastic.LogisticPolicy(num_features=2, num_actions=3)


def test_sampled_policy_value_matches_exact_discounted_value():
    """simulate.evaluate of a memory policy agrees with (1 - gamma)^-1 eta of the restarted chain."""
    model = problems.tiger()
    policy = fsc(model, 2)
    params = policy.init_params(jax.random.key(4))
    ev = simulate.evaluate(jax.random.key(0), model, policy.as_policy(params), num_episodes=4000)
    with jax.enable_x64(True):
        m64 = problems.tiger()
        p64 = to64(params)
        rho = 1 - 0.95
        value = average_reward(m64, policy, p64, rho) / rho
    half = 1.96 * float(ev.stderr) + ev.truncation_bound + 1e-3
    assert abs(float(ev.mean) - value) < 1.5 * half, (float(ev.mean), value)


# ------------------------------------------------------------ GSEARCH and CG
def quadratic(n, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, n))
    Q = jnp.asarray(B @ B.T + n * np.eye(n))
    b = jnp.asarray(rng.normal(size=n))
    return Q, b, (lambda key, theta: b - Q @ theta)    # the gradient of b.theta - theta'Q theta/2


@pytest.mark.parametrize("s0,branch", [(100.0, "halve"), (1e-4, "double")])
def test_gsearch_finds_the_exact_line_maximum(s0, branch):
    with jax.enable_x64(True):
        Q, b, grad = quadratic(4)
        theta = jnp.asarray(np.random.default_rng(1).normal(size=4))
        h = grad(None, theta)
        exact = float(h @ (b - Q @ theta) / (h @ Q @ h))
        line = conjpomdp.gsearch(jax.random.key(0), grad, theta, h, s0, 1e-12)
        s_minus, s_plus = map(float, line.bracket)
        assert bool(line.secant)
        if branch == "halve":
            assert s_plus < s0 and s_plus == 2 * s_minus
        else:
            assert s_minus > s0 and s_plus == 2 * s_minus
        assert s_minus <= exact <= s_plus
        np.testing.assert_allclose(float(line.step), exact, rtol=1e-10)
        np.testing.assert_allclose(line.params, theta + exact * h, rtol=1e-10)


def test_gsearch_uses_the_midpoint_without_a_sign_change():
    with jax.enable_x64(True):
        grad = lambda key, theta: jnp.ones_like(theta)  # noqa: E731  (always uphill)
        line = conjpomdp.gsearch(jax.random.key(0), grad, jnp.zeros(2), jnp.ones(2), 1.0, 1e-6, max_line_steps=5)
        assert not bool(line.secant)
        assert int(line.evaluations) == 6  # s0 and five doublings, capped
        np.testing.assert_allclose(float(line.step), (16.0 + 32.0) / 2)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_conjpomdp_solves_a_quadratic_in_n_iterations(n):
    with jax.enable_x64(True):
        Q, b, grad = quadratic(n, seed=n)
        theta, state = conjpomdp.conjpomdp(jax.random.key(0), grad, jnp.zeros(n), s0=1e-3, eps=1e-20,
                                           max_iterations=n + 5)
        assert int(state.iteration) <= n
        np.testing.assert_allclose(theta, jnp.linalg.solve(Q, b), rtol=1e-8, atol=1e-10)


def test_conjpomdp_accepts_pytrees():
    with jax.enable_x64(True):
        Q, b, grad = quadratic(3)
        tree_grad = lambda key, p: {"a": grad(key, jnp.concatenate([p["a"], p["b"]]))[:2],  # noqa: E731
                                    "b": grad(key, jnp.concatenate([p["a"], p["b"]]))[2:]}
        params, _ = conjpomdp.conjpomdp(jax.random.key(0), tree_grad, {"a": jnp.zeros(2), "b": jnp.zeros(1)},
                                        s0=1e-3, eps=1e-20)
        np.testing.assert_allclose(jnp.concatenate([params["a"], params["b"]]), jnp.linalg.solve(Q, b), rtol=1e-8)


# ------------------------------------------------------------------ solvers
def test_conjpomdp_reaches_079_on_three_state_for_5_seeds():
    model = problems.three_state()
    for seed in range(5):
        result = conjpomdp.solve(model, time_limit=60, seed=seed)
        assert result.info["exact_average_reward"] >= 0.79, (seed, result.info)
        assert result.solve_seconds < 60
        assert result.lower_bound is None and result.upper_bound is None
        assert result.history and result.history[-1][3] == result.info["iterations"]


def test_gpomdp_solver_on_three_state_is_reproducible():
    model = problems.three_state()
    config = gpomdp.Config(num_steps=200, num_chains=16, learning_rate=0.5, num_restarts=2)
    a = gpomdp.solve(model, time_limit=60, seed=3, config=config, max_iterations=40)
    b = gpomdp.solve(model, time_limit=60, seed=3, config=config, max_iterations=40)
    assert a.info["params"] == b.info["params"]
    assert a.info["iterations"] == 40 and a.info["exact_average_reward"] > 0.7


def test_solvers_are_registered():
    assert "gpomdp" in SOLVERS and "conjpomdp" in SOLVERS
