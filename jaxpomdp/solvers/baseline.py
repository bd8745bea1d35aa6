"""The baseline solvers: the best fixed action (blind) and QMDP; the solvers' shared pieces.

Both compute the same two certified bounds at b0 (the blind policies' exact
values below, QMDP above) in one jit-compiled call; they differ in the policy
they return. The first compilation is timed separately from the solve.

Every solver refuses a tabular model with a NaN or infinite number, or with
probabilities that are not distributions, before solving (:func:`check_model`) and
stops with a
:class:`~jaxpomdp.errors.NumericalError` when a value it computes is not finite
(:func:`check_finite`).
"""

from __future__ import annotations

import time
from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxpomdp import bounds
from jaxpomdp.errors import InvalidModelError, NumericalError, is_integer
from jaxpomdp.model import DEFAULT_TOLERANCE, TabularPOMDP, validate
from jaxpomdp.policy import AlphaVectorPolicy, BlindPolicy
from jaxpomdp.precision import exact

__all__ = ["SolveResult", "solve_blind", "solve_qmdp", "timed_call", "compile_cached", "check_model",
           "check_finite", "all_finite", "value_scale", "check_solve_args"]


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


def _mesh_key() -> tuple:
    """The mesh a solver runs under (``jaxpomdp.distributed.using``): compiled code is specific to it."""
    mesh = jax.sharding.get_mesh()
    if mesh is None or getattr(mesh, "empty", True):
        return ()
    return (tuple(mesh.axis_names), tuple(d.id for d in mesh.devices.flat))


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
    key = (jitted, treedef, signature, tuple(sorted(static.items())), jax.config.jax_enable_x64, _mesh_key())
    if key in _COMPILED:
        return _COMPILED[key], 0.0
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile()
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = compiled
    return compiled, time.perf_counter() - t0


# ------------------------------------------------------------ numerical guards
#: The float fields of a TabularPOMDP and the names of their axes (for messages).
_MODEL_FIELDS = {
    "reward": ("action", "state"),
    "next_prob": ("action", "state", "slot"),
    "obs_prob": ("action", "state", "observation"),
    "initial_belief": ("state",),
    "discount": (),
    "state_features": ("state", "feature"),
    "observation_features": ("observation", "feature"),
}


def all_finite(tree) -> jax.Array:
    """bool[]: whether every number in a pytree is finite (traceable: one flag to bring to the host)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@jax.jit
def _each_finite(arrays):
    return jnp.stack([all_finite(x) for x in arrays])


def _entry(model: TabularPOMDP, field: str, index: tuple) -> str:
    axes = _MODEL_FIELDS[field]
    if len(index) != len(axes):  # e.g. a batch of models: plain indices
        return f"{field}[{', '.join(str(int(i)) for i in index)}]" if index else field
    namers = {"action": model.action_name, "state": model.state_name, "observation": model.observation_name}
    parts = [f"{axis}={namers[axis](i)!r}" if axis in namers else f"{axis} {int(i)}" for axis, i in zip(axes, index)]
    return f"{field}[{', '.join(parts)}]" if parts else field


def check_solve_args(time_limit, target_gap, seed, max_iterations=None) -> None:
    """Refuses the common arguments of the iterative solvers' ``solve`` when they make no sense
    (a ValueError naming the argument): ``time_limit`` None or positive, ``target_gap`` None
    or non-negative (NaN is neither), ``seed`` an integer of int64, ``max_iterations`` None
    or a non-negative integer."""
    def number(x):
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)

    if time_limit is not None and not (number(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit must be positive (seconds) or None, got {time_limit!r}")
    if target_gap is not None and not (number(target_gap) and target_gap >= 0):
        raise ValueError(f"target_gap must be non-negative or None, got {target_gap!r}")
    if not (is_integer(seed) and -2 ** 63 <= seed < 2 ** 63):
        raise ValueError(f"seed must be an integer in [-2**63, 2**63), got {seed!r}")
    if max_iterations is not None and not (is_integer(max_iterations) and max_iterations >= 0):
        raise ValueError(f"max_iterations must be a non-negative integer or None, got {max_iterations!r}")


def check_model(model: Any) -> None:
    """Refuses a tabular model that holds a NaN or an infinity, or whose transition rows,
    observation rows or initial belief are not probability distributions, before any solving.

    One jit-compiled reduction over the model's arrays (the numbers stay on the
    device); only when one fails is the model brought to the host to name the entry
    (:func:`~jaxpomdp.model.validate`, which readers already run on every file). This
    catches a model built or modified in Python without it (``from_dense`` with a
    belief summing to 0.6 was solved, to wrong bounds). Models that are not a
    :class:`~jaxpomdp.model.TabularPOMDP` (simulators) pass unchecked.

    Raises:
      InvalidModelError: naming the first offending entry, e.g.
        ``reward[action='listen', state='tiger-left'] = nan is not finite``.
    """
    if not isinstance(model, TabularPOMDP):
        return
    fields = [f for f in _MODEL_FIELDS if getattr(model, f) is not None]
    arrays = [getattr(model, f) for f in fields]
    if any(isinstance(x, jax.core.Tracer) for x in arrays):
        return
    ok = np.asarray(_each_finite(arrays))
    if ok.all():
        if not bool(_distributions_ok(model.next_prob, model.obs_prob, model.initial_belief)):
            validate(model)  # names the entry (float64 sums: the device's float32 ones may be off)
        return
    field = fields[int(np.argmin(ok))]
    values = np.asarray(getattr(model, field))
    index = tuple(np.argwhere(~np.isfinite(values))[0])
    raise InvalidModelError(f"{_entry(model, field, index)} = {float(values[index])} is not finite")


@jax.jit
def _distributions_ok(next_prob, obs_prob, b0) -> jax.Array:
    """Probabilities in [0, 1] whose rows sum to 1 within ``validate``'s tolerance, widened by
    the rounding of a float32 sum of that many terms (``validate`` decides on the host)."""
    def rows(x):
        slack = DEFAULT_TOLERANCE + x.shape[-1] * float(jnp.finfo(x.dtype).eps)
        return jnp.all((x >= 0) & (x <= 1)) & jnp.all(jnp.abs(jnp.sum(x, axis=-1) - 1) <= slack)

    return rows(next_prob) & rows(obs_prob) & rows(b0)


def _describe(x: np.ndarray) -> str:
    """``"NaN"``, ``"+inf"``, ... for a scalar; ``"2 NaN, 1 -inf of 8 entries"`` for an array."""
    kinds = {"NaN": np.isnan(x), "+inf": np.isposinf(x), "-inf": np.isneginf(x)}
    if x.ndim == 0:
        return next((k for k, m in kinds.items() if m), "not finite")
    counts = ", ".join(f"{int(m.sum())} {k}" for k, m in kinds.items() if m.any())
    return f"{counts} of {x.size} entries"


def _overflow_hint(model: Any, scale) -> str:
    """A likely cause, when the rewards times ``scale[0]`` overflow the model's float type."""
    if scale is None or not isinstance(model, TabularPOMDP):
        return ""
    factor, label = scale
    dtype = np.dtype(model.reward.dtype)
    largest = float(np.finfo(dtype).max)
    rmax = float(jnp.max(jnp.abs(model.reward)))
    reach = rmax * float(factor)
    if not reach > largest / 4:
        return ""
    wider = ", or set JAX_ENABLE_X64=1 for float64" if dtype.itemsize < 8 and reach < 1e300 else ""
    return (f" (rewards up to |R| = {rmax:.3g} make {label} about {reach:.3g}, beyond {dtype.name}'s "
            f"largest number {largest:.3g}: rescale the rewards{wider})")


def check_finite(solver: str, iteration: Optional[int], values: Mapping[str, Any], *, last_good=None,
                 model: Any = None, scale=None) -> None:
    """Raises :class:`~jaxpomdp.errors.NumericalError` if one of ``values`` is not finite.

    The solvers call this in their Python driver loop, where the host already
    waits for each step, on the few numbers they pull to the host anyway and on
    flags from one jit-compiled ``jnp.isfinite(...).all()`` over the arrays a step
    changed.

    Args:
      solver: the solver's name, first in the message.
      iteration: the iteration whose values these are (0: the initial values;
        None for a solver without iterations).
      values: what (e.g. ``"upper bound at b0"``) -> a number, an array or a bool
        (a finiteness flag computed on the device), checked in order; the first
        that is not finite is reported as ``"{solver}: {what} not finite (2 NaN of
        8 entries) at iteration {iteration}; stopped, ..."``.
      last_good: the result built from the last finite state (its
        ``info["iterations"]``, where present, is named in the message), or None.
      model: the model, to say when its rewards are large enough to overflow.
      scale: ``(factor, label)``: the largest multiple of ``max |R|`` the solver
        forms, e.g. ``(1 / (1 - discount), "values up to |R| / (1 - discount)")``.
    """
    for what, value in values.items():
        x = np.asarray(value)
        if x.dtype == bool:
            if x.all():
                continue
            detail = ""
        else:
            if np.isfinite(x).all():
                continue
            detail = f" ({_describe(x)})"
        at = "" if iteration is None else f" at iteration {iteration}"
        if last_good is None:
            kept = "no finite policy to keep"
        elif "iterations" in getattr(last_good, "info", {}):
            kept = f"the last good policy is from iteration {last_good.info['iterations']}"
        else:
            kept = "the last good policy is kept"
        raise NumericalError(f"{solver}: {what} not finite{detail}{at}; stopped, {kept}"
                             f"{_overflow_hint(model, scale)}",
                             iteration=iteration, what=what, last_good=last_good)


def value_scale(model: Any):
    """The ``scale`` of :func:`check_finite` for value-based solvers: ``1 / (1 - discount)``."""
    gamma = float(model.discount)
    return (1.0 / (1.0 - gamma) if gamma < 1 else np.inf), "values up to |R| / (1 - discount)"


# ------------------------------------------------------------ the baselines
@exact
def _bounds(model: TabularPOMDP):
    blind = bounds.blind_alphas(model)
    q = bounds.qmdp(model)
    b0 = model.initial_belief
    return blind, q, jnp.max(blind @ b0), jnp.max(q @ b0)


def _solve(model: TabularPOMDP, solver: str):
    bounds.check_discount(model)  # the discount is traced under jit: check it here
    check_model(model)
    (blind, q, lower, upper), compile_s, run_s = timed_call(_bounds, model)
    blind, q, lower, upper = np.asarray(blind), np.asarray(q), float(lower), float(upper)
    check_finite(solver, None, {"blind-policy alpha-vectors (lower bound)": blind,
                                "QMDP Q-vectors (upper bound)": q,
                                "lower bound at b0": lower, "upper bound at b0": upper},
                 model=model, scale=value_scale(model))
    return blind, q, lower, upper, compile_s, run_s


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
    blind, _, lower, upper, compile_s, run_s = _solve(model, "blind")
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
    _, q, lower, upper, compile_s, run_s = _solve(model, "qmdp")
    actions = np.arange(model.num_actions, dtype=np.int32)
    return SolveResult(
        policy=AlphaVectorPolicy(jnp.asarray(q), jnp.asarray(actions)), lower_bound=lower,
        upper_bound=upper, solve_seconds=run_s, compile_seconds=compile_s,
        history=[(run_s, lower, upper, model.num_actions, 1)],
        alphas=q, alpha_actions=actions, info={})
