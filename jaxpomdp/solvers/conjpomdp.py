"""CONJPOMDP and GSEARCH (Baxter & Bartlett 2001): conjugate gradients from gradient estimates.

Polak–Ribière conjugate-gradient ascent that never evaluates the objective, only
a gradient oracle ``GRAD(key, theta)`` (GPOMDP, or anything else), with the
line search GSEARCH that uses only the sign of ``p(s) = GRAD(theta + s h) . h``
(project ``docs/ALGORITHMS.md`` §3)::

    CONJPOMDP(GRAD, theta, s0, eps):
        g = h = GRAD(theta)
        while ||g||^2 >= eps:
            theta = GSEARCH(GRAD, theta, h, s0, eps)
            D = GRAD(theta)
            gamma = (D - g) . D / ||g||^2
            h = D + gamma h
            if h . D < 0: h = D
            g = D

    GSEARCH(GRAD, theta, h, s0, eps):
        s = s0; p = GRAD(theta + s h) . h
        if p < 0:   repeat  s+ = s, p+ = p, s = s / 2, p = p(s)  until p > -eps;  s- = s, p- = p
        else:       repeat  s- = s, p- = p, s = 2 s,   p = p(s)  until p < eps;   s+ = s, p+ = p
        if p- > 0 and p+ < 0:  s = s- - p- (s+ - s-) / (p+ - p-)      (secant zero)
        else:                  s = (s- + s+) / 2
        return theta + s h

Noisy signs are the failure mode, so the halvings/doublings are capped
(``max_line_steps``) as are the outer iterations. Everything is an (init,
update) pair of pure functions on a :class:`ConjState` (the line search is a
``lax.while_loop``), so a whole iteration runs compiled on the device;
:func:`conjpomdp` loops it on the host with a cap, and :func:`solve` adds the
time limit and progress of the command line's ``--solver conjpomdp``. Parameters
may be any pytree (flattened internally).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from jaxpomdp import distributed, stochastic
from jaxpomdp.checkpoint import Checkpoint, Checkpointer, start_seconds, stopped
from jaxpomdp.model import as_simulator
from jaxpomdp.precision import HIGHEST
from jaxpomdp.solvers import gpomdp as gpomdp_lib
from jaxpomdp.solvers.baseline import (SolveResult, all_finite, check_finite, check_model, check_solve_args,
                                       compile_cached)

__all__ = ["ConjState", "LineSearch", "gsearch", "init", "update", "conjpomdp", "Config", "solve",
           "gpomdp_oracle"]

GradFn = Callable[[jax.Array, jax.Array], jax.Array]


def _inner(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x . y`` in full float32 on every device: the line search acts on its sign (see :mod:`jaxpomdp.precision`)."""
    return jnp.vdot(x, y, precision=HIGHEST)


class LineSearch(NamedTuple):
    """What :func:`gsearch` returns: the new point and how it was found.

    Attributes:
      params: float[K] ``theta + step h``.
      step: float[] the step ``s`` taken.
      bracket: ``(s-, s+)``.
      slopes: ``(p-, p+)``, the sign-carrying slopes at the bracket ends.
      evaluations: int32[] gradient evaluations used.
      secant: bool[] whether the secant zero (rather than the midpoint) was taken.
    """

    params: jax.Array
    step: jax.Array
    bracket: tuple
    slopes: tuple
    evaluations: jax.Array
    secant: jax.Array


def gsearch(key: jax.Array, grad_fn: GradFn, theta: jax.Array, h: jax.Array, s0, eps,
            max_line_steps: int = 30) -> LineSearch:
    """GSEARCH: a line maximum along ``h`` from the signs of ``GRAD . h`` only.

    Args:
      key: a PRNG key (one fresh subkey per gradient evaluation).
      grad_fn: ``GRAD(key, theta) -> float[K]``, pure and traceable.
      theta, h: float[K] the point and the search direction.
      s0: the first step tried.
      eps: the slope tolerance that ends the halving (``p > -eps``) or doubling
        (``p < eps``).
      max_line_steps: cap on halvings or doublings (static).
    """
    dtype = theta.dtype
    s0 = jnp.asarray(s0, dtype)
    eps = jnp.asarray(eps, dtype)

    def slope(key, s):
        return _inner(grad_fn(key, theta + s * h), h)

    # One loop, one gradient call site (so the oracle is compiled once). Evaluation 0 is
    # at s0 and fixes the branch (back: halve, else double); every later evaluation ends
    # the "repeat ... until" when its slope has crossed the tolerance or the cap is hit.
    def body(carry):
        key, n, s, s_last, p_last, _, _, back, _ = carry
        key, k = jax.random.split(key)
        p = slope(k, s)
        back = jnp.where(n == 0, p < 0, back)
        crossed = jnp.where(back, p > -eps, p < eps)
        done = (n > 0) & (crossed | (n >= max_line_steps))
        factor = jnp.where(back, jnp.asarray(0.5, dtype), jnp.asarray(2.0, dtype))
        return key, n + 1, s * factor, s, p, s_last, p_last, back, done

    zero = jnp.zeros((), dtype)
    false = jnp.zeros((), bool)
    init = (key, jnp.int32(0), s0, zero, zero, zero, zero, false, false)
    _, n, _, s, p, s_prev, p_prev, back, _ = lax.while_loop(lambda c: ~c[-1], body, init)
    s_minus = jnp.where(back, s, s_prev)
    p_minus = jnp.where(back, p, p_prev)
    s_plus = jnp.where(back, s_prev, s)
    p_plus = jnp.where(back, p_prev, p)
    secant = (p_minus > 0) & (p_plus < 0)
    denom = jnp.where(secant, p_plus - p_minus, jnp.ones_like(p_plus))
    step = jnp.where(secant, s_minus - p_minus * (s_plus - s_minus) / denom, 0.5 * (s_minus + s_plus))
    return LineSearch(theta + step * h, step, (s_minus, s_plus), (p_minus, p_plus), n, secant)


class ConjState(NamedTuple):
    """The state of CONJPOMDP between iterations.

    Attributes:
      params: float[K] ``theta`` (flattened).
      grad: float[K] ``g``, the last gradient estimate.
      direction: float[K] ``h``.
      key: the PRNG key for the next evaluations.
      iteration: int32[] outer iterations done.
      evaluations: int32[] gradient evaluations done.
      last_step: float[] the last line-search step.
    """

    params: jax.Array
    grad: jax.Array
    direction: jax.Array
    key: jax.Array
    iteration: jax.Array
    evaluations: jax.Array
    last_step: jax.Array


def init(key: jax.Array, grad_fn: GradFn, theta: jax.Array) -> ConjState:
    """``g = h = GRAD(theta)``."""
    key, k = jax.random.split(key)
    g = grad_fn(k, theta)
    return ConjState(theta, g, g, key, jnp.int32(0), jnp.int32(1), jnp.zeros((), theta.dtype))


def update(state: ConjState, grad_fn: GradFn, *, s0, eps, max_line_steps: int = 30) -> ConjState:
    """One CONJPOMDP iteration: GSEARCH along ``h``, a new gradient, the Polak–Ribière direction."""
    key, k_line, k_grad = jax.random.split(state.key, 3)
    line = gsearch(k_line, grad_fn, state.params, state.direction, s0, eps, max_line_steps)
    g = state.grad
    delta = grad_fn(k_grad, line.params)
    gg = _inner(g, g)
    gamma = jnp.where(gg > 0, _inner(delta - g, delta) / jnp.where(gg > 0, gg, 1), 0)
    h = delta + gamma * state.direction
    h = jnp.where(_inner(h, delta) < 0, delta, h)
    return ConjState(line.params, delta, h, key, state.iteration + 1,
                     state.evaluations + line.evaluations + 1, line.step)


def conjpomdp(key: jax.Array, grad_fn: Callable[[jax.Array, Any], Any], params: Any, *, s0: float = 1.0,
              eps: float = 1e-6, max_iterations: int = 100, max_line_steps: int = 30):
    """Runs CONJPOMDP until ``||g||^2 < eps`` or ``max_iterations`` iterations.

    Args:
      key: a PRNG key.
      grad_fn: ``GRAD(key, params) -> gradient`` (pytrees shaped like ``params``;
        a deterministic oracle may ignore the key).
      params: the starting point (a pytree).
      s0, eps, max_line_steps: as in :func:`gsearch` (``eps`` is also the
        outer stopping tolerance on ``||g||^2``, as in the paper).
      max_iterations: cap on outer iterations.

    Returns:
      ``(params, state)``: the final parameters (shaped like the input) and the
      final :class:`ConjState` (its ``iteration`` counts the iterations used).
    """
    flat, unravel = ravel_pytree(params)
    flat_grad = lambda k, f: ravel_pytree(grad_fn(k, unravel(f)))[0]  # noqa: E731
    state = jax.jit(init, static_argnums=1)(key, flat_grad, flat)
    step = jax.jit(lambda st: update(st, flat_grad, s0=s0, eps=eps, max_line_steps=max_line_steps))
    while int(state.iteration) < max_iterations and float(_inner(state.grad, state.grad)) >= eps:
        state = step(state)
    return unravel(state.params), state


def gpomdp_oracle(model: Any, policy: Any, *, beta: float, num_steps: int, num_chains: int,
                  restart_prob: float = 0.0):
    """``GRAD(key, params)``: GPOMDP's estimate, the mean over ``num_chains`` chains of ``num_steps`` steps.

    Pure and traceable (for :func:`conjpomdp`, :func:`update` or a user's own loop).
    ``restart_prob`` as in :func:`jaxpomdp.solvers.gpomdp.gpomdp`.
    """
    def grad_fn(key, params):
        return gpomdp_lib._gpomdp(key, model, policy, params, beta, restart_prob, num_steps, num_chains)[0]
    return grad_fn


class Config(NamedTuple):
    """Settings of :func:`solve`.

    Attributes:
      beta: the GPOMDP trace discount.
      num_steps: ``T`` steps per chain per gradient estimate.
      num_chains: chains per gradient estimate (their mean is ``GRAD``).
      s0: GSEARCH's first step.
      eps: the tolerance on ``||g||^2`` and on the line-search slopes.
      max_line_steps: cap on halvings/doublings per line search.
      max_iterations: cap on outer iterations.
      memory: memory states of the default policy (1: memoryless).
      objective: ``"average"`` (the paper) or ``"discounted"`` (see
        :func:`jaxpomdp.solvers.gpomdp.restart_probability`).
    """

    beta: float = 0.9
    num_steps: int = 1000
    num_chains: int = 64
    s0: float = 1.0
    eps: float = 1e-6
    max_line_steps: int = 20
    max_iterations: int = 100
    memory: int = 1
    objective: str = "average"


def _flat_oracle(model, policy, template, rho, config):
    unravel = ravel_pytree(template)[1]
    oracle = gpomdp_oracle(model, policy, beta=config.beta, num_steps=config.num_steps,
                           num_chains=config.num_chains, restart_prob=rho)
    return (lambda k, theta: ravel_pytree(oracle(k, unravel(theta)))[0]), unravel


@functools.partial(jax.jit, static_argnames=("config",))
def _solver_init(key, model, policy, template, rho, config):
    grad_fn, _ = _flat_oracle(model, policy, template, rho, config)
    return init(key, grad_fn, ravel_pytree(template)[0])


@functools.partial(jax.jit, static_argnames=("config",))
def _solver_step(state, key, model, policy, template, rho, config):
    """One iteration, ``||g||^2``, the progress line's eta (the average reward of one more estimate)
    and bool[2]: whether the new gradient estimate and parameters are finite."""
    grad_fn, unravel = _flat_oracle(model, policy, template, rho, config)
    state = update(state, grad_fn, s0=config.s0, eps=config.eps, max_line_steps=config.max_line_steps)
    eta = gpomdp_lib._gpomdp(key, model, policy, unravel(state.params), config.beta, rho, config.num_steps,
                             config.num_chains)[2]
    finite = jnp.stack([all_finite(state.grad), all_finite(state.params)])
    return state, _inner(state.grad, state.grad), eta, finite


def solve(model: Any, *, time_limit: Optional[float] = 60.0, target_gap: Optional[float] = None, seed: int = 0,
          callback: Optional[Callable[..., Any]] = None, config: Optional[Config] = None,
          policy: Any = None, params: Any = None, max_iterations: Optional[int] = None,
          checkpoint: Optional[Checkpointer] = None, resume: Optional[Checkpoint] = None,
          stop: Optional[Callable[[], bool]] = None, mesh: Optional[Mesh] = None) -> SolveResult:
    """CONJPOMDP with GPOMDP as ``GRAD``: the command line's ``--solver conjpomdp``.

    Stops when ``||g||^2 < config.eps``, after ``max_iterations`` iterations, or at
    the time limit (checked between iterations, counted after the first
    compilation; None: no limit). ``target_gap`` is ignored (no bounds:
    ``lower_bound`` and ``upper_bound`` are None). ``callback(seconds,
    eta_estimate, grad_norm, iteration)`` reports progress, where ``eta_estimate``
    is the average reward of the chains of the last gradient estimate; it may
    return ``False`` to stop. History rows are ``(seconds, eta_estimate, grad_norm,
    iteration, gradient evaluations)``. ``info["stop_reason"]`` is ``"gradient
    tolerance"`` (``||g||^2 < eps``), ``"max_iterations"``, ``"time limit"``,
    ``"callback"`` or ``"stopped"``.

    Checkpoints (:mod:`jaxpomdp.checkpoint`):

    * ``checkpoint``: a :class:`~jaxpomdp.checkpoint.Checkpointer`: the
      conjugate-gradient state (:class:`ConjState`: ``theta``, ``g``, ``h``, its
      PRNG key, the iteration and gradient-evaluation counts, the last step), the
      driver's PRNG key, ``||g||^2`` and the history are written after an iteration
      once its interval has passed, and at the end.
    * ``resume``: a :class:`~jaxpomdp.checkpoint.Checkpoint` of ``conjpomdp`` on
      this model with the same ``config``, ``seed``, policy and starting ``params``:
      the solve continues from it (``time_limit`` and ``max_iterations`` count what
      was done before it). Stopped and resumed, a solve ending by
      ``max_iterations`` or ``||g||^2 < eps`` gives exactly the result of one never
      stopped.
    * ``stop``: polled between iterations; once it returns True the solve stops
      there (``info["stop_reason"]`` ``"stopped"``), writing the checkpoint.

    ``mesh``: a :func:`jaxpomdp.distributed.make_mesh` mesh: GPOMDP's chains are
    split over its devices (the parameters and the conjugate-gradient state
    replicated); the result is the single-device one up to the order of sums.

    Raises:
      InvalidModelError: a tabular model holds a NaN or an infinity, or a simulator breaks the
        ``GenerativePOMDP`` protocol (:func:`~jaxpomdp.model.as_simulator`).
      InvalidPolicyError: ``policy`` breaks the stochastic-policy interface
        (:func:`~jaxpomdp.stochastic.as_stochastic_policy`; a plain Python class is accepted).
      CheckpointError: ``resume`` is of another solver, model or settings.
      NumericalError: the gradient estimate (iteration 0: the first one), the new
        parameters or the reward estimate is not finite; ``last_good`` is the
        result of the parameters before that iteration.
    """
    check_solve_args(time_limit, target_gap, seed, max_iterations)
    del target_gap
    model = as_simulator(model)
    with distributed.using(mesh):
        return _solve(model, time_limit, seed, callback, config or Config(), policy, params, max_iterations,
                      checkpoint, resume, stop)


def _solve(model, time_limit, seed, callback, config, policy, params, max_iterations, checkpoint, resume,
           stop) -> SolveResult:
    check_model(model)
    if policy is None:
        policy = gpomdp_lib.default_policy(model, memory=config.memory)
    policy = stochastic.as_stochastic_policy(policy, model, params)
    options = gpomdp_lib._checkpoint_options(config, seed, policy, params)
    if resume is not None:
        resume.check("conjpomdp", model, options)
    key = jax.random.key(seed)
    key, k_init = jax.random.split(key)
    if params is None:
        gpomdp_lib.check_policy_size(policy, 1, copies=8)  # the CG state: several parameter vectors
        params = policy.init_params(k_init)
    unravel = ravel_pytree(params)[1]
    max_iterations = config.max_iterations if max_iterations is None else max_iterations
    rho = gpomdp_lib.restart_probability(model, config.objective)
    gpomdp_lib._check(config.beta, rho, config.num_steps, config.num_chains)

    key, k_state = jax.random.split(key)
    init_fn, c1 = compile_cached(_solver_init, k_state, model, policy, params, rho, config=config)
    state_shape = jax.eval_shape(lambda: init_fn(k_state, model, policy, params, rho))
    step_fn, c2 = compile_cached(_solver_step, state_shape, key, model, policy, params, rho, config=config)
    compile_seconds = c1 + c2

    def result(state, grad_sq, history, solve_seconds, stop_reason=""):
        params = unravel(state.params)
        steps = int(state.evaluations) * config.num_steps * config.num_chains
        info = {"iterations": int(state.iteration), "gradient_evaluations": int(state.evaluations),
                "environment_steps": steps, "gradient_norm": grad_sq ** 0.5, "config": config._asdict(),
                "stop_reason": stop_reason,
                **gpomdp_lib.objective_summary(model, policy, params, config.objective),
                **gpomdp_lib.policy_info(policy, params)}
        return SolveResult(policy=stochastic.SampledPolicy(policy, params), lower_bound=None, upper_bound=None,
                           solve_seconds=solve_seconds, compile_seconds=compile_seconds,
                           history=list(history), info=info)

    scale = (config.num_steps, f"a chain's reward sum over {config.num_steps} steps")
    if resume is None:
        start = time.perf_counter()
        state = init_fn(k_state, model, policy, params, rho)
        grad_sq = float(_inner(state.grad, state.grad))
        history = []
        if not np.isfinite(grad_sq):  # the initial parameters are the caller's (or finite random ones)
            check_finite("conjpomdp", 0, {"gradient estimate": state.grad, "squared gradient norm": grad_sq},
                         model=model, scale=scale,
                         last_good=result(state, grad_sq, history, time.perf_counter() - start,
                                          "numerical error"))
    else:  # the clock counts the solving before the checkpoint
        start = time.perf_counter() - start_seconds(resume)
        state = resume.restore(state_shape)
        key, grad_sq = resume.key(), float(resume.loop["grad_sq"])
        history = [tuple(row) for row in resume.history]

    def save():
        loop = {"key": key, "grad_sq": grad_sq, "elapsed": time.perf_counter() - start,
                "iteration": int(state.iteration)}  # (the count itself is restored from the state)
        checkpoint.save("conjpomdp", model, options, state, loop, history)

    while True:
        if stopped(stop):
            stop_reason = "stopped"
            break
        if int(state.iteration) >= max_iterations:
            stop_reason = "max_iterations"
            break
        if not grad_sq >= config.eps:
            stop_reason = "gradient tolerance"
            break
        if time_limit is not None and time.perf_counter() - start >= time_limit:
            stop_reason = "time limit"
            break
        key, sub = jax.random.split(key)
        last, last_grad_sq = state, grad_sq  # kept until the step has been checked
        state, grad_sq, eta, finite = step_fn(state, sub, model, policy, params, rho)
        grad_sq, eta, finite = jax.device_get((grad_sq, eta, finite))
        grad_sq, eta = float(grad_sq), float(eta)
        elapsed = time.perf_counter() - start
        if not (finite.all() and np.isfinite(grad_sq) and np.isfinite(eta)):
            check_finite("conjpomdp", int(state.iteration),
                         {"gradient estimate": finite[0], "policy parameters": finite[1],
                          "squared gradient norm": grad_sq, "average-reward estimate": eta},
                         last_good=result(last, last_grad_sq, history, elapsed, "numerical error"), model=model,
                         scale=scale)
        history.append((elapsed, eta, grad_sq ** 0.5, int(state.iteration), int(state.evaluations)))
        if checkpoint is not None and checkpoint.due():
            save()
        if callback is not None and callback(elapsed, eta, grad_sq ** 0.5, int(state.iteration)) is False:
            stop_reason = "callback"
            break
    if checkpoint is not None:
        save()
    return result(state, grad_sq, history, time.perf_counter() - start, stop_reason)
