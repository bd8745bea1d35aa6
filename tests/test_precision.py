"""float32 and float64 agree on every problem in ``../shared/problems`` (issue 8, item 3).

64-bit mode is process-global in JAX, so each precision runs in its own
subprocess: this file run as a script (``python tests/test_precision.py --worker
float32|float64 OUT``) with ``JAX_ENABLE_X64=0`` or ``1``. Each worker does every
problem in turn (one JAX import, compilations shared where shapes allow) and
writes ``OUT/results.json`` plus one ``.npz`` per problem; the two workers run at
the same time. The tests below only compare what they wrote, so the test
process's own JAX configuration does not matter.

What is compared, per model file, and within what:

* **The model as read** (every file): ``next_state`` identical; ``next_prob``,
  ``obs_prob``, ``reward``, ``initial_belief`` and ``discount`` of the float32
  model within ``MODEL_RTOL = 1e-6`` relative of the float64 model (float32's
  unit roundoff is 6e-8), and in fact bit-identical to the float64 numbers
  rounded to float32 (the readers parse in float64 and round once); names and
  sizes identical.

* **Deterministic bounds at b0** (every file): the blind-policy lower bound
  (``bounds.blind_lower_bound``), the QMDP upper bound
  (``bounds.qmdp_upper_bound``) and the FIB upper bound (``max_a fib_a . b0``),
  and one point-based backup at b0 of the blind vectors (``backup.point_backup``:
  ``Q_L(b0, a)`` for every ``a``) and of the FIB vectors (the one-step lookahead
  upper bound ``Q_U(b0, a)``), within ``BOUND_RTOL * scale`` absolute, where
  ``scale = max|R| / (1 - discount)`` (from the float64 model; the value scale the
  solvers use, ``solvers.baseline.value_scale``). Why ``1e-4``: the certified
  float32 bounds are padded by the worst-case rounding of a sweep, about
  ``(K + 3) u |V| / (1 - gamma)`` (``bounds`` module docstring; ``u = 6e-8``, ``K``
  successors), i.e. at most ``(K + 3) * 6e-8 / (1 - gamma)`` of ``scale``: from
  1.4e-6 (1d) to 3.6e-5 (mit, gamma = 0.99) and 7.1e-5 (Hallway, K = 56). The
  measured differences are at most 1.0e-5 of ``scale`` (Hallway's QMDP and FIB;
  tiger-grid's blind bound 9.5e-6; most files 1e-7 to 5e-6), so the tolerance
  fails at a disagreement 10x the largest seen. The float32 bounds are certified
  for the float32-rounded model, so they should lie on the outer side of the
  float64 ones (lower below, upper above); they are checked to, up to
  ``DIRECTION_RTOL = 1e-5`` of ``scale`` (only the float32 rounding of the model
  itself can move them inwards; measured: never, on any file).

* **A short point-based solve** (``SOLVE_PROBLEMS``: Tiger and shuttle, small
  problems that converge within ``SOLVE_MAX_ITERATIONS`` HSVI steps, and on which
  the float32 and float64 searches differ, so that two different searches are
  compared). A solve costs about 12 CPU seconds per model and precision, nearly
  all of it compiling the solver's programs (the HSVI step, pruning, the bounds
  at b0) for that model's shapes, plus a few for its simulation below; so the
  other models get the reading, bounds and one-step backup checks only. 1d and
  cheese were solved here too, and dropped for time (with their simulations about
  60 of the two workers' CPU seconds); they passed every check below (1d: 6 steps
  in both precisions, the same 4 vectors; cheese: 9 steps, 10 and 9 vectors;
  paired difference 0); they run the same solver and checks on other small
  models, and cheese, the larger (11 states, 7 observations), keeps the checks
  of every file. Each of the two is solved with
  ``point_based.solve(method="hsvi", time_limit=None, max_iterations=...,
  seed=SOLVE_SEED)`` in both precisions. The search is not the same in both
  precisions (trials sample observations with weights computed in the working
  precision, and the improvement thresholds are ``8 eps`` of the dtype), so the
  alpha-vectors are not compared. Instead:

  - each side's certified lower bound is at most the other side's certified
    upper bound + ``BOUND_RTOL * scale``;
  - both sides reach ``upper - lower <= SOLVE_TARGET_GAP`` and their lower
    bounds agree within ``SOLVE_TARGET_GAP + BOUND_RTOL * scale``;
  - both sides' policies (greedy on their alpha-vectors, belief tracked exactly)
    are simulated in float64 on the float64 model with the same keys
    (``EPISODES`` episodes, horizon ``default_horizon(gamma, tolerance=1e-4)``):
    each earns at least its own lower bound and at most the smaller upper bound,
    within ``Z * stderr + truncation + BOUND_RTOL * scale``; and the paired
    difference of their returns is at most the larger upper minus the smaller
    lower bound (what two policies whose values lie in those brackets can
    differ by) + ``2 truncation + Z * stderr(difference) + BOUND_RTOL * scale``.
    When the two policies act alike the paired difference is exactly 0 (as
    measured on both, though the searches differ: Tiger takes 24 steps in
    float32 and 23 in float64, shuttle 14 and 11).
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "problems"  # located as test_cassandra/test_pomdpx/test_benchmarks do

#: What counts as a model file (what ``jaxpomdp.load_pomdp`` reads).
MODEL_SUFFIXES = (".pomdp", ".pomdpx", ".pomdp.gz", ".pomdpx.gz")
FILES = sorted((p.name for p in SHARED.iterdir() if p.is_file() and p.name.lower().endswith(MODEL_SUFFIXES)),
               key=str.lower) if SHARED.is_dir() else []

#: Relative tolerance on every number of the model as read (float32 vs float64).
MODEL_RTOL = 1e-6
#: Absolute tolerance on values, as a fraction of ``max|R| / (1 - discount)``.
BOUND_RTOL = 1e-4
#: How far (same units) a float32 certified bound may be on the inner side of the float64 one.
DIRECTION_RTOL = 1e-5
#: Problems solved in both precisions (the rest get the reading and bounds checks).
SOLVE_PROBLEMS = ("Tiger.pomdp", "shuttle.95.POMDP")
SOLVE_MAX_ITERATIONS = 40
SOLVE_TARGET_GAP = 1e-3
SOLVE_SEED = 0
#: Simulated episodes per policy, the horizon's truncation tolerance and the z of the intervals.
EPISODES = 2000
HORIZON_TOLERANCE = 1e-4
SIM_SEED = 0
Z = 4.0
#: Seconds either worker may take.
WORKER_TIMEOUT = 600

PRECISIONS = ("float32", "float64")
MODEL_FIELDS = ("next_state", "next_prob", "obs_prob", "reward", "initial_belief", "discount")


# ====================================================================== worker
def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _worker(precision: str, out: Path) -> int:
    """Reads, bounds and (for ``SOLVE_PROBLEMS``) solves every model file; writes ``out``.

    The float64 worker then reads a line from stdin: the float32 worker's output
    folder (empty: skip), and simulates both sides' policies in float64.
    """
    import jax
    import jax.numpy as jnp

    import jaxpomdp
    from jaxpomdp import backup, bounds, simulate
    from jaxpomdp.policy import AlphaVectorPolicy
    from jaxpomdp.solvers import point_based

    x64 = bool(jax.config.jax_enable_x64)
    if x64 != (precision == "float64"):
        print(f"worker {precision}: jax_enable_x64 is {x64}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    results = {"precision": precision, "jax_enable_x64": x64, "jax_version": jax.__version__,
               "backend": jax.default_backend(), "problems": {}}

    @jax.jit
    def at_b0(model, vectors, b):
        """``(max_k vectors[k] . b, Q(b, .))``: the vectors' value at ``b`` and one point backup there.

        One program per model shape serves both vector sets (blind, FIB); the FIB
        bound's product and max compile with it, not as two more eager programs.
        """
        mask = jnp.ones(vectors.shape[0], bool)
        return jnp.max(vectors @ b), backup.point_backup(model, vectors, mask, b).q

    t_all = time.perf_counter()
    for name in FILES:
        t0 = time.perf_counter()
        row: dict = {}
        results["problems"][name] = row
        try:
            m = jaxpomdp.load_pomdp(SHARED / name)
            np.savez(out / f"{_stem(name)}.model.npz", **{f: np.asarray(getattr(m, f)) for f in MODEL_FIELDS})
            row.update(dtype=str(m.reward.dtype), sizes=[m.num_states, m.num_actions, m.num_observations],
                       names=[list(m.state_names or ()), list(m.action_names or ()),
                              list(m.observation_names or ())])
            b0 = m.initial_belief
            blind = bounds.blind_alphas(m)
            fib = bounds.fib(m)
            row["blind"] = float(bounds.blind_lower_bound(m)[0])
            row["qmdp"] = float(bounds.qmdp_upper_bound(m)[0])
            fib_b0, backup_fib = at_b0(m, fib, b0)
            row["fib"] = float(fib_b0)
            row["backup_blind"] = np.asarray(at_b0(m, blind, b0)[1], np.float64).tolist()
            row["backup_fib"] = np.asarray(backup_fib, np.float64).tolist()
            if name in SOLVE_PROBLEMS:
                t1 = time.perf_counter()
                res = point_based.solve(m, method="hsvi", time_limit=None, max_iterations=SOLVE_MAX_ITERATIONS,
                                        target_gap=SOLVE_TARGET_GAP, seed=SOLVE_SEED)
                row["solve"] = {"lower": float(res.lower_bound), "upper": float(res.upper_bound),
                                "iterations": int(res.info["iterations"]),
                                "num_vectors": int(res.info["num_vectors"]),
                                "seconds": time.perf_counter() - t1}
                np.savez(out / f"{_stem(name)}.policy.npz", alphas=np.asarray(res.alphas),
                         actions=np.asarray(res.alpha_actions))
        except Exception:  # noqa: BLE001 -- recorded, so that only this problem's tests fail
            row["error"] = traceback.format_exc()
        row["seconds"] = time.perf_counter() - t0
    results["seconds"] = time.perf_counter() - t_all
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if precision != "float64":
        return 0

    # ---- both sides' policies, simulated in float64 with the same keys
    other = sys.stdin.readline().strip()
    evaluation = {}
    if other:
        @functools.partial(jax.jit, static_argnames="horizon")
        def paired_returns(model, alphas, actions, keys, horizon):
            """float[2, N]: the discounted return of each policy in each episode."""
            def returns(al, ac):
                policy = AlphaVectorPolicy(al, ac)
                return jax.vmap(lambda k: simulate.rollout(k, model, policy, horizon).discounted_return)(keys)
            return jax.vmap(returns)(alphas, actions)

        for name in SOLVE_PROBLEMS:
            if "solve" not in results["problems"].get(name, {}):
                continue
            t0 = time.perf_counter()
            try:
                m = jaxpomdp.load_pomdp(SHARED / name)
                sides = [np.load(Path(d) / f"{_stem(name)}.policy.npz") for d in (other, out)]
                n = max(s["alphas"].shape[0] for s in sides)
                # pad with vectors that never win, so that both policies have one shape
                alphas = np.full((2, n, m.num_states), -1e30)
                actions = np.zeros((2, n), np.int32)
                for i, s in enumerate(sides):
                    k = s["alphas"].shape[0]
                    alphas[i, :k] = np.asarray(s["alphas"], np.float64)
                    actions[i, :k] = s["actions"]
                gamma = float(m.discount)
                horizon = simulate.default_horizon(gamma, tolerance=HORIZON_TOLERANCE)
                r_max = float(np.max(np.abs(np.asarray(m.reward))))
                keys = jax.random.split(jax.random.key(SIM_SEED), EPISODES)
                returns = np.asarray(paired_returns(m, jnp.asarray(alphas), jnp.asarray(actions), keys,
                                                    horizon=horizon), np.float64)
                np.save(out / f"{_stem(name)}.returns.npy", returns)
                evaluation[name] = {"horizon": horizon, "truncation": gamma ** horizon * r_max / (1 - gamma),
                                    "seconds": time.perf_counter() - t0}
            except Exception:  # noqa: BLE001 -- as above
                evaluation[name] = {"error": traceback.format_exc()}
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=1))
    return 0


# ====================================================================== runs
def _start(precision: str, out: Path, stdin=None) -> subprocess.Popen:
    env = dict(os.environ)
    env["JAX_ENABLE_X64"] = "1" if precision == "float64" else "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(out.parent / f"{precision}.log", "wb") as log:  # a file: a full pipe would stall the worker
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", precision, str(out)],
                                cwd=ROOT, env=env, stdin=stdin, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, precision: str, out: Path, deadline: float) -> None:
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = f"killed after {WORKER_TIMEOUT} s"
    if rc != 0:
        tail = (out.parent / f"{precision}.log").read_text(errors="replace")[-6000:]
        pytest.fail(f"the {precision} worker failed ({rc}):\n{tail}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{precision: (results, folder)}`` from the two workers (run at the same time)."""
    if not FILES:
        pytest.skip(f"{SHARED} is not available")
    base = tmp_path_factory.mktemp("precision")
    outs = {p: base / p for p in PRECISIONS}
    deadline = time.monotonic() + WORKER_TIMEOUT
    f64 = _start("float64", outs["float64"], stdin=subprocess.PIPE)
    try:
        f32 = _start("float32", outs["float32"])
        try:
            _finish(f32, "float32", outs["float32"], deadline)
        finally:
            try:  # the float64 worker simulates both policies once it has the float32 ones
                f64.stdin.write(f"{outs['float32'] if f32.returncode == 0 else ''}\n".encode())
                f64.stdin.close()
            except OSError:
                pass
    finally:
        if not f64.stdin.closed:  # the float32 worker did not start: end of input, no simulation
            f64.stdin.close()
        _finish(f64, "float64", outs["float64"], deadline)
    return {p: (json.loads((outs[p] / "results.json").read_text()), outs[p]) for p in PRECISIONS}


def _rows(runs, name):
    rows = {}
    for p in PRECISIONS:
        row = runs[p][0]["problems"].get(name)
        assert row is not None, f"the {p} worker did not see {name}"
        if "error" in row:
            pytest.fail(f"{name}, {p}: {row['error']}")
        rows[p] = row
    return rows


def _model(runs, precision, name):
    return np.load(runs[precision][1] / f"{_stem(name)}.model.npz")


def _scale(runs, name) -> float:
    """``max|R| / (1 - discount)`` of the float64 model: the unit of the value tolerances."""
    m = _model(runs, "float64", name)
    return float(np.max(np.abs(m["reward"]))) / (1.0 - float(m["discount"]))


# ====================================================================== tests
def test_the_workers_ran_in_their_precisions(runs):
    for p in PRECISIONS:
        results = runs[p][0]
        assert results["jax_enable_x64"] is (p == "float64")
        assert list(results["problems"]) == FILES  # every model file, in both
        for name, row in results["problems"].items():
            if "dtype" in row:
                assert row["dtype"] == p, (name, row["dtype"])


@pytest.mark.parametrize("name", FILES)
def test_model_numbers_agree(runs, name):
    rows = _rows(runs, name)
    assert rows["float32"]["sizes"] == rows["float64"]["sizes"]
    assert rows["float32"]["names"] == rows["float64"]["names"]
    m32, m64 = _model(runs, "float32", name), _model(runs, "float64", name)
    np.testing.assert_array_equal(m32["next_state"], m64["next_state"])
    for field in MODEL_FIELDS[1:]:
        x32, x64 = m32[field], m64[field]
        assert x32.dtype == np.float32 and x64.dtype == np.float64, (field, x32.dtype, x64.dtype)
        assert x32.shape == x64.shape, (field, x32.shape, x64.shape)
        np.testing.assert_allclose(x32, x64, rtol=MODEL_RTOL, atol=0, err_msg=f"{name}: {field}")
        # the readers parse in float64 and round once to the model's dtype
        np.testing.assert_array_equal(x32, x64.astype(np.float32), err_msg=f"{name}: {field} rounded once")


@pytest.mark.parametrize("name", FILES)
def test_bounds_at_b0_agree(runs, name):
    rows = _rows(runs, name)
    r32, r64 = rows["float32"], rows["float64"]
    scale = _scale(runs, name)
    tol, inner = BOUND_RTOL * scale, DIRECTION_RTOL * scale
    for what in ("blind", "qmdp", "fib"):
        assert abs(r32[what] - r64[what]) <= tol, \
            f"{name}: {what} at b0: float32 {r32[what]!r}, float64 {r64[what]!r} (tolerance {tol:.3g})"
    # certified bounds: float32's pad for rounding puts them on the outer side
    assert r32["blind"] <= r64["blind"] + inner, (name, r32["blind"], r64["blind"])
    assert r32["qmdp"] >= r64["qmdp"] - inner, (name, r32["qmdp"], r64["qmdp"])
    assert r32["fib"] >= r64["fib"] - inner, (name, r32["fib"], r64["fib"])
    for what in ("backup_blind", "backup_fib"):
        q32, q64 = np.asarray(r32[what]), np.asarray(r64[what])
        assert q32.shape == q64.shape
        assert np.max(np.abs(q32 - q64)) <= tol, \
            f"{name}: one-step {what} Q(b0, .): float32 {q32.tolist()}, float64 {q64.tolist()} (tolerance {tol:.3g})"


SOLVED = [n for n in SOLVE_PROBLEMS if n in FILES]


@pytest.mark.parametrize("name", SOLVED)
def test_point_based_bounds_are_consistent(runs, name):
    rows = _rows(runs, name)
    s32, s64 = rows["float32"]["solve"], rows["float64"]["solve"]
    tol = BOUND_RTOL * _scale(runs, name)
    detail = f"{name}: float32 [{s32['lower']!r}, {s32['upper']!r}], float64 [{s64['lower']!r}, {s64['upper']!r}]"
    assert s32["lower"] <= s64["upper"] + tol, detail
    assert s64["lower"] <= s32["upper"] + tol, detail
    for p, s in (("float32", s32), ("float64", s64)):
        assert s["upper"] - s["lower"] <= SOLVE_TARGET_GAP, \
            f"{detail}: {p} did not reach the gap {SOLVE_TARGET_GAP} in {s['iterations']} steps"
    assert abs(s32["lower"] - s64["lower"]) <= SOLVE_TARGET_GAP + tol, detail


@pytest.mark.parametrize("name", SOLVED)
def test_policies_earn_the_same_in_float64(runs, name):
    rows = _rows(runs, name)
    s32, s64 = rows["float32"]["solve"], rows["float64"]["solve"]
    evaluation = json.loads((runs["float64"][1] / "evaluation.json").read_text()).get(name)
    assert evaluation is not None, f"{name}: no simulation"
    if "error" in evaluation:
        pytest.fail(f"{name}: simulation: {evaluation['error']}")
    returns = np.load(runs["float64"][1] / f"{_stem(name)}.returns.npy")  # [2, EPISODES]: float32's, float64's
    assert returns.shape == (2, EPISODES) and np.all(np.isfinite(returns))
    tol = BOUND_RTOL * _scale(runs, name)
    trunc = evaluation["truncation"]
    upper = min(s32["upper"], s64["upper"])
    for i, (p, s) in enumerate((("float32", s32), ("float64", s64))):
        mean, se = returns[i].mean(), returns[i].std(ddof=1) / math.sqrt(EPISODES)
        width = Z * se + trunc + tol
        where = f"{name}: the {p} policy's simulated value {mean:.6f} +- {width:.3g}"
        assert mean + width >= s["lower"], f"{where} is below its lower bound {s['lower']!r}"
        assert mean - width <= upper, f"{where} is above the upper bound {upper!r}"
    diff = returns[0] - returns[1]
    se = diff.std(ddof=1) / math.sqrt(EPISODES)
    spread = max(s32["upper"], s64["upper"]) - min(s32["lower"], s64["lower"])
    allowed = spread + 2 * trunc + Z * se + tol
    assert abs(diff.mean()) <= allowed, \
        f"{name}: float32's policy earns {diff.mean():+.6f} more than float64's in float64 (allowed {allowed:.3g})"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker" and sys.argv[2] in PRECISIONS:
        sys.exit(_worker(sys.argv[2], Path(sys.argv[3])))
    sys.exit(f"usage: {sys.argv[0]} --worker {{float32,float64}} OUT")
