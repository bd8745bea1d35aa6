"""Built-in problems: names, the shipped files, and the code-defined models."""

import jax
import numpy as np
import pytest

import jaxpomdp
from jaxpomdp import problems

# |S|, |A|, |O|, discount from ../shared/problems/SOURCES.md, for the shipped copies
SHIPPED = {
    "1d": (4, 2, 2, 0.75),
    "4x3.95": (11, 4, 6, 0.95),
    "4x4.95": (16, 4, 2, 0.95),
    "cheese.95": (11, 4, 7, 0.95),
    "hallway": (60, 5, 21, 0.95),
    "hallway.pomdpx": (60, 5, 21, 0.95),
    "milos-aaai97": (20, 6, 8, 0.9),
    "mit": (204, 4, 28, 0.99),
    "network": (7, 4, 2, 0.95),
    "paint.95": (4, 4, 2, 0.95),
    "rocksample_4_4": (257, 9, 2, 0.95),
    "shuttle.95": (8, 3, 5, 0.95),
    "tiger-grid": (36, 5, 17, 0.95),
    "tiger.95": (2, 3, 2, 0.95),
    "tiger.pomdpx": (2, 3, 2, 0.95),
}


def test_names_cover_builtins_and_every_shipped_file():
    assert set(problems.names()) == {"tiger", "three-state", *SHIPPED}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_problem_sizes(name):
    m = problems.get(name)
    S, A, O, gamma = SHIPPED[name]
    assert (m.num_states, m.num_actions, m.num_observations) == (S, A, O)
    assert float(m.discount) == pytest.approx(gamma)
    jaxpomdp.validate(m)


def test_get_is_case_insensitive_and_accepts_file_names():
    a = problems.get("Tiger.95")
    b = problems.get("tiger.95.POMDP")
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError, match="tiger"):
        problems.get("no-such-problem")


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_builtin_tiger_equals_sarsop_tiger_file():
    from_file = jaxpomdp.load_pomdp(problems.data_file("tiger.pomdpx"))
    assert _leaves_equal(problems.tiger(), from_file)
    assert problems.tiger().state_names == from_file.state_names
    assert problems.tiger().action_names == from_file.action_names


def test_builtin_tiger_equals_cassandra_tiger_file_up_to_names():
    # tiger.95.POMDP has no start line (uniform by default) and names its observations
    # after the states; the numbers are the same model.
    assert _leaves_equal(problems.tiger(), problems.get("tiger.95"))


def test_three_state_system_matches_the_paper():
    m = problems.three_state()
    T = np.asarray(jaxpomdp.dense_transitions(m))
    np.testing.assert_allclose(T[0], [[0, .8, .2], [.8, 0, .2], [0, .8, .2]], atol=1e-7)
    np.testing.assert_allclose(T[1], [[0, .2, .8], [.2, 0, .8], [0, .2, .8]], atol=1e-7)
    # expected reward of arriving in C
    np.testing.assert_allclose(np.asarray(m.reward), [[.2, .2, .2], [.8, .8, .8]], atol=1e-7)
    np.testing.assert_allclose(np.asarray(m.features(2)), [5 / 18, 5 / 18], atol=1e-7)
    # always-a2 earns eta = 0.8: the stationary distribution of T[1] puts 0.8 on C
    w, v = np.linalg.eig(T[1].T)
    pi = np.real(v[:, np.argmin(abs(w - 1))])
    pi /= pi.sum()
    assert pi @ np.asarray(m.reward[1]) == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize("name", ["tiger", "three-state", "tiger.pomdpx", "hallway.pomdpx"])
def test_models_not_read_from_pomdp_files_round_trip_through_the_writer(name):
    from jaxpomdp.io import dumps_pomdp, loads_pomdp

    m = problems.get(name)  # state_features (three-state) are not part of the .pomdp format
    again = loads_pomdp(dumps_pomdp(m), "again.pomdp")
    for field in ("next_state", "next_prob", "obs_prob", "reward", "initial_belief", "discount"):
        np.testing.assert_array_equal(np.asarray(getattr(again, field)), np.asarray(getattr(m, field)), field)
    assert (again.state_names, again.action_names, again.observation_names) == (
        m.state_names, m.action_names, m.observation_names)
