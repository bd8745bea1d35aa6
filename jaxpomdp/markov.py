"""Exact average-reward quantities of a policy on a tabular model (references for GPOMDP).

A stochastic policy (:mod:`jaxpomdp.stochastic`) on a
:class:`~jaxpomdp.model.TabularPOMDP` induces a Markov chain on
``x = (state s, last observation y, memory g)`` (:func:`induced_chain`). For that
chain, with ``P = P(theta)`` its transition matrix, ``pi`` its stationary
distribution, ``e`` the ones vector and ``r(x) = E[R(s, u) | x]`` the expected
reward of the step taken from ``x``, this module computes exactly (Baxter &
Bartlett 2001; project ``docs/ALGORITHMS.md`` §3):

* ``eta = pi' r`` (:func:`average_reward`);
* ``grad eta = pi' (grad r) + pi' (grad P) (I - P + e pi')^{-1} r``  (:func:`gradient`);
* ``grad_beta eta = pi' (grad r) + beta pi' (grad P) J_beta`` with
  ``J_beta = (I - beta P)^{-1} r``, the limit of GPOMDP's ``Delta_T``
  (:func:`beta_gradient`);
* ``E[Delta_T]`` from the start distribution, exactly, by the recursion
  ``W_{t+1} = beta W_t P + [p_t grad_k P]_k``, ``p_{t+1} = p_t P``,
  ``E[Delta_T] = (1/T) sum_{t<T} (beta W_t r + p_t grad r)`` (:func:`expected_estimate`).

**Rewards.** A simulator pays ``r_{t+1} = R(s_t, u_t)`` for the step it takes, so
the reward here belongs to a (state, action) pair and, through the policy,
depends on ``theta``: hence the ``grad r`` terms. The paper's formulas are the
case of a reward ``r_s(x')`` received on arrival, ``r = P r_s`` (then
``grad_beta eta = pi' (grad P) (I - beta P)^{-1} r_s`` exactly as in the paper;
the two estimators have the same expectation at every ``T``). The identity
``grad eta = (1 - beta) (grad pi') J_beta + grad_beta eta`` holds in this form for
every ``beta`` (with the paper's arrival reward and its ``J_beta`` it reads
``(1 - beta) (grad pi') J_beta + beta grad_beta eta``); the tests check both.

All functions take ``chain_fn(params) -> Chain`` and differentiate it with
``jax.jacfwd`` over the flattened parameters; gradients come back as pytrees
shaped like ``params``. Dense ``[X, X]`` algebra: for small models (tests and
exact references), ``X = S (O + 1) M``. The stationary distribution must be
unique (one recurrent class).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxpomdp.model import TabularPOMDP, dense_transitions
from jaxpomdp.precision import exact
from jaxpomdp.stochastic import observation_features

__all__ = ["Chain", "induced_chain", "stationary_distribution", "average_reward", "gradient",
           "beta_gradient", "stationary_gradient", "expected_estimate", "chain_derivatives"]


class Chain(NamedTuple):
    """A finite Markov chain with rewards.

    Attributes:
      transition: float[X, X], ``P[x, x']``.
      reward: float[X], the expected reward of the step taken from ``x``.
      start: float[X], the distribution of ``x_0``.
    """

    transition: jax.Array
    reward: jax.Array
    start: jax.Array


@exact
def induced_chain(model: TabularPOMDP, policy: Any, params: Any, restart_prob=0.0) -> Chain:
    """The chain a stochastic policy induces on ``(state, last observation, memory)``.

    ``x = (s * (O + 1) + y) * M + g``; ``y = O`` stands for "no observation yet"
    (the start of an episode, where the policy sees the zero feature vector,
    :func:`jaxpomdp.stochastic.initial_observation`). From ``x`` the policy draws
    ``(h, u)``, the model moves to ``s' ~ T(.|s, u)`` and emits ``y' ~ Z(.|u, s')``,
    and ``x' = (s', y', h)``; the reward is ``R(s, u)``. This is exactly the process
    :func:`jaxpomdp.solvers.gpomdp.gpomdp` samples. The start is ``b0`` with no
    observation and memory 0. With ``restart_prob`` every step goes back to the
    start with that probability (``P <- (1 - rho) P + rho e start'``, as
    :func:`jaxpomdp.solvers.gpomdp.gpomdp` samples it); with ``rho = 1 - discount``
    ``eta = (1 - discount) V(b0)``, the discounted value of an episode from ``b0``.
    """
    S, O = model.num_states, model.num_observations
    M = policy.num_memory
    T = dense_transitions(model)                                        # [A, S, S']
    Z = model.obs_prob                                                  # [A, S', O]
    obs = jax.vmap(lambda o: observation_features(model, o))(jnp.arange(O))
    phi = jnp.concatenate([obs, jnp.zeros_like(obs[:1])])               # [O+1, F]
    logp = jax.vmap(lambda f: jax.vmap(lambda g: policy.log_probs(params, g, f))(jnp.arange(M)))(phi)
    pol = jnp.exp(logp)                                                 # [O+1, M(g), M(h), A]
    P = jnp.einsum("yghu,usS,uSY->sygSYh", pol, T.astype(pol.dtype), Z.astype(pol.dtype))
    P = jnp.pad(P, ((0, 0),) * 4 + ((0, 1), (0, 0)))                    # y' = O never reached again
    X = S * (O + 1) * M
    reward = jnp.einsum("yghu,us->syg", pol, model.reward.astype(pol.dtype)).reshape(X)
    start = jnp.zeros((S, O + 1, M), pol.dtype).at[:, O, 0].set(model.initial_belief.astype(pol.dtype))
    start = start.reshape(X)
    rho = jnp.asarray(restart_prob, pol.dtype)
    P = (1 - rho) * P.reshape(X, X) + rho * start[None, :]
    return Chain(P, reward, start)


@exact
def stationary_distribution(P: jax.Array) -> jax.Array:
    """The stationary distribution ``pi`` of ``P``: solves ``pi' (I - P + e e') = e'``."""
    X = P.shape[0]
    return jnp.linalg.solve((jnp.eye(X, dtype=P.dtype) - P + 1.0).T, jnp.ones(X, P.dtype))


def _flat(chain_fn, params):
    flat, unravel = ravel_pytree(params)
    return flat, unravel, lambda f: chain_fn(unravel(f))


def chain_derivatives(chain_fn: Callable[[Any], Chain], params: Any):
    """``(chain, dP [K, X, X], dr [K, X], unravel)``: the chain and its derivatives by the K flat parameters."""
    flat, unravel, fn = _flat(chain_fn, params)
    chain = fn(flat)
    dP, dr = jax.jacfwd(lambda f: tuple(fn(f)[:2]))(flat)
    return chain, jnp.moveaxis(dP, -1, 0), jnp.moveaxis(dr, -1, 0), unravel


@exact
def average_reward(chain_fn: Callable[[Any], Chain], params: Any) -> jax.Array:
    """``eta(theta) = pi' r``."""
    chain = chain_fn(params)
    return stationary_distribution(chain.transition) @ chain.reward


@exact
def stationary_gradient(chain_fn: Callable[[Any], Chain], params: Any) -> jax.Array:
    """``grad pi'``, float[K, X] (K flat parameters): ``pi' (grad_k P) (I - P + e pi')^{-1}``."""
    chain, dP, _, _ = chain_derivatives(chain_fn, params)
    P = chain.transition
    pi = stationary_distribution(P)
    fundamental = jnp.eye(P.shape[0], dtype=P.dtype) - P + jnp.outer(jnp.ones_like(pi), pi)
    return jnp.linalg.solve(fundamental.T, jnp.einsum("x,kxy->yk", pi, dP)).T


@exact
def gradient(chain_fn: Callable[[Any], Chain], params: Any) -> Any:
    """``grad eta = pi' (grad r) + pi' (grad P) (I - P + e pi')^{-1} r``, shaped like ``params``."""
    chain, dP, dr, unravel = chain_derivatives(chain_fn, params)
    P, r = chain.transition, chain.reward
    pi = stationary_distribution(P)
    fundamental = jnp.eye(P.shape[0], dtype=P.dtype) - P + jnp.outer(jnp.ones_like(pi), pi)
    v = jnp.linalg.solve(fundamental, r)
    return unravel(dr @ pi + jnp.einsum("x,kxy,y->k", pi, dP, v))


@exact
def beta_gradient(chain_fn: Callable[[Any], Chain], params: Any, beta) -> Any:
    """``grad_beta eta = pi' (grad r) + beta pi' (grad P) J_beta``, ``J_beta = (I - beta P)^{-1} r``.

    The limit of GPOMDP's ``Delta_T`` as ``T -> infinity``, shaped like ``params``.
    """
    chain, dP, dr, unravel = chain_derivatives(chain_fn, params)
    P, r = chain.transition, chain.reward
    pi = stationary_distribution(P)
    J = jnp.linalg.solve(jnp.eye(P.shape[0], dtype=P.dtype) - beta * P, r)
    return unravel(dr @ pi + beta * jnp.einsum("x,kxy,y->k", pi, dP, J))


@exact
def expected_estimate(chain_fn: Callable[[Any], Chain], params: Any, beta, num_steps: int) -> Any:
    """``E[Delta_T]``, the exact expectation of GPOMDP's estimate after ``T = num_steps`` steps.

    From ``chain.start``; ``W_{t+1} = beta W_t P + [p_t grad_k P]_k``, ``p_{t+1} = p_t P``
    and ``E[r_{t+1} z_{t+1}] = beta W_t r + p_t grad r`` (``W_t[k, x] = E[z_t[k] 1{x_t = x}]``).
    Shaped like ``params``.
    """
    chain, dP, dr, unravel = chain_derivatives(chain_fn, params)
    P, r = chain.transition, chain.reward

    def step(carry, _):
        W, p = carry
        term = beta * (W @ r) + dr @ p
        W = beta * (W @ P) + jnp.einsum("x,kxy->ky", p, dP)
        return (W, p @ P), term

    W0 = jnp.zeros(dr.shape, P.dtype)
    _, terms = lax.scan(step, (W0, chain.start), None, length=num_steps)
    return unravel(jnp.mean(terms, axis=0))
