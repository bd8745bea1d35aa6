"""Tests for the Cassandra ``.pomdp`` reader and writer (jaxpomdp/io/cassandra.py).

The reader must read the whole format and turn every malformed input into a
``PomdpFormatError`` naming file, line, column and what was expected.
"""

from __future__ import annotations

import gzip
import re
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxpomdp import PomdpFormatError, TabularPOMDP, dense_transitions, from_dense, validate
from jaxpomdp.io import cassandra, limits, dumps_pomdp, load_pomdp, loads_pomdp, save_pomdp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "problems"

# name: (|S|, |A|, |O|, discount), from SOURCES.md
TABLE = {
    "1d.POMDP": (4, 2, 2, 0.75),
    "4x3.95.POMDP": (11, 4, 6, 0.95),
    "4x4.95.pomdp": (16, 4, 2, 0.95),
    "Hallway.pomdp": (60, 5, 21, 0.95),
    "RockSample_4_4.pomdp": (257, 9, 2, 0.95),
    "Tiger.pomdp": (2, 3, 2, 0.95),
    "cheese.95.POMDP": (11, 4, 7, 0.95),
    "milos-aaai97.pomdp": (20, 6, 8, 0.9),
    "mit.pomdp": (204, 4, 28, 0.99),
    "network.pomdp": (7, 4, 2, 0.95),
    "paint.95.pomdp": (4, 4, 2, 0.95),
    "shuttle.95.POMDP": (8, 3, 5, 0.95),
    "tiger-grid.pomdp": (36, 5, 17, 0.95),
    "tiger.95.POMDP": (2, 3, 2, 0.95),
}


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def load(text, **kw):
    return loads_pomdp(text, "x.pomdp", **kw)


def arrays(model, dense=dense_transitions):
    """Dense float64 arrays of a model: T[a, s, s'], Z[a, s', o], R[a, s], b0."""
    return (np.asarray(dense(model), np.float64), np.asarray(model.obs_prob, np.float64),
            np.asarray(model.reward, np.float64), np.asarray(model.initial_belief, np.float64))


def host_dense(model):
    """``dense_transitions`` on the host: no compilation for each new shape (random tests)."""
    ns, npb = np.asarray(model.next_state), np.asarray(model.next_prob, np.float64)
    A, S, _ = ns.shape
    T = np.zeros((A, S, S))
    np.add.at(T, (np.arange(A)[:, None, None], np.arange(S)[None, :, None], ns), npb)
    return T


def test_host_dense_agrees_with_dense_transitions():
    m = load_pomdp(shared("4x3.95.POMDP"))
    np.testing.assert_array_equal(host_dense(m), np.asarray(dense_transitions(m), np.float64))


def assert_same_model(m1, m2, names=True):
    l1, l2 = jax.tree.leaves(m1), jax.tree.leaves(m2)
    assert len(l1) == len(l2)
    for x, y in zip(l1, l2):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.asarray(x), np.asarray(y))
    if names:
        assert (m1.state_names, m1.action_names, m1.observation_names) == \
            (m2.state_names, m2.action_names, m2.observation_names)


def close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, np.float64), rtol=1e-5, atol=1e-6)


# ======================================================= the shared benchmark files
def test_every_shared_file_is_in_the_table():
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is not available")
    found = {p.name for p in SHARED.iterdir() if p.suffix.lower() == ".pomdp"}
    assert found == set(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_shared_file_loads_with_the_documented_sizes(name):
    m = load_pomdp(shared(name))
    S, A, O, gamma = TABLE[name]
    assert (m.num_states, m.num_actions, m.num_observations) == (S, A, O)
    assert float(m.discount) == pytest.approx(gamma)
    validate(m)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_shared_file_round_trips_exactly(name, tmp_path):
    m = load_pomdp(shared(name))
    assert_same_model(loads_pomdp(dumps_pomdp(m), "again.pomdp"), m)
    gz = tmp_path / "model.pomdp.gz"
    save_pomdp(m, gz)
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert_same_model(load_pomdp(gz), m)


def test_shared_files_round_trip_exactly_in_float64(tmp_path):
    names = [n for n in sorted(TABLE) if (SHARED / n).exists()]
    if not names:
        pytest.skip(f"{SHARED} is not available")
    with jax.enable_x64(True):
        for name in names:
            m = load_pomdp(SHARED / name)
            assert m.reward.dtype == np.float64 and m.next_prob.dtype == np.float64
            assert float(m.discount) == TABLE[name][3]  # the decimal, exactly
            assert_same_model(loads_pomdp(dumps_pomdp(m), "again.pomdp"), m)
            save_pomdp(m, tmp_path / "m.pomdp.gz")
            assert_same_model(load_pomdp(tmp_path / "m.pomdp.gz"), m)


def test_tiger_file_has_the_expected_arrays():
    m = load_pomdp(shared("tiger.95.POMDP"))
    T, Z, R, b0 = arrays(m)
    assert m.state_names == ("tiger-left", "tiger-right")
    assert m.action_names == ("listen", "open-left", "open-right")
    close(T[0], np.eye(2))
    close(T[1], np.full((2, 2), 0.5))
    close(Z[0], [[0.85, 0.15], [0.15, 0.85]])
    close(Z[1], np.full((2, 2), 0.5))
    close(R, [[-1, -1], [-100, 10], [10, -100]])
    close(b0, [0.5, 0.5])
    # the SARSOP copy is the same model, written differently (other observation names)
    other = load_pomdp(shared("Tiger.pomdp"))
    assert_same_model(other, m, names=False)
    assert other.observation_names == ("obs-left", "obs-right")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("x64", [False, True])
def test_random_models_round_trip_exactly(seed, x64):
    rng = np.random.default_rng(seed)
    A, S, O = 3, 6, 4
    T = np.zeros((A, S, S))
    for a in range(A):
        for s in range(S):
            k = rng.integers(1, 4)
            T[a, s, rng.choice(S, k, replace=False)] = rng.dirichlet(np.ones(k))
    Z = rng.dirichlet(np.ones(O), size=(A, S))
    names = {} if seed % 2 else dict(state_names=[f"st{i}" for i in range(S)],
                                     action_names=["go", "stay", "look"],
                                     observation_names=["o-a", "o_b", "o.c", "o+d"])
    with jax.enable_x64(x64):
        m = from_dense(T, Z, rng.normal(size=(A, S)) * 100, rng.dirichlet(np.ones(S)), 0.9, **names)
        assert_same_model(loads_pomdp(dumps_pomdp(m), "r.pomdp"), m)


# ================================================================ feature tests
HEAD = "discount: 0.9\nstates: s0 s1 s2\nactions: a0 a1\nobservations: o0 o1\n"
T_ID, O_UNI = "T: * identity\n", "O: * uniform\n"


def test_counts_and_name_lists():
    m = load("discount: 0.5\nstates: 3\nactions: up down\nobservations: 2\n" + T_ID + O_UNI)
    assert (m.num_states, m.num_actions, m.num_observations) == (3, 2, 2)
    assert m.state_names is None and m.observation_names is None
    assert m.action_names == ("up", "down")
    m = load("discount: 0.5\nstates: a-1 b_2 C.3 x+\nactions: 1\nobservations: seen\n" + T_ID + O_UNI)
    assert m.state_names == ("a-1", "b_2", "C.3", "x+") and m.action_names is None
    assert m.observation_names == ("seen",)
    close(arrays(m)[1], np.ones((1, 4, 1)))


def test_values_cost_negates_the_rewards():
    body = T_ID + O_UNI + "R: a0 : s1 : * : * 3\nR: a1 : * : * : * -2\n"
    reward = arrays(load(HEAD + "values: reward\n" + body))[2]
    close(reward, [[0, 3, 0], [-2, -2, -2]])
    close(arrays(load(HEAD + "values: cost\n" + body))[2], -reward)
    close(arrays(load(HEAD + body))[2], reward)  # reward is the default


@pytest.mark.parametrize("start, b0", [
    ("start: 0.2 0.3 0.5", [0.2, 0.3, 0.5]),
    ("start: 1 0 0", [1, 0, 0]),
    ("start: uniform", [1 / 3] * 3),
    ("start: s1", [0, 1, 0]),
    ("start: 2", [0, 0, 1]),
    ("start include: s0 2", [0.5, 0, 0.5]),
    ("start include: *", [1 / 3] * 3),
    ("start exclude: s1", [0.5, 0, 0.5]),
    ("start exclude: 0 s1", [0, 0, 1]),
    ("", [1 / 3] * 3),
])
def test_start(start, b0):
    close(arrays(load(HEAD + start + "\n" + T_ID + O_UNI))[3], b0)


@pytest.mark.parametrize("start", ["start: 1", "start: 0", "start: 1.0", "start: uniform", "start: 0\nT: * uniform"])
def test_start_with_one_state(start):
    m = load(f"discount: 0.9\nstates: 1\nactions: 1\nobservations: 1\n{start}\nT: 0 : 0 : 0 1\nO: * uniform\n")
    close(arrays(m)[3], [1.0])


def test_transition_forms():
    m = load(HEAD + O_UNI + """
T: a0 : s0 : s1 0.25          # single entries
T: a0 : s0 : s2 0.75
T: a0 : s1   0.1 0.2 0.7      # a row after 'a : s'
T: a0 : s2 uniform
T: a1                         # a matrix after 'a'
   0 1 0
   0 0 1
   1 0 0
""")
    T = arrays(m)[0]
    close(T[0], [[0, 0.25, 0.75], [0.1, 0.2, 0.7], [1 / 3] * 3])
    close(T[1], [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    m = load(HEAD + "start: 0.5 0 0.5\n" + O_UNI + "T: a0 uniform\nT: a1 identity\nT: a1 : s1 reset\n")
    T = arrays(m)[0]
    close(T[0], np.full((3, 3), 1 / 3))
    close(T[1], [[1, 0, 0], [0.5, 0, 0.5], [0, 0, 1]])
    # without a start line, 'reset' goes to the uniform start
    close(arrays(load(HEAD + O_UNI + "T: * : * reset\n"))[0], np.full((2, 3, 3), 1 / 3))


def test_observation_forms():
    m = load(HEAD + T_ID + """
O: a0 : s0 : o0 0.3
O: a0 : s0 : o1 0.7
O: a0 : s1 0.6 0.4
O: a0 : s2 uniform
O: a1 1 0
      0 1
      0.5 0.5
""")
    Z = arrays(m)[1]
    close(Z[0], [[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    close(Z[1], [[1, 0], [0, 1], [0.5, 0.5]])
    close(arrays(load(HEAD + T_ID + "O: a0 uniform\nO: a1 : * : o1 1\n"))[1],
          [np.full((3, 2), 0.5), [[0, 1]] * 3])


def test_wildcards_in_every_position():
    m = load(HEAD + """
T: * : * : * 0          # clear
T: * : * : s0 1         # everything goes to s0 ...
T: a1 : * : s0 0        # ... except a1, which goes to s2
T: a1 : * : s2 1
T: * : s1 0 1 0         # s1 stays put under every action
O: * : * : * 0.5
O: * : s2 : * 0
O: * : s2 : o1 1
R: * : * : * : * 1
R: a0 : * : * : * 2
R: * : s2 : * : * 5
""")
    T, Z, R, _ = arrays(m)
    close(T[0], [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    close(T[1], [[0, 0, 1], [0, 1, 0], [0, 0, 1]])
    close(Z, [[[0.5, 0.5], [0.5, 0.5], [0, 1]]] * 2)
    close(R, [[2, 2, 5], [1, 1, 5]])


def test_names_and_indices_mixed():
    by_name = load(HEAD + "T: a1 : s2 : s0 1\nT: a1 : s0 : s1 1\nT: a1 : s1 : s2 1\nT: a0 identity\n"
                   "O: a0 : s1 : o1 1\nO: a0 : s0 : o0 1\nO: a0 : s2 : o1 1\nO: a1 uniform\n"
                   "R: a1 : s2 : * : * 4\nstart: s1\n".replace("start: s1\n", ""))
    by_index = load(HEAD + "T: 1 : 2 : s0 1\nT: a1 : 0 : 1 1\nT: 1 : s1 : 2 1\nT: 0 identity\n"
                    "O: 0 : s1 : 1 1\nO: a0 : 0 : o0 1\nO: 0 : 2 : o1 1\nO: 1 uniform\n"
                    "R: 1 : s2 : * : * 4\n")
    assert_same_model(by_index, by_name)
    close(arrays(by_name)[0][1], [[0, 1, 0], [0, 0, 1], [1, 0, 0]])


def test_later_transition_entries_override_earlier_ones():
    m = load(HEAD + O_UNI + """
T: a0 : s0 : s1 1.0
T: a0 : s0 0.5 0.5 0          # a row overrides single entries
T: a0 : s1 0.5 0.5 0
T: a0 : s1 : s1 0.2           # single entries override part of a row
T: a0 : s1 : s2 0.3
T: a0 : s2 uniform
T: a0 : s2 : s0 0             # ... and of a uniform row
T: a0 : s2 : s1 0.6666666666666667
T: a1 : s0 : s1 0.3
T: a1 : s0 : s2 0.7
T: a1 identity                # after entries: replaces every row
""")
    T = arrays(m)[0]
    close(T[0], [[0.5, 0.5, 0], [0.5, 0.2, 0.3], [0, 2 / 3, 1 / 3]])
    close(T[1], np.eye(3))
    m = load(HEAD + O_UNI + "T: a0 1 0 0 0 1 0 0 0 1\nT: a0 : s1 reset\nT: a0 : s1 : s1 0\n"
             "T: a0 : s1 : s0 0.6666666666666667\nT: a1 uniform\nT: a1 : s2 0 0 1\n")
    T = arrays(m)[0]
    close(T[0], [[1, 0, 0], [2 / 3, 0, 1 / 3], [0, 0, 1]])
    close(T[1], [[1 / 3] * 3, [1 / 3] * 3, [0, 0, 1]])


def test_later_observation_entries_override_earlier_ones():
    m = load(HEAD + T_ID + """
O: a0 0 1 0 1 0 1
O: a0 : s1 1 0                # row over matrix
O: a0 : s2 : o0 0.25          # single entries over matrix
O: a0 : s2 : o1 0.75
O: a1 : s0 : o0 1
O: a1 uniform                 # matrix keyword over entries
O: a1 : s1 : o0 0.1
O: a1 : s1 : o1 0.9
""")
    Z = arrays(m)[1]
    close(Z[0], [[0, 1], [1, 0], [0.25, 0.75]])
    close(Z[1], [[0.5, 0.5], [0.1, 0.9], [0.5, 0.5]])


# ------------------------------------------------------------------- rewards
def reward_model(entries, T=None, Z=None):
    """A 3-state, 2-action, 2-observation model with the given R lines."""
    T_text = "T: a0 0.5 0.5 0  0 0.25 0.75  1 0 0\nT: a1 0 0 1  0.5 0 0.5  0.1 0.2 0.7\n"
    Z_text = "O: a0 0.8 0.2  0.4 0.6  0 1\nO: a1 0.5 0.5  1 0  0.3 0.7\n"
    return load(HEAD + T_text + Z_text + "".join(line + "\n" for line in entries))


def brute_reward(model, R4):
    T, Z, _, _ = arrays(model)
    return np.einsum("asn,ano,asno->sa", T, Z, R4).T


def test_reward_forms_and_the_reduction_to_expected_reward():
    m = reward_model([
        "R: a0 : s0 : s1 : o1 4",          # one (s', o)
        "R: a0 : s1 : s2 2 -2",            # a row over observations
        "R: a1 : s2",                      # a matrix over (s', o)
        "  1 2",
        "  3 4",
        "  5 6",
        "R: a1 : s0 : * : o0 7",           # wildcards in s'
        "R: a1 : s1 : s0 : * 1.5",         # wildcard in o
    ])
    R4 = np.zeros((2, 3, 3, 2))
    R4[0, 0, 1, 1] = 4
    R4[0, 1, 2] = [2, -2]
    R4[1, 2] = [[1, 2], [3, 4], [5, 6]]
    R4[1, 0, :, 0] = 7
    R4[1, 1, 0, :] = 1.5
    R = arrays(m)[2]
    close(R, brute_reward(m, R4))
    # by hand: R(s0, a0) = T(s1|s0,a0) Z(o1|a0,s1) 4 = 0.5 * 0.6 * 4
    assert R[0, 0] == pytest.approx(1.2)


def test_rewards_override_in_file_order():
    base_after = reward_model(["R: a0 : s0 : s1 : o1 4", "R: a0 : s1 : * : o0 9",
                               "R: a0 : s0 : * : * -1",           # overrides the s'-dependent entry
                               "R: * : s1 : * : * 2"])
    close(arrays(base_after)[2], [[-1, 2, 0], [0, 2, 0]])
    fine_after = reward_model(["R: a0 : s0 : * : * -1",
                               "R: a0 : s0 : s1 : o1 4",          # refines the base value
                               "R: a0 : s0 : s1 : o0 3",
                               "R: a0 : s0 : s0 1 1",
                               "R: a0 : s0 : s0 : o1 5"])
    R4 = np.full((2, 3, 3, 2), 0.0)
    R4[0, 0] = -1
    R4[0, 0, 1] = [3, 4]
    R4[0, 0, 0] = [1, 5]
    close(arrays(fine_after)[2], brute_reward(fine_after, R4))
    matrix_then_entry = reward_model(["R: a1 : * 1 1 1 1 1 1", "R: a1 : s2 : s2 : o1 -8",
                                      "R: a1 : s1 : * : * 0"])
    R4 = np.zeros((2, 3, 3, 2))
    R4[1] = 1
    R4[1, 2, 2, 1] = -8
    R4[1, 1] = 0
    close(arrays(matrix_then_entry)[2], brute_reward(matrix_then_entry, R4))


def test_signs_apart_from_their_digits_in_rewards():
    """pomdp-solve's grammar reads a number as an optional sign token, then the digits."""
    m = reward_model(["R: a0 : s0 : * : * - 5", "R: a1 : s1 : s0 - 1 + 2", "R: a1 : s2 -1 - 1 + 1 1 -.5 + .5",
                      "R: a0 : s1 : s2 : o0 -3", "R: a0 : s1 : s2 : o1 + 3"])
    R4 = np.zeros((2, 3, 3, 2))
    R4[0, 0] = -5
    R4[1, 1, 0] = [-1, 2]
    R4[1, 2] = [[-1, -1], [1, 1], [-0.5, 0.5]]
    R4[0, 1, 2] = [-3, 3]
    close(arrays(m)[2], brute_reward(m, R4))
    assert_same_model(load(HEAD + T_ID + O_UNI + "R: a0 : s1 : * : * - 2.5e1"),
                      load(HEAD + T_ID + O_UNI + "R: a0 : s1 : * : * -25"))


@pytest.mark.parametrize("seed", range(40))
def test_reward_reduction_matches_brute_force(seed, monkeypatch):
    # small blocks of (pair, successor, observation) cells exercise the blockwise reduction
    monkeypatch.setattr(cassandra, "_CHUNK", [cassandra._CHUNK, 1, 7][seed % 3])
    rng = np.random.default_rng(seed)
    A, S, O = (int(x) for x in rng.integers(1, 4, size=3))
    S += 1
    T = rng.dirichlet(np.ones(S), size=(A, S)) * (rng.random((A, S, S)) < 0.6)
    T[..., 0] += T.sum(-1) == 0
    T /= T.sum(-1, keepdims=True)
    Z = rng.dirichlet(np.ones(O), size=(A, S))
    sn, an, on = [f"s{i}" for i in range(S)], [f"a{i}" for i in range(A)], [f"o{i}" for i in range(O)]

    def ref(names):
        j = int(rng.integers(-1, len(names)))
        if j < 0:
            return "*", slice(None)
        return (names[j] if rng.random() < 0.5 else str(j)), j

    lines = ["discount: 0.9", f"states: {' '.join(sn)}", f"actions: {' '.join(an)}",
             f"observations: {' '.join(on)}"]
    lines += [f"T: {a} " + " ".join(map(repr, T[a].ravel().tolist())) for a in range(A)]
    lines += [f"O: {a} " + " ".join(map(repr, Z[a].ravel().tolist())) for a in range(A)]
    R4 = np.zeros((A, S, S, O))
    for _ in range(int(rng.integers(1, 12))):
        (ta, a), (ts, s) = ref(an), ref(sn)
        form = rng.choice(["single", "single", "base", "row", "matrix"])
        if form == "matrix":
            v = rng.integers(-9, 10, size=(S, O))
            lines.append(f"R: {ta} : {ts} " + " ".join(map(str, v.ravel())))
            R4[a, s] = v
        elif form == "row":
            (t2, s2), v = ref(sn), rng.integers(-9, 10, size=O)
            lines.append(f"R: {ta} : {ts} : {t2} " + " ".join(map(str, v)))
            R4[a, s, s2] = v
        else:
            (t2, s2), (to, o) = (("*", slice(None)),) * 2 if form == "base" else (ref(sn), ref(on))
            v = float(rng.integers(-90, 90)) / 4
            lines.append(f"R: {ta} : {ts} : {t2} : {to} {v}")
            R4[a, s, s2, o] = v
    Tm, Zm, Rm, _ = arrays(load("\n".join(lines)), host_dense)
    close(Tm, T)
    close(Zm, Z)
    np.testing.assert_allclose(Rm, np.einsum("asn,ano,asno->as", T, Z, R4), rtol=1e-5, atol=1e-4)


class DenseReference:
    """An independent, dense interpreter of random T/O/R statements (the test oracle)."""

    def __init__(self, rng, A, S, O):
        self.rng, self.A, self.S, self.O = rng, A, S, O
        self.names = {"a": [f"a{i}" for i in range(A)], "s": [f"s{i}" for i in range(S)],
                      "o": [f"o{i}" for i in range(O)]}
        self.b0 = rng.dirichlet(np.ones(S)) * (rng.random(S) < 0.7)
        self.b0[0] += self.b0.sum() == 0
        self.b0 /= self.b0.sum()
        self.T = np.full((A, S, S), 1 / S)
        self.Z = np.full((A, S, O), 1 / O)
        self.R4 = np.zeros((A, S, S, O))
        self.lines = ["discount: 0.9", f"states: {' '.join(self.names['s'])}",
                      f"actions: {' '.join(self.names['a'])}", f"observations: {' '.join(self.names['o'])}",
                      "start: " + " ".join(map(repr, self.b0.tolist())), "T: * : * uniform", "O: * uniform"]

    def ref(self, kind):
        names = self.names[kind]
        j = int(self.rng.integers(-1, len(names)))
        if j < 0:
            return "*", slice(None)
        return (names[j] if self.rng.random() < 0.5 else str(j)), j

    def probs(self, *shape):
        return self.rng.choice([0.0, 0.1, 0.25, 0.5, 1.0, 1 / 3], size=shape)

    def statement(self):
        rng, S, O = self.rng, self.S, self.O
        kind = rng.choice(["T", "O", "R"])
        form = rng.choice(["single", "single", "row", "matrix"])
        ta, a = self.ref("a")
        words = [kind, ":", ta]
        target = {"T": self.T, "O": self.Z, "R": self.R4}[kind]
        if form == "matrix" and kind != "R":
            choice = rng.choice(["numbers", "uniform", "identity" if kind == "T" else "uniform"])
            width = S if kind == "T" else O
            value = {"uniform": np.full((S, width), 1 / width), "identity": np.eye(S),
                     "numbers": self.probs(S, width)}[choice]
            words += list(map(repr, value.ravel().tolist())) if choice == "numbers" else [choice]
            target[a] = value
        else:
            ts, s = self.ref("s")
            words += [":", ts]
            if kind == "R" and form == "matrix":
                value = rng.integers(-9, 10, size=(S, O))
                words += list(map(str, value.ravel()))
                target[a, s] = value
            elif form == "row" and kind != "R":
                width = S if kind == "T" else O
                choice = rng.choice(["numbers", "uniform", "reset" if kind == "T" else "uniform"])
                value = {"uniform": np.full(width, 1 / width), "reset": self.b0,
                         "numbers": self.probs(width)}[choice]
                words += list(map(repr, value.tolist())) if choice == "numbers" else [choice]
                target[a, s] = value
            else:
                t2, s2 = self.ref("s" if kind == "T" else "o" if kind == "O" else "s")
                words += [":", t2]
                if kind == "R" and form == "row":
                    value = rng.integers(-9, 10, size=O)
                    words += list(map(str, value))
                    target[a, s, s2] = value
                elif kind == "R":
                    to, o = self.ref("o")
                    value = float(rng.integers(-40, 40)) / 8
                    words += [":", to, repr(value)]
                    target[a, s, s2, o] = value
                else:
                    value = float(self.probs())
                    words.append(repr(value))
                    target[a, s, s2] = value
        sep = [" ", "  ", "\t", "\n", " # note\n"]
        return "".join(w + (sep[int(rng.integers(len(sep)))] if rng.random() < 0.2 else " ") for w in words)


@pytest.mark.parametrize("seed", range(60))
def test_random_statement_sequences_match_a_dense_reference(seed):
    rng = np.random.default_rng(1000 + seed)
    A, S, O = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
    ref = DenseReference(rng, A, S, O)
    ref.lines += [ref.statement() for _ in range(int(rng.integers(1, 25)))]
    # row sums are not the point here: a huge tolerance accepts any probabilities
    T, Z, _, b0 = arrays(loads_pomdp("\n".join(ref.lines), "x.pomdp", tolerance=1e9), host_dense)
    close(T, ref.T)
    close(Z, ref.Z)
    close(b0, ref.b0)
    # then normalise every row (R(s, a) assumes it), by rows given after the rewards
    for P, kind in ((ref.T, "T"), (ref.Z, "O")):
        P[P.sum(-1) == 0] = 1.0
        P /= P.sum(-1, keepdims=True)
        ref.lines += [f"{kind}: {a} : {s} " + " ".join(map(repr, P[a, s].tolist()))
                      for a in range(A) for s in range(S)]
    T, Z, R, _ = arrays(loads_pomdp("\n".join(ref.lines), "x.pomdp"), host_dense)
    close(T, ref.T)
    close(Z, ref.Z)
    np.testing.assert_allclose(R, np.einsum("asn,ano,asno->as", T, Z, ref.R4), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------- lexical details
TIGER = """\
discount: 0.95
values: reward
states: tiger-left tiger-right
actions: listen open-left open-right
observations: tiger-left tiger-right
start: 0.5 0.5
T: listen identity
T: open-left uniform
T: open-right uniform
O: listen 0.85 0.15 0.15 0.85
O: open-left uniform
O: open-right uniform
R: listen : * : * : * -1
R: open-left : tiger-left : * : * -100
R: open-left : tiger-right : * : * 10
R: open-right : tiger-left : * : * 10
R: open-right : tiger-right : * : * -100
"""

LEXICAL_VARIANTS = {
    "crlf": TIGER.replace("\n", "\r\n"),
    "old-mac-cr": TIGER.replace("\n", "\r"),
    "tabs": TIGER.replace(" ", "\t"),
    "utf8-bom": "\ufeff" + TIGER,
    "comments-everywhere": "# header\n" + TIGER.replace("\n", "  # comment: with * and : 1 2\n")
                           .replace("O: listen 0.85", "O: listen # mid-entry comment\n 0.85"),
    "space-before-colon": TIGER.replace(":", " : ").replace("discount : 0.95", "discount  :0.95"),
    "no-spaces": TIGER.replace(" : ", ":").replace(": ", ":").replace("T:listen", "T:listen"),
    "split-across-lines": TIGER.replace(" ", "\n"),
    "one-line": TIGER.replace("\n", " "),
    "scientific": TIGER.replace("0.85", "8.5e-1").replace("0.15", "1.5E-01").replace("0.5 0.5", "5E-01 +.5")
                       .replace("-100", "-1e2").replace("10\n", "1.0e+1\n"),
    "leading-plus": TIGER.replace(" 10\n", " +10\n").replace("0.95", "+0.95"),
    "trailing-dots": TIGER.replace(" 10\n", " 10.\n").replace("-1\n", "-1.\n"),
    "indices": TIGER.replace("T: listen", "T: 0").replace("open-left : tiger-left", "1 : 0"),
    "nul-in-comment": TIGER + "# \x00\x01 binary in a comment is fine\n",
}


@pytest.mark.parametrize("variant", sorted(LEXICAL_VARIANTS))
def test_lexical_variants_read_the_same_model(variant):
    text = LEXICAL_VARIANTS[variant]
    assert text != TIGER
    assert_same_model(load(text), load(TIGER))


def test_no_space_entries_and_latin1_comment():
    assert "T:listen" in LEXICAL_VARIANTS["no-spaces"]
    data = TIGER.encode() + "# caf\xe9\n".encode("latin-1")  # not UTF-8
    assert_same_model(load(data), load(TIGER))


def test_tolerance_is_configurable():
    text = HEAD + O_UNI + "T: * identity\nT: a0 : s1 0.4 0.599 0\n"
    with pytest.raises(PomdpFormatError, match="sum to 0.999"):
        load(text)
    m = load(text, tolerance=1e-2)
    close(arrays(m)[0][0, 1], [0.4, 0.599, 0])
    with pytest.raises(PomdpFormatError, match="sums to 0.99"):
        load(HEAD + "start: 0.5 0.49 0\n" + T_ID + O_UNI, tolerance=1e-3)
    load(HEAD + "start: 0.5 0.49 0\n" + T_ID + O_UNI, tolerance=2e-2)


def test_progress_is_reported_for_small_files_too():
    seen = []
    load(TIGER, progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


# ============================================================== malformed input
P = "discount: 0.95\nstates: s0 s1\nactions: a0 a1\nobservations: o0 o1\n"
B = "T: * uniform\nO: * uniform\n"

# (id, text with '§' where the error must point, a phrase of the reason)
MALFORMED = [
    ("empty", "§", "empty file"),
    ("only-comments", "§# nothing\n   # but comments\n", "empty file"),
    ("whitespace-only", "§  \n\t\n\r\n \n", "empty file"),
    ("missing-discount", "states: s0 s1\nactions: a0 a1\nobservations: o0 o1\n§" + B, "missing 'discount:'"),
    ("missing-states", "discount: 0.9\nactions: a0\nobservations: o0\n§" + B, "missing 'states:'"),
    ("missing-actions", "discount: 0.9\nstates: 2\nobservations: o0\n§" + B, "missing 'actions:'"),
    ("missing-observations", "discount: 0.9\nstates: 2\nactions: 2\n§" + B, "missing 'observations:'"),
    ("missing-everything-at-eof", "discount: 0.9§\n", "missing 'states:', 'actions:', 'observations:'"),
    ("duplicate-discount", P + "§discount: 0.9\n" + B, "'discount:' is given twice"),
    ("duplicate-states", P + "§states: 2\n" + B, "'states:' is given twice"),
    ("duplicate-start", P + "start: uniform\n§start: s0\n" + B, "'start:' is given twice"),
    ("discount-above-1", "discount: §1.5\n" + P[15:] + B, "discount factor in [0, 1], found '1.5'"),
    ("discount-negative", "discount: §-0.1\n" + P[15:] + B, "discount factor in [0, 1], found '-0.1'"),
    ("discount-not-a-number", "discount: §high\n" + P[15:] + B, "expected the discount factor"),
    ("discount-nan", "discount: §nan\n" + P[15:] + B, "expected the discount factor"),
    ("discount-inf", "discount: §inf\n" + P[15:] + B, "found 'inf'"),
    ("discount-1e999", "discount: §1e999\n" + P[15:] + B, "'1e999' is out of range"),
    ("values-foo", P + "values: §foo\n" + B, "expected 'reward' or 'cost'"),
    ("values-at-eof", P + "values:§", "expected 'reward' or 'cost' after 'values:', found the end of the file"),
    ("states-zero", "discount: 0.9\nstates: §0\nactions: 1\nobservations: 1\n", "expected a number of states"),
    ("states-negative", "discount: 0.9\nstates: §-2\nactions: 1\nobservations: 1\n", "found '-2'"),
    ("states-fraction", "discount: 0.9\nstates: §2.5\nactions: 1\nobservations: 1\n", "a whole number"),
    ("states-absurd", "discount: 0.9\nstates: §99999999999999999999\n", "expected a number of states"),
    ("states-count-then-names", "discount: 0.9\nstates: 2 §s0 s1\n", "give either a count or a list"),
    ("states-empty", "discount: 0.9\nstates: §actions: 2\n", "expected a number of states or a list"),
    ("too-large-at-states", "discount: 0.9\n§states: 100000000\nactions: 2\nobservations: 1000\n",
     "model too large: 100000000 states needs at least"),
    ("too-large-at-observations", "discount: 0.9\nstates: 1000000\nactions: 4\n§observations: 200\n",
     "1000000 states x 4 actions x 200 observations needs at least"),
    ("duplicate-name", "discount: 0.9\nstates: s0 s1 §s0\n", "duplicate state name 's0'"),
    ("name-is-keyword", "discount: 0.9\nstates: s0 §uniform s1\n", "(a keyword)"),
    ("name-is-number", "discount: 0.9\nactions: a0 §7\n", "expected an action name, found '7' (a number)"),
    ("name-is-colon", "discount: 0.9\nobservations: o0 §: o1\n", "not a valid name"),
    ("name-is-a-sign", "discount: 0.9\nobservations: o0 §- o1\n", "not a valid name"),
    ("detached-sign-probability", P + B + "T: a0 : s0 : s0 §- 0.5\n", "probability in [0, 1], found '-0.5'"),
    ("detached-sign-without-number", P + B + "R: a0 : s0 : * : * §- x\n", "expected a reward value, found '-'"),
    ("detached-sign-too-many", P + B + "R: a0 : s0 : s1 1 - 2 §- 3\n", "too many numbers: expected 2"),
    ("name-not-printable", "discount: 0.9\nstates: s0 §s\u200b1\n", "not a valid name"),
    ("unknown-state-in-T", P + "T: a0 : §s9 : s0 1\n", "unknown state 's9' (known states: s0, s1)"),
    ("unknown-action-in-O", P + "T: * uniform\nO: §b0 : s0 : o0 1\n", "unknown action 'b0'"),
    ("unknown-observation-in-R", P + B + "R: a0 : s0 : s1 : §o5 1\n", "unknown observation 'o5'"),
    ("unknown-state-in-start", P + "start: §s5\n" + B, "unknown state 's5'"),
    ("unknown-state-in-start-include", P + "start include: s0 §s7\n" + B, "unknown state 's7'"),
    ("index-out-of-range", P + "T: 0 : §2 : 0 1.0\n", "state index '2' is out of range"),
    ("negative-index", P + "T: §-1 : 0 : 0 1.0\n", "unknown action '-1'"),
    ("probability-above-1", P + B + "T: a0 : s0 : s0 §1.5\n", "expected a probability in [0, 1], found '1.5'"),
    ("probability-negative", P + B + "O: a0 : s0 : o0 §-0.5\n", "expected a probability in [0, 1], found '-0.5'"),
    ("probability-in-row", P + B + "O: a0 : s0 0.5 §2\n", "expected a probability in [0, 1], found '2'"),
    ("start-probability", P + "start: §1.5 -0.5\n" + B, "found '1.5'"),
    ("row-truncated-at-eof", P + "O: * uniform\nT: a0 : s0 0.5§\n",
     "expected 2 numbers (a row of transition probabilities"),
    ("row-too-many", P + B + "T: a0 : s0 0.5 0.5 §0\n", "too many numbers: expected 2"),
    ("matrix-wrong-count", P + "T: a0 1 0 0\n§O: * uniform\n", "expected 4 numbers (a 2x2 transition matrix"),
    ("observation-matrix-too-many", P + "T: * uniform\nO: a0 1 0 0 1 §0\n", "too many numbers: expected 4"),
    ("reward-row-too-short", P + B + "R: a0 : s0 : s1 1\n§T: * uniform\n", "expected 2 numbers (a row of rewards"),
    ("reward-matrix-too-short", P + B + "R: a0 : s0 1 2 3§\n", "expected 4 numbers (a 2x2 reward matrix"),
    ("T-row-does-not-sum-to-1", P + B + "§T: a0 : s1 : s0 0.6\n",
     "transition probabilities for action 'a0' from state 's1' sum to 1.1"),
    ("T-matrix-does-not-sum-to-1", P + "O: * uniform\n§T: * 0.5 0.5 0.5 0.4\n", "from state 's1' sum to 0.9"),
    ("O-row-does-not-sum-to-1", P + B + "§O: a1 : s1 0.5 0.4\n",
     "observation probabilities for action 'a1' arriving in state 's1' sum to 0.9"),
    ("missing-T-rows", P + "T: a0 uniform\nO: * uniform\nR: * : * : * : * 1§\n",
     "no transition probabilities given for action 'a1' in state 's0' (and 1 more)"),
    ("missing-O-rows", P + "T: * uniform\nO: a0 : * uniform§\n",
     "no observation probabilities given for action 'a1' arriving in state 's0' (and 1 more)"),
    ("no-entries", P[:-1] + "§\n", "no transition probabilities given"),
    ("start-does-not-sum-to-1", P + "§start: 0.5 0.4\n" + B, "start distribution sums to 0.9"),
    ("start-empty", P + "start: §" + B, "expected a start distribution (one probability per state), 'uniform' or "
     "a state, found 'T'"),
    ("start-vector-too-short", P + "start: 0.5 0.5 §0\n" + B, "too many numbers: expected 2"),
    ("start-wildcard", P + "start: §*\n" + B, "found '*'"),
    ("start-before-states", "discount: 0.9\n§start: uniform\nstates: 2\n", "'start' must come after 'states:'"),
    ("start-include-empty", P + "start include: §T: * uniform\n", "expected a list of states"),
    ("start-exclude-everything", P + "start exclude: §s0 s1\n" + B, "excludes every state"),
    ("preamble-after-entries", P + B + "§discount: 0.9\n", "'discount:' must come before the first"),
    ("unknown-keyword", P + B + "§Q: a0 : s0 : o0 1\n", "expected an entry 'T:', 'O:' or 'R:', found 'Q'"),
    ("R-two-values", P + B + "R: a0 : s0 : * : * 1 §2\n", "found '2' (a number after a complete entry: the entry "
     "before has too many numbers?)"),
    ("unknown-keyword-in-preamble", "discount: 0.9\n§state: 2\n", "missing 'states:'"),
    ("T-without-colon", P + "T §a0 : s0 : s0 1\n", "expected ':' after 'T', found 'a0'"),
    ("R-without-state", P + B + "R: a0 §5\n", "expected ':' after the action of an R: entry"),
    ("number-1e999-in-T", P + B + "T: a0 : s0 : s0 §1e999\n", "number '1e999' is out of range"),
    ("number-1e999-in-R", P + B + "R: * : * : * : * §-1e999\n", "number '-1e999' is out of range"),
    ("number-1e999-in-row", P + B + "R: a0 : s0 : s0 §1e999 2\n", "number '1e999' is out of range"),
    ("number-1.2.3", P + B + "T: a0 : s0 : s1 §1.2.3\n", "expected a probability, found '1.2.3'"),
    ("number-nan-in-R", P + B + "R: a0 : s0 : s1 : o0 §nan\n", "expected a reward value, found 'nan'"),
    ("stray-colon", P + "T: a0 : §: s0 1\n", "expected a state (name, index or '*'), found ':'"),
    ("stray-colon-for-action", P + "T: §: s0 : s0 1\n", "expected an action (name, index or '*'), found ':'"),
    ("identity-in-row", P + "T: a0 : s0 §identity\n", "expected 2 numbers"),
    ("identity-for-O", P + "T: * uniform\nO: a0 §identity\n", "expected 4 numbers (a 2x2 observation matrix"),
    ("reset-for-O", P + "T: * uniform\nO: a0 : s0 §reset\n", "expected 2 numbers (a row of observation"),
    ("T-value-missing-at-eof", P + B + "T: a0 : s0 : s1§\n", "expected a probability, found the end of the file"),
    ("T-colon-at-eof", P + B + "T:§ ", "expected an action (name, index or '*'), found the end of the file"),
    ("crlf-line-numbers", (P + B + "T: a0 : s0 : s0 §1.5\n").replace("\n", "\r\n"), "found '1.5'"),
    ("cr-line-numbers", (P + B + "T: a0 : s0 : s0 §1.5\n").replace("\n", "\r"), "found '1.5'"),
    ("tab-columns", P + B + "\tT:\ta0\t:\ts0 :\ts0\t§1.5\n", "found '1.5'"),
    ("comment-before-error", P + B + "# T: a0 : s0 : s0 1.5\nT: a0 : s0 : s0 §2 # 1.5\n", "found '2'"),
]


def _position(text: str) -> tuple[str, int, int]:
    """The text without its '§' marker, and the marker's 1-based line and column."""
    at = text.index("§")
    text = text.replace("§", "", 1)
    lines = text[:at].replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return text, len(lines), len(lines[-1]) + 1


def test_there_are_at_least_40_distinct_malformed_cases():
    assert len({c[0] for c in MALFORMED}) == len(MALFORMED) >= 40
    assert len({c[1] for c in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize("case, marked, phrase", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_input(case, marked, phrase, monkeypatch):
    # The reader's limit is otherwise the smaller of 4 GiB and the memory available now: on a machine short of
    # memory the too-large cases would be refused a line earlier (seen once in CI-like runs at 0.2 GiB free).
    monkeypatch.setenv(limits.ENV_VAR, str(cassandra.MAX_MODEL_BYTES))
    text, line, column = _position(marked)
    with pytest.raises(PomdpFormatError) as info:
        loads_pomdp(text, "bad/model.pomdp")
    e = info.value
    assert isinstance(e, ValueError)
    assert e.path == "bad/model.pomdp"
    assert str(e).startswith(f"bad/model.pomdp:{e.line}:{e.column}: ")
    assert phrase in e.reason, e.reason
    assert (e.line, e.column) == (line, column), str(e)


BINARY = [
    ("nul-bytes", b"discount: 0.95\n\x00\x01\x02junk", (2, 1), "binary byte 0x00"),
    ("control-in-name", P.encode() + b"T: a0 : s\x070 : s0 1\n", (5, 10), "binary byte 0x07"),
    ("utf16-bom", (P + B).encode("utf-16"), (1, 1), "UTF-16"),
    ("utf16-be-no-bom", (P + B).encode("utf-16-be"), (1, 1), "UTF-16"),
    ("gzip-truncated", gzip.compress((P + B).encode())[:-12], None, "truncated gzip"),
    ("gzip-corrupt", gzip.compress((P + B).encode())[:-8] + b"\x00" * 8, None, "corrupt gzip"),
    ("gzip-then-garbage", gzip.compress(b"discount: 0.9\x00"), (1, 14), "binary byte"),
    ("gzip-trailing-bytes", gzip.compress((P + B).encode()) + b"junk", None, "unexpected bytes after the gzip"),
    ("gzip-truncated-second-member", gzip.compress(P.encode()) + gzip.compress(B.encode())[:-12], None,
     "truncated gzip"),
]


def test_every_gzip_member_is_read():
    """``cat a.gz b.gz`` is one valid gzip file (zcat prints both); a reader that stops at the first member's
    end would drop the later entries and return another model without a word. Zero padding after the last
    member is ignored, as gzip does."""
    text = (P + B + "R: a0 : s0 : * : * 7\n").encode()
    cut = text.index(b"R: a0")
    whole = loads_pomdp(text, "m.pomdp")
    for data in (gzip.compress(text[:cut]) + gzip.compress(text[cut:]),
                 b"".join(gzip.compress(text[i:i + 7]) for i in range(0, len(text), 7)),
                 gzip.compress(text) + b"\x00" * 512):
        got = loads_pomdp(data, "m.pomdp.gz")
        np.testing.assert_array_equal(np.asarray(got.reward), np.asarray(whole.reward))
        np.testing.assert_array_equal(np.asarray(got.next_prob), np.asarray(whole.next_prob))
    assert float(np.asarray(whole.reward)[0, 0]) == 7.0


@pytest.mark.parametrize("case, data, where, phrase", BINARY, ids=[c[0] for c in BINARY])
def test_malformed_bytes(case, data, where, phrase):
    with pytest.raises(PomdpFormatError) as info:
        loads_pomdp(data, "bad.pomdp", format="pomdp")
    e = info.value
    assert phrase in e.reason and e.path == "bad.pomdp" and "bad.pomdp" in str(e)
    assert (e.line, e.column) == (where or (None, None))


@pytest.mark.parametrize("seed", range(8))
def test_random_binary_junk(seed):
    data = np.random.default_rng(seed).integers(0, 256, size=int(2 ** (seed + 3))).astype(np.uint8).tobytes()
    with pytest.raises(PomdpFormatError) as info:
        loads_pomdp(data, "junk.pomdp", format="pomdp")
    assert info.value.path == "junk.pomdp"


def test_huge_model_is_refused_quickly_without_allocating():
    t = time.perf_counter()
    for text in ("discount: 0.9\nstates: 100000000\nactions: 2\nobservations: 1000\nstart: uniform\n",
                 "discount: 0.9\nobservations: 1000\nactions: 1000\nstates: 2147483647\n",
                 "discount: 0.9\nstates: 2147483647\nstart: uniform\n"):
        with pytest.raises(PomdpFormatError, match=r"model too large: .* needs at least \d+\.\d GiB"):
            load(text)
    assert time.perf_counter() - t < 10.0  # a guard against allocating or hanging, not a speed target


def test_wildcard_expansion_of_a_large_model_is_refused_quickly():
    t = time.perf_counter()
    head = "discount: 0.9\nstates: 50000\nactions: 2\nobservations: 1\n"
    with pytest.raises(PomdpFormatError, match="model too large") as info:
        load(head + "O: * uniform\n\nT: * : * : * 0.00002\n")
    assert info.value.line == 7
    with pytest.raises(PomdpFormatError, match="model too large"):  # uniform rows, dense
        load(head + "O: * uniform\nT: * : * uniform\n")
    assert time.perf_counter() - t < 20.0  # a guard against expanding the wildcards, not a speed target


def test_error_positions_in_a_large_file():
    lines = [P.rstrip("\n"), "O: * uniform"] + [f"T: a{i % 2} : s{i % 2} : s{(i // 2) % 2} 0.5" for i in range(4000)]
    lines.insert(3000, "T: a0 : s0 : s1 0.5 0.5")
    with pytest.raises(PomdpFormatError) as info:
        load("\n".join(lines))
    assert (info.value.line, info.value.column) == (3004, 21)
    assert "expected an entry" in info.value.reason


# ============================================================ property: fuzzing
SMALL = ["Tiger.pomdp", "tiger.95.POMDP", "1d.POMDP", "paint.95.pomdp", "network.pomdp",
         "shuttle.95.POMDP", "4x3.95.POMDP", "cheese.95.POMDP", "4x4.95.pomdp", "milos-aaai97.pomdp"]
_SEEDS: dict[str, bytes] = {}


def seed_bytes(name: str) -> bytes:
    if name not in _SEEDS:
        if name == "tiger-grid-prefix":
            _SEEDS[name] = shared("tiger-grid.pomdp").read_bytes()[:20000]
        elif name == "TIGER":
            _SEEDS[name] = TIGER.encode()
        else:
            _SEEDS[name] = shared(name).read_bytes()
    return _SEEDS[name]


VOCAB = [b":", b"*", b"#", b"0", b"1", b"-1", b"1e9", b"nan", b"T", b"O", b"R", b"uniform", b"identity",
         b"reset", b"start", b"include", b"exclude", b"states", b"actions", b"observations", b"discount",
         b"values", b"cost", b"reward", b"\n", b"\r", b"\t", b"+", b"-", b".", b"1e999", b"0.5", b"s0", b"\x00"]
NUMBERS = [b"0", b"1", b"-1", b"2", b"0.5", b"1e9", b"1e-9", b"nan", b"inf", b"1e999", b"-0", b"3.5",
           b"99999999999999999999", b"0.333", b"1.2.3", b"1e", b"+", b"100000"]
_NUM = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(rb"\S+")

POS = st.integers(0, 2 ** 20)
MUTATION = st.one_of(
    st.tuples(st.just("delete"), POS, st.integers(1, 300)),
    st.tuples(st.just("insert"), POS, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("token"), POS, st.sampled_from(VOCAB)),
    st.tuples(st.just("number"), POS, st.sampled_from(NUMBERS)),
    st.tuples(st.just("dupline"), POS, POS),
    st.tuples(st.just("truncate"), POS, st.just(0)),
    st.tuples(st.just("swap"), POS, POS),
)


def mutate(data: bytes, op) -> bytes:
    kind, x, y = op
    p = x % (len(data) + 1)
    if kind == "delete":
        return data[:p] + data[p + y:]
    if kind == "insert":
        return data[:p] + y + data[p:]
    if kind == "token":
        return data[:p] + b" " + y + b" " + data[p:]
    if kind == "truncate":
        return data[:p]
    if kind == "dupline":
        lines = data.split(b"\n")
        i, j = x % len(lines), y % (len(lines) + 1)
        return b"\n".join(lines[:j] + [lines[i]] + lines[j:])
    spans = [m.span() for m in (_NUM if kind == "number" else _WORD).finditer(data)]
    if not spans:
        return data
    a, b = spans[x % len(spans)]
    if kind == "number":
        return data[:a] + y + data[b:]
    c, d = spans[y % len(spans)]
    if (a, b) == (c, d):
        return data
    (a, b), (c, d) = sorted([(a, b), (c, d)])
    return data[:a] + data[c:d] + data[b:c] + data[a:b] + data[d:]


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(SMALL + ["tiger-grid-prefix", "TIGER"]), st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_files_load_or_raise_a_format_error(name, mutations):
    data = seed_bytes(name)
    for op in mutations:
        data = mutate(data, op)
    t = time.perf_counter()
    try:
        model = loads_pomdp(data, "fuzz.pomdp", format="pomdp")
    except PomdpFormatError as e:
        assert e.path == "fuzz.pomdp" and str(e).startswith("fuzz.pomdp")
        assert e.line is None or 1 <= e.line <= data.count(b"\n") + data.count(b"\r") + 1
        assert e.column is None or e.column >= 1
        assert e.reason
    else:
        assert isinstance(model, TabularPOMDP)
        validate(model)
    assert time.perf_counter() - t < 5.0


def test_mutations_do_change_the_input():
    data = TIGER.encode()
    assert mutate(data, ("number", 3, b"7")) != data
    assert mutate(data, ("swap", 0, 5)) != data
    assert mutate(data, ("dupline", 1, 0)).count(b"\n") == data.count(b"\n") + 1


# ================================================================== large file
def write_large(path: Path, S: int = 12545, A: int = 13, O: int = 3):
    """A RockSample-sized model in single-entry form (> 20 MB); returns its expected arrays."""
    sn = [f"s{i:05d}" for i in range(S)]
    s = np.arange(S)
    n1 = (s[None, :] + np.arange(A)[:, None] + 1) % S  # [A, S]
    n2 = (n1 + 1 + (s[None, :] * 7 + np.arange(A)[:, None]) % (S - 1)) % S  # != n1
    reward = ((np.arange(A)[:, None] * 31 + s[None, :]) % 17 - 8) / 2
    fine = (s[None, :] % 97 == 0) & np.ones((A, 1), bool)  # a few s'-dependent rewards
    with open(path, "w") as f:
        f.write("# a large generated model\ndiscount: 0.95\nvalues: reward\n"
                f"states: {' '.join(sn)}\nactions: {' '.join(f'a{a}' for a in range(A))}\n"
                f"observations: {' '.join(f'o{o}' for o in range(O))}\nstart: {sn[0]}\n")
        for a in range(A):
            f.write("".join(f"T: a{a} : {sn[i]} : {sn[j]} 0.25\nT: a{a} : {sn[i]} : {sn[k]} 0.75\n"
                            for i, j, k in zip(s, n1[a], n2[a])))
        for a in range(A):
            f.write("".join(f"O: a{a} : {sn[i]} : o{(i + a) % O} 0.75\nO: a{a} : {sn[i]} : o{(i + a + 1) % O} 0.25\n"
                            for i in s))
        for a in range(A):
            f.write("".join(f"R: a{a} : {sn[i]} : * : * {reward[a, i]}\n" for i in s))
            f.write("".join(f"R: a{a} : {sn[i]} : {sn[n1[a, i]]} : * 100\n" for i in s[fine[a]]))
    ns = np.stack([np.minimum(n1, n2), np.maximum(n1, n2)], -1)
    npb = np.where((n1 < n2)[..., None], [0.25, 0.75], [0.75, 0.25])
    expected_reward = np.where(fine, 0.25 * 100 + 0.75 * reward, reward)
    return ns, npb, expected_reward


def test_large_file_loads_fast_with_progress(tmp_path):
    path = tmp_path / "large.pomdp"
    ns, npb, reward = write_large(path)
    assert path.stat().st_size >= 20 * 2 ** 20
    seen = []
    # the speed target (a 20 MB file in under 30 s) is measured by benchmarks/foundation.py
    m = load_pomdp(path, progress=seen.append)
    assert (m.num_states, m.num_actions, m.num_observations, m.num_successors) == (12545, 13, 3, 2)
    assert m.state_names[123] == "s00123" and m.action_names[-1] == "a12"
    np.testing.assert_array_equal(np.asarray(m.next_state), ns)
    close(np.asarray(m.next_prob), npb)
    close(np.asarray(m.reward), reward)
    obs = np.asarray(m.obs_prob)
    a, s = np.meshgrid(np.arange(13), np.arange(12545), indexing="ij")
    close(obs[a, s, (s + a) % 3], np.full(a.shape, 0.75))
    assert float(np.asarray(m.initial_belief)[0]) == 1.0
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) >= 10
    assert all(x <= y for x, y in zip(seen, seen[1:]))
    assert all(0.0 <= x <= 1.0 for x in seen)


# ------------------------------------------------- numbers: ASCII digits, the model's dtype
PRE = "discount: 0.95\nvalues: reward\nstates: s0 s1\nactions: a\nobservations: o0 o1\n"


@pytest.mark.parametrize("line, fragment", [
    ("T: a : s0 : s0 \u0661", "expected a probability, found '\u0661'"),  # ARABIC-INDIC DIGIT ONE
    ("T: a : \u0661 : s0 1", "unknown state '\u0661'"),
    ("R: a : s0 : * : * \u0665\u0660", "expected a reward value, found '\u0665\u0660'"),
    ("R: a : s0 : * : * \uff15", "expected a reward value"),  # FULLWIDTH DIGIT FIVE
])
def test_numbers_are_ascii_digits_only(line, fragment):
    """The grammar's numbers are [0-9]; Python's int/float (and regex \\d) take any Unicode digit."""
    text = PRE + "T: a : s0 : s0 1\nT: a : s1 0 1\nO: a uniform\n" + line + "\n"
    with pytest.raises(PomdpFormatError, match=re.escape(fragment)) as info:
        load(text)
    assert info.value.line == 9


def test_a_row_within_the_tolerance_is_not_refused_for_its_float32_rounding():
    """0.99999001 is 1 - 9.99e-6 as written; stored in float32 it sums to 1 - 1.0001e-5."""
    body = "T: a : s0 : s0 0.99999001\nT: a : s1 0 1\nO: a : s0 0.99999001 0\nO: a : s1 0.5 0.5\n"
    m = load(PRE + "start: 0.99999001 0\n" + body)
    np.testing.assert_allclose(np.asarray(dense_transitions(m))[0, 0], [0.99999001, 0], rtol=1e-6)
    with pytest.raises(PomdpFormatError, match="sum to 0.99998"):
        load(PRE + body.replace("0.99999001", "0.99998", 1))


def test_a_reward_too_large_for_the_model_dtype_is_refused_at_its_number():
    text = PRE + "T: a identity\nO: a uniform\nR: a : s0 : * : * 1e39\n"
    if np.asarray(load(text.replace("1e39", "1")).reward).dtype != np.float32:
        assert float(np.asarray(load(text).reward)[0, 0]) == 1e39
        return
    with pytest.raises(PomdpFormatError, match=re.escape("number '1e39' is too large for float32")) as info:
        load(text)
    assert (info.value.line, info.value.column) == (8, 19)
    with pytest.raises(PomdpFormatError, match="is too large for float32"):
        load(PRE + "T: a identity\nO: a uniform\nR: a : s0\n-1e39 0\n0 0\n")
