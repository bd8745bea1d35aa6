"""Certified initial bounds on the optimal value function of a discounted POMDP.

* Lower bound, the *blind* policies (Hauskrecht 2000): for each fixed action ``a``
  the value of doing ``a`` forever, ``alpha_a = R_a + gamma T_a alpha_a``; every
  ``alpha_a`` is the alpha-vector of a real policy, so ``V*(b) >= max_a alpha_a . b``.
* Upper bound, *QMDP* (Littman, Cassandra, Kaelbling 1995): the Q-values of the
  fully observable MDP, ``Q_a = R_a + gamma T_a max_a' Q_a'``; then
  ``V*(b) <= max_a Q_a . b``.

Both are computed by value iteration started from a constant chosen so that every
iterate is itself a valid bound (the blind iterates increase towards ``alpha``,
the QMDP iterates decrease towards ``Q``). Iteration stops when the Bellman
residual guarantees ``||x_n - x*||_inf <= gamma / (1 - gamma) ||x_n - x_{n-1}||_inf
<= tol``, when an iterate repeats exactly (a floating-point fixed point: nothing
more can be gained), or after ``max_iter`` sweeps. Stopping early never breaks
the bound, only loosens it.

The result is then certified by its one-sided Bellman residual, which holds for
any ``x`` whatever rounding produced it: ``x* >= x + min(Bx - x) / (1 - gamma)``
(lower) and ``x* <= x + max(Bx - x) / (1 - gamma)`` (upper), with the residual
padded by the worst-case rounding of one sweep, ``(K + 3) u (|R| + gamma T|x|)``
(``u`` the unit roundoff). So the bounds hold in floating point too, loosened by
about ``(K + 3) u |V| / (1 - gamma)`` (relative ~1e-5 in float32 for gamma = 0.95,
~1e-14 in float64); in float32 with ``gamma`` near 1 rounding also limits how
close the iteration gets (``tol`` may not be reached): use ``jax_enable_x64`` for
tight values.

These infinite-horizon bounds need ``0 <= gamma < 1``: called outside jit with a
discount of 1 they raise ``ValueError``; under jit (discount traced) such a
discount gives non-finite values.

Everything is pure and jit/vmap-able (the iterations are jit-compiled already, so
that calls from plain Python are fast too); the transitions are read through
their sparse successors (a gather, ``O(A S K)`` per sweep).

Differentiation: :func:`blind_alphas`, :func:`qmdp` and :func:`fib` (and so the
bounds at a belief) are differentiable with respect to the model's numbers
(``reward``, ``next_prob``, ``obs_prob``, ``discount``; ``initial_belief`` where a
bound is taken at ``b0``), in forward mode (``jax.jvp``, ``jax.jacfwd``) and in
reverse mode (``jax.grad``, ``jax.vjp``), also under ``jax.vmap``. The derivative
is that of the exact fixed point ``x* = B(theta, x*)`` by the implicit function
theorem (:func:`implicit_fixed_point`), not of the iterations that approximate
it: ``dx* = (I - dB/dx)^{-1} dB/dtheta dtheta``, with the linear system solved by
the same contraction (forward: ``v = dB/dtheta dtheta + dB/dx v``; reverse:
``u = g + (dB/dx)^T u``, then ``(dB/dtheta)^T u``). For the maxima (QMDP's
``max_a'``, FIB's ``max_a'`` per observation) ``dB/dx`` is the derivative of the
max at ``x*``, i.e. the greedy policy where the maximiser is unique (JAX's rule
for ties: the tied entries share the derivative equally; at a tie the bound is
not differentiable anyway). The certification pad is treated as a constant
(``stop_gradient``): it is a rounding allowance, ~1e-14 relative in float64. The
values returned are unchanged by all this.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpomdp.model import TabularPOMDP
from jaxpomdp.precision import exact

__all__ = ["check_discount", "blind_alphas", "fib", "sawtooth", "sawtooth_used", "sawtooth_batch", "blind_lower_bound", "qmdp", "qmdp_upper_bound",
           "implicit_fixed_point", "DEFAULT_TOL", "DEFAULT_MAX_ITER"]

#: Default guaranteed accuracy (sup norm, in reward units) of the fixed points.
DEFAULT_TOL = 1e-6
#: Default cap on value-iteration sweeps.
DEFAULT_MAX_ITER = 10_000


def check_discount(model: TabularPOMDP) -> None:
    """Raises ValueError for a concrete discount outside [0, 1)."""
    gamma = model.discount
    if isinstance(gamma, jax.core.Tracer):
        return
    gamma = np.asarray(gamma)
    if not np.all((gamma >= 0) & (gamma < 1)):
        raise ValueError(
            f"discount = {gamma.tolist()!r}: infinite-horizon bounds need 0 <= discount < 1")


def _expect(model: TabularPOMDP, values: jax.Array) -> jax.Array:
    """``(T_a v_a)(s) = sum_s' T(s' | s, a) v_a(s')`` for every ``a``: float[A, S] -> float[A, S]."""
    a = jnp.arange(model.num_actions)[:, None, None]
    return jnp.sum(model.next_prob * values[a, model.next_state], axis=-1)


def _neumann_solve(gamma, max_iter, norm, linear_op, b):
    """Solves ``linear_op(x) = b`` for ``linear_op = I - J``, ``J`` a ``gamma``-contraction in ``norm``.

    Iterates ``x <- b + J x`` (``J x = x - linear_op(x)``) from ``b``. Stops when the
    a posteriori error bound ``gamma / (1 - gamma) ||x_n - x_{n-1}||`` is below
    ``1e-12 ||x_n||``, when a sweep changes ``x`` by at most ``8 eps ||x_n||`` (the
    rounding floor: float32 cannot do better), at an exact repeat, or after
    ``max_iter`` sweeps.
    """
    factor = gamma / (1 - gamma)
    eps = jnp.finfo(b.dtype).eps

    def cond(carry):
        n, x, change = carry
        scale = norm(x)
        done = (factor * change <= 1e-12 * scale) | (change <= 8 * eps * scale) | (change == 0)
        return (n < max_iter) & ~done

    def body(carry):
        n, x, _ = carry
        x_new = b + (x - linear_op(x))
        return n + 1, x_new, norm(x_new - x)

    init = (jnp.zeros((), jnp.int32), b, jnp.full((), jnp.inf, b.dtype))
    return lax.while_loop(cond, body, init)[1]


def _sup_norm(x):
    return jnp.max(jnp.abs(x))


def _one_norm(x):
    return jnp.sum(jnp.abs(x))


def implicit_fixed_point(bellman: Callable, solve: Callable, params, x0: jax.Array, gamma: jax.Array,
                         max_iter, *args) -> jax.Array:
    """The fixed point ``x* = bellman(params, x*)``, differentiable in ``params`` by implicit differentiation.

    Args:
      bellman: ``bellman(params, x) -> x'``, a ``gamma``-contraction in ``x`` for the
        sup norm (a Bellman operator: ``|dB/dx|`` has row sums at most ``gamma``),
        differentiable in ``params`` and (almost everywhere) in ``x``. A plain
        function: it must not close over traced values (pass them in ``params``).
      solve: ``solve(params, x0, *args) -> x`` computes (an approximation of) ``x*``;
        it is never differentiated (a ``lax.while_loop`` is fine). Same rule on
        closures as ``bellman``.
      params: a pytree: what ``x*`` is differentiated with respect to (integer
        leaves, e.g. ``next_state``, get no derivative).
      x0: where ``solve`` starts; ``x*`` does not depend on it (no derivative).
      gamma: the contraction factor (a number, not differentiated: only the
        stopping rule of the derivative's linear solve uses it).
      max_iter: cap on the sweeps of each linear solve.
      *args: passed on to ``solve`` (not differentiated).

    Returns:
      ``solve(params, x0, *args)``. Its derivative is that of the exact fixed point:
      forward mode solves ``v = dB/dtheta dtheta + dB/dx v`` by iteration (sup norm),
      reverse mode ``u = g + (dB/dx)^T u`` (1-norm, in which ``(dB/dx)^T`` contracts)
      and returns ``(dB/dtheta)^T u``; both are one ``lax.custom_linear_solve``, so
      ``jax.jvp``, ``jax.jacfwd``, ``jax.grad``, ``jax.vjp`` and ``jax.vmap`` all work.
      Each solve stops when its error bound is below ``1e-12`` of the solution's
      norm, at the rounding floor (``8 eps``), or after ``max_iter`` sweeps; the
      derivative is evaluated at the computed ``x``, so it is as accurate as ``x``.
    """

    @jax.custom_jvp
    def fixed_point(params, x0, gamma, max_iter, args):
        return solve(params, x0, *args)

    @fixed_point.defjvp
    def fixed_point_jvp(primals, tangents):
        params, x0, gamma, max_iter, args = primals
        params_dot = tangents[0]
        x = solve(params, x0, *args)
        _, rhs = jax.jvp(lambda p: bellman(p, x), (params,), (params_dot,))
        _, jac_x = jax.linearize(lambda y: bellman(params, y), x)
        x_dot = lax.custom_linear_solve(
            lambda v: v - jac_x(v), rhs,
            solve=functools.partial(_neumann_solve, gamma, max_iter, _sup_norm),
            transpose_solve=functools.partial(_neumann_solve, gamma, max_iter, _one_norm))
        return x, x_dot

    return fixed_point(params, x0, gamma, max_iter, args)


def _iterate(step: Callable[[jax.Array], jax.Array], gamma: jax.Array, x0: jax.Array, tol,
             max_iter) -> jax.Array:
    """Iterates ``x <- step(x)`` from ``x0`` until ``gamma / (1 - gamma) ||x_n - x_{n-1}|| <= tol``,
    an exact repeat, or ``max_iter`` sweeps (at least one sweep)."""
    factor = gamma / (1 - gamma)

    def cond(carry):
        n, _, change = carry
        certified = (factor * change <= tol) | (change == 0)
        return (n < max_iter) & ((n == 0) | ~certified)

    def body(carry):
        n, x, _ = carry
        x_new = step(x)
        return n + 1, x_new, jnp.max(jnp.abs(x_new - x))

    init = (jnp.zeros((), jnp.int32), x0, jnp.full((), jnp.inf, x0.dtype))
    return lax.while_loop(cond, body, init)[1]


def _certified_fixed_point(model: TabularPOMDP, make_bellman: Callable, x0: jax.Array, tol: float,
                           max_iter: int, side: int, axis: Optional[int]) -> jax.Array:
    """Iterates a monotone gamma-contraction ``B x = bellman(R, x)`` from ``x0``.

    ``make_bellman(model)`` returns ``bellman(r, x)`` (with whatever it precomputes
    from the model; a module-level function, so that it closes over nothing traced).
    Stops when ``gamma / (1 - gamma) ||x_n - x_{n-1}|| <= tol``, at an exact repeat,
    or after ``max_iter`` sweeps. Then certifies ``x`` by its one-sided residual:
    if ``B x <= x + d`` then ``x* <= x + d / (1 - gamma)`` (``side = +1``, upper bound),
    if ``B x >= x - d`` then ``x* >= x - d / (1 - gamma)`` (``side = -1``, lower bound),
    with ``d >= 0`` the largest residual over ``axis`` (rows that do not interact may
    be certified apart), padded by the worst-case rounding of ``B x``:
    ``(K + 3) u (|R| + gamma T |x|)``, ``u`` the unit roundoff. In exact arithmetic
    the iterates are monotone and the shift is only that pad.

    Derivatives (:func:`implicit_fixed_point`) are those of the exact fixed point;
    the pad is held constant (``stop_gradient``).
    """
    def bellman(m, y):
        return make_bellman(m)(m.reward, y)

    def solve(m, y0, tol, max_iter):
        step = make_bellman(m)  # what it precomputes, once
        return _iterate(lambda y: step(m.reward, y), m.discount, y0, tol, max_iter)

    x = implicit_fixed_point(bellman, solve, model, x0, model.discount, max_iter, tol, max_iter)
    # the certification pad, a rounding allowance: no derivative goes through it
    m, xc = lax.stop_gradient(model), lax.stop_gradient(x)
    bellman = make_bellman(m)
    unit_roundoff = jnp.finfo(xc.dtype).eps / 2
    rounding = (m.num_successors + 3) * unit_roundoff * bellman(jnp.abs(m.reward), jnp.abs(xc))
    excess = jnp.max(side * (bellman(m.reward, xc) - xc) + rounding, axis=axis, keepdims=True)
    return x + side * jnp.maximum(excess, 0) / (1 - m.discount)


def _blind_bellman(model: TabularPOMDP):
    gamma = model.discount
    return lambda r, alpha: r + gamma * _expect(model, alpha)


def _qmdp_bellman(model: TabularPOMDP):
    gamma = model.discount
    return lambda r, q: r + gamma * _expect(model, jnp.broadcast_to(jnp.max(q, axis=0), q.shape))


def _fib_bellman(model: TabularPOMDP):
    gamma = model.discount
    a = jnp.arange(model.num_actions)[:, None, None]
    # weights[a, s, k, o] = T(s_k | s, a) Z(o | a, s_k)
    weights = model.next_prob[..., None] * model.obs_prob[a, model.next_state]

    @exact
    def bellman(r, q):
        succ = q[:, model.next_state]  # [A', A, S, K]: q(s_k, a')
        inner = jnp.einsum("asko,bask->asob", weights, succ)  # [A, S, O, A']
        return r + gamma * jnp.sum(jnp.max(inner, axis=-1), axis=-1)

    return bellman


def blind_alphas(model: TabularPOMDP, *, tol: float = DEFAULT_TOL,
                 max_iter: int = DEFAULT_MAX_ITER) -> jax.Array:
    """The alpha-vectors of the blind policies "always do ``a``".

    ``alpha_a = R_a + gamma T_a alpha_a``, computed by iteration from the constant
    ``min_s R(s, a) / (1 - gamma)``: the iterates increase monotonically and each is
    a lower bound on ``alpha_a`` (and so on ``V*``).

    Args:
      model: the POMDP, with ``0 <= discount < 1``.
      tol: the sup-norm error the stopping rule guarantees.
      max_iter: cap on the number of sweeps.

    Returns:
      float[A, S] ``alpha[a, s]``, the expected discounted return of doing ``a``
      forever from state ``s``.

    Raises:
      ValueError: the (concrete) discount is not in [0, 1).

    Example:
      >>> from jaxpomdp import problems
      >>> alphas = blind_alphas(problems.tiger())
      >>> [round(float(x), 3) for x in alphas[0]]  # always listen: -1 / (1 - 0.95)
      [-20.0, -20.0]
    """
    check_discount(model)
    return _blind_alphas(model, tol, max_iter)


@jax.jit
def _blind_alphas(model: TabularPOMDP, tol, max_iter) -> jax.Array:
    gamma = model.discount
    x0 = jnp.broadcast_to(jnp.min(model.reward, axis=1, keepdims=True) / (1 - gamma), model.reward.shape)
    return _certified_fixed_point(model, _blind_bellman, x0, tol, max_iter, side=-1, axis=1)


def qmdp(model: TabularPOMDP, *, tol: float = DEFAULT_TOL,
         max_iter: int = DEFAULT_MAX_ITER) -> jax.Array:
    """The optimal Q-values of the underlying fully observable MDP (QMDP).

    ``Q(s, a) = R(s, a) + gamma sum_s' T(s' | s, a) max_a' Q(s', a')``, computed by
    value iteration from the constant ``max R / (1 - gamma)``: the iterates decrease
    monotonically and each is an upper bound on ``Q`` (and ``max_a Q_a . b`` on
    ``V*(b)``).

    Args:
      model: the POMDP, with ``0 <= discount < 1``.
      tol: the sup-norm error the stopping rule guarantees.
      max_iter: cap on the number of sweeps.

    Returns:
      float[A, S] ``Q[a, s]``.

    Raises:
      ValueError: the (concrete) discount is not in [0, 1).

    Example:
      >>> from jaxpomdp import problems
      >>> q = qmdp(problems.tiger())
      >>> round(float(q[0, 0]), 2)  # listen once, then open the right door forever after
      189.0
    """
    check_discount(model)
    return _qmdp(model, tol, max_iter)


@jax.jit
def _qmdp(model: TabularPOMDP, tol, max_iter) -> jax.Array:
    gamma = model.discount
    x0 = jnp.full_like(model.reward, jnp.max(model.reward) / (1 - gamma))
    return _certified_fixed_point(model, _qmdp_bellman, x0, tol, max_iter, side=+1, axis=None)


def fib(model: TabularPOMDP, *, tol: float = DEFAULT_TOL,
        max_iter: int = DEFAULT_MAX_ITER) -> jax.Array:
    """The fast informed bound (FIB, Hauskrecht 2000): an upper bound tighter than QMDP.

    ``Q(s, a) = R(s, a) + gamma sum_o max_a' sum_s' T(s'|s, a) Z(o|a, s') Q(s', a')``,
    by value iteration from ``max R / (1 - gamma)`` (decreasing; every iterate is an
    upper bound) and certified like :func:`qmdp`. ``max_a Q_a . b >= V*(b)`` and
    ``Q_FIB <= Q_QMDP`` entrywise.

    Args:
      model: the POMDP, with ``0 <= discount < 1``.
      tol, max_iter: as in :func:`qmdp`.

    Returns:
      float[A, S] ``Q[a, s]``.

    Example:
      >>> from jaxpomdp import problems
      >>> bool(jnp.all(fib(problems.tiger()) <= qmdp(problems.tiger()) + 1e-3))
      True
    """
    check_discount(model)
    return _fib(model, tol, max_iter)


@jax.jit
def _fib(model: TabularPOMDP, tol, max_iter) -> jax.Array:
    x0 = jnp.full_like(model.reward, jnp.max(model.reward) / (1 - model.discount))
    return _certified_fixed_point(model, _fib_bellman, x0, tol, max_iter, side=+1, axis=None)


@exact
def sawtooth(points: jax.Array, values: jax.Array, mask: jax.Array, corner: jax.Array,
             b: jax.Array) -> jax.Array:
    """The sawtooth upper bound at a belief (Hauskrecht 2000; HSVI, Smith & Simmons 2004).

    Given an upper bound ``corner[s]`` on the value of each state (e.g. ``max_a``
    of :func:`fib`) and belief points ``points[i]`` with upper bounds
    ``values[i]``, every belief ``b`` has the upper bound
    ``V(b) = b . corner + min_i c_i(b) (values[i] - points[i] . corner)``,
    ``c_i(b) = min_{s: points[i, s] > 0} b(s) / points[i, s]`` (the largest weight
    point ``i`` can take in a convex combination that forms ``b``); a point only
    counts when it improves on the corners. The formula is positively homogeneous,
    so ``b`` may be unnormalised (``V(t b) = t V(b)``).

    Args:
      points: float[P, S] belief points.
      values: float[P] their upper bounds.
      mask: bool[P] which points are in use.
      corner: float[S] upper bounds at the corners (the states).
      b: float[S] a belief (possibly unnormalised).

    Returns:
      float[] the upper bound at ``b``.
    """
    chex.assert_rank([points, values, mask, corner, b], [2, 1, 1, 1, 1])
    # c_i(b) = 1 / max_s points[i, s] / b(s), and 0 where points[i] has support
    # outside b's (a matrix product finds those); multiplications instead of a
    # division per element make this several times faster under vmap
    positive = b > 0
    inv_b = jnp.where(positive, 1 / jnp.where(positive, b, 1), 0)
    outside = (points > 0).astype(b.dtype) @ (~positive).astype(b.dtype) > 0  # [P]
    largest = jnp.max(points * inv_b, axis=-1)  # [P]
    usable = mask & ~outside & (largest > 0)
    weight = jnp.where(usable, 1 / jnp.where(usable, largest, 1), 0)
    gain = jnp.minimum(values - points @ corner, 0)  # [P], <= 0
    return b @ corner + jnp.minimum(jnp.min(weight * gain), 0)


@exact
def sawtooth_used(points: jax.Array, values: jax.Array, count: jax.Array, corner: jax.Array,
                  b: jax.Array, *, chunk: int = 256) -> jax.Array:
    """:func:`sawtooth` over the first ``count`` points, ``chunk`` at a time.

    The work grows with ``count``, not with the capacity ``points.shape[0]``, so a
    solver can hold a large, mostly empty set without paying for it. ``count`` may
    be traced; under ``vmap`` over ``b`` the loop runs once for the whole batch.
    """
    capacity = points.shape[0]
    chunk = min(chunk, capacity)

    def body(i, best):
        start = jnp.minimum(i * chunk, capacity - chunk)  # the last chunk may overlap
        rows = lax.dynamic_slice_in_dim(points, start, chunk)
        vals = lax.dynamic_slice_in_dim(values, start, chunk)
        used = start + jnp.arange(chunk) < count
        return jnp.minimum(best, sawtooth(rows, vals, used, corner, b))

    num_chunks = (count + chunk - 1) // chunk
    return lax.fori_loop(0, num_chunks, body, b @ corner)


def sawtooth_batch(points, values, mask, corner, beliefs, *, chunk: int = 256) -> jax.Array:
    """:func:`sawtooth` for beliefs float[N, S] -> float[N], ``chunk`` beliefs at a time."""
    return lax.map(lambda b: sawtooth(points, values, mask, corner, b), beliefs,
                   batch_size=min(chunk, beliefs.shape[0]))


@jax.jit
@exact
def _best(vectors: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(max_a vectors[a] . b, argmax_a)``."""
    chex.assert_rank([vectors, b], [2, 1])
    values = vectors @ b
    best = jnp.argmax(values).astype(jnp.int32)
    return values[best], best


def blind_lower_bound(model: TabularPOMDP, b: Optional[jax.Array] = None, *,
                      tol: float = DEFAULT_TOL,
                      max_iter: int = DEFAULT_MAX_ITER) -> tuple[jax.Array, jax.Array]:
    """The best blind policy's value at a belief: ``max_a alpha_a . b <= V*(b)``.

    Args:
      model: the POMDP, with ``0 <= discount < 1``.
      b: float[S] the belief (default: the initial belief).
      tol, max_iter: as in :func:`blind_alphas`.

    Returns:
      ``(value, action)``: float[] the lower bound and int32[] the best fixed action.

    Example:
      >>> from jaxpomdp import problems
      >>> value, action = blind_lower_bound(problems.tiger())
      >>> round(float(value), 3), int(action)
      (-20.0, 0)
    """
    b = model.initial_belief if b is None else b
    return _best(blind_alphas(model, tol=tol, max_iter=max_iter), b)


def qmdp_upper_bound(model: TabularPOMDP, b: Optional[jax.Array] = None, *,
                     tol: float = DEFAULT_TOL,
                     max_iter: int = DEFAULT_MAX_ITER) -> tuple[jax.Array, jax.Array]:
    """The QMDP value at a belief: ``max_a Q_a . b >= V*(b)``.

    Args:
      model: the POMDP, with ``0 <= discount < 1``.
      b: float[S] the belief (default: the initial belief).
      tol, max_iter: as in :func:`qmdp`.

    Returns:
      ``(value, action)``: float[] the upper bound and int32[] the QMDP-greedy action.

    Example:
      >>> from jaxpomdp import problems
      >>> value, action = qmdp_upper_bound(problems.tiger())
      >>> round(float(value), 2), int(action)
      (189.0, 0)
    """
    b = model.initial_belief if b is None else b
    return _best(qmdp(model, tol=tol, max_iter=max_iter), b)
