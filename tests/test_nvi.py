"""Neural Value Iteration: the train step compiles once, runs are reproducible, the
solver's result is well formed, and it improves on the blind policy (small settings;
the acceptance runs live in benchmarks/nvi.py)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpomdp import problems, simulate
from jaxpomdp.controller import exact_value, to_pg
from jaxpomdp.problems.rocksample_sim import rocksample_sim
from jaxpomdp.solvers import nvi

#: The small Tiger configuration the NVI tests share (tests/test_checkpoint.py and tests/test_guards.py use the
#: same one): ``Config`` is a static argument and every field ``explore`` / ``train`` / ``init`` read is baked into
#: the compiled program, so one configuration compiles them once for the whole session (``explore`` alone takes
#: 10-30 s to compile per distinct configuration). Two edge refreshes per iteration, so that the refresh path runs;
#: snapshots every 2 iterations (read only by ``solve``; Tiger is valued exactly after every iteration anyway).
SMALL = nvi.Config(capacity=32, hidden=(16, 16), num_particles=32, b0_particles=128, max_depth=12,
                   pool_capacity=64, batch_per_node=8, td_steps=8, train_steps=8, fit_steps=16, fit_repeats=2,
                   info_steps=4, verify_successors=0,  # successors by the networks; tests below verify
                   refresh_nodes=2, snapshot_every=2)
#: Training on home beliefs only, and refreshed edges kept unless they lose more than ``1 + |V|``: the home-belief
#: test needs both; the train-step trace test uses it too, so the two compile one train step.
HOME = SMALL._replace(home_fraction=1.0, improve_tol=-1.0)

#: notebooks/02_neural_value_iteration.ipynb's small settings for the RockSample(4, 4) simulator (its OVERRIDES);
#: the smoke test below and test_cli.py's RockSample run use them, so the three share compiled programs.
ROCKSAMPLE_SMALL = dict(capacity=32, hidden=(16, 16), num_particles=32, b0_particles=128, max_depth=16,
                        pool_capacity=64, batch_per_node=8, td_steps=8, train_steps=8, fit_steps=16, fit_repeats=2,
                        info_steps=4)


# the solver's pieces, compiled once per shape (called eagerly, their scans and maps trace on every call)
_backup = jax.jit(nvi.backup, static_argnames=("apply_fn", "config"))
_collect = jax.jit(nvi.collect, static_argnames=("config", "apply_fn"))
_add_node = jax.jit(nvi._add_node, static_argnames=("config", "apply_fn"))
_refresh_node = jax.jit(nvi._refresh_node, static_argnames=("config", "apply_fn"))
_train_step = jax.jit(nvi.train_step, static_argnames=("config", "apply_fn"))
_successors = jax.jit(nvi._successors, static_argnames=("apply_fn", "verify", "horizon", "shortlist"))


@functools.lru_cache(maxsize=None)
def _solve_tiger(seed=0, iterations=6):
    return nvi.solve(problems.tiger(), time_limit=None, max_iterations=iterations, seed=seed, config=SMALL,
                     warmup_steps=64)


def test_train_step_traces_once():
    m = problems.tiger()
    net = nvi.Network(*nvi.mlp(SMALL.hidden, SMALL.value_scale))
    st = nvi.init(jax.random.key(0), m, SMALL, net)
    step = jax.jit(chex.assert_max_traces(nvi.train_step, n=1), static_argnames=("config", "apply_fn"))
    losses = []
    for i in range(3):  # HOME: the home-belief test's train step, the same program (one compilation)
        st, loss = step(jax.random.key(i), m, st, HOME, net.apply_fn)
        losses.append(float(loss))
    assert int(st.steps) == 3 and all(np.isfinite(losses))
    # a new node (a different active mask / edges) is data, not a new trace
    st = st._replace(active=st.active.at[5].set(True), edges=st.edges.at[5].set(1))
    st, _ = step(jax.random.key(9), m, st, HOME, net.apply_fn)


def test_reproducible_under_a_seed():
    a = _solve_tiger()
    b = nvi.solve(problems.tiger(), time_limit=None, max_iterations=6, seed=0, config=SMALL, warmup_steps=64)
    assert [r[1:] for r in a.history] == [r[1:] for r in b.history]
    ca, cb = a.policy.controller, b.policy.controller
    np.testing.assert_array_equal(np.asarray(ca.actions), np.asarray(cb.actions))
    np.testing.assert_array_equal(np.asarray(ca.edges), np.asarray(cb.edges))
    for x, y in zip(jax.tree.leaves(ca.params), jax.tree.leaves(cb.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_result_is_well_formed_and_beats_blind_on_tiger():
    res = _solve_tiger()
    # valued exactly (a tabular model): the lower bound is the exact value of following the controller
    assert res.lower_bound == pytest.approx(exact_value(res.policy.controller, problems.tiger()), abs=1e-4)
    assert res.lower_bound == res.info["start_value_mc"] and res.info["start_value_kind"] == "exact"
    assert res.upper_bound == pytest.approx(189.0, abs=0.1)  # QMDP at b0, certified
    assert len(res.history) == 7 and all(len(r) == 5 for r in res.history)
    info = res.info
    for key in ("num_nodes", "parameter_bytes", "alpha_vector_bytes", "value_estimate", "reachable_nodes",
                "start_value_mc", "train_steps"):
        assert key in info
    assert info["alpha_vector_bytes"] == info["num_nodes"] * 2 * 4
    assert info["num_nodes"] >= 3 and info["train_steps"] == 64 + 6 * 8
    ev = simulate.evaluate(jax.random.key(0), problems.tiger(), res.policy, num_episodes=1000)
    assert float(ev.mean) > -20.0 + 1.96 * float(ev.stderr)  # better than listening forever
    pg = to_pg(res.policy.controller)
    assert len(pg.splitlines()) == info["reachable_nodes"]


def test_rocksample_simulator_smoke():
    sim = rocksample_sim(4, 4)
    # notebooks/02_neural_value_iteration.ipynb's small settings (its OVERRIDES, as test_cli.py's rocksample run):
    # the same compiled programs for the three; successors verified by running the controller (the simulators'
    # default)
    cfg = nvi.default_config(sim, **ROCKSAMPLE_SMALL)
    assert cfg.verify_successors > 0
    res = nvi.solve(sim, time_limit=None, max_iterations=3, seed=1, config=cfg, warmup_steps=16)
    assert res.upper_bound == pytest.approx(22.41, abs=0.01)  # the fully observable value at b0
    assert res.info["upper_bound_kind"] == "fully-observable"
    assert res.info["alpha_vector_bytes"] == res.info["num_nodes"] * 257 * 4
    ev = simulate.evaluate(jax.random.key(0), sim, res.policy, num_episodes=100, max_abs_reward=100.0, horizon=60)
    assert np.isfinite(float(ev.mean))


def test_nvi_runs_under_x64_with_int32_nodes():
    """Under JAX_ENABLE_X64 an int64 start node broke the scan of the controller's return (carry int64 in,
    int32 out), and the backups' int64 successors were scattered into the int32 edges (a FutureWarning, an
    error in later JAX); so were an edge refresh's (the simulators refresh 16 nodes an iteration by default)
    where an observation no particle produced takes the node best overall (an int64 argmax)."""
    import warnings
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        sim = rocksample_sim(4, 4)
        cfg = nvi.default_config(sim, **ROCKSAMPLE_SMALL)._replace(train_steps=2, fit_steps=2)
        res = nvi.solve(sim, time_limit=None, max_iterations=1, seed=1, config=cfg, warmup_steps=2)
        c = res.policy.controller
        assert c.actions.dtype == c.edges.dtype == jnp.int32 and res.info["num_nodes"] >= sim.num_actions
        assert np.isfinite(res.lower_bound if res.lower_bound is not None else res.info["value_estimate"])


@pytest.mark.parametrize("exact", [False, True])
def test_snapshot_keeps_the_newest_good_controller_not_a_clearly_worse_one(exact):
    m = problems.tiger()
    net = nvi.Network(*nvi.mlp(SMALL.hidden, SMALL.value_scale))
    st = nvi.init(jax.random.key(0), m, SMALL, net)
    key = nvi._eval_key(0)
    first = nvi.snapshot(key, m, st, net.apply_fn, 1, exact=exact)
    # the blind nodes only: the best start is "listen forever", -1 per step (simulated: over the 149-step horizon)
    assert int(first.best_iteration) == 1 and int(first.best_start) == 0
    listen = -1 / 0.05 if exact else -(1 - 0.95 ** 149) / 0.05
    assert float(first.best_score) == pytest.approx(listen, abs=1e-4 if exact else 1e-3)
    # a worse controller (every node opens the left door forever) is valued but not kept
    worse = first._replace(actions=first.actions.at[:3].set(1))
    kept = nvi.snapshot(key, m, worse, net.apply_fn, 2, exact=exact)
    assert int(kept.best_iteration) == 1 and float(kept.best_score) == float(first.best_score)
    assert float(kept.peak_score) == float(first.best_score)
    np.testing.assert_array_equal(np.asarray(kept.best_actions), np.asarray(st.actions))
    ctrl = nvi.best_controller(kept, net.apply_fn)
    assert int(ctrl.actions[ctrl.start]) == 0
    # one as good as the best (here: the same one again) is kept: the newest of the good ones
    again = nvi.snapshot(key, m, kept._replace(actions=st.actions), net.apply_fn, 3, exact=exact)
    assert int(again.best_iteration) == 3


def test_exact_snapshot_starts_from_the_best_node_not_the_networks_choice():
    # tabular models are valued exactly: the start is the active node best at b0 by exact value, whatever the
    # networks say (here: untrained), and an inactive node is never chosen however good its edges
    m = problems.tiger()
    net = nvi.Network(*nvi.mlp(SMALL.hidden, SMALL.value_scale))
    st = nvi.init(jax.random.key(0), m, SMALL, net)
    # node 3 listens; nodes 4 / 5 listen again after a left / right; two agreeing observations send to 6 / 7,
    # which open the other door and go back to 3 (a good plan); disagreeing ones back to 3
    acts = jnp.array([0, 0, 0, 2, 1], jnp.int32)
    edges = jnp.array([[4, 5], [6, 3], [3, 7], [3, 3], [3, 3]], jnp.int32)
    good = st._replace(actions=st.actions.at[3:8].set(acts), edges=st.edges.at[3:8].set(edges))
    cands = [good._replace(active=good.active.at[3:8].set(on)) for on in (False, True)]
    out = [nvi.snapshot(nvi._eval_key(0), m, c, net.apply_fn, 1, exact=True) for c in cands]
    assert int(out[0].best_start) in (0, 1, 2) and float(out[0].best_score) == pytest.approx(-20.0, abs=1e-4)
    assert int(out[1].best_start) == 3
    ctrl = nvi.best_controller(out[1], net.apply_fn)
    assert float(out[1].best_score) == pytest.approx(exact_value(ctrl, m), abs=1e-5)
    assert float(out[1].best_score) > 0  # better than listening forever (-20)


@pytest.mark.parametrize("exact", [False, True])
def test_solve_returns_a_kept_snapshot(exact, monkeypatch):
    if not exact:  # Tiger too big to be valued exactly: snapshots by simulation
        monkeypatch.setattr(nvi, "MAX_EXACT_ENTRIES", 0)
    m = problems.tiger()
    res = nvi.solve(m, time_limit=None, max_iterations=6, seed=0, config=SMALL,
                    warmup_steps=64)
    info = res.info
    assert info["start_value_kind"] == ("exact" if exact else "simulated")
    # simulated: every snapshot_every iterations; exact: after every iteration, and the best one is kept
    assert info["controller_iteration"] in ((1, 2, 3, 4, 5, 6) if exact else (2, 4, 6))
    if info["controller_iteration"] == 6:  # the last one
        assert info["start_value_mc"] == pytest.approx(info["last_start_value_mc"], rel=1e-6)
    c = res.policy.controller
    assert info["num_nodes"] == int(np.sum(np.asarray(c.active)))
    assert bool(c.active[c.start])
    if exact:
        assert info["start_value_mc"] >= info["last_start_value_mc"]
        assert exact_value(c, m) == pytest.approx(info["start_value_mc"], abs=1e-4)
    # every valuation is reported: [seconds, iteration, value, stderr], in order, the last iteration's included;
    # valued exactly, every snapshot_every-th and every change (so the best value is among them)
    rows = info["snapshots"]
    its = [r[1] for r in rows]
    assert its == sorted(set(its)) and its[-1] == 6 and {2, 4, 6} <= set(its)
    if not exact:
        assert its == [2, 4, 6] and all(r[3] > 0 for r in rows)
    else:
        assert all(r[3] == 0 for r in rows)
        assert max(r[2] for r in rows) == pytest.approx(info["start_value_mc"], abs=1e-6)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows) and rows[-1][0] <= res.solve_seconds
    assert {r[1]: r[2] for r in rows}[info["controller_iteration"]] == pytest.approx(info["start_value_mc"],
                                                                                      abs=1e-6)
    assert rows[-1][2] == pytest.approx(info["last_start_value_mc"], abs=1e-6)


def test_home_beliefs_stay_with_their_nodes_when_the_pool_wraps():
    # the pool is a ring (here 64 beliefs, 12 per iteration): refreshes and home-belief training must use the
    # particles a node was created at, not whatever belief has since overwritten a pool slot. The solve runs on
    # the shared SMALL (its explore / train compiled once for the session); the refreshes and the train step
    # checked below run on HOME: home beliefs only, and refreshed edges kept unless far worse
    m = problems.tiger()
    cfg = HOME
    net = nvi.Network(*nvi.mlp(cfg.hidden, cfg.value_scale))
    st = nvi.init(jax.random.key(0), m, SMALL, net)
    key = jax.random.key(1)
    for i in range(6):  # 6 x 12 beliefs: past the 64 of the ring
        st, _ = nvi.update(jax.random.fold_in(key, i), m, st, SMALL, net.apply_fn)
    assert int(st.pool_count) > cfg.pool_capacity and int(st.backups) > 0
    other = st._replace(pool=jax.tree.map(lambda x: 1 - x, st.pool))  # every pooled belief replaced
    k = jax.random.key(2)
    changed = 0
    for i in range(4):
        a = _refresh_node(jax.random.fold_in(k, i), m, st, cfg, net.apply_fn)
        b = _refresh_node(jax.random.fold_in(k, i), m, other, cfg, net.apply_fn)
        np.testing.assert_array_equal(np.asarray(a.edges), np.asarray(b.edges))
        changed += int(np.any(np.asarray(a.edges) != np.asarray(st.edges)))
    assert changed > 0  # some refresh re-chose edges: the comparison above is not of untouched nodes
    _, loss_a = _train_step(k, m, st, cfg, net.apply_fn)
    _, loss_b = _train_step(k, m, other, cfg, net.apply_fn)
    assert float(loss_a) == float(loss_b)
    # a node added at a belief holds exactly its particles (the tiger known to be behind the left door)
    b = jnp.zeros(cfg.num_particles, jnp.int32)
    added, _, _ = _add_node(k, m, st, b, cfg._replace(improve_tol=-1e9, improve_z=-1e9), net.apply_fn)
    new = np.flatnonzero(np.asarray(added.active) & ~np.asarray(st.active))
    assert len(new) == 1
    np.testing.assert_array_equal(np.asarray(added.home[new[0]]), np.asarray(b))


def test_tabulated_node_values_give_the_same_backups_and_collection():
    # a tabular model's node values are looked up per state while exploring instead of recomputed per particle
    m = problems.get("4x3.95")
    cfg = SMALL._replace(capacity=16)
    net = nvi.Network(*nvi.mlp(cfg.hidden, cfg.value_scale))
    st = nvi.init(jax.random.key(0), m, cfg, net)
    # six more nodes (random actions and edges) on top of the 4 blind ones: a graph for the followed trajectories
    # and successors to choose among, with every node's network distinct (freshly initialised), without compiling
    # a solver iteration on 4x3 only for this
    rng = np.random.default_rng(1)
    more = np.arange(m.num_actions, 10)
    st = st._replace(actions=st.actions.at[more].set(rng.integers(0, m.num_actions, len(more), dtype=np.int32)),
                     edges=st.edges.at[more].set(rng.integers(0, 10, (len(more), m.num_observations), dtype=np.int32)),
                     active=st.active.at[more].set(True), num_nodes=jnp.int32(10))
    table = nvi._value_table(m, st, net.apply_fn, cfg)
    assert table.shape == (16, m.num_states)
    states, valid, best = _collect(jax.random.key(2), m, st, cfg, net.apply_fn)
    s2, v2, b2 = _collect(jax.random.key(2), m, st, cfg, net.apply_fn, table)
    np.testing.assert_array_equal(np.asarray(states), np.asarray(s2))
    np.testing.assert_array_equal(np.asarray(best), np.asarray(b2))
    np.testing.assert_array_equal(np.asarray(valid), np.asarray(v2))
    assert int(np.sum(np.asarray(valid))) > 0 and len(set(np.asarray(best).tolist())) > 1  # beliefs, nodes
    for t in range(int(np.sum(np.asarray(valid)))):
        a = _backup(jax.random.key(3 + t), m, st, states[t], net.apply_fn)
        b = _backup(jax.random.key(3 + t), m, st, states[t], net.apply_fn, table)
        np.testing.assert_allclose(np.asarray(a.q), np.asarray(b.q), rtol=1e-5, atol=1e-5)
        assert int(a.action) == int(b.action) and int(a.best) == int(b.best)
        np.testing.assert_array_equal(np.asarray(a.edges), np.asarray(b.edges))
    # the runs of verified successors and of the improvement test bootstrap from the target networks, tabulated
    # too: target networks unlike the online ones (another initialisation), so that a table of the wrong ones
    # would show
    st = st._replace(target_params=nvi.init(jax.random.key(9), m, cfg, net).params)
    table = nvi._value_table(m, st, net.apply_fn, cfg)
    boot = nvi._value_table(m, st, net.apply_fn, cfg, st.target_params)
    assert not np.allclose(np.asarray(boot), np.asarray(table))
    verify = cfg._replace(verify_successors=3)
    for t in range(int(np.sum(np.asarray(valid)))):
        a = _backup(jax.random.key(3 + t), m, st, states[t], net.apply_fn, None, verify)
        b = _backup(jax.random.key(3 + t), m, st, states[t], net.apply_fn, table, verify, boot)
        np.testing.assert_allclose(np.asarray(a.q), np.asarray(b.q), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(a.edges), np.asarray(b.edges))
    # a node added while exploring gets its row in both (its target network is its fitted one); simulators get no
    # table
    add_all = cfg._replace(improve_tol=-1e9, improve_z=-1e9)
    added, t2, boot2 = _add_node(jax.random.key(5), m, st, states[0], add_all, net.apply_fn, table, boot)
    plain, _, _ = _add_node(jax.random.key(5), m, st, states[0], add_all, net.apply_fn)
    assert int(added.num_nodes) == int(st.num_nodes) + 1
    np.testing.assert_allclose(np.asarray(added.params["params"]["Dense_0"]["kernel"]),
                               np.asarray(plain.params["params"]["Dense_0"]["kernel"]), rtol=1e-4, atol=1e-5)
    fresh = nvi._value_table(m, added, net.apply_fn, cfg)
    np.testing.assert_allclose(np.asarray(t2), np.asarray(fresh), rtol=1e-5, atol=1e-5)
    fresh_boot = nvi._value_table(m, added, net.apply_fn, cfg, added.target_params)
    np.testing.assert_allclose(np.asarray(boot2), np.asarray(fresh_boot), rtol=1e-5, atol=1e-5)
    assert nvi._value_table(rocksample_sim(4, 4), st, net.apply_fn, cfg) is None


def test_followed_trajectories_walk_the_controller_graph_not_the_networks_argmax():
    # node 3 is the networks' best everywhere; its edges lead to node 4 and node 4's back to 3: a trajectory
    # that follows the controller visits 3, 4, 3, 4, ... (the argmax policy would stay at 3)
    m = problems.tiger()
    cfg = SMALL._replace(follow_controller=1.0, explore_random=0.0)
    net = nvi.Network(*nvi.mlp(cfg.hidden, cfg.value_scale))
    st = nvi.init(jax.random.key(0), m, cfg, net)
    listen = 0
    st = st._replace(actions=st.actions.at[3:5].set(listen), edges=st.edges.at[3].set(4).at[4].set(3),
                     active=st.active.at[3:5].set(True))
    table = jnp.zeros((cfg.capacity, m.num_states)).at[3].set(100.0)
    _, valid, best = _collect(jax.random.key(1), m, st, cfg, net.apply_fn, table)
    assert bool(np.all(np.asarray(valid)))
    np.testing.assert_array_equal(np.asarray(best), np.where(np.arange(cfg.max_depth) % 2 == 0, 3, 4))


@pytest.mark.parametrize("verify, expected", [(0, 1), (1, 1), (3, 0)])
@pytest.mark.parametrize("shortlist", [0, 4])
def test_verified_successors_are_chosen_by_running_the_controller(verify, expected, shortlist):
    # the networks (here a value table) rate the blind "open-left" node best at tiger-left states, where it
    # loses 100; run from there (60 steps), listening forever (-1 a step) is the best of the three blind nodes.
    # One candidate (verify 1) is the networks' best, ranked on all particles or on 4 of them (shortlist).
    m = problems.tiger()
    cfg = SMALL._replace(td_steps=60, verify_successors=verify, shortlist_particles=shortlist)
    net = nvi.Network(*nvi.mlp(cfg.hidden, cfg.value_scale))
    st = nvi.init(jax.random.key(0), m, cfg, net)
    table = jnp.zeros((cfg.capacity, m.num_states)).at[1].set(100.0)
    b = jnp.zeros(cfg.num_particles, jnp.int32)  # the tiger behind the left door
    listen = 0
    res = _backup(jax.random.key(1), m, st, b, net.apply_fn, table, cfg)
    q_listen = float(res.q[listen])
    assert set(np.asarray(res.edges).tolist()) == {expected}
    if verify:
        # more candidates than active nodes: a free slot is never a successor, even one whose stale action and
        # edges (open-right, then listen) would earn more here than listening
        free = st._replace(actions=st.actions.at[5].set(2), edges=st.edges.at[5].set(0))
        keys = jax.random.split(jax.random.key(1), cfg.num_particles)
        _, succ = _successors(keys, m, free, b, jnp.int32(listen), net.apply_fn, table, verify=8,
                              horizon=cfg.td_steps, shortlist=shortlist)
        assert set(np.asarray(succ).tolist()) == {0}
    if verify > 1:
        # Q from the runs: -1 now, then listening for 60 steps (-19.1), then a bootstrap weighted 0.044
        assert q_listen == pytest.approx(-(1 - 0.95 ** 61) / 0.05, abs=1.0)
        # the runs use every particle whatever the shortlist: the same candidates give the same Q
        full = _backup(jax.random.key(1), m, st, b, net.apply_fn, table, cfg._replace(shortlist_particles=0))
        np.testing.assert_array_equal(np.asarray(res.q), np.asarray(full.q))
    elif verify == 1:  # the open-left node run from the tiger's side: -100 now and then
        assert q_listen < -5
    else:
        assert q_listen == pytest.approx(-1 + 0.95 * 100.0)


@pytest.mark.parametrize("tabulated, shortlist", [(True, 0), (False, 0), (False, 4)])
def test_verified_successors_with_q_by_the_networks(tabulated, shortlist):
    # as above (the networks rate open-left best at tiger-left states; the runs choose listening), but Q(listen)
    # continues with the chosen listen node's network value (table row 0, or its network where no table is
    # given, at every particle even when 4 of them rank the shortlist), not with the runs' -19:
    # -1 + 0.95 f_0(tiger-left), listening leaving the tiger where it is
    m = problems.tiger()
    cfg = SMALL._replace(td_steps=60, verify_successors=3, verified_q_by_networks=True,
                         shortlist_particles=shortlist)
    net = nvi.Network(*nvi.mlp(cfg.hidden, cfg.value_scale))
    st = nvi.init(jax.random.key(0), m, cfg, net)
    table = jnp.zeros((cfg.capacity, m.num_states)).at[1].set(100.0).at[0].set(3.0)
    b = jnp.zeros(cfg.num_particles, jnp.int32)
    listen = 0
    f0 = 3.0 if tabulated else float(net.apply_fn(nvi._take(st.params, 0), nvi._features(m, b[:1]))[0])
    res = _backup(jax.random.key(1), m, st, b, net.apply_fn, table if tabulated else None, cfg)
    if tabulated:  # the runs (60 steps of listening) chose node 0 over the table's open-left
        assert set(np.asarray(res.edges).tolist()) == {0}
    assert float(res.q[listen]) == pytest.approx(-1 + 0.95 * f0, abs=1e-4)
    runs = _backup(jax.random.key(1), m, st, b, net.apply_fn, table if tabulated else None,
                   cfg._replace(verified_q_by_networks=False))
    np.testing.assert_array_equal(np.asarray(runs.edges), np.asarray(res.edges))  # the same choice
    assert float(runs.q[listen]) == pytest.approx(-(1 - 0.95 ** 61) / 0.05, abs=1.0)


@pytest.mark.parametrize("shortlist", [0, 4])
def test_successors_reuse_the_beliefs_own_values_when_no_particle_moved(shortlist):
    # RockSample(4,4): a check leaves every particle's state as it was, a move east does not. Given the nodes'
    # values at the belief itself, _successors ranks the check's successors on them (no network evaluated) and
    # the move's on fresh values: with the true values the same Q and successors as without them; with values
    # that rate node j best everywhere, the check's one candidate (verify 1) is j and the move's is unchanged.
    from jaxpomdp.problems.rocksample_sim import _DX
    m = rocksample_sim(4, 4)
    cfg = nvi.Config(**ROCKSAMPLE_SMALL)
    net = nvi.Network(*nvi.mlp(cfg.hidden, cfg.value_scale))
    st = nvi.init(jax.random.key(0), m, cfg, net)
    b = nvi._take(st.pool, 0)
    keys = jax.random.split(jax.random.key(1), cfg.num_particles)
    F0 = nvi._values_at(net.apply_fn, st, m, b, None)
    east, check = int(np.argmax(np.asarray(_DX) == 1)), 4
    for a, moves in ((east, True), (check, False)):
        s2 = jax.vmap(lambda k, s: m.step(k, s, a)[0])(keys, b)
        assert bool(jnp.any(s2.x != b.x)) == moves
        run = functools.partial(_successors, keys, m, st, b, jnp.int32(a), net.apply_fn, None, verify=1,
                                horizon=cfg.td_steps, shortlist=shortlist)
        q, succ = run()
        q_b, succ_b = run(values_at_b=F0)
        np.testing.assert_allclose(float(q_b), float(q), rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(succ_b), np.asarray(succ))
        j = int(np.setdiff1d(np.arange(m.num_actions), np.asarray(succ))[0])   # a blind node not chosen
        _, succ_j = run(values_at_b=F0.at[j].set(1e3))
        np.testing.assert_array_equal(np.asarray(succ_j), np.asarray(succ) if moves else j)


@pytest.mark.parametrize("guide_belief, risk_std, informed", [(0.0, 0.0, False), (0.0, 1.0, True), (1.0, 0.0, True)])
def test_guided_trajectories_gather_information_at_the_belief(guide_belief, risk_std, informed):
    # Tiger, no info steps: the hidden state's upper-bound action opens the safe door at once, every step, so no
    # belief ever leans to one side. Opening is risky under an even belief (+10 or -100 by particle): with
    # risk_std the trajectory listens instead until the particles agree; guided at the belief (QMDP on the
    # particles) it listens too, as opening is worth less than listening there.
    m = problems.tiger()
    cfg = SMALL._replace(follow_controller=0.0, explore_random=0.0, info_steps=0, guide_belief=guide_belief,
                         risk_std=risk_std)
    net = nvi.Network(*nvi.mlp(cfg.hidden, cfg.value_scale))
    st = nvi.init(jax.random.key(0), m, cfg, net)
    keys = jax.random.split(jax.random.key(4), 16)
    states, valid = jax.vmap(lambda k: _collect(k, m, st, cfg, net.apply_fn)[:2])(keys)
    share = np.mean(np.asarray(states) == 0, axis=-1)[np.asarray(valid)]   # tiger-left share of each belief
    leaning = np.mean(np.maximum(share, 1 - share) >= 0.9)
    assert leaning > 0.2 if informed else leaning == 0.0


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_guide_policy_trajectories_take_the_guides_actions(share):
    # RockSample(4,4) from (0, 2), no controller, no information steps, no random actions: a guide that always
    # walks east leaves the grid after 4 steps, the particles' x counting 0, 1, 2, 3 on the way; the fully
    # informed upper-bound action (share 0) goes to a good rock first whenever there is one
    from jaxpomdp.policy import BlindPolicy
    sim = nvi._with_upper_table(rocksample_sim(4, 4))
    cfg = nvi.default_config(sim, **ROCKSAMPLE_SMALL)._replace(follow_controller=0.0, explore_random=0.0,
                                                               info_steps=0, guide_share=share)
    net = nvi.Network(*nvi.mlp(cfg.hidden, cfg.value_scale))
    st = nvi.init(jax.random.key(0), sim, cfg, net)
    east = BlindPolicy(jnp.int32(1))
    keys = jax.random.split(jax.random.key(5), 8)
    states, valid = jax.vmap(lambda k: _collect(k, sim, st, cfg, net.apply_fn, None, east)[:2])(keys)
    walked = np.all(np.asarray(valid).sum(1) == 4) and np.all(
        np.asarray(states.x)[:, :4] == np.arange(4)[None, :, None])
    assert walked == (share == 1.0)


def test_guide_for_picks_the_models_own_guide_and_refuses_what_cannot_work():
    from jaxpomdp.policy import AlphaVectorPolicy, BlindPolicy
    from jaxpomdp.problems.rocksample_heuristic import CheckAndSamplePolicy
    sim, tiger = rocksample_sim(4, 4), problems.tiger()
    on = nvi.Config(guide_share=0.5)
    assert nvi.guide_for(sim, nvi.Config()) is None and nvi.guide_for(tiger, nvi.Config()) is None
    assert isinstance(nvi.guide_for(sim, on), CheckAndSamplePolicy)
    assert isinstance(nvi.guide_for(tiger, on), AlphaVectorPolicy)  # QMDP
    mine = BlindPolicy(jnp.int32(0))
    assert nvi.guide_for(tiger, on, mine) is mine
    with pytest.raises(nvi.ConfigError, match="guide_share is 0"):
        nvi.guide_for(tiger, nvi.Config(), mine)

    class Bare:  # a simulator with no guide_policy()
        pass
    with pytest.raises(nvi.ConfigError, match="needs a guide policy: this Bare has no guide_policy"):
        nvi.guide_for(Bare(), on)
    with pytest.raises(ValueError, match="a number in \\[0, 1\\]"):
        nvi.parse_overrides(["guide_share=1.5"])


def test_memory_estimate_counts_the_state_init_allocates(monkeypatch):
    """The refusal of an oversized configuration rests on this estimate: its state part is exactly what
    ``init`` allocates (a simulator here, with structured states), and a custom network adds only its outputs."""
    from jaxpomdp.errors import ConfigError
    model = nvi._with_upper_table(rocksample_sim(5, 5))  # as solve() plans on it
    config = nvi.Config(**ROCKSAMPLE_SMALL)
    st = nvi.init(jax.random.key(0), model, config)
    terms = nvi.memory_terms(model, config)
    state, acts = nvi.memory_estimate(model, config)
    assert state == terms["state"] == sum(x.nbytes for x in jax.tree.leaves(st))
    assert acts == max(terms["networks"], terms["train"], terms["explore"])
    widths = sum(config.hidden) + 1
    assert terms["networks"] == 4 * config.capacity * max(config.b0_particles, config.num_particles) * widths
    init_fn, apply_fn = nvi.mlp((16, 16), 1.0)
    custom = nvi.Network(init_fn, lambda p, x: apply_fn(p, x))
    assert nvi.memory_terms(model, config, custom)["networks"] == terms["networks"] // widths
    # each controller run keeps its td_steps keys (8 bytes each): the train step has capacity x batch_per_node
    longer = nvi.memory_terms(model, config._replace(td_steps=config.td_steps + 1))
    assert longer["train"] - terms["train"] == 8 * config.capacity * config.batch_per_node
    deeper = nvi.memory_terms(model, config._replace(max_depth=config.max_depth + 1))
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(model.initial_state(jax.random.key(0))))
    assert deeper["explore"] - terms["explore"] == config.num_particles * state_bytes + 8
    # a bank too large for the limit is refused before anything is allocated or compiled
    monkeypatch.setenv("JAXPOMDP_MAX_MODEL_BYTES", str(state + acts - 1))
    with pytest.raises(ConfigError, match=r"NVI's state and activations would need about .* \(state "):
        nvi.solve(model, time_limit=5.0, config=config)
    monkeypatch.setenv("JAXPOMDP_MAX_MODEL_BYTES", str(state + acts + 2 ** 20))
    nvi.solve(model, time_limit=1.0, config=config, max_iterations=1)


@pytest.mark.parametrize("field, value, part, hint", [
    ("td_steps", 10 ** 8, "train", "td_steps"),            # 10**6 on tiger: 9 GB and still running at a 2 s limit
    ("batch_per_node", 10 ** 8, "train", "batch_per_node"),  # was XLA's out-of-memory traceback
    ("verify_successors", 10 ** 8, "explore", "verify_successors"),  # (max_depth: the pool check, below)
    ("fit_repeats", 10 ** 8, "explore", "fit_repeats"),
])
def test_working_arrays_too_large_are_refused_with_the_fields_that_make_them(field, value, part, hint):
    from jaxpomdp.errors import ConfigError
    config = nvi.Config(**ROCKSAMPLE_SMALL)._replace(**{field: value})
    with pytest.raises(ConfigError, match=rf"would need about .* \(state .*, {part} .*give a smaller Config\..*{hint}"):
        nvi.solve(rocksample_sim(5, 5), time_limit=5.0, config=config)


def test_counts_beyond_int32_are_refused_by_the_field_check():
    from jaxpomdp.errors import ConfigError
    for field in ("train_steps", "b0_particles", "refresh_nodes", "info_steps"):
        with pytest.raises(ConfigError, match=rf"Config.{field} = 100000000000: expected an integer >= \d and at "
                                              r"most 2147483647"):
            nvi.check_config(nvi.Config()._replace(**{field: 10 ** 11}))
    with pytest.raises(ConfigError, match=r"expected a list of positive integers at most 2147483647"):
        nvi.check_config(nvi.Config()._replace(hidden=(2 ** 31,)))
    nvi.check_config(nvi.Config()._replace(train_steps=2 ** 31 - 1))
    # an iteration's trajectories must fit in the pool (width=10**9 traced forever, then ran past any limit)
    with pytest.raises(ConfigError, match=r"width x max_depth = 4096 beliefs an iteration, more than the pool holds"):
        nvi.check_config(nvi.Config(width=64, max_depth=64))
    nvi.check_config(nvi.Config(width=32, max_depth=64))


def test_default_bank_grows_for_simulators_with_many_actions():
    """RockSample(15,15) (20 actions) filled 256 slots in two minutes; more than 16 actions get 768 nodes with
    about as many train samples (768 x 6), what the user's --set overrides; tabular models keep their preset."""
    small, large = rocksample_sim(11, 11), rocksample_sim(15, 15)
    assert (small.num_actions, large.num_actions) == (16, 20)
    assert nvi.default_config(small).capacity == nvi.Config().capacity == 256
    got = nvi.default_config(large)
    assert (got.capacity, got.batch_per_node) == (768, 6)
    assert got._replace(capacity=256, batch_per_node=16) == nvi.default_config(small)._replace(
        max_depth=got.max_depth)
    assert nvi.default_config(large, capacity=300).capacity == 300
    assert nvi.default_config(problems.get("rocksample_4_4")).capacity == 256


def test_width_is_a_loop_with_the_unrolled_loops_numbers():
    """Two trajectories an iteration run in a loop (tracing no longer grows with the width): the same pool and
    nodes as running them one after another by hand."""
    model = nvi._with_upper_table(rocksample_sim(4, 4))
    config = nvi.default_config(model, **{**ROCKSAMPLE_SMALL, "width": 2, "refresh_nodes": 0})
    apply_fn = nvi.mlp(config.hidden, config.value_scale)[1]
    st = nvi.init(jax.random.key(0), model, config)
    got = nvi.explore(jax.random.key(1), model, st, config, apply_fn)
    by_hand = st
    for key_w in jax.random.split(jax.random.key(1), 2):
        k_c, k_b = jax.random.split(key_w)
        states, valid, best = _collect(k_c, model, by_hand, config, apply_fn)
        by_hand = nvi._write_pool(by_hand, states, valid)
        by_hand = by_hand._replace(last_used=by_hand.last_used.at[jnp.where(valid, best, config.capacity)].set(
            by_hand.iteration, mode="drop"))
        keys = jax.random.split(k_b, config.max_depth)
        for t in reversed(range(config.max_depth)):
            if bool(valid[t]):
                by_hand, _, _ = _add_node(keys[t], model, by_hand, nvi._take(states, t), config, apply_fn)
    assert int(got.pool_count) == int(by_hand.pool_count) > 2
    np.testing.assert_array_equal(np.asarray(got.active), np.asarray(by_hand.active))
    np.testing.assert_array_equal(np.asarray(got.actions), np.asarray(by_hand.actions))
    np.testing.assert_array_equal(np.asarray(got.edges), np.asarray(by_hand.edges))


def test_legacy_uint32_keys_give_the_typed_keys_results():
    # nvi.init / nvi.update take the caller's key: a jax.random.PRNGKey(0) (uint32[2]) is the same threefry
    # key as its typed wrapper; the per-action key grids were reshaped as if keys were scalars
    model = rocksample_sim(4, 4)
    config = nvi.default_config(model, capacity=16, num_particles=8, b0_particles=32, hidden=(8,))
    apply_fn = nvi.mlp(config.hidden, config.value_scale)[1]

    def run(key):
        st = nvi.init(key, model, config)
        return nvi.update(key, model, st, config, apply_fn)
    legacy = jax.random.PRNGKey(5)
    for x, y in zip(jax.tree.leaves(run(legacy)), jax.tree.leaves(run(jax.random.wrap_key_data(legacy)))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
