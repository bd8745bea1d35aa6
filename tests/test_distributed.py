"""Solvers on a mesh of 4 devices give the results they give on one (issue 7).

The device count is fixed when JAX starts, so the checks run in subprocesses: each
solver is run with the same seed with ``mesh=distributed.make_mesh()`` in one with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (4 CPU devices), and without
a mesh in one with a single device; the compiled steps the solves ran on the mesh
(GPOMDP's iteration, HSVI's step: looked up or lowered again with the same
arguments, so that they are not compiled a second time) are checked to be
partitioned over the 4 devices. The two run at the same time. The single-device
one runs the problems and settings of other tests (tests/test_checkpoint.py's; for
NVI tests/test_nvi.py's ``SMALL``) and keeps the session's ``XLA_FLAGS`` (they are
part of the compilation cache's key), so its programs come from the session's
compilation cache; the 4-device one, with its own flag, compiles its own.
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
from test_nvi import SMALL

WORKER = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    from jaxpomdp import distributed, problems
    from jaxpomdp.solvers import baseline, conjpomdp, gpomdp, nvi, point_based

    on_mesh = sys.argv[1] == "mesh"
    assert jax.device_count() == (4 if on_mesh else 1), jax.devices()
    mesh = distributed.make_mesh() if on_mesh else None
    out = {}

    def leaves(tree):
        return [np.asarray(x, np.float64).ravel().tolist() for x in jax.tree.leaves(tree)]

    # HSVI, PBVI and Perseus on Tiger (the settings of tests/test_checkpoint.py's runs)
    for name, method, n in [("tiger", "hsvi", 10), ("tiger", "pbvi", 4), ("tiger", "perseus", 3)]:
        r = point_based.solve(problems.get(name), method=method, time_limit=None, max_iterations=n, target_gap=0,
                              seed=0, perseus_beliefs=100, mesh=mesh)
        out[f"{method}-{name}"] = {"lower": r.lower_bound, "upper": r.upper_bound, "vectors": len(r.alphas),
                                   "alphas": np.asarray(r.alphas, np.float64).ravel().tolist()}

    m = problems.get("tiger")
    cfg = gpomdp.Config(num_chains=64, num_steps=50, num_restarts=2, memory=2)
    r = gpomdp.solve(m, time_limit=None, max_iterations=5, seed=0, config=cfg, mesh=mesh)
    out["gpomdp"] = {"params": leaves(r.info["params"]), "history": [row[1:] for row in r.history]}
    ccfg = conjpomdp.Config(num_chains=64, num_steps=100)
    r = conjpomdp.solve(m, time_limit=None, max_iterations=3, seed=0, config=ccfg, mesh=mesh)
    out["conjpomdp"] = {"params": leaves(r.info["params"]), "iterations": r.info["iterations"]}

    fields = json.loads(sys.argv[2])  # tests/test_nvi.py's SMALL
    config = nvi.Config(**{**fields, "hidden": tuple(fields["hidden"])})
    r = nvi.solve(m, time_limit=None, max_iterations=4, seed=2, config=config, warmup_steps=20, mesh=mesh)
    out["nvi"] = {"estimate": r.info["value_estimate"], "loss": r.info["final_loss"],
                  "actions": np.asarray(r.policy.controller.actions).tolist(),
                  "edges": np.asarray(r.policy.controller.edges).tolist(),
                  "start": int(r.policy.controller.start)}
    if not on_mesh:
        json.dump(out, sys.stdout)
        sys.exit(0)
    # one compilation of each step on the mesh: the state a step returns has the shardings
    # it was called with
    out["nvi_compilations"] = {"explore": nvi.explore._cache_size(), "train": nvi.train._cache_size()}

    # the compiled steps are partitioned over the 4 devices: those the solves above ran, not new ones.
    # GPOMDP's iteration as gpomdp.solve compiled it (baseline.compile_cached keeps it); HSVI's first
    # step as point_based.solve compiled it (its seed 0, initial capacities and default config), so
    # that JAX's caches hand that compilation back instead of compiling the step again
    iterations = [c for k, c in baseline._COMPILED.items() if k[0] is gpomdp._solve_iteration]
    with distributed.using(mesh):
        state = point_based.initial_state(m)
        hsvi = point_based.lower_update(m, state, key=jax.random.key(0)).compile().as_text()
    out["partitions"] = {"gpomdp": len(iterations) == 1 and "num_partitions=4" in iterations[0].as_text(),
                         "hsvi": "num_partitions=4" in hsvi}
    json.dump(out, sys.stdout)
''')


@pytest.fixture(scope="module")
def results():
    """``{case: [one device, the mesh]}`` (and the mesh worker's own checks), both workers at once."""
    procs = {}
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    for placement, more in (("mesh", ["--xla_force_host_platform_device_count=4"]), ("one", [])):
        # XLA_FLAGS are part of the compilation cache's key: the single-device worker keeps the session's
        env = dict(os.environ, XLA_FLAGS=" ".join(flags + more), JAX_PLATFORMS="cpu")
        if not env["XLA_FLAGS"]:
            del env["XLA_FLAGS"]
        env.pop("JAX_ENABLE_X64", None)
        procs[placement] = subprocess.Popen([sys.executable, "-c", WORKER, placement, json.dumps(SMALL._asdict())],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out = {}
    for placement, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{placement}: {stderr[-4000:]}"
        out[placement] = json.loads(stdout)
    one, mesh = out["one"], out["mesh"]
    return {**mesh, **{case: [one[case], mesh[case]] for case in one}}


def close(a, b, rel=1e-5):
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rel * (1 + np.abs(b))))


@pytest.mark.parametrize("case", ["hsvi-tiger", "pbvi-tiger", "perseus-tiger"])
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


def test_nvi_steps_compile_once_on_the_mesh(results):
    assert results["nvi_compilations"] == {"explore": 1, "train": 1}


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
