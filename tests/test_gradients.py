"""Differentiable values (issue 7, item 3): the QMDP, FIB and blind bounds and the exact
value of a fixed policy (a finite-state controller, an alpha-vector policy's plan graph)
have ``jax.grad`` (and ``jax.jvp``) derivatives with respect to the model's numbers that
match central finite differences to ``RTOL = 1e-4`` relative, in float64.

The fixed points are differentiated implicitly (``bounds.implicit_fixed_point``): the
derivative is that of the exact fixed point, so the values are computed here to
``TOL = 1e-10`` (the default ``1e-6`` would let the finite differences see the
stopping rule: a sweep more or less moves the value by up to ``tol``, i.e. ``tol / h``
in a difference quotient).

Each check is a directional derivative ``d/dt f(model + t D)`` along a direction ``D``
that keeps the model a model: rewards anywhere, the discount, ``next_prob`` and
``obs_prob`` inside their supports with zero row sums (a row stays a distribution; the
zero entries stay zero, where the bounds' maxima would have ties), ``initial_belief``
with zero sum. The gradient (reverse mode, ``jax.grad(f, allow_int=True)`` dotted with
``D``) and the forward-mode derivative (``jax.jvp``) must both match the central
difference ``(f(t = h) - f(t = -h)) / 2h``, ``h = STEP = 1e-5``, within
``RTOL |fd| + ATOL scale`` (``scale = max|R| / (1 - gamma)``, ``ATOL = 1e-9``: only for
derivatives that are 0). The finite-difference error is far below that: ``O(h^2)``
truncation (the values are smooth where the maximisers are unique) plus rounding
``~eps |f| / h ~ 1e-9``.

64-bit mode is process-global: every test runs inside ``jax.enable_x64(True)`` (the
models are built inside it, so they are float64), as tests/test_bounds.py does.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpomdp import bounds, problems
from jaxpomdp.controller import Controller, exact_alphas, exact_value, plan_value
from jaxpomdp.model import from_dense
from jaxpomdp.solvers import batched, point_based

RTOL = 1e-4
ATOL = 1e-9
STEP = 1e-5
TOL = 1e-10
FIELDS = ("reward", "next_prob", "obs_prob", "discount", "initial_belief")


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# Tiger: listen until two more "left" than "right" (or vice versa), then open the other door
# (tests/test_controller.py's controller, optimal: 19.3713 at b0).
TIGER_FSC = Controller(jnp.array([0, 0, 0, 2, 1], jnp.int32),
                       jnp.array([[1, 2], [3, 0], [0, 4], [0, 0], [0, 0]], jnp.int32),
                       jnp.ones(5, bool), None, jnp.int32(0))


# ----------------------------------------------------------------- helpers
def _scale(m):
    return float(jnp.max(jnp.abs(m.reward)) / (1 - m.discount))


def _perturb(m, direction, t):
    return m.replace(**{k: getattr(m, k) + t * v for k, v in direction.items()})


def _support_direction(rng, p, rows_ok=None):
    """A random direction on the support of ``p`` (last axis: a distribution) with zero row sums."""
    support = np.asarray(p) > 0
    d = np.where(support, rng.normal(size=p.shape), 0.0)
    count = np.maximum(support.sum(-1, keepdims=True), 1)
    d = np.where(support, d - d.sum(-1, keepdims=True) / count, 0.0)
    if rows_ok is not None:
        d = np.where(rows_ok[..., None], d, 0.0)
    return jnp.asarray(d / max(np.abs(d).max(), 1e-300))


def _directions(m, seed=0, distinct=None):
    """One direction per model field: {name: {field: array}}.

    ``distinct``: bool[A, S] the (a, s) whose reward and transition rows may be moved
    apart from the other actions' (default all). Where every action has the same
    rows (4x3's absorbing states) the actions' values tie exactly, and moving one of
    them alone makes the bounds' ``max_a`` non-differentiable there.
    """
    rng = np.random.default_rng(seed)
    A, S = m.reward.shape
    if distinct is None:
        distinct = np.ones((A, S), bool)
    reward = rng.normal(size=S)[None, :] + np.where(distinct, rng.normal(size=(A, S)), 0.0)
    b = rng.normal(size=S)
    support = np.asarray(m.initial_belief) > 0
    b = np.where(support, b - b[support].mean(), 0.0)
    Z = np.asarray(m.obs_prob)
    if not distinct.all() and (Z == Z[:1]).all():
        # observations the same for every action: so is their change (keeps the ties)
        obs = jnp.broadcast_to(_support_direction(rng, Z[:1]), Z.shape)
    else:
        obs = _support_direction(rng, Z)
    return {
        "reward": {"reward": jnp.asarray(reward)},
        "next_prob": {"next_prob": _support_direction(rng, m.next_prob, distinct)},
        "obs_prob": {"obs_prob": obs},
        "discount": {"discount": jnp.asarray(1.0)},
        "initial_belief": {"initial_belief": jnp.asarray(b)},
    }


@functools.partial(jax.jit, static_argnums=0)
def _derivatives(f, m, tangents, *args):
    """``f(m, *args)``'s value and gradient (the FIELDS), and along each direction of ``tangents``
    (every field, stacked on a leading axis) its jvp and ``f`` at ``t = STEP, -STEP, 0``.

    One compiled program per ``f`` and model shape (the directions vmapped), where the
    same computed op by op compiled a program per transformation and per small operation.
    Under vmap a while loop runs each element until its own stopping rule holds (the
    others are masked), so the values are those of the separate evaluations.
    """
    value, grad = jax.value_and_grad(f, allow_int=True)(m, *args)

    def along(d, t):
        return f(_perturb(m, d, t), *args)

    jvps = jax.vmap(lambda d: jax.jvp(lambda t: along(d, t), (jnp.float64(0.0),), (jnp.float64(1.0),))[1])(tangents)
    ts = jnp.array([STEP, -STEP, 0.0])
    values = jax.vmap(lambda d: jax.vmap(lambda t: along(d, t))(ts))(tangents)
    return value, {k: getattr(grad, k) for k in FIELDS}, jvps, values


def _tangents(m, dirs, fields):
    """The directions of ``fields`` as tangents of every field (zero but the direction's own), stacked."""
    rows = [{k: jnp.broadcast_to(dirs[name].get(k, jnp.zeros_like(getattr(m, k))), jnp.shape(getattr(m, k)))
             for k in FIELDS} for name in fields]
    return jax.tree.map(lambda *x: jnp.stack(x), *rows)


def _check(f, m, fields=FIELDS, distinct=None, seed=0, args=()):
    """grad and jvp of ``f`` along each field's direction match central differences."""
    dirs = _directions(m, seed, distinct)
    value, grad, jvps, values = jax.device_get(_derivatives(f, m, _tangents(m, dirs, fields), *args))
    # differentiating does not change the value (the last column: t = 0)
    assert float(value) == pytest.approx(float(values[0, 2]), rel=1e-13)
    scale = _scale(m)
    report = {}
    for i, name in enumerate(fields):
        d = dirs[name]
        by_grad = sum(float(np.vdot(grad[k], np.asarray(v))) for k, v in d.items())
        by_jvp = float(jvps[i])
        fd = (float(values[i, 0]) - float(values[i, 1])) / (2 * STEP)
        report[name] = (by_grad, by_jvp, fd)
        for what, x in (("grad", by_grad), ("jvp", by_jvp)):
            assert abs(x - fd) <= RTOL * abs(fd) + ATOL * scale, (name, what, x, fd)
    return report


@functools.lru_cache(maxsize=None)
def _tiger():
    """Tiger made asymmetric, and the tiger moves while you listen (a sharper ear for
    the tiger on the left, a bigger prize behind the right door, a reset that favours
    the left), so that no derivative is 0 by symmetry, the sensor is worth something
    to FIB too, and no two plans tie at b0."""
    with jax.enable_x64(True):
        T = np.array([[[0.95, 0.05], [0.1, 0.9]], [[0.55, 0.45]] * 2, [[0.55, 0.45]] * 2])
        Z = np.array([[[0.85, 0.15], [0.2, 0.8]], [[0.5, 0.5]] * 2, [[0.5, 0.5]] * 2])
        R = np.array([[-1.0, -1.0], [-100.0, 12.0], [10.0, -100.0]])
        return from_dense(T, Z, R, np.array([0.5, 0.5]), 0.95)


@functools.lru_cache(maxsize=None)
def _plain_tiger():
    with jax.enable_x64(True):
        return problems.tiger()


@functools.lru_cache(maxsize=None)
def _four_by_three():
    with jax.enable_x64(True):
        m = problems.get("4x3.95")
    R, ns, P, Z = (np.asarray(getattr(m, k)) for k in ("reward", "next_state", "next_prob", "obs_prob"))
    # states where every action has the same reward, successors and observations
    same = ((R == R[:1]).all(0) & (ns == ns[:1]).all((0, 2)) & (P == P[:1]).all((0, 2))
            & bool((Z == Z[:1]).all()))
    distinct = np.broadcast_to(~same, R.shape)
    return m, distinct


def _qmdp_b0(m):
    return bounds.qmdp_upper_bound(m, tol=TOL)[0]


def _fib_b0(m):
    return jnp.max(bounds.fib(m, tol=TOL) @ m.initial_belief)


def _blind_b0(m):
    return bounds.blind_lower_bound(m, tol=TOL)[0]


def _fsc_b0(m):
    return exact_value(TIGER_FSC, m, tol=TOL)


def _plan_value(m, actions, successors, b):
    """The plans' value at ``b`` (the plans and the belief traced: one program for every belief)."""
    return plan_value(actions, successors, m, b, tol=TOL)


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("f", [_qmdp_b0, _fib_b0, _blind_b0, _fsc_b0], ids=["qmdp", "fib", "blind", "fsc"])
def test_tiger_values_match_finite_differences(f):
    m = _tiger()
    assert m.reward.dtype == jnp.float64
    report = _check(f, m)
    # the derivatives are not trivially 0: rewards and discount, and the belief, the
    # sensor and the dynamics, but for the best blind policy (always listen: -1 / (1 -
    # gamma) in every state) and QMDP (which ignores the sensor)
    nonzero = {"reward", "discount", "initial_belief", "obs_prob", "next_prob"}
    nonzero -= {_blind_b0: {"obs_prob", "next_prob", "initial_belief"}, _qmdp_b0: {"obs_prob"}}.get(f, set())
    for name in nonzero:
        assert abs(report[name][2]) > 1e-3, (name, report[name])


def test_listening_accuracy_gradient_of_the_controller():
    """d/dp of the FSC's value, p the listening accuracy: grad equals the difference quotient."""
    base = _plain_tiger()

    def value(p):
        listen = jnp.stack([jnp.stack([p, 1 - p]), jnp.stack([1 - p, p])])
        return exact_value(TIGER_FSC, base.replace(obs_prob=base.obs_prob.at[0].set(listen)), tol=TOL)

    g = float(jax.grad(value)(jnp.float64(0.85)))
    fd = (float(value(0.85 + STEP)) - float(value(0.85 - STEP))) / (2 * STEP)
    assert g > 0  # a better sensor is worth more
    assert abs(g - fd) <= RTOL * abs(fd)


@functools.lru_cache(maxsize=None)
def _tiger_plans():
    """A PBVI-style policy graph on Tiger: the point-based solver's vectors, actions, successors."""
    with jax.enable_x64(True):
        m = _tiger()
        state = point_based.init(m, alpha_capacity=128, point_capacity=4)
        beliefs = jnp.asarray(batched.reachable_beliefs(m, 12))
        valid = jnp.ones(beliefs.shape[0], bool)
        step = jax.jit(functools.partial(point_based.backup_beliefs, upper=False))
        for _ in range(8):
            state = step(m, state, beliefs, valid)
        n = int(state.num_alphas)
        assert n < state.alphas.shape[0]  # nothing dropped for want of room
        return np.asarray(state.alphas[:n]), np.asarray(state.actions[:n]), np.asarray(state.successors[:n])


def test_plan_graph_is_the_point_based_policy():
    m = _tiger()
    alphas, actions, successors = _tiger_plans()
    assert len(actions) > 3  # backups added vectors beyond the blind ones
    graph = Controller(jnp.asarray(actions), jnp.asarray(successors), jnp.ones(len(actions), bool), None,
                       jnp.int32(0))
    # re-evaluated on the model they were computed on, the plans are the vectors themselves
    # (up to the blind vectors' accuracy, bounds.DEFAULT_TOL, that the backups inherit)
    np.testing.assert_allclose(np.asarray(exact_alphas(graph, m, tol=TOL)), alphas, rtol=0, atol=2e-6)
    b = jnp.asarray([0.7, 0.3])
    assert float(plan_value(actions, successors, m, b, tol=TOL)) == pytest.approx(float(np.max(alphas @ b)),
                                                                                   abs=2e-6)


@pytest.mark.parametrize("belief", [(0.7, 0.3), (0.96, 0.04)])
def test_alpha_vector_policy_value_matches_finite_differences(belief):
    m = _tiger()
    alphas, actions, successors = _tiger_plans()
    b = jnp.asarray(belief)
    top = np.sort(alphas @ np.asarray(belief))[::-1]
    distinct = top[np.abs(top - top[0]) > 1e-9]
    assert top[0] - distinct[0] > 1e-3  # one best plan: the max is differentiable here

    report = _check(_plan_value, m, fields=("reward", "next_prob", "obs_prob", "discount"),
                    args=(jnp.asarray(actions), jnp.asarray(successors), b))
    for name in ("reward", "next_prob", "obs_prob", "discount"):
        assert abs(report[name][2]) > 1e-3, (name, report[name])
    # and with respect to the belief itself: the best plan's vector
    g = jax.grad(lambda b: plan_value(actions, successors, m, b, tol=TOL))(b)
    best = alphas[np.argmax(alphas @ np.asarray(belief))]
    np.testing.assert_allclose(np.asarray(g), best, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("f", [_qmdp_b0, _fib_b0], ids=["qmdp", "fib"])
def test_four_by_three_bounds_match_finite_differences(f):
    m, distinct = _four_by_three()
    report = _check(f, m, distinct=distinct, seed=1)
    for name in ("reward", "discount", "next_prob"):
        assert abs(report[name][2]) > 1e-4, (name, report[name])


def test_grad_of_whole_arrays_matches_finite_differences():
    """Every entry of d QMDP(b0) / d reward on 4x3 (one difference quotient per entry)."""
    m, distinct = _four_by_three()
    # the gradient from test_four_by_three_bounds_match_finite_differences[qmdp]'s program
    g = _derivatives(_qmdp_b0, m, _tangents(m, _directions(m, 1, distinct), FIELDS))[1]["reward"]
    g = np.asarray(g)
    A, S = m.reward.shape
    fd = np.zeros((A, S))
    for a in range(A):
        for s in range(S):
            if not distinct[a, s]:
                continue
            e = jnp.zeros((A, S)).at[a, s].set(1.0)
            fd[a, s] = (float(_qmdp_b0(_perturb(m, {"reward": e}, STEP)))
                        - float(_qmdp_b0(_perturb(m, {"reward": e}, -STEP)))) / (2 * STEP)
    np.testing.assert_allclose(g[distinct], fd[distinct], rtol=RTOL, atol=ATOL * _scale(m))
    # where the actions tie (all rows equal) the value is differentiable only along
    # directions that keep them tied: the same change to every action's reward
    for s in np.flatnonzero(~distinct[0]):
        e = jnp.zeros((A, S)).at[:, s].set(1.0)
        fd_s = (float(_qmdp_b0(_perturb(m, {"reward": e}, STEP)))
                - float(_qmdp_b0(_perturb(m, {"reward": e}, -STEP)))) / (2 * STEP)
        assert abs(g[:, s].sum() - fd_s) <= RTOL * abs(fd_s) + ATOL * _scale(m), (s, g[:, s], fd_s)


def test_grad_under_vmap_equals_per_model_grads():
    base = _tiger()
    models = [base.replace(obs_prob=base.obs_prob.at[0].set(jnp.array([[p, 1 - p], [1 - p, p]])),
                           discount=jnp.asarray(g, jnp.float64))  # strongly typed, as base's
              for g, p in ((0.9, 0.7), (0.95, 0.85), (0.93, 0.9))]
    stacked = batched.stack_models(models)
    tangents = _tangents(base, _directions(base), FIELDS)  # (only the gradient is used)
    for f in (_qmdp_b0, _fib_b0, _blind_b0, _fsc_b0):
        grads = jax.jit(jax.vmap(jax.grad(f, allow_int=True)))(stacked)
        for i, m in enumerate(models):
            # each model's own gradient, from test_tiger_values_match_finite_differences's program
            one = _derivatives(f, m, tangents)[1]
            for k in FIELDS:
                np.testing.assert_allclose(np.asarray(getattr(grads, k)[i]), np.asarray(one[k]),
                                           rtol=1e-9, atol=1e-9 * _scale(m), err_msg=f"{f.__name__} {k} {i}")
