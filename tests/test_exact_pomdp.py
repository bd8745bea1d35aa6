"""The certified exact-value reference (tests/exact_pomdp.py) against SARSOP and itself.

* The reference brackets of the four classic problems overlap SARSOP's converged
  (or 60 s) bounds from ../shared/docs/BENCHMARKS.md.
* Two independent methods agree: point-set policy iteration (the reference) and
  exact value iteration with incremental pruning, on 1d and on random models.
* Incremental pruning equals a brute-force expansion of the belief tree.
* Stopping early (a time limit) leaves a wider bracket that still holds.
"""

from decimal import Decimal

import numpy as np
import pytest

import jaxpomdp
from exact_pomdp import (ExactBounds, backup, blind_vectors, exact_reference, exact_value_bounds,
                         fib_vectors, model_arrays, prune, qmdp_vectors, value_iteration_bounds)

# SARSOP (APPL pomdpsol, 60 CPU-s) lower and upper bounds from BENCHMARKS.md, as printed.
SARSOP = {
    "tiger": ("19.3711", "19.3721"),
    "1d": ("1.26034", "1.26133"),
    "paint.95": ("3.29358", "3.29456"),
    "network": ("293.185", "293.320"),
}
#: The widest bracket the reference may return (network is capped by time, not tol).
MAX_WIDTH = {"tiger": 1e-3, "1d": 1e-3, "paint.95": 1e-3, "network": 0.5}


def _half_ulp(text):
    """Half a unit in the last printed digit: the rounding of a published figure."""
    return float(Decimal(1).scaleb(Decimal(text).as_tuple().exponent)) / 2


@pytest.mark.parametrize("name", list(SARSOP))
def test_reference_overlaps_sarsop(name):
    ref = exact_reference(name)
    assert isinstance(ref, ExactBounds)
    assert ref.lower <= ref.upper
    assert ref.upper - ref.lower <= MAX_WIDTH[name], ref
    lo_text, hi_text = SARSOP[name]
    s_lo = float(lo_text) - _half_ulp(lo_text)
    s_hi = float(hi_text) + _half_ulp(hi_text)
    # both brackets are certified: they must intersect
    assert max(ref.lower, s_lo) <= min(ref.upper, s_hi), (name, ref.lower, ref.upper, s_lo, s_hi)
    # the lower bound is the value of the reported alpha-vectors (controller nodes) at b0
    b0 = np.asarray(jaxpomdp.problems.get(name).initial_belief, np.float64)
    b0 = b0 / b0.sum()
    assert np.max(ref.info["alphas"] @ b0) >= ref.lower
    assert ref.num_vectors == len(ref.info["alphas"]) == len(ref.info["alpha_actions"])
    # the history is monotone
    rows = ref.info["history"]
    assert all(b[1] >= a[1] and b[2] <= a[2] for a, b in zip(rows, rows[1:]))


def test_reference_values_are_pinned():
    """The known optimal values (to the reference's precision)."""
    assert exact_reference("tiger").lower == pytest.approx(19.3714, abs=1e-3)
    assert exact_reference("1d").lower == pytest.approx(1.260345, abs=1e-5)
    assert exact_reference("paint.95").lower == pytest.approx(3.293596, abs=1e-5)
    assert exact_reference("network").lower == pytest.approx(293.185, abs=0.05)


def test_time_limited_bracket_still_holds():
    """Stopping after ~0.5 s gives a wider bracket around the converged one."""
    m = jaxpomdp.problems.get("network")
    quick = exact_value_bounds(m, tol=1e-3, time_limit=0.5)
    ref = exact_reference("network")
    assert quick.lower <= ref.upper and quick.upper >= ref.lower
    assert quick.upper - quick.lower >= ref.upper - ref.lower - 1e-9
    assert not quick.info["converged"]


def test_starting_bounds_are_ordered():
    """blind <= V* <= FIB <= QMDP at every corner (FIB is iterated down from QMDP)."""
    for name in SARSOP:
        T, Z, R, b0, gamma = model_arrays(jaxpomdp.problems.get(name))
        blind, fib, q = blind_vectors(T, R, gamma), fib_vectors(T, Z, R, gamma), qmdp_vectors(T, R, gamma)
        ref = exact_reference(name)
        assert np.all(fib.max(0) <= q.max(0) + 1e-9)
        assert np.max(blind @ b0) <= ref.lower + 1e-9
        assert np.max(fib @ b0) >= ref.upper - 1e-9


# ------------------------------------------------------- incremental pruning
def _tree_value(T, Z, R, gamma, V0, b, depth):
    """``H^depth`` of ``max V0 . b`` by expanding the belief tree (brute force)."""
    if depth == 0:
        return float(np.max(V0 @ b))
    A, S, O = Z.shape
    best = -np.inf
    for a in range(A):
        pred = b @ T[a]
        total = R[a] @ b
        for o in range(O):
            u = pred * Z[a, :, o]
            p = u.sum()
            if p > 0:
                total += gamma * p * _tree_value(T, Z, R, gamma, V0, u / p, depth - 1)
        best = max(best, total)
    return best


@pytest.mark.parametrize("name,horizon", [("tiger", 4), ("paint.95", 2)])
def test_incremental_pruning_equals_belief_tree(name, horizon):
    T, Z, R, b0, gamma = model_arrays(jaxpomdp.problems.get(name))
    S = T.shape[1]
    rng = np.random.default_rng(0)
    beliefs = np.vstack([b0, np.eye(S), rng.dirichlet(np.ones(S), size=3)])
    for V0 in (blind_vectors(T, R, gamma), qmdp_vectors(T, R, gamma)):
        V, loss = prune(V0)
        total = loss
        for _ in range(horizon):
            V, loss = backup(V, T, Z, R, gamma, eps=0.0)
            total = gamma * total + loss
        assert total <= 1e-9
        for b in beliefs:
            assert np.max(V @ b) == pytest.approx(_tree_value(T, Z, R, gamma, V0, b, horizon), abs=1e-8)


def test_prune_certified_loss():
    """The loss prune reports bounds what dropping vectors costs, at many beliefs."""
    rng = np.random.default_rng(1)
    for S in (2, 3, 4):
        V = rng.normal(size=(60, S))
        for eps in (0.0, 0.05):
            kept, loss = prune(V, eps)
            assert loss <= max(eps, 1e-12)
            B = rng.dirichlet(np.ones(S), size=2000)
            gap = np.max(B @ V.T, 1) - np.max(B @ kept.T, 1)
            assert np.all(gap <= loss + 1e-12)
            if eps == 0.0:  # exact: every dropped vector is nowhere best
                assert np.all(gap <= 1e-12)


def test_value_iteration_agrees_with_reference_on_1d():
    """Exact value iteration converges on 1d (gamma = 0.75): an independent bracket."""
    vi = value_iteration_bounds(jaxpomdp.problems.get("1d"), 30)
    ref = exact_reference("1d")
    assert vi.upper - vi.lower < 1e-3
    assert max(vi.lower, ref.lower) <= min(vi.upper, ref.upper)
    rows = vi.info["history"]
    assert all(b[1] >= a[1] - 1e-12 and b[2] <= a[2] + 1e-12 for a, b in zip(rows, rows[1:]))


def _random_model(seed, S, A=2, O=2, gamma=0.7):
    rng = np.random.default_rng(seed)
    T = rng.dirichlet(np.full(S, 0.5), size=(A, S))
    Z = rng.dirichlet(np.full(O, 0.5), size=(A, S))
    R = rng.normal(size=(A, S)) * 3
    return jaxpomdp.from_dense(T, Z, R, rng.dirichlet(np.ones(S)), gamma)


@pytest.mark.parametrize("seed,S,gamma", [(0, 2, 0.8), (1, 2, 0.9), (3, 3, 0.7)])
def test_two_methods_agree_on_random_models(seed, S, gamma):
    """Point-set PI and exact value iteration give overlapping, tight brackets."""
    m = _random_model(seed, S, gamma=gamma)
    ps = exact_value_bounds(m, tol=1e-5, time_limit=10)
    vi = value_iteration_bounds(m, 200, time_limit=5)
    assert ps.upper - ps.lower <= 1e-5 and vi.upper - vi.lower <= 1e-5, (ps, vi)
    assert max(ps.lower, vi.lower) <= min(ps.upper, vi.upper)


def test_blind_only_problem_is_exact():
    """One action and one observation: V* is the blind value, both bounds meet it."""
    T = np.array([[[0.9, 0.1, 0.0], [0.0, 0.5, 0.5], [0.3, 0.0, 0.7]]])
    R = np.array([[1.0, -2.0, 0.5]])
    b0 = np.array([0.2, 0.5, 0.3])
    m = jaxpomdp.from_dense(T, np.ones((1, 3, 1)), R, b0, 0.9)
    T, _, R, b0, gamma = model_arrays(m)  # the float32 model, in float64
    exact = np.linalg.solve(np.eye(3) - gamma * T[0], R[0]) @ b0
    r = exact_value_bounds(m, tol=1e-7)
    assert r.lower <= exact <= r.upper
    assert r.upper - r.lower <= 1e-7
