"""Rollouts and Monte Carlo policy evaluation with confidence intervals.

Works with any :class:`~jaxpomdp.model.GenerativePOMDP` (``initial_state``,
``step``, ``discount``) and any policy of :mod:`jaxpomdp.policy` (``init``,
``act``, ``update``). Trajectories are time-major; one episode per call of
:func:`rollout`, batched by ``jax.vmap`` (as :func:`evaluate` does).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpomdp.model import as_simulator
from jaxpomdp.policy import as_policy

__all__ = ["Trajectory", "Evaluation", "rollout", "evaluate", "default_horizon",
           "MAX_DEFAULT_HORIZON"]

#: Cap on the horizon :func:`default_horizon` chooses.
MAX_DEFAULT_HORIZON = 2000


class Trajectory(NamedTuple):
    """One episode, time-major (``H`` steps).

    Attributes:
      states: [H, ...] the state ``s_t`` in which ``a_t`` was taken.
      actions: int32[H] ``a_t``.
      observations: int32[H] ``o_t``, received after ``a_t``.
      rewards: float[H] ``r_t``; 0 once the episode is done.
      dones: bool[H] True from the step that reached a terminal state on.
      discounted_return: float[] ``sum_t gamma^t r_t``.

    After the first ``done`` the state and the policy's memory stay frozen and
    the rewards are 0; the actions and observations there are padding.
    """

    states: Any
    actions: jax.Array
    observations: jax.Array
    rewards: jax.Array
    dones: jax.Array
    discounted_return: jax.Array


class Evaluation(NamedTuple):
    """A Monte Carlo estimate of a policy's expected discounted return from ``b0``.

    Attributes:
      mean: float[] the sample mean of the truncated discounted returns.
      stderr: float[] its standard error, ``std(returns, ddof=1) / sqrt(n)`` (``inf``
        when ``n = 1``).
      ci95: ``(lo, hi)`` = ``mean -+ 1.96 stderr``, the normal 95% interval for the
        expected *truncated* return.
      num_episodes: int, the number of episodes ``n``.
      horizon: int, the number of steps ``H`` of each episode.
      truncation_bound: float, ``gamma^H max|R| / (1 - gamma)``, a bound on the
        return lost by stopping at ``H`` (``inf`` when ``gamma = 1`` or ``max|R|``
        is unknown). An interval for the infinite-horizon value is ``ci95``
        widened by it on both sides.
    """

    mean: jax.Array
    stderr: jax.Array
    ci95: tuple[jax.Array, jax.Array]
    num_episodes: int
    horizon: int
    truncation_bound: float


def _where_tree(pred, on_true, on_false):
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), on_true, on_false)


def rollout(key: jax.Array, model: Any, policy: Any, horizon: int) -> Trajectory:
    """Simulates one episode of ``horizon`` steps of a policy.

    ``s_0 ~ b0``; at each step ``a_t = policy.act(key, m_t)``, ``(s_{t+1}, o_t, r_t,
    done) = model.step(key, s_t, a_t)``, ``m_{t+1} = policy.update(model, m_t, a_t,
    o_t)``. A ``lax.scan`` over time; no host round-trip.

    Args:
      key: a PRNG key.
      model: a :class:`~jaxpomdp.model.GenerativePOMDP` (e.g. a ``TabularPOMDP``).
      policy: a policy (``init``, ``act``, ``update``; see :mod:`jaxpomdp.policy`).
      horizon: int, static, the number of steps ``H``.

    Under your own ``jit``, a model or policy written as a plain Python class (not a
    pytree) must first go through :func:`~jaxpomdp.model.as_simulator` or
    :func:`~jaxpomdp.policy.as_policy` (which also check them); :func:`evaluate`
    does that itself.

    Returns:
      A :class:`Trajectory` with ``discounted_return = sum_{t<H} gamma^t r_t``.

    Example:
      >>> import jax
      >>> from jaxpomdp import problems
      >>> from jaxpomdp.policy import BlindPolicy
      >>> run = jax.jit(rollout, static_argnums=3)
      >>> traj = run(jax.random.key(0), problems.tiger(), BlindPolicy(jnp.int32(0)), 3)
      >>> traj.rewards.tolist(), round(float(traj.discounted_return), 4)
      ([-1.0, -1.0, -1.0], -2.8525)
    """
    key_init, key_steps = jax.random.split(key)
    keys = jax.random.split(key_steps, horizon)
    step = _step_fn(model, policy)
    init = (model.initial_state(key_init), policy.init(model), jnp.zeros((), bool))
    _, (states, actions, observations, rewards, dones) = lax.scan(step, init, keys)
    return Trajectory(states, actions, observations, rewards, dones, _discounted(model, rewards))


def _step_fn(model: Any, policy: Any):
    """One step of an episode, ``(state, memory, done), key -> carry, (state, action, obs, reward, done)``;
    after ``done`` the state and memory stay frozen and the reward is 0."""
    def step(carry, key):
        state, memory, done = carry
        key_act, key_step = jax.random.split(key)
        if hasattr(policy, "sample"):  # a policy that draws memory with its action
            action, memory_after = policy.sample(key_act, memory)
        else:
            action, memory_after = policy.act(key_act, memory), memory
        action = jnp.asarray(action, jnp.int32)
        next_state, obs, reward, terminal = model.step(key_step, state, action)
        next_memory = policy.update(model, memory_after, action, obs)
        reward = jnp.where(done, jnp.zeros_like(reward), reward)
        next_done = done | terminal
        carry = (_where_tree(done, state, next_state), _where_tree(done, memory, next_memory), next_done)
        return carry, (state, action, jnp.asarray(obs, jnp.int32), reward, next_done)
    return step


def _discounted(model: Any, rewards: jax.Array) -> jax.Array:
    """``sum_t gamma^t rewards[..., t]``."""
    horizon = rewards.shape[-1]
    discounts = jnp.asarray(model.discount, rewards.dtype) ** jnp.arange(horizon, dtype=rewards.dtype)
    return jnp.sum(discounts * rewards, axis=-1)


def _batch_returns(keys: jax.Array, model: Any, policy: Any, horizon: int) -> jax.Array:
    """``rollout(keys[i], model, policy, horizon).discounted_return`` for a batch of keys, the same numbers,
    in a loop over time that stops once every episode of the batch is done (a terminating model then skips
    the steps that would only add zeros)."""
    B = keys.shape[0]
    step = jax.vmap(_step_fn(model, policy))
    split = jax.vmap(jax.random.split)(keys)
    step_keys = jax.vmap(lambda k: jax.random.split(k, horizon))(split[:, 1])          # [B, H]
    carry = jax.vmap(lambda k: (model.initial_state(k), policy.init(model), jnp.zeros((), bool)))(split[:, 0])
    reward_t = jax.eval_shape(step, carry, step_keys[:, 0])[1][3]
    rewards = jnp.zeros((B, horizon), reward_t.dtype)

    def body(c):
        t, carry, rewards = c
        carry, out = step(carry, step_keys[:, t])
        return t + 1, carry, rewards.at[:, t].set(out[3])

    def running(c):
        t, carry, _ = c
        return (t < horizon) & ~jnp.all(carry[2])
    _, _, rewards = lax.while_loop(running, body, (jnp.int32(0), carry, rewards))
    return _discounted(model, rewards)


def default_horizon(discount: float, *, tolerance: float = 0.01, cap: int = MAX_DEFAULT_HORIZON) -> int:
    """The smallest ``H`` with ``gamma^H max|R| / (1 - gamma) <= tolerance max|R|``.

    That is ``H = ceil(log(tolerance (1 - gamma)) / log(gamma))``, capped at ``cap``
    (``1`` when ``gamma = 0``).

    Raises:
      ValueError: ``gamma >= 1`` (give an explicit horizon) or ``gamma < 0``.

    Example:
      >>> default_horizon(0.95)
      149
    """
    gamma = float(discount)
    if not 0 <= gamma < 1:
        raise ValueError(f"discount = {gamma!r}: a default horizon needs 0 <= discount < 1; pass horizon=")
    if gamma == 0:
        return 1
    return min(cap, max(1, math.ceil(math.log(tolerance * (1 - gamma)) / math.log(gamma))))


def _max_abs_reward(model: Any) -> Optional[float]:
    known = getattr(model, "max_abs_reward", None)  # a simulator may state it
    if known is not None:
        return float(known)
    reward = getattr(model, "reward", None)
    return None if reward is None else float(np.max(np.abs(np.asarray(reward)), initial=0.0))


@functools.partial(jax.jit, static_argnames=("num_episodes", "horizon", "batch_size"))
def _returns_stats(key, model, policy, num_episodes, horizon, batch_size):
    # equal batches (the last one padded with repeated keys, its extra returns
    # dropped) so that the rollout is compiled once, whatever num_episodes is
    num_batches = -(-num_episodes // batch_size)
    per_batch = -(-num_episodes // num_batches)
    keys = jax.random.split(key, num_episodes)
    keys = jnp.concatenate([keys, keys[: num_batches * per_batch - num_episodes]])
    keys = keys.reshape((num_batches, per_batch) + keys.shape[1:])  # legacy uint32[2] keys too
    returns = lax.map(lambda k: _batch_returns(k, model, policy, horizon), keys)
    returns = returns.reshape(-1)[:num_episodes]
    mean = jnp.mean(returns)
    if num_episodes == 1:  # one sample says nothing about the spread
        return mean, jnp.full_like(mean, jnp.inf)
    return mean, jnp.std(returns, ddof=1) / jnp.sqrt(jnp.asarray(num_episodes, returns.dtype))


def _check_fits(model: Any, policy: Any) -> None:
    """Refuses (ValueError) a built-in policy that does not fit the model: indices past the end are
    clamped inside jit, so an action 17 of a 3-action model would be simulated as action 2."""
    from jaxpomdp.controller import ControllerPolicy
    from jaxpomdp.policy import AlphaVectorPolicy, BlindPolicy

    def concrete(*xs):
        return [None if isinstance(x, jax.core.Tracer) else np.asarray(x) for x in xs]

    A, S, O = (getattr(model, n, None) for n in ("num_actions", "num_states", "num_observations"))
    checks = []  # (what, values, upper end)
    if isinstance(policy, BlindPolicy):
        checks.append(("the action", *concrete(policy.action), A))
    elif isinstance(policy, AlphaVectorPolicy):
        alphas, actions = concrete(policy.alphas, policy.actions)
        if alphas is not None and S is not None and (alphas.ndim != 2 or alphas.shape[1] != S):
            raise ValueError(f"the policy's alpha-vectors have shape {alphas.shape}; this model has {S} states")
        checks.append(("an action", actions, A))
    elif isinstance(policy, ControllerPolicy):
        c = policy.controller
        actions, edges, start = concrete(c.actions, c.edges, c.start)
        if edges is not None and O is not None and (edges.ndim != 2 or edges.shape[1] != O):
            raise ValueError(f"the controller's edges have shape {edges.shape}; this model has {O} observations")
        checks += [("an action", actions, A), ("an edge", edges, None if actions is None else len(actions)),
                   ("the start node", start, None if actions is None else len(actions))]
    for what, values, end in checks:
        if values is not None and end is not None and values.size and not (
                (values >= 0).all() and (values < end).all()):
            bad = values.ravel()[np.flatnonzero((values.ravel() < 0) | (values.ravel() >= end))[0]]
            raise ValueError(f"{what} of the policy is {int(bad)}, not in [0, {end})")


def evaluate(key: jax.Array, model: Any, policy: Any, *, num_episodes: int = 1000,
             horizon: Optional[int] = None, batch_size: int = 1024,
             max_abs_reward: Optional[float] = None) -> Evaluation:
    """Estimates a policy's expected discounted return from ``b0`` by simulation.

    Runs ``num_episodes`` independent rollouts of ``horizon`` steps, at most
    ``batch_size`` at a time (vmapped; the batches run in sequence to bound
    memory), in one jit-compiled function (compiled once per model/policy
    structure, number of episodes, horizon and batch size; a policy with a
    ``bucketed()`` method, such as an alpha-vector policy or a followed controller,
    is simulated padded to :func:`~jaxpomdp.policy.bucket_size` rows, so policies
    of nearby sizes share the program). Episode ``i`` uses the
    ``i``-th key of ``jax.random.split(key, num_episodes)``, so the result does not
    depend on ``batch_size``; each return is :func:`rollout`'s for that key. A batch
    stops simulating once all its episodes have reached a terminal state (the rest
    of the horizon would only add zeros).

    Args:
      key: a PRNG key.
      model: a :class:`~jaxpomdp.model.GenerativePOMDP` with a concrete ``discount`` (a plain
        Python class will do; one that breaks the protocol raises
        :class:`~jaxpomdp.errors.InvalidModelError`, see :func:`~jaxpomdp.model.as_simulator`).
      policy: a policy (see :mod:`jaxpomdp.policy`; a plain Python class will do, one that
        breaks the interface raises :class:`~jaxpomdp.errors.InvalidPolicyError`, see
        :func:`~jaxpomdp.policy.as_policy`).
      num_episodes: number of episodes (with only 1 the standard error is ``inf``).
      horizon: steps per episode; by default :func:`default_horizon` of the discount
        (the truncation error is then at most 1% of ``max|R|``). Required when the
        discount is 1.
      batch_size: episodes simulated at once.
      max_abs_reward: ``max |R|``; read from ``model.max_abs_reward`` or ``model.reward``
        when the model has one.
        Needed for the default horizon and ``truncation_bound``.

    Returns:
      An :class:`Evaluation`.

    Example:
      >>> import jax
      >>> from jaxpomdp import problems, policy
      >>> m = problems.tiger()
      >>> ev = evaluate(jax.random.key(0), m, policy.BlindPolicy(jnp.int32(1)), num_episodes=2000)  # open-left
      >>> ev.horizon, bool(ev.ci95[0] - ev.truncation_bound < -900 < ev.ci95[1] + ev.truncation_bound)
      (149, True)
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes = {num_episodes}: need at least 1")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: need at least 1")
    model = as_simulator(model)
    gamma = float(np.asarray(model.discount))
    r_max = _max_abs_reward(model) if max_abs_reward is None else float(max_abs_reward)
    if horizon is None:
        if r_max is None:
            raise ValueError("the model has no reward table: pass horizon= or max_abs_reward=")
        horizon = default_horizon(gamma)
    horizon = int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon = {horizon}: need at least 1 step")
    truncation = math.inf if (gamma >= 1 or r_max is None) else gamma ** horizon * r_max / (1 - gamma)
    _check_fits(model, policy)
    if hasattr(policy, "bucketed"):  # the same policy, padded: nearby sizes share the compiled program
        policy = policy.bucketed()
    policy = as_policy(policy, model)
    mean, stderr = _returns_stats(key, model, policy, num_episodes, horizon,
                                  min(batch_size, num_episodes))
    return Evaluation(mean, stderr, (mean - 1.96 * stderr, mean + 1.96 * stderr),
                      num_episodes, horizon, truncation)
