"""Ctrl-C during ``scripts/solve.py``: the policy so far is written and loads, and ``--resume``
finishes with exactly the uninterrupted run's result (issue 8's acceptance test).

Each test runs the command line in subprocesses: one uninterrupted reference run,
then ten runs interrupted with SIGINT at a random moment after the problem has
been loaded (during compilation, solving or the final evaluation), each followed
by a ``--resume`` of its checkpoint. The runs share a persistent XLA compilation
cache (the test session's, else one in the test's temporary directory), so that
at most the first one pays for compiling; the cache hands back the same
executables, so the results are not affected. Two trials go at a time (an
interrupted run, then the resume of its checkpoint; the next trial starts as
soon as one ends).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxpomdp import checkpoint, problems
from jaxpomdp.controller import ControllerPolicy, exact_value, read_pg
from jaxpomdp.io.alpha import read_alpha
from jaxpomdp.policy import AlphaVectorPolicy
from jaxpomdp.simulate import evaluate
from test_cli import users_xla_flags

#: A small NVI bank and small networks for Tiger: a run takes about 8 s instead of 14 s with the default settings,
#: 24 short iterations of it solving (measured: 9 of the 10 signals landed in the solve).
NVI_BANK = ("--set", "capacity=32", "--set", "hidden=[16]", "--set", "train_steps=20", "--set", "refresh_nodes=4")

ROOT = Path(__file__).resolve().parents[1]
SOLVE = str(ROOT / "scripts" / "solve.py")
KILLS = 10


def _env(cache: Path) -> dict:
    # XLA's default optimization level, not the test session's 0 (tests/conftest.py): these 22 runs a test mostly
    # solve, with the programs from the cache after the first run, and level 0 solves slower (4x3.95's 12 HSVI
    # steps: 7.5 s instead of 2.2 s)
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
               XLA_FLAGS=users_xla_flags())
    env.pop("JAX_ENABLE_X64", None)
    return env


class Run:
    """A ``solve.py`` subprocess; ``header`` is when it printed its first line (the problem is loaded)."""

    def __init__(self, args: list, env: dict, cwd: Path):
        self.start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, SOLVE, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.first_line = self.proc.stdout.readline()
        self.header = time.monotonic()

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        self.end = time.monotonic()
        return self.proc.returncode, self.first_line + out, err


def _reference(args, env, tmp: Path):
    run = Run(args, env, tmp)
    rc, out, err = run.finish()
    assert rc == 0, out + err
    # a second run, on the now warm compilation cache, times the window for the kills
    run = Run(args, env, tmp)
    rc2, out2, err2 = run.finish()
    assert rc2 == 0, out2 + err2
    return run.end - run.header


def _outputs(args) -> list:
    """The paths a run writes (``--out``, ``--json``, ``--checkpoint``)."""
    return [args[j + 1] for j, a in enumerate(args) if a in ("--out", "--json", "--checkpoint")]


def _trials(args_for, resume_for, window: float, env, tmp: Path, seed: int) -> dict:
    """The ten trials, two at a time (a thread each, a new one as soon as one ends): ``solve.py`` with
    ``args_for(i)``, interrupted with SIGINT at a random moment after its first line, then
    ``solve.py`` with ``resume_for(i)``. Returns ``{i: (delay, (rc, out, err), (rc, out, err) of the
    resume)}``.

    A run that ends before its signal (it ran faster than the timed reference run,
    e.g. because the machine got less busy) is not a trial: its outputs are removed
    and it runs again with half the delay (at most three times), so that ten runs
    are really interrupted.
    """
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, 0.9 * window) for _ in range(KILLS)]

    def trial(i):
        delay = delays[i]
        for attempt in range(4):
            run = Run(args_for(i), env, tmp)
            wait = run.header + delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            signalled = run.proc.poll() is None
            if signalled:
                run.proc.send_signal(signal.SIGINT)
            rc, out, err = run.finish()
            if signalled and rc != 0:
                break
            # finished before its signal (or as it was sent)
            assert attempt < 3, f"trial {i}: finished before its signal {attempt + 1} times:\n{out}{err}"
            for path in (tmp / name for name in _outputs(args_for(i))):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            delay *= 0.5
        resumed = subprocess.run([sys.executable, SOLVE, *resume_for(i)], capture_output=True, text=True, env=env,
                                 cwd=tmp, timeout=300)
        return delay, (rc, out, err), (resumed.returncode, resumed.stdout, resumed.stderr)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {i: pool.submit(trial, i) for i in range(KILLS)}
        return {i: f.result() for i, f in futures.items()}


def _same_state(a: Path, b: Path) -> None:
    """The two checkpoints hold the same solver state, bit for bit, and the same loop variables but the clock."""
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    assert ca.treedef == cb.treedef and len(ca.leaves) == len(cb.leaves)
    for i, (x, y) in enumerate(zip(ca.leaves, cb.leaves)):
        if isinstance(x, dict):
            x, y = x["key_data"], y["key_data"]
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"state leaf {i}")
    clock = {"elapsed", "last", "last_step", "predicted_step"}
    other = clock | {"key", "snapshots"}
    assert {k: v for k, v in ca.loop.items() if k not in other} == {k: v for k, v in cb.loop.items() if k not in other}
    # NVI's valuations of its controller: the same but for their seconds (the clock)
    assert [row[1:] for row in ca.loop.get("snapshots", [])] == [row[1:] for row in cb.loop.get("snapshots", [])]
    np.testing.assert_array_equal(ca.loop["key"]["key_data"], cb.loop["key"]["key_data"])
    assert [row[1:] for row in ca.history] == [row[1:] for row in cb.history]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The session's compilation cache (tests/conftest.py), where earlier tests may have compiled the same
    programs; else one of this module's own."""
    shared = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return Path(shared) if shared else tmp_path_factory.mktemp("xla-cache")


def test_sigint_point_based_ten_times_policy_loads_and_resume_matches(tmp_path, cache):
    model = problems.get("4x3.95")
    env = _env(cache)
    common = ["4x3.95", "--solver", "hsvi", "--max-iterations", "12", "--target-gap", "0", "--time-limit", "100000",
              "--episodes", "20", "--quiet"]
    window = _reference(common + ["--out", "ref.alpha", "--json", "ref.json", "--checkpoint", "ref"], env, tmp_path)
    ref_alpha = (tmp_path / "ref.alpha").read_bytes()
    ref = json.loads((tmp_path / "ref.json").read_text())
    trials = _trials(lambda i: common + ["--out", f"p{i}.alpha", "--checkpoint", f"c{i}"],
                     lambda i: common + ["--resume", f"c{i}", "--out", f"r{i}.alpha", "--json", f"r{i}.json"],
                     window, env, tmp_path, seed=8)
    stopped_in_solve = 0
    for i, (delay, (rc, out, err), (rrc, rout, rerr)) in sorted(trials.items()):
        what = f"trial {i} (SIGINT {delay:.2f} s after loading):\n{out}{err}"
        assert rc == 128 + signal.SIGINT, what
        assert "Traceback" not in err, what
        alphas, actions = read_alpha(tmp_path / f"p{i}.alpha", num_states=model.num_states,
                                     num_actions=model.num_actions)
        policy = AlphaVectorPolicy(alphas.astype(np.float32), actions)
        ev = evaluate(jax.random.key(i), model, policy, num_episodes=50)
        assert np.isfinite(float(ev.mean)), what
        if "stopped      by SIGINT" in out:  # stopped mid-solve: the file holds the reported lower bound
            stopped_in_solve += 1
            lower = float(out.split("lower bound ")[1].split(",")[0])
            assert np.max(alphas @ np.asarray(model.initial_belief)) == pytest.approx(lower, rel=1e-5), what
        assert (tmp_path / f"c{i}" / checkpoint.FILENAME).exists(), what
        # its checkpoint resumed: the uninterrupted run's result, to the bit
        assert rrc == 0, what + rout + rerr
        assert (tmp_path / f"r{i}.alpha").read_bytes() == ref_alpha, what
        got = json.loads((tmp_path / f"r{i}.json").read_text())
        assert (got["lower_bound"], got["upper_bound"]) == (ref["lower_bound"], ref["upper_bound"]), what
        _same_state(tmp_path / "ref", tmp_path / f"c{i}")
    assert len(trials) == KILLS
    assert stopped_in_solve >= 3  # most signals land in the solve itself, not before or after it


def test_sigint_nvi_ten_times_controller_loads_and_resume_matches(tmp_path, cache):
    model = problems.get("tiger")
    env = _env(cache)
    common = ["tiger", "--solver", "nvi", "--max-iterations", "24", "--time-limit", "100000", "--episodes", "20",
              "--quiet", *NVI_BANK]
    window = _reference(common + ["--out", "ref.pg", "--json", "ref.json", "--checkpoint", "ref"], env, tmp_path)
    ref_pg = (tmp_path / "ref.pg").read_bytes()
    ref = json.loads((tmp_path / "ref.json").read_text())["controller"]
    trials = _trials(lambda i: common + ["--out", f"p{i}.pg", "--checkpoint", f"c{i}"],
                     lambda i: common + ["--resume", f"c{i}", "--out", f"r{i}.pg", "--json", f"r{i}.json"],
                     window, env, tmp_path, seed=9)
    stopped_in_solve = 0
    for i, (delay, (rc, out, err), (rrc, rout, rerr)) in sorted(trials.items()):
        what = f"trial {i} (SIGINT {delay:.2f} s after loading):\n{out}{err}"
        assert rc == 128 + signal.SIGINT, what
        assert "Traceback" not in err, what
        stopped_in_solve += "stopped      by SIGINT" in out
        controller = read_pg(tmp_path / f"p{i}.pg", num_actions=model.num_actions,
                             num_observations=model.num_observations)
        assert np.isfinite(exact_value(controller, model)), what
        ev = evaluate(jax.random.key(i), model, ControllerPolicy(controller), num_episodes=50)
        assert np.isfinite(float(ev.mean)), what
        assert rrc == 0, what + rout + rerr
        assert (tmp_path / f"r{i}.pg").read_bytes() == ref_pg, what
        got = json.loads((tmp_path / f"r{i}.json").read_text())["controller"]
        assert (got["value_estimate"], got["num_nodes"], got["iterations"]) == \
               (ref["value_estimate"], ref["num_nodes"], ref["iterations"]), what
        _same_state(tmp_path / "ref", tmp_path / f"c{i}")
    assert len(trials) == KILLS
    assert stopped_in_solve >= 3


def test_sigterm_stops_with_143_and_keeps_the_policy_in_the_checkpoint_directory(tmp_path, cache):
    # the point-based test's problem and settings but for the step count (200 steps: over 40 s of solving), so
    # that the programs come from the cache
    env = _env(cache)
    run = Run(["4x3.95", "--solver", "hsvi", "--max-iterations", "200", "--target-gap", "0", "--time-limit", "100000",
               "--episodes", "20", "--checkpoint", "ck", "--checkpoint-every", "1", "--quiet"], env, tmp_path)
    time.sleep(8.0)
    assert run.proc.poll() is None
    run.proc.send_signal(signal.SIGTERM)
    rc, out, err = run.finish()
    assert rc == 128 + signal.SIGTERM, out + err
    assert "Traceback" not in err
    assert "stopped      by SIGTERM" in out and f"--resume {Path('ck')}" in out, out
    assert read_alpha(tmp_path / "ck" / "policy.alpha", num_states=11)[0].shape[1] == 11
    assert checkpoint.load(tmp_path / "ck").solver == "hsvi"
    assert not [p for p in tmp_path.rglob("*.tmp")]  # nothing half-written left behind


def test_sigint_while_jax_is_imported_is_one_line_and_writes_nothing(tmp_path):
    proc = subprocess.Popen([sys.executable, SOLVE, "tiger", "--out", "p.alpha"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(0.25)  # the script's first lines have run; importing JAX (~0.8 s here) has not finished
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert "before solving started; nothing written" in err
    assert not (tmp_path / "p.alpha").exists()
