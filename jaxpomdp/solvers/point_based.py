"""Point-based value iteration with certified bounds: HSVI/SARSOP-style search, PBVI, Perseus.

All three share the kernels of :mod:`jaxpomdp.backup` (lower bound: alpha-vectors)
and :mod:`jaxpomdp.bounds` (upper bound: sawtooth over belief points above FIB
corner values), so both bounds at ``b0`` are certified at every step:

* the lower bound starts from the blind policies' vectors, and every backed-up
  vector is the value of a real conditional plan;
* the upper bound starts from the fast informed bound (FIB) and every sawtooth
  point value is a Bellman backup of a valid upper bound.

``hsvi`` (the default) searches from ``b0`` in the manner of HSVI2 (Smith &
Simmons 2005) and SARSOP (Kurniawati, Hsu & Lee 2008): a trial follows the action
with the best upper bound and samples observations in proportion to
``P(o | b, a) * excess(b')``, where ``excess(b') = U(b') - L(b') - eps gamma^-(t+1)``
(``eps`` a fraction of the current gap at ``b0``), and stops where the excess is
gone. ``width`` trials run at once (vmapped), and their paths are backed up
deepest first, one batched backup per depth, in the same jit-compiled
:func:`update`. ``pbvi`` (Pineau, Gordon & Thrun 2003) backs up a growing belief
set (expanded by one-step simulation, farthest successor first); ``perseus``
(Spaan & Vlassis 2005) backs up random beliefs of a fixed set until every one has
improved.

Shapes are static inside jit: the alpha and point sets have a fixed capacity with
a count of those in use; :func:`solve` prunes and, when needed, doubles them
outside jit (a recompilation).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh

from jaxpomdp.checkpoint import Checkpoint, Checkpointer, start_seconds, stopped
from jaxpomdp import backup, bounds, distributed, prune
from jaxpomdp.errors import is_integer
from jaxpomdp.model import TabularPOMDP
from jaxpomdp.policy import AlphaVectorPolicy
from jaxpomdp.precision import HIGHEST, exact
from jaxpomdp.solvers.baseline import SolveResult, check_finite, check_model, check_solve_args, value_scale

__all__ = ["PointBasedState", "Config", "default_config", "initial_capacity", "init", "initial_state", "update",
           "lower_update", "solve", "METHODS"]

METHODS = ("hsvi", "pbvi", "perseus")

#: Seconds a recompilation for grown sets is assumed to take at least (the measured
#: first compilation can be near zero when the shapes were already in JAX's cache).
MIN_COMPILE_ESTIMATE = 5.0
#: The same for pruning's two small programs (:func:`prune_state`; about 1.2 s measured
#: on one busy CPU core, whatever the sizes), a new shape of which compiles whenever the
#: vectors or points in use pass a power of two.
MIN_PRUNE_COMPILE_ESTIMATE = 2.0


class Config(NamedTuple):
    """Static settings (they fix array shapes, so a change recompiles).

    Attributes:
      width: trials explored and backed up together in one ``update``.
      max_depth: the longest trial.
      epsilon_fraction: ``eps`` as a fraction of the current gap at ``b0``.
      lower_sweeps: after the trials, this many batches of ``width`` stored points
        (drawn at random) get a lower-bound-only backup. These are cheap (batched
        matrix products) next to the trials' upper-bound work, and carry values
        back towards ``b0`` faster than the trials alone.
    """

    width: int = 16
    max_depth: int = 100
    epsilon_fraction: float = 0.5
    lower_sweeps: int = 8


class PointBasedState(NamedTuple):
    """The solver state: bounds as fixed-capacity sets with counts.

    Attributes:
      alphas: float[M, S] lower-bound vectors (the first ``num_alphas`` in use).
      actions: int32[M] their actions.
      witnesses: float[M, S] the belief each vector was backed up at.
      successors: int32[M, O] the vectors each one continues with after each
        observation (a blind vector continues with itself). Pruning keeps this set
        closed, so acting greedily on the vectors earns at least the lower bound.
      num_alphas: int32[].
      points: float[P, S] upper-bound belief points (``points[0] = b0``).
      values: float[P] their upper bounds.
      num_points: int32[].
      corner: float[S] upper bounds at the states (``max_a`` FIB).
      iteration: int32[].
    """

    alphas: jax.Array
    actions: jax.Array
    witnesses: jax.Array
    successors: jax.Array
    num_alphas: jax.Array
    points: jax.Array
    values: jax.Array
    num_points: jax.Array
    corner: jax.Array
    iteration: jax.Array


# ------------------------------------------------------------------ helpers
def _alpha_mask(state: PointBasedState) -> jax.Array:
    return jnp.arange(state.alphas.shape[0]) < state.num_alphas


def _point_mask(state: PointBasedState) -> jax.Array:
    return jnp.arange(state.points.shape[0]) < state.num_points


def lower_bound(state: PointBasedState, b: jax.Array) -> jax.Array:
    """The lower bound ``max_k alpha_k . b`` at belief float[S]."""
    return backup.lower_value_used(state.alphas, state.num_alphas, b)


def upper_bound(state: PointBasedState, b: jax.Array) -> jax.Array:
    """The sawtooth upper bound at belief float[S] (possibly unnormalised)."""
    return bounds.sawtooth_used(state.points, state.values, state.num_points, state.corner, b)


@exact
def _upper_q(model: TabularPOMDP, state: PointBasedState, b: jax.Array):
    """``Q_U(b, a)`` float[A], the successor beliefs float[A, O, S] and ``U`` of each float[A, O]."""
    tau = backup.successor_beliefs(model, b)
    u = jax.vmap(jax.vmap(lambda t: upper_bound(state, t)))(tau)  # homogeneous: unnormalised is fine
    return model.reward @ b + model.discount * jnp.sum(u, axis=1), tau, u


def _insert(buffers, count, new, keep):
    """Writes the rows of ``new`` where ``keep`` after the first ``count`` rows of ``buffers``."""
    capacity = jax.tree.leaves(buffers)[0].shape[0]
    pos = jnp.where(keep, count + jnp.cumsum(keep) - 1, capacity)
    buffers = jax.tree.map(lambda buf, x: buf.at[pos].set(x, mode="drop"), buffers, new)
    return buffers, jnp.minimum(count + jnp.sum(keep), capacity).astype(count.dtype)


def _tolerance(x: jax.Array) -> jax.Array:
    return 8 * jnp.finfo(x.dtype).eps * (1 + jnp.abs(x))


def _first_occurrence(beliefs: jax.Array, valid: jax.Array) -> jax.Array:
    """bool[N]: valid rows that do not repeat an earlier valid row."""
    same = jnp.all(beliefs[:, None, :] == beliefs[None, :, :], axis=-1)  # [N, N]
    earlier = jnp.tril(same, k=-1) & valid[None, :]
    return valid & ~jnp.any(earlier, axis=1)


def _find_point(state: PointBasedState, b: jax.Array, chunk: int = 256):
    """The index of a point in use equal to ``b``, and whether there is one (the
    points in use are scanned ``chunk`` at a time)."""
    capacity = state.points.shape[0]
    chunk = min(chunk, capacity)

    def body(i, carry):
        found, index = carry
        start = jnp.minimum(i * chunk, capacity - chunk)
        rows = lax.dynamic_slice_in_dim(state.points, start, chunk)
        same = jnp.all(rows == b, axis=-1) & (start + jnp.arange(chunk) < state.num_points)
        return found | jnp.any(same), jnp.where(found, index, start + jnp.argmax(same).astype(jnp.int32))

    return lax.fori_loop(0, (state.num_points + chunk - 1) // chunk, body, (jnp.bool_(False), jnp.int32(0)))[::-1]


def backup_beliefs(model: TabularPOMDP, state: PointBasedState, beliefs: jax.Array,
                   valid: jax.Array, *, upper: bool = True) -> PointBasedState:
    """Backs up both bounds at a batch of beliefs float[N, S] (rows where ``valid``).

    A new vector is added only where it improves the lower bound at its belief. A
    new upper-bound value replaces the value of an identical existing point, or is
    added as a new point, only where it improves the upper bound. Rows that repeat
    an earlier row are backed up once. When a set is full, further additions are
    dropped (the bounds stay valid, only less tight); :func:`solve` grows the sets
    before that happens.
    """
    valid = _first_occurrence(beliefs, valid)
    beliefs = distributed.constrain(beliefs)  # the batch split over a mesh's devices (if any)
    out = jax.vmap(lambda b: backup.point_backup_used(model, state.alphas, state.num_alphas, b))(beliefs)
    old_lower = jax.vmap(lambda b: lower_bound(state, b))(beliefs)
    keep = valid & (out.value > old_lower + _tolerance(old_lower))
    (alphas, actions, witnesses, successors), n = _insert(
        (state.alphas, state.actions, state.witnesses, state.successors), state.num_alphas,
        (out.alpha.astype(state.alphas.dtype), out.action, beliefs, out.successors), keep)
    state = state._replace(alphas=alphas, actions=actions, witnesses=witnesses, successors=successors,
                           num_alphas=n)
    if not upper:
        return state
    q = jax.vmap(lambda b: _upper_q(model, state, b)[0])(beliefs)
    new_u = jnp.max(q, axis=1).astype(state.values.dtype)
    old_u = jax.vmap(lambda b: upper_bound(state, b))(beliefs)
    improved = valid & (new_u < old_u - _tolerance(old_u))
    # an identical point already in the set gets the new value in place
    match, existing = jax.vmap(lambda b: _find_point(state, b))(beliefs)
    existing = improved & existing
    values = state.values.at[jnp.where(existing, match, state.values.shape[0])].min(new_u, mode="drop")
    (points, values), m = _insert((state.points, values), state.num_points, (beliefs, new_u),
                                  improved & ~existing)
    return state._replace(points=points, values=values, num_points=m)


# ------------------------------------------------------------------- init
def init(model: TabularPOMDP, *, alpha_capacity: int = 256, point_capacity: int = 256) -> PointBasedState:
    """The initial state: blind lower bound, FIB corners and ``b0`` as the first point."""
    bounds.check_discount(model)
    blind = bounds.blind_alphas(model)
    q_fib = bounds.fib(model)
    A, S = blind.shape
    alpha_capacity = max(alpha_capacity, A)
    dtype = model.reward.dtype
    b0 = model.initial_belief
    alphas = jnp.zeros((alpha_capacity, S), dtype).at[:A].set(blind)
    actions = jnp.zeros(alpha_capacity, jnp.int32).at[:A].set(jnp.arange(A, dtype=jnp.int32))
    witnesses = jnp.zeros((alpha_capacity, S), dtype).at[:A].set(b0)
    O = model.num_observations
    successors = jnp.zeros((alpha_capacity, O), jnp.int32).at[:A].set(
        jnp.broadcast_to(jnp.arange(A, dtype=jnp.int32)[:, None], (A, O)))
    points = jnp.zeros((point_capacity, S), dtype).at[0].set(b0)
    values = jnp.zeros(point_capacity, dtype).at[0].set(jnp.max(jnp.matmul(q_fib, b0, precision=HIGHEST)))
    return PointBasedState(alphas, actions, witnesses, successors, jnp.int32(A), points, values, jnp.int32(1),
                           jnp.max(q_fib, axis=0), jnp.int32(0))


# ------------------------------------------------------------ HSVI update
def _trial(model: TabularPOMDP, state: PointBasedState, config: Config, epsilon, key):
    """One heuristic-search trial from ``b0``: the beliefs it visits float[D, S] and its length."""
    D = config.max_depth
    gamma = model.discount
    b0 = state.points[0]
    path0 = jnp.zeros((D, b0.shape[0]), b0.dtype)

    def cond(carry):
        t, _, active, _, _ = carry
        return active & (t < D)

    def body(carry):
        t, b, _, path, key = carry
        path = path.at[t].set(b)
        key, sub = jax.random.split(key)
        q_u, tau, u = _upper_q(model, state, b)
        a = jnp.argmax(q_u)
        p_o = jnp.sum(tau[a], axis=-1)  # [O]
        safe = jnp.where(p_o > 0, p_o, 1)
        children = tau[a] / safe[:, None]
        lower = jax.vmap(lambda c: lower_bound(state, c))(children)
        threshold = epsilon * gamma ** (-(t + 1).astype(b.dtype))
        excess = u[a] / safe - lower - threshold
        weight = jnp.where(p_o > 0, p_o * jnp.maximum(excess, 0), 0)
        go = jnp.any(weight > 0)
        o = jax.random.categorical(sub, jnp.log(jnp.where(weight > 0, weight, 1e-30)))
        return t + 1, jnp.where(go, children[o], b), go, path, key

    t, _, _, path, _ = lax.while_loop(cond, body, (jnp.int32(0), b0, jnp.bool_(True), path0, key))
    return path, t


@partial(jax.jit, static_argnames=("config",))
def update(key: jax.Array, model: TabularPOMDP, state: PointBasedState, config: Config = Config()):
    """One HSVI-style step: ``config.width`` trials from ``b0``, backed up deepest first.

    Vectors and points that do not fit in the sets' capacity are dropped (the
    bounds stay valid); :func:`solve` grows the sets between steps.

    Returns:
      The new state.
    """
    b0 = state.points[0]
    gap = state.values[0] - lower_bound(state, b0)
    epsilon = config.epsilon_fraction * jnp.maximum(gap, 0)
    key, sweep_key = jax.random.split(key)
    keys = distributed.constrain(jax.random.split(key, config.width))  # trials split over a mesh's devices
    paths, lengths = jax.vmap(lambda k: _trial(model, state, config, epsilon, k))(keys)  # [W, D, S], [W]
    depth = jnp.max(lengths)

    def cond(carry):
        d, _ = carry
        return d >= 0

    def body(carry):
        d, st = carry
        valid = lengths > d
        valid = jnp.where(d == 0, jnp.arange(config.width) == 0, valid)  # b0 once
        st = backup_beliefs(model, st, paths[:, d], valid)
        return d - 1, st

    _, state = lax.while_loop(cond, body, (depth - 1, state))

    def sweep(i, st):
        rows = jax.random.randint(jax.random.fold_in(sweep_key, i), (config.width,), 0, st.num_points)
        return backup_beliefs(model, st, st.points[rows], jnp.ones(config.width, bool), upper=False)

    state = lax.fori_loop(0, config.lower_sweeps, sweep, state)
    return state._replace(iteration=state.iteration + 1)


# --------------------------------------------------------------- PBVI / Perseus
@jax.jit
def _expand(key, model: TabularPOMDP, beliefs: jax.Array, belief_mask: jax.Array) -> jax.Array:
    """PBVI's expansion: for each belief, the simulated successor farthest (L1) from the set."""
    A = model.num_actions

    def one(key, b):
        tau = backup.successor_beliefs(model, b)
        p_o = jnp.sum(tau, axis=-1)  # [A, O]
        o = jax.random.categorical(key, jnp.log(jnp.where(p_o > 0, p_o, 1e-30)), axis=-1)  # [A]
        child = tau[jnp.arange(A), o] / jnp.maximum(p_o[jnp.arange(A), o], 1e-30)[:, None]  # [A, S]
        dist = jax.vmap(lambda c: jnp.min(jnp.where(belief_mask, jnp.sum(jnp.abs(beliefs - c), -1), jnp.inf)))(child)
        return child[jnp.argmax(dist)], jnp.max(dist)

    keys = jax.random.split(key, beliefs.shape[0])
    return jax.vmap(one)(keys, beliefs)


@partial(jax.jit, static_argnames=("chunk",))
def _sweep(model, state, beliefs, valid, chunk: int):
    """Backs up every valid belief, ``chunk`` at a time, in sequence."""
    n = beliefs.shape[0]
    num_chunks = n // chunk

    def body(i, st):
        rows = lax.dynamic_slice_in_dim(beliefs, i * chunk, chunk)
        ok = lax.dynamic_slice_in_dim(valid, i * chunk, chunk)
        return backup_beliefs(model, st, rows, ok)

    return lax.fori_loop(0, num_chunks, body, state)


@jax.jit
def _values_at(state: PointBasedState, beliefs: jax.Array) -> jax.Array:
    return jax.vmap(lambda b: lower_bound(state, b))(beliefs)


def _random_beliefs(key, model: TabularPOMDP, count: int) -> np.ndarray:
    """Perseus's belief set: beliefs met by random actions from ``b0`` (restarting at random)."""
    gamma = float(model.discount)

    @jax.jit
    def walk(key):
        def step(b, key):
            k1, k2, k3 = jax.random.split(key, 3)
            a = jax.random.randint(k1, (), 0, model.num_actions)
            tau = backup.successor_beliefs(model, b)[a]
            p_o = jnp.sum(tau, axis=-1)
            o = jax.random.categorical(k2, jnp.log(jnp.where(p_o > 0, p_o, 1e-30)))
            nb = tau[o] / jnp.maximum(p_o[o], 1e-30)
            nb = jnp.where(jax.random.uniform(k3) < 1 - gamma, model.initial_belief, nb)
            return nb, b
        return lax.scan(step, model.initial_belief, jax.random.split(key, count))[1]

    return np.asarray(walk(key))


def initial_capacity(model: TabularPOMDP, budget_bytes: int = 2**30) -> int:
    """Rows to allocate for the alpha and point sets at the start.

    The kernels only scan the rows in use, so a large, mostly empty set costs
    memory but no time, and spares the recompilations of growing it: the largest
    power of two (256 to 16,384) whose three float[., S] arrays fit in
    ``budget_bytes``.
    """
    per_row = 3 * model.num_states * jnp.dtype(model.reward.dtype).itemsize
    rows = max(256, budget_bytes // per_row)
    return int(min(16384, 1 << (rows.bit_length() - 1)))


def default_config(model: TabularPOMDP) -> Config:
    """Fewer trials per step for large models, so that one step stays short.

    The work of a trial step grows with ``A * O * S``; 16 trials for models up to
    ``A O S = 8,000``, proportionally fewer above (at least 1), so that steps stay
    short enough to stop near the time limit.
    """
    size = model.num_actions * model.num_observations * model.num_states
    return Config(width=int(max(1, min(16, 16 * 8_000 // max(size, 1)))))


# ------------------------------------------------------------------- driver
def _compact(state: PointBasedState, keep: np.ndarray) -> PointBasedState:
    """Moves the kept vectors to the front, renumbering their successor links."""
    keep = np.asarray(keep)
    idx = np.flatnonzero(keep)
    order = np.concatenate([idx, np.flatnonzero(~keep)])
    renumber = np.zeros(len(keep), np.int32)
    renumber[order] = np.arange(len(keep), dtype=np.int32)
    order_d = jnp.asarray(order)
    take = lambda x: jnp.take(x, order_d, axis=0)  # noqa: E731
    successors = jnp.asarray(renumber)[take(state.successors)]
    # rows past the kept ones are zeroed: rows not in use are always zero, so a
    # checkpoint need only hold the rows in use (and a resumed state is the same)
    used = jnp.arange(len(keep)) < len(idx)
    clear = lambda x: jnp.where(used.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0)  # noqa: E731
    return state._replace(alphas=clear(take(state.alphas)), actions=clear(take(state.actions)),
                          witnesses=clear(take(state.witnesses)), successors=clear(successors),
                          num_alphas=jnp.int32(len(idx)))


def _used(count: int, capacity: int) -> int:
    """How many leading rows to look at for ``count`` in use: a power of two (at
    least 256), so few distinct shapes compile."""
    return min(capacity, max(256, 1 << max(0, int(count) - 1).bit_length()))


def _closure(keep: np.ndarray, successors: np.ndarray) -> np.ndarray:
    """``keep`` plus every vector a kept vector continues with, transitively."""
    keep = keep.copy()
    while True:
        linked = np.zeros_like(keep)
        linked[successors[keep].ravel()] = True
        if not (linked & ~keep).any():
            return keep
        keep |= linked


def prune_state(state: PointBasedState, model: TabularPOMDP) -> PointBasedState:
    """Drops pointwise-dominated vectors (moving links to their dominators) and
    vectors that are best at none of the witness beliefs and points and that no
    kept vector continues with.

    Outside jit. Keeping the successors of kept vectors keeps the set closed: every
    kept vector is then ``<=`` the Bellman backup of the kept set, so the policy that
    acts greedily on them earns at least ``max_k alpha_k . b0`` (the lower bound).
    """
    del model
    M, S = state.alphas.shape
    n = _used(int(state.num_alphas), M)  # vectors in use all lie in the first n rows
    mask = np.arange(n) < int(state.num_alphas)
    alphas = state.alphas[:n]
    successors = np.where(mask[:, None], np.asarray(state.successors[:n]), 0)  # rows not in use: stale
    if n * n * S <= 4e9:  # links to pointwise-dominated vectors move to their dominators
        dom = np.asarray(prune.dominators(alphas, jnp.asarray(mask)))
        mask = dom == np.arange(n)
        successors = np.where(dom[successors] >= 0, dom[successors], successors)
        state = state._replace(successors=state.successors.at[:n].set(jnp.asarray(successors)))
    p = _used(int(state.num_points), state.points.shape[0])
    beliefs = jnp.concatenate([state.witnesses[:n], state.points[:p]])
    bmask = jnp.concatenate([jnp.arange(n) < state.num_alphas, jnp.arange(p) < state.num_points])
    keep = np.asarray(prune.best_at_beliefs(alphas, jnp.asarray(mask), beliefs, bmask))
    keep = _closure(keep, successors) & mask
    return _compact(state, np.concatenate([keep, np.zeros(M - n, bool)]))


def _grow(state: PointBasedState, *, alphas: int = 0, points: int = 0) -> PointBasedState:
    """Reallocates the sets with at least the given free rows (doubling)."""
    def bigger(cap, used, need):
        while cap - used < need:
            cap *= 2
        return cap

    M, S = state.alphas.shape
    P = state.points.shape[0]
    new_m = bigger(M, int(state.num_alphas), alphas)
    new_p = bigger(P, int(state.num_points), points)
    pad = lambda x, n: jnp.concatenate([x, jnp.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)])  # noqa: E731
    if new_m != M:
        state = state._replace(alphas=pad(state.alphas, new_m), actions=pad(state.actions, new_m),
                               witnesses=pad(state.witnesses, new_m), successors=pad(state.successors, new_m))
    if new_p != P:
        state = state._replace(points=pad(state.points, new_p), values=pad(state.values, new_p))
    return state


def _with_capacities(state: PointBasedState, alphas: int, points: int) -> PointBasedState:
    """Abstract shapes (``jax.ShapeDtypeStruct``) of the state with other capacities."""
    S = state.alphas.shape[1]
    spec = jax.ShapeDtypeStruct
    return state._replace(
        alphas=spec((alphas, S), state.alphas.dtype), actions=spec((alphas,), state.actions.dtype),
        witnesses=spec((alphas, S), state.witnesses.dtype),
        successors=spec((alphas, state.successors.shape[1]), state.successors.dtype), points=spec((points, S), state.points.dtype),
        values=spec((points,), state.values.dtype))


def _check_config(config: Config, perseus_beliefs: int) -> None:
    """ValueError naming the first setting that makes no sense (they fix shapes: 0 fails deep inside)."""
    def integer(v, least):
        return is_integer(v) and v >= least

    checks = [("Config.width", config.width, integer(config.width, 1), "an integer >= 1"),
              ("Config.max_depth", config.max_depth, integer(config.max_depth, 1), "an integer >= 1"),
              ("Config.lower_sweeps", config.lower_sweeps, integer(config.lower_sweeps, 0), "an integer >= 0"),
              ("Config.epsilon_fraction", config.epsilon_fraction,
               isinstance(config.epsilon_fraction, (int, float, np.number)) and 0 <= config.epsilon_fraction < math.inf,
               "a finite number >= 0"),
              ("perseus_beliefs", perseus_beliefs, integer(perseus_beliefs, 1), "an integer >= 1")]
    for name, value, ok, what in checks:
        if not ok:
            raise ValueError(f"{name} = {value!r}: expected {what}")


def _step_room(method: str, config: Config) -> int:
    """Rows one step can add to each set: a vector and a point per trial and depth (HSVI), two per batch row."""
    return config.width * (config.max_depth + config.lower_sweeps) if method == "hsvi" else 2 * 64


def initial_state(model: TabularPOMDP, config: Optional[Config] = None, method: str = "hsvi") -> PointBasedState:
    """The state :func:`solve` starts from: :func:`init` at :func:`initial_capacity`, grown so
    that one step of ``method`` fits (``config``: :func:`default_config` when None)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    config = default_config(model) if config is None else config
    capacity = initial_capacity(model)
    state = init(model, alpha_capacity=capacity, point_capacity=capacity)
    return _make_room(state, model, _step_room(method, config))


def lower_update(model: TabularPOMDP, state: PointBasedState, config: Optional[Config] = None, *,
                 key: Optional[jax.Array] = None, capacities: Optional[tuple[int, int]] = None) -> jax.stages.Lowered:
    """:func:`update` lowered as :func:`solve` compiles it: on the abstract shapes of ``state``
    with the set capacities ``(vectors, points)`` (default: ``state``'s), under the current mesh.

    ``.compile()`` hands back the program ``solve`` ran (JAX caches it) for inspecting:
    its HLO (``.as_text()``: e.g. how it is partitioned over a mesh), ``.cost_analysis()``,
    ``.memory_analysis()``. ``key`` defaults to ``jax.random.key(0)``, ``config`` to
    :func:`default_config`.
    """
    config = default_config(model) if config is None else config
    key = jax.random.key(0) if key is None else key
    if capacities is None:
        capacities = (state.alphas.shape[0], state.points.shape[0])
    return update.lower(key, model, _with_capacities(state, *capacities), config)


def _make_room(state, model, need: int) -> PointBasedState:
    """Prunes and grows the sets so that ``need`` more rows fit, with 25% to spare."""
    M, P = state.alphas.shape[0], state.points.shape[0]
    if M - int(state.num_alphas) < max(need, M // 4):
        state = prune_state(state, model)
        if M - int(state.num_alphas) < max(need, M // 4):
            state = _grow(state, alphas=max(need, M // 2))
    if P - int(state.num_points) < max(need, P // 4):
        state = _grow(state, points=max(need, P // 2))
    return state


def _shapes(state: PointBasedState, beliefs: Optional[np.ndarray], width: int) -> tuple:
    """What fixes the compiled shapes of a step: the set capacities (and for PBVI the
    padded size of its belief set)."""
    padded = 0 if beliefs is None else width * 2 ** max(0, math.ceil(math.log2(len(beliefs) / width)))
    return (state.alphas.shape[0], state.points.shape[0], padded)


def _rows_finite(x: jax.Array, count: jax.Array, chunk: int = 256) -> jax.Array:
    """bool[]: whether the first ``count`` rows of ``x`` are finite (only those rows
    are read, ``chunk`` at a time, so the cost grows with ``count``, not the capacity)."""
    capacity = x.shape[0]
    chunk = min(chunk, capacity)

    def body(i, ok):
        start = jnp.minimum(i * chunk, capacity - chunk)  # the last chunk may overlap
        rows = lax.dynamic_slice_in_dim(x, start, chunk)
        unused = (start + jnp.arange(chunk) >= count).reshape((chunk,) + (1,) * (x.ndim - 1))
        return ok & jnp.all(jnp.isfinite(rows) | unused)

    return lax.fori_loop(0, (count + chunk - 1) // chunk, body, jnp.bool_(True))


#: What the finiteness flags of :func:`_b0_bounds` check, in order (for messages).
_CHECKED = ("lower-bound alpha-vectors", "upper-bound point values", "upper-bound belief points",
            "upper-bound corner values (FIB)")


@jax.jit
def _b0_bounds(state: PointBasedState):
    """The bounds at ``b0`` and bool[4], whether each set in use is finite (see ``_CHECKED``)."""
    b0 = state.points[0]
    finite = jnp.stack([_rows_finite(state.alphas, state.num_alphas), _rows_finite(state.values, state.num_points),
                        _rows_finite(state.points, state.num_points), jnp.all(jnp.isfinite(state.corner))])
    return lower_bound(state, b0), upper_bound(state, b0), finite


def _bounds_at_b0(state: PointBasedState) -> tuple[float, float, np.ndarray]:
    """``(lower, upper, finite)`` at ``b0`` on the host: one call, one wait."""
    lower, upper, finite = jax.device_get(_b0_bounds(state))
    return float(lower), float(upper), finite


def _bounds_finite(lower: float, upper: float, finite: np.ndarray) -> bool:
    return bool(finite.all()) and math.isfinite(lower) and math.isfinite(upper)


def _raise_nonfinite(method: str, iteration: int, model: TabularPOMDP, state: PointBasedState, lower: float,
                     upper: float, finite: np.ndarray, last_good: Optional[SolveResult]) -> None:
    """Raises ``NumericalError`` naming the first set in use or bound at ``b0`` that is not finite."""
    n, p = int(state.num_alphas), int(state.num_points)
    arrays = (state.alphas[:n], state.values[:p], state.points[:p], state.corner)
    checks = {what: ok if ok else np.asarray(x) for what, ok, x in zip(_CHECKED, finite, arrays)}
    checks.update({"lower bound at b0": lower, "upper bound at b0": upper})
    check_finite(method, iteration, checks, last_good=last_good, model=model, scale=value_scale(model))
    raise AssertionError("unreachable: a finiteness check failed")  # pragma: no cover


def _in_use(state: PointBasedState) -> PointBasedState:
    """The state cut to its rows in use (what a checkpoint holds; the other rows are zero)."""
    n, p = int(state.num_alphas), int(state.num_points)
    return state._replace(alphas=state.alphas[:n], actions=state.actions[:n], witnesses=state.witnesses[:n],
                          successors=state.successors[:n], points=state.points[:p], values=state.values[:p])


def _padded(state: PointBasedState, alphas: int, points: int) -> PointBasedState:
    """A state cut by :func:`_in_use` with its capacities back (zero rows)."""
    pad = lambda x, n: jnp.concatenate([x, jnp.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)])  # noqa: E731
    return state._replace(alphas=pad(state.alphas, alphas), actions=pad(state.actions, alphas),
                          witnesses=pad(state.witnesses, alphas), successors=pad(state.successors, alphas),
                          points=pad(state.points, points), values=pad(state.values, points))


def _result(state: PointBasedState, method: str, iteration: int, lower: float, upper: float, history: list,
            solve_seconds: float, compile_seconds: float, stop_reason: str = "") -> SolveResult:
    """The result of a state: its vectors in use as the policy, with the bounds given."""
    n = int(state.num_alphas)
    alphas = np.asarray(state.alphas[:n])
    actions = np.asarray(state.actions[:n])
    policy = AlphaVectorPolicy(jnp.asarray(alphas), jnp.asarray(actions))
    return SolveResult(policy=policy, lower_bound=lower, upper_bound=upper, solve_seconds=solve_seconds,
                       compile_seconds=compile_seconds, history=history, alphas=alphas, alpha_actions=actions,
                       info={"method": method, "iterations": iteration, "num_vectors": n,
                             "num_points": int(state.num_points), "stop_reason": stop_reason})


def solve(model: TabularPOMDP, *, method: str = "hsvi", time_limit: Optional[float] = 60.0,
          target_gap: float = 1e-3, seed: int = 0, callback: Optional[Callable] = None,
          config: Optional[Config] = None, max_iterations: Optional[int] = None,
          perseus_beliefs: int = 1000, checkpoint: Optional[Checkpointer] = None,
          resume: Optional[Checkpoint] = None, stop: Optional[Callable[[], bool]] = None,
          mesh: Optional[Mesh] = None) -> SolveResult:
    """Solves a tabular POMDP by point-based value iteration with certified bounds.

    Args:
      model: the POMDP (``discount < 1``).
      method: ``"hsvi"`` (heuristic search, default), ``"pbvi"`` or ``"perseus"``.
      time_limit: seconds of solving, not counting the first compilation (which is
        reported as ``compile_seconds``); ``None`` for no limit.
      target_gap: stop when ``upper - lower <= target_gap`` at ``b0``.
      seed: PRNG seed (same seed, same device: same result).
      callback: called after every step with ``(seconds, lower, upper,
        num_vectors, num_beliefs)``; return ``False`` to stop.
      config: :class:`Config` for ``hsvi`` (default: :func:`default_config`).
      max_iterations: optional cap on steps (counting those before ``resume``).
      perseus_beliefs: size of Perseus's belief set.
      checkpoint: a :class:`~jaxpomdp.checkpoint.Checkpointer`: the state (the
        vectors and points in use, the belief set, the PRNG key, the bounds and
        the history) is written after a step once its interval has passed, and at
        the end (before the final pruning, so a resume continues the same search).
      resume: a :class:`~jaxpomdp.checkpoint.Checkpoint` of this method on this
        model with the same ``config``, ``seed`` and ``perseus_beliefs``: the solve
        continues from it (``time_limit`` counts the seconds solved before it).
        Stopped and resumed, a solve ending by ``max_iterations`` or
        ``target_gap`` gives exactly the result of one never stopped.
      stop: polled between steps; once it returns True the solve stops there (its
        ``info["stop_reason"]`` is ``"stopped"``), writing the checkpoint.
      mesh: a :func:`jaxpomdp.distributed.make_mesh` mesh: the beliefs backed up
        together (HSVI's trials, PBVI's and Perseus's batches) are split over its
        devices, the vector and point sets replicated. Same result as without, up
        to the order of floating-point sums.

    Returns:
      A :class:`~jaxpomdp.solvers.SolveResult` whose policy is an
      :class:`~jaxpomdp.policy.AlphaVectorPolicy`; ``info["stop_reason"]`` is one of
      ``"target gap"``, ``"time limit"``, ``"max_iterations"``, ``"callback"``,
      ``"stopped"``.

    Raises:
      InvalidModelError: the model holds a NaN or an infinity.
      CheckpointError: ``resume`` is of another solver, model or settings.
      NumericalError: a bound at ``b0`` or a vector, point value or point in use
        became non-finite (checked after every step, with the bounds). Its
        ``iteration`` is the step (0: the initial bounds) and ``last_good`` the
        result of the state before that step (None at step 0).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    check_solve_args(time_limit, target_gap, seed, max_iterations)
    if mesh is not None:
        with distributed.using(mesh):
            return solve(model, method=method, time_limit=time_limit, target_gap=target_gap, seed=seed,
                         callback=callback, config=config, max_iterations=max_iterations,
                         perseus_beliefs=perseus_beliefs, checkpoint=checkpoint, resume=resume, stop=stop)
    bounds.check_discount(model)
    check_model(model)
    if config is None:
        config = default_config(model)
    _check_config(config, perseus_beliefs)
    options = {"config": config._asdict(), "seed": seed,
               "perseus_beliefs": perseus_beliefs if method == "perseus" else None}
    if resume is not None:
        resume.check(method, model, options)
    key = jax.random.key(seed)
    t_compile = time.perf_counter()
    state = initial_state(model, config, method)
    width = config.width if method == "hsvi" else 64
    need = _step_room(method, config)  # room for what one step can add
    lower, upper, finite = _bounds_at_b0(state)  # the initial bounds: blind vectors, FIB
    if not _bounds_finite(lower, upper, finite):
        _raise_nonfinite(method, 0, model, state, lower, upper, finite, None)
    beliefs = None
    if method != "hsvi":
        beliefs = np.asarray(state.points[:1])
        if method == "perseus" and resume is None:
            key, sub = jax.random.split(key)
            beliefs = np.concatenate([beliefs, _random_beliefs(sub, model, perseus_beliefs - 1)])
    iteration = 0
    history = [(0.0, lower, upper, int(state.num_alphas), int(state.num_points))]
    # the time a step takes, for stopping before one would overrun the limit; steps
    # on shapes not seen before also compile, so they do not set the estimate
    last_step = predicted_step = 0.0
    if resume is not None:
        saved = resume.restore({"state": _in_use(state), "beliefs": beliefs})
        loop = resume.loop
        state = _padded(saved["state"], *loop["capacities"])
        beliefs = None if saved["beliefs"] is None else np.asarray(saved["beliefs"])
        key, iteration, lower, upper = resume.key(), loop["iteration"], loop["lower"], loop["upper"]
        last_step, predicted_step = loop["last_step"], loop["predicted_step"]
        history = [tuple(row) for row in resume.history]

    # compiled steps by set capacities; the next larger one is compiled in the
    # background while the current one runs, so growing rarely stalls the search
    compiled: dict = {}
    executor = ThreadPoolExecutor(max_workers=1)

    mesh_now = jax.sharding.get_mesh()  # the compiling thread works under the same mesh
    mesh_now = None if mesh_now is None or mesh_now.empty else mesh_now

    def compile_step(st, capacities):
        with distributed.using(mesh_now):
            return lower_update(model, st, config, key=key, capacities=capacities).compile()

    def step_for(capacities, st):
        if capacities not in compiled:
            compiled[capacities] = executor.submit(compile_step, st, capacities)
        return compiled[capacities]

    def hsvi_compiled(k, st):
        return step_for((st.alphas.shape[0], st.points.shape[0]), st).result()

    def next_capacities(st):
        M, P = st.alphas.shape[0], st.points.shape[0]
        return (2 * M if int(st.num_alphas) > 0.6 * M else M, 2 * P if int(st.num_points) > 0.6 * P else P)

    # compile the step and pruning on the initial shapes before the clock starts
    if method == "hsvi":
        hsvi_compiled(key, state)
    else:
        _sweep.lower(model, state, jnp.zeros((width, model.num_states), state.alphas.dtype),
                     jnp.zeros(width, bool), chunk=width).compile()
    t_prune = time.perf_counter()
    prune_state(state, model)
    prune_compile = max(time.perf_counter() - t_prune, MIN_PRUNE_COMPILE_ESTIMATE)
    compile_seconds = time.perf_counter() - t_compile

    start = time.perf_counter() - start_seconds(resume)  # the clock counts the solving before a resume
    seen = {_shapes(state, beliefs if method == "pbvi" else None, width), ("prune", 256, 256)}

    def time_left():
        return math.inf if time_limit is None else time_limit - (time.perf_counter() - start)

    def save():
        loop = {"key": key, "iteration": iteration, "lower": lower, "upper": upper,
                "elapsed": time.perf_counter() - start, "last_step": last_step, "predicted_step": predicted_step,
                "capacities": [state.alphas.shape[0], state.points.shape[0]]}
        checkpoint.save(method, model, options, {"state": _in_use(state), "beliefs": beliefs}, loop, history)

    stop_reason = "target gap"
    while upper - lower > target_gap:
        if stopped(stop):
            stop_reason = "stopped"
            break
        if max_iterations is not None and iteration >= max_iterations:
            stop_reason = "max_iterations"
            break
        if time_left() < predicted_step:
            stop_reason = "time limit"
            break
        t_step = time.perf_counter()
        key, sub = jax.random.split(key)
        # growing compiles new shapes (the step, pruning); near the limit, overflow is
        # dropped instead (the bounds stay valid)
        may_grow = time_left() > 2 * max(compile_seconds, MIN_COMPILE_ESTIMATE)
        if method == "hsvi":
            grown = next_capacities(state)
            if may_grow and grown != (state.alphas.shape[0], state.points.shape[0]):
                step_for(grown, state)  # start compiling it now, in the background
            if may_grow:
                state = _make_room(state, model, need)
            shapes = _shapes(state, None, width)
            good = state  # kept until the step's result has been checked
            state = hsvi_compiled(sub, state)(sub, model, state)
        else:
            if may_grow:
                state = _make_room(state, model, max(need, len(beliefs) + width))
            shapes = _shapes(state, beliefs if method == "pbvi" else None, width)
            deadline = math.inf if time_limit is None else start + time_limit
            good = state
            state, beliefs = _batch_step(sub, model, state, beliefs, method, width, grow=may_grow,
                                         deadline=deadline)
        iteration += 1
        new_lower, new_upper, finite = _bounds_at_b0(state)  # waits for the step
        if not _bounds_finite(new_lower, new_upper, finite):
            executor.shutdown(wait=False, cancel_futures=True)
            _raise_nonfinite(method, iteration, model, state, new_lower, new_upper, finite, _result(
                good, method, iteration - 1, lower, upper, history, time.perf_counter() - start, compile_seconds))
        del good
        compiled_now = shapes not in seen
        seen.add(shapes)
        pruning = ("prune", _used(int(state.num_alphas), state.alphas.shape[0]),
                   _used(int(state.num_points), state.points.shape[0]))
        # pruning's new shapes compile in about a second: pruning goes on when a step's
        # recompilation no longer fits (so the sets stay small, and dropping overflow rare)
        if iteration % 8 == 0 and (pruning in seen or time_left() > prune_compile + predicted_step):
            compiled_now |= pruning not in seen
            seen.add(pruning)
            state = prune_state(state, model)  # keeps the best vector at b0: the bounds stay
        if not compiled_now or last_step == 0.0:
            # steps get longer as the sets grow: expect the last step's growth again
            previous, last_step = last_step, time.perf_counter() - t_step
            predicted_step = last_step * min(2.0, max(1.0, last_step / previous if previous > 0 else 1.0))
        lower, upper = max(lower, new_lower), min(upper, new_upper)
        row = (time.perf_counter() - start, lower, upper, int(state.num_alphas), int(state.num_points))
        history.append(row)
        if checkpoint is not None and checkpoint.due():
            save()
        if callback is not None and callback(*row) is False:
            stop_reason = "callback"
            break
    executor.shutdown(wait=False, cancel_futures=True)
    if checkpoint is not None:
        save()
    # a last pruning makes the policy smaller; on shapes not compiled yet it is
    # skipped when there is no time left for compiling (or when stopping: it would
    # delay the stop; the vectors are valid as they are)
    pruning = ("prune", _used(int(state.num_alphas), state.alphas.shape[0]),
               _used(int(state.num_points), state.points.shape[0]))
    if pruning in seen or (time_left() > prune_compile and not stopped(stop)):
        state = prune_state(state, model)
    return _result(state, method, iteration, lower, upper, history, time.perf_counter() - start, compile_seconds,
                   stop_reason)


def _batch_step(key, model, state, beliefs: np.ndarray, method: str, width: int, *,
                grow: bool, deadline: float):
    """One PBVI or Perseus step over the host-held belief set.

    ``grow``: PBVI may expand its belief set (new shapes compile); ``deadline``: a
    ``time.perf_counter()`` value at which Perseus ends its round early.
    """
    n = len(beliefs)
    if method == "pbvi":
        padded = width * 2 ** max(0, math.ceil(math.log2(n / width)))  # few distinct shapes
        bs = np.zeros((padded, beliefs.shape[1]), beliefs.dtype)
        bs[:n] = beliefs
        valid = np.arange(padded) < n
        state = _sweep(model, state, jnp.asarray(bs), jnp.asarray(valid), chunk=width)
        if grow:  # expand: each belief's farthest simulated successor
            children, dist = _expand(key, model, jnp.asarray(bs), jnp.asarray(valid))
            children, dist = np.asarray(children)[:n], np.asarray(dist)[:n]
            new = children[dist > 1e-6]
            if len(new):
                _, first = np.unique(np.round(new, 9), axis=0, return_index=True)
                beliefs = np.concatenate([beliefs, new[np.sort(first)]])
        return state, beliefs
    # perseus: back up random not-yet-improved beliefs until all have improved
    old = np.asarray(_values_at(state, jnp.asarray(beliefs)))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1])
    pending = np.ones(n, bool)
    while pending.any() and time.perf_counter() < deadline:
        rows = rng.choice(np.flatnonzero(pending), size=min(width, int(pending.sum())), replace=False)
        bs = np.zeros((width, beliefs.shape[1]), beliefs.dtype)
        bs[:len(rows)] = beliefs[rows]
        valid = np.arange(width) < len(rows)
        state = _sweep(model, state, jnp.asarray(bs), jnp.asarray(valid), chunk=width)
        now = np.asarray(_values_at(state, jnp.asarray(beliefs)))
        pending &= now < old + 1e-9 * (1 + np.abs(old))
        pending[rows] = False  # a belief whose backup could not improve it is done this round
    return state, beliefs
