"""Built-in problems, by name.

``get(name)`` returns a :class:`~jaxpomdp.TabularPOMDP`. Names:

* ``tiger``: the tiger problem (Kaelbling, Littman, Cassandra 1998), built in code;
  the same model as the ``Tiger.pomdp`` file of APPL/SARSOP.
* ``three-state``: the three-state system of Baxter & Bartlett's experiments
  (``docs/ALGORITHMS.md`` §3 of the project), with the paper's observation
  features as ``state_features`` and ``observation_features``.
* every model file shipped in this package's ``data/`` folder, by its file name
  in lower case without the ``.pomdp``/``.pomdpx`` suffix (``hallway``,
  ``tiger-grid``, ``4x3.95``, ``rocksample_4_4``, ...); where that name is already
  taken the suffix is kept (``tiger.pomdpx``, ``hallway.pomdpx``). The exact file
  name, in any case, is accepted too.
* ``rocksample:n,k``: RockSample(n, k) built exactly in code
  (:func:`jaxpomdp.problems.rocksample.rocksample`; the literature's layout for
  (4,4), (5,5), (5,7), (7,8), (11,11), else a random layout with seed 0), and
  ``rocksample:n,k:seed`` for the random layout of that seed. These are not
  listed by ``names()`` (there are infinitely many).

``names()`` lists the others.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Callable

import numpy as np

from jaxpomdp.model import TabularPOMDP, from_dense

__all__ = ["get", "names", "tiger", "three_state", "data_file"]

DEFAULT = "tiger"


def tiger(discount: float = 0.95) -> TabularPOMDP:
    """The tiger problem.

    Two doors, a tiger behind one. ``listen`` costs 1 and reports the tiger's side
    correctly with probability 0.85; opening the tiger's door costs 100, the other
    door pays 10; opening a door resets the problem (uniform state, uninformative
    observation).
    """
    T = np.empty((3, 2, 2))
    T[0] = np.eye(2)
    T[1:] = 0.5
    Z = np.empty((3, 2, 2))
    Z[0] = [[0.85, 0.15], [0.15, 0.85]]
    Z[1:] = 0.5
    R = np.array([[-1.0, -1.0], [-100.0, 10.0], [10.0, -100.0]])
    return from_dense(T, Z, R, np.array([0.5, 0.5]), discount,
                      state_names=["tiger-left", "tiger-right"],
                      action_names=["listen", "open-left", "open-right"],
                      observation_names=["obs-left", "obs-right"])


#: Observation features phi(A), phi(B), phi(C) of the three-state system.
THREE_STATE_FEATURES = np.array([[12.0, 6.0], [6.0, 12.0], [5.0, 5.0]]) / 18.0


def three_state(discount: float = 0.95) -> TabularPOMDP:
    """The three-state system of Baxter & Bartlett (2001).

    States A, B, C; actions a1, a2; the reward is 1 for arriving in C, stored as
    the expected reward ``R(s, a) = sum_s' T(s'|s, a) r(s')`` (the same average
    reward eta as the paper's ``r(i_{t+1})``). Each state is observed exactly
    (observations A, B, C); the paper's policy sees the features ``phi(state)``,
    given here as ``state_features`` and, for the observation of each state, as
    ``observation_features``. Always-a2 earns eta = 0.8 (the optimum),
    always-a1 0.2. The discount is only for discounted evaluation.
    """
    P1 = np.array([[0.0, 0.8, 0.2], [0.8, 0.0, 0.2], [0.0, 0.8, 0.2]])
    P2 = np.array([[0.0, 0.2, 0.8], [0.2, 0.0, 0.8], [0.0, 0.2, 0.8]])
    T = np.stack([P1, P2])
    r = np.array([0.0, 0.0, 1.0])
    R = T @ r
    Z = np.broadcast_to(np.eye(3), (2, 3, 3))
    return from_dense(T, Z, R, np.full(3, 1.0 / 3.0), discount,
                      state_names=["A", "B", "C"], action_names=["a1", "a2"],
                      observation_names=["A", "B", "C"],
                      state_features=THREE_STATE_FEATURES,
                      observation_features=THREE_STATE_FEATURES)


_BUILTIN: dict[str, Callable[[], TabularPOMDP]] = {"tiger": tiger, "three-state": three_state}


@functools.lru_cache(maxsize=None)
def _data_files() -> dict[str, str]:
    """Registry name -> file name, for the model files shipped in ``data/``."""
    folder = importlib.resources.files(__package__) / "data"
    files = sorted(p.name for p in folder.iterdir()
                   if p.name.lower().endswith((".pomdp", ".pomdpx", ".pomdp.gz", ".pomdpx.gz")))
    # .pomdp first, so that a .pomdpx twin keeps its suffix
    files.sort(key=lambda f: (".pomdpx" in f.lower(), f.lower()))
    table: dict[str, str] = {}
    for f in files:
        low = f.lower()
        stem = low[:-3] if low.endswith(".gz") else low
        for suffix in (".pomdpx", ".pomdp"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        key = stem if stem not in _BUILTIN and stem not in table else low
        table[key] = f
    return table


def data_file(name: str):
    """The path of a shipped model file, by registry name or file name."""
    table = _data_files()
    key = name.lower()
    if key in table:
        fname = table[key]
    else:
        fname = next((f for f in table.values() if f.lower() == key), None)
        if fname is None:
            raise KeyError(name)
    return importlib.resources.files(__package__) / "data" / fname


def names() -> list[str]:
    """Every built-in problem name."""
    return list(_BUILTIN) + sorted(_data_files())


def get(name: str) -> TabularPOMDP:
    """A built-in problem by name (see the module docstring); case-insensitive.

    Raises:
      KeyError: for an unknown name; the message lists the known ones.
    """
    key = name.lower()
    if key in _BUILTIN:
        return _BUILTIN[key]()
    if key.startswith("rocksample:"):
        from jaxpomdp.problems.rocksample import from_name

        return from_name(key)
    try:
        path = data_file(key)
    except KeyError:
        raise KeyError(f"unknown problem {name!r}; built-in problems are: {', '.join(names())}") from None
    from jaxpomdp.io import load_pomdp  # the io layer sits beside this one

    with importlib.resources.as_file(path) as p:
        return load_pomdp(p)
