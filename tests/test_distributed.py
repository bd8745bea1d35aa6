"""Solvers on a mesh of 4 devices give the results they give on one (issue 7).

The device count is fixed when JAX starts, so the checks run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (4 CPU devices): each solver
is run with the same seed with and without ``mesh=distributed.make_mesh()``, and
the compiled steps are checked to be partitioned over the 4 devices.
Tolerances: the batch reductions are summed in another order, so the numbers
agree to float32 rounding (relative 1e-5); the discrete results (the number of
vectors, the controller graph, iteration counts) are identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from jaxpomdp import distributed

WORKER = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    from jaxpomdp import distributed, problems
    from jaxpomdp.solvers import conjpomdp, gpomdp, nvi, point_based

    assert jax.device_count() == 4, jax.devices()
    mesh = distributed.make_mesh()
    out = {}

    def leaves(tree):
        return [np.asarray(x, np.float64).ravel().tolist() for x in jax.tree.leaves(tree)]

    # HSVI on Tiger, PBVI and Perseus on 4x3.95
    for name, method, n in [("tiger", "hsvi", 10), ("4x3.95", "pbvi", 4), ("4x3.95", "perseus", 3)]:
        m = problems.get(name)
        runs = [point_based.solve(m, method=method, time_limit=None, max_iterations=n, target_gap=0, seed=0,
                                  perseus_beliefs=200, mesh=mesh_) for mesh_ in (None, mesh)]
        out[f"{method}-{name}"] = [{"lower": r.lower_bound, "upper": r.upper_bound, "vectors": len(r.alphas),
                                    "alphas": np.asarray(r.alphas, np.float64).ravel().tolist()} for r in runs]

    m = problems.get("tiger")
    cfg = gpomdp.Config(num_chains=64, num_steps=50, num_restarts=2, memory=2)
    runs = [gpomdp.solve(m, time_limit=None, max_iterations=5, seed=0, config=cfg, mesh=mesh_)
            for mesh_ in (None, mesh)]
    out["gpomdp"] = [{"params": leaves(r.info["params"]), "history": [row[1:] for row in r.history]} for r in runs]
    ccfg = conjpomdp.Config(num_chains=64, num_steps=100)
    runs = [conjpomdp.solve(m, time_limit=None, max_iterations=3, seed=0, config=ccfg, mesh=mesh_)
            for mesh_ in (None, mesh)]
    out["conjpomdp"] = [{"params": leaves(r.info["params"]), "iterations": r.info["iterations"]} for r in runs]

    config = nvi.default_config(m)._replace(capacity=64, hidden=(16,), num_particles=32, b0_particles=64,
                                            max_depth=8, pool_capacity=128, train_steps=10, refresh_nodes=2,
                                            fit_steps=10)
    runs = [nvi.solve(m, time_limit=None, max_iterations=4, seed=2, config=config, warmup_steps=20, mesh=mesh_)
            for mesh_ in (None, mesh)]
    out["nvi"] = [{"estimate": r.info["value_estimate"], "loss": r.info["final_loss"],
                   "actions": np.asarray(r.policy.controller.actions).tolist(),
                   "edges": np.asarray(r.policy.controller.edges).tolist(),
                   "start": int(r.policy.controller.start)} for r in runs]
    # one compilation of each step per placement (one device, the mesh): the state a step
    # returns has the shardings it was called with
    out["nvi_compilations"] = {"explore": nvi.explore._cache_size(), "train": nvi.train._cache_size()}

    # the compiled steps are partitioned over the 4 devices
    pol = gpomdp.default_policy(m)
    with distributed.using(mesh):
        text = gpomdp._gpomdp.lower(jax.random.key(1), m, pol, pol.init_params(jax.random.key(0)), 0.9, 0.0,
                                    20, 64).compile().as_text()
        state = point_based.init(m)
        hsvi = point_based.update.lower(jax.random.key(0), m, state, point_based.Config()).compile().as_text()
    out["partitions"] = {"gpomdp": "num_partitions=4" in text, "hsvi": "num_partitions=4" in hsvi}
    json.dump(out, sys.stdout)
''')


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def close(a, b, rel=1e-5):
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rel * (1 + np.abs(b))))


@pytest.mark.parametrize("case", ["hsvi-tiger", "pbvi-4x3.95", "perseus-4x3.95"])
def test_point_based_on_a_mesh_equals_one_device(results, case):
    one, four = results[case]
    assert one["vectors"] == four["vectors"]
    assert close(four["lower"], one["lower"]) and close(four["upper"], one["upper"])
    assert close(four["alphas"], one["alphas"])


def test_gpomdp_and_conjpomdp_on_a_mesh_equal_one_device(results):
    one, four = results["gpomdp"]
    assert all(close(x, y) for x, y in zip(four["params"], one["params"]))
    assert close(four["history"], one["history"])
    one, four = results["conjpomdp"]
    assert one["iterations"] == four["iterations"]
    assert all(close(x, y, rel=1e-4) for x, y in zip(four["params"], one["params"]))


def test_nvi_on_a_mesh_equals_one_device(results):
    one, four = results["nvi"]
    assert (one["actions"], one["edges"], one["start"]) == (four["actions"], four["edges"], four["start"])
    assert close(four["estimate"], one["estimate"]) and close(four["loss"], one["loss"])


def test_nvi_steps_compile_once_per_placement(results):
    assert results["nvi_compilations"] == {"explore": 2, "train": 2}


def test_the_steps_are_partitioned_over_the_devices(results):
    assert results["partitions"] == {"gpomdp": True, "hsvi": True}


def test_a_mesh_without_the_batch_axis_is_refused():
    import jax
    from jax.sharding import Mesh
    import numpy as np
    mesh = Mesh(np.asarray(jax.devices()[:1], dtype=object), ("x",))
    with pytest.raises(ValueError, match="axis named 'batch'"):
        with distributed.using(mesh):
            pass


def test_without_a_mesh_constrain_and_replicate_change_nothing():
    import jax.numpy as jnp
    x = jnp.arange(8.0)
    assert distributed.constrain(x) is x and distributed.replicate(x, None) is x
