"""Every solver against the shared harness (tests/solver_harness.py).

* The baseline solvers (blind, QMDP) pass every check on every problem.
* Deliberately broken solvers are caught, one per check.
* The point-based solver (``jaxpomdp.solvers.point_based``, HSVI/PBVI/Perseus) runs
  the same checks once it exists (skipped until then).
"""

import functools
import time

import numpy as np
import pytest

from jaxpomdp.solvers.baseline import SolveResult, solve_blind, solve_qmdp

import solver_harness as H


def _accept_target_gap(solve):
    @functools.wraps(solve)
    def wrapped(model, *, time_limit=None, target_gap=None, seed=0):
        del target_gap  # the baselines compute fixed bounds
        return solve(model, time_limit=time_limit, seed=seed)

    return wrapped


BASELINES = {"blind": _accept_target_gap(solve_blind), "qmdp": _accept_target_gap(solve_qmdp)}


# ------------------------------------------------------------------ baselines
@pytest.mark.parametrize("problem", H.PROBLEMS)
@pytest.mark.parametrize("check", ["bounds", "history", "simulation"])
@pytest.mark.parametrize("solver", list(BASELINES))
def test_baseline(solver, check, problem):
    H.run_check(check, BASELINES[solver], problem)


@pytest.mark.parametrize("check", ["deterministic", "time_limit"])
@pytest.mark.parametrize("solver", list(BASELINES))
def test_baseline_run_checks(solver, check):
    problem = "tiger" if check == "deterministic" else "network"
    H.run_check(check, BASELINES[solver], problem)


def test_check_solver_runs_everything():
    """The one-call driver on a fast subset (its pieces are cached from the tests above)."""
    H.check_solver(BASELINES["blind"], problems=("tiger", "1d"))


# ------------------------------------------------------- broken solvers caught
def _fake(problem="tiger", **changes):
    """The blind solver's (cached) result on ``problem`` with some fields replaced."""
    result, _ = H.solve_cached(BASELINES["blind"], problem, 10.0, 1e-3, 0)
    return result._replace(**changes)


def test_catches_lower_bound_above_optimum():
    ref = H.exact("tiger")
    with pytest.raises(AssertionError, match="lower_bound .* above the exact"):
        H.check_bounds(_fake(lower_bound=ref.upper + 1.0), "tiger")
    # just inside the tolerance is fine
    H.check_bounds(_fake(lower_bound=ref.upper, upper_bound=ref.upper + 1), "tiger")


def test_catches_upper_bound_below_optimum():
    ref = H.exact("network")
    with pytest.raises(AssertionError, match="upper_bound .* below the exact"):
        H.check_bounds(_fake("network", upper_bound=ref.lower - 0.5), "network")


def test_catches_crossed_or_non_finite_bounds():
    with pytest.raises(AssertionError, match="finite"):
        H.check_bounds(_fake(lower_bound=float("nan")), "tiger")
    with pytest.raises(AssertionError):
        H.check_bounds(_fake(lower_bound=0.0, upper_bound=-10.0), "tiger")


def test_catches_policy_worse_than_its_lower_bound():
    """A valid V* lower bound that the returned (blind) policy does not achieve."""
    broken = _fake(lower_bound=H.exact("tiger").lower - 0.01)
    ev = H._evaluate(BASELINES["blind"], "tiger", 10.0, 1e-3, 0, 2000, None, 0)
    with pytest.raises(AssertionError, match="below the reported lower_bound"):
        H.check_simulation(broken, "tiger", ev)


def test_catches_policy_better_than_the_optimum():
    ev = H._evaluate(BASELINES["qmdp"], "tiger", 10.0, 1e-3, 0, 2000, None, 0)
    fake_ev = ev._replace(mean=ev.mean + 5.0)  # a simulator/policy bug: 5 above V*
    result, _ = H.solve_cached(BASELINES["qmdp"], "tiger", 10.0, 1e-3, 0)
    with pytest.raises(AssertionError, match="above the"):
        H.check_simulation(result, "tiger", fake_ev)


@pytest.mark.parametrize("rows,match", [
    ([(0.0, 1.0, 5.0, 1, 1), (0.1, 0.5, 5.0, 1, 1)], "lower bound decreases"),
    ([(0.0, 1.0, 5.0, 1, 1), (0.1, 1.0, 6.0, 1, 1)], "upper bound increases"),
    ([(0.2, 1.0, 5.0, 1, 1), (0.1, 1.0, 5.0, 1, 1)], "time goes back"),
    ([(0.0, 1.0, 5.0)], "is not"),
    ([], "empty"),
])
def test_catches_bad_history(rows, match):
    with pytest.raises(AssertionError, match=match):
        H.check_history(_fake(lower_bound=1.0, upper_bound=5.0, history=rows), "tiger")


def test_catches_final_bounds_worse_than_history():
    rows = [(0.0, -20.0, 100.0, 1, 1), (0.1, -10.0, 50.0, 1, 1)]
    with pytest.raises(AssertionError, match="final lower_bound"):
        H.check_history(_fake(lower_bound=-15.0, upper_bound=50.0, history=rows), "tiger")


def test_catches_nondeterminism():
    rng = np.random.default_rng()  # unseeded: differs between calls

    def noisy(model, *, time_limit=None, target_gap=None, seed=0):
        r = solve_blind(model, seed=seed)
        return r._replace(lower_bound=r.lower_bound - float(rng.random()))

    with pytest.raises(AssertionError, match="differs"):
        H.check_deterministic(noisy, "tiger", time_limit=30.0)


def test_catches_overrunning_time_limit():
    def slow(model, *, time_limit=None, target_gap=None, seed=0):
        t0 = time.perf_counter()
        r = solve_blind(model, seed=seed)
        time.sleep(0.5)  # ignores the limit
        return r._replace(solve_seconds=time.perf_counter() - t0)

    with pytest.raises(AssertionError, match="solve_seconds"):
        H.check_time_limit(slow, "tiger", time_limit=0.1, slack=0.05)


def test_catches_unreported_overrun():
    """Reporting a small solve_seconds does not hide a long call."""
    def liar(model, *, time_limit=None, target_gap=None, seed=0):
        r = solve_blind(model, seed=seed)
        time.sleep(0.6)
        return r._replace(solve_seconds=0.0, compile_seconds=0.0)

    with pytest.raises(AssertionError, match="the call took"):
        H.check_time_limit(liar, "tiger", time_limit=0.1, slack=0.05, setup_slack=0.1)


def test_result_structure_is_checked():
    with pytest.raises(AssertionError, match="no policy"):
        H.check_result(_fake(policy=None), "tiger")
    assert isinstance(_fake(), SolveResult)


# -------------------------------------------------------------- point-based
METHODS = ("hsvi", "pbvi", "perseus")


@functools.lru_cache(maxsize=None)
def _point_based(method, max_iterations=None):
    point_based = pytest.importorskip("jaxpomdp.solvers.point_based")

    def solve(model, *, time_limit=None, target_gap=1e-3, seed=0):
        extra = {} if max_iterations is None else {"max_iterations": max_iterations}
        return point_based.solve(model, method=method, time_limit=time_limit, target_gap=target_gap,
                                 seed=seed, **extra)

    solve.__name__ = f"point_based[{method}]"
    return solve


#: Main runs (network does not converge in this time; the others may).
PB_TIME_LIMIT = 2.0


@pytest.mark.parametrize("problem", H.PROBLEMS)
@pytest.mark.parametrize("check", ["bounds", "history", "simulation"])
@pytest.mark.parametrize("method", METHODS)
def test_point_based(method, check, problem):
    H.run_check(check, _point_based(method), problem, time_limit=PB_TIME_LIMIT, target_gap=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_point_based_deterministic(method):
    """Capped by iterations (not time), so both runs do the same work."""
    H.check_deterministic(_point_based(method, max_iterations=20), "tiger", time_limit=120.0,
                          target_gap=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_point_based_time_limit(method):
    H.check_time_limit(_point_based(method), "network", time_limit=2.0)
