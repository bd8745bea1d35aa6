"""The check-and-sample heuristic: its belief is Bayes' rule on the exact model, it never breaks a rule,
its tuning is honest (chosen on some episodes, valued on others), and its values sit where they must."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpomdp import belief as belief_mod
from jaxpomdp import simulate
from jaxpomdp.problems import rocksample_heuristic as H
from jaxpomdp.problems.rocksample import ILLEGAL_PENALTY, rocksample
from jaxpomdp.problems.rocksample_sim import rocksample_sim


def _rock_marginals(sim, b: np.ndarray) -> np.ndarray:
    """P(rock i good) under a tabular belief over RockSample's ``(x n + y) 2^k + rocks`` states."""
    k = sim.k
    masks = np.arange(b.shape[0] - 1) % (2 ** k)  # the last state is the terminal one
    bits = (masks[:, None] >> (k - 1 - np.arange(k))) & 1
    return (b[:-1, None] * bits).sum(0) / b[:-1].sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_belief_is_the_exact_models_belief_rock_by_rock(seed):
    # the same random walk of checks and moves on the exact tabular RockSample(4,4) and in the policy's memory
    sim, model = rocksample_sim(4, 4), rocksample(4, 4)
    pol = H.CheckAndSamplePolicy.of(sim)
    rng = np.random.default_rng(seed)
    m, b = pol.init(sim), np.asarray(model.initial_belief)
    for _ in range(12):
        a = int(rng.choice([0, 1, 4, 5, 6, 7]))  # north, east (never off the grid from x <= 2), checks
        if a == 1 and int(m.x) >= 2 or a == 0 and int(m.y) >= 3:
            a = 4 + int(rng.integers(4))
        o = int(rng.integers(2))
        b_next, log_prob = belief_mod.update(model, jnp.asarray(b), a, o)
        if not np.isfinite(float(log_prob)):
            continue
        b = np.asarray(b_next)
        m = pol.update(sim, m, jnp.int32(a), jnp.int32(o))
        np.testing.assert_allclose(np.asarray(m.p), _rock_marginals(sim, b), atol=2e-5)
        # the position the policy tracks is the one the exact belief is on
        cells = np.flatnonzero(b[:-1] > 0) // 2 ** sim.k
        assert set(cells.tolist()) == {int(m.x) * 4 + int(m.y)}


@pytest.mark.parametrize("name", ["7,8", "15,15 seed 3"])
def test_it_never_breaks_a_rule_and_samples_each_rock_once(name):
    n, k = (int(v) for v in name.split()[0].split(","))
    sim = rocksample_sim(n, k, seed=int(name.split()[-1]) if "seed" in name else None)
    for t in [H.Thresholds(), H.Thresholds(0.8, 0.2, 30, 8), H.Thresholds(0.95, 0.05, 0, 0)]:
        pol = H.CheckAndSamplePolicy.of(sim, t)
        keys = jax.random.split(jax.random.key(1), 64)
        trajs = jax.vmap(lambda key: simulate.rollout(key, sim, pol, 150))(keys)
        live = ~np.asarray(jnp.concatenate([jnp.zeros((64, 1), bool), trajs.dones[:, :-1]], 1))
        rewards = np.asarray(trajs.rewards)
        assert not np.any(rewards[live] == ILLEGAL_PENALTY), t
        assert np.all(np.asarray(trajs.dones[:, -1])), "every episode exits within 150 steps"
        samples = (np.asarray(trajs.actions) == 4 + k) & live
        assert np.all(samples.sum(1) <= k)
        assert np.all(np.abs(rewards[samples]) == 10)  # a sample always lands on a rock that is still there


def test_values_sit_between_exiting_at_once_and_the_optimum():
    # RockSample(7,8): exiting at once earns 10 gamma^6 = 7.35; SARSOP's long runs 21.3 (BENCHMARKS.md),
    # the fully observable bound 28.5. A tuned check-and-sample policy earns most of the optimum.
    sim = rocksample_sim(7, 8)
    ref = H.reference(sim, 0, tune_episodes=200, episodes=1000)
    ev = ref.evaluation
    half = 1.96 * float(ev.stderr)
    assert 17.0 < float(ev.mean) < 21.3 + half, (ref, half)
    # no rock: it walks east, 10 gamma^(n - 1 - x0) exactly
    empty = rocksample_sim(5, 0)
    ev0 = simulate.evaluate(jax.random.key(0), empty, H.CheckAndSamplePolicy.of(empty), num_episodes=4)
    assert float(ev0.mean) == pytest.approx(10 * 0.95 ** 4, rel=1e-6)


def test_tuning_picks_the_best_setting_on_its_episodes_and_values_it_on_others():
    sim = rocksample_sim(5, 5)
    grid = dict(sample_at=(0.8, 0.95), discard_below=(0.1,), check_within=(0, 6), max_checks=(4,))
    key = jax.random.key(3)
    best, mean = H.tune(sim, key, episodes=100, grid=grid)
    means = {t: float(simulate.evaluate(key, sim, H.CheckAndSamplePolicy.of(sim, t), num_episodes=100).mean)
             for t in [H.Thresholds(s, 0.1, c, 4) for s in (0.8, 0.95) for c in (0, 6)]}
    assert mean == pytest.approx(max(means.values())) and means[best] == pytest.approx(mean)
    assert len(set(means.values())) > 1  # the grid's settings do differ
    r1 = H.reference(sim, 7, tune_episodes=100, episodes=200, grid=grid)
    r2 = H.reference(sim, 7, tune_episodes=100, episodes=200, grid=grid)
    assert r1.thresholds == r2.thresholds and float(r1.evaluation.mean) == float(r2.evaluation.mean)
    # the evaluation's episodes are not the tuning's: its mean is not the tuning mean
    assert float(r1.evaluation.mean) != pytest.approx(r1.tuning_mean, abs=1e-6)
    assert r1.evaluation.num_episodes == 200 and math.isfinite(float(r1.evaluation.stderr))


def test_thresholds_out_of_range_are_refused():
    sim = rocksample_sim(4, 4)
    for bad in [H.Thresholds(sample_at=0.4), H.Thresholds(discard_below=0.6), H.Thresholds(check_within=-1),
                H.Thresholds(max_checks=-2)]:
        with pytest.raises(ValueError, match="need|must be"):
            H.CheckAndSamplePolicy.of(sim, bad)
