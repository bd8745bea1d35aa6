"""RockSample(n, k) built in code: the (4,4) file exactly, sizes, speed, layouts, rules."""

import math
import os
import time

import jax
import numpy as np
import pytest

import jaxpomdp
from jaxpomdp import problems
from jaxpomdp.model import dense_transitions
from jaxpomdp.problems.rocksample import (STANDARD_LAYOUTS, random_layout, rocksample,
                                          standard_layout)

FILE_4_4 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "problems", "RockSample_4_4.pomdp")


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _file_4_4():
    path = FILE_4_4 if os.path.exists(FILE_4_4) else problems.data_file("rocksample_4_4")
    return jaxpomdp.load_pomdp(path)


def test_4_4_is_the_generator_file_up_to_state_order():
    f = _file_4_4()
    m = rocksample(4, 4)
    assert m.action_names == f.action_names == ("amn", "ame", "ams", "amw", "ac0", "ac1", "ac2", "ac3", "as")
    assert m.observation_names == f.observation_names == ("ogood", "obad")
    assert sorted(m.state_names) == sorted(f.state_names)
    # perm[i] = the file's index of our state i
    where = {name: i for i, name in enumerate(f.state_names)}
    perm = np.array([where[name] for name in m.state_names])
    Tm = np.asarray(dense_transitions(m), np.float64)
    Tf = np.asarray(dense_transitions(f), np.float64)[:, perm][:, :, perm]
    np.testing.assert_allclose(Tm, Tf, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m.obs_prob), np.asarray(f.obs_prob)[:, perm], atol=1e-6)
    np.testing.assert_allclose(np.asarray(m.reward), np.asarray(f.reward)[:, perm], atol=1e-6)
    np.testing.assert_allclose(np.asarray(m.initial_belief), np.asarray(f.initial_belief)[perm], atol=1e-6)
    assert float(m.discount) == float(f.discount) == pytest.approx(0.95)
    # the documented order is the generator's own: the permutation is the identity
    np.testing.assert_array_equal(perm, np.arange(257))


def test_4_4_sensor_is_exp_minus_distance():
    # the file's check probabilities: ogood for a bad rock = (1 - exp(-d)) / 2, i.e.
    # half-efficiency distance ln 2 (0.478835 at d = sqrt(10), 0.316060 at d = 1)
    m = rocksample(4, 4)
    s = m.state_names.index("s000000")               # (0, 0), every rock bad
    z = np.asarray(m.obs_prob, np.float64)
    for i, (rx, ry) in enumerate(STANDARD_LAYOUTS[(4, 4)].rocks):
        d = math.hypot(rx, ry)
        assert z[4 + i, s, 0] == pytest.approx((1 - math.exp(-d)) / 2, abs=1e-7)
    assert z[4 + 0, s, 0] == pytest.approx(0.478835, abs=1e-6)
    assert z[4 + 3, s, 0] == pytest.approx(0.316060, abs=1e-6)


@pytest.mark.parametrize("n, k", [(1, 0), (2, 1), (3, 2), (4, 4), (5, 5), (5, 7), (6, 3), (12, 2)])
def test_sizes(n, k):
    m = rocksample(n, k)
    assert m.num_states == n * n * 2 ** k + 1
    assert (m.num_actions, m.num_observations, m.num_successors) == (k + 5, 2, 1)
    assert m.state_names[-1] == "st" and len(set(m.state_names)) == m.num_states
    jaxpomdp.validate(m)
    b0 = np.asarray(m.initial_belief)
    assert np.count_nonzero(b0) == 2 ** k and b0.sum() == pytest.approx(1.0)


def test_7_8_builds_quickly_and_validates():
    t0 = time.perf_counter()
    m = rocksample(7, 8)
    seconds = time.perf_counter() - t0
    assert m.num_states == 12545 and m.num_actions == 13
    assert seconds < 5.0, seconds
    jaxpomdp.validate(m)
    # uniform over the 256 rock masks at the start (0, 3)
    support = np.flatnonzero(np.asarray(m.initial_belief))
    assert [m.state_names[i] for i in support[[0, -1]]] == ["s0300000000", "s0311111111"]
    # the published (7,8) sensor (zmdp's generator, APPL's pomdpx): d0 = 20, e.g.
    # rock 5 at (3,4) checked from (3,3) when bad: ogood 0.017032
    z = np.asarray(m.obs_prob, np.float64)
    assert z[4 + 5, m.state_names.index("s3300000000"), 0] == pytest.approx(0.017032, abs=1e-6)
    assert problems.get("rocksample:7,8").state_names == m.state_names


def test_11_11_builds_in_seconds():
    t0 = time.perf_counter()
    m = rocksample(11, 11)
    assert time.perf_counter() - t0 < 15.0
    assert m.num_states == 247809 and m.num_actions == 16
    assert m.state_names[0] == "s0_0_00000000000" and m.state_names[-2] == "s10_10_11111111111"
    jaxpomdp.validate(m)


def test_standard_and_random_layouts():
    assert standard_layout(11, 11).start == (0, 5)
    with pytest.raises(KeyError):
        standard_layout(6, 3)
    a, b = random_layout(6, 5, seed=3), random_layout(6, 5, seed=3)
    assert a == b and a.start == (0, 3)
    assert len(set(a.rocks)) == 5 and a.start not in a.rocks
    assert all(0 <= x < 6 and 0 <= y < 6 for x, y in a.rocks)
    assert any(random_layout(6, 5, seed=s) != a for s in range(4, 8))
    # the model is a function of the seed
    m1, m2 = rocksample(6, 5, seed=3), rocksample(6, 5, seed=3)
    assert _leaves_equal(m1, m2)
    assert _leaves_equal(m1, rocksample(6, 5, layout=a))
    assert _leaves_equal(problems.get("rocksample:6,5:3"), m1)
    assert _leaves_equal(problems.get("RockSample:6,5"), rocksample(6, 5, seed=0))
    # a seed on a standard size draws a random layout instead of the standard one
    assert not _leaves_equal(rocksample(4, 4, seed=1), rocksample(4, 4))
    with pytest.raises(ValueError, match="fit"):
        random_layout(2, 4)


def test_bad_names_and_layouts():
    with pytest.raises(KeyError, match="rocksample:n,k"):
        problems.get("rocksample:7")
    with pytest.raises(ValueError, match="outside"):
        rocksample(3, 1, layout=((0, 1), [(3, 0)]))
    with pytest.raises(ValueError, match="share a cell"):
        rocksample(3, 2, layout=((0, 1), [(1, 1), (1, 1)]))
    with pytest.raises(ValueError, match="needs 2"):
        rocksample(3, 2, layout=((0, 1), [(1, 1)]))
    with pytest.raises(ValueError, match="states"):
        rocksample(100, 20)
    with pytest.raises(ValueError, match="half_efficiency"):
        rocksample(3, 1, half_efficiency_distance=0.0)


def test_a_table_too_large_for_the_memory_limit_is_refused_before_building(monkeypatch):
    # RockSample(12,12) takes about 1.5 GB to build (measured peak, 153 bytes per action and state)
    monkeypatch.setenv("JAXPOMDP_MAX_MODEL_BYTES", "1G")
    with pytest.raises(ValueError, match=r"RockSample\(12,12\) as a table \(589,825 states, 17 actions\) needs about "
                                         r"1\.8 GiB to build, more than the 1\.0 GiB limit set by JAXPOMDP_MAX_MODEL"):
        rocksample(12, 12)
    monkeypatch.setenv("JAXPOMDP_MAX_MODEL_BYTES", "10M")
    assert rocksample(4, 4).num_states == 257  # 81 kB


def _brute_force(n, layout, d0, state, action):
    """The generator's rules for one (state name, action): (next name, reward, P(ogood))."""
    if state == "st":
        return "st", 0.0, 1.0
    x, y, bits = int(state[1]), int(state[2]), [c == "1" for c in state[3:]]

    def name(x, y, bits):
        return f"s{x}{y}" + "".join("1" if b else "0" for b in bits)

    if action in ("amn", "ame", "ams", "amw"):
        dx, dy = {"amn": (0, 1), "ame": (1, 0), "ams": (0, -1), "amw": (-1, 0)}[action]
        xp, yp = x + dx, y + dy
        if xp >= n:
            return "st", 10.0, 1.0
        if xp < 0 or yp < 0 or yp >= n:
            return "st", -100.0, 1.0
        return name(xp, yp, bits), 0.0, 1.0
    if action == "as":
        if (x, y) not in layout.rocks:
            return "st", -100.0, 1.0
        i = layout.rocks.index((x, y))
        reward = 10.0 if bits[i] else -10.0
        bits = list(bits)
        bits[i] = False
        return name(x, y, bits), reward, 1.0
    i = int(action[2:])
    rx, ry = layout.rocks[i]
    eff = 2.0 ** (-math.sqrt((x - rx) ** 2 + (y - ry) ** 2) / d0)
    return state, 0.0, (eff + (1 - eff) / 2) if bits[i] else (1 - eff) / 2


def test_5_7_agrees_with_a_brute_force_reading_of_the_rules():
    n, k = 5, 7
    m = rocksample(n, k)
    lay = STANDARD_LAYOUTS[(n, k)]
    names = m.state_names
    ns = np.asarray(m.next_state)[:, :, 0]
    p = np.asarray(m.next_prob)[:, :, 0]
    z = np.asarray(m.obs_prob, np.float64)
    r = np.asarray(m.reward, np.float64)
    rng = np.random.default_rng(0)
    # random states, every rock cell (sampling there), the east edge, and the terminal state
    picks = list(rng.integers(0, m.num_states, 40))
    picks += [names.index(f"s{x}{y}" + format(b, "07b")) for (x, y) in lay.rocks for b in (0, 127, 85)]
    picks += [names.index(f"s4{y}1010101") for y in range(5)] + [m.num_states - 1]
    for s in picks:
        for a, an in enumerate(m.action_names):
            nxt, reward, p_good = _brute_force(n, lay, 20.0, names[s], an)
            assert p[a, s] == 1.0
            assert names[ns[a, s]] == nxt, (names[s], an)
            assert r[a, s] == reward, (names[s], an)
            assert z[a, ns[a, s], 0] == pytest.approx(p_good, abs=1e-6), (names[s], an)
            assert z[a, ns[a, s], 1] == pytest.approx(1 - p_good, abs=1e-6), (names[s], an)


def test_half_efficiency_distance_keyword():
    m = rocksample(4, 4, half_efficiency_distance=20.0)
    s = m.state_names.index("s000000")
    d = math.hypot(3, 1)
    assert float(m.obs_prob[4, s, 0]) == pytest.approx((1 - 2 ** (-d / 20)) / 2, abs=1e-7)
