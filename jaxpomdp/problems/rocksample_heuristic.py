"""A check-and-sample heuristic for RockSample: a yardstick for seeded layouts.

The literature's reference values (SARSOP, DESPOT) exist only for the standard
layouts; a seeded layout such as ``rocksample:15,15`` has none, and layouts differ
a lot in how much can be earned (the fully observable bound of
``rocksample_sim(15, 15, seed=s)`` ranges from 25 to 34 over s = 0..29). This
policy gives any layout a reproducible reference that needs no planning: the
kind of hand-written policy a planner should beat.

:class:`CheckAndSamplePolicy` tracks the exact belief, which in RockSample is a
product of one Bernoulli per rock (the position is known and the rocks are
independent under ``b0``), and at every step:

1. samples the rock it stands on if that rock is still there and *worth sampling*
   (``p >= sample_at``, or ``p >= 0.5`` once ``max_checks`` checks of it are spent);
2. otherwise scores each rock still *live* (not sampled, ``p > discard_below``, and
   not given up after ``max_checks`` checks with ``p < 0.5``) by a one-rock tour,
   ``gamma^d v + 10 gamma^(d + n - 1 - x_rock)`` (``d`` the Manhattan distance,
   ``v = 10 (2p - 1)`` for a rock worth sampling, ``10 p`` for one still to be
   checked), against exiting now, ``10 gamma^(n - 1 - x)``;
3. exits east if no tour beats exiting; otherwise, if the best rock is still
   uncertain, within ``check_within`` steps and checked fewer than ``max_checks``
   times, checks it; else moves toward it (east/west first, then north/south).

:func:`tune` picks the four thresholds from a small grid by simulation on one set of
episodes; :func:`reference` then evaluates the chosen policy on other episodes, so
its interval is not biased by the choice. Everything is pure JAX: the policy is a
:mod:`jaxpomdp.policy` policy (``init``/``act``/``update``) run by
:func:`jaxpomdp.simulate.evaluate` on the same simulator the planners use.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxpomdp import simulate
from jaxpomdp.problems.rocksample import EXIT_REWARD, GOOD_SAMPLE_REWARD
from jaxpomdp.problems.rocksample_sim import RockSampleSim, RockState

__all__ = ["Thresholds", "CheckAndSamplePolicy", "GRID", "tune", "reference", "Reference"]


class Thresholds(NamedTuple):
    """The heuristic's four settings (see the module docstring)."""

    sample_at: float = 0.9
    discard_below: float = 0.1
    check_within: int = 10
    max_checks: int = 4


#: The grid :func:`tune` searches: 3 x 3 x 4 x 3 = 108 settings.
GRID = dict(sample_at=(0.8, 0.9, 0.95), discard_below=(0.05, 0.1, 0.2), check_within=(3, 6, 10, 30),
            max_checks=(2, 4, 8))


class Memory(NamedTuple):
    """The policy's memory: position, the belief ``p[i] = P(rock i good)``, rocks sampled, checks spent."""

    x: jax.Array
    y: jax.Array
    p: jax.Array
    sampled: jax.Array
    checks: jax.Array


@struct.dataclass
class CheckAndSamplePolicy:
    """The check-and-sample heuristic on a :class:`~jaxpomdp.problems.rocksample_sim.RockSampleSim`.

    Fields:
      sim: the simulator (its layout, sensor and discount).
      sample_at, discard_below: float[] belief thresholds.
      check_within, max_checks: int32[] the farthest a rock is checked from, and the
        most checks spent on one rock.

    Leaves are arrays, so one compiled evaluation serves every setting of the grid.

    Example:
      >>> import jax
      >>> from jaxpomdp.problems.rocksample_sim import rocksample_sim
      >>> sim = rocksample_sim(7, 8)
      >>> pol = CheckAndSamplePolicy.of(sim, Thresholds())
      >>> int(pol.act(jax.random.key(0), pol.init(sim)))  # rock 4 at (2, 4), 3 steps away: check it
      8
    """

    sim: RockSampleSim
    sample_at: jax.Array
    discard_below: jax.Array
    check_within: jax.Array
    max_checks: jax.Array

    @classmethod
    def of(cls, sim: RockSampleSim, t: Thresholds = Thresholds()) -> "CheckAndSamplePolicy":
        if not 0.5 <= t.sample_at <= 1 or not 0 <= t.discard_below <= 0.5:
            raise ValueError(f"need 0.5 <= sample_at <= 1 and 0 <= discard_below <= 0.5; got {t}")
        if t.check_within < 0 or t.max_checks < 0:
            raise ValueError(f"check_within and max_checks must be >= 0; got {t}")
        dt = sim.discount.dtype
        return cls(sim, jnp.asarray(t.sample_at, dt), jnp.asarray(t.discard_below, dt),
                   jnp.asarray(t.check_within, jnp.int32), jnp.asarray(t.max_checks, jnp.int32))

    def init(self, model: Any) -> Memory:
        del model
        s, k = self.sim, self.sim.k
        return Memory(jnp.asarray(s.start_x, jnp.int32), jnp.asarray(s.start_y, jnp.int32),
                      jnp.full((k,), 0.5, s.discount.dtype), jnp.zeros((k,), bool), jnp.zeros((k,), jnp.int32))

    def _judged(self, m: Memory):
        spent = m.checks >= self.max_checks
        worth = (m.p >= self.sample_at) | (spent & (m.p >= 0.5))
        live = ~m.sampled & (m.p > self.discard_below) & ~(spent & (m.p < 0.5))
        return worth, live

    def act(self, key: jax.Array, m: Memory) -> jax.Array:
        del key
        s, k = self.sim, self.sim.k
        if k == 0:  # nothing to sample: walk east
            return jnp.int32(1)
        gamma = s.discount
        worth, live = self._judged(m)
        here = (s.rock_x == m.x) & (s.rock_y == m.y)
        sample_here = jnp.any(here & ~m.sampled & worth)
        d = jnp.abs(s.rock_x - m.x) + jnp.abs(s.rock_y - m.y)
        v = jnp.where(worth, GOOD_SAMPLE_REWARD * (2 * m.p - 1), GOOD_SAMPLE_REWARD * m.p)
        tour = gamma ** d * v + EXIT_REWARD * gamma ** (d + s.n - 1 - s.rock_x)
        score = jnp.where(live, tour, -jnp.inf)
        j = jnp.argmax(score)
        leave = score[j] <= EXIT_REWARD * gamma ** (s.n - 1 - m.x)
        check = ~worth[j] & (d[j] <= self.check_within) & (m.checks[j] < self.max_checks)
        dx, dy = s.rock_x[j] - m.x, s.rock_y[j] - m.y
        move = jnp.where(dx > 0, 1, jnp.where(dx < 0, 3, jnp.where(dy > 0, 0, 2)))
        a = jnp.where(sample_here, 4 + k, jnp.where(leave, 1, jnp.where(check, 4 + j, move)))
        return a.astype(jnp.int32)

    def update(self, model: Any, m: Memory, action: jax.Array, observation: jax.Array) -> Memory:
        del model
        s, k = self.sim, self.sim.k
        a = jnp.asarray(action, jnp.int32)
        is_move = a < 4
        am = jnp.clip(a, 0, 3)
        x = jnp.where(is_move, m.x + jnp.asarray((0, 1, 0, -1), jnp.int32)[am], m.x)
        y = jnp.where(is_move, m.y + jnp.asarray((1, 0, -1, 0), jnp.int32)[am], m.y)
        if k == 0:
            return m._replace(x=x, y=y)
        here = (s.rock_x == m.x) & (s.rock_y == m.y)
        sampled = m.sampled | ((a == 4 + k) & here)
        # a check: Bayes' rule with the simulator's own sensor, for the rock good and bad
        i = jnp.clip(a - 4, 0, k - 1)
        is_check = (a >= 4) & (a < 4 + k)
        full, term = jnp.int32(2 ** k - 1), jnp.zeros((), bool)
        like_good = s.observation_probs(a, RockState(x, y, full, term))[observation]
        like_bad = s.observation_probs(a, RockState(x, y, jnp.int32(0), term))[observation]
        pi = m.p[i]
        post = pi * like_good / jnp.maximum(pi * like_good + (1 - pi) * like_bad, jnp.finfo(pi.dtype).tiny)
        p = jnp.where(is_check, m.p.at[i].set(post), m.p)
        checks = jnp.where(is_check, m.checks.at[i].add(1), m.checks)
        return Memory(x, y, p, sampled, checks)


def _evaluate_all(sim: RockSampleSim, settings: Sequence[Thresholds], key: jax.Array, episodes: int,
                  horizon: Optional[int]):
    return [simulate.evaluate(key, sim, CheckAndSamplePolicy.of(sim, t), num_episodes=episodes, horizon=horizon)
            for t in settings]


def tune(sim: RockSampleSim, key: jax.Array, *, episodes: int = 500, grid: Optional[dict] = None,
         horizon: Optional[int] = None) -> tuple[Thresholds, float]:
    """The grid's setting with the highest mean return over ``episodes`` episodes of ``key``
    (every setting on the same episodes); returns it and that (optimistically biased) mean."""
    grid = GRID if grid is None else grid
    settings = [Thresholds(*v) for v in itertools.product(*(grid[f] for f in Thresholds._fields))]
    means = [float(ev.mean) for ev in _evaluate_all(sim, settings, key, episodes, horizon)]
    best = int(np.argmax(means))
    return settings[best], means[best]


class Reference(NamedTuple):
    """What :func:`reference` found: the chosen thresholds, their evaluation on fresh episodes
    (:class:`~jaxpomdp.simulate.Evaluation`), and the tuning mean that chose them."""

    thresholds: Thresholds
    evaluation: simulate.Evaluation
    tuning_mean: float


def reference(sim: RockSampleSim, seed: int = 0, *, tune_episodes: int = 500, episodes: int = 2000,
              grid: Optional[dict] = None, horizon: Optional[int] = None) -> Reference:
    """Tunes the heuristic on ``tune_episodes`` episodes, then evaluates the chosen setting on
    ``episodes`` *other* episodes (a key split off the same seed): an unbiased 95% interval."""
    k_tune, k_eval = jax.random.split(jax.random.key(seed))
    best, tuned = tune(sim, k_tune, episodes=tune_episodes, grid=grid, horizon=horizon)
    ev = simulate.evaluate(k_eval, sim, CheckAndSamplePolicy.of(sim, best), num_episodes=episodes, horizon=horizon)
    return Reference(best, ev, tuned)
