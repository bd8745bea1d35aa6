"""The shared solver test harness: the checks every jaxpomdp solver must pass.

A solver is a function ``solve(model, *, time_limit, target_gap, seed) -> SolveResult``
(see ``jaxpomdp.solvers.baseline.SolveResult``). On the classic problems
(``PROBLEMS``) the harness checks:

(a) ``check_bounds``: the reported bounds bracket the optimum, using the certified
    reference of ``exact_pomdp.exact_reference`` (``lower_bound <= exact upper +
    rel_tol |V|``, ``upper_bound >= exact lower - rel_tol |V|``; a side reported as
    None is skipped), are finite and ordered.
(b) ``check_simulation``: the policy's simulated value (``simulate.evaluate`` with a
    fixed key) is at or above ``lower_bound`` and, when an upper bound is reported,
    at or below ``upper_bound``, within ``z`` standard errors widened by the
    evaluation's ``truncation_bound`` (and at or below the exact upper bound).
(c) ``check_deterministic``: the same seed gives identical bounds, alpha-vectors and
    actions (skipped when a run stopped on its time limit: then the work done
    depends on the machine).
(d) ``check_time_limit``: with ``time_limit=T`` and an unreachable ``target_gap=0``,
    ``solve_seconds <= 1.1 T + slack`` (and the call's wall time is at most that
    plus ``compile_seconds`` and a setup allowance), and the result still passes
    (a) and (e).
(e) ``check_history``: history rows are ``(seconds, lower, upper, num_vectors,
    num_beliefs)`` with time non-decreasing, lower non-decreasing, upper
    non-increasing, lower <= upper, and the final bounds at least as good as the
    last row.

``check_solver`` runs them all; ``run_check(name, solve, problem, ...)`` runs one,
for ``pytest.mark.parametrize``. Models, exact references and solve results are
cached per process, so the checks of one (solver, problem) pair share one solve.

Every check raises ``AssertionError`` (never a bare ``assert``, so ``python -O`` does
not disable them) with a message naming the solver, the problem and the numbers.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

import jaxpomdp
from jaxpomdp import simulate

import exact_pomdp

__all__ = ["PROBLEMS", "CHECKS", "REL_TOL", "get_model", "exact", "solve_cached",
           "check_bounds", "check_simulation", "check_history", "check_deterministic",
           "check_time_limit", "check_result", "run_check", "check_solver"]

#: The classic problems every solver is checked on.
PROBLEMS = ("tiger", "paint.95", "1d", "network")
#: Relative slack on bound comparisons (float32 solvers, the float32 model).
REL_TOL = 1e-4
#: The check names, in the order ``check_solver`` runs them.
CHECKS = ("bounds", "simulation", "history", "deterministic", "time_limit")


def _require(cond, message):
    if not cond:
        raise AssertionError(message)


def _name(solve) -> str:
    return getattr(solve, "__name__", None) or repr(solve)


@functools.lru_cache(maxsize=None)
def get_model(problem: str):
    """The built-in model ``problem`` (cached)."""
    return jaxpomdp.problems.get(problem)


def exact(problem: str) -> exact_pomdp.ExactBounds:
    """The certified reference bracket on V*(b0) (cached per process)."""
    return exact_pomdp.exact_reference(problem)


def _scale(problem: str) -> float:
    ref = exact(problem)
    return max(abs(ref.lower), abs(ref.upper), 1e-12)


@functools.lru_cache(maxsize=None)
def solve_cached(solve: Callable, problem: str, time_limit: Optional[float], target_gap: float,
                 seed: int = 0):
    """``(result, wall_seconds)`` of ``solve(get_model(problem), ...)``, cached per process."""
    t0 = time.perf_counter()
    result = solve(get_model(problem), time_limit=time_limit, target_gap=target_gap, seed=seed)
    return result, time.perf_counter() - t0


def _finite_or_none(x):
    return x is None or math.isfinite(float(x))


# ------------------------------------------------------------------- (a) bounds
def check_bounds(result, problem: str, *, rel_tol: float = REL_TOL, who: str = "solver") -> None:
    """(a) The reported bounds bracket the certified exact optimum."""
    ref = exact(problem)
    tol = rel_tol * _scale(problem)
    lo, up = result.lower_bound, result.upper_bound
    where = f"{who} on {problem}"
    _require(_finite_or_none(lo) and _finite_or_none(up),
             f"{where}: bounds must be finite or None, got lower={lo!r} upper={up!r}")
    if lo is not None:
        _require(float(lo) <= ref.upper + tol,
                 f"{where}: lower_bound {float(lo):.6f} is above the exact optimum's upper bound "
                 f"{ref.upper:.6f} (+{tol:.2g}); exact bracket [{ref.lower:.6f}, {ref.upper:.6f}]")
    if up is not None:
        _require(float(up) >= ref.lower - tol,
                 f"{where}: upper_bound {float(up):.6f} is below the exact optimum's lower bound "
                 f"{ref.lower:.6f} (-{tol:.2g}); exact bracket [{ref.lower:.6f}, {ref.upper:.6f}]")
    if lo is not None and up is not None:
        _require(float(lo) <= float(up) + tol,
                 f"{where}: lower_bound {float(lo):.6f} > upper_bound {float(up):.6f}")


# --------------------------------------------------------------- (b) simulation
@functools.lru_cache(maxsize=None)
def _evaluate(solve, problem, time_limit, target_gap, seed, num_episodes, horizon, key):
    result, _ = solve_cached(solve, problem, time_limit, target_gap, seed)
    model = get_model(problem)
    if horizon is None:
        horizon = simulate.default_horizon(float(np.asarray(model.discount)), tolerance=1e-3)
    # one vmapped batch: compiles faster than several (the compile dominates here)
    return simulate.evaluate(jax.random.key(key), model, result.policy,
                             num_episodes=num_episodes, horizon=horizon, batch_size=num_episodes)


def check_simulation(result, problem: str, evaluation, *, z: float = 4.0, rel_tol: float = REL_TOL,
                     who: str = "solver") -> None:
    """(b) The policy's simulated value agrees with the reported bounds.

    ``evaluation`` is a ``simulate.Evaluation`` of ``result.policy``. The interval is
    ``mean -+ (z stderr + truncation_bound)``. ``z = 4`` rather than 1.96: with a
    few dozen (solver, problem) pairs a 95% interval would fail a correct solver
    every few runs of the suite.
    """
    ref = exact(problem)
    tol = rel_tol * _scale(problem)
    mean, se = float(evaluation.mean), float(evaluation.stderr)
    width = z * se + float(evaluation.truncation_bound)
    where = (f"{who} on {problem}: simulated value {mean:.5f} +- {width:.3g} "
             f"({evaluation.num_episodes} episodes, horizon {evaluation.horizon})")
    _require(math.isfinite(mean), f"{where}: not finite")
    if result.lower_bound is not None:
        _require(mean + width >= float(result.lower_bound) - tol,
                 f"{where} is below the reported lower_bound {float(result.lower_bound):.5f}")
    if result.upper_bound is not None and result.lower_bound is not None:
        _require(mean - width <= float(result.upper_bound) + tol,
                 f"{where} is above the reported upper_bound {float(result.upper_bound):.5f}")
    _require(mean - width <= ref.upper + tol,
             f"{where} is above the exact optimum's upper bound {ref.upper:.5f}")


# ------------------------------------------------------------------ (e) history
def check_history(result, problem: str = "?", *, rel_tol: float = REL_TOL, who: str = "solver") -> None:
    """(e) History rows are well formed and monotone; the final bounds are no worse."""
    where = f"{who} on {problem}"
    hist = list(result.history)
    _require(len(hist) > 0, f"{where}: empty history")
    tol = rel_tol * _scale(problem) if problem in PROBLEMS else rel_tol
    prev = None
    for k, row in enumerate(hist):
        _require(len(row) == 5, f"{where}: history row {k} {row!r} is not "
                                "(seconds, lower, upper, num_vectors, num_beliefs)")
        sec, lo, up, nv, nb = row
        _require(sec is not None and math.isfinite(float(sec)) and float(sec) >= 0,
                 f"{where}: history row {k}: bad time {sec!r}")
        _require(_finite_or_none(lo) and _finite_or_none(up), f"{where}: history row {k}: bad bounds {row!r}")
        for what, count in (("num_vectors", nv), ("num_beliefs", nb)):
            _require(count is None or (int(count) == count and count >= 0),
                     f"{where}: history row {k}: bad {what} {count!r}")
        if lo is not None and up is not None:
            _require(float(lo) <= float(up) + tol, f"{where}: history row {k}: lower {lo} > upper {up}")
        if prev is not None:
            psec, plo, pup = prev[0], prev[1], prev[2]
            _require(float(sec) >= float(psec), f"{where}: history time goes back at row {k}: {psec} -> {sec}")
            if lo is not None and plo is not None:
                _require(float(lo) >= float(plo) - tol,
                         f"{where}: history lower bound decreases at row {k}: {plo} -> {lo}")
            if up is not None and pup is not None:
                _require(float(up) <= float(pup) + tol,
                         f"{where}: history upper bound increases at row {k}: {pup} -> {up}")
        prev = row
    last = hist[-1]
    if result.lower_bound is not None and last[1] is not None:
        _require(float(result.lower_bound) >= float(last[1]) - tol,
                 f"{where}: final lower_bound {result.lower_bound} is below the last history row's {last[1]}")
    if result.upper_bound is not None and last[2] is not None:
        _require(float(result.upper_bound) <= float(last[2]) + tol,
                 f"{where}: final upper_bound {result.upper_bound} is above the last history row's {last[2]}")


def check_result(result, problem: str, *, who: str = "solver", rel_tol: float = REL_TOL) -> None:
    """The checks that need only a result: (a) and (e), plus basic structure."""
    for field in ("policy", "lower_bound", "upper_bound", "solve_seconds", "compile_seconds", "history"):
        _require(hasattr(result, field), f"{who} on {problem}: the result has no {field!r}")
    _require(result.policy is not None, f"{who} on {problem}: no policy")
    _require(math.isfinite(float(result.solve_seconds)) and result.solve_seconds >= 0,
             f"{who} on {problem}: bad solve_seconds {result.solve_seconds!r}")
    check_bounds(result, problem, rel_tol=rel_tol, who=who)
    check_history(result, problem, rel_tol=rel_tol, who=who)


# ------------------------------------------------------------ (c) determinism
def _same(x, y):
    if x is None or y is None:
        return x is None and y is None
    x, y = np.asarray(x), np.asarray(y)
    return x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")


def check_deterministic(solve, problem: str = "tiger", *, time_limit: float = 30.0,
                        target_gap: float = 1e-2, seed: int = 0, who: Optional[str] = None) -> None:
    """(c) Two runs with the same seed give identical bounds, alpha-vectors and actions.

    Uses the cached run plus one fresh run. If either run stopped on its time limit
    (``solve_seconds >= 0.9 time_limit``) the amount of work depends on the machine
    and the check is skipped (``pytest.skip``).
    """
    who = who or _name(solve)
    first, _ = solve_cached(solve, problem, time_limit, target_gap, seed)
    second = solve(get_model(problem), time_limit=time_limit, target_gap=target_gap, seed=seed)
    if max(first.solve_seconds, second.solve_seconds) >= 0.9 * time_limit:
        import pytest

        pytest.skip(f"{who} on {problem} ran into its {time_limit} s limit: determinism untestable")
    where = f"{who} on {problem} (seed {seed}), two runs"
    for field in ("lower_bound", "upper_bound", "alphas", "alpha_actions"):
        a, b = getattr(first, field, None), getattr(second, field, None)
        _require(_same(a, b), f"{where}: {field} differs: {a!r} vs {b!r}")


# ------------------------------------------------------------- (d) time limit
def check_time_limit(solve, problem: str = "network", *, time_limit: float = 2.0, slack: float = 0.25,
                     setup_slack: Optional[float] = None, seed: int = 0, who: Optional[str] = None) -> None:
    """(d) With ``time_limit=T`` and ``target_gap=0`` the solver stops in time with a valid result.

    ``solve_seconds <= 1.1 T + slack``; the wall time of the call is at most that plus
    ``compile_seconds`` plus ``setup_slack`` (default ``1 + 0.5 T`` s: model checks,
    tracing, a busy machine). The result must pass (a) and (e).
    """
    who = who or _name(solve)
    result, wall = solve_cached(solve, problem, time_limit, 0.0, seed)
    where = f"{who} on {problem} with time_limit={time_limit}"
    budget = 1.1 * time_limit + slack
    _require(float(result.solve_seconds) <= budget,
             f"{where}: solve_seconds {float(result.solve_seconds):.3f} > 1.1 T + {slack} = {budget:.3f}")
    setup = 1.0 + 0.5 * time_limit if setup_slack is None else setup_slack
    wall_budget = budget + float(result.compile_seconds) + setup
    _require(wall <= wall_budget,
             f"{where}: the call took {wall:.3f} s > {wall_budget:.3f} s "
             f"(1.1 T + slack + compile_seconds {float(result.compile_seconds):.3f} + setup {setup})")
    check_result(result, problem, who=f"{who} (time-limited)")


# ------------------------------------------------------------------ drivers
def run_check(check: str, solve, problem: str, *, time_limit: Optional[float] = 10.0,
              target_gap: float = 1e-3, seed: int = 0, num_episodes: int = 2000,
              horizon: Optional[int] = None, key: int = 0, z: float = 4.0,
              rel_tol: float = REL_TOL, limit_for_check: float = 2.0,
              deterministic_gap: Optional[float] = None) -> None:
    """Runs one named check (one of ``CHECKS``) of ``solve`` on ``problem``.

    ``time_limit``/``target_gap``/``seed`` configure the main (cached) run used by
    "bounds", "simulation" and "history"; "deterministic" uses ``target_gap =
    deterministic_gap`` (default ``max(target_gap, 1e-3 |V|)``); "time_limit" uses
    ``limit_for_check`` seconds and ``target_gap = 0``.
    """
    who = _name(solve)
    if check in ("bounds", "history", "simulation"):
        result, _ = solve_cached(solve, problem, time_limit, target_gap, seed)
        if check == "bounds":
            check_bounds(result, problem, rel_tol=rel_tol, who=who)
        elif check == "history":
            check_history(result, problem, rel_tol=rel_tol, who=who)
        else:
            ev = _evaluate(solve, problem, time_limit, target_gap, seed, num_episodes, horizon, key)
            check_simulation(result, problem, ev, z=z, rel_tol=rel_tol, who=who)
    elif check == "deterministic":
        gap = deterministic_gap if deterministic_gap is not None else max(target_gap, 1e-3 * _scale(problem))
        check_deterministic(solve, problem, time_limit=time_limit or 30.0, target_gap=gap, seed=seed, who=who)
    elif check == "time_limit":
        check_time_limit(solve, problem, time_limit=limit_for_check, seed=seed, who=who)
    else:
        raise ValueError(f"unknown check {check!r}; expected one of {CHECKS}")


def check_solver(solve, *, problems: Sequence[str] = PROBLEMS, time_limit: Optional[float] = 10.0,
                 target_gap: float = 1e-3, seed: int = 0, checks: Sequence[str] = CHECKS,
                 deterministic_problem: str = "tiger", time_limit_problem: str = "network",
                 limit_for_check: float = 2.0, **kwargs) -> None:
    """Runs every check of ``checks`` on ``solve``; raises AssertionError on the first failure.

    "bounds", "simulation" and "history" run on every problem of ``problems``;
    "deterministic" on ``deterministic_problem``; "time_limit" on
    ``time_limit_problem`` with ``limit_for_check`` seconds.
    """
    for check in checks:
        if check == "deterministic":
            targets = [deterministic_problem]
        elif check == "time_limit":
            targets = [time_limit_problem]
        else:
            targets = list(problems)
        for problem in targets:
            run_check(check, solve, problem, time_limit=time_limit, target_gap=target_gap, seed=seed,
                      limit_for_check=limit_for_check, **kwargs)
