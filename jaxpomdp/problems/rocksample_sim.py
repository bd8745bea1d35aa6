"""RockSample(n, k) as a generative model (simulator), for any size.

The same rules, constants, layouts and half-efficiency distances as the exact
tabular builder :func:`jaxpomdp.problems.rocksample.rocksample` (its docstring is
the reference; the constants and layouts are imported from it, not repeated), but
nothing of size ``|S| = n² 2^k + 1`` is ever built, so RockSample(20, 20) (over
4·10^8 states) is as cheap to simulate as RockSample(4, 4).

A state is a :class:`RockState` pytree of int32 scalars ``x, y, rocks`` and a bool
``terminal``; ``rocks`` is the ``k``-bit quality mask of the tabular model (rock
``i`` good iff bit ``k - 1 - i`` is set), so ``k <= 30``. :meth:`RockSampleSim.state_index`
and :meth:`RockSampleSim.from_index` map to and from the tabular state index
``(x n + y) 2^k + rocks`` (terminal ``n² 2^k``), which is how the tests check that
both models agree on every state and action.

Upper bounds on the value:

* :meth:`RockSampleSim.upper_value` (per state, jit-able, *certified*): every good
  rock can pay +10 at most once, no sooner than its Manhattan distance ``d`` (the
  sample action comes after ``d`` moves), at most one reward per step, and the exit
  pays +10 no sooner than step ``n - 1 - x``; all other rewards are ``<= 0``. So with
  the good rocks' distances sorted ``d_(1) <= ... <= d_(m)`` and
  ``t_j = max(d_(j), t_{j-1} + 1)`` (the earliest distinct times, an optimal
  assignment for a decreasing weight ``gamma^t``),
  ``V*(s) <= 10 sum_j gamma^{t_j} + 10 gamma^{n-1-x}``.
* :func:`fully_observable_value` (at ``b0``, host-side, exact): the optimal value of
  the fully observable MDP averaged over the ``2^k`` rock masks of ``b0``, by dynamic
  programming over the sets of good rocks left, ``W(R, p) = max(10 gamma^{n-1-x_p},
  max_{j in R} gamma^{D(p, j)} (10 + gamma W(R - j, j)))`` (``D`` Manhattan distance;
  the robot moves deterministically, so this is the MDP's value). ``V*(b0) <=
  E_{b0} V_MDP(s)``: a certified upper bound (the QMDP value at ``b0``), up to
  floating-point rounding. Cost ``O(2^k k²)``; for ``k > max_exact_rocks`` a Monte
  Carlo estimate over random masks is returned instead (marked ``exact=False``).
* :func:`perfect_sensor_value` (at ``b0``, host-side, exact, ``k <= 15``): the optimal
  value when every check reveals its rock exactly, from any distance, still at the
  cost of a step. Tighter than the fully observable bound (the robot must spend
  steps to learn, and act on what it has learnt so far) and still certified: a
  policy of the real problem can be run with a perfect sensor by drawing each noisy
  reading from the revealed quality. Cost ``O(3^k k²)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxpomdp.precision import exact
from jaxpomdp.problems.rocksample import (BAD_SAMPLE_PENALTY, DEFAULT_HALF_EFFICIENCY, EXIT_REWARD,
                                          GOOD_SAMPLE_REWARD, ILLEGAL_PENALTY, STANDARD_HALF_EFFICIENCY,
                                          STANDARD_LAYOUTS, _check_layout, check_seed, draw_rocks,
                                          layout_for, random_layout)

__all__ = ["RockState", "RockSampleSim", "rocksample_sim", "from_name", "fully_observable_value",
           "FullyObservableValue", "perfect_sensor_value", "MAX_ROCKS"]

#: The most rocks a state's int32 mask holds.
MAX_ROCKS = 30

# moves n, e, s, w (the tabular action order)
_DX = (0, 1, 0, -1)
_DY = (1, 0, -1, 0)


@struct.dataclass
class RockState:
    """One RockSample state (leaves are scalars; stacked/vmapped like any pytree).

    Fields:
      x, y: int32 position (x to the east, y to the north).
      rocks: int32 quality mask (rock ``i`` good iff bit ``k - 1 - i``).
      terminal: bool, True in the absorbing terminal state.
    """

    x: jax.Array
    y: jax.Array
    rocks: jax.Array
    terminal: jax.Array


@struct.dataclass
class RockSampleSim:
    """RockSample(n, k) as a :class:`~jaxpomdp.model.GenerativePOMDP`.

    Build one with :func:`rocksample_sim`. Actions (tabular order) ``0..3`` move
    N/E/S/W, ``4 + i`` checks rock ``i``, ``4 + k`` samples; observations ``0`` =
    ogood, ``1`` = obad.

    Fields:
      rock_x, rock_y: int32[k] rock cells.
      start_x, start_y: int32[] the start cell.
      half_efficiency: float[] the sensor's ``d0``.
      discount: float[] gamma.
      fo_table: optional float32[2^k, k], ``fo_table[R, j]`` the fully observable
        MDP's optimal value just after sampling rock ``j`` with the good rocks ``R``
        left (:meth:`with_fully_observable_table`); with it :meth:`upper_value` is
        the exact MDP value ``V_MDP(s)``.
      n, k: static grid side and number of rocks.

    Example:
      >>> import jax
      >>> sim = rocksample_sim(7, 8)
      >>> s = sim.initial_state(jax.random.key(0))
      >>> (int(s.x), int(s.y)), sim.num_actions, sim.num_observations
      ((0, 3), 13, 2)
    """

    rock_x: jax.Array
    rock_y: jax.Array
    start_x: jax.Array
    start_y: jax.Array
    half_efficiency: jax.Array
    discount: jax.Array
    fo_table: Optional[jax.Array] = None
    n: int = struct.field(pytree_node=False, default=4)
    k: int = struct.field(pytree_node=False, default=4)

    # ----------------------------------------------------------------- sizes
    @property
    def num_actions(self) -> int:
        return 5 + self.k

    @property
    def num_observations(self) -> int:
        return 2

    @property
    def num_states(self) -> int:
        return self.n * self.n * 2 ** self.k + 1

    @property
    def num_features(self) -> int:
        return 2 * self.n + self.k + 1

    @property
    def max_abs_reward(self) -> float:
        return abs(ILLEGAL_PENALTY)

    @property
    def action_names(self):
        return tuple(["amn", "ame", "ams", "amw"] + [f"ac{i}" for i in range(self.k)] + ["as"])

    @property
    def observation_names(self):
        return ("ogood", "obad")

    def action_name(self, a: int) -> str:
        return self.action_names[int(a)]

    def observation_name(self, o: int) -> str:
        return self.observation_names[int(o)]

    def _float(self):
        return jnp.asarray(self.discount).dtype

    # ----------------------------------------------------------- dynamics
    def initial_state(self, key: jax.Array) -> RockState:
        """``s0 ~ b0``: the start cell and a uniform random rock mask."""
        rocks = jax.random.randint(key, (), 0, 2 ** self.k, dtype=jnp.int32) if self.k else jnp.int32(0)
        return RockState(jnp.asarray(self.start_x, jnp.int32), jnp.asarray(self.start_y, jnp.int32),
                         jnp.asarray(rocks, jnp.int32), jnp.zeros((), bool))

    def _rock_here(self, x, y):
        """int32 index of the rock at (x, y), or -1."""
        if self.k == 0:
            return jnp.int32(-1)
        hit = (self.rock_x == x) & (self.rock_y == y)
        return jnp.where(jnp.any(hit), jnp.argmax(hit), -1).astype(jnp.int32)

    def _bit(self, i):
        return jnp.left_shift(jnp.int32(1), jnp.maximum(self.k - 1 - i, 0).astype(jnp.int32))

    def transition(self, state: RockState, action: jax.Array) -> tuple[RockState, jax.Array]:
        """The deterministic part of a step: ``(s', R(s, a))``."""
        dt = self._float()
        a = jnp.asarray(action, jnp.int32)
        x, y, rocks, term = state.x, state.y, state.rocks, state.terminal
        is_move = a < 4
        am = jnp.clip(a, 0, 3)
        xp = x + jnp.asarray(_DX, jnp.int32)[am]
        yp = y + jnp.asarray(_DY, jnp.int32)[am]
        east = is_move & (xp >= self.n)
        illegal_move = is_move & ~east & ((xp < 0) | (yp < 0) | (yp >= self.n))
        is_sample = a == 4 + self.k
        here = self._rock_here(x, y)
        on_rock = here >= 0
        bit = jnp.where(on_rock, self._bit(here), 0)
        was_good = (rocks & bit) != 0
        illegal_sample = is_sample & ~on_rock
        reward = jnp.where(east, EXIT_REWARD,
                           jnp.where(illegal_move | illegal_sample, ILLEGAL_PENALTY,
                                     jnp.where(is_sample, jnp.where(was_good, GOOD_SAMPLE_REWARD,
                                                                    BAD_SAMPLE_PENALTY), 0.0)))
        ends = east | illegal_move | illegal_sample
        moved = is_move & ~ends
        nx = jnp.where(moved & ~term, xp, x)
        ny = jnp.where(moved & ~term, yp, y)
        nrocks = jnp.where(is_sample & on_rock & ~term, rocks & ~bit, rocks)
        reward = jnp.where(term, 0.0, reward).astype(dt)
        return RockState(nx, ny, nrocks, term | ends), reward

    def observation_probs(self, action: jax.Array, next_state: RockState) -> jax.Array:
        """float[2] ``Z(. | a, s')``: (ogood, obad)."""
        dt = self._float()
        a = jnp.asarray(action, jnp.int32)
        is_check = (a >= 4) & (a < 4 + self.k) & ~next_state.terminal
        if self.k == 0:
            p_good = jnp.ones((), dt)
        else:
            i = jnp.clip(a - 4, 0, self.k - 1)
            d = jnp.hypot((next_state.x - self.rock_x[i]).astype(dt), (next_state.y - self.rock_y[i]).astype(dt))
            eff = jnp.exp2(-d / jnp.asarray(self.half_efficiency, dt))
            good = (next_state.rocks & self._bit(i)) != 0
            p_good = jnp.where(is_check, jnp.where(good, eff + (1 - eff) * 0.5, (1 - eff) * 0.5), 1.0).astype(dt)
        return jnp.stack([p_good, 1 - p_good])

    def observation_probability(self, state: RockState, action: jax.Array, next_state: RockState,
                                observation: jax.Array) -> jax.Array:
        """``Z(o | a, s')`` (``state`` unused; there for the particle filter's protocol)."""
        del state
        return self.observation_probs(action, next_state)[jnp.asarray(observation, jnp.int32)]

    def step(self, key: jax.Array, state: RockState, action: jax.Array):
        """``(s', o, r, done)``: the transition, ``o ~ Z(.|a, s')``, ``done = s'`` terminal."""
        nxt, reward = self.transition(state, action)
        p_good = self.observation_probs(action, nxt)[0]
        obs = jnp.where(jax.random.uniform(key, (), p_good.dtype) < p_good, 0, 1).astype(jnp.int32)
        return nxt, obs, reward, nxt.terminal

    # ---------------------------------------------------- particle beliefs
    @exact
    def resample_particles(self, key: jax.Array, states: RockState, weights: jax.Array) -> RockState:
        """``P`` equally weighted particles for weighted ones (:func:`jaxpomdp.particles.update` calls it).

        RockSample's belief is a product over rocks: ``b0`` is uniform over the
        masks, a check's likelihood depends on one rock's quality (and the robot's
        cell, which every particle shares: moves are deterministic), and sampling
        clears one known bit. So when all particles share the cell and terminal
        flag, the particles are taken to stand for the product of their rocks'
        marginals ``m_i`` (which is what this method makes them), the weights'
        logarithm is fitted as ``c + sum_i beta_i bit_i`` (least squares; exact for
        any number of checks since the last resampling), and rock ``i``'s posterior is
        ``sigmoid(logit m_i + beta_i)``; particles of weight 0 (a check from the
        rock's own cell is exact) fix the rock that tells them apart. Where the fit
        fails (weights that are not a product over rocks) the weighted marginals
        are used. Each rock is then good in ``floor(P m'_i + u_i)`` particles
        (``u_i ~ U[0, 1)``: unbiased rounding), chosen by an independent random
        permutation per rock.

        Why: plain systematic resampling keeps only the masks already drawn. With
        128 particles, 5 checks of random rocks of RockSample(15,15) leave about 14
        distinct masks and 10 checks about 7, and rocks never checked then look
        known (marginals off by up to 0.5 from the exact posterior). Taking the
        weighted marginals alone keeps the masks apart but lets every rock's
        marginal drift with its chance correlation with the checked one (12 checks:
        unchecked rocks off by up to 0.35). Particles that differ in cell or
        terminal flag (a belief made by hand) are resampled systematically instead
        (:func:`jaxpomdp.particles.resample`).
        """
        from jaxpomdp import particles
        P = weights.shape[0]
        dt = weights.dtype
        k_sys, k_round, k_perm = jax.random.split(key, 3)
        live = weights > 0
        plain = particles.resample(k_sys, particles.ParticleBelief(
            states, jnp.where(live, jnp.log(jnp.where(live, weights, 1)), -jnp.inf).astype(dt))).states
        if self.k == 0:
            return plain
        shifts = jnp.arange(self.k - 1, -1, -1, dtype=jnp.int32)
        bits = (jnp.right_shift(states.rocks[:, None], shifts) & 1).astype(dt)        # [P, k]
        w = weights / jnp.maximum(jnp.sum(weights), 1e-30)
        weighted = jnp.clip(w @ bits, 0.0, 1.0)
        prior = jnp.mean(bits, axis=0)
        # a rock whose quality splits the live particles from the dead ones is known
        ones_live, ones_dead = jnp.sum(bits * live[:, None], axis=0), jnp.sum(bits * ~live[:, None], axis=0)
        n_live = jnp.sum(live)
        known_good = (ones_live == n_live) & (ones_dead == 0)
        known_bad = (ones_live == 0) & (ones_dead == P - n_live)
        split = jnp.any(~live) & (known_good | known_bad)
        # log-weights additive over rocks: fitted on the live particles
        lw = jnp.log(jnp.where(live, w, 1.0))
        X = jnp.concatenate([jnp.ones((P, 1), dt), bits], axis=1) * live[:, None]
        beta = jnp.linalg.lstsq(X, lw * live)[0]
        fits = jnp.max(jnp.abs(X @ beta - lw * live)) < 1e-3 * (1 + jnp.max(jnp.abs(lw * live)))
        logit = jnp.log(jnp.maximum(prior, 1e-30)) - jnp.log(jnp.maximum(1 - prior, 1e-30))
        fitted = jax.nn.sigmoid(logit + beta[1:])
        fixed = (prior == 0) | (prior == 1)
        post = jnp.where(fixed, prior, jnp.where(split, known_good.astype(dt), fitted))
        marg = jnp.where(fits & (jnp.all(live) | jnp.any(split)), post, weighted)
        marg = jnp.where(marg < 1e-6, 0.0, jnp.where(marg > 1 - 1e-6, 1.0, marg))
        count = jnp.floor(P * marg + jax.random.uniform(k_round, (self.k,), dt))
        rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_perm, (P, self.k)), axis=0), axis=0)
        good = rank < count[None, :]
        rocks = jnp.sum(jnp.where(good, jnp.left_shift(jnp.int32(1), shifts)[None, :], 0), axis=1).astype(jnp.int32)
        same = jnp.all(~live | ((states.x == plain.x[0]) & (states.y == plain.y[0])
                                & (states.terminal == plain.terminal[0])))
        return plain.replace(rocks=jnp.where(same, rocks, plain.rocks))

    # ----------------------------------------------------------- features
    def features(self, state: RockState) -> jax.Array:
        """float[2n + k + 1]: one-hot ``x`` (n), one-hot ``y`` (n), the rock bits (rock 0
        first), the terminal flag.

        A terminal state's features are all zero except the flag. (One-hot
        coordinates let a small network tell cells apart sharply: a plan's value
        changes abruptly with the position, e.g. sampling on or off a rock.)
        """
        dt = self._float()
        bits = (jnp.right_shift(state.rocks, jnp.arange(self.k - 1, -1, -1, dtype=jnp.int32)) & 1).astype(dt)
        live = (~state.terminal).astype(dt)
        f = jnp.concatenate([jax.nn.one_hot(state.x, self.n, dtype=dt), jax.nn.one_hot(state.y, self.n, dtype=dt),
                             bits])
        return jnp.concatenate([f * live, state.terminal.astype(dt)[None]])

    # ------------------------------------------------------- upper bound
    def guide_policy(self):
        """The check-and-sample heuristic with its default thresholds
        (:class:`~jaxpomdp.problems.rocksample_heuristic.CheckAndSamplePolicy`): the policy NVI's
        ``guide_share`` of trajectories follows (:func:`jaxpomdp.solvers.nvi.guide_for`)."""
        from jaxpomdp.problems.rocksample_heuristic import CheckAndSamplePolicy, Thresholds
        return CheckAndSamplePolicy.of(self, Thresholds())

    def with_fully_observable_table(self) -> "RockSampleSim":
        """A copy carrying ``fo_table`` (host DP, ``O(2^k k²)``; 2^k k float32 values)."""
        rocks = np.stack([np.asarray(self.rock_x), np.asarray(self.rock_y)], axis=1).astype(np.int64)
        start = np.array([[int(self.start_x), int(self.start_y)]], np.int64)
        W = _fo_table(self, np.concatenate([rocks.reshape(self.k, 2), start]), np.arange(self.k))
        # after sampling rock j the good rocks left are R (bit of j clear): W[R, j]
        return self.replace(fo_table=jnp.asarray(W[:, :self.k].astype(np.float32)))

    def upper_value(self, state: RockState) -> jax.Array:
        """An upper bound on ``V*(s)`` for the true state (module docstring).

        With ``fo_table``: the fully observable MDP's value, exactly,
        ``max(10 gamma^{n-1-x}, max_{j good} gamma^{D(s, j)} (10 + gamma fo_table[R - j, j]))``.
        Without: the distinct-times bound (certified, looser).
        """
        dt = self._float()
        gamma = jnp.asarray(self.discount, dt)
        exit_time = (self.n - 1 - state.x).astype(dt)
        value = 10.0 * gamma ** exit_time
        if self.k and self.fo_table is not None:
            shifts = jnp.arange(self.k - 1, -1, -1, dtype=jnp.int32)
            good = (jnp.right_shift(state.rocks, shifts) & 1) == 1
            d = (jnp.abs(state.x - self.rock_x) + jnp.abs(state.y - self.rock_y)).astype(dt)
            rest = state.rocks & ~jnp.left_shift(jnp.int32(1), shifts)
            after = self.fo_table[rest, jnp.arange(self.k)].astype(dt)
            cand = jnp.where(good, gamma ** d * (GOOD_SAMPLE_REWARD + gamma * after), -jnp.inf)
            value = jnp.maximum(value, jnp.max(cand))
        elif self.k:
            good = (jnp.right_shift(state.rocks, jnp.arange(self.k - 1, -1, -1, dtype=jnp.int32)) & 1) == 1
            d = (jnp.abs(state.x - self.rock_x) + jnp.abs(state.y - self.rock_y)).astype(dt)
            d = jnp.sort(jnp.where(good, d, jnp.inf))
            j = jnp.arange(self.k, dtype=dt)
            t = j + jax.lax.cummax(d - j)
            value = value + 10.0 * jnp.sum(jnp.where(jnp.isfinite(t), gamma ** jnp.where(jnp.isfinite(t), t, 0), 0))
        return jnp.where(state.terminal, 0.0, value).astype(dt)

    # ----------------------------------------------------- tabular mapping
    def state_index(self, state: RockState) -> jax.Array:
        """The tabular index ``(x n + y) 2^k + rocks`` (terminal: ``n² 2^k``); int32."""
        idx = ((state.x * self.n + state.y) << self.k) | state.rocks
        return jnp.where(state.terminal, self.n * self.n * 2 ** self.k, idx).astype(jnp.int32)

    def from_index(self, index) -> RockState:
        """The state of a tabular index (inverse of :meth:`state_index`; vmappable)."""
        index = jnp.asarray(index, jnp.int32)
        term = index >= self.n * self.n * 2 ** self.k
        cell = jnp.right_shift(index, self.k)
        rocks = index & (2 ** self.k - 1)
        x, y = cell // self.n, cell % self.n
        z = jnp.zeros_like(index)
        return RockState(jnp.where(term, z, x), jnp.where(term, z, y), jnp.where(term, z, rocks), term)


def _sizes(n, k):
    if isinstance(n, bool) or isinstance(k, bool) or int(n) != n or int(k) != k:
        raise ValueError(f"n and k must be integers; got {n!r}, {k!r}")
    if n < 1 or k < 0:
        raise ValueError(f"RockSample({n},{k}): need n >= 1 and k >= 0")
    if k > MAX_ROCKS:
        raise ValueError(f"RockSample({n},{k}): at most {MAX_ROCKS} rocks fit a state's int32 mask")
    if (n * n) * 2 ** k + 1 >= 2 ** 31:
        raise ValueError(f"RockSample({n},{k}) has n²·2^k + 1 states: its tabular index does not fit int32")
    if k > n * n - 1:
        raise ValueError(f"{k} rocks do not fit on the {n * n - 1} free cells of a {n}x{n} grid")


def rocksample_sim(n: int, k: int, *, seed: Optional[int] = None, layout=None,
                   half_efficiency_distance: Optional[float] = None, discount: float = 0.95,
                   dtype=None) -> RockSampleSim:
    """RockSample(n, k) as a simulator; arguments as :func:`jaxpomdp.problems.rocksample.rocksample`.

    ``seed=None`` takes the literature's layout where there is one (else the random
    layout of seed 0); the half-efficiency distance defaults to the instance's
    published value for a standard layout and 20 otherwise, exactly as the tabular
    builder chooses it.
    """
    _sizes(n, k)
    n, k = int(n), int(k)
    lay = _check_layout(n, k, layout) if layout is not None else (
        STANDARD_LAYOUTS[(n, k)] if seed is None and (n, k) in STANDARD_LAYOUTS
        else random_layout_unchecked(n, k, 0 if seed is None else seed))
    standard = STANDARD_LAYOUTS.get((n, k)) == lay
    if half_efficiency_distance is None:
        d0 = STANDARD_HALF_EFFICIENCY[(n, k)] if standard else DEFAULT_HALF_EFFICIENCY
    else:
        d0 = float(half_efficiency_distance)
        if not (d0 > 0 and math.isfinite(d0)):
            raise ValueError(f"half_efficiency_distance must be positive and finite; got {d0}")
    dt = np.dtype(jax.dtypes.canonicalize_dtype(dtype if dtype is not None else jnp.float_))
    rocks = np.asarray(lay.rocks, np.int32).reshape(k, 2)
    return RockSampleSim(rock_x=jnp.asarray(rocks[:, 0]), rock_y=jnp.asarray(rocks[:, 1]),
                         start_x=jnp.int32(lay.start[0]), start_y=jnp.int32(lay.start[1]),
                         half_efficiency=jnp.asarray(np.asarray(d0, dt)),
                         discount=jnp.asarray(np.asarray(discount, dt)), n=n, k=k)


def random_layout_unchecked(n: int, k: int, seed: int):
    """:func:`~jaxpomdp.problems.rocksample.random_layout` without the tabular size cap.

    Same draw (start ``(0, n // 2)``, rocks without replacement by
    ``numpy.random.default_rng(seed)``), so the two agree wherever both apply.
    """
    if seed is not None:
        check_seed(seed)
    try:
        return layout_for(n, k, seed) if seed is not None else random_layout(n, k, 0)
    except ValueError:
        pass
    from jaxpomdp.problems.rocksample import Layout
    start = (0, n // 2)
    return Layout(start, draw_rocks(n, k, start, 0 if seed is None else seed))


def from_name(name: str) -> RockSampleSim:
    """``"rocksample:n,k"`` or ``"rocksample:n,k:seed"`` as a simulator."""
    import re
    m = re.fullmatch(r"rocksample:\s*(\d+)\s*,\s*(\d+)\s*(?::\s*(\d+)\s*)?", name.strip().lower())
    if m is None:
        raise KeyError(f"{name!r} is not a RockSample name; expected 'rocksample:n,k[:seed]'")
    return rocksample_sim(int(m.group(1)), int(m.group(2)),
                          seed=None if m.group(3) is None else int(m.group(3)))


class FullyObservableValue(NamedTuple):
    """``E_{b0} V_MDP(s)``: exact (``stderr = 0``) or a Monte Carlo estimate."""

    value: float
    stderr: float
    exact: bool
    num_masks: int


def _fo_table(sim: RockSampleSim, positions: np.ndarray, rows: np.ndarray):
    """``W(R, p)`` for every subset ``R`` of rocks (bit ``k-1-i`` = rock ``i``), p in positions."""
    k, n = sim.k, sim.n
    gamma = float(sim.discount)
    rx, ry = np.asarray(sim.rock_x, np.int64), np.asarray(sim.rock_y, np.int64)
    px, py = positions[:, 0], positions[:, 1]
    D = np.abs(px[:, None] - rx[None, :]) + np.abs(py[:, None] - ry[None, :])  # [P, k]
    disc = gamma ** D
    exit_v = EXIT_REWARD * gamma ** (n - 1 - px).astype(np.float64)  # [P]
    dt = np.float64 if k <= 16 else np.float32
    W = np.empty((2 ** k, len(positions)), dt)
    masks = np.arange(2 ** k, dtype=np.int64)
    pop = np.zeros(2 ** k, np.int64)
    for i in range(k):
        pop += (masks >> i) & 1
    order = np.argsort(pop, kind="stable")
    bounds = np.searchsorted(pop[order], np.arange(k + 2))
    for level in range(k + 1):
        M = order[bounds[level]:bounds[level + 1]]
        best = np.broadcast_to(exit_v, (len(M), len(positions))).astype(dt)
        for i in range(k):
            bit = 1 << (k - 1 - i)
            has = (M & bit) != 0
            if not has.any():
                continue
            Mi = M[has]
            # after sampling rock i the robot is at rock i: position row rows[i]
            cont = GOOD_SAMPLE_REWARD + gamma * W[Mi & ~bit, rows[i]]
            cand = disc[None, :, i] * cont[:, None]
            best[has] = np.maximum(best[has], cand)
        W[M] = best
    return W


def fully_observable_value(sim: RockSampleSim, *, max_exact_rocks: int = 20, samples: int = 4096,
                           seed: int = 0) -> FullyObservableValue:
    """``E_{b0}[V_MDP(s)]``, an upper bound on ``V*(b0)`` (module docstring).

    Exact by dynamic programming over all ``2^k`` sets of good rocks when ``k <=
    max_exact_rocks`` (RockSample(20, 20): about 2^20 x 21 values, seconds); else
    the mean over ``samples`` random masks with its standard error.
    """
    k = sim.k
    start = np.array([[int(sim.start_x), int(sim.start_y)]], np.int64)
    rocks = np.stack([np.asarray(sim.rock_x), np.asarray(sim.rock_y)], axis=1).astype(np.int64).reshape(k, 2)
    positions = np.concatenate([rocks, start])
    if k <= max_exact_rocks:
        W = _fo_table(sim, positions, np.arange(k))
        return FullyObservableValue(float(np.mean(W[:, k], dtype=np.float64)), 0.0, True, 2 ** k)
    # Monte Carlo: each sampled mask solved on its own good rocks only
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(samples):
        good = np.flatnonzero(rng.integers(0, 2, k))
        sub = rocksample_sim(sim.n, len(good), layout=(tuple(positions[k]), [tuple(r) for r in rocks[good]]),
                             half_efficiency_distance=float(sim.half_efficiency), discount=float(sim.discount))
        pos = np.concatenate([rocks[good], start])
        W = _fo_table(sub, pos, np.arange(len(good)))
        vals.append(W[-1, len(good)])
    vals = np.asarray(vals)
    return FullyObservableValue(float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(len(vals))), False, samples)


def perfect_sensor_value(sim: RockSampleSim, *, max_rocks: int = 15) -> float:
    """``V_PS(b0)``: the optimal value of RockSample with a perfect sensor, a certified upper bound on ``V*(b0)``.

    The relaxation: ``check_i`` reveals rock ``i``'s quality exactly wherever the
    robot stands; everything else (moves, sampling, the exit, the discount, one
    step per action) is unchanged. Any policy of the real problem earns the same
    in it (the reading is drawn from the revealed quality with the real sensor's
    noise), so ``V*(b0) <= V_PS(b0)``; and ``V_PS(b0) <= E_{b0} V_MDP(s)`` (the
    fully observable bound, :func:`fully_observable_value`), the robot now having
    to spend steps on checks and to choose its path from what it knows so far.

    With ``b0`` uniform and independent over the rocks, each rock is then known
    good (``G``), known bad or sampled (``B``), or unknown at even odds (``U``),
    and the position is known. The value is found by dynamic programming over
    ``sigma`` in ``{U, G, B}^k`` and the robot's position ``p`` (the start cell or a
    rock's cell: where the last reward was earned)::

        W(p, sigma) = max( 10 gamma^{n-1-x_p},                                    exit east
                           gamma (W(p, sigma[i=G]) + W(p, sigma[i=B])) / 2,       check i in U
                           gamma^{D(p,j)} (10 + gamma W(j, sigma[j=B])),          go sample j in G
                           gamma^{D(p,j)} (0 + gamma W(j, sigma[j=B])) )          go sample j in U, blind

    (``D`` Manhattan distance; every option lowers the digit sum of ``sigma``
    counted as ``U = 2, G = 1, B = 0``, which orders the computation). Read with
    ``p`` any cell, ``W`` is a super-solution of the perfect-sensor Bellman
    equation over all ``(p, sigma)``: a move changes each option by at most the
    factor ``gamma^{-1}`` (triangle inequality; every option is ``>= 0``), so
    ``gamma W(p', sigma) <= W(p, sigma)``; a check of a known rock, sampling a
    known-bad one and the illegal actions (a penalty, then the end) are no better;
    sampling where the robot stands is the ``D = 0`` option. So ``W >= V_PS``, and
    ``W`` is also the value of a perfect-sensor policy (check, then go straight),
    so ``W(start, U^k) = V_PS(b0)`` exactly, up to floating-point rounding
    (float64 for ``k <= 13``, float32 above: a relative error well under
    ``1e-5``).

    ``3^k (k + 1)`` values: RockSample(15, 15) about 0.9 GB and 25 s on one core;
    ``k > max_rocks`` is refused (``ValueError``).
    """
    k, n = sim.k, sim.n
    if isinstance(max_rocks, bool) or int(max_rocks) != max_rocks:
        raise ValueError(f"max_rocks must be an integer; got {max_rocks!r}")
    dt = np.float64 if k <= 13 else np.float32
    if k > max_rocks:
        need = 3 ** k * (k + 1) * np.dtype(dt).itemsize
        raise ValueError(f"perfect_sensor_value: RockSample({n},{k}) needs 3^{k} x {k + 1} values "
                         f"({need / 2 ** 30:.1f} GiB); at most {max_rocks} rocks (max_rocks)")
    gamma = float(sim.discount)
    rx, ry = np.asarray(sim.rock_x, np.int64).reshape(k), np.asarray(sim.rock_y, np.int64).reshape(k)
    px = np.concatenate([rx, [int(sim.start_x)]])
    py = np.concatenate([ry, [int(sim.start_y)]])
    disc = (gamma ** (np.abs(px[:, None] - rx[None, :]) + np.abs(py[:, None] - ry[None, :]))).astype(dt)  # [k+1, k]
    exit_v = (EXIT_REWARD * gamma ** (n - 1 - px).astype(np.float64)).astype(dt)  # [k+1]
    power = 3 ** np.arange(k, dtype=np.int64)  # rock i is the base-3 digit i: 0 = B, 1 = G, 2 = U
    sigma = np.arange(3 ** k, dtype=np.int64)
    digit_sum = np.zeros(3 ** k, np.int8)
    for i in range(k):
        digit_sum += ((sigma // power[i]) % 3).astype(np.int8)
    order = np.argsort(digit_sum, kind="stable")
    bounds = np.searchsorted(digit_sum[order], np.arange(2 * k + 2))
    del sigma, digit_sum
    W = np.empty((3 ** k, k + 1), dt)
    blind_reward = 0.5 * (GOOD_SAMPLE_REWARD + BAD_SAMPLE_PENALTY)  # an unknown rock, sampled: even odds
    chunk = 1 << 20
    for level in range(2 * k + 1):
        states = order[bounds[level]:bounds[level + 1]]
        for c in range(0, len(states), chunk):
            M = states[c:c + chunk]
            best = np.broadcast_to(exit_v, (len(M), k + 1)).copy()
            for i in range(k):
                d = (M // power[i]) % 3
                unknown, good = d == 2, d == 1
                if unknown.any():
                    Mu = M[unknown]
                    check = (0.5 * gamma) * (W[Mu - power[i]] + W[Mu - 2 * power[i]])
                    blind = (blind_reward + gamma * W[Mu - 2 * power[i], i])[:, None] * disc[None, :, i]
                    best[unknown] = np.maximum(best[unknown], np.maximum(check, blind))
                if good.any():
                    Mg = M[good]
                    go = (GOOD_SAMPLE_REWARD + gamma * W[Mg - power[i], i])[:, None] * disc[None, :, i]
                    best[good] = np.maximum(best[good], go)
            W[M] = best
    return float(W[2 * int(power.sum()), k])
