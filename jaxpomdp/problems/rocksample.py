"""RockSample(n, k) as an exact tabular POMDP, built vectorised in NumPy.

The rules are those of Trey Smith's generator (the zmdp ``gen_RockSample_*``
scripts), whose output for the (4, 4) instance is
``../shared/problems/RockSample_4_4.pomdp``; :func:`rocksample` ``(4, 4)`` is
that file's model exactly (same state order, same names, probabilities equal to
the file's 6-decimal numbers within 5e-7):

* **Grid and rocks.** An ``n x n`` grid, cells ``(x, y)`` with ``x`` to the east
  and ``y`` to the north, both in ``[0, n)``; ``k`` rocks at fixed cells, each
  good or bad. The robot's position is known; the rocks' qualities are not.
* **States.** ``(x, y, r)`` with ``r`` a ``k``-bit mask of the rocks' qualities
  (rock ``i`` good iff bit ``k - 1 - i`` of ``r`` is set: rock 0 is the MOST
  significant bit), plus one absorbing terminal state. State order::

      index(x, y, r) = (x * n + y) * 2**k + r,      terminal = n * n * 2**k

  so ``|S| = n² 2^k + 1``. Names are the generator's ``s<x><y><bits>``
  (``"s021011"``: x=0, y=2, rocks 0, 2, 3 good) and ``"st"`` when ``n <= 10``;
  for larger grids the coordinates would run together, so they are written
  ``s<x>_<y>_<bits>`` (``"s10_3_0110"``).
* **Actions** (in this order): ``amn ame ams amw`` (move north ``y+1``, east
  ``x+1``, south ``y-1``, west ``x-1``), ``ac0 .. ac{k-1}`` (check rock ``i``),
  ``as`` (sample). **Observations**: ``ogood obad``.
* **Moves.** Deterministic, reward 0. Moving off the EAST edge ends the episode
  with reward **+10** (to the terminal state). Moving off any other edge is
  illegal: reward **-100** and the terminal state.
* **Sample.** On a rock's cell: reward +10 if the rock is good, -10 if bad, and
  the rock becomes bad; the robot stays. Where there is no rock: illegal, reward
  **-100** and the terminal state.
* **Check** rock ``i``: the state is unchanged, reward 0; the sensor reports
  ``ogood`` with probability ``eff + (1 - eff) / 2`` if the rock is good and
  ``(1 - eff) / 2`` if it is bad, where ``eff = 2 ** (-d / d0)``, ``d`` the
  Euclidean distance from the robot to the rock and ``d0`` the half-efficiency
  distance. Every other action observes ``ogood`` with probability 1.
* **Terminal state**: absorbing, reward 0, observes ``ogood``.
* Discount 0.95; the initial belief is uniform over the ``2^k`` rock masks at the
  start cell.

**The sensor's half-efficiency distance differs between the published
instances.** The (4, 4) file's check probabilities are exactly
``0.5 (1 + exp(-d))``, i.e. ``d0 = ln 2 ≈ 0.693`` (0.478835 = ogood for a bad
rock at distance sqrt(10), 0.316060 at distance 1); zmdp's generators for (5, 7)
and (7, 8) use ``d0 = 20`` (as do APPL's ``RockSample_7_8.pomdpx`` and DESPOT, on
which the published SARSOP/DESPOT values were measured) and its (5, 5) generator
``d0 = 4``. With ``half_efficiency_distance=None`` each standard instance gets its
own published constant (:data:`STANDARD_HALF_EFFICIENCY`); every other layout gets
:data:`DEFAULT_HALF_EFFICIENCY` (20). Pass the keyword to choose another.

Layouts: the five standard instances of the HSVI/SARSOP/DESPOT literature
(:data:`STANDARD_LAYOUTS`), a seeded random one (:func:`random_layout`) for any
other ``(n, k)`` or when ``seed`` is given, or an explicit ``layout``.

Registered with :func:`jaxpomdp.problems.get` as ``"rocksample:n,k"`` and
``"rocksample:n,k:seed"`` (see :func:`from_name`).
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple, Optional

import numpy as np

from jaxpomdp.errors import is_integer
from jaxpomdp.model import TabularPOMDP

__all__ = ["rocksample", "from_name", "Layout", "standard_layout", "random_layout", "layout_for",
           "STANDARD_LAYOUTS", "STANDARD_HALF_EFFICIENCY", "DEFAULT_HALF_EFFICIENCY",
           "MAX_STATES", "BUILD_BYTES_PER_ENTRY", "MAX_TABLE_BYTES", "check_seed",
           "draw_rocks"]

#: Rewards of the generator.
EXIT_REWARD = 10.0
ILLEGAL_PENALTY = -100.0
GOOD_SAMPLE_REWARD = 10.0
BAD_SAMPLE_PENALTY = -10.0

#: The largest model :func:`rocksample` builds (about 2^27 states, some GiB of arrays).
MAX_STATES = 2 ** 27
#: Peak host memory of :func:`rocksample` per (action, state) pair, bytes: the build's NumPy arrays, the
#: canonical form's float64 copies and the model (measured 150-180 for (11,11), (12,12) and (1500,0)).
BUILD_BYTES_PER_ENTRY = 192
#: :func:`rocksample` refuses a table that would need more than this to build (or more than the memory
#: available), unless ``JAXPOMDP_MAX_MODEL_BYTES`` sets the limit, as the model-file readers do.
MAX_TABLE_BYTES = 4 * 2 ** 30


class Layout(NamedTuple):
    """Where the robot starts and where the rocks are, as 0-based ``(x, y)`` cells."""

    start: tuple[int, int]
    rocks: tuple[tuple[int, int], ...]


#: The layouts of the literature, ``(n, k) -> Layout`` (docs/BENCHMARKS.md).
STANDARD_LAYOUTS: dict[tuple[int, int], Layout] = {
    (4, 4): Layout((0, 2), ((3, 1), (2, 1), (1, 3), (1, 0))),
    (5, 5): Layout((0, 2), ((2, 4), (0, 4), (3, 3), (2, 2), (4, 1))),
    (5, 7): Layout((0, 2), ((1, 0), (2, 1), (1, 2), (2, 2), (4, 2), (0, 3), (3, 4))),
    (7, 8): Layout((0, 3), ((2, 0), (0, 1), (3, 1), (6, 3), (2, 4), (3, 4), (5, 5), (1, 6))),
    (11, 11): Layout((0, 5), ((0, 3), (0, 7), (1, 8), (2, 4), (3, 3), (3, 8), (4, 3), (5, 8),
                              (6, 1), (9, 3), (9, 9))),
}

#: The sensor's half-efficiency distance ``d0`` of each standard instance as published:
#: (4, 4) from RockSample_4_4.pomdp (``eff = exp(-d)``), (5, 5) zmdp's generator,
#: (5, 7) and (7, 8) zmdp's generators and APPL's pomdpx, (11, 11) APPL/DESPOT.
STANDARD_HALF_EFFICIENCY: dict[tuple[int, int], float] = {
    (4, 4): math.log(2.0),
    (5, 5): 4.0,
    (5, 7): 20.0,
    (7, 8): 20.0,
    (11, 11): 20.0,
}

#: ``d0`` for layouts other than the standard ones.
DEFAULT_HALF_EFFICIENCY = 20.0


def standard_layout(n: int, k: int) -> Layout:
    """The literature's layout of RockSample(n, k). Raises KeyError for others."""
    try:
        return STANDARD_LAYOUTS[(int(n), int(k))]
    except KeyError:
        raise KeyError(f"RockSample({n},{k}) has no standard layout; standard instances are "
                       + ", ".join(f"({a},{b})" for a, b in STANDARD_LAYOUTS)) from None


def random_layout(n: int, k: int, seed: int = 0) -> Layout:
    """A reproducible random layout: start ``(0, n // 2)``, ``k`` distinct rock cells.

    The rocks are drawn without replacement from the cells other than the start
    (``numpy.random.default_rng(seed)``), in the order drawn.
    """
    _check_size(n, k)
    check_seed(seed)
    start = (0, n // 2)
    if k > n * n - 1:
        raise ValueError(f"{k} rocks do not fit on the {n * n - 1} free cells of a {n}x{n} grid")
    return Layout(start, draw_rocks(n, k, start, seed))


def draw_rocks(n: int, k: int, start, seed: int) -> tuple:
    """``k`` distinct cells other than ``start`` of an ``n x n`` grid, by ``numpy.random.default_rng(seed)``.

    The draw of ``choice(cells, k, replace=False)`` over the ``n² - 1`` cells but the start in
    increasing order, without building that list (12 GiB for ``n = 40000``).
    """
    skip = start[0] * n + start[1]
    idx = np.random.default_rng(seed).choice(n * n - 1, size=k, replace=False)
    chosen = idx + (idx >= skip)
    return tuple((int(c) // n, int(c) % n) for c in chosen)


def layout_for(n: int, k: int, seed: Optional[int] = None) -> Layout:
    """The standard layout when ``seed`` is None and there is one, else :func:`random_layout`."""
    if seed is None and (n, k) in STANDARD_LAYOUTS:
        return STANDARD_LAYOUTS[(n, k)]
    return random_layout(n, k, 0 if seed is None else seed)


def check_seed(seed) -> int:
    """A layout seed as an ``int``; ValueError unless it is a non-negative integer (NumPy's own
    errors for ``-1`` or ``1.5`` name its ``SeedSequence``, not the argument)."""
    if not is_integer(seed) or seed < 0:
        raise ValueError(f"a layout seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def _check_size(n, k):
    if isinstance(n, bool) or isinstance(k, bool) or int(n) != n or int(k) != k:
        raise ValueError(f"n and k must be integers; got {n!r}, {k!r}")
    if n < 1 or k < 0:
        raise ValueError(f"RockSample({n},{k}): need n >= 1 and k >= 0")
    if k > 62 or n * n * 2 ** k + 1 > MAX_STATES:
        raise ValueError(f"RockSample({n},{k}) has n²·2^k + 1 = {n * n * 2 ** k + 1} states; "
                         f"at most {MAX_STATES} are built")


def _check_layout(n: int, k: int, layout) -> Layout:
    try:
        start, rocks = layout
        start = (int(start[0]), int(start[1]))
        rocks = tuple((int(x), int(y)) for x, y in rocks)
    except (TypeError, ValueError):
        raise ValueError("layout must be (start, rocks): start an (x, y) cell, rocks a sequence "
                         f"of (x, y) cells; got {layout!r}") from None
    if len(rocks) != k:
        raise ValueError(f"layout has {len(rocks)} rocks; RockSample({n},{k}) needs {k}")
    for what, (x, y) in [("start", start)] + [(f"rock {i}", c) for i, c in enumerate(rocks)]:
        if not (0 <= x < n and 0 <= y < n):
            raise ValueError(f"{what} cell ({x}, {y}) is outside the {n}x{n} grid")
    if len(set(rocks)) != k:
        raise ValueError(f"two rocks share a cell in {rocks}")
    return Layout(start, rocks)


def _state_names(n: int, k: int) -> list[str]:
    bits = [format(r, f"0{k}b") if k else "" for r in range(2 ** k)]
    sep = "" if n <= 10 else "_"
    names = [f"s{x}{sep}{y}{sep}{b}" for x in range(n) for y in range(n) for b in bits]
    names.append("st")
    return names


def rocksample(n: int, k: int, *, seed: Optional[int] = None, layout=None,
               half_efficiency_distance: Optional[float] = None, discount: float = 0.95,
               dtype=None) -> TabularPOMDP:
    """The RockSample(n, k) POMDP, exactly, as a :class:`~jaxpomdp.TabularPOMDP`.

    See the module docstring for the rules and the state order. Every transition
    is deterministic (``K = 1`` successor per ``(s, a)``); RockSample(7, 8)
    (12,545 states) builds in well under a second, RockSample(11, 11) (247,809
    states) in about a second.

    Args:
      n: the grid's side.
      k: the number of rocks.
      seed: None for the standard layout of ``(n, k)`` (a random layout with seed 0
        when there is none); an int for :func:`random_layout` with that seed.
      layout: ``(start, rocks)`` cells, overriding ``seed``.
      half_efficiency_distance: the sensor's ``d0``; None: the instance's published
        value (:data:`STANDARD_HALF_EFFICIENCY`; ``ln 2`` for (4, 4)) for a
        standard layout, else :data:`DEFAULT_HALF_EFFICIENCY`.
      discount: the discount factor (0.95 in the literature).
      dtype: float dtype of the model's arrays (JAX's default float by default).

    Example:
      >>> m = rocksample(4, 4)
      >>> m.num_states, m.num_actions, m.num_observations, m.state_names[32]
      (257, 9, 2, 's020000')
    """
    _check_size(n, k)
    n, k = int(n), int(k)
    if layout is not None:
        lay = _check_layout(n, k, layout)
    else:
        lay = layout_for(n, k, seed)
    standard = STANDARD_LAYOUTS.get((n, k)) == lay
    if half_efficiency_distance is None:
        d0 = STANDARD_HALF_EFFICIENCY[(n, k)] if standard else DEFAULT_HALF_EFFICIENCY
    else:
        d0 = float(half_efficiency_distance)
        if not (d0 > 0 and math.isfinite(d0)):
            raise ValueError(f"half_efficiency_distance must be positive and finite; got {d0}")

    R = 2 ** k
    S0 = n * n * R          # non-terminal states
    S = S0 + 1
    term = S0
    A = 4 + k + 1
    from jaxpomdp.io.limits import refusal
    reason = refusal(BUILD_BYTES_PER_ENTRY * A * S, f"RockSample({n},{k}) as a table ({S:,} states, {A} actions) "
                     "needs about", MAX_TABLE_BYTES, " to build",
                     hint="build it as a simulator instead (jaxpomdp.problems.rocksample_sim; NVI plans on it, "
                          "on the command line with --solver nvi)")
    if reason:
        raise ValueError(reason)
    idx = np.arange(S0, dtype=np.int64)
    cell = idx >> k
    mask = idx & (R - 1)
    x, y = cell // n, cell % n

    ns = np.empty((A, S), np.int64)
    rew = np.zeros((A, S), np.float64)
    good = np.zeros((A, S), np.float64)   # P(ogood | a, s')
    ns[:, term] = term
    good[:, :] = 1.0

    # moves: n e s w
    for a, (dx, dy) in enumerate([(0, 1), (1, 0), (0, -1), (-1, 0)]):
        xp, yp = x + dx, y + dy
        east = xp >= n
        illegal = ~east & ((xp < 0) | (yp < 0) | (yp >= n))
        ok = ~east & ~illegal
        ns[a, :S0] = np.where(ok, ((xp * n + yp) << k) | mask, term)
        rew[a, :S0] = np.where(east, EXIT_REWARD, np.where(illegal, ILLEGAL_PENALTY, 0.0))

    # checks: the state is unchanged; the observation depends on the state arrived in
    rocks = np.asarray(lay.rocks, np.int64).reshape(k, 2)
    for i in range(k):
        a = 4 + i
        ns[a, :S0] = idx
        d = np.hypot(x - rocks[i, 0], y - rocks[i, 1])
        eff = np.exp2(-d / d0)
        is_good = (mask >> (k - 1 - i)) & 1
        good[a, :S0] = np.where(is_good == 1, eff + (1.0 - eff) * 0.5, (1.0 - eff) * 0.5)

    # sample
    a = 4 + k
    rock_at = np.full(n * n, -1, np.int64)
    if k:
        rock_at[rocks[:, 0] * n + rocks[:, 1]] = np.arange(k)
    which = rock_at[cell]
    on_rock = which >= 0
    bit = np.where(on_rock, np.left_shift(1, np.maximum(k - 1 - which, 0)), 0)
    was_good = (mask & bit) != 0
    ns[a, :S0] = np.where(on_rock, idx & ~bit, term)
    rew[a, :S0] = np.where(on_rock, np.where(was_good, GOOD_SAMPLE_REWARD, BAD_SAMPLE_PENALTY),
                           ILLEGAL_PENALTY)

    obs = np.stack([good, 1.0 - good], axis=-1)
    b0 = np.zeros(S)
    start = (lay.start[0] * n + lay.start[1]) * R
    b0[start:start + R] = 1.0 / R
    actions = ["amn", "ame", "ams", "amw"] + [f"ac{i}" for i in range(k)] + ["as"]
    return TabularPOMDP.create(ns[:, :, None], np.ones((A, S, 1)), obs, rew, b0, discount,
                               state_names=_state_names(n, k), action_names=actions,
                               observation_names=["ogood", "obad"], dtype=dtype)


_NAME = re.compile(r"rocksample:\s*(\d+)\s*,\s*(\d+)\s*(?::\s*(\d+)\s*)?")


def from_name(name: str) -> TabularPOMDP:
    """Builds ``"rocksample:n,k"`` (standard or seed-0 layout) or ``"rocksample:n,k:seed"``.

    Raises:
      KeyError: the name does not have that form.
      ValueError: the instance cannot be built (too large, too many rocks).
    """
    m = _NAME.fullmatch(name.strip().lower())
    if m is None:
        raise KeyError(f"{name!r} is not a RockSample name; expected 'rocksample:n,k' or "
                       "'rocksample:n,k:seed' (e.g. 'rocksample:7,8')")
    n, k = int(m.group(1)), int(m.group(2))
    seed = None if m.group(3) is None else int(m.group(3))
    return rocksample(n, k, seed=seed)
