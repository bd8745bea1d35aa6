"""Checkpoints of the policy-gradient solvers, gpomdp and conjpomdp (issue 8, items 1 and 2).

A solve stopped after ``k`` iterations (``stop=``), its checkpoint written at the
end, then resumed (``resume=load(dir)``) with the same arguments ends with exactly
the result of a solve never stopped: the same parameters (bit for bit), iteration
and step counts, restart scores and history (apart from the seconds column).
Checkpoints of another solver, seed, model or config are refused.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxpomdp import problems
from jaxpomdp.checkpoint import Checkpointer, load
from jaxpomdp.errors import CheckpointError
from jaxpomdp.solvers import conjpomdp, gpomdp

N = 6  # iterations of the reference solve
K = 2  # iterations before the stop

# Every gpomdp solve here but the restarts-memory one runs GP_CONFIG on tiger, every conjpomdp
# solve CG_CONFIG on three-state: one compiled iteration each (which model and settings a
# checkpoint holds does not matter to what is checked; compiling them is most of the time).
GP_CONFIG = gpomdp.Config(num_steps=40, num_chains=4, learning_rate=0.3)
CG_CONFIG = conjpomdp.Config(num_steps=40, num_chains=4, max_line_steps=4, eps=1e-12)


def stop_after(k):
    """A ``stop`` callable that asks for a stop at its ``k + 1``-th poll (after ``k`` iterations)."""
    polls = {"n": 0}

    def stop():
        polls["n"] += 1
        return polls["n"] > k

    return stop


def assert_same(a, b):
    """Two results of the same computation: parameters bit for bit, counts, history but its seconds."""
    pa, pb = jax.tree.leaves(a.info["params"]), jax.tree.leaves(b.info["params"])
    assert len(pa) == len(pb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(pa, pb))
    for name in ("iterations", "environment_steps", "restart_scores", "restart_chosen", "gradient_evaluations",
                 "gradient_norm", "exact_average_reward"):
        assert a.info.get(name) == b.info.get(name), name
    assert [row[1:] for row in a.history] == [row[1:] for row in b.history]


def stopped_and_resumed(solve, model, tmp_path, **kwargs):
    """The reference solve, the one stopped after K iterations and its resumption."""
    reference = solve(model, time_limit=None, max_iterations=N, seed=1, **kwargs)
    ckpt = Checkpointer(tmp_path, every=1e9)
    first = solve(model, time_limit=None, max_iterations=N, seed=1, checkpoint=ckpt, stop=stop_after(K), **kwargs)
    assert first.info["stop_reason"] == "stopped" and first.info["iterations"] == K and len(first.history) == K
    assert ckpt.saves == 1  # at the end, though never due
    resumed = solve(model, time_limit=None, max_iterations=N, seed=1, resume=load(tmp_path), checkpoint=ckpt,
                    **kwargs)
    return reference, first, resumed


@pytest.mark.parametrize("config", [GP_CONFIG, GP_CONFIG._replace(num_restarts=3, memory=2)],
                         ids=["plain", "restarts-memory"])
def test_gpomdp_stopped_and_resumed_equals_uninterrupted(tmp_path, config):
    model = problems.get("tiger")
    reference, first, resumed = stopped_and_resumed(gpomdp.solve, model, tmp_path, config=config)
    assert reference.info["stop_reason"] == resumed.info["stop_reason"] == "max_iterations"
    assert reference.info["iterations"] == N
    assert_same(reference, resumed)
    assert resumed.history[:K] == first.history  # the rows before the checkpoint, seconds included
    # the checkpoint at the end of the resumed solve holds the final state: resuming it does nothing more
    again = gpomdp.solve(model, time_limit=None, max_iterations=N, seed=1, config=config, resume=load(tmp_path))
    assert again.info["stop_reason"] == "max_iterations"
    assert_same(reference, again)


def test_gpomdp_stopped_twice_with_a_user_policy_and_params(tmp_path):
    model = problems.get("tiger")
    policy = gpomdp.default_policy(model)
    params = jax.tree.map(lambda x: np.linspace(-0.5, 0.5, x.size, dtype=np.float32).reshape(x.shape),
                          policy.init_params(jax.random.key(0)))
    kw = {"config": GP_CONFIG, "policy": policy, "params": params, "time_limit": None, "max_iterations": N, "seed": 1}
    reference = gpomdp.solve(model, **kw)
    gpomdp.solve(model, checkpoint=Checkpointer(tmp_path, every=1e9), stop=stop_after(1), **kw)
    often = Checkpointer(tmp_path, every=1e-9)  # due after every iteration
    gpomdp.solve(model, checkpoint=often, stop=stop_after(2), resume=load(tmp_path), **kw)
    assert often.saves == 2 + 1 and load(tmp_path).loop["iteration"] == 3
    assert_same(reference, gpomdp.solve(model, resume=load(tmp_path), **kw))
    with pytest.raises(CheckpointError, match="params"):  # other starting parameters
        gpomdp.solve(model, resume=load(tmp_path), **{**kw, "params": jax.tree.map(lambda x: x + 1, params)})


def test_conjpomdp_stopped_and_resumed_equals_uninterrupted(tmp_path):
    model = problems.three_state()
    reference, first, resumed = stopped_and_resumed(conjpomdp.solve, model, tmp_path, config=CG_CONFIG)
    assert reference.info["stop_reason"] == resumed.info["stop_reason"] == "max_iterations"
    assert reference.info["iterations"] == N
    assert_same(reference, resumed)
    assert resumed.history[:K] == first.history
    state = load(tmp_path)
    assert state.solver == "conjpomdp" and int(state.leaves[4]) == N  # ConjState.iteration


def test_checkpoints_of_other_solvers_seeds_models_or_settings_are_refused(tmp_path):
    tiger, three = problems.get("tiger"), problems.three_state()
    a, b = tmp_path / "gp", tmp_path / "cg"  # (shapes compiled by the tests above)
    gpomdp.solve(tiger, time_limit=None, max_iterations=1, seed=1, config=GP_CONFIG, checkpoint=Checkpointer(a))
    conjpomdp.solve(three, time_limit=None, max_iterations=1, seed=1, config=CG_CONFIG, checkpoint=Checkpointer(b))
    with pytest.raises(CheckpointError, match="a checkpoint of solver 'gpomdp', not 'conjpomdp'"):
        conjpomdp.solve(tiger, seed=1, config=CG_CONFIG, resume=load(a))
    with pytest.raises(CheckpointError, match="a checkpoint of solver 'conjpomdp', not 'gpomdp'"):
        gpomdp.solve(three, seed=1, config=GP_CONFIG, resume=load(b))
    with pytest.raises(CheckpointError, match="seed 1 .now 2"):
        gpomdp.solve(tiger, seed=2, config=GP_CONFIG, resume=load(a))
    with pytest.raises(CheckpointError, match="seed 1 .now 2"):
        conjpomdp.solve(three, seed=2, config=CG_CONFIG, resume=load(b))
    with pytest.raises(CheckpointError, match="another model"):
        gpomdp.solve(three, seed=1, config=GP_CONFIG, resume=load(a))
    with pytest.raises(CheckpointError, match="another model"):
        conjpomdp.solve(tiger, seed=1, config=CG_CONFIG, resume=load(b))
    with pytest.raises(CheckpointError, match="config"):
        gpomdp.solve(tiger, seed=1, config=GP_CONFIG._replace(learning_rate=0.1), resume=load(a))
    with pytest.raises(CheckpointError, match="config"):
        conjpomdp.solve(three, seed=1, config=CG_CONFIG._replace(s0=2.0), resume=load(b))


def test_time_limit_counts_the_seconds_before_the_checkpoint(tmp_path):
    model = problems.get("tiger")
    first = gpomdp.solve(model, time_limit=None, max_iterations=2, seed=1, config=GP_CONFIG,
                         checkpoint=Checkpointer(tmp_path, every=1e9))
    spent = load(tmp_path).loop["elapsed"]
    assert spent >= first.history[-1][0] > 0
    # a limit already used up before the checkpoint: no more iterations
    late = gpomdp.solve(model, time_limit=spent / 2, max_iterations=5, seed=1, config=GP_CONFIG,
                        resume=load(tmp_path))
    assert late.info["stop_reason"] == "time limit" and late.info["iterations"] == 2
    assert late.solve_seconds >= spent


def test_callback_false_stops_and_the_stop_reasons(tmp_path):
    tiger, three = problems.get("tiger"), problems.three_state()
    r = gpomdp.solve(tiger, time_limit=None, max_iterations=5, config=GP_CONFIG,
                     callback=lambda s, eta, norm, it: it < 2)
    assert r.info["stop_reason"] == "callback" and r.info["iterations"] == 2
    r = conjpomdp.solve(three, time_limit=None, max_iterations=5, config=CG_CONFIG,
                        callback=lambda s, eta, norm, it: it < 1)
    assert r.info["stop_reason"] == "callback" and r.info["iterations"] == 1
    r = gpomdp.solve(tiger, time_limit=None, max_iterations=5, config=GP_CONFIG, gradient_tolerance=1e9)
    assert r.info["stop_reason"] == "gradient tolerance" and r.info["iterations"] == 1
    r = gpomdp.solve(tiger, max_iterations=5, config=GP_CONFIG, stop=lambda: True)
    assert r.info["stop_reason"] == "stopped" and r.info["iterations"] == 0
