"""Solvers: each returns a :class:`SolveResult` (policy, bounds at b0, history, timings).

Available now (``SOLVERS``):

* ``blind``: the best fixed action (the blind policy). Its exact value at b0 is
  the lower bound; the QMDP value is the upper bound.
* ``qmdp``: acts greedily on the QMDP Q-vectors over an exact belief. Bounds as
  for ``blind`` (the QMDP policy's own value is not a certified bound; the
  simulated evaluation measures it).
"""

from __future__ import annotations

from typing import Callable

from jaxpomdp.solvers.baseline import SolveResult, solve_blind, solve_qmdp

__all__ = ["SolveResult", "SOLVERS", "solve_blind", "solve_qmdp"]

#: Solver name -> ``solve(model, *, time_limit, seed) -> SolveResult``.
SOLVERS: dict[str, Callable[..., SolveResult]] = {
    "blind": solve_blind,
    "qmdp": solve_qmdp,
}
