"""Every solver against the shared harness (tests/solver_harness.py).

* The baseline solvers (blind, QMDP) pass every check on every problem.
* Deliberately broken solvers are caught, one per check.
* The point-based solver (``jaxpomdp.solvers.point_based``, HSVI/PBVI/Perseus) runs
  the same checks once it exists (skipped until then).

Compilation dominates this file's time (each ``simulate.evaluate`` program costs
2-6 s to compile, an HSVI step 3-10 s), so the runs share programs and solves
where that changes nothing that is checked:

* ``simulate.evaluate`` pads alpha-vector policies to a bucket size
  (``AlphaVectorPolicy.bucketed``, tested in tests/test_simulate.py), so QMDP and
  the small point-based policies of a problem share one compiled simulation;
* the point-based runs on tiger are the iteration-capped runs of the determinism
  check: every run is checked the same way whichever stopping rule ended it. On
  network they are iteration-capped too (``PB_NETWORK_ITERATIONS``), not the
  time-limit check's runs: a 2 s run has no time for pruning's compilations (about a
  second each), so its policy keeps its ~1,500 vectors, and simulating those cost 10-25 s
  of CPU (more on a faster machine, which adds more vectors in the same time); a
  capped run ends pruned, with tens of vectors, and bounds as tight as the 2 s runs'.
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

#: The main runs' settings (``run_check``'s defaults), which the simulations below repeat.
TIME_LIMIT, TARGET_GAP, SEED = 10.0, 1e-3, 0
#: ``run_check``'s simulation: episodes, evaluation key (horizon: ``default_horizon(gamma, 1e-3)``).
NUM_EPISODES, EVAL_KEY = 2000, 0


def _evaluation(solve, problem, time_limit, target_gap):
    """``run_check``'s simulation of the cached run's policy (``simulate.evaluate`` pads alpha-vector policies to
    a bucket size, so QMDP and the small point-based policies of a problem share one compiled simulation)."""
    return H._evaluate(solve, problem, time_limit, target_gap, SEED, NUM_EPISODES, None, EVAL_KEY)


def _run_check(check, solve, problem, time_limit=TIME_LIMIT, target_gap=TARGET_GAP):
    H.run_check(check, solve, problem, time_limit=time_limit, target_gap=target_gap, seed=SEED)


# ------------------------------------------------------------------ baselines
@pytest.mark.parametrize("problem", H.PROBLEMS)
@pytest.mark.parametrize("check", ["bounds", "history", "simulation"])
@pytest.mark.parametrize("solver", list(BASELINES))
def test_baseline(solver, check, problem):
    _run_check(check, BASELINES[solver], problem)


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
    result, _ = H.solve_cached(BASELINES["blind"], problem, TIME_LIMIT, TARGET_GAP, SEED)
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
    ev = _evaluation(BASELINES["blind"], "tiger", TIME_LIMIT, TARGET_GAP)
    with pytest.raises(AssertionError, match="below the reported lower_bound"):
        H.check_simulation(broken, "tiger", ev)


def test_catches_policy_better_than_the_optimum():
    ev = _evaluation(BASELINES["qmdp"], "tiger", TIME_LIMIT, TARGET_GAP)
    fake_ev = ev._replace(mean=ev.mean + 5.0)  # a simulator/policy bug: 5 above V*
    result, _ = H.solve_cached(BASELINES["qmdp"], "tiger", TIME_LIMIT, TARGET_GAP, SEED)
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


#: Seconds of the time-limited runs (network does not converge in this time; the others may).
PB_TIME_LIMIT = 2.0
#: The determinism check's runs: capped by iterations (not time), so both runs do the same work.
PB_MAX_ITERATIONS, PB_DETERMINISTIC_LIMIT = 20, 120.0
#: Steps of the main runs on network (capped, so they end pruned; Perseus's steps are shorter). Measured lower
#: bounds at b0: ~292 (HSVI; its 2 s run's ~292), ~236 (Perseus; 2 s: ~247), ~106 (PBVI; as low in 2 s); V* ~ 293.2.
PB_NETWORK_ITERATIONS = {"hsvi": 8, "pbvi": 8, "perseus": 32}


def _main_run(method, problem):
    """``(solve, time_limit, target_gap)`` of the run that "bounds", "history" and "simulation" check.

    Any run's result must pass these, so on tiger they check a run that another
    check makes anyway (``H.solve_cached`` solves it once per process, ``--dist
    loadfile`` keeps this file in one): the determinism check's first run
    (``PB_MAX_ITERATIONS`` steps, not cut short by a busy machine). On network a run
    capped at ``PB_NETWORK_ITERATIONS`` steps (its gap stays far above 1e-3), which ends
    pruned (see the module docstring); the time-limit check's run is checked by
    ``check_time_limit`` (bounds and history).
    """
    if problem == "tiger":
        return _point_based(method, PB_MAX_ITERATIONS), PB_DETERMINISTIC_LIMIT, TARGET_GAP
    if problem == "network":
        return _point_based(method, PB_NETWORK_ITERATIONS[method]), PB_DETERMINISTIC_LIMIT, TARGET_GAP
    return _point_based(method), PB_TIME_LIMIT, TARGET_GAP


@pytest.mark.parametrize("problem", H.PROBLEMS)
@pytest.mark.parametrize("check", ["bounds", "history", "simulation"])
@pytest.mark.parametrize("method", METHODS)
def test_point_based(method, check, problem):
    solve, time_limit, target_gap = _main_run(method, problem)
    _run_check(check, solve, problem, time_limit=time_limit, target_gap=target_gap)


@pytest.mark.parametrize("method", METHODS)
def test_point_based_deterministic(method):
    """Capped by iterations (not time), so both runs do the same work."""
    H.check_deterministic(_point_based(method, PB_MAX_ITERATIONS), "tiger", time_limit=PB_DETERMINISTIC_LIMIT,
                          target_gap=TARGET_GAP)


@pytest.mark.parametrize("method", METHODS)
def test_point_based_time_limit(method):
    H.check_time_limit(_point_based(method), "network", time_limit=PB_TIME_LIMIT)


def test_hsvi_time_limited_run_prunes_when_recompiling_the_step_does_not_fit():
    """9.5 s is less than twice ``MIN_COMPILE_ESTIMATE``, so the sets never grow (a step's recompilation does
    not fit); pruning's own programs compile in about a second, so pruning goes on past 256 vectors: the
    vectors in use drop at least once (network's V* needs a few tens; a run that stopped pruning at 256
    vectors kept its ~1,500-3,300 to the end)."""
    result, _ = H.solve_cached(_point_based("hsvi"), "network", 9.5, 0.0, 0)
    assert result.info["stop_reason"] == "time limit" and result.solve_seconds <= 1.1 * 9.5 + 0.25
    vectors = [row[3] for row in result.history]
    assert max(vectors) > 256 and any(b < a for a, b in zip(vectors, vectors[1:])), vectors
