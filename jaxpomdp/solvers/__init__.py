"""Solvers: each returns a :class:`SolveResult` (policy, bounds at b0, history, timings).

Available now (``SOLVERS``):

* ``blind``: the best fixed action (the blind policy). Its exact value at b0 is
  the lower bound; the QMDP value is the upper bound.
* ``qmdp``: acts greedily on the QMDP Q-vectors over an exact belief. Bounds as
  for ``blind`` (the QMDP policy's own value is not a certified bound; the
  simulated evaluation measures it).
* ``hsvi`` (the default of the command line), ``pbvi``, ``perseus``: point-based
  value iteration with certified lower and upper bounds
  (:mod:`jaxpomdp.solvers.point_based`).

Every solver is called as ``solve(model, *, time_limit, target_gap, seed,
callback)``; ``callback(seconds, lower, upper, num_vectors, num_beliefs)`` is
called as it progresses.
"""

from __future__ import annotations

import functools
from typing import Callable

from jaxpomdp.solvers import point_based
from jaxpomdp.solvers.baseline import SolveResult, solve_blind, solve_qmdp

__all__ = ["SolveResult", "SOLVERS", "solve_blind", "solve_qmdp", "point_based"]

#: Solver name -> ``solve(model, *, time_limit, target_gap, seed, callback) -> SolveResult``.
SOLVERS: dict[str, Callable[..., SolveResult]] = {
    "blind": solve_blind,
    "qmdp": solve_qmdp,
    "hsvi": functools.partial(point_based.solve, method="hsvi"),
    "pbvi": functools.partial(point_based.solve, method="pbvi"),
    "perseus": functools.partial(point_based.solve, method="perseus"),
}
