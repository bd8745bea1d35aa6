"""The baseline solvers: the best fixed action (blind) and QMDP.

Both compute the same two certified bounds at b0 (the blind policies' exact
values below, QMDP above) in one jit-compiled call; they differ in the policy
they return. The first compilation is timed separately from the solve.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxpomdp import bounds
from jaxpomdp.model import TabularPOMDP
from jaxpomdp.policy import AlphaVectorPolicy, BlindPolicy

__all__ = ["SolveResult", "solve_blind", "solve_qmdp", "timed_call", "compile_cached"]


class SolveResult(NamedTuple):
    """What a solver returns.

    Attributes:
      policy: a policy that ``jaxpomdp.simulate`` can run.
      lower_bound: a certified lower bound on ``V*(b0)`` (or None).
      upper_bound: a certified upper bound on ``V*(b0)`` (or None).
      solve_seconds: wall time of the solve, excluding the first compilation.
      compile_seconds: wall time of tracing and compiling.
      history: ``(seconds, lower, upper, num_vectors, num_beliefs)`` rows.
      alphas: float[N, S] alpha-vectors that represent the policy (or None).
      alpha_actions: int32[N] their actions (or None).
      info: solver-specific facts (JSON-serialisable).
    """

    policy: Any
    lower_bound: Optional[float]
    upper_bound: Optional[float]
    solve_seconds: float
    compile_seconds: float
    history: list
    alphas: Optional[np.ndarray] = None
    alpha_actions: Optional[np.ndarray] = None
    info: dict = {}


def timed_call(fn, *args):
    """Runs ``jax.jit(fn)(*args)`` and returns ``(result, compile_seconds, run_seconds)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, t1 - t0, time.perf_counter() - t1


_COMPILED: dict = {}
_COMPILED_MAX = 64


def compile_cached(jitted, *args, **static):
    """Compiles ``jitted(*args, **static)`` ahead of time, once per argument shapes.

    Returns ``(compiled, seconds)``: the compiled function (call it with ``*args``
    of the same shapes and dtypes) and the seconds spent compiling now (0 when a
    previous call compiled it). The static keyword arguments must be hashable.
    Lets a solver report its compile time separately and still reuse the
    executable across calls (seeds, restarts) on models of the same shapes.
    """
    leaves, treedef = jax.tree.flatten(args)
    signature = tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)
    key = (jitted, treedef, signature, tuple(sorted(static.items())), jax.config.jax_enable_x64)
    if key in _COMPILED:
        return _COMPILED[key], 0.0
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile()
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = compiled
    return compiled, time.perf_counter() - t0


def _bounds(model: TabularPOMDP):
    blind = bounds.blind_alphas(model)
    q = bounds.qmdp(model)
    b0 = model.initial_belief
    return blind, q, jnp.max(blind @ b0), jnp.max(q @ b0)


def _solve(model: TabularPOMDP):
    bounds.check_discount(model)  # the discount is traced under jit: check it here
    (blind, q, lower, upper), compile_s, run_s = timed_call(_bounds, model)
    return np.asarray(blind), np.asarray(q), float(lower), float(upper), compile_s, run_s


def solve_blind(model: TabularPOMDP, *, time_limit: Optional[float] = None, target_gap: Optional[float] = None,
                seed: int = 0, callback=None) -> SolveResult:
    """The best fixed action at b0, with its exact value and the QMDP upper bound.

    Args:
      model: a tabular POMDP with ``discount < 1``.
      time_limit: accepted for a uniform solver interface; unused (the computation
        is two fixed-point iterations capped at ``bounds.DEFAULT_MAX_ITER`` sweeps).
      target_gap, seed, callback: accepted for a uniform solver interface; unused
        (the computation is deterministic and has no intermediate steps).
    """
    del seed, time_limit, target_gap, callback
    blind, _, lower, upper, compile_s, run_s = _solve(model)
    best = int(np.argmax(blind @ np.asarray(model.initial_belief)))
    return SolveResult(
        policy=BlindPolicy(jnp.int32(best)), lower_bound=lower, upper_bound=upper,
        solve_seconds=run_s, compile_seconds=compile_s,
        history=[(run_s, lower, upper, 1, 1)],
        alphas=blind[best:best + 1], alpha_actions=np.array([best], np.int32),
        info={"action": model.action_name(best)})


def solve_qmdp(model: TabularPOMDP, *, time_limit: Optional[float] = None, target_gap: Optional[float] = None,
               seed: int = 0, callback=None) -> SolveResult:
    """The QMDP policy (greedy on the MDP's Q-vectors over the exact belief).

    The bounds reported are the blind lower bound and the QMDP upper bound; the
    other arguments are as in :func:`solve_blind`.
    """
    del seed, time_limit, target_gap, callback
    _, q, lower, upper, compile_s, run_s = _solve(model)
    actions = np.arange(model.num_actions, dtype=np.int32)
    return SolveResult(
        policy=AlphaVectorPolicy(jnp.asarray(q), jnp.asarray(actions)), lower_bound=lower,
        upper_bound=upper, solve_seconds=run_s, compile_seconds=compile_s,
        history=[(run_s, lower, upper, model.num_actions, 1)],
        alphas=q, alpha_actions=actions, info={})
