"""The command line: the README's main job, JSON results, policies out, user errors."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxpomdp import bounds, cli, problems
from jaxpomdp.cli import main
from jaxpomdp.io.alpha import read_alpha
from jaxpomdp.solvers import nvi
from test_nvi import ROCKSAMPLE_SMALL, SMALL

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "problems"
FIELDS = {"problem", "solver", "num_states", "num_actions", "num_observations", "discount",
          "lower_bound", "upper_bound", "evaluation", "solve_seconds", "compile_seconds"}
SARSOP_TIGER = (19.3711, 19.3721)  # SARSOP's converged, certified bounds (BENCHMARKS.md)


def set_flags(fields: dict) -> tuple:
    """``--set FIELD=VALUE`` flags that give these NVI configuration fields on the command line."""
    return tuple(f"--set={name}={json.dumps(value, separators=(',', ':'))}" for name, value in fields.items())


#: tests/test_nvi.py's SMALL Tiger configuration from the command line (the fields where it differs from the
#: command line's defaults for Tiger): the NVI tests of test_nvi, test_checkpoint, test_guards and
#: test_distributed run SMALL too, and the same configuration is the same program (NVI's explore step alone
#: takes 10-30 s to compile).
NVI_SMALL_FIELDS = {name: value for name, value in SMALL._asdict().items()
                    if value != getattr(nvi.default_config(problems.get("tiger")), name)}


def users_xla_flags() -> str:
    """The session's ``XLA_FLAGS`` without the optimization level tests/conftest.py sets: XLA's default, a user's."""
    return " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_backend_optimization_level" not in f)


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_script_runs_the_default_problem_as_a_user_would(tmp_path):
    # a user's environment: no compilation cache configured, so the command keeps its own in the user's cache
    # folder; a second run loads the compiled HSVI step from it instead of compiling it again
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env["XLA_FLAGS"] = users_xla_flags()  # and XLA's default optimization level
    env["XDG_CACHE_HOME"] = str(tmp_path / "user-cache")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "solve.py"), "--json", "r.json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "tiger" in proc.stdout and "lower bound" in proc.stdout and "simulated" in proc.stdout
    record = json.loads((tmp_path / "r.json").read_text())
    assert FIELDS <= set(record)
    assert record["problem"] == problems.DEFAULT
    cache = tmp_path / "user-cache" / "jaxpomdp" / "xla"
    assert any(p.name.endswith("-cache") for p in cache.iterdir()), sorted(p.name for p in cache.iterdir())
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "solve.py"), "--json", "r2.json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, env={**env, "JAX_LOG_COMPILES": "1"})
    assert again.returncode == 0, again.stderr
    assert "Persistent compilation cache hit for 'jit_update'" in again.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["lower_bound"] == record["lower_bound"]


def test_compile_cache_folder_and_switch(tmp_path):
    assert cli.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "jaxpomdp" / "xla"
    home = cli.default_cache_dir({})
    assert home.parts[-3:] == (".cache", "jaxpomdp", "xla")
    before = jax.config.jax_compilation_cache_dir
    assert before  # the test session's (tests/conftest.py)
    assert cli.use_compile_cache(False) is None
    # a folder already configured is kept as it is
    assert cli.use_compile_cache(True) == before
    assert jax.config.jax_compilation_cache_dir == before
    assert cli.build_parser().parse_args(["--no-compile-cache"]).no_compile_cache


@pytest.mark.parametrize("solver", ["blind", "qmdp", "hsvi"])
def test_json_results_bracket_the_known_optimum(tmp_path, capsys, solver):
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(capsys, "tiger", "--solver", solver, "--json", str(out), "--episodes", "2000",
                                "--time-limit", "120")  # it stops at the target gap, long before
    assert code == 0
    r = json.loads(out.read_text())
    assert FIELDS <= set(r)
    assert (r["num_states"], r["num_actions"], r["num_observations"]) == (2, 3, 2)
    assert r["discount"] == pytest.approx(0.95)
    if solver == "hsvi":  # converges on Tiger: SARSOP's bounds are 19.3711 .. 19.3721
        assert r["upper_bound"] - r["lower_bound"] <= 1e-3 + 1e-6
        assert 19.36 <= r["lower_bound"] <= 19.3721 and 19.3711 <= r["upper_bound"] <= 19.38
        assert "lower" in err and "gap" in err  # the progress line
    else:
        assert r["lower_bound"] == pytest.approx(-20.0, abs=1e-3)  # always listen
    # both ours and SARSOP's are certified: the intervals must overlap
    assert r["lower_bound"] <= SARSOP_TIGER[1] and r["upper_bound"] >= SARSOP_TIGER[0]
    ev = r["evaluation"]
    assert ev["ci95"][0] <= ev["mean"] <= ev["ci95"][1]
    assert ev["stderr"] >= 0
    assert r["solve_seconds"] >= 0 and r["compile_seconds"] > 0
    assert f"{r['lower_bound']:.6g}" in stdout


def test_blind_policy_evaluation_matches_its_exact_value(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert run_cli(capsys, "paint.95", "--solver", "blind", "--json", str(out), "--episodes", "4000",
                   "--seed", "3")[0] == 0
    r = json.loads(out.read_text())
    # the blind solver's lower bound is the exact value of the policy it returns
    m = problems.get("paint.95")
    tail = float(0.95 ** r["evaluation"]["horizon"] * np.abs(np.asarray(m.reward)).max() / 0.05)
    lo, hi = r["evaluation"]["ci95"]
    assert lo - tail - 1e-4 <= r["lower_bound"] <= hi + tail + 1e-4


def test_out_writes_alpha_vectors_that_reload(tmp_path, capsys):
    policy_file = tmp_path / "tiger.alpha"
    assert run_cli(capsys, "tiger", "--solver", "qmdp", "--out", str(policy_file))[0] == 0
    alphas, actions = read_alpha(policy_file, num_states=2, num_actions=3)
    np.testing.assert_array_equal(actions, [0, 1, 2])
    np.testing.assert_allclose(alphas, np.asarray(bounds.qmdp(problems.tiger())), rtol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_problem_given_as_a_file(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, stdout, _ = run_cli(capsys, str(problems.data_file("network")), "--solver", "qmdp", "--json", str(out))
    assert code == 0
    r = json.loads(out.read_text())
    assert (r["num_states"], r["num_actions"], r["num_observations"]) == (7, 4, 2)
    assert r["lower_bound"] <= 293.185 <= r["upper_bound"] + 1e-3  # SARSOP's lower bound


@pytest.mark.parametrize("argv, phrase", [
    (["no-such-problem"], "unknown problem 'no-such-problem'"),
    (["missing/file.pomdp"], "no such file"),
    (["tiger", "--time-limit", "-1"], "--time-limit must be positive"),
    (["tiger", "--episodes", "0"], "--episodes must be at least 1"),
    (["tiger", "--target-gap", "-1"], "--target-gap must be non-negative"),
    (["tiger", "--solver", "gpomdp", "--memory", "0"], "--memory must be at least 1"),
    (["tiger", "--solver", "gpomdp", "--beta", "1"], "--beta must be in [0, 1)"),
    (["tiger", "--solver", "conjpomdp", "--restarts", "4"], "--restarts is for --solver gpomdp"),
    (["tiger", "--solver", "gpomdp", "--out", "p.alpha"], "has no alpha-vector policy"),
    (["tiger", "--solver", "nvi", "--out", "p.alpha"], "give a .pg"),
    (["tiger", "--solver", "qmdp", "--max-iterations", "3"], "--max-iterations applies to the step-by-step"),
    (["tiger", "--solver", "blind", "--checkpoint", "ck"], "--checkpoint applies to the step-by-step"),
    (["tiger", "--max-iterations", "-1"], "--max-iterations must be non-negative"),
    (["tiger", "--checkpoint", "ck", "--checkpoint-every", "0"], "--checkpoint-every must be positive"),
    (["tiger", "--resume", "no-such-dir"], "no checkpoint there"),
    (["tiger", "--devices", "99"], "--devices 99: this machine has"),
    (["tiger", "--devices", "two"], "--devices must be a number or 'all'"),
    (["tiger", "--solver", "qmdp", "--devices", "all"], "--devices applies to the step-by-step"),
    (["tiger", "--set", "capacity=16"], "--set sets a field of the NVI configuration; give --solver nvi"),
    (["tiger", "--solver", "nvi", "--set", "capacty=16"], "FIELD one of capacity, hidden"),
    (["tiger", "--solver", "nvi", "--set", "hidden=[0]"], "expected a list of positive integers"),
    (["tiger", "--solver", "nvi", "--set", "capacity=2"], "capacity 2 < 3 actions"),
    # networks, particles or a pool too large: refused before allocating (it was XLA's out-of-memory traceback);
    # a tabular model's one-hot features make every network's first layer as wide as the state space
    (["tiger", "--solver", "nvi", "--set", "capacity=1000000", "--set", "hidden=[1024]"],
     "; give the model state_features (one-hot over its 2 states now), a smaller Config.capacity"),
    (["tiger", "--solver", "nvi", "--set", "hidden=[30000,30000]"], "NVI's state and activations would need about"),
    # a simulator's features are not one-hot, and it is already a simulator: the hint is the sizes alone
    (["rocksample:5,5", "--solver", "nvi", "--set", "capacity=3000000"],
     "NVI's state and activations would need about"),
    (["rocksample:5,5", "--solver", "nvi", "--set", "num_particles=20000000"], "; give a smaller Config.capacity"),
    (["tiger", "--seed", str(2 ** 64)], "--seed must be in [-2**63, 2**63)"),
    (["tiger", "--tolerance", "-1"], "--tolerance must be in [0, 1)"),
    (["tiger", "--tolerance", "nan"], "--tolerance must be in [0, 1)"),
    (["rocksample:0,0", "--solver", "qmdp"], "RockSample(0,0): need n >= 1"),
    (["rocksample:3", "--solver", "qmdp"], "'rocksample:3' is not a RockSample name; expected 'rocksample:n,k'"),
    (["rocksample:30,30", "--solver", "hsvi"], "--solver nvi plans on its simulator"),
    # within MAX_STATES but 89 GiB to build (was killed by the OS): refused by the memory limit, as files are
    (["rocksample:40,14", "--solver", "qmdp"], "RockSample(40,14) as a table (26,214,401 states, 19 actions) needs "
                                               "about 89.1 GiB to build, more than "),
    (["rocksample:a,b", "--solver", "nvi"], "error: 'rocksample:a,b' is not a RockSample name"),
    (["tiger", "--json", "/proc/r.json"], "--json /proc/r.json: cannot write a file in /proc"),
    (["tiger", "--out", "."], "--out .: is a folder, not a file"),
    (["tiger", "--solver", "gpomdp", "--memory", "100000000"], "optimizer state would need about"),
    (["tiger", "--solver", "gpomdp", "--restarts", "1000000000"], "(1000000000 x SoftmaxPolicy("),
    (["tiger", "--solver", "conjpomdp", "--memory", "100000000"], "give fewer memory states"),
    # sizes past int32 or the memory: were tracebacks (OverflowError, out of memory, 2**64 random bits), exit 1
    (["tiger", "--solver", "gpomdp", "--memory", "100000000000"], "--memory must be at least 1 and at most 2147483647"),
    (["tiger", "--solver", "gpomdp", "--memory", "2000000000"], "optimizer state would need about"),
    (["tiger", "--solver", "qmdp", "--episodes", "3000000000"], "--episodes must be at most 2147483647"),
    (["tiger", "--solver", "qmdp", "--horizon", "100000000000"], "--horizon must be at most 2147483647"),
    (["tiger", "--solver", "qmdp", "--horizon", "10000000"], "1000 episodes of 10000000 steps: the evaluation would"),
    (["tiger", "--solver", "qmdp", "--episodes", "2000000000"], "2000000000 episodes: the evaluation would need"),
    (["tiger", "--solver", "nvi", "--set", "train_steps=100000000000"], "expected an integer >= 1 and at most"),
    (["tiger", "--solver", "nvi", "--set", "td_steps=1000000"], "give a smaller Config.capacity, batch_per_node, "
                                                                 "td_steps or hidden"),
    (["tiger", "--solver", "nvi", "--set", "max_depth=1000000000"], "give a smaller width or max_depth"),
    # flags are checked before the model is loaded: no banner first
    (["tiger", "--solver", "gpomdp", "--beta", "2"], "--beta must be in [0, 1)"),
])
@pytest.mark.filterwarnings("error::UserWarning")  # a warning would print before the line (pytest hides it)
def test_user_mistakes_get_one_line_and_status_2(capsys, argv, phrase):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert phrase in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags", [("--target-gap", "-1"), ("--devices", "two"), ("--solver", "gpomdp", "--beta", "2"),
                                   ("--solver", "gpomdp", "--memory", "0"), ("--episodes", "0"),
                                   ("--solver", "gpomdp", "--restarts", "0")])
def test_flags_are_refused_before_the_model_is_loaded(tmp_path, capsys, flags):
    """A bad flag on a large file cost the whole load first (and printed the model's banner)."""
    code, out, err = run_cli(capsys, "tiger", *flags)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


def test_outputs_that_name_one_file_are_refused_before_solving(tmp_path, capsys):
    """--out and --json on one name left only the JSON (and said the policy was written there); --out on the
    model's own name replaced the model with alpha-vectors."""
    model = tmp_path / "m.pomdp"
    model.write_text("discount: 0.95\nvalues: reward\nstates: 2\nactions: 2\nobservations: 2\n"
                     "T: * identity\nO: * uniform\nR: 0 : * : * : * 1\n")
    (tmp_path / "ck").mkdir()
    before = model.read_text()
    link = tmp_path / "alias.json"
    cases = [("--out", str(tmp_path / "o.alpha"), "--json", str(tmp_path / "o.alpha"), "name the same file"),
             ("--json", str(tmp_path / "r.png"), "--plot", str(tmp_path / "." / "r.png"), "name the same file"),
             ("--out", str(model), None, None, "is the model file being solved"),
             ("--out", str(tmp_path / "ck" / "checkpoint.msgpack"), "--checkpoint", str(tmp_path / "ck"),
              "is the checkpoint file of --checkpoint")]
    os.link(model, link)
    cases.append(("--json", str(link), None, None, "is the model file being solved"))  # a hard link to it
    for flag, path, flag2, path2, phrase in cases:
        argv = [str(model), "--solver", "hsvi", "--time-limit", "1", flag, path] + ([flag2, path2] if flag2 else [])
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and phrase in err and out == "", (argv, err)
    assert model.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.json", "ck", "m.pomdp"]
    assert not any((tmp_path / "ck").iterdir())


def test_json_has_no_infinity(tmp_path, capsys):
    """An unlimited run (--time-limit inf, --target-gap inf) wrote Infinity, which JSON parsers refuse."""
    out = tmp_path / "r.json"
    code, _, _ = run_cli(capsys, "tiger", "--solver", "qmdp", "--time-limit", "inf", "--target-gap", "inf",
                         "--json", str(out))
    assert code == 0
    record = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert record["time_limit"] is None and record["target_gap"] is None


def test_a_refused_run_leaves_no_checkpoint_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "tiger", "--solver", "nvi", "--set", "capacity=2",
                           "--checkpoint", str(tmp_path / "new" / "ck"))
    assert code == 2 and "capacity 2 < 3 actions" in err
    assert list(tmp_path.iterdir()) == []


def test_malformed_file_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.pomdp"
    bad.write_text("discount: 0.95\nvalues: reward\nstates: 2\nactions: 1\nobservations: 1\n"
                   "T: 0 : 0 : 7 1.0\n")
    code, _, err = run_cli(capsys, str(bad))
    assert code == 2
    assert f"{bad}:6:12:" in err and "out of range" in err
    assert "Traceback" not in err


def test_discount_one_is_refused_clearly(tmp_path, capsys):
    f = tmp_path / "undiscounted.pomdp"
    f.write_text("discount: 1.0\nstates: 1\nactions: 1\nobservations: 1\nT: 0 identity\nO: 0 uniform\n")
    code, _, err = run_cli(capsys, str(f))
    assert code == 2 and "discount < 1" in err


def test_unwritable_output_is_a_clean_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "tiger", "--solver", "blind",
                           "--json", str(tmp_path / "no" / "such" / "dir" / "r.json"))
    assert code == 2 and "Traceback" not in err


def test_outputs_are_checked_before_solving_and_none_is_touched_when_one_cannot_be_written(tmp_path, capsys):
    """A run whose --json cannot be written fails before solving, leaving an existing --out as it was."""
    old = tmp_path / "old.alpha"
    old.write_text("EXISTING\n")
    (tmp_path / "folder.json").mkdir()
    for bad in (str(tmp_path / "folder.json"), str(tmp_path / "missing" / "r.json"), "/proc/r.json"):
        code, out, err = run_cli(capsys, "tiger", "--solver", "blind", "--out", str(old), "--json", bad)
        assert code == 2 and err.startswith(f"jaxpomdp: error: --json {bad}: "), err
        assert "solver" not in out and len(err.strip().splitlines()) == 1  # refused before solving
        assert old.read_text() == "EXISTING\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.json", "old.alpha"]  # no probe left


def test_list_prints_every_builtin(capsys):
    code, out, _ = run_cli(capsys, "--list")
    assert code == 0 and out.split() == problems.names()


def test_program_ignores_signals_once_the_run_is_done(capsys):
    """``main(program=True)`` (the command's own process) leaves SIGINT/SIGTERM ignored when the run is
    done, so a late Ctrl-C cannot kill the exiting process; a library call puts the old handlers back."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert run_cli(capsys, "tiger", "--solver", "blind", "--episodes", "5")[0] == 0
        assert {sig: signal.getsignal(sig) for sig in before} == before
        assert main(["tiger", "--solver", "blind", "--episodes", "5"], program=True) == 0
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in before)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'jaxpomdp = "jaxpomdp.cli:entry"' in text


def test_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "copy.pomdp").exists()


def test_conjpomdp_on_three_state_reports_the_average_reward(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(capsys, "three-state", "--solver", "conjpomdp", "--json", str(out),
                                "--time-limit", "30", "--episodes", "500")
    assert code == 0, err
    r = json.loads(out.read_text())
    assert FIELDS <= set(r)
    assert r["lower_bound"] is None and r["upper_bound"] is None
    pg = r["policy_gradient"]
    assert pg["policy"] == "LogisticPolicy" and pg["memory_states"] == 1
    assert pg["exact_average_reward"] >= 0.79
    assert len(pg["params"]) == 2
    # nearly always a2: the discounted value approaches 0.8 / (1 - 0.95) = 16
    assert r["evaluation"]["mean"] > 14
    assert "avg reward" in stdout and "iteration" in err and "eta" in err


def test_gpomdp_solver_with_memory_on_tiger(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(capsys, "tiger", "--solver", "gpomdp", "--memory", "2", "--objective",
                                "discounted", "--restarts", "2", "--time-limit", "3", "--json", str(out),
                                "--episodes", "200", "--quiet")
    assert code == 0, err
    r = json.loads(out.read_text())
    pg = r["policy_gradient"]
    assert pg["policy"] == "FiniteStateController" and pg["memory_states"] == 2
    assert pg["config"]["objective"] == "discounted" and pg["config"]["num_restarts"] == 2
    assert pg["exact_discounted_value"] is not None and pg["iterations"] >= 1
    assert err == ""


def test_nvi_on_the_rocksample_simulator_writes_a_controller(tmp_path, capsys):
    out, pg = tmp_path / "r.json", tmp_path / "c.pg"
    # notebooks/02_neural_value_iteration.ipynb's small settings (its OVERRIDES): the same compiled programs
    small = set_flags(ROCKSAMPLE_SMALL)
    code, stdout, err = run_cli(capsys, "rocksample:4,4", "--solver", "nvi", "--max-iterations", "3", "--json",
                                str(out), "--out", str(pg), "--episodes", "200", "--quiet", *small)
    assert code == 0, err
    r = json.loads(out.read_text())
    c = r["controller"]
    assert r["num_states"] == 4 * 4 * 2 ** 4 + 1 and r["lower_bound"] is None
    assert c["num_nodes"] >= 1 and c["parameter_bytes"] > 0
    assert c["alpha_vector_bytes"] == c["num_nodes"] * r["num_states"] * 4
    assert c["upper_bound_kind"] == "fully-observable" and r["upper_bound"] == pytest.approx(c["upper_bound_value"])
    # the controller's valuations (simulated; 3 iterations, snapshots every 20: the final one only)
    assert c["start_value_kind"] == "simulated" and c["controller_iteration"] == 3
    assert [row[1] for row in c["snapshots"]] == [3] and c["snapshots"][0][2] == pytest.approx(c["start_value_mc"])
    lines = pg.read_text().splitlines()
    assert lines and all(len(line.split()) == 2 + r["num_observations"] for line in lines)
    assert "controller" in stdout


def test_nvi_writes_dot_with_the_settings_given(tmp_path, capsys):
    dot, out = tmp_path / "c.dot", tmp_path / "r.json"
    code, _, err = run_cli(capsys, "tiger", "--solver", "nvi", "--max-iterations", "4", "--out", str(dot),
                           "--episodes", "20", "--quiet", "--json", str(out), *set_flags(NVI_SMALL_FIELDS))
    assert code == 0, err
    text = dot.read_text()
    assert text.startswith("digraph") and "->" in text
    c = json.loads(out.read_text())["controller"]
    # the fields set, and the tabular defaults for the rest: test_nvi.py's SMALL
    config = nvi.Config(**{**c["config"], "hidden": tuple(c["config"]["hidden"])})
    assert config == SMALL and 3 <= c["num_nodes"] <= SMALL.capacity
    assert {"capacity", "hidden", "td_steps"} <= set(NVI_SMALL_FIELDS) and len(NVI_SMALL_FIELDS) < len(SMALL)
    assert all(getattr(config, name) == value for name, value in nvi.TABULAR_SETTINGS.items()
               if name not in NVI_SMALL_FIELDS)
    # float32 networks of 32 nodes: one-hot over 2 states, two layers of 16 hidden units, one output
    assert c["parameter_bytes_bank"] == 32 * 4 * (2 * 16 + 16 + 16 * 16 + 16 + 16 + 1)


def test_checkpoint_then_resume_with_more_iterations_continues(tmp_path, capsys):
    ck = str(tmp_path / "ck")
    code, out, _ = run_cli(capsys, "tiger", "--max-iterations", "2", "--target-gap", "0", "--checkpoint", ck,
                           "--episodes", "10", "--quiet")
    assert code == 0 and f"checkpoint   {ck}" in out
    code, out, _ = run_cli(capsys, "tiger", "--max-iterations", "5", "--target-gap", "0", "--resume", ck,
                           "--episodes", "10", "--quiet", "--json", str(tmp_path / "r.json"))
    assert code == 0 and "resumed" in out and "2 steps" in out
    from jaxpomdp import checkpoint
    assert checkpoint.load(ck).loop["iteration"] == 5  # the resumed run went on writing there
    code, _, err = run_cli(capsys, "tiger", "--solver", "pbvi", "--resume", ck, "--quiet")
    assert code == 2 and "a checkpoint of solver 'hsvi', not 'pbvi'" in err and len(err.strip().splitlines()) == 1


def test_atomic_write_errors_name_the_file_asked_for(tmp_path):
    from jaxpomdp.io import atomic_write
    (tmp_path / "d").mkdir()
    for path, error in ((tmp_path / "d", IsADirectoryError), (tmp_path / "missing" / "x", FileNotFoundError)):
        with pytest.raises(error) as info:
            atomic_write(path, "data")
        assert info.value.filename == str(path) and ".tmp" not in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and not any((tmp_path / "d").iterdir())


@pytest.mark.parametrize("argv, phrase", [
    (["tiger", "--solver", "foo"], "argument --solver: invalid choice: 'foo'"),
    (["tiger", "--time-limit", "abc"], "argument --time-limit: invalid float value: 'abc'"),
    (["tiger", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_argument_errors_are_one_line_too(capsys, argv, phrase):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and phrase in err and "(see jaxpomdp --help)" in err
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err
