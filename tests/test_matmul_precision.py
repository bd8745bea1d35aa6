"""The exact computations take their matrix products in full float32 on every device.

On a GPU (TensorFloat-32) or TPU (bfloat16) a float32 product is by default taken
with a 10-bit or 8-bit mantissa, which the certified bounds cannot afford
(:mod:`jaxpomdp.precision`). Two checks:

* The jaxprs of the exact building blocks have no matrix product at less than
  ``HIGHEST`` (any backend).
* Whole solvers run under ``jax.default_matmul_precision("TF32_TF32_F32")``, the
  accelerator default made explicit. XLA's CPU backend refuses that algorithm
  ("not supported by dot_general on CPU"), so on CPU every product that a solver
  takes without forcing full precision raises: the run passes only if all of them
  are forced. NVI runs with networks that are themselves put at full precision,
  since its networks keep the device default on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxpomdp import backup, belief, bounds, controller, particles, policy, problems, prune, simulate
from jaxpomdp.precision import exact
from jaxpomdp.problems import rocksample_sim
from jaxpomdp.solvers import baseline, batched, conjpomdp, gpomdp, nvi, point_based

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCELERATOR_DEFAULT = "TF32_TF32_F32"


def _dot_precisions(jaxpr):
    """Every dot_general's precision in a (closed) jaxpr and the jaxprs nested in it."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(getattr(sub, "jaxpr", sub), "eqns"):  # a Jaxpr or ClosedJaxpr
                    found += _dot_precisions(sub)
    return found


def _full(precision) -> bool:
    return precision is not None and all(p == lax.Precision.HIGHEST for p in precision)


@pytest.fixture
def tiger():
    return problems.tiger()


@pytest.fixture
def accelerator_default():
    """Inside: JAX's default float32 product is TF32, which the CPU backend refuses."""
    if jax.default_backend() != "cpu":
        pytest.skip("the detector relies on XLA:CPU refusing TF32 products")
    with jax.default_matmul_precision(ACCELERATOR_DEFAULT):
        yield


def test_the_detector_detects(accelerator_default):
    x = jnp.arange(4.0).reshape(2, 2)
    with pytest.raises(ValueError, match="not supported"):
        jax.block_until_ready(jax.jit(lambda a: a @ a)(x))
    np.testing.assert_array_equal(jax.jit(exact(lambda a: a @ a))(x), np.asarray(x) @ np.asarray(x))


def test_building_blocks_trace_full_precision_products(tiger):
    b = tiger.initial_belief
    alphas = bounds.blind_alphas(tiger)
    mask = jnp.ones(alphas.shape[0], bool)
    beliefs = jnp.array([[0.5, 0.5], [0.9, 0.1]])
    corner = jnp.max(bounds.qmdp(tiger), axis=0)
    cases = {
        "belief.observation_probs": (lambda: belief.observation_probs(tiger, b, 0)),
        "backup.point_backup_batch": (lambda: backup.point_backup_batch(tiger, alphas, mask, beliefs)),
        "bounds.qmdp_upper_bound": (lambda: bounds.qmdp_upper_bound(tiger)),
        "bounds.fib": (lambda: bounds.fib(tiger)),
        "grad of bounds.fib": (lambda: jax.grad(lambda r: bounds.fib(tiger.replace(reward=r))[0, 0])(tiger.reward)),
        "bounds.sawtooth_batch": (lambda: bounds.sawtooth_batch(beliefs, jnp.array([50.0, 40.0]), jnp.ones(2, bool),
                                                                corner, beliefs)),
        "prune.best_at_beliefs": (lambda: prune.best_at_beliefs(alphas, mask, beliefs, jnp.ones(2, bool))),
        "AlphaVectorPolicy.action_for": (lambda: policy.AlphaVectorPolicy(alphas, jnp.arange(3)).action_for(b)),
        "particles.expectation": (lambda: particles.expectation(particles.from_states(jnp.arange(2)),
                                                                jnp.array([1.0, 2.0]))),
    }
    wrong = {}
    for name, fn in cases.items():
        found = _dot_precisions(jax.make_jaxpr(fn)())
        if not found or not all(map(_full, found)):  # none found: the check would be vacuous
            wrong[name] = found
    assert not wrong


def test_networks_keep_the_device_default():
    init_fn, apply_fn = controller.mlp((8,))
    params = init_fn(jax.random.key(0), 3)
    found = _dot_precisions(jax.make_jaxpr(apply_fn)(params, jnp.ones((4, 3))))
    assert found and not any(map(_full, found))


def test_point_based_solvers_under_the_accelerator_default(tiger, accelerator_default):
    for method in point_based.METHODS:
        r = point_based.solve(tiger, method=method, time_limit=None, max_iterations=20, seed=0)
        assert r.lower_bound <= 19.371 + 1e-3 and 19.371 - 1e-3 <= r.upper_bound, method  # V*(b0) = 19.371
        ev = simulate.evaluate(jax.random.key(1), tiger, r.policy, num_episodes=50)
        assert np.isfinite(float(ev.mean)), method
    for r in (baseline.solve_blind(tiger), baseline.solve_qmdp(tiger)):
        # listening forever (-1 / (1 - 0.95)) below, QMDP's 189 above, each certified (padded outwards)
        assert -20.001 < r.lower_bound <= -20.0 and 189.0 <= r.upper_bound < 189.01
    fixed = batched.solve_fixed(tiger, jnp.array([[0.5, 0.5], [0.85, 0.15]]), 5)
    assert float(fixed.lower) <= float(fixed.upper)
    both = batched.bounds_batch(batched.stack_models([tiger, problems.tiger(0.9)]))
    np.testing.assert_allclose(both.lower, [-20.0, -10.0], rtol=1e-5)  # listen forever: -1 / (1 - discount)


def test_exact_evaluations_under_the_accelerator_default(tiger, accelerator_default):
    # listen forever: -1 / (1 - 0.95)
    assert abs(float(controller.plan_value(jnp.array([0]), jnp.zeros((1, 2), jnp.int32), tiger)) + 20.0) < 1e-3
    pol = gpomdp.default_policy(tiger)
    params = jax.tree.map(lambda x: x + 0.1, pol.init_params(jax.random.key(0)))
    assert np.isfinite(gpomdp.exact_average_reward(tiger, pol, params))
    ev = simulate.evaluate(jax.random.key(0), tiger, policy.greedy_qmdp_policy(tiger), num_episodes=50)
    assert np.isfinite(float(ev.mean))


def test_conjpomdp_line_search_under_the_accelerator_default(accelerator_default):
    target = jnp.array([1.0, -2.0, 0.5])
    params, *_ = conjpomdp.conjpomdp(jax.random.key(0), lambda key, theta: target - theta, jnp.zeros(3),
                                     max_iterations=20)
    np.testing.assert_allclose(params, target, atol=1e-3)


@pytest.mark.parametrize("name", ["tiger", "rocksample:4,4"])
def test_nvi_exact_parts_under_the_accelerator_default(name):
    if jax.default_backend() != "cpu":
        pytest.skip("the detector relies on XLA:CPU refusing TF32 products")
    model = problems.tiger() if name == "tiger" else rocksample_sim.from_name(name)
    config = nvi.default_config(model, capacity=32, num_particles=16, b0_particles=64, hidden=(8,))
    init_fn, apply_fn = controller.mlp(config.hidden, config.value_scale)
    network = nvi.Network(init_fn, exact(apply_fn))

    def run():
        r = nvi.solve(model, time_limit=None, max_iterations=3, seed=0, config=config, network=network)
        return r.info["start_value_mc"], r.info["value_estimate"], r.upper_bound, r.info["num_nodes"]
    with jax.default_matmul_precision(ACCELERATOR_DEFAULT):
        found = run()
    assert found == run()  # full float32 is what the CPU computes anyway


def test_the_cli_under_the_accelerator_default(tmp_path):
    if jax.default_backend() != "cpu":
        pytest.skip("the detector relies on XLA:CPU refusing TF32 products")
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION=ACCELERATOR_DEFAULT, JAX_PLATFORMS="cpu")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "solve.py"), "tiger", "--solver", "hsvi",
                           "--time-limit", "5", "--episodes", "100", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.exists()
