"""Neural Value Iteration: planning a finite network controller from a simulator.

You, Çakır, Schutz, Hawes, "Neural Value Iteration" (UAI 2026, arXiv 2511.08825);
the design follows ``docs/ALGORITHMS.md`` §2 (the MCVI -> NVI line: Bai, Hsu, Lee,
Ngo 2010). The value function is ``V(b) = max_n E_{s~b} f_{theta_n}(s)``, one
network per controller node (:mod:`jaxpomdp.controller`); only a simulator
``(s, a) -> (s', o, r, done)`` (:class:`~jaxpomdp.model.GenerativePOMDP`) is used.

One :func:`update` (everything jit-compiled, static shapes) is:

1. **Belief collection** (:func:`collect`): ``width`` trajectories from ``b0``
   with particle beliefs (:mod:`jaxpomdp.particles`), following a hidden state
   drawn from ``b0``. A trajectory either follows the current controller
   (probability ``follow_controller``: from the best node at ``b0`` by the
   networks, along its edges; after a step that was not the node's action, from the
   best node at the new belief) or is
   *guided*: for its first ``L`` steps (``L`` uniform in ``0..info_steps``) the most
   informative action, ``argmax_a I(o; s' | b, a)`` (mutual information of the
   next observation and state, from the particles and the observation
   likelihood), then the action greedy on an upper bound at the *hidden* state,
   ``argmax_a E[r + gamma U(s')]`` (``U``: the QMDP values of a tabular model, so
   the MDP's optimal action; ``model.upper_value(s)`` of a simulator that has one,
   e.g. RockSample's fully observable bound). So guided trajectories gather some
   information and then take the optimistic, fully informed path; the backups
   along them weigh what the information is worth. Optionally (``guide_belief``,
   ``risk_std``) the upper-bound action is chosen at the belief instead, or replaced
   by the most informative action where its reward is uncertain under the belief,
   so that guided trajectories also reach the beliefs a cautious policy visits
   (checked-and-bad rocks, a door left unopened). With ``guide_share`` > 0 that
   share of the guided trajectories follows a *guide policy* instead (any
   :mod:`jaxpomdp.policy` policy, tracking its own memory along the actions taken:
   ``solve(guide=...)``, by default the model's ``guide_policy()`` where it has one,
   e.g. RockSample's check-and-sample heuristic, or the QMDP policy of a tabular
   model), so that the beliefs come also from a sensible belief-tracking policy's
   path rather than only from a fully informed one. Each step is replaced by a
   random action with probability ``explore_random``. The beliefs are stored in
   a ring buffer (the pool).
2. **Backups**, deepest first along each trajectory (:func:`backup`, MCVI-style):
   at belief ``b`` (particles ``s_i``), for every action ``a`` simulate ``(s'_i, o_i,
   r_i)``; for each ``o`` the successor ``n*(a, o) = argmax_n sum_{i: o_i = o}
   f_n(s'_i)``; ``Q(b, a) = mean_i [r_i + gamma f_{n*(a, o_i)}(s'_i)]`` (0 after a
   terminal ``s'``; for a tabular model the values ``f_n(s)`` of all its states
   are tabulated once per :func:`explore`, new nodes' rows rewritten, and looked
   up, the target networks' too). With ``verify_successors = K`` (the default, 8) the networks
   only shortlist: for each ``(a, o)`` the ``K`` nodes best by ``f`` are *run* (the
   controller from each, ``td_steps`` steps, then the target networks, the same
   random numbers for all ``K``) from the particles' ``s'_i`` and the best by those
   returns is ``n*(a, o)``, its returns standing for ``f`` in ``Q`` (tabular models,
   ``verified_q_by_networks``: the chosen node's ``f`` stays in ``Q``). A node's
   network is fitted where its plan was made and can overrate it by many units
   elsewhere, and the max over nodes picks exactly such errors: on
   RockSample(7,8) a node valued 14.2 by its network at a late belief was worth
   0.4 (exact evaluation of the controller on the tabular model), and 150 s of
   planning (one core, seeds 0-3) followed at 19.0-20.5 (mean 19.9) with ``K = 8``
   against 17.7-19.5 (mean 18.2) choosing by the networks. The candidate node
   (action ``a* = argmax_a Q(b, a)``, edges ``n*(a*, .)``; an observation no
   particle produced gets the successor best over
   all particles) is then valued by *simulation*: the controller run from it,
   ``fit_repeats`` times per particle, for ``td_steps`` steps, then the target
   networks; unbiased for that controller, unlike the max inside ``Q``. The best
   existing node at ``b`` is run from the same particles with the same random
   numbers; if the candidate's mean return beats it by more than ``max(improve_tol
   (1 + |V|), improve_z`` standard errors of the paired difference``)`` and no node
   with the same action and edges exists, the node takes the
   first free slot and its network is fitted (``fit_steps`` Adam steps,
   warm-started from the best node at ``b``) to those returns and to as many from
   states of random pooled beliefs, so that it does not extrapolate its plan's
   value to states where the plan does not apply. Then ``refresh_nodes`` random
   nodes have their edges re-chosen at their home beliefs (same action, the
   successors now best; kept if the paired returns improve): early nodes point at
   what was best when they were made, and would otherwise keep stale, wrongly
   valued branches alive. When fewer than ``width *
   max_depth`` slots are free, :func:`prune` frees the nodes unused for
   ``prune_age`` iterations (keeping the blind nodes and everything reachable
   from the kept ones).
3. **Training** (:func:`train_step`, ``train_steps`` times): one optax step for
   every active node at once on the squared Bellman residual of the controller,
   ``L = 1/2 E_{n, s} [f_n(s) - y]^2`` with ``y = sum_{t<H} gamma^t r_t + gamma^H
   fbar_{n_H}(s_H)``: the controller run for ``H = td_steps`` steps from ``(s, n)``
   (``H = 1``: ``y = r(s, a_n) + gamma fbar_{e_n(o)}(s')``, the issue's residual),
   ``fbar`` the target parameters (copied every ``target_period`` steps, or a
   Polyak average of the online ones, rate ``target_ema``), 0 after a terminal
   state. For tabular models :func:`default_config` takes ``H = 4`` with the
   average: one-step targets propagate values around the controller's cycles too
   slowly (errors shrink by ``gamma`` per target lag) and 16-step rollouts are too
   noisy; on Tiger both left networks off by several units. Each node trains on
   ``batch_per_node`` states, a fraction ``home_fraction`` from the belief it was
   created at (its particles are kept with the node: the pool is a ring that
   overwrites old beliefs), the rest from random pooled beliefs. The train step
   is a pure function of fixed shapes: it traces and compiles once.

:func:`solve` drives it under a time limit (the first compilation excluded and
reported apart) and reports the controller's estimated value at ``b0``,
``max_n mean_i f_n(s_i)`` over a fixed set of ``b0`` particles, as it goes. That
estimate is **not** a certified bound; the policy's value is measured by
simulation (:func:`jaxpomdp.simulate.evaluate`), or for a tabular model valued
exactly (below) is the returned ``lower_bound`` (None otherwise).
Every ``snapshot_every`` iterations (:func:`snapshot`) the controller is valued
by simulation from ``b0`` (the same particles and random numbers each time) and
kept unless it is more than 2 standard errors below the best value any snapshot
has had; the solve returns the kept one (the last one included), since the local
accept tests above are noisy and the controller can get worse for a while. A
tabular model small enough is valued exactly instead (the controller's values at
every state, :func:`jaxpomdp.controller.exact_alphas`), after every iteration:
the solve returns the best controller it has seen, from its best start node.
"""

from __future__ import annotations

import json
import math
import time
from functools import partial
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxpomdp import bounds, distributed, particles
from jaxpomdp.checkpoint import Checkpoint, CheckpointError, Checkpointer, stopped
from jaxpomdp.controller import (Controller, ControllerPolicy, exact_alphas, init_params, mlp, node_values,
                                 reachable)
from jaxpomdp.errors import ConfigError, is_integer
from jaxpomdp.io.limits import gib, refusal
from jaxpomdp.model import TabularPOMDP, as_simulator
from jaxpomdp.precision import HIGHEST, exact
from jaxpomdp.solvers.baseline import SolveResult, check_finite, check_model, check_solve_args

__all__ = ["Config", "TABULAR_SETTINGS", "LARGE_BANK", "NVIState", "Network", "BackupResult", "default_config", "init", "collect",
           "backup", "train_step", "explore", "train", "update", "prune", "value_at_b0", "controller_of", "solve",
           "upper_bound_at_b0", "mlp", "snapshot", "memory_estimate", "memory_terms", "best_controller",
           "parse_overrides", "check_config", "guide_for"]

#: Float type of the networks and of the solver's arithmetic.
DTYPE = jnp.float32

#: :func:`solve` refuses a configuration whose state and largest working arrays (:func:`memory_estimate`)
#: would exceed this or the memory available (``JAXPOMDP_MAX_MODEL_BYTES`` sets another limit).
MAX_SOLVER_BYTES = 2 ** 32


class Config(NamedTuple):
    """Hyper-parameters (static: a change recompiles).

    Attributes:
      capacity: node-bank capacity ``N``.
      hidden: hidden layer widths of the default MLP.
      value_scale: the default MLP's output scale.
      num_particles: particles per belief ``P``.
      b0_particles: particles of the fixed ``b0`` sample the value is reported on.
      max_depth: longest trajectory ``D``.
      width: trajectories per update.
      pool_capacity: beliefs kept for training (ring buffer).
      learning_rate: Adam step of the train step.
      batch_per_node: states per node per train step.
      home_fraction: share of them from the node's own belief.
      td_steps: ``H`` of the Bellman target (1 = one-step residual).
      target_period: train steps between copies of the target parameters (when
        ``target_ema`` is 0).
      target_ema: Polyak averaging rate of the target parameters
        (``fbar <- (1 - tau) fbar + tau theta`` every train step; 0: periodic copies).
      train_steps: train steps per update.
      fit_steps, fit_learning_rate, fit_repeats: fitting a new node's network.
      explore_random, follow_controller, info_steps, info_threshold: exploration
        in :func:`collect`: a trajectory follows the controller with probability
        ``follow_controller``; otherwise it takes the most informative action for
        its first ``L ~ U{0..info_steps}`` steps (where some action's information
        gain exceeds ``info_threshold`` nats) and then the upper bound's action at
        the hidden state; every step is replaced by a random action with
        probability ``explore_random``.
      guide_belief: the share of guided trajectories whose upper-bound action is chosen at the
        *belief* (``argmax_a mean_i [r_i + gamma U(s'_i)]`` over its particles, QMDP-like) rather
        than at the hidden state; they walk where the belief, not the hidden truth, says value is.
      risk_std: when > 0, a guided step whose upper-bound action has an immediate reward with a
        standard deviation over the belief's particles above this (sampling a rock not known to
        be good, opening a door in Tiger) takes the most informative action instead, if some
        action's information gain exceeds ``info_threshold``; 0: off. Neither is on by default:
        RockSample(15,15), 45 minutes, one core, seed 0 (``capacity=768``, ``batch_per_node=6``,
        ``shortlist_particles=32``) followed at 18.46 +- 0.37 with ``risk_std=3`` and 18.52 +- 0.36
        with ``guide_belief=0.5`` as well, against 18.62 +- 0.39 without (one run each).
      guide_share: the share of the guided trajectories (those not following the
        controller) that follow the guide policy of :func:`solve` instead (0: none;
        :func:`collect`). Off by default: RockSample(15,15), 45 minutes, one core, seed 0, on top
        of ``capacity=768 batch_per_node=6 shortlist_particles=32 verify_successors=4`` (with the
        check-and-sample heuristic as the guide) followed at 20.02 +- 0.27 with 0.5 and 19.84 +- 0.27
        with 1, against 20.14 +- 0.27 without (one run each).
      verify_successors: ``K``: a backup's successor for each action and observation
        is the best of the networks' ``K`` best nodes by running the controller from
        them (:func:`_successors`); 0: the networks' best.
      verified_q_by_networks: with ``verify_successors`` > 0, ``Q(b, a)`` takes the continuation from the
        network of the successor the runs chose (``f_{n*(a, o_i)}(s'_i)``, as without verifying) instead of
        from that run's return: the runs still choose the successors, away from a network's overrated max,
        while the actions are compared on values without the runs' noise (:func:`_successors`).
        Tabular models: on (:data:`TABULAR_SETTINGS`).
      shortlist_particles: with ``verify_successors`` > 0, the networks rank the nodes
        for that shortlist on this many of a belief's particles (every ``P // S``-th;
        0, the default, or at least ``num_particles``: all); the candidates run from
        all of them. :func:`collect` picks the controller's node at a belief on them
        too. 32 collects beliefs about 1.8x as fast on large instances
        (RockSample(15,15), 768 nodes) but cost RockSample(7,8) at 15 minutes 20.39
        -> 19.86 (one seed each; :func:`default_config`).
      improve_tol, improve_z: a backup adds a node only if, run from the belief's
        particles with the same random numbers as the best existing node there, its
        mean return beats that node's by more than ``improve_tol * (1 + |V|)`` and by
        ``improve_z`` standard errors of the paired difference.
      refresh_nodes: nodes per iteration whose edges are re-chosen at their home
        belief (kept if the paired returns improve; :func:`_refresh_node`).
      prune_age: when fewer than ``width * max_depth`` slots are free, the nodes
        unused for ``prune_age`` iterations are freed (:func:`prune`).
      snapshot_every: every this many iterations (and at the end) the controller
        is valued by simulation from ``b0`` (:func:`snapshot`); the best one so far
        is kept in the state and :func:`solve` returns it. 0: return the last one.
        Tabular models valued exactly (:func:`snapshot`) take a snapshot after
        every iteration when this is not 0.
    """

    capacity: int = 256
    hidden: tuple = (32, 32)
    value_scale: float = 10.0
    num_particles: int = 128
    b0_particles: int = 1024
    max_depth: int = 40
    width: int = 1
    pool_capacity: int = 2048
    learning_rate: float = 3e-3
    batch_per_node: int = 16
    home_fraction: float = 0.5
    td_steps: int = 16
    target_period: int = 20
    target_ema: float = 0.0
    train_steps: int = 50
    fit_steps: int = 50
    fit_learning_rate: float = 3e-3
    fit_repeats: int = 4
    explore_random: float = 0.1
    follow_controller: float = 0.3
    info_steps: int = 16
    info_threshold: float = 0.05
    guide_belief: float = 0.0
    risk_std: float = 0.0
    guide_share: float = 0.0
    verify_successors: int = 8
    verified_q_by_networks: bool = False
    shortlist_particles: int = 0
    improve_tol: float = 1e-2
    improve_z: float = 0.0
    refresh_nodes: int = 16
    prune_age: int = 3
    snapshot_every: int = 20


#: :func:`default_config`'s settings for tabular models (measured, see there).
TABULAR_SETTINGS = dict(learning_rate=1e-3, td_steps=4, train_steps=100, target_ema=0.02, refresh_nodes=32,
                        improve_z=2.0, verified_q_by_networks=True)


#: :func:`default_config`'s node bank for simulators with more than :data:`LARGE_BANK_ACTIONS` actions: three
#: times the default, with about as many states per train step (768 x 6 against 256 x 16). Adding
#: ``shortlist_particles=32, verify_successors=4`` (cheaper backups: 948 and 996 iterations against 525 and 524)
#: followed RockSample(15,15) at 19.88 +- 0.27 in 45 minutes and (20,20) at 18.15 +- 0.27 in 60 (2026-12-05,
#: seed 0, one core each), inside the all-default runs' 19.77-19.92 and 17.96-18.04, with a higher peak (the
#: (20,20) process 3.5 GB against 3.1), so they are not added.
LARGE_BANK = dict(capacity=768, batch_per_node=6)
LARGE_BANK_ACTIONS = 16


def default_config(model: Any, **overrides) -> Config:
    """The defaults, with ``max_depth`` long enough for the discount (capped at 100).

    A simulator with more than :data:`LARGE_BANK_ACTIONS` actions gets :data:`LARGE_BANK`: with 256
    nodes RockSample(15,15) (20 actions) had every slot in use after about two minutes. Measured (seed 0,
    2000 episodes, the controller followed; everything else at its default; one run each): RockSample(15,15)
    in 45 minutes 19.81 +- 0.27 against 18.86 +- 0.28 with 256 nodes, RockSample(20,20) (25 actions) in 60
    minutes 17.96 +- 0.27 against 16.00 +- 0.26 (the check-and-sample heuristic: 18.30 and 16.57; the
    256-node runs shared two cores with another, the larger banks had a core each). Smaller
    instances keep 256 (RockSample(11,11) has 16 actions, (7,8) 13; not measured with the larger bank).

    A :class:`~jaxpomdp.model.TabularPOMDP` also gets :data:`TABULAR_SETTINGS`:
    4-step targets with a Polyak-averaged target network, 100 train steps per
    iteration, 32 edge refreshes per iteration and the paired 2-standard-error
    improvement test, at Adam's step 1e-3, and successors verified by running the
    controller (``verify_successors``, 8) with ``Q`` from the chosen nodes' networks
    (``verified_q_by_networks``). Measured 2026-12-05 (exact evaluation of the controller,
    :func:`jaxpomdp.controller.exact_value`; ``benchmarks/nvi.py``, one core each, seeds 0-2;
    the returned controller is the best by exact value, :func:`snapshot`): Tiger 19.371
    (the optimum) in 30 s, RockSample_4_4 17.924 (SARSOP's value) in 240 s (first reached
    after 58-90 s), 4x3.95 1.853, 1.853, 1.851 in 300 s (point-based lower bound 1.8898;
    97% of it after 20-75 s). Successors chosen by the networks (``verify_successors=0``,
    the tabular setting before) gave 4x3.95 only 1.827, 1.839, 1.817: the networks' errors
    at its 11 states, about 0.05 (mean absolute, against the controller's exact values),
    are the size of the differences between its choices. Verified with the runs' returns
    in ``Q`` (``verified_q_by_networks`` false) 4x3.95 reached 1.858, 1.854, 1.850 (seed 3:
    1.856) but RockSample_4_4 stopped at 16.70 and 16.53 on seeds 1 and 2 (with ``K`` 4,
    seed 1: 17.20 after 600 s), presumably because one run per particle makes ``Q`` noisier
    than the networks' values (not measured apart; both measured before the target values
    were tabulated, :func:`explore`, which changes no value but made RockSample_4_4's
    iterations faster). An earlier version of these settings took Tiger to 19.33-19.371 in
    30 s on 4 seeds where ``Config()`` gave 16.1-16.5. On the
    RockSample simulator they did worse (an earlier version): RockSample(7,8) in
    120 s followed at 7.35 vs 13.72 with ``Config()``, so simulators keep
    ``Config()``'s 16-step targets, periodic target copies and the plain
    improvement test (and 16 edge refreshes, below). For simulators the networks' fit limited the
    controller first (successors chosen by the networks, an earlier version):
    RockSample(7,8), 120 s, seed 0, followed (1000 episodes, +- 0.4): 20 train steps
    per iteration at step 1e-3 13.35, 100 steps 16.79, 300 steps 16.63, 100 steps at
    3e-3 17.95 (seed 1: 16.26), at 1e-2 15.89, 50 steps at 3e-3 (the default) 19.39
    (150 s, seed 1: 16.46); with 100 steps at 1e-3, networks (64, 64) 13.63. Then
    the choice of successors: 150 s on one core, seeds 0-3, choosing among the
    networks' 8 best by running them (``verify_successors``, the default) 20.53,
    19.72, 19.00, 20.26, by the networks alone 17.88, 17.97, 19.48, 17.66; seeds
    0 / 1 with 16 candidates 18.75 / 19.58, with 8 edge refreshes per iteration
    20.11 / 19.72, with capacity 384 19.60 / 19.61. In 15 minutes
    (``benchmarks/nvi.py``, seed 0, one core) the default followed at 20.86 +- 0.28
    (SARSOP: 21.3; by the networks alone, an earlier version, 2 cores: 19.21 +- 0.28).
    Since RockSample's particles are resampled rock by rock
    (:meth:`~jaxpomdp.problems.rocksample_sim.RockSampleSim.resample_particles`; before,
    the beliefs collapsed onto a few rock masks), 15 minutes on one core, seed 0:
    20.39 +- 0.28 (with ``shortlist_particles=32``: 19.86 +- 0.27); RockSample(11,11),
    30 minutes with ``shortlist_particles=32``: 21.90 +- 0.28 (20.04 before).
    Then 16 edge refreshes per iteration (``refresh_nodes``; 0 before): RockSample(7,8)
    21.05 +- 0.28 in 15 minutes, (11,11) 21.81 +- 0.29 in 30 minutes (with
    ``shortlist_particles=32``), (15,15) 20.14 +- 0.27 (seed 1: 20.06 +- 0.27) in 45
    minutes against 19.34 +- 0.38 without (with ``capacity=768 batch_per_node=6
    shortlist_particles=32 verify_successors=4``; one core, seed 0 unless said).
    """
    gamma = float(np.asarray(model.discount))
    depth = 40 if gamma >= 1 else int(min(100, max(10, math.ceil(math.log(0.05) / math.log(max(gamma, 1e-3))))))
    if isinstance(model, TabularPOMDP):
        preset = TABULAR_SETTINGS
    else:
        preset = LARGE_BANK if int(model.num_actions) > LARGE_BANK_ACTIONS else {}
    return Config(max_depth=depth)._replace(**{**preset, **overrides})


#: Fields of :class:`Config` that are sizes or counts (at least 1) and shares (in [0, 1]).
_AT_LEAST_ONE = ("capacity", "num_particles", "b0_particles", "max_depth", "width", "pool_capacity",
                 "batch_per_node", "td_steps", "target_period", "train_steps", "fit_steps", "fit_repeats")
_SHARES = ("home_fraction", "target_ema", "explore_random", "follow_controller", "guide_belief", "guide_share")
#: Numbers that must be positive (the thresholds ``improve_tol``, ``improve_z``, ``info_threshold``: any).
_POSITIVE = ("value_scale", "learning_rate", "fit_learning_rate")
#: The largest size or count a field takes: sizes, indices and loop counters are int32 in the compiled programs.
MAX_COUNT = 2 ** 31 - 1


def parse_overrides(items, flag: str = "--set") -> dict:
    """``["capacity=512", "hidden=[64,64]"]`` -> ``{"capacity": 512, "hidden": (64, 64)}``.

    Each item is ``FIELD=VALUE`` with a :class:`Config` field and a JSON value of
    the field's type (an integer where the default is one, a number for a float,
    a list of integers for ``hidden``). Sizes and counts must be at least 1, the
    other integers at least 0; numbers finite, step sizes and the value scale
    positive, shares in [0, 1]. Raises
    ``ValueError`` naming the item (with ``flag``) and what was expected.
    """
    fields = Config._fields
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ValueError(f"{flag} {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{flag} {item!r}: the value is not JSON ({e.msg} at column {e.colno})") from None
        default = getattr(Config(), name)
        what = _field_expected(name, value)
        if what is not None:
            raise ValueError(f"{flag} {item!r}: expected {what}, like {json.dumps(default)}")
        out[name] = tuple(value) if isinstance(value, list) else float(value) if isinstance(default, float) else value
    return out


def _field_expected(name: str, value) -> Optional[str]:
    """None when ``value`` is valid for the :class:`Config` field ``name``, else what is expected."""
    default = getattr(Config(), name)

    if isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and all(is_integer(v) and 1 <= v <= MAX_COUNT for v in value)
    elif isinstance(default, float):
        ok = (is_integer(value) or isinstance(value, (float, np.floating))) and math.isfinite(value) and \
            (name not in _POSITIVE or value > 0) and (name not in _SHARES or 0 <= value <= 1)
    elif isinstance(default, bool):
        ok = isinstance(value, (bool, np.bool_))
    else:
        ok = is_integer(value) and (1 if name in _AT_LEAST_ONE else 0) <= value <= MAX_COUNT
    if ok:
        return None
    if isinstance(default, bool):
        return "true or false"
    too_large = (any(is_integer(v) and v > MAX_COUNT for v in value) if isinstance(value, (list, tuple))
                 else is_integer(value) and value > MAX_COUNT)
    return ("a list of positive integers" + (f" at most {MAX_COUNT}" if too_large else "")
            if isinstance(default, tuple) else
            "a number in [0, 1]" if name in _SHARES else "a positive number" if name in _POSITIVE
            else "a finite number" if isinstance(default, float)
            else f"an integer >= {1 if name in _AT_LEAST_ONE else 0}"
            + (f" and at most {MAX_COUNT}" if too_large else ""))


def check_config(config: Config) -> Config:
    """Raises ConfigError naming the first field of ``config`` outside what :func:`parse_overrides`
    accepts (sizes and counts at least 1 and at most :data:`MAX_COUNT`, step sizes positive, shares in
    [0, 1], numbers finite), or more beliefs an iteration (``width x max_depth``) than the pool holds."""
    for name in Config._fields:
        value = getattr(config, name)
        what = _field_expected(name, value)
        if what is not None:
            raise ConfigError(f"Config.{name} = {value!r}: expected {what}")
    if config.width * config.max_depth > config.pool_capacity:  # one iteration would overwrite its own beliefs
        raise ConfigError(f"Config.width x max_depth = {config.width * config.max_depth} beliefs an iteration, more "
                          f"than the pool holds (pool_capacity {config.pool_capacity}): give a smaller width or "
                          "max_depth, or a larger pool_capacity")
    return config


class Network(NamedTuple):
    """A node network: ``init_fn(key, num_features, dtype) -> params``, ``apply_fn(params, x[B, F]) -> [B]``."""

    init_fn: Callable
    apply_fn: Callable


class NVIState(NamedTuple):
    """The solver state (fixed shapes: ``N`` nodes, pool of ``B`` beliefs of ``P`` particles).

    Attributes:
      params, target_params: stacked node parameters (leading axis N).
      opt_state: optax state of the train step.
      actions: int32[N]; edges: int32[N, O]; active: bool[N].
      home: states [N, P] the particles of the belief each node was created at
        (the blind nodes: ``b0``'s), kept with the node: the pool is a ring and
        overwrites its beliefs.
      last_used: int32[N] the last iteration at which a node was the best at a
        collected belief or chosen by a backup (what :func:`prune` keeps).
      num_nodes: int32[] active nodes.
      pool: states [B, P] of pooled beliefs (equally weighted particles).
      pool_count: int32[] beliefs ever written (the ring's write position mod B).
      b0_states: states [P0] drawn from ``b0``.
      steps: int32[] train steps taken; backups: int32[] nodes added by backups.
      iteration: int32[] explore calls so far.
      upper_table: float[S] ``max_a Q_MDP(s, a)`` of a tabular model (float[1] else).
      best_actions, best_edges, best_active, best_params, best_start: the
        controller kept by :func:`snapshot`; best_score: its simulated value at
        ``b0`` (``-inf`` before the first); best_iteration: when (-1: never);
        peak_score: the highest simulated value of any snapshot.
    """

    params: Any
    target_params: Any
    opt_state: Any
    actions: jax.Array
    edges: jax.Array
    active: jax.Array
    home: jax.Array
    last_used: jax.Array
    num_nodes: jax.Array
    pool: Any
    pool_count: jax.Array
    b0_states: Any
    steps: jax.Array
    backups: jax.Array
    iteration: jax.Array
    upper_table: jax.Array
    best_actions: jax.Array
    best_edges: jax.Array
    best_active: jax.Array
    best_params: Any
    best_start: jax.Array
    best_score: jax.Array
    best_iteration: jax.Array
    peak_score: jax.Array


# ------------------------------------------------------------------ helpers
def _features(model, states) -> jax.Array:
    return jax.vmap(model.features)(states).astype(DTYPE)


def _step(model, key, state, action):
    s2, o, r, d = model.step(key, state, action)
    return s2, jnp.asarray(o, jnp.int32), jnp.asarray(r, DTYPE), jnp.asarray(d, bool)


def _gamma(model):
    return jnp.asarray(model.discount, DTYPE)


def _take(tree, idx):
    return jax.tree.map(lambda x: x[idx], tree)


def _set(tree, idx, value):
    return jax.tree.map(lambda x, v: x.at[idx].set(v), tree, value)


def _all_values(apply_fn, st: NVIState, feats, params=None) -> jax.Array:
    """float[N, B], ``-inf`` for inactive nodes."""
    v = node_values(apply_fn, st.params if params is None else params, feats)
    return jnp.where(st.active[:, None], v, -jnp.inf)


#: A tabular model's node values are tabulated (``float[N, S]``) while exploring when ``N * S`` is at most this.
MAX_TABLE_ENTRIES = 2 ** 24


def _value_table(model: Any, st: NVIState, apply_fn, config: Config, params=None) -> Optional[jax.Array]:
    """``f_n(s)`` for every node and state of a tabular model (``float[N, S]``), else None.

    States of a :class:`~jaxpomdp.model.TabularPOMDP` are indices: a backup then
    looks up the ``N x P`` values of its particles instead of running every node's
    network on every particle for every action (the networks do not change during
    :func:`explore` but for new nodes, whose rows are rewritten). Same values.
    ``params``: other parameters than ``st.params`` (the target networks': the bootstrap values of
    :func:`_controller_return`, which would otherwise gather a node's parameters for every run).
    """
    if not isinstance(model, TabularPOMDP) or config.capacity * model.num_states > MAX_TABLE_ENTRIES:
        return None
    return node_values(apply_fn, st.params if params is None else params,
                       _features(model, jnp.arange(model.num_states)))


def _spread(P: int, S: int) -> slice:
    """Every ``P // S``-th of ``P`` particles: ``S`` of them, spread over the set (the shortlist's)."""
    return slice(None, (P // S) * S, P // S)


def _values_at(apply_fn, st: NVIState, model, states, table: Optional[jax.Array]) -> jax.Array:
    """float[N, B] every node's value at states [B] (``-inf`` for inactive nodes), from ``table`` if given."""
    if table is None:
        return _all_values(apply_fn, st, _features(model, states))
    return jnp.where(st.active[:, None], table[:, states], -jnp.inf)


def _optimizer(config: Config):
    return optax.adam(config.learning_rate)


def _upper_table(model: Any) -> jax.Array:
    if isinstance(model, TabularPOMDP):
        return jnp.max(bounds.qmdp(model), axis=0).astype(DTYPE)
    return jnp.zeros(1, DTYPE)


def _has_upper(model: Any) -> bool:
    return isinstance(model, TabularPOMDP) or hasattr(model, "upper_value")


def _upper_value(model: Any, st: "NVIState", s) -> jax.Array:
    """``U(s)`` guiding exploration: QMDP for tabular models, else ``model.upper_value``."""
    if isinstance(model, TabularPOMDP):
        return st.upper_table[s]
    return jnp.asarray(model.upper_value(s), DTYPE)


def _with_upper_table(model: Any, max_rocks: int = 20) -> Any:
    """RockSample simulators get their fully observable value table (exact ``U``)."""
    from jaxpomdp.problems.rocksample_sim import RockSampleSim
    if isinstance(model, RockSampleSim) and model.fo_table is None and 0 < model.k <= max_rocks:
        return model.with_fully_observable_table()
    return model


def upper_bound_at_b0(model: Any) -> tuple[Optional[float], str]:
    """``(value, kind)``: a certified upper bound on ``V*(b0)`` where one is known.

    Tabular: the QMDP value (``kind = "qmdp"``). A simulator with
    ``fully_observable_value`` support (RockSample): the fully observable MDP's
    value at ``b0`` (``"fully-observable"``, exact up to 20 rocks; a Monte Carlo
    estimate above, ``"fully-observable-mc"``, not certified). Otherwise ``(None, "none")``.
    """
    if isinstance(model, TabularPOMDP):
        bounds.check_discount(model)
        q = bounds.qmdp(model)
        return float(jnp.max(jnp.matmul(q, model.initial_belief, precision=HIGHEST))), "qmdp"
    from jaxpomdp.problems.rocksample_sim import RockSampleSim, fully_observable_value
    if isinstance(model, RockSampleSim):
        fo = fully_observable_value(model)
        return fo.value, "fully-observable" if fo.exact else "fully-observable-mc"
    return None, "none"


# ------------------------------------------------------------------- init
@partial(jax.jit, static_argnames=("config", "network"))
def init(key: jax.Array, model: Any, config: Config = Config(), network: Optional[Network] = None) -> NVIState:
    """The initial state: one blind node per action (action ``a``, every edge to itself).

    The pool starts with ``b0`` particles (the first belief); the networks are
    freshly initialised (the train steps give the blind nodes their values).
    ``model`` is a pytree simulator (a ``TabularPOMDP``, a flax struct); pass a
    plain-class one through :func:`jaxpomdp.as_simulator` (``features=True``) first,
    as :func:`solve` does.
    """
    network = network or Network(*mlp(config.hidden, config.value_scale))
    A, O, N = model.num_actions, model.num_observations, config.capacity
    if N < A:
        raise ConfigError(f"capacity {N} < {A} actions: the blind nodes do not fit")
    k_params, k_b0, k_pool = jax.random.split(key, 3)
    b0_states = jax.vmap(model.initial_state)(jax.random.split(k_b0, config.b0_particles))
    F = _features(model, _take(b0_states, jnp.arange(1))).shape[-1]
    params = init_params(k_params, network.init_fn, N, F, DTYPE)
    first = jax.vmap(model.initial_state)(jax.random.split(k_pool, config.num_particles))
    pool = jax.tree.map(lambda x: jnp.zeros((config.pool_capacity,) + x.shape, x.dtype).at[0].set(x), first)
    actions = jnp.zeros(N, jnp.int32).at[:A].set(jnp.arange(A, dtype=jnp.int32))
    edges = jnp.zeros((N, O), jnp.int32).at[:A].set(jnp.broadcast_to(jnp.arange(A, dtype=jnp.int32)[:, None], (A, O)))
    active = jnp.arange(N) < A
    home = jax.tree.map(lambda x: jnp.broadcast_to(x, (N,) + x.shape), first)
    opt_state = _optimizer(config).init(params)
    return distributed.replicated(NVIState(
        params, params, opt_state, actions, edges, active, home, jnp.zeros(N, jnp.int32), jnp.int32(A), pool,
        jnp.int32(1), b0_states, jnp.int32(0), jnp.int32(0), jnp.int32(0), _upper_table(model), actions, edges,
        active, params, jnp.int32(0), jnp.asarray(-jnp.inf, DTYPE), jnp.int32(-1), jnp.asarray(-jnp.inf, DTYPE)))


def memory_terms(model: Any, config: Config, network: Optional[Network] = None) -> dict:
    """The bytes of a solve's parts, computed from shapes (nothing allocated): a lower estimate.

    ``state``: :func:`init`'s state (networks, target networks and optimizer moments of
    every node, home beliefs, belief pool, ``b0`` sample, ...). The rest are the
    largest arrays of each compiled step, which live beside the state while it runs:

    * ``networks``: every node's network at the largest batch of states it is valued
      on at once, the ``b0`` sample or a belief's particles: ``4 capacity
      max(b0_particles, num_particles) (sum(hidden) + 1)`` bytes for the default MLP
      (a custom network: its outputs only);
    * ``train``: the train step's ``capacity x batch_per_node`` sampled states, each with
      its features, its ``td_steps`` random keys and the network's activations;
    * ``explore``: one trajectory's ``max_depth x num_particles`` states, and a backup's
      controller runs (``2 fit_repeats num_particles`` runs, or ``num_particles x
      verify_successors`` candidates, of ``td_steps`` random keys each).

    XLA's own temporaries come on top. :func:`memory_estimate` adds the largest step to
    the state (the steps run one at a time).
    """
    shapes = jax.eval_shape(lambda k: init(k, model, config, network), jax.random.key(0))
    nbytes = lambda tree: sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    widths = sum(config.hidden) + 1 if network is None or network.apply_fn is mlp(config.hidden,
                                                                                   config.value_scale)[1] else 1
    one = jax.eval_shape(model.initial_state, jax.random.key(0))
    state_bytes = nbytes(one)
    F = int(np.prod(jax.eval_shape(lambda s: _features(model, jax.tree.map(lambda x: x[None], s)), one).shape))
    key_bytes = 8  # threefry: uint32[2]
    N, P, H = config.capacity, config.num_particles, config.td_steps
    run = H * key_bytes + state_bytes  # one controller run: its keys (split up front) and its state
    samples = N * config.batch_per_node
    return {
        "state": nbytes(shapes),
        "networks": 4 * N * max(config.b0_particles, P) * widths,
        "train": samples * (run + 4 * F + 2 * 4 * widths),
        "explore": config.max_depth * (P * state_bytes + key_bytes)
        + P * max(2 * config.fit_repeats, config.verify_successors) * (run + 4 * F),
    }


def memory_estimate(model: Any, config: Config, network: Optional[Network] = None) -> tuple[int, int]:
    """``(state bytes, working bytes)`` of a solve, computed from shapes (nothing allocated).

    The state is :func:`init`'s; the working bytes are the largest of what a step
    needs beside it at once (:func:`memory_terms`: the networks' activations, the
    train step's samples, a trajectory and its backups). A lower estimate of the peak:
    XLA's own temporaries come on top.
    """
    terms = memory_terms(model, config, network)
    return terms["state"], max(terms["networks"], terms["train"], terms["explore"])


# -------------------------------------------------------------- value at b0
def value_at_b0(apply_fn: Callable, st: NVIState, model: Any) -> tuple[jax.Array, jax.Array]:
    """``(max_n mean f_n over the b0 particles, argmax node)``."""
    v = jnp.mean(_all_values(apply_fn, st, _features(model, st.b0_states)), axis=1)
    return jnp.max(v), jnp.argmax(v).astype(jnp.int32)


_value_at_b0_jit = jax.jit(value_at_b0, static_argnums=0)


def controller_of(st: NVIState, apply_fn: Callable, model: Any) -> Controller:
    """The :class:`~jaxpomdp.controller.Controller` of a state (start = best node at b0)."""
    _, start = value_at_b0(apply_fn, st, model)
    return Controller(st.actions, st.edges, st.active, st.params, start, apply_fn)


# ------------------------------------------------------------------ collect
def collect(key: jax.Array, model: Any, st: NVIState, config: Config, apply_fn: Callable,
            table: Optional[jax.Array] = None, guide: Any = None):
    """One trajectory of particle beliefs from ``b0`` (``table``: :func:`_value_table`; ``guide``: the guide
    policy of ``config.guide_share``, its memory updated with every action taken, whoever chose it).

    Returns ``(states [D, P], valid bool[D], best int32[D])``: the particles, which
    steps were taken before the hidden state ended, the controller's node at each belief (followed along
    its edges, or the best by the networks).
    """
    D, P, A = config.max_depth, config.num_particles, model.num_actions
    gamma = _gamma(model)
    k_b, k_s, k_run, k_true = jax.random.split(key, 4)
    belief = particles.init(k_b, model, P)
    true = model.initial_state(k_true)

    def upper_q(key, states):
        """``mean_i [r_i + gamma U(s'_i)]`` and the std of ``r_i`` over states ``s_i``, for every action."""
        n = jax.tree.leaves(states)[0].shape[0]

        def q(a, keys):
            s2, _, r, d = jax.vmap(lambda k, s: _step(model, k, s, a))(keys, states)
            return jnp.mean(r + gamma * jnp.where(d, 0, jax.vmap(lambda x: _upper_value(model, st, x))(s2))), \
                jnp.std(r)
        keys = jax.random.split(key, (A, n))
        return jax.vmap(q)(jnp.arange(A), keys)

    def upper_action(key, state):
        """``argmax_a mean [r + gamma U(s')]`` at the hidden state (8 simulations per action)."""
        eight = jax.tree.map(lambda x: jnp.broadcast_to(x, (8,) + jnp.shape(x)), state)
        return jnp.argmax(upper_q(key, eight)[0]).astype(jnp.int32)

    def info_action(key, b_states):
        """``argmax_a I(o; s' | b, a)``: the most informative action (0 if none informs)."""
        O = model.num_observations

        def mi(a, keys):
            s_prev = b_states
            s2, o, _, _ = jax.vmap(lambda k, s: _step(model, k, s, a))(keys, s_prev)
            z = jax.vmap(lambda s, s_2, o_: jax.vmap(
                lambda oo: particles.likelihood(model, s, a, s_2, oo, o_))(jnp.arange(O)))(s_prev, s2, o)
            z = z.astype(DTYPE)
            z = z / jnp.maximum(jnp.sum(z, axis=1, keepdims=True), 1e-30)
            ent = lambda p: -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0), axis=-1)  # noqa: E731
            return ent(jnp.mean(z, axis=0)) - jnp.mean(ent(z))
        keys = jax.random.split(key, (A, P))
        gain = jax.vmap(mi)(jnp.arange(A), keys)
        return jnp.argmax(gain).astype(jnp.int32), jnp.max(gain)

    k_mode, k_len = jax.random.split(k_s)
    at_belief = jax.random.uniform(jax.random.fold_in(k_s, 1)) < config.guide_belief
    follow = jax.random.uniform(k_mode) < config.follow_controller
    if not _has_upper(model) and config.info_steps == 0:
        follow = jnp.ones((), bool)
    info_steps = jax.random.randint(k_len, (), 0, config.info_steps + 1)

    S = config.shortlist_particles if config.verify_successors > 0 and 0 < config.shortlist_particles < P else P

    def best_node(b_states):
        """The networks' best node at a belief (ranked on ``S`` of its particles, as :func:`_successors` does)."""
        sub = _take(b_states, _spread(P, S))
        return jnp.argmax(jnp.mean(_values_at(apply_fn, st, model, sub, table), axis=1)).astype(jnp.int32)

    guided_by_policy = guide is not None and config.guide_share > 0
    by_policy = jax.random.uniform(jax.random.fold_in(k_s, 2)) < config.guide_share

    def body(carry, xs):
        key, t = xs
        belief, true, done, node, synced, memory = carry
        k_u, k_r, k_c, k_t, k_f = jax.random.split(key, 5)
        # the controller: from the best node at the first belief (or after a deviation), along its edges
        node = lax.cond(synced, lambda n, b: n, lambda n, b: best_node(b), node, belief.states)
        a_ctrl = st.actions[node]
        a_up = upper_action(k_u, true) if _has_upper(model) else a_ctrl
        informs = config.info_steps > 0 or config.risk_std > 0
        a_info, gain = info_action(k_u, belief.states) if informs else (a_ctrl, 0.0)
        if _has_upper(model) and (config.guide_belief > 0 or config.risk_std > 0):
            q_b, r_std = upper_q(jax.random.fold_in(k_f, 1), belief.states)
            a_up = jnp.where(at_belief, jnp.argmax(q_b).astype(jnp.int32), a_up)
            if config.risk_std > 0:
                risky = (r_std[a_up] > config.risk_std) & (gain > config.info_threshold)
                a_up = jnp.where(risky, a_info, a_up)
        a_info = jnp.where(gain > config.info_threshold, a_info, a_up)
        a_rand = jax.random.randint(k_r, (), 0, A, dtype=jnp.int32)
        guided = jnp.where(t < info_steps, a_info, a_up)
        if guided_by_policy:
            a_guide = jnp.asarray(guide.act(jax.random.fold_in(k_r, 1), memory), jnp.int32)
            guided = jnp.where(by_policy, a_guide, guided)
        a = jnp.where(follow, a_ctrl, guided)
        a = jnp.where(jax.random.uniform(k_c) < config.explore_random, a_rand, a)
        a = a.astype(jnp.int32)
        true2, o, _, d = _step(model, k_t, true, a)
        belief2, _ = particles.update(k_f, model, belief, a, o, resample_threshold=1.0)
        if guided_by_policy:
            memory = guide.update(model, memory, a, o)
        out = (belief.states, ~done, node)
        return (belief2, true2, done | d, st.edges[node, o], a == a_ctrl, memory), out

    init = (belief, true, jnp.zeros((), bool), jnp.int32(0), jnp.zeros((), bool),
            guide.init(model) if guided_by_policy else jnp.zeros((), jnp.int32))
    _, (states, valid, best) = lax.scan(body, init, (jax.random.split(k_run, D), jnp.arange(D)))
    return states, valid, best


# ------------------------------------------------------------------- backup
class BackupResult(NamedTuple):
    """What :func:`backup` finds at one belief."""

    q: jax.Array           # float[A]
    action: jax.Array      # int32[]
    edges: jax.Array       # int32[O]
    value: jax.Array       # float[] controller value at b before
    best: jax.Array        # int32[] best node at b before


def _successors(keys, model, st: NVIState, b_states, a, apply_fn, table=None, verify: int = 0, horizon: int = 1,
                shortlist: int = 0, values_at_b=None, boot=None, q_by_networks: bool = False):
    """``(Q(b, a), n*(a, .))``: one simulated step per particle (``keys`` [P]) and, per
    observation, the successor node best on the particles that produced it.

    ``verify`` 0: best by the networks' values. ``verify`` K > 0: the K nodes best by
    the networks for each observation are run (the controller from each, ``horizon``
    steps, then the target networks; the same random numbers for the K) from the
    particles that produced it, and the best by those returns is the successor;
    ``Q`` uses the returns. A network extrapolating far from the states it was trained
    on can overrate a node by many units (and the max over nodes picks such errors);
    the runs do not (``q_by_networks``: ``Q`` takes the chosen successors' network values instead, as
    ``verify`` 0 does; the runs only choose). ``shortlist`` S (with K > 0 and ``0 < S < P``): the networks
    rank the nodes on every ``P // S``-th particle only (S of them; an observation
    none of those produced: by their total); the K candidates still run from all
    ``P``. Valuing every node's network at every particle for every action is
    most of a backup's work (``A N P`` evaluations), and the ranking is only a
    shortlist. ``values_at_b`` (float[N, P], optional): the nodes' values at
    ``b_states`` themselves, used instead of evaluating the networks again when the
    action left every particle's state as it was (RockSample's checks, Tiger's
    listen: most of a backup's actions on RockSample). The same values. ``boot``: the target networks'
    values tabulated, for the runs (:func:`_controller_return`).
    """
    O = model.num_observations
    P = jax.tree.leaves(b_states)[0].shape[0]
    keys, b_states = distributed.constrain((keys, b_states))  # particles split over a mesh's devices
    s2, o, r, d = jax.vmap(lambda k, s: _step(model, k, s, a))(keys, b_states)
    onehot = jax.nn.one_hot(o, O, dtype=DTYPE)                    # [P, O]
    seen = jnp.sum(onehot, axis=0) > 0

    def values(states, cols):
        """float[N, len]: every node's value at states (those of ``b`` if nothing moved)."""
        fresh = lambda: _values_at(apply_fn, st, model, states, table)  # noqa: E731
        if values_at_b is None or table is not None:
            return fresh()
        same = jnp.all(jnp.stack([jnp.all(x == y) for x, y in zip(jax.tree.leaves(states),
                                                                   jax.tree.leaves(_take(b_states, cols)))]))
        return lax.cond(same, lambda: values_at_b[:, cols], fresh)

    if verify > 0 and 0 < shortlist < P:
        sub = _spread(P, shortlist)
        F = jnp.where(d[None, sub], 0.0, values(_take(s2, sub), sub))  # [N, S]
        ranked = jnp.matmul(jnp.where(st.active[:, None], F, 0.0), onehot[sub], precision=HIGHEST)
        ranked = jnp.where(jnp.sum(onehot[sub], axis=0) > 0, ranked, jnp.sum(F, axis=1, keepdims=True))
        score = jnp.where(st.active[:, None], ranked, -jnp.inf)
    else:
        F = values(s2, slice(None))                                   # [N, P]
        F = jnp.where(d[None, :], 0.0, F)
        score = jnp.where(st.active[:, None],
                          jnp.matmul(jnp.where(st.active[:, None], F, 0.0), onehot, precision=HIGHEST), -jnp.inf)
    overall = jnp.argmax(jnp.sum(F, axis=1)).astype(jnp.int32)  # int64 under x64
    if verify <= 0:
        succ = jnp.where(seen, jnp.argmax(score, axis=0), overall).astype(jnp.int32)
        cont = F[succ[o], jnp.arange(P)]
        return jnp.mean(r + _gamma(model) * cont), succ
    K = min(verify, score.shape[0])
    cand = lax.top_k(score.T, K)[1].astype(jnp.int32)             # [O, K] by the networks
    cand = jnp.where(seen[:, None], cand, overall)                # an unseen observation: the best overall
    k_run = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)    # per particle, the same for the K candidates

    def run(k, s, nodes, done):
        g = jax.vmap(lambda n: _controller_return(k, model, st, s, n, horizon, apply_fn, boot))(nodes)
        return jnp.where(done, 0.0, g)
    y = jax.vmap(run)(k_run, s2, cand[o], d)                      # [P, K]
    # [O, K]; fewer than K active: never a free slot
    totals = jnp.where(st.active[cand], jnp.matmul(onehot.T, y, precision=HIGHEST), -jnp.inf)
    pick = jnp.argmax(totals, axis=1)
    succ = cand[jnp.arange(O), pick]
    if q_by_networks and F.shape[1] == P:  # the chosen node's network at each particle, already in F
        cont = F[succ[o], jnp.arange(P)]
    elif q_by_networks:  # F holds the shortlist's particles only: the chosen node's network at every particle
        cont = jax.vmap(lambda n, s: apply_fn(_take(st.params, n), _features(model, jax.tree.map(
            lambda x: x[None], s)))[0])(succ[o], s2)
        cont = jnp.where(d, 0.0, cont)
    else:
        cont = y[jnp.arange(P), pick[o]]
    return jnp.mean(r + _gamma(model) * cont), succ


def backup(key: jax.Array, model: Any, st: NVIState, b_states: Any, apply_fn: Callable,
           table: Optional[jax.Array] = None, config: Optional[Config] = None,
           boot: Optional[jax.Array] = None) -> BackupResult:
    """The MCVI-style backup at a belief of equally weighted particles ``b_states`` [P] (``table``: the node
    values of a tabular model's states, :func:`_value_table`; ``config.verify_successors``: successors checked
    by running the controller, :func:`_successors`, whose runs bootstrap from ``boot`` if given)."""
    verify, horizon, shortlist, q_net = ((config.verify_successors, config.td_steps, config.shortlist_particles,
                                          config.verified_q_by_networks) if config is not None else (0, 1, 0, False))
    A = model.num_actions
    P = jax.tree.leaves(b_states)[0].shape[0]

    F0 = _values_at(apply_fn, st, model, b_states, table)            # [N, P] at b itself

    def per_action(args):
        a, keys = args
        return _successors(keys, model, st, b_states, a, apply_fn, table, verify, horizon, shortlist, F0, boot, q_net)

    keys = jax.random.split(key, (A, P))
    q, succ = lax.map(per_action, (jnp.arange(A, dtype=jnp.int32), keys))
    a_star = jnp.argmax(q).astype(jnp.int32)
    v_old = jnp.mean(F0, axis=1)
    return BackupResult(q, a_star, succ[a_star].astype(jnp.int32), jnp.max(v_old), jnp.argmax(v_old).astype(jnp.int32))


def _fit(p0, x, y, config: Config, apply_fn):
    """``fit_steps`` Adam steps of one node's network on ``(x [B, F], y [B])`` from ``p0``."""
    opt = optax.adam(config.fit_learning_rate)

    def loss(p):
        return 0.5 * jnp.mean((apply_fn(p, x) - y) ** 2)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (p, _), _ = lax.scan(step, (p0, opt.init(p0)), None, length=config.fit_steps)
    return p


def _paired_gain(key, model, st_new: NVIState, n_new, st_old: NVIState, n_old, b_states, config: Config,
                 apply_fn, boot_new=None, boot_old=None):
    """``(returns from (st_new, n_new), whether they beat (st_old, n_old))`` at a belief.

    Both are run from the same states with the same random numbers (``fit_repeats``
    runs per particle of ``td_steps`` steps, then the target networks): the paired
    difference has far less variance than either return. It wins if its mean exceeds
    ``max(improve_tol * (1 + |old|), improve_z * its standard error)``. ``boot_new``, ``boot_old``: the
    target values of the two, tabulated (:func:`_controller_return`).
    """
    R = config.fit_repeats
    P = jax.tree.leaves(b_states)[0].shape[0]
    states = jax.tree.map(lambda x: jnp.repeat(x, R, axis=0), b_states)
    keys, states = distributed.constrain((jax.random.split(key, R * P), states))
    y = jax.vmap(lambda k, s: _controller_return(k, model, st_new, s, n_new, config.td_steps, apply_fn,
                                                 boot_new))(keys, states)
    y_old = jax.vmap(lambda k, s: _controller_return(k, model, st_old, s, n_old, config.td_steps, apply_fn,
                                                     boot_old))(keys, states)
    diff = y - y_old
    se = jnp.std(diff) / jnp.sqrt(jnp.asarray(R * P, DTYPE))
    base = jnp.mean(y_old)
    return y, states, jnp.mean(diff) > jnp.maximum(config.improve_tol * (1 + jnp.abs(base)), config.improve_z * se)


def _refresh_node(key, model, st: NVIState, config: Config, apply_fn, table=None, boot=None) -> NVIState:
    """Re-chooses the edges of one random backed-up node at its home belief, in place.

    The node keeps its action; its successors become the best nodes now (by the
    current networks) for the particles its home belief sends to each observation.
    The change is kept only if the paired simulated returns (:func:`_paired_gain`)
    say it improves the node at that belief. Nodes created early point at what was
    best then; this lets them follow the controller as it improves instead of
    keeping stale (and, for their networks, wrongly valued) branches alive.
    """
    k_n, k_s, k_r = jax.random.split(key, 3)
    A, N = model.num_actions, config.capacity
    eligible = st.active & (jnp.arange(N) >= A)
    n = jax.random.categorical(k_n, jnp.where(eligible, 0.0, -jnp.inf)).astype(jnp.int32)
    b_states = _take(st.home, n)
    P = jax.tree.leaves(b_states)[0].shape[0]
    _, succ = _successors(jax.random.split(k_s, P), model, st, b_states, st.actions[n], apply_fn, table,
                          config.verify_successors, config.td_steps, config.shortlist_particles, boot=boot)
    cand = st._replace(edges=st.edges.at[n].set(succ))
    _, _, better = _paired_gain(k_r, model, cand, n, st, n, b_states, config, apply_fn, boot, boot)
    change = jnp.any(eligible) & better & jnp.any(succ != st.edges[n])
    return lax.cond(change, lambda st: cand._replace(last_used=cand.last_used.at[succ].set(st.iteration)),
                    lambda st: st, st)


def _pool_states(key, st: NVIState, count: int):
    """``count`` states, each a random particle of a random pooled belief."""
    B, Pp = jax.tree.leaves(st.pool)[0].shape[:2]
    k_b, k_p = jax.random.split(key)
    filled = jnp.minimum(st.pool_count, B)
    return jax.tree.map(lambda x: x[jax.random.randint(k_b, (count,), 0, filled),
                                    jax.random.randint(k_p, (count,), 0, Pp)], st.pool)


def _add_node(key, model, st: NVIState, b_states, config: Config, apply_fn, table=None, boot=None):
    """Backs up at a belief; adds the node if its simulated value beats the controller's.

    The candidate node (action ``a*``, edges ``n*(a*, .)``) is put in the first free
    slot and its value at the belief is measured by running the controller from it
    (``fit_repeats`` runs per particle of ``td_steps`` steps, then the target
    networks): unbiased for that controller, unlike the max in ``Q(b, a*)``. If that
    beats the best node's network value by ``improve_tol``, the node is kept and its
    network fitted to those returns and to as many from states of random pooled
    beliefs (warm-started from the best node's network).

    Returns ``(state, table, boot)``: ``table`` (:func:`_value_table`, or None) and ``boot`` (the target
    networks' values, or None) with the new node's row written.
    """
    k_b, k_r, k_p, k_o = jax.random.split(key, 4)
    res = backup(k_b, model, st, b_states, apply_fn, table, config, boot)
    N, R = config.capacity, config.fit_repeats
    P = jax.tree.leaves(b_states)[0].shape[0]
    duplicate = jnp.any(st.active & (st.actions == res.action) & jnp.all(st.edges == res.edges[None, :], axis=1))
    j = jnp.argmin(st.active).astype(jnp.int32)  # the first free slot
    room = ~jnp.all(st.active)
    p0 = _take(st.params, res.best)
    cand = st._replace(actions=st.actions.at[j].set(res.action), edges=st.edges.at[j].set(res.edges),
                       target_params=_set(st.target_params, j, p0))
    # ``boot`` (the target values) serves the candidate's runs as it is: its successors are active nodes, none
    # of which leads back to the free slot j, so no run bootstraps from j's row
    y, states, improves = _paired_gain(k_r, model, cand, j, cand, res.best, b_states, config, apply_fn, boot, boot)
    add = improves & ~duplicate & room

    def do_add(carry):
        st, table, boot = carry
        # off-belief data: states of random pooled beliefs, so that the new network
        # does not extrapolate its value to states where its plan does not apply
        other = _pool_states(k_p, st, R * P)
        y_other = jax.vmap(lambda k, s: _controller_return(k, model, cand, s, j, config.td_steps, apply_fn,
                                                           boot))(jax.random.split(k_o, R * P), other)
        x_all = jnp.concatenate([_features(model, states), _features(model, other)])
        p = _fit(p0, x_all, jnp.concatenate([y, y_other]), config, apply_fn)
        opt_state = jax.tree.map(lambda x: x.at[j].set(0) if x.ndim and x.shape[0] == N else x, st.opt_state)
        used = st.last_used.at[res.edges].set(st.iteration).at[j].set(st.iteration)
        if table is not None:
            row = apply_fn(p, _features(model, jnp.arange(table.shape[1])))
            table = table.at[j].set(row)
            boot = None if boot is None else boot.at[j].set(row)  # the target network is p too
        return st._replace(params=_set(st.params, j, p), target_params=_set(st.target_params, j, p),
                           opt_state=opt_state, actions=st.actions.at[j].set(res.action),
                           edges=st.edges.at[j].set(res.edges), active=st.active.at[j].set(True),
                           home=_set(st.home, j, b_states), last_used=used,
                           num_nodes=st.num_nodes + 1, backups=st.backups + 1), table, boot

    return lax.cond(add, do_add, lambda carry: carry, (st, table, boot))


# -------------------------------------------------------------- train step
def _controller_return(key, model, st: NVIState, state, node, H: int, apply_fn, boot=None):
    """``sum_{t<H} gamma^t r_t + gamma^H fbar_{n_H}(s_H)`` running the controller from (state, node).

    ``boot``: ``fbar`` tabulated (``float[N, S]``, a tabular model's target values, :func:`_value_table`), looked
    up instead of evaluating the target network of ``n_H``: the same values.
    """
    gamma = _gamma(model)

    def body(carry, key):
        s, n, g, disc, done = carry
        s2, o, r, d = _step(model, key, s, st.actions[n])
        g = g + jnp.where(done, 0.0, disc * r)
        return (s2, st.edges[n, o], g, disc * gamma, done | d), None

    init = (state, jnp.asarray(node, jnp.int32), jnp.zeros((), DTYPE), jnp.ones((), DTYPE), jnp.zeros((), bool))
    (s, n, g, disc, done), _ = lax.scan(body, init, jax.random.split(key, H))
    if boot is None:
        v = apply_fn(_take(st.target_params, n), _features(model, jax.tree.map(lambda x: x[None], s)))[0]
    else:
        v = boot[n, s]
    return g + jnp.where(done, 0.0, disc * v)


def train_step(key: jax.Array, model: Any, st: NVIState, config: Config, apply_fn: Callable):
    """One optax step for every active node on the controller's Bellman residual.

    Shapes are fixed by ``config`` (``N`` nodes x ``batch_per_node`` states), so
    under ``jax.jit`` this traces and compiles once. Returns ``(state, loss)``.
    """
    N, Bn, P = config.capacity, config.batch_per_node, config.num_particles
    B = config.pool_capacity
    k_h, k_b, k_p, k_r = jax.random.split(key, 4)
    filled = jnp.minimum(st.pool_count, B)
    use_home = jax.random.uniform(k_h, (N, Bn)) < config.home_fraction
    bidx = jax.random.randint(k_b, (N, Bn), 0, filled)
    pidx = jax.random.randint(k_p, (N, Bn), 0, P)
    rows = jnp.broadcast_to(jnp.arange(N)[:, None], (N, Bn))
    states = jax.tree.map(lambda h, x: jnp.where(use_home.reshape(use_home.shape + (1,) * (x.ndim - 2)),
                                                 h[rows, pidx], x[bidx, pidx]), st.home, st.pool)  # [N, Bn]
    nodes = jnp.broadcast_to(jnp.arange(N, dtype=jnp.int32)[:, None], (N, Bn))
    flat = jax.tree.map(lambda x: x.reshape((N * Bn,) + x.shape[2:]), states)
    # the sampled states (and their random numbers) split over a mesh's devices
    keys, flat, flat_nodes = distributed.constrain((jax.random.split(k_r, N * Bn), flat, nodes.reshape(-1)))
    y = jax.vmap(lambda k, s, n: _controller_return(k, model, st, s, n, config.td_steps, apply_fn))(
        keys, flat, flat_nodes)
    y = lax.stop_gradient(y.reshape(N, Bn))
    x = _features(model, flat).reshape(N, Bn, -1)
    weight = st.active.astype(DTYPE) / jnp.maximum(jnp.sum(st.active), 1).astype(DTYPE)

    def loss_fn(params):
        pred = jax.vmap(apply_fn)(params, x)                                     # [N, Bn]
        return 0.5 * jnp.sum(weight * jnp.mean((pred - y) ** 2, axis=1))

    loss, grads = jax.value_and_grad(loss_fn)(st.params)
    updates, opt_state = _optimizer(config).update(grads, st.opt_state, st.params)
    params = optax.apply_updates(st.params, updates)
    steps = st.steps + 1
    if config.target_ema > 0:  # Polyak averaging: a smoothed iterate, far less noisy than a copy
        target = optax.incremental_update(params, st.target_params, config.target_ema)
    else:
        copy = steps % config.target_period == 0
        target = jax.tree.map(lambda t, p: jnp.where(copy, p, t), st.target_params, params)
    return st._replace(params=params, target_params=target, opt_state=opt_state, steps=steps), loss


# ------------------------------------------------------------------ update
def _write_pool(st: NVIState, states, valid):
    B = jax.tree.leaves(st.pool)[0].shape[0]
    pos = jnp.where(valid, (st.pool_count + jnp.cumsum(valid, dtype=jnp.int32) - 1) % B, B).astype(jnp.int32)
    pool = jax.tree.map(lambda buf, x: buf.at[pos].set(x, mode="drop"), st.pool, states)
    return st._replace(pool=pool, pool_count=st.pool_count + jnp.sum(valid).astype(jnp.int32))


@partial(jax.jit, static_argnames=("config", "apply_fn"))
def explore(key: jax.Array, model: Any, st: NVIState, config: Config, apply_fn: Callable,
            guide: Any = None) -> NVIState:
    """Belief collection and deepest-first backups of ``config.width`` trajectories (``guide``: the guide
    policy of ``config.guide_share``, see :func:`collect`)."""
    table = _value_table(model, st, apply_fn, config)  # the networks do not change here but for new nodes
    boot = _value_table(model, st, apply_fn, config, st.target_params)  # nor do the target networks
    keys_w = jax.random.split(key, config.width)

    def trajectory(w, carry):
        st, table, boot = carry
        k_c, k_b = jax.random.split(keys_w[w])
        states, valid, best = collect(k_c, model, st, config, apply_fn, table, guide)
        st = _write_pool(st, states, valid)
        st = st._replace(last_used=st.last_used.at[jnp.where(valid, best, config.capacity)].set(
            st.iteration, mode="drop"))
        keys = jax.random.split(k_b, config.max_depth)

        def body(i, carry):
            t = config.max_depth - 1 - i
            b = _take(states, t)
            return lax.cond(valid[t], lambda c: _add_node(keys[t], model, c[0], b, config, apply_fn, c[1], c[2]),
                            lambda c: c, carry)

        return lax.fori_loop(0, config.max_depth, body, (st, table, boot))

    # a loop, not unrolled: tracing and compiling do not grow with the width
    st, table, boot = lax.fori_loop(0, config.width, trajectory, (st, table, boot))
    if config.refresh_nodes:  # a loop, not unrolled: tracing 32 copies made compiling slow
        keys_r = jax.random.split(jax.random.fold_in(key, 1), config.refresh_nodes)
        st = lax.fori_loop(0, config.refresh_nodes,
                           lambda i, st: _refresh_node(keys_r[i], model, st, config, apply_fn, table, boot), st)
    return distributed.replicated(st._replace(iteration=st.iteration + 1))


def prune(st: NVIState, model: Any, max_age: int) -> NVIState:
    """Frees the nodes not used in the last ``max_age`` iterations (host-side).

    Kept: the blind nodes, every node that was the best at a collected belief or
    chosen by a backup in the last ``max_age`` iterations, and every node these
    reach along edges (so the kept controller is closed). Freed slots are reused
    by later backups.
    """
    A = model.num_actions
    active = np.asarray(st.active)
    keep = active & (np.asarray(st.last_used) >= int(st.iteration) - max_age)
    keep[:A] = True
    edges = np.asarray(st.edges)
    while True:
        linked = np.zeros_like(keep)
        linked[edges[keep].ravel()] = True
        if not (linked & ~keep).any():
            break
        keep |= linked
    keep &= active
    return st._replace(active=jnp.asarray(keep), num_nodes=jnp.int32(int(keep.sum())))


@partial(jax.jit, static_argnames=("config", "apply_fn"))
def train(key: jax.Array, model: Any, st: NVIState, config: Config, apply_fn: Callable):
    """``config.train_steps`` train steps (a ``lax.scan``); returns ``(state, mean loss)``."""
    def body(st, key):
        return train_step(key, model, st, config, apply_fn)
    st, losses = lax.scan(body, st, jax.random.split(key, config.train_steps))
    return distributed.replicated(st), jnp.mean(losses)


def update(key: jax.Array, model: Any, st: NVIState, config: Config, apply_fn: Callable, guide: Any = None):
    """One NVI step: :func:`explore` then :func:`train`. Returns ``(state, loss)``."""
    k_e, k_t = jax.random.split(key)
    st = explore(k_e, model, st, config, apply_fn, guide)
    return train(k_t, model, st, config, apply_fn)


@partial(jax.jit, static_argnames=("apply_fn", "top", "horizon", "repeats"))
def _start_values(key, model, st: NVIState, apply_fn, top: int, horizon: int, repeats: int = 4):
    """``(cand int32[top], value float[top], stderr float[top])``: the ``top`` nodes best by network value at
    ``b0``, their mean return over ``repeats`` runs from each ``b0`` particle (the same random numbers for every
    candidate) and its standard error."""
    v = jnp.mean(_all_values(apply_fn, st, _features(model, st.b0_states)), axis=1)
    cand = lax.top_k(v, top)[1].astype(jnp.int32)
    P0 = jax.tree.leaves(st.b0_states)[0].shape[0]
    keys = jax.random.split(key, repeats * P0)
    states = jax.tree.map(lambda x: jnp.repeat(x, repeats, axis=0), st.b0_states)
    no_boot = st._replace(target_params=jax.tree.map(jnp.zeros_like, st.target_params))

    def value(n):
        g = jax.vmap(lambda k, s: _controller_return(k, model, no_boot, s, n, horizon, apply_fn))(keys, states)
        return jnp.mean(g), jnp.std(g) / jnp.sqrt(jnp.asarray(g.shape[0], DTYPE))
    vals, se = lax.map(value, cand)
    return cand, jnp.where(jnp.isfinite(v[cand]), vals, -jnp.inf), se  # fewer than top active nodes: the rest lose


def _eval_key(seed: int) -> jax.Array:
    """The fixed key every :func:`snapshot` of a solve is valued with (common random numbers)."""
    return jax.random.fold_in(jax.random.key(seed), 0x5A5)


#: Exact controller evaluation: evaluated exactly when ``N * S * max(K, O)`` is at most this.
MAX_EXACT_ENTRIES = 2 ** 24


def _exact_ok(model: Any, st: NVIState) -> bool:
    """Whether :func:`snapshot` values the controller exactly: a tabular model small enough."""
    if not isinstance(model, TabularPOMDP):
        return False
    _, S, K = model.next_state.shape
    return st.actions.shape[0] * S * max(K, model.num_observations) <= MAX_EXACT_ENTRIES


@partial(jax.jit, static_argnames=("apply_fn",))
@exact
def _exact_start_values(model: TabularPOMDP, st: NVIState, apply_fn) -> jax.Array:
    """float[N]: every node's exact value at ``b0`` (``-inf`` for inactive nodes)."""
    ctrl = Controller(st.actions, st.edges, st.active, st.params, jnp.int32(0), apply_fn)
    v = (exact_alphas(ctrl, model) @ model.initial_belief).astype(DTYPE)
    return jnp.where(st.active, v, -jnp.inf)


def _value_controller(key, model, st: NVIState, apply_fn, top: int = 8,
                      exact: Optional[bool] = None) -> tuple[jax.Array, float, float]:
    """``(start node, value, standard error)`` of the controller in ``st`` (see :func:`snapshot`); host-side."""
    if exact is None:
        exact = _exact_ok(model, st)
    if exact:
        v = _exact_start_values(model, st, apply_fn)
        i = jnp.argmax(v).astype(jnp.int32)
        return i, float(v[i]), 0.0
    from jaxpomdp.simulate import default_horizon
    top = int(min(top, st.actions.shape[0]))  # static: one compilation whatever the number of nodes
    cand, vals, se = _start_values(key, model, st, apply_fn, top, default_horizon(float(np.asarray(model.discount))))
    i = int(jnp.argmax(vals))
    return cand[i], float(vals[i]), float(se[i])


def _saved_snapshots(resume: Checkpoint) -> list:
    """The ``[seconds, iteration, value, stderr]`` rows of a checkpoint (none in one written before they were
    kept); a malformed list is a :class:`~jaxpomdp.checkpoint.CheckpointError`."""
    rows = resume.loop.get("snapshots", [])
    ok = isinstance(rows, list) and all(
        isinstance(r, list) and len(r) == 4 and all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool)
                                                    for x in r) for r in rows)
    if not ok:
        raise CheckpointError(f"{resume.path}: damaged checkpoint (the loop's snapshots are not rows of 4 numbers)")
    return [[float(r[0]), int(r[1]), float(r[2]), float(r[3])] for r in rows]


def _keep(st: NVIState, start, score: float, se: float, iteration: int, z: float = 2.0) -> NVIState:
    """Keeps the controller in ``st`` (valued ``score`` +- ``se``) if it is within ``z`` standard errors of the
    best value seen: the newest such controller is kept, a clearly worse one is not."""
    peak = max(float(st.peak_score), score)
    st = st._replace(peak_score=jnp.asarray(peak, DTYPE))
    if not score >= peak - z * se:
        return st
    return st._replace(best_actions=st.actions, best_edges=st.edges, best_active=st.active, best_params=st.params,
                       best_start=start, best_score=jnp.asarray(score, DTYPE), best_iteration=jnp.int32(iteration))


def snapshot(key: jax.Array, model: Any, st: NVIState, apply_fn: Callable, iteration: int, top: int = 8,
             exact: Optional[bool] = None) -> NVIState:
    """Values the current controller and keeps it in ``st.best_*`` unless it is clearly worse.

    A tabular model (``exact`` None: when ``N * S * max(K, O)`` is at most
    :data:`MAX_EXACT_ENTRIES`; True / False force it) is valued exactly
    (:func:`jaxpomdp.controller.exact_alphas`: the value at ``b0`` of following the
    graph from each active node, which is then the start node). The standard
    error is 0, so the kept controller is the best one any snapshot has seen
    (the newest of equals). Otherwise it is valued by simulation.

    By simulation, the value is that of its best start node: of the ``top`` nodes best by network
    value at ``b0``, the one whose mean simulated return from the fixed ``b0``
    particles (4 runs each, the discount's default horizon, no bootstrap) is
    highest. Every snapshot of a solve uses the same ``key`` and particles, so two
    controllers are compared on the same random numbers. The controller is kept
    if its value is within 2 standard errors of the best value any snapshot has
    had (``peak_score``): the newest of the good ones, not an older one that the
    noise favoured. Host-side (one transfer). Why: backups, edge refreshes and
    pruning each accept changes on noisy local tests, and the controller as a
    whole can get worse for a while (on 4x3.95 its exact value fell from 1.74 to
    0.72 between 160 s and 240 s, measured before home beliefs were kept with their
    nodes; since then snapshots vary by about 0.05); the solve returns the
    controller kept.
    """
    return _keep(st, *_value_controller(key, model, st, apply_fn, top, exact), iteration)


def best_controller(st: NVIState, apply_fn: Callable) -> Controller:
    """The controller kept by :func:`snapshot` (start node included)."""
    return Controller(st.best_actions, st.best_edges, st.best_active, st.best_params, st.best_start, apply_fn)


# ------------------------------------------------------------------- solve
def guide_for(model: Any, config: Config, guide: Any = None) -> Any:
    """The guide policy of ``config.guide_share`` (None when the share is 0).

    ``guide`` if given, else ``model.guide_policy()`` where the model has one (RockSample:
    :class:`~jaxpomdp.problems.rocksample_heuristic.CheckAndSamplePolicy`), else a tabular model's
    QMDP policy (:func:`~jaxpomdp.policy.greedy_qmdp_policy`).

    The policy is checked on the model (:func:`~jaxpomdp.policy.as_policy`: a plain
    Python class will do, a broken one raises :class:`~jaxpomdp.errors.InvalidPolicyError`).

    Raises:
      ConfigError: a share > 0 and no policy to follow, or a ``guide`` with a share of 0 (it would be unused).
    """
    if config.guide_share == 0:
        if guide is not None:
            raise ConfigError("a guide policy was given but Config.guide_share is 0: set guide_share > 0 "
                              "(the share of guided trajectories that follow it)")
        return None
    from jaxpomdp.policy import as_policy
    if guide is not None:
        return as_policy(guide, model, name="guide")
    if callable(getattr(model, "guide_policy", None)):
        return as_policy(model.guide_policy(), model, name="model.guide_policy()")
    if isinstance(model, TabularPOMDP):
        from jaxpomdp.policy import greedy_qmdp_policy
        return greedy_qmdp_policy(model)
    raise ConfigError(f"Config.guide_share = {config.guide_share} needs a guide policy: this "
                      f"{type(model).__name__} has no guide_policy(); pass solve(..., guide=policy) "
                      "(any jaxpomdp.policy policy) or set guide_share=0")


def solve(model: Any, *, time_limit: Optional[float] = 60.0, target_gap: Optional[float] = None, seed: int = 0,
          callback: Optional[Callable] = None, config: Optional[Config] = None,
          network: Optional[Network] = None, max_iterations: Optional[int] = None,
          warmup_steps: Optional[int] = None, checkpoint: Optional[Checkpointer] = None,
          resume: Optional[Checkpoint] = None, stop: Optional[Callable[[], bool]] = None,
          mesh: Optional[Mesh] = None, guide: Any = None) -> SolveResult:
    """Plans a finite network controller by Neural Value Iteration (module docstring).

    Args:
      model: a :class:`~jaxpomdp.model.GenerativePOMDP` (a ``TabularPOMDP`` through
        the protocol, with one-hot or its own ``state_features``; a simulator such
        as :func:`jaxpomdp.problems.rocksample_sim.rocksample_sim`).
      time_limit: seconds of planning, not counting the first compilation
        (``compile_seconds``); None for no limit (then give ``max_iterations``).
      target_gap: stop when ``upper - estimate <= target_gap`` at ``b0`` (only with a
        known upper bound; the estimate is not certified).
      seed: PRNG seed; same seed, same device, same number of iterations: same result
        (with a time limit the number of iterations depends on the machine).
      callback: ``callback(seconds, value_estimate, upper, num_nodes, num_beliefs)``
        after every iteration; return False to stop.
      config: :class:`Config` (default :func:`default_config`).
      network: a :class:`Network` (default: the flax MLP of ``config.hidden``).
      max_iterations: optional cap on iterations.
      warmup_steps: train steps before the first backups (default 200, rounded
        up to whole ``train`` calls): they give the blind nodes their values.
      checkpoint: a :class:`~jaxpomdp.checkpoint.Checkpointer`: the state (node
        bank, network and target parameters, optimizer state, belief pool), the
        PRNG key, the last estimate and the history are written after an
        iteration once its interval has passed, and at the end.
      resume: a :class:`~jaxpomdp.checkpoint.Checkpoint` of ``nvi`` on this model
        with the same ``config``, ``seed`` and network: the solve continues from it
        (no warm-up again; ``time_limit`` and ``max_iterations`` count what was
        done before it). Stopped and resumed, a solve ending by ``max_iterations``
        gives exactly the result of one never stopped.
      stop: polled between iterations; once it returns True the solve stops there
        (``info["stop_reason"]`` ``"stopped"``), writing the checkpoint.
      mesh: a :func:`jaxpomdp.distributed.make_mesh` mesh: the particles of the
        backups and the sampled states of the train step are split over its
        devices, the node networks replicated. Same result as without, up to the
        order of floating-point sums.
      guide: with ``config.guide_share`` > 0, the policy that share of the guided
        trajectories follows (:func:`collect`); default :func:`guide_for`'s.

    Returns:
      A :class:`~jaxpomdp.solvers.SolveResult`: ``policy`` a
      :class:`~jaxpomdp.controller.ControllerPolicy` (its ``controller`` holds the
      node bank), ``lower_bound`` the exact value at ``b0`` of following it from
      its start node where the model is valued exactly (a tabular model,
      :func:`snapshot`; a lower bound on ``V*(b0)`` up to the evaluation's
      tolerance, 1e-6, and rounding) else None, ``upper_bound`` the certified QMDP /
      fully-observable bound where known, ``history`` rows ``(seconds,
      value_estimate, upper, num_nodes, num_beliefs)`` and ``info`` with the
      controller's size (``num_nodes``, ``parameter_bytes``,
      ``alpha_vector_bytes = num_nodes * |S| * 4``), the final ``value_estimate``
      and counts.

    Raises:
      InvalidModelError: a simulator that breaks the ``GenerativePOMDP`` protocol or has no
        ``features`` (:func:`~jaxpomdp.model.as_simulator`; a plain Python class is accepted).
      ConfigError: a ``config`` outside its fields' ranges (:func:`check_config`), a
        ``guide_share`` without a guide policy or a guide without a share (:func:`guide_for`), a
        bank smaller than the number of actions, or one whose state and largest
        working arrays (:func:`memory_estimate`) exceed the smaller of
        :data:`MAX_SOLVER_BYTES` and the memory available (``JAXPOMDP_MAX_MODEL_BYTES``
        sets the limit instead), before anything is allocated.
    """
    if time_limit is None and max_iterations is None:
        raise ValueError("give time_limit or max_iterations")
    check_solve_args(time_limit, target_gap, seed, max_iterations)
    if mesh is not None:
        with distributed.using(mesh):
            return solve(model, time_limit=time_limit, target_gap=target_gap, seed=seed, callback=callback,
                         config=config, network=network, max_iterations=max_iterations, warmup_steps=warmup_steps,
                         checkpoint=checkpoint, resume=resume, stop=stop, guide=guide)
    model = as_simulator(model, features=True)
    gamma = float(np.asarray(model.discount))
    if not 0 <= gamma < 1:
        raise ValueError(f"discount = {gamma!r}: NVI needs 0 <= discount < 1")
    config = check_config(config or default_config(model))
    guide = guide_for(model, config, guide)
    described = "mlp" if network is None else f"{network.apply_fn.__module__}.{network.apply_fn.__qualname__}"
    options = {"config": config._asdict(), "seed": seed, "network": described}
    if guide is not None:
        options["guide"] = f"{type(guide).__module__}.{type(guide).__qualname__}"
    if resume is not None:
        resume.check("nvi", model, options)
    user_model = model
    if network is None:
        network = Network(*mlp(config.hidden, config.value_scale))
    apply_fn = network.apply_fn
    check_model(model)
    model = _with_upper_table(model)
    terms = memory_terms(model, config, network)
    step = max(("networks", "train", "explore"), key=terms.get)  # the steps run one at a time
    largest = max(("state", step), key=terms.get)
    smaller = "a smaller Config." + {  # the fields of the largest part
        "state": "capacity, hidden, num_particles, b0_particles or pool_capacity",
        "networks": "capacity, hidden, num_particles or b0_particles",
        "train": "capacity, batch_per_node, td_steps or hidden",
        "explore": "max_depth, num_particles, td_steps, fit_repeats or verify_successors"}[largest]
    # one-hot features make every network's first layer |S| wide: the state and the networks' activations grow
    one_hot = isinstance(model, TabularPOMDP) and model.state_features is None and largest in ("state", "networks")
    reason = refusal(terms["state"] + terms[step], "NVI's state and activations would need about",
                     MAX_SOLVER_BYTES, f" (state {gib(terms['state'])}, {step} {gib(terms[step])})",
                     hint=(f"give the model state_features (one-hot over its {model.num_states} states now), "
                           f"{smaller}, or use a simulator (e.g. rocksample_sim)") if one_hot else f"give {smaller}")
    if reason is not None:
        raise ConfigError(reason)
    upper, upper_kind = upper_bound_at_b0(model)
    certified = upper_kind in ("qmdp", "fully-observable")

    key = jax.random.key(seed)
    k_init, key = jax.random.split(key)
    k_eval = _eval_key(seed)
    t_compile = time.perf_counter()
    st = init(k_init, model, config, network)
    warm_rounds = max(0, math.ceil((200 if warmup_steps is None else warmup_steps)
                                   / config.train_steps))
    # compile before the clock starts (warm-up training and the two steps)
    # one throw-away call of each compiled step (jit's cache then serves later solves
    # with the same shapes and config without recompiling)
    jax.block_until_ready(explore(key, model, st, config, apply_fn, guide))
    jax.block_until_ready(train(key, model, st, config, apply_fn))
    jax.block_until_ready(_value_at_b0_jit(apply_fn, st, model))
    jax.block_until_ready(snapshot(k_eval, model, st, apply_fn, 0).best_score)

    def explore_c(k, model, st):
        return explore(k, model, st, config, apply_fn, guide)

    def train_c(k, model, st):
        return train(k, model, st, config, apply_fn)

    def value_c(st, model):
        return _value_at_b0_jit(apply_fn, st, model)
    compile_seconds = time.perf_counter() - t_compile

    start = time.perf_counter()
    if resume is None:
        loss = jnp.nan
        for _ in range(warm_rounds):
            key, sub = jax.random.split(key)
            st, loss = train_c(sub, model, st)
        est = float(value_c(st, model)[0])
        history = [(time.perf_counter() - start, est, upper, int(st.num_nodes),
                    int(min(int(st.pool_count), config.pool_capacity)))]
        last = time.perf_counter() - start
        iteration = 0
        snapshots = []
    else:  # the clock counts the planning before the checkpoint
        st = resume.restore(st)
        loop = resume.loop
        key, iteration, est, loss, last = resume.key(), loop["iteration"], loop["estimate"], loop["loss"], loop["last"]
        start -= loop["elapsed"]
        history = [tuple(row) for row in resume.history]
        snapshots = _saved_snapshots(resume)
    stop_reason = "time limit"
    exact_snapshots = _exact_ok(model, st)  # cheap: every iteration

    def elapsed():
        return time.perf_counter() - start

    def build(st, est, loss, iteration, stop_reason, solve_seconds):
        return _result(model, st, est, loss, iteration, stop_reason, solve_seconds, compile_seconds, history,
                       upper, upper_kind, certified, k_eval, apply_fn, config, snapshots)

    def save():
        loop = {"key": key, "iteration": iteration, "estimate": est, "loss": float(loss), "last": last,
                "elapsed": elapsed(), "snapshots": snapshots}
        checkpoint.save("nvi", user_model, options, st, loop, history)

    while True:
        if stopped(stop):
            stop_reason = "stopped"
            break
        if max_iterations is not None and iteration >= max_iterations:
            stop_reason = "max_iterations"
            break
        if time_limit is not None and elapsed() + last > time_limit:
            break
        t_it = time.perf_counter()
        key, k_e, k_t = jax.random.split(key, 3)
        if config.capacity - int(st.num_nodes) < config.width * config.max_depth:
            st = prune(st, model, config.prune_age)
        prev = (st, est, loss)
        st = explore_c(k_e, model, st)
        st, loss = train_c(k_t, model, st)
        est = float(value_c(st, model)[0])
        iteration += 1
        if not (math.isfinite(est) and math.isfinite(float(loss))):
            check_finite("nvi", iteration, {"value estimate at b0 (node networks)": est, "train loss": loss},
                         model=model, last_good=build(*prev, iteration - 1, "numerical error", elapsed()))
        if config.snapshot_every and (exact_snapshots or iteration % config.snapshot_every == 0):
            start_node, score, se = _value_controller(k_eval, model, st, apply_fn, exact=exact_snapshots)
            st = _keep(st, start_node, score, se, iteration)
            # valued exactly (every iteration): recorded every snapshot_every iterations and when the value changes
            if not (exact_snapshots and snapshots) or iteration % config.snapshot_every == 0 \
                    or score != snapshots[-1][2]:
                snapshots.append([elapsed(), iteration, score, se])
        last = time.perf_counter() - t_it
        row = (elapsed(), est, upper, int(st.num_nodes), int(min(int(st.pool_count), config.pool_capacity)))
        history.append(row)
        if checkpoint is not None and checkpoint.due():
            save()
        if callback is not None and callback(*row) is False:
            stop_reason = "callback"
            break
        if target_gap is not None and certified and upper - est <= target_gap:
            stop_reason = "target gap"
            break
    if checkpoint is not None:
        save()
    return build(st, est, loss, iteration, stop_reason, elapsed())


def _result(model, st: NVIState, est, loss, iteration, stop_reason, solve_seconds, compile_seconds, history,
            upper, upper_kind, certified, k_eval, apply_fn, config, snapshots=()) -> SolveResult:
    """The :class:`SolveResult` of a state: the best controller :func:`snapshot` has seen, the last one included
    (only the last one when ``config.snapshot_every`` is 0). ``snapshots``: the solve's ``[seconds, iteration,
    value, stderr]`` rows so far; the final valuation is added to the ones reported."""
    exact = _exact_ok(model, st)
    start, last_score, se = _value_controller(k_eval, model, st, apply_fn, exact=exact)
    if not config.snapshot_every:  # the last controller, whatever its value
        st = st._replace(peak_score=jnp.asarray(-jnp.inf, DTYPE))
    best = _keep(st, start, last_score, se, iteration)
    controller = best_controller(best, apply_fn)
    start_mc = float(best.best_score)
    if int(best.best_iteration) != iteration:  # an earlier controller: its own network estimate
        est = float(_value_at_b0_jit(apply_fn, st._replace(params=best.best_params, active=best.best_active),
                                     model)[0])
    n = int(jnp.sum(controller.active))
    per_node = int(sum(np.prod(x.shape[1:]) * x.dtype.itemsize for x in jax.tree.leaves(st.params)))
    num_states = getattr(model, "num_states", None)
    info = {
        "method": "nvi",
        "iterations": iteration,
        "stop_reason": stop_reason,
        "value_estimate": est,
        "value_estimate_note": "max_n mean f_n over b0 particles; a network estimate, not a certified bound",
        "start_value_mc": start_mc,
        "start_value_kind": "exact" if exact else "simulated",
        "start_value_mc_note": ("exact value at b0 of following the controller from its start node (the best "
                                "active node); tabular model, jaxpomdp.controller.exact_alphas" if exact else
                                "mean return of the controller from its start node over the b0 particles "
                                "(top-8 nodes by network value tried; biased up by the choice, not certified)"),
        "controller_iteration": int(best.best_iteration),
        "controller_iteration_note": "the iteration whose controller is returned: the newest of the snapshots "
                                     "(every snapshot_every iterations and the last) within 2 standard errors "
                                     "of the best start_value_mc (exact values: the best)",
        "last_start_value_mc": last_score,
        "snapshots": [list(row) for row in snapshots]
        + ([] if snapshots and snapshots[-1][1] == iteration else [[solve_seconds, iteration, last_score, se]]),
        "snapshots_note": "[seconds, iteration, value, stderr] of every valuation of the controller (as "
                          "start_value_mc: exact, or simulated from b0 with the same random numbers each time)",
        "upper_bound_kind": upper_kind,
        "upper_bound_value": upper,
        "num_nodes": n,
        "reachable_nodes": int(np.sum(reachable(controller))),
        "capacity": config.capacity,
        "start_node": int(controller.start),
        "parameters_per_node": int(sum(np.prod(x.shape[1:]) for x in jax.tree.leaves(st.params))),
        "parameter_bytes": per_node * n,
        "parameter_bytes_bank": per_node * config.capacity,
        "num_states": None if num_states is None else int(num_states),
        "alpha_vector_bytes": None if num_states is None else int(n) * int(num_states) * 4,
        "train_steps": int(st.steps),
        "nodes_from_backups": int(st.backups),
        "beliefs_collected": int(st.pool_count),
        "final_loss": float(loss),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config._asdict().items()},
    }
    return SolveResult(policy=ControllerPolicy(controller), lower_bound=start_mc if exact else None,
                       upper_bound=upper if certified else None, solve_seconds=solve_seconds,
                       compile_seconds=compile_seconds, history=history, info=info)
