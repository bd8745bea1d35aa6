"""A pure, jit- and vmap-able point-based solver on a fixed belief set.

:func:`solve_fixed` runs a fixed number of synchronous point-based iterations
(PBVI, Pineau, Gordon & Thrun 2003) on a fixed set of beliefs ``B`` (``b0``
always first) and returns certified bounds at ``b0``. It is one pure function of
arrays with static shapes, so a user can put it inside their own ``jax.jit``,
``jax.vmap`` it over a batch of models (a :class:`~jaxpomdp.TabularPOMDP` whose
leaves carry a leading batch axis, :func:`stack_models`), or differentiate its
bounds with respect to a model parameter (forward mode, ``jax.jvp`` /
``jax.jacfwd``: the bound iterations are ``lax.while_loop`` s).

For a batch of models (same shapes, other numbers: discount, rewards, transition
or observation probabilities) the module also gives the one-compiled-call
versions: :func:`solve_fixed_batch`, and :func:`blind_batch`, :func:`qmdp_batch`,
:func:`fib_batch` and :func:`bounds_batch` for the initial bounds of
:mod:`jaxpomdp.bounds`. Each is ``jax.jit(jax.vmap(f))`` of the single-model
function ``f``, so model ``i`` of the result is what ``f`` gives for
:func:`model_at` ``(models, i)`` (up to float rounding: the compiled, vectorised
arithmetic may round differently). What the batch saves is the per-call overhead
of a Python loop and, on an accelerator, the kernel launches of ``M`` small
problems; on a CPU, where a compiled single-model solve is already compute-bound,
it is about as fast as the loop (``benchmarks/model_batch.py`` measures both).

One iteration, for every point ``b_i`` of ``B`` at once:

* **lower bound** (alpha-vectors, :func:`jaxpomdp.backup.point_backup`): the new
  vector of ``b_i`` is the point-based backup of the current set at ``b_i``; it
  replaces the old vector of ``b_i`` only if it is at least as good at ``b_i``.
  The set starts from the blind policies' vectors (:func:`jaxpomdp.bounds.blind_alphas`),
  which stay in it; every vector is the value of a real conditional plan, so
  ``max_k alpha_k . b <= V*(b)`` everywhere, and the value at each point never
  decreases;
* **upper bound** (sawtooth, :func:`jaxpomdp.bounds.sawtooth`): the values at
  the points and at the corners (the states) start from the fast informed bound
  (:func:`jaxpomdp.bounds.fib`) and are lowered to ``min(U_i, max_a [R_a . b_i +
  gamma sum_o U(tau(b_i, a, o))])``, the Bellman backup of a valid upper bound,
  hence valid.

The cost per iteration is ``N + S`` backups of each bound (``O((N + S) A O S (S + N))``); the point-based
solver of :mod:`jaxpomdp.solvers.point_based` chooses its beliefs by heuristic
search and grows its sets, which this fixed-shape function does not.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxpomdp import problems
  >>> grid = simplex_grid(2, 8)            # 9 beliefs, shared by every model
  >>> models = stack_models([problems.tiger(g) for g in (0.9, 0.95)])
  >>> sol = jax.jit(jax.vmap(lambda m: solve_fixed(m, grid, 50)))(models)
  >>> sol.lower.shape, bool(jnp.all(sol.lower <= sol.upper))
  ((2,), True)
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpomdp import backup, bounds
from jaxpomdp.model import TabularPOMDP
from jaxpomdp.precision import exact

__all__ = ["FixedSolution", "solve_fixed", "solve_fixed_batch", "BatchBounds", "blind_batch", "qmdp_batch",
           "fib_batch", "bounds_batch", "stack_models", "model_at", "batch_size", "reachable_beliefs",
           "simplex_grid"]


class FixedSolution(NamedTuple):
    """What :func:`solve_fixed` returns (batched: a leading axis on every field).

    Attributes:
      points: float[N + 1, S] the belief points, ``b0`` first.
      alphas: float[A + N + 1, S] the lower-bound vectors: the ``A`` blind vectors,
        then one per point.
      actions: int32[A + N + 1] the first action of each vector's plan.
      lower: float[] the certified lower bound ``max_k alpha_k . b0 <= V*(b0)``.
      upper: float[] the certified upper bound (sawtooth) at ``b0``, or ``+inf``
        when ``upper=False``.
      lower_values: float[N + 1] the lower bound at each point.
      upper_values: float[N + 1] the upper bound at each point (``+inf`` when
        ``upper=False``).
      history: float[T + 1, 2] ``(lower, upper)`` at ``b0`` before the first
        iteration and after each one.
    """

    points: jax.Array
    alphas: jax.Array
    actions: jax.Array
    lower: jax.Array
    upper: jax.Array
    lower_values: jax.Array
    upper_values: jax.Array
    history: jax.Array


@exact
def _upper_backup(model: TabularPOMDP, points, values, corner, b):
    """``max_a [R_a . b + gamma sum_o U(tau(b, a, o))]`` under the sawtooth ``U`` of ``(points, values)``."""
    tau = backup.successor_beliefs(model, b)  # [A, O, S], unnormalised (sawtooth is homogeneous)
    mask = jnp.ones(points.shape[0], bool)
    u = jax.vmap(jax.vmap(lambda t: bounds.sawtooth(points, values, mask, corner, t)))(tau)  # [A, O]
    return jnp.max(model.reward @ b + model.discount * jnp.sum(u, axis=1))


@exact
def solve_fixed(model: TabularPOMDP, beliefs: jax.Array, num_iterations: int, *, upper: bool = True,
                chunk: int = 64) -> FixedSolution:
    """Point-based value iteration on a fixed belief set, with certified bounds at ``b0``.

    Pure: jit it, vmap it over models (``jax.vmap(lambda m: solve_fixed(m, B, T))``
    on :func:`stack_models`), or vmap it over belief sets. Nothing is raised under
    a trace; outside one, a discount outside ``[0, 1)`` raises ``ValueError``.

    Args:
      model: the POMDP, ``0 <= discount < 1`` (may be traced).
      beliefs: float[N, S] the belief points (normalised); ``b0`` is added in front.
      num_iterations: ``T``, the number of synchronous iterations (a Python int).
      upper: also compute the sawtooth upper bound (``N^2`` work per iteration);
        ``False`` reports ``+inf``.
      chunk: beliefs backed up together (vmapped) in one step of ``lax.map``.

    Returns:
      A :class:`FixedSolution`; ``lower <= V*(b0) <= upper``.

    Bounds are certified up to float32 rounding of the backups (about ``1e-7
    |V|``; use ``jax_enable_x64`` for more), and the upper bound is tight only
    where the successors of the points are points too (:func:`reachable_beliefs`).

    Example:
      >>> from jaxpomdp import problems
      >>> tiger = problems.tiger()
      >>> sol = solve_fixed(tiger, reachable_beliefs(tiger, 16), 200)
      >>> bool(sol.lower <= 19.3714 <= sol.upper), bool(sol.upper - sol.lower < 0.01)
      (True, True)
    """
    bounds.check_discount(model)
    num_iterations = int(num_iterations)
    if num_iterations < 0:
        raise ValueError(f"num_iterations must be non-negative; got {num_iterations}")
    beliefs = jnp.asarray(beliefs, model.reward.dtype)
    chex.assert_rank(beliefs, 2)
    if beliefs.shape[-1] != model.num_states:
        raise ValueError(f"beliefs have {beliefs.shape[-1]} states per row; the model has {model.num_states}")
    points = jnp.concatenate([model.initial_belief[None, :].astype(beliefs.dtype), beliefs])  # [P, S]
    A, S = model.num_actions, model.num_states
    P = points.shape[0]
    corners = jnp.eye(S, dtype=points.dtype)

    blind = bounds.blind_alphas(model)  # [A, S]
    blind_actions = jnp.arange(A, dtype=jnp.int32)
    best = jnp.argmax(points @ blind.T, axis=1)  # [P] the best blind vector at each point
    own = blind[best]
    own_actions = blind_actions[best]

    if upper:
        q_fib = bounds.fib(model)  # [A, S]
        corner = jnp.max(q_fib, axis=0)  # [S]
        values = jnp.max(points @ q_fib.T, axis=1)  # [P] FIB at each point
    else:
        corner = jnp.zeros(S, model.reward.dtype)
        values = jnp.full(P, jnp.inf, model.reward.dtype)

    mask = jnp.ones(A + P, bool)

    def upper_at(values, corner):
        """The sawtooth bound at the points themselves: ``min(U_i, b_i . corner)``."""
        return jnp.minimum(values, points @ corner) if upper else values

    def bounds_at_b0(own, values, corner):
        alphas = jnp.concatenate([blind, own])
        return jnp.stack([backup.lower_value(alphas, mask, points[0]), upper_at(values, corner)[0]])

    def iteration(carry, _):
        own, own_actions, values, corner = carry
        alphas = jnp.concatenate([blind, own])
        out = backup.point_backup_batch(model, alphas, mask, points, chunk=chunk)
        better = out.value >= jnp.sum(own * points, axis=1)
        own = jnp.where(better[:, None], out.alpha.astype(own.dtype), own)
        own_actions = jnp.where(better, out.action, own_actions)
        if upper:  # the points and the corners (the states), both against the current bound
            targets = jnp.concatenate([points, corners])
            new = lax.map(lambda b: _upper_backup(model, points, values, corner, b), targets,
                          batch_size=min(chunk, P + S)).astype(values.dtype)
            values, corner = jnp.minimum(values, new[:P]), jnp.minimum(corner, new[P:])
        return (own, own_actions, values, corner), bounds_at_b0(own, values, corner)

    first = bounds_at_b0(own, values, corner)
    (own, own_actions, values, corner), rows = lax.scan(iteration, (own, own_actions, values, corner), None,
                                                        length=num_iterations)
    alphas = jnp.concatenate([blind, own])
    actions = jnp.concatenate([blind_actions, own_actions])
    lower_values = jnp.max(points @ alphas.T, axis=1)
    upper_values = upper_at(values, corner)
    history = jnp.concatenate([first[None], rows])
    return FixedSolution(points=points, alphas=alphas, actions=actions, lower=lower_values[0],
                         upper=upper_values[0], lower_values=lower_values, upper_values=upper_values,
                         history=history)


def stack_models(models: Sequence[TabularPOMDP]) -> TabularPOMDP:
    """Stacks models of the same shapes into one model whose leaves have a leading batch axis.

    The result is what ``jax.vmap`` over a model expects. Names are static
    metadata, so they must agree (the first model's are kept).

    Raises:
      ValueError: no models, or two models differ in an array's shape or dtype, in
        which optional arrays they have, or in their names.
    """
    models = list(models)
    if not models:
        raise ValueError("stack_models needs at least one model")
    first = models[0]
    leaves0, tree0 = jax.tree.flatten(first)
    for i, m in enumerate(models[1:], start=1):
        leaves, tree = jax.tree.flatten(m)
        if tree != tree0:
            for field in ("state_names", "action_names", "observation_names"):
                if getattr(m, field) != getattr(first, field):
                    raise ValueError(f"model {i} has other {field.replace('_', ' ')} than model 0")
            raise ValueError(f"model {i} does not have the same optional arrays as model 0 "
                             "(state_features / observation_features)")
        for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(first)[0], leaves):
            if np.shape(x) != np.shape(y) or jnp.result_type(x) != jnp.result_type(y):
                name = jax.tree_util.keystr(path).lstrip(".")
                raise ValueError(f"model {i}: {name} has shape {np.shape(y)} {jnp.result_type(y)}, "
                                 f"model 0 has {np.shape(x)} {jnp.result_type(x)} (same sizes are needed; "
                                 "K, the number of successors, depends on the transition zeros)")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *models)


def model_at(models: TabularPOMDP, index: int) -> TabularPOMDP:
    """The ``index``-th model of a stacked batch (:func:`stack_models`)."""
    return jax.tree.map(lambda x: x[index], models)


def batch_size(models: TabularPOMDP) -> int:
    """The number of models ``M`` in a stacked batch (:func:`stack_models`).

    Raises:
      ValueError: ``models`` has no leading batch axis (its ``next_state`` is not
        int[M, A, S, K]), or its arrays disagree on ``M``.
    """
    shape = np.shape(models.next_state)
    if len(shape) != 4:
        raise ValueError(f"a batch of models needs a leading batch axis (stack_models); next_state has shape "
                         f"{shape}, not [M, A, S, K]")
    size = shape[0]
    for path, x in jax.tree_util.tree_flatten_with_path(models)[0]:
        if np.ndim(x) == 0 or np.shape(x)[0] != size:
            name = jax.tree_util.keystr(path).lstrip(".")
            raise ValueError(f"{name} has shape {np.shape(x)}; every array of a batch of {size} models needs "
                             f"a leading axis of {size}")
    return size


def _batch_beliefs(models: TabularPOMDP, beliefs, rank: int, what: str) -> jax.Array:
    """``beliefs`` as an array of the models' dtype, either shared (rank ``rank``) or per model (one more)."""
    size = batch_size(models)
    beliefs = jnp.asarray(beliefs, models.reward.dtype)
    shared = beliefs.ndim == rank
    if not (shared or beliefs.ndim == rank + 1) or beliefs.shape[-1] != models.num_states \
            or (not shared and beliefs.shape[0] != size):
        raise ValueError(f"{what} must be float[{'N, ' if rank == 2 else ''}S] (shared by every model) or "
                         f"float[M, {'N, ' if rank == 2 else ''}S] (one per model) with M = {size} and "
                         f"S = {models.num_states}; got shape {beliefs.shape}")
    return beliefs


def solve_fixed_batch(models: TabularPOMDP, beliefs: jax.Array, num_iterations: int, *, upper: bool = True,
                      chunk: int = 64) -> FixedSolution:
    """:func:`solve_fixed` for every model of a batch, in one compiled call.

    ``jax.jit(jax.vmap(solve_fixed))`` over the models (and over the belief sets
    when each model has its own): field ``[i]`` of the result is what
    ``solve_fixed(model_at(models, i), beliefs[i], num_iterations)`` returns, up to
    float rounding (the vectorised arithmetic may round differently). The
    iterations are a ``lax.scan`` of fixed length, so no model waits for another.

    Args:
      models: ``M`` models of the same shapes stacked by :func:`stack_models`
        (discount, rewards, transition and observation probabilities may differ).
      beliefs: float[N, S], one belief set for every model (e.g. :func:`simplex_grid`),
        or float[M, N, S], one per model (e.g. ``np.stack([reachable_beliefs(m, N)
        for m in models_list])``); ``b0`` of each model is added in front.
      num_iterations, upper, chunk: as in :func:`solve_fixed` (static: another
        value compiles again).

    Returns:
      A :class:`FixedSolution` with a leading axis ``M`` on every field;
      ``lower[i] <= V_i*(b0_i) <= upper[i]``.

    Raises:
      ValueError: ``models`` is not a batch (:func:`batch_size`), a (concrete)
        discount is outside ``[0, 1)``, ``num_iterations < 0`` or ``beliefs`` has
        another shape.

    Example:
      >>> from jaxpomdp import problems
      >>> models = stack_models([problems.tiger(g) for g in (0.9, 0.95)])
      >>> sol = solve_fixed_batch(models, simplex_grid(2, 8), 50)
      >>> sol.lower.shape, bool(jnp.all(sol.lower <= sol.upper))
      ((2,), True)
    """
    beliefs = _batch_beliefs(models, beliefs, 2, "beliefs")
    bounds.check_discount(models)
    num_iterations = int(num_iterations)
    if num_iterations < 0:
        raise ValueError(f"num_iterations must be non-negative; got {num_iterations}")
    return _solve_fixed_batch(models, beliefs, num_iterations, bool(upper), int(chunk))


@functools.partial(jax.jit, static_argnames=("num_iterations", "upper", "chunk"))
def _solve_fixed_batch(models, beliefs, num_iterations, upper, chunk):
    def solve(model, b):
        return solve_fixed(model, b, num_iterations, upper=upper, chunk=chunk)

    return jax.vmap(solve, in_axes=(0, None if beliefs.ndim == 2 else 0))(models, beliefs)


class BatchBounds(NamedTuple):
    """What :func:`bounds_batch` returns for ``M`` models (``A`` actions, ``S`` states).

    Attributes:
      blind: float[M, A, S] the blind policies' vectors (:func:`jaxpomdp.bounds.blind_alphas`).
      qmdp: float[M, A, S] the QMDP Q-vectors (:func:`jaxpomdp.bounds.qmdp`).
      fib: float[M, A, S] the fast informed bound's Q-vectors (:func:`jaxpomdp.bounds.fib`).
      lower: float[M] ``max_a blind[a] . b <= V*(b)`` (:func:`jaxpomdp.bounds.blind_lower_bound`).
      lower_action: int32[M] the best blind action at ``b``.
      qmdp_upper: float[M] ``max_a qmdp[a] . b >= V*(b)`` (:func:`jaxpomdp.bounds.qmdp_upper_bound`).
      qmdp_action: int32[M] the QMDP-greedy action at ``b``.
      fib_upper: float[M] ``max_a fib[a] . b >= V*(b)``, at most ``qmdp_upper``.
      fib_action: int32[M] the FIB-greedy action at ``b``.
    """

    blind: jax.Array
    qmdp: jax.Array
    fib: jax.Array
    lower: jax.Array
    lower_action: jax.Array
    qmdp_upper: jax.Array
    qmdp_action: jax.Array
    fib_upper: jax.Array
    fib_action: jax.Array


def _vectors(model: TabularPOMDP, which: str, tol: float, max_iter: int) -> jax.Array:
    fn = {"blind": bounds.blind_alphas, "qmdp": bounds.qmdp, "fib": bounds.fib}[which]
    return fn(model, tol=tol, max_iter=max_iter)


@functools.partial(jax.jit, static_argnames=("which", "tol", "max_iter"))
def _vectors_batch(models: TabularPOMDP, which: str, tol: float, max_iter: int) -> jax.Array:
    return jax.vmap(lambda m: _vectors(m, which, tol, max_iter))(models)


def _static_settings(tol, max_iter) -> tuple[float, int]:
    tol, max_iter = float(tol), int(max_iter)
    if not tol >= 0 or max_iter < 0:
        raise ValueError(f"tol and max_iter must be non-negative; got {tol}, {max_iter}")
    return tol, max_iter


def _batch_vectors(models: TabularPOMDP, which: str, tol, max_iter) -> jax.Array:
    batch_size(models)
    bounds.check_discount(models)
    return _vectors_batch(models, which, *_static_settings(tol, max_iter))


_BATCH_NOTE = """
    One ``jax.jit(jax.vmap(...))`` of the single-model function: row ``i`` is what
    it returns for ``model_at(models, i)``. The value iteration is a
    ``lax.while_loop``; vmapped, the loop runs until the last model stops, but a
    model whose stopping rule has fired keeps its iterate (the batched loop
    selects the old carry for it), so each model gets the sweeps it would get
    alone and the same certified result, up to float rounding of the vectorised
    arithmetic (far below the certification's own pad). The batch costs as many
    sweeps as its slowest model (the one with the largest discount).

    Args:
      models: ``M`` models of the same shapes stacked by :func:`stack_models`.
      tol, max_iter: as in :mod:`jaxpomdp.bounds` (static: another value compiles again).

    Raises:
      ValueError: ``models`` is not a batch (:func:`batch_size`) or a (concrete)
        discount is outside ``[0, 1)``.
"""


def blind_batch(models: TabularPOMDP, *, tol: float = bounds.DEFAULT_TOL,
                max_iter: int = bounds.DEFAULT_MAX_ITER) -> jax.Array:
    return _batch_vectors(models, "blind", tol, max_iter)


def qmdp_batch(models: TabularPOMDP, *, tol: float = bounds.DEFAULT_TOL,
               max_iter: int = bounds.DEFAULT_MAX_ITER) -> jax.Array:
    return _batch_vectors(models, "qmdp", tol, max_iter)


def fib_batch(models: TabularPOMDP, *, tol: float = bounds.DEFAULT_TOL,
              max_iter: int = bounds.DEFAULT_MAX_ITER) -> jax.Array:
    return _batch_vectors(models, "fib", tol, max_iter)


blind_batch.__doc__ = (""":func:`jaxpomdp.bounds.blind_alphas` of every model of a batch, in one compiled call: float[M, A, S].
""" + _BATCH_NOTE + """
    Example:
      >>> from jaxpomdp import problems
      >>> alphas = blind_batch(stack_models([problems.tiger(0.9), problems.tiger(0.95)]))
      >>> [round(float(x), 3) for x in alphas[:, 0, 0]]  # always listen: -1 / (1 - gamma)
      [-10.0, -20.0]
""")
qmdp_batch.__doc__ = (""":func:`jaxpomdp.bounds.qmdp` of every model of a batch, in one compiled call: float[M, A, S].
""" + _BATCH_NOTE + """
    Example:
      >>> from jaxpomdp import problems
      >>> q = qmdp_batch(stack_models([problems.tiger(0.9), problems.tiger(0.95)]))
      >>> [round(float(x), 2) for x in q[:, 0, 0]]  # listen once, then open the right door forever
      [89.0, 189.0]
""")
fib_batch.__doc__ = (""":func:`jaxpomdp.bounds.fib` of every model of a batch, in one compiled call: float[M, A, S].
""" + _BATCH_NOTE + """
    Example:
      >>> from jaxpomdp import problems
      >>> models = stack_models([problems.tiger(0.9), problems.tiger(0.95)])
      >>> bool(jnp.all(fib_batch(models) <= qmdp_batch(models) + 1e-3))
      True
""")


def bounds_batch(models: TabularPOMDP, beliefs: jax.Array | None = None, *, tol: float = bounds.DEFAULT_TOL,
                 max_iter: int = bounds.DEFAULT_MAX_ITER) -> BatchBounds:
    """The blind, QMDP and FIB vectors of every model of a batch and their bounds at a belief, in one compiled call.

    ``lower = max_a blind_a . b <= V*(b) <= fib_upper = max_a FIB_a . b <=
    qmdp_upper = max_a Q_a . b`` for each model, each vector set as
    :func:`blind_batch` / :func:`fib_batch` / :func:`qmdp_batch` computes it
    (the same certified fixed points, vmapped; see there).

    Args:
      models: ``M`` models of the same shapes stacked by :func:`stack_models`.
      beliefs: float[S] one belief for every model, float[M, S] one per model, or
        None for each model's own ``initial_belief``.
      tol, max_iter: as in :mod:`jaxpomdp.bounds` (static).

    Returns:
      A :class:`BatchBounds`.

    Raises:
      ValueError: ``models`` is not a batch, a (concrete) discount is outside
        ``[0, 1)``, or ``beliefs`` has another shape.

    Example:
      >>> from jaxpomdp import problems
      >>> out = bounds_batch(stack_models([problems.tiger(0.9), problems.tiger(0.95)]))
      >>> [round(float(x), 2) for x in out.lower], [round(float(x), 2) for x in out.qmdp_upper]
      ([-10.0, -20.0], [89.0, 189.0])
      >>> bool(jnp.all(out.lower <= out.fib_upper) & jnp.all(out.fib_upper <= out.qmdp_upper + 1e-3))
      True
    """
    beliefs = _batch_beliefs(models, models.initial_belief if beliefs is None else beliefs, 1, "beliefs")
    bounds.check_discount(models)
    return _bounds_batch(models, beliefs, *_static_settings(tol, max_iter))


@functools.partial(jax.jit, static_argnames=("tol", "max_iter"))
@exact
def _bounds_batch(models: TabularPOMDP, beliefs: jax.Array, tol: float, max_iter: int) -> BatchBounds:
    def one(model, b):
        vectors = [_vectors(model, which, tol, max_iter) for which in ("blind", "qmdp", "fib")]
        best = []
        for v in vectors:
            values = v @ b
            a = jnp.argmax(values).astype(jnp.int32)
            best += [values[a], a]
        return BatchBounds(*vectors, *best)

    return jax.vmap(one, in_axes=(0, None if beliefs.ndim == 1 else 0))(models, beliefs)


def simplex_grid(num_states: int, resolution: int) -> np.ndarray:
    """Every belief whose entries are multiples of ``1 / resolution``: float32[C(r + S - 1, S - 1), S].

    Freudenthal's regular grid of the belief simplex (Lovejoy 1991); for 2 states,
    ``resolution + 1`` evenly spaced beliefs. Raises ValueError when it would hold
    more than a million points.
    """
    S, r = int(num_states), int(resolution)
    if S < 1 or r < 1:
        raise ValueError(f"simplex_grid needs num_states >= 1 and resolution >= 1; got {S}, {r}")
    from math import comb
    count = comb(r + S - 1, S - 1)
    if count > 1_000_000:
        raise ValueError(f"a resolution-{r} grid over {S} states has {count} points; too many")
    rows = []
    # compositions of r into S non-negative parts, by stars and bars
    for bars in itertools.combinations(range(r + S - 1), S - 1):
        edges = (-1,) + bars + (r + S - 1,)
        rows.append([edges[j + 1] - edges[j] - 1 for j in range(S)])
    return (np.asarray(rows, np.float64) / r).astype(np.float32)


@jax.jit
def _successors(model: TabularPOMDP, b: jax.Array):
    tau = backup.successor_beliefs(model, b)  # [A, O, S]
    p = jnp.sum(tau, axis=-1, keepdims=True)
    return tau / jnp.where(p > 0, p, 1), p[..., 0]


def reachable_beliefs(model: TabularPOMDP, num_beliefs: int, *, max_depth: int = 1000,
                      decimals: int = 6) -> np.ndarray:
    """The beliefs reachable from ``b0``, breadth first: float[num_beliefs, S] (host side).

    Every successor ``b^{a,o}`` with ``P(o | b, a) > 0`` is visited in breadth-first
    order (shallow beliefs first, the way heuristic search meets them), up to
    ``max_depth`` steps from ``b0``; beliefs equal after rounding to ``decimals``
    are kept once. ``b0`` itself is left out (:func:`solve_fixed` adds it). When
    fewer than ``num_beliefs`` distinct beliefs are reachable the rows are padded
    with ``b0``, so that the shape is always the same (models of the same sizes
    give belief sets that stack, for ``jax.vmap`` over models and belief sets).

    These are the points where the sawtooth upper bound is tight: a successor
    that is itself a point gets that point's value. On a regular grid
    (:func:`simplex_grid`) the successors fall between points and the upper bound
    stays loose.
    """
    num_beliefs = int(num_beliefs)
    if num_beliefs < 1:
        raise ValueError(f"num_beliefs must be positive; got {num_beliefs}")
    b0 = np.asarray(model.initial_belief, np.float64)
    seen = {tuple(np.round(b0, decimals))}
    out: list = []
    frontier = [b0]
    depth = 0
    while frontier and len(out) < num_beliefs and depth < max_depth:
        depth += 1
        nxt = []
        for b in frontier:
            succ, prob = (np.asarray(x, np.float64) for x in _successors(model, jnp.asarray(b, model.reward.dtype)))
            for a, o in zip(*np.nonzero(prob > 0)):
                key = tuple(np.round(succ[a, o], decimals))
                if key in seen:
                    continue
                seen.add(key)
                out.append(succ[a, o])
                nxt.append(succ[a, o])
                if len(out) == num_beliefs:
                    break
            if len(out) == num_beliefs:
                break
        frontier = nxt
    rows = np.asarray(out + [b0] * (num_beliefs - len(out)), np.float64).reshape(num_beliefs, -1)
    return rows.astype(np.dtype(model.reward.dtype))
