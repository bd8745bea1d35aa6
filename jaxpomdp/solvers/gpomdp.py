"""GPOMDP and OLPOMDP (Baxter & Bartlett 2001): policy gradients from sample paths.

GPOMDP follows one sample path of ``T`` steps of a
:class:`~jaxpomdp.model.GenerativePOMDP` under a stochastic policy
(:mod:`jaxpomdp.stochastic`), carrying the eligibility trace ``z`` and the running
estimate ``Delta`` exactly as in the paper (project ``docs/ALGORITHMS.md`` §3)::

    z_0 = 0,  Delta_0 = 0
    z_{t+1}     = beta z_t + grad_theta log mu(h_t, u_t | theta, g_t, y_t)
    Delta_{t+1} = Delta_t + (r_{t+1} z_{t+1} - Delta_t) / (t + 1)

``beta`` discounts the trace only; rewards are not discounted. ``r_{t+1}`` is the
reward the simulator pays for the step ``(s_t, u_t)``. ``Delta_T`` estimates
``grad_beta eta`` (:func:`jaxpomdp.markov.beta_gradient`). The score is JAX's
gradient of the policy's log-probability. :func:`gpomdp` runs ``num_chains``
independent paths at once (``vmap`` of one ``lax.scan``), returns their mean, its
standard error across chains and the average reward, and is compiled once per
shape.

Episodic simulators become continuing chains: when ``step`` reports ``done`` the
next state is drawn from ``initial_state`` and the policy starts afresh (memory
0, no observation), while the trace carries on, as for any other transition.

OLPOMDP is the online variant: the same trace, ``theta += step_size r_{t+1}
z_{t+1}`` at every step (:func:`olpomdp`; with several chains the update is their
mean).

:func:`solve` ascends the GPOMDP gradient with an optax optimizer (the command
line's ``--solver gpomdp``); :mod:`jaxpomdp.solvers.conjpomdp` uses it as the
``GRAD`` of CONJPOMDP.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxpomdp import distributed, stochastic
from jaxpomdp.checkpoint import Checkpoint, Checkpointer, model_fingerprint, start_seconds, stopped
from jaxpomdp.errors import ConfigError
from jaxpomdp.io.limits import refusal
from jaxpomdp.model import as_simulator
from jaxpomdp.precision import HIGHEST
from jaxpomdp.solvers.baseline import (SolveResult, all_finite, check_finite, check_model, check_solve_args,
                                       compile_cached)

__all__ = ["GradientEstimate", "gpomdp", "olpomdp", "restart_probability", "default_policy", "Config", "solve",
           "exact_average_reward", "objective_summary", "policy_info"]


class GradientEstimate(NamedTuple):
    """What :func:`gpomdp` returns.

    Attributes:
      gradient: the mean over chains of ``Delta_T``, shaped like ``params``.
      stderr: its standard error across chains (``std / sqrt(C)``, ``inf`` for one chain).
      average_reward: float[] the mean reward per step over all chains and steps.
      average_reward_stderr: float[] its standard error across chains.
      num_steps: int, environment steps simulated (``T`` times the number of chains).
    """

    gradient: Any
    stderr: Any
    average_reward: jax.Array
    average_reward_stderr: jax.Array
    num_steps: int


def z_dtype(z):
    return jax.tree.leaves(z)[0].dtype


def _chain_step(model, policy, params, carry, key, *, trace_decay, restart_prob):
    """One step of one chain; returns the new carry, the reward and the new trace."""
    state, memory, phi, z = carry
    k_uniform, k_step, k_reset = jax.random.split(key, 3)
    u_act, u_coin = jax.random.uniform(k_uniform, (2,), z_dtype(z))
    next_memory, action = stochastic.sample_with_uniform(u_act, policy, params, memory, phi)
    score = jax.grad(stochastic.log_prob, argnums=1)(policy, params, memory, phi, next_memory, action)
    z = jax.tree.map(lambda zi, si: trace_decay * zi + si.astype(zi.dtype), z, score)
    next_state, obs, reward, done = model.step(k_step, state, action)
    next_phi = stochastic.observation_features(model, obs).astype(phi.dtype)
    # an episode that ends restarts: s ~ b0, memory 0, no observation (the trace carries on);
    # so does any step with probability restart_prob (the discounted objective)
    done = done | (u_coin < restart_prob)
    restart = model.initial_state(k_reset)
    next_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), restart, next_state)
    next_memory = jnp.where(done, jnp.zeros_like(next_memory), next_memory)
    next_phi = jnp.where(done, jnp.zeros_like(next_phi), next_phi)
    return (next_state, next_memory, next_phi, z), reward, z


def _start(key, model, params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    phi = stochastic.initial_observation(model)
    return model.initial_state(key), jnp.zeros((), jnp.int32), phi, zeros


def _dtype(params):
    return jax.tree.leaves(params)[0].dtype


def _one_chain(key, model, policy, params, beta, restart_prob, baseline, num_steps):
    key_init, key_steps = jax.random.split(key)

    def step(carry, inputs):
        chain, delta, reward_sum = carry
        key, t = inputs
        chain, reward, z = _chain_step(model, policy, params, chain, key, trace_decay=beta,
                                       restart_prob=restart_prob)
        reward = reward.astype(beta.dtype)
        inv = 1.0 / (t + 1).astype(beta.dtype)
        delta = jax.tree.map(lambda d, zi: d + ((reward - baseline) * zi - d) * inv, delta, z)
        return (chain, delta, reward_sum + reward), None

    chain = _start(key_init, model, params)
    delta = jax.tree.map(jnp.zeros_like, params)
    inputs = (jax.random.split(key_steps, num_steps), jnp.arange(num_steps))
    (_, delta, reward_sum), _ = lax.scan(step, (chain, delta, jnp.zeros((), beta.dtype)), inputs)
    return delta, reward_sum / num_steps


def _mean_and_stderr(x):
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    if n == 1:
        return mean, jnp.full_like(mean, jnp.inf)
    return mean, jnp.std(x, axis=0, ddof=1) / jnp.sqrt(jnp.asarray(n, x.dtype))


@functools.partial(jax.jit, static_argnames=("num_steps", "num_chains"))
def _gpomdp(key, model, policy, params, beta, restart_prob, num_steps, num_chains, baseline=0.0):
    dtype = _dtype(params)
    beta = jnp.asarray(beta, dtype)
    restart_prob = jnp.asarray(restart_prob, dtype)
    baseline = jnp.asarray(baseline, dtype)
    keys = distributed.constrain(jax.random.split(key, num_chains))  # chains split over a mesh's devices
    deltas, rewards = jax.vmap(
        lambda k: _one_chain(k, model, policy, params, beta, restart_prob, baseline, num_steps))(keys)
    stats = jax.tree.map(_mean_and_stderr, deltas)
    grad = jax.tree.map(lambda _, s: s[0], params, stats)
    stderr = jax.tree.map(lambda _, s: s[1], params, stats)
    reward, reward_se = _mean_and_stderr(rewards)
    return grad, stderr, reward, reward_se


def _check(beta, restart_prob, num_steps, num_chains):
    if not 0 <= float(beta) < 1:
        raise ValueError(f"beta = {beta!r}: the trace discount must be in [0, 1)")
    if not 0 <= float(restart_prob) <= 1:
        raise ValueError(f"restart_prob = {restart_prob!r} must be in [0, 1]")
    if int(num_steps) < 1 or int(num_chains) < 1:
        raise ValueError(f"num_steps and num_chains must be positive; got {num_steps}, {num_chains}")


def gpomdp(key: jax.Array, model: Any, policy: Any, params: Any, *, num_steps: int,
           beta: float, num_chains: int = 1, restart_prob: float = 0.0,
           baseline: float = 0.0) -> GradientEstimate:
    """Estimates ``grad_beta eta`` with GPOMDP on ``num_chains`` independent sample paths.

    Args:
      key: a PRNG key; chain ``i`` uses the ``i``-th key of ``split(key, num_chains)``.
      model: a ``GenerativePOMDP``.
      policy: a stochastic policy (:mod:`jaxpomdp.stochastic`).
      params: its parameters.
      num_steps: ``T``, steps per chain (static).
      beta: the trace discount, in ``[0, 1)`` (traced: changing it does not recompile).
      num_chains: independent chains (static).
      restart_prob: the probability that a step restarts the episode (``s ~ b0``,
        memory 0, no observation). 0 (the paper) estimates the gradient of the
        average reward; ``1 - discount`` (:func:`restart_probability` of
        ``"discounted"``) that of ``(1 - discount) V(b0)``, the discounted value from
        ``b0``, because the restarted chain's stationary law is the discounted
        occupancy of an episode.
      baseline: a constant subtracted from every reward in the ``Delta`` update
        (``(r_{t+1} - b) z_{t+1}``). The expectation is unchanged, because every
        score, hence the trace, has mean zero; the variance is lower when ``b``
        is near the average reward (Weaver & Tao 2001). 0 is the paper's estimator.

    Returns:
      A :class:`GradientEstimate`.

    Example:
      >>> import jax
      >>> from jaxpomdp import problems
      >>> from jaxpomdp.stochastic import LogisticPolicy
      >>> m = problems.three_state()
      >>> pol = LogisticPolicy(num_features=2)
      >>> est = gpomdp(jax.random.key(0), m, pol, pol.init_params(None), num_steps=1000,
      ...              beta=0.5, num_chains=64)
      >>> bool(est.gradient[0] < 0)   # more of action a1 earns less
      True
    """
    _check(beta, restart_prob, num_steps, num_chains)
    model = as_simulator(model)
    policy = stochastic.as_stochastic_policy(policy, model, params)
    grad, stderr, reward, reward_se = _gpomdp(key, model, policy, params, beta, restart_prob,
                                              int(num_steps), int(num_chains), baseline)
    return GradientEstimate(grad, stderr, reward, reward_se, int(num_steps) * int(num_chains))


@functools.partial(jax.jit, static_argnames=("num_steps", "num_chains"))
def _olpomdp(key, model, policy, params, beta, restart_prob, step_size, num_steps, num_chains):
    key_init, key_steps = jax.random.split(key)
    dtype = _dtype(params)
    beta, restart_prob, step_size = (jnp.asarray(x, dtype) for x in (beta, restart_prob, step_size))
    chains = jax.vmap(lambda k: _start(k, model, params))(distributed.constrain(jax.random.split(key_init, num_chains)))

    def step(carry, key):
        chains, params = carry
        one = lambda chain, k: _chain_step(model, policy, params, chain, k, trace_decay=beta,  # noqa: E731
                                           restart_prob=restart_prob)
        chains, rewards, z = jax.vmap(one)(chains, jax.random.split(key, num_chains))
        rewards = rewards.astype(dtype)
        update = jax.tree.map(lambda zi: jnp.tensordot(rewards, zi, axes=1, precision=HIGHEST) / num_chains, z)
        params = jax.tree.map(lambda p, u: p + step_size * u, params, update)
        return (chains, params), jnp.mean(rewards)

    (_, params), rewards = lax.scan(step, (chains, params), jax.random.split(key_steps, num_steps))
    return params, rewards


def olpomdp(key: jax.Array, model: Any, policy: Any, params: Any, *, num_steps: int, beta: float,
            step_size: float, num_chains: int = 1, restart_prob: float = 0.0):
    """OLPOMDP: ``theta += step_size r_{t+1} z_{t+1}`` at every step of ``num_chains`` paths.

    The chains share ``theta``; each step applies the mean of their updates.
    ``restart_prob`` as in :func:`gpomdp`.

    Returns:
      ``(params, rewards)``: the final parameters and float[num_steps], the mean
      reward over the chains at each step.
    """
    _check(beta, restart_prob, num_steps, num_chains)
    model = as_simulator(model)
    policy = stochastic.as_stochastic_policy(policy, model, params)
    return _olpomdp(key, model, policy, params, beta, restart_prob, step_size, int(num_steps), int(num_chains))


def restart_probability(model: Any, objective: str) -> float:
    """The ``restart_prob`` of an objective: ``"average"`` (the paper's average reward) -> 0;
    ``"discounted"`` (the discounted value from ``b0``) -> ``1 - discount``."""
    if objective == "average":
        return 0.0
    if objective == "discounted":
        gamma = float(model.discount)
        if not 0 <= gamma < 1:
            raise ValueError(f"the discounted objective needs 0 <= discount < 1; the model has {gamma}")
        return 1.0 - gamma
    raise ValueError(f"objective must be 'average' or 'discounted'; got {objective!r}")


# ------------------------------------------------------------------ the solver
def default_policy(model: Any, *, memory: int = 1):
    """The policy ``solve`` trains when none is given.

    The paper's :class:`~jaxpomdp.stochastic.LogisticPolicy` for a two-action
    model, else a :class:`~jaxpomdp.stochastic.SoftmaxPolicy` (``memory=1``) or a
    :class:`~jaxpomdp.stochastic.FiniteStateController` with ``memory`` states,
    all over the model's observation features.
    """
    F = stochastic.observation_feature_size(model)
    A = int(model.num_actions)
    if memory > 1:
        return stochastic.FiniteStateController(num_features=F, num_actions=A, num_memory=memory)
    if A == 2:
        return stochastic.LogisticPolicy(num_features=F)
    return stochastic.SoftmaxPolicy(num_features=F, num_actions=A)


class Config(NamedTuple):
    """Settings of :func:`solve`.

    Attributes:
      beta: the trace discount.
      num_steps: ``T``, steps per chain per gradient estimate.
      num_chains: chains per gradient estimate.
      learning_rate: the optax step size.
      optimizer: ``"adam"`` or ``"sgd"``.
      max_iterations: a cap on the number of gradient steps.
      memory: memory states of the default policy (1: memoryless).
      objective: ``"average"`` (the paper's average reward) or ``"discounted"``
        (the discounted value from ``b0``; see :func:`restart_probability`).
      num_restarts: independent runs from different random starting parameters,
        trained together in one vmapped call; the one whose estimated objective
        is best at the end is returned (policy gradients find local optima).
    """

    beta: float = 0.9
    num_steps: int = 500
    num_chains: int = 64
    learning_rate: float = 0.05
    optimizer: str = "adam"
    max_iterations: int = 100_000
    memory: int = 1
    objective: str = "average"
    num_restarts: int = 1


def exact_average_reward(model: Any, policy: Any, params: Any, restart_prob: float = 0.0) -> Optional[float]:
    """The exact ``eta`` (of the chain restarted with ``restart_prob``) for a small tabular model, else None."""
    from jaxpomdp import markov
    from jaxpomdp.model import TabularPOMDP
    if not isinstance(model, TabularPOMDP):
        return None
    X = model.num_states * (model.num_observations + 1) * policy.num_memory
    if X > 4000:
        return None
    chain_fn = lambda p: markov.induced_chain(model, policy, p, restart_prob)  # noqa: E731
    return float(markov.average_reward(chain_fn, params))


def policy_info(policy: Any, params: Any) -> dict:
    """JSON-serialisable description of a trained stochastic policy."""
    leaves = jax.tree.leaves(params)
    kind = type(getattr(policy, "wrapped", policy))  # a plain-class policy held as a StaticObject: its class
    return {"policy": kind.__name__, "memory_states": int(policy.num_memory),
            "parameters": int(sum(np.size(x) for x in leaves)),
            "params": jax.tree.map(lambda x: np.asarray(x).tolist(), params)}


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def _make_optimizer(config: Config):
    if config.optimizer == "adam":
        return optax.adam(config.learning_rate)
    if config.optimizer == "sgd":
        return optax.sgd(config.learning_rate)
    raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {config.optimizer!r}")


def objective_summary(model: Any, policy: Any, params: Any, objective: str) -> dict:
    """The exact average reward (and discounted value from ``b0``) where the model is small and tabular."""
    eta = exact_average_reward(model, policy, params)
    out = {"exact_average_reward": eta}
    if objective == "discounted":
        rho = restart_probability(model, objective)
        restarted = exact_average_reward(model, policy, params, rho)
        out["exact_discounted_value"] = None if restarted is None else restarted / rho
    return out


@functools.partial(jax.jit, static_argnames=("config",))
def _solve_iteration(key, params, opt_state, score, first, model, policy, rho, config):
    """One optimizer step of every restart (vmapped), their smoothed objective estimates and
    bool[R, 2]: whether each one's gradient estimate and new parameters are finite."""
    optimizer = _make_optimizer(config)

    def one(key, params, opt_state, baseline):
        grad, _, reward, _ = _gpomdp(key, model, policy, params, config.beta, rho, config.num_steps,
                                     config.num_chains, baseline)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grad), opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, reward, _global_norm(grad), jnp.stack([all_finite(grad), all_finite(params)])

    # the baseline is the smoothed average reward of earlier iterations: independent of this
    # iteration's samples, so the estimate stays unbiased
    R = score.shape[0]
    params, opt_state, reward, norm, finite = jax.vmap(one)(jax.random.split(key, R), params, opt_state, score)
    score = jnp.where(first, reward, 0.9 * score + 0.1 * reward)  # smoothed objective estimate
    return params, opt_state, reward, norm, score, finite


#: :func:`solve` and CONJPOMDP refuse policies whose parameters, with their gradients and
#: optimizer state, would exceed this (or the memory available).
MAX_POLICY_BYTES = 2 ** 32


def check_policy_size(policy: Any, count: int, copies: int = 4) -> None:
    """Raises ConfigError when ``count`` sets of ``policy.init_params`` (shapes only, nothing
    allocated) times ``copies`` (parameters, gradient, optimizer moments) would not fit."""
    keys = jax.ShapeDtypeStruct((count,), jax.random.key(0).dtype)
    try:
        shapes = jax.eval_shape(jax.vmap(policy.init_params), keys)
        need = copies * sum(int(np.prod(x.shape, dtype=object)) * x.dtype.itemsize for x in jax.tree.leaves(shapes))
    except (OverflowError, NotImplementedError):  # sizes past what JAX can count (2**64 random bits, int64 dims)
        need = 2 ** 64
    reason = refusal(need, "the policy's parameters, gradients and optimizer state would need about",
                     MAX_POLICY_BYTES, f" ({count} x {_describe_policy(policy)})",
                     hint="give fewer memory states (Config.memory, --memory) or restarts")
    if reason is not None:
        raise ConfigError(reason)


def _describe_policy(policy: Any) -> str:
    """A stable description of a stochastic policy's structure (its class and static fields), for
    a checkpoint's options: ``repr`` of the built-in (frozen dataclass) policies, else the class."""
    from jaxpomdp.model import StaticObject
    if isinstance(policy, StaticObject):  # a plain-class policy: describe the object it holds
        policy = policy.wrapped
    text = repr(policy)
    if " at 0x" in text:  # the default object repr names a memory address, different in every process
        text = f"{type(policy).__module__}.{type(policy).__qualname__}"
    return text


def _checkpoint_options(config: NamedTuple, seed: int, policy: Any, params: Any) -> dict:
    """The settings a policy-gradient checkpoint is made with: the config, the seed, the policy
    (:func:`_describe_policy`) and a fingerprint of the caller's starting ``params`` (None: drawn)."""
    return {"config": config._asdict(), "seed": int(seed), "policy": _describe_policy(policy),
            "params": None if params is None else model_fingerprint(jax.tree.map(np.asarray, params))}


def solve(model: Any, *, time_limit: Optional[float] = 60.0, target_gap: Optional[float] = None, seed: int = 0,
          callback: Optional[Callable[..., Any]] = None, config: Optional[Config] = None,
          policy: Any = None, params: Any = None, max_iterations: Optional[int] = None,
          gradient_tolerance: Optional[float] = None, checkpoint: Optional[Checkpointer] = None,
          resume: Optional[Checkpoint] = None, stop: Optional[Callable[[], bool]] = None,
          mesh: Optional[Mesh] = None) -> SolveResult:
    """Stochastic gradient ascent on the GPOMDP estimate with an optax optimizer.

    Each iteration estimates the gradient with :func:`gpomdp` (``config.num_chains``
    chains of ``config.num_steps`` steps, fresh keys) and applies one optimizer
    step (ascent: the optimizer sees ``-gradient``), for ``config.num_restarts``
    independent starting points at once (vmapped). Stops at the time limit
    (counted after the first compilation, reported as ``compile_seconds``; None:
    no limit), after ``max_iterations``, or when ``||gradient||`` of every restart
    falls below ``gradient_tolerance``. Each estimate subtracts a baseline from the rewards,
    the smoothed average reward of the earlier iterations (see :func:`gpomdp`). The restart with the best estimated objective (mean
    reward per step of its chains over the last iterations) is returned.

    ``target_gap`` is accepted for a uniform solver interface and ignored: a policy
    gradient method has no bounds, so ``lower_bound`` and ``upper_bound`` are None.
    ``callback(seconds, eta_estimate, grad_norm, iteration)`` reports progress (of
    the best restart; with the discounted objective ``eta_estimate`` is the
    average reward of the restarted chain, ``(1 - discount) V(b0)``); it may
    return ``False`` to stop. History rows are ``(seconds, eta_estimate,
    grad_norm, iteration, environment steps)``.
    ``info`` holds the policy's parameters, the exact ``eta`` (and discounted
    value) where the model is small and tabular, the steps simulated and
    ``stop_reason``: ``"max_iterations"``, ``"time limit"``, ``"gradient tolerance"``,
    ``"callback"`` or ``"stopped"``.

    Checkpoints (:mod:`jaxpomdp.checkpoint`):

    * ``checkpoint``: a :class:`~jaxpomdp.checkpoint.Checkpointer`: the state (every
      restart's parameters, the optimizer state and the smoothed objective
      estimates), the PRNG key, the iteration and environment-step counts and the
      history are written after an iteration once its interval has passed, and at
      the end.
    * ``resume``: a :class:`~jaxpomdp.checkpoint.Checkpoint` of ``gpomdp`` on this
      model with the same ``config``, ``seed``, policy and starting ``params``: the
      solve continues from it (``time_limit`` and ``max_iterations`` count what was
      done before it). Stopped and resumed, a solve ending by ``max_iterations`` (or
      ``gradient_tolerance``) gives exactly the result of one never stopped.
    * ``stop``: polled between iterations; once it returns True the solve stops
      there (``info["stop_reason"]`` ``"stopped"``), writing the checkpoint.

    ``mesh``: a :func:`jaxpomdp.distributed.make_mesh` mesh: the chains of each
    estimate are split over its devices (the parameters replicated); the result is
    the single-device one up to the order of floating-point sums.

    Raises:
      InvalidModelError: a tabular model holds a NaN or an infinity, or a simulator breaks the
        ``GenerativePOMDP`` protocol (:func:`~jaxpomdp.model.as_simulator`).
      InvalidPolicyError: ``policy`` breaks the stochastic-policy interface
        (:func:`~jaxpomdp.stochastic.as_stochastic_policy`; a plain Python class is accepted).
      CheckpointError: ``resume`` is of another solver, model or settings.
      NumericalError: a restart's gradient estimate, new parameters or reward
        estimate is not finite; ``last_good`` is the result of the parameters before
        that iteration.
    """
    check_solve_args(time_limit, target_gap, seed, max_iterations)
    del target_gap
    model = as_simulator(model)
    with distributed.using(mesh):
        return _solve(model, time_limit, seed, callback, config or Config(), policy, params, max_iterations,
                      gradient_tolerance, checkpoint, resume, stop)


def _solve(model, time_limit, seed, callback, config, policy, params, max_iterations, gradient_tolerance,
           checkpoint, resume, stop) -> SolveResult:
    check_model(model)
    if policy is None:
        policy = default_policy(model, memory=config.memory)
    policy = stochastic.as_stochastic_policy(policy, model, params)
    options = _checkpoint_options(config, seed, policy, params)
    if resume is not None:
        resume.check("gpomdp", model, options)
    rho = restart_probability(model, config.objective)
    _check(config.beta, rho, config.num_steps, config.num_chains)
    R = int(config.num_restarts)
    if R < 1:
        raise ValueError(f"num_restarts must be positive; got {R}")
    if params is None:
        check_policy_size(policy, R)
    key = jax.random.key(seed)
    key, k_init = jax.random.split(key)
    init_keys = jax.random.split(k_init, R)
    if params is None:
        params = jax.vmap(policy.init_params)(init_keys)
    else:
        params = jax.tree.map(lambda x: jnp.broadcast_to(x, (R,) + jnp.shape(x)), params)
    optimizer = _make_optimizer(config)
    opt_state = jax.vmap(optimizer.init)(params)
    max_iterations = config.max_iterations if max_iterations is None else max_iterations

    score = jnp.zeros((R,), _dtype(params))
    compiled, compile_seconds = compile_cached(_solve_iteration, key, params, opt_state, score, True, model,
                                               policy, rho, config=config)
    history, it, steps = [], 0, 0
    if resume is not None:
        saved = resume.restore({"params": params, "opt_state": opt_state, "score": score})
        params, opt_state, score = saved["params"], saved["opt_state"], saved["score"]
        key, it, steps = resume.key(), int(resume.loop["iteration"]), int(resume.loop["environment_steps"])
        history = [tuple(row) for row in resume.history]
    start = time.perf_counter() - start_seconds(resume)  # the clock counts the solving before a resume
    per_iteration = config.num_steps * config.num_chains * R

    def save():
        loop = {"key": key, "iteration": it, "environment_steps": steps, "elapsed": time.perf_counter() - start}
        checkpoint.save("gpomdp", model, options, {"params": params, "opt_state": opt_state, "score": score},
                        loop, history)

    stop_reason = "max_iterations"
    while True:
        if stopped(stop):
            stop_reason = "stopped"
            break
        if it >= max_iterations:
            stop_reason = "max_iterations"
            break
        if time_limit is not None and it > 0 and time.perf_counter() - start >= time_limit:
            stop_reason = "time limit"
            break
        key, sub = jax.random.split(key)
        last_params, last_score = params, score  # kept until the step has been checked
        params, opt_state, reward, norm, score, finite = compiled(sub, params, opt_state, score, it == 0, model,
                                                                  policy, rho)
        it += 1
        steps += per_iteration
        elapsed = time.perf_counter() - start
        reward, norm, finite = jax.device_get((reward, norm, finite))
        if not (finite.all() and np.isfinite(reward).all()):
            check_finite("gpomdp", it, {"gradient estimate": finite[:, 0], "policy parameters": finite[:, 1],
                                        "average-reward estimate": reward},
                         last_good=_result(model, policy, config, last_params, last_score, it - 1,
                                           steps - per_iteration, history, elapsed, compile_seconds,
                                           "numerical error"),
                         model=model, scale=(config.num_steps, f"a chain's reward sum over {config.num_steps} steps"))
        best = int(np.argmax(np.asarray(score)))
        history.append((elapsed, float(reward[best]), float(norm[best]), it, steps))
        if checkpoint is not None and checkpoint.due():
            save()
        if callback is not None and callback(elapsed, float(reward[best]), float(norm[best]), it) is False:
            stop_reason = "callback"
            break
        if gradient_tolerance is not None and np.all(norm < gradient_tolerance):
            stop_reason = "gradient tolerance"
            break
    if checkpoint is not None:
        save()
    return _result(model, policy, config, params, score, it, steps, history, time.perf_counter() - start,
                   compile_seconds, stop_reason)


def _result(model, policy, config: Config, params, score, iterations: int, steps: int, history: list,
            solve_seconds: float, compile_seconds: float, stop_reason: str = "") -> SolveResult:
    """The result of the restart with the best ``score`` among ``params`` (stacked over restarts)."""
    best = int(np.argmax(np.asarray(score)))
    params = jax.tree.map(lambda x: x[best], params)
    info = {"iterations": iterations, "environment_steps": steps, "config": config._asdict(),
            "restart_chosen": best, "restart_scores": np.asarray(score).tolist(), "stop_reason": stop_reason,
            **objective_summary(model, policy, params, config.objective),
            **policy_info(policy, params)}
    return SolveResult(policy=stochastic.SampledPolicy(policy, params), lower_bound=None, upper_bound=None,
                       solve_seconds=solve_seconds, compile_seconds=compile_seconds,
                       history=list(history), info=info)
