"""Numerical guards: a solve that meets NaN or infinity stops with a clear message.

The crafted model has a finite reward of 0.88 times the largest number of the default
float type (3e38 in float32; 1.6e308 under ``JAX_ENABLE_X64``): it passes ``validate``
(and, in float32, the reader), but every value bound ``|R| / (1 - discount)`` and
GPOMDP's reward sums overflow. A model that holds NaN or infinity itself is
refused before solving. A NaN that appears only after some steps is injected by
wrapping the step function. Everything runs on tiny models (the whole file takes
a few seconds beyond the compilations).
"""

import dataclasses
import functools
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpomdp
from jaxpomdp import InvalidModelError, NumericalError, validate
from jaxpomdp.cli import EXIT_NUMERICAL, main
from jaxpomdp.io import load_pomdp, loads_pomdp
from jaxpomdp.io.alpha import read_alpha
from jaxpomdp.model import from_dense
from jaxpomdp import problems
from jaxpomdp.solvers import SOLVERS, conjpomdp, gpomdp, point_based
from test_nvi import SMALL

ROOT = Path(__file__).resolve().parents[1]

#: The default float type of the models read (float64 under JAX_ENABLE_X64).
FLOAT = np.dtype(jax.dtypes.canonicalize_dtype(jnp.float_))

HUGE_REWARD = float(np.finfo(FLOAT).max) * 0.88

#: The readers refuse numbers above 1e300, so under JAX_ENABLE_X64 the huge model comes from Python and the
#: tests that read it from a file (the command line's) do not apply.
FLOAT32_ONLY = pytest.mark.skipif(FLOAT != np.float32, reason="a file cannot hold a reward that overflows float64")

HUGE = f"""discount: 0.95
values: reward
states: 2
actions: 2
observations: 2
start: uniform
T: * identity
O: * uniform
R: 0 : 0 : * : * {HUGE_REWARD:.4g}
R: 1 : 1 : * : * 1
"""


def huge_model():
    """Finite and valid (it loads), but its values overflow the float type."""
    if FLOAT == np.float32:
        return validate(loads_pomdp(HUGE))
    R = np.array([[HUGE_REWARD, 0.0], [0.0, 1.0]])  # HUGE's model, built in Python
    return validate(from_dense(np.stack([np.eye(2)] * 2), np.full((2, 2, 2), 0.5), R, np.full(2, 0.5), 0.95))


def small_model():
    """A well-behaved two-state model."""
    T = np.stack([np.eye(2), np.full((2, 2), 0.5)])
    Z = np.stack([np.array([[0.85, 0.15], [0.15, 0.85]]), np.full((2, 2), 0.5)])
    return validate(from_dense(T, Z, np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([0.5, 0.5]), 0.9))


def test_numerical_error_is_exported_and_an_arithmetic_error():
    assert jaxpomdp.NumericalError is NumericalError and "NumericalError" in jaxpomdp.__all__
    assert issubclass(NumericalError, ArithmeticError)
    e = NumericalError("x", iteration=3, what="gradient estimate")
    assert (e.iteration, e.what, e.last_good, str(e)) == (3, "gradient estimate", None, "x")


@pytest.mark.parametrize("solver", ["blind", "qmdp", "hsvi", "pbvi", "gpomdp", "conjpomdp"])
def test_a_model_with_nan_or_inf_is_refused_before_solving(solver):
    m = small_model()
    bad = dataclasses.replace(m, reward=m.reward.at[1, 0].set(jnp.nan))  # bypasses validate
    with pytest.raises(InvalidModelError, match=r"reward\[action='1', state='0'\] = nan is not finite"):
        SOLVERS[solver](bad, time_limit=1.0)
    bad = dataclasses.replace(m, obs_prob=m.obs_prob.at[0, 1, 0].set(jnp.inf))
    with pytest.raises(InvalidModelError, match=r"obs_prob\[action='0', state='1', observation='0'\] = inf"):
        SOLVERS[solver](bad, time_limit=1.0)


@pytest.mark.parametrize("solver", ["blind", "qmdp"])
def test_baseline_bounds_that_overflow_stop(solver):
    with pytest.raises(NumericalError) as info:
        SOLVERS[solver](huge_model())
    e = info.value
    assert e.iteration is None and e.last_good is None
    assert "alpha-vectors (lower bound)" in e.what
    assert str(e).startswith(f"{solver}: blind-policy alpha-vectors (lower bound) not finite (2 NaN of 4 entries)")
    assert "rescale the rewards" in str(e) and FLOAT.name in str(e)


@pytest.mark.parametrize("method", ["hsvi", "pbvi"])
def test_point_based_initial_bounds_that_overflow_stop_at_iteration_0(method):
    with pytest.raises(NumericalError) as info:
        point_based.solve(huge_model(), method=method, time_limit=5.0)
    e = info.value
    assert e.iteration == 0 and e.last_good is None and e.what == "lower-bound alpha-vectors"
    assert str(e).startswith(f"{method}: lower-bound alpha-vectors not finite (2 NaN of 4 entries) at iteration 0; "
                             "stopped, no finite policy to keep")


def _poisoned_update(at: int):
    """HSVI's step, with NaN alpha-vectors from step ``at`` on (a NaN that appears mid-run)."""
    real = point_based.update

    @functools.partial(jax.jit, static_argnames=("config",))
    def update(key, model, state, config=point_based.Config()):
        state = real(key, model, state, config)
        return state._replace(alphas=jnp.where(state.iteration >= at, jnp.nan, state.alphas))

    return update


def test_hsvi_nan_mid_run_keeps_the_last_good_policy(monkeypatch):
    # NaN from step 2 on, as in test_cli_writes_the_last_good_policy: the same poisoned step (`at` is baked into
    # the program), compiled once
    monkeypatch.setattr(point_based, "update", _poisoned_update(2))
    seen = []
    with pytest.raises(NumericalError) as info:
        point_based.solve(problems.tiger(), method="hsvi", time_limit=30.0, target_gap=0.0,
                          callback=lambda *row: seen.append(row))
    e = info.value
    assert e.iteration == 2 and e.what == "lower-bound alpha-vectors"
    assert str(e).startswith("hsvi: lower-bound alpha-vectors not finite (") and "NaN" in str(e)
    assert str(e).endswith("at iteration 2; stopped, the last good policy is from iteration 1")
    good = e.last_good
    assert good.info["iterations"] == 1 and len(good.history) == 2 and len(seen) == 1
    assert np.isfinite(good.alphas).all() and len(good.alphas) == len(good.alpha_actions) > 0
    assert np.isfinite([good.lower_bound, good.upper_bound]).all() and good.lower_bound <= good.upper_bound
    b0 = np.asarray(problems.tiger().initial_belief)
    assert float(np.max(good.alphas @ b0)) >= good.lower_bound - 1e-4  # the kept vectors earn the bound


def test_pbvi_nan_mid_run_names_the_point_values(monkeypatch):
    real, calls = point_based._batch_step, []

    def batch_step(*args, **kwargs):  # NaN at b0's upper bound from the second step on
        state, beliefs = real(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 2:
            state = state._replace(values=state.values.at[0].set(jnp.nan))
        return state, beliefs

    monkeypatch.setattr(point_based, "_batch_step", batch_step)
    with pytest.raises(NumericalError) as info:
        point_based.solve(small_model(), method="pbvi", time_limit=30.0, target_gap=0.0)
    e = info.value
    assert e.iteration == 2 and e.what == "upper-bound point values"
    assert str(e).startswith("pbvi: upper-bound point values not finite (1 NaN of ")
    assert e.last_good is not None and e.last_good.info["iterations"] == 1
    assert np.isfinite(e.last_good.alphas).all()


def test_gpomdp_overflow_stops_with_the_last_finite_parameters():
    with pytest.raises(NumericalError) as info:  # the default config, as the command line below
        gpomdp.solve(huge_model(), time_limit=10.0)
    e = info.value
    assert e.iteration == 1 and e.what in ("gradient estimate", "average-reward estimate")
    assert str(e).startswith(f"gpomdp: {e.what} not finite") and "at iteration 1; stopped" in str(e)
    assert "a chain's reward sum over 500 steps" in str(e)
    good = e.last_good
    assert good.info["iterations"] == 0 and good.history == []
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(good.info["params"]))


def test_conjpomdp_overflow_stops_at_the_first_gradient():
    config = conjpomdp.Config(num_steps=20, num_chains=4, max_line_steps=2)
    with pytest.raises(NumericalError) as info:
        conjpomdp.solve(huge_model(), time_limit=10.0, config=config)
    e = info.value
    assert e.iteration == 0 and e.what == "gradient estimate"
    assert str(e).startswith("conjpomdp: gradient estimate not finite (")
    assert e.last_good is not None and e.last_good.info["iterations"] == 0


# ------------------------------------------------------------------ the command line
@FLOAT32_ONLY
def test_script_reports_a_nan_in_one_line_without_traceback(tmp_path):
    (tmp_path / "huge.pomdp").write_text(HUGE)
    assert load_pomdp(tmp_path / "huge.pomdp").reward.dtype == FLOAT  # it loads: finite, valid
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "solve.py"), "huge.pomdp", "--solver", "hsvi",
                           "--out", "p.alpha", "--time-limit", "5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_NUMERICAL != 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jaxpomdp: error: hsvi: lower-bound alpha-vectors not finite")
    assert "at iteration 0" in lines[0] and "no finite policy to keep" in lines[0]
    assert not (tmp_path / "p.alpha").exists()


@pytest.mark.parametrize("solver, what", [("pbvi", "lower-bound alpha-vectors not finite (2 NaN of 4 entries) "
                                                   "at iteration 0"),
                                          ("qmdp", "blind-policy alpha-vectors (lower bound) not finite"),
                                          ("gpomdp", "not finite at iteration 1")])
@FLOAT32_ONLY
def test_cli_reports_a_nan_in_one_line(tmp_path, capsys, solver, what):
    (tmp_path / "huge.pomdp").write_text(HUGE)
    code = main([str(tmp_path / "huge.pomdp"), "--solver", solver, "--quiet", "--time-limit", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_NUMERICAL
    assert err.startswith(f"jaxpomdp: error: {solver}: ") and what in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "simulated" not in out


def test_cli_writes_the_last_good_policy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(point_based, "update", _poisoned_update(2))
    out = tmp_path / "last.alpha"
    code = main(["tiger", "--solver", "hsvi", "--quiet", "--out", str(out), "--target-gap", "0",
                 "--time-limit", "30"])
    stdout, err = capsys.readouterr()
    assert code == EXIT_NUMERICAL and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("jaxpomdp: error: hsvi: lower-bound alpha-vectors not finite")
    assert f"at iteration 2; stopped, the last good policy is from iteration 1; it was written to {out} (" in err
    alphas, actions = read_alpha(out, num_states=2, num_actions=3)
    assert np.isfinite(alphas).all() and len(alphas) == len(actions) > 0
    assert "simulated" not in stdout


def test_nvi_nan_mid_run_keeps_the_last_good_controller(monkeypatch):
    from jaxpomdp.solvers import nvi
    real = nvi.train

    def train(key, model, st, config, apply_fn):  # NaN networks from the third iteration on
        # not jitted: the real train step runs as compiled (the same program as every other solve with this config)
        st, loss = real(key, model, st, config, apply_fn)
        if int(st.iteration) >= 3:
            st = st._replace(params=jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), st.params))
        return st, loss

    monkeypatch.setattr(nvi, "train", train)
    # tests/test_nvi.py's SMALL, the NVI tests' shared Tiger configuration: its explore / train / init (10-30 s to
    # compile per distinct configuration) are compiled once for the whole session
    config = SMALL
    with pytest.raises(NumericalError) as info:
        nvi.solve(problems.tiger(), time_limit=None, max_iterations=10, config=config, warmup_steps=4)
    e = info.value
    assert e.iteration == 3 and e.what == "value estimate at b0 (node networks)"
    assert str(e).startswith("nvi: value estimate at b0 (node networks) not finite (")
    assert str(e).endswith("at iteration 3; stopped, the last good policy is from iteration 2")
    good = e.last_good
    assert good.info["iterations"] == 2 and np.isfinite(good.info["value_estimate"])
    # 1000 episodes: tests/test_nvi.py evaluates its SMALL controllers so, one compiled program for both
    ev = jaxpomdp.simulate.evaluate(jax.random.key(0), problems.tiger(), good.policy, num_episodes=1000)
    assert np.isfinite(float(ev.mean))


@pytest.mark.parametrize("solver", ["hsvi", "pbvi", "perseus", "gpomdp", "conjpomdp", "nvi"])
@pytest.mark.parametrize("kwargs, phrase", [
    ({"time_limit": 0}, "time_limit must be positive"),
    ({"time_limit": float("nan")}, "time_limit must be positive"),
    ({"time_limit": -5}, "time_limit must be positive"),
    ({"target_gap": -1.0}, "target_gap must be non-negative"),
    ({"target_gap": float("nan")}, "target_gap must be non-negative"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"seed": 2 ** 64}, "seed must be an integer"),
    ({"max_iterations": -1}, "max_iterations must be a non-negative integer"),
])
def test_solve_arguments_that_make_no_sense_are_refused_before_any_work(solver, kwargs, phrase):
    """A NaN time limit never ran out and a NaN target gap was never met (the solve ran on); a float or
    huge seed failed deep inside jax.random."""
    args = {"time_limit": 5.0, "target_gap": 1e-3, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=phrase):
        SOLVERS[solver](problems.tiger(), **args)


@pytest.mark.parametrize("solver", ["blind", "qmdp", "hsvi", "gpomdp", "nvi"])
@pytest.mark.parametrize("break_it, phrase", [
    (lambda T, Z, b0: (T, Z, b0 * 0.6), "initial_belief sums to 0.6"),
    (lambda T, Z, b0: (T * 0.7, Z, b0),  # 0.7 rounded: 0.69999999 in float32
     "next_prob[action='0', state='0'] sums to " + ("0.69999" if FLOAT == np.float32 else "0.7 ")),
    (lambda T, Z, b0: (T, Z * 0.5, b0), "obs_prob[action='0', state='0'] sums to 0.5"),
    (lambda T, Z, b0: (T.at[1, 0].set(jnp.array([1.5, -0.5])), Z, b0), "is not a probability in [0, 1]"),
])
def test_a_model_whose_probabilities_are_not_distributions_is_refused_before_solving(solver, break_it, phrase):
    """``from_dense`` does not validate; the solvers did not either, and solved such a model to wrong bounds
    (a belief summing to 0.6: bounds 6 for 10) or to a NumericalError about NaN vectors."""
    good = small_model()
    T = jnp.stack([np.eye(2), np.full((2, 2), 0.5)])
    T, Z, b0 = break_it(T, good.obs_prob, good.initial_belief)
    bad = from_dense(T, Z, good.reward, b0, 0.9)
    with pytest.raises(InvalidModelError, match=re.escape(phrase)):
        SOLVERS[solver](bad, time_limit=5.0, target_gap=1e-3, seed=0)


@pytest.mark.parametrize("field, value, phrase", [
    ("num_particles", 0, "Config.num_particles = 0: expected an integer >= 1"),
    ("batch_per_node", 0, "expected an integer >= 1"),
    ("pool_capacity", 0, "expected an integer >= 1"),
    ("train_steps", 0, "expected an integer >= 1"),
    ("hidden", (0,), "Config.hidden = (0,): expected a list of positive integers"),
    ("learning_rate", float("nan"), "expected a positive number"),
    ("explore_random", 2.0, r"expected a number in \[0, 1\]"),
])
def test_nvi_refuses_a_config_the_command_line_would_refuse(field, value, phrase):
    """The Python API took these and failed deep inside (ZeroDivisionError, IndexError) or ran on; --set refused
    them already. numpy integers and floats are fine."""
    from jaxpomdp.errors import ConfigError
    from jaxpomdp.solvers import nvi
    with pytest.raises(ConfigError, match=re.escape(phrase) if "(" in phrase else phrase):
        nvi.solve(problems.tiger(), time_limit=5.0, config=SMALL._replace(**{field: value}))
    nvi.check_config(SMALL._replace(capacity=np.int64(SMALL.capacity), learning_rate=np.float32(0.01)))


@pytest.mark.parametrize("kwargs, phrase", [
    ({"config": point_based.Config(width=0)}, r"Config.width = 0: expected an integer >= 1"),
    ({"config": point_based.Config(max_depth=0)}, r"Config.max_depth = 0"),
    ({"config": point_based.Config(lower_sweeps=-1)}, r"Config.lower_sweeps = -1: expected an integer >= 0"),
    ({"config": point_based.Config(epsilon_fraction=float("nan"))}, r"Config.epsilon_fraction = nan"),
    ({"method": "perseus", "perseus_beliefs": 0}, r"perseus_beliefs = 0: expected an integer >= 1"),
])
def test_point_based_refuses_settings_that_make_no_sense(kwargs, phrase):
    """width=0 failed in a zero-size reduction, max_depth=0 in an IndexError, perseus_beliefs=0 in an MLIR
    error; epsilon_fraction=NaN ran to the time limit without progress."""
    with pytest.raises(ValueError, match=phrase):
        point_based.solve(problems.tiger(), time_limit=5.0, **kwargs)
