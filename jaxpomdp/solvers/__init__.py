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
* ``gpomdp``: stochastic gradient ascent (optax) on GPOMDP's gradient estimate of
  a stochastic policy's average reward or discounted value
  (:mod:`jaxpomdp.solvers.gpomdp`); ``conjpomdp``: Baxter & Bartlett's
  conjugate-gradient ascent with GPOMDP as its gradient oracle
  (:mod:`jaxpomdp.solvers.conjpomdp`). They need only a simulator and report no
  bounds.
* ``nvi``: Neural Value Iteration, a finite network controller whose node values
  are neural networks (:mod:`jaxpomdp.solvers.nvi`), for tabular models and
  simulators (``rocksample:n,k`` runs on the RockSample simulator); its lower
  bound is None (the network estimate is not certified), its upper bound QMDP or
  the fully observable value.

Every solver is called as ``solve(model, *, time_limit, target_gap, seed,
callback)``; ``callback(seconds, lower, upper, num_vectors, num_beliefs)`` is
called as it progresses (the policy-gradient solvers: ``callback(seconds,
eta_estimate, grad_norm, iteration)``). The iterative ones (all but ``blind`` and
``qmdp``) also take ``max_iterations``, ``checkpoint`` / ``resume``
(:mod:`jaxpomdp.checkpoint`: stopped and resumed equals never stopped), ``stop``
(polled between steps) and ``mesh`` (:mod:`jaxpomdp.distributed`: the batch axis
split over several devices).
"""

from __future__ import annotations

import functools
from typing import Callable

from jaxpomdp.solvers import conjpomdp, gpomdp, nvi, point_based
from jaxpomdp.solvers.baseline import SolveResult, solve_blind, solve_qmdp

__all__ = ["SolveResult", "SOLVERS", "POLICY_GRADIENT", "solve_blind", "solve_qmdp", "point_based",
           "gpomdp", "conjpomdp", "nvi"]

#: Solver name -> ``solve(model, *, time_limit, target_gap, seed, callback) -> SolveResult``.
SOLVERS: dict[str, Callable[..., SolveResult]] = {
    "blind": solve_blind,
    "qmdp": solve_qmdp,
    "hsvi": functools.partial(point_based.solve, method="hsvi"),
    "pbvi": functools.partial(point_based.solve, method="pbvi"),
    "perseus": functools.partial(point_based.solve, method="perseus"),
    "gpomdp": gpomdp.solve,
    "conjpomdp": conjpomdp.solve,
    "nvi": nvi.solve,
}

#: The policy-gradient solvers: they take ``config=`` (their ``Config``) and report
#: ``callback(seconds, eta_estimate, grad_norm, iteration)``; no bounds.
POLICY_GRADIENT: dict[str, type] = {"gpomdp": gpomdp.Config, "conjpomdp": conjpomdp.Config}
