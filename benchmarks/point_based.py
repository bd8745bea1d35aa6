#!/usr/bin/env python
"""Point-based solver benchmark: bounds, simulated value and speed beside SARSOP's.

Solves every model file in ``../shared/problems`` (beside the repository) with
:func:`jaxpomdp.solvers.point_based.solve` under a time limit, simulates the
returned policy, and prints a table with SARSOP's 60-second figures (copied from
``../shared/docs/BENCHMARKS.md``) beside ours. Writes JSON (``--json``, default
``results/point_based.json``), rewritten atomically after every problem.

    python benchmarks/point_based.py [--time-limit 60] [--problems a,b,...] [--method hsvi]
                                     [--episodes 2000] [--seed 0] [--json FILE] [--quick]

``--problems`` takes file names from ``../shared/problems`` (``Tiger.pomdp``; case
is ignored when the exact name is not there), ``rocksample:n,k`` (built in code,
e.g. ``rocksample:7,8``) or any other built-in problem name; the commas inside
``rocksample:7,8`` are understood. By default every ``*.pomdp``, ``*.POMDP`` and
``*.pomdpx`` file of the folder is run.

Columns:
  * ``lower``, ``upper``, ``gap``: the solver's certified bounds on ``V*(b0)``;
  * ``simulated``: :func:`jaxpomdp.simulate.evaluate` of the returned policy
    (``--episodes`` episodes, the default horizon, ``jax.random.key(seed)``), mean
    and the half-width of its 95% interval (1.96 standard errors);
  * ``solve s``, ``compile s``, ``#vec``: the solver's timings and final number of
    alpha-vectors;
  * ``SARSOP L``, ``SARSOP U``, ``SARSOP sim``: SARSOP after 60 CPU-seconds
    (``pomdpsol --timeout 60``), from BENCHMARKS.md (``.pomdpx`` twins use the
    ``.pomdp`` row; "p" marks a partial running mean without interval);
  * ``L vs S``: our lower bound against SARSOP's, with tolerance
    ``max(0.01 |L_sarsop|, 0.05)``: ``yes`` within it, ``above`` higher than
    SARSOP's by more, ``NO`` lower by more;
  * ``consistent``: ``yes`` when our lower <= SARSOP's upper and our upper >=
    SARSOP's lower (each up to ``1e-4 max(1, |value|)``, for the rounding of the
    published figures and float32), ``NO`` otherwise; only the checkable half
    where SARSOP's upper bound is unknown (``*`` marks that).

Below the table: peak resident memory of this process (``ru_maxrss``), and the
floating-point rate of the backup kernel (:func:`jaxpomdp.backup.point_backup_batch`,
jitted and warm, random alpha-vectors at random beliefs) against a dense float32
NumPy matrix product measured in the same run.

Floating-point operations counted per belief for the backup kernel (``S``
states, ``A`` actions, ``O`` observations, ``K`` successors per ``(s, a)``, ``M``
alpha-vectors; a multiply-add is 2, compares/argmax/selects/gathers are 0):

  * successor beliefs: predict ``2 A S K`` (sparse push-forward), times
    ``Z``: ``A O S``;
  * scores ``tau @ alphas.T``: ``2 A O S M``;
  * Q-values: ``R b``: ``2 A S``; ``gamma sum_o best``: ``A O + 2 A``;
  * the new vector: ``sum_o Z alpha``: ``2 S O``; ``sum_k T``: ``2 S K``;
    ``R + gamma (.)``: ``2 S``.

The scores product dominates (> 95% on the problems measured).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import resource
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxpomdp
from jaxpomdp import backup, problems, simulate
from jaxpomdp.io import atomic_write
from jaxpomdp.solvers import point_based

SHARED_PROBLEMS = Path(__file__).resolve().parents[1].parent / "shared" / "problems"
SUFFIXES = (".pomdp", ".POMDP", ".pomdpx")

# SARSOP (APPL ``pomdpsol --timeout 60``), copied from ../shared/docs/BENCHMARKS.md.
# "simulated": (mean, 95% half-width) or (running mean, None) where the evaluator
# was cut short ("p" in that table).
SARSOP_60S = {
    "Tiger.pomdp":          {"lower": 19.3711, "upper": 19.3721, "cpu_s": 0.01, "converged": True, "vectors": 5, "simulated": (19.34, 0.20)},
    "tiger.95.POMDP":       {"lower": 19.3711, "upper": 19.3721, "cpu_s": 0.01, "converged": True, "vectors": 5, "simulated": (19.34, 0.20)},
    "1d.POMDP":             {"lower": 1.26034, "upper": 1.26133, "cpu_s": 0.00, "converged": True, "vectors": 5, "simulated": (1.260, 0.010)},
    "paint.95.pomdp":       {"lower": 3.29358, "upper": 3.29456, "cpu_s": 0.06, "converged": True, "vectors": 5, "simulated": (3.278, 0.020)},
    "shuttle.95.POMDP":     {"lower": 32.8890, "upper": 32.8897, "cpu_s": 0.01, "converged": True, "vectors": 227, "simulated": (32.81, 0.28)},
    "4x3.95.POMDP":         {"lower": 1.88988, "upper": 1.89085, "cpu_s": 1.18, "converged": True, "vectors": 1273, "simulated": (1.887, 0.038)},
    "4x4.95.pomdp":         {"lower": 3.73228, "upper": 3.73325, "cpu_s": 0.03, "converged": True, "vectors": 43, "simulated": (3.733, 0.026)},
    "cheese.95.POMDP":      {"lower": 3.48525, "upper": 3.48624, "cpu_s": 0.01, "converged": True, "vectors": 162, "simulated": (3.483, 0.015)},
    "RockSample_4_4.pomdp": {"lower": 17.9245, "upper": 17.9245, "cpu_s": 0.47, "converged": True, "vectors": 207, "simulated": (18.01, 0.27)},
    "network.pomdp":        {"lower": 293.185, "upper": 293.320, "cpu_s": 60, "converged": False, "vectors": 24, "simulated": (293.2, None)},
    "milos-aaai97.pomdp":   {"lower": 49.5195, "upper": 71.0461, "cpu_s": 60, "converged": False, "vectors": 1443, "simulated": (49.6, None)},
    "tiger-grid.pomdp":     {"lower": 2.23946, "upper": 2.53448, "cpu_s": 60, "converged": False, "vectors": 424, "simulated": (2.26, None)},
    "Hallway.pomdp":        {"lower": 0.98872, "upper": 1.20955, "cpu_s": 60, "converged": False, "vectors": 229, "simulated": (1.03, None)},
    "mit.pomdp":            {"lower": 0.79332, "upper": 0.88536, "cpu_s": 60, "converged": False, "vectors": 1713, "simulated": (0.870, None)},
    # "Larger problems": 21.10 after 60 s on APPL's factored model (no upper bound or
    # simulated value given).
    "rocksample:7,8":       {"lower": 21.10, "upper": None, "cpu_s": 60, "converged": False, "vectors": None, "simulated": None},
}
# the .pomdpx twins use the .pomdp reference
SARSOP_60S["Tiger.pomdpx"] = SARSOP_60S["Tiger.pomdp"]
SARSOP_60S["Hallway.pomdpx"] = SARSOP_60S["Hallway.pomdp"]

QUICK_PROBLEMS = ["Tiger.pomdp", "1d.POMDP", "paint.95.pomdp"]


# ------------------------------------------------------------------ problems
def split_problems(text: str) -> list[str]:
    """``"a,rocksample:7,8,b"`` -> ``["a", "rocksample:7,8", "b"]``."""
    out: list[str] = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if out and out[-1].lower().startswith("rocksample:") and "," not in out[-1] \
                and re.fullmatch(r"\d+(:\d+)?", tok):
            out[-1] += "," + tok
        else:
            out.append(tok)
    return out


def shared_files() -> list[Path]:
    if not SHARED_PROBLEMS.is_dir():
        return []
    return sorted((p for p in SHARED_PROBLEMS.iterdir() if p.is_file() and p.name.endswith(SUFFIXES)),
                  key=lambda p: p.name.lower())


def resolve(name: str):
    """A problem name -> (display name, loader)."""
    files = {p.name: p for p in shared_files()}
    if name in files:
        return name, lambda: jaxpomdp.load_pomdp(files[name])
    lower = {k.lower(): k for k in files}
    if name.lower() in lower:
        real = lower[name.lower()]
        return real, lambda: jaxpomdp.load_pomdp(files[real])
    if Path(name).is_file():
        return Path(name).name, lambda: jaxpomdp.load_pomdp(name)
    key = name.lower()
    if key.startswith("rocksample:"):
        return key, lambda: problems.get(key)
    problems.get(name)  # raises KeyError for an unknown name
    return name, lambda: problems.get(name)


def reference(name: str):
    if name in SARSOP_60S:
        return SARSOP_60S[name]
    return {k.lower(): v for k, v in SARSOP_60S.items()}.get(name.lower())


# ------------------------------------------------------------------ comparisons
def lower_vs_sarsop(ours: float, ref: dict | None):
    if ref is None or ref.get("lower") is None or ours is None:
        return None
    tol = max(0.01 * abs(ref["lower"]), 0.05)
    if ours < ref["lower"] - tol:
        return "NO"
    return "above" if ours > ref["lower"] + tol else "yes"


def consistent_with_sarsop(lower: float, upper: float, ref: dict | None):
    """``(verdict, partial)``: our bounds against SARSOP's (None when nothing to check)."""
    if ref is None or lower is None or upper is None:
        return None, False
    tol = lambda v: 1e-4 * max(1.0, abs(v))  # noqa: E731
    ok, partial = True, False
    if ref.get("upper") is not None:
        ok &= lower <= ref["upper"] + tol(ref["upper"])
    else:
        partial = True
    if ref.get("lower") is not None:
        ok &= upper >= ref["lower"] - tol(ref["lower"])
    else:
        partial = True
    return ("yes" if ok else "NO"), partial


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if platform.system() == "Darwin" else rss / 1024  # bytes on macOS, KiB on Linux


# ------------------------------------------------------------------ one problem
def run_problem(name: str, load, args) -> dict:
    t0 = time.perf_counter()
    model = load()
    row = {"problem": name, "num_states": model.num_states, "num_actions": model.num_actions,
           "num_observations": model.num_observations, "discount": float(model.discount),
           "load_seconds": time.perf_counter() - t0}
    res = point_based.solve(model, method=args.method, time_limit=args.time_limit, seed=args.seed)
    row.update(lower=float(res.lower_bound), upper=float(res.upper_bound),
               gap=float(res.upper_bound) - float(res.lower_bound),
               solve_seconds=res.solve_seconds, compile_seconds=res.compile_seconds,
               num_vectors=int(res.info.get("num_vectors", 0)), num_points=int(res.info.get("num_points", 0)),
               iterations=int(res.info.get("iterations", 0)))
    t0 = time.perf_counter()
    ev = simulate.evaluate(jax.random.key(args.seed), model, res.policy, num_episodes=args.episodes)
    mean, stderr = float(ev.mean), float(ev.stderr)
    row["simulated"] = {"mean": mean, "stderr": stderr, "ci95_half_width": 1.96 * stderr,
                        "episodes": ev.num_episodes, "horizon": ev.horizon,
                        "truncation_bound": ev.truncation_bound,
                        "seconds": time.perf_counter() - t0}
    ref = reference(name)
    row["sarsop_60s"] = ref
    row["lower_vs_sarsop"] = lower_vs_sarsop(row["lower"], ref)
    row["consistent_with_sarsop"], row["consistency_partial"] = consistent_with_sarsop(row["lower"], row["upper"], ref)
    row["peak_rss_mb_so_far"] = peak_rss_mb()
    return row


# ------------------------------------------------------------------ FLOP rate
def backup_flops_per_belief(S: int, A: int, O: int, K: int, M: int) -> dict:
    parts = {"scores": 2 * A * O * S * M,
             "successor_beliefs": 2 * A * S * K + A * O * S,
             "q_values": 2 * A * S + A * O + 2 * A,
             "vector_build": 2 * S * O + 2 * S * K + 2 * S}
    parts["total"] = sum(parts.values())
    return parts


def best_time(fn, repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_flops(model_name: str, model, num_vectors: int, num_beliefs: int, repeats: int,
                matmul_n: int) -> dict:
    S, A, O = model.num_states, model.num_actions, model.num_observations
    K = int(model.next_state.shape[-1])
    k1, k2 = jax.random.split(jax.random.key(123))
    dtype = model.reward.dtype
    scale = float(jnp.max(jnp.abs(model.reward))) / (1 - float(model.discount))
    alphas = (scale * jax.random.normal(k1, (num_vectors, S))).astype(dtype)
    mask = jnp.ones(num_vectors, bool)
    beliefs = jax.random.dirichlet(k2, jnp.ones(S), (num_beliefs,)).astype(dtype)
    kernel = jax.jit(backup.point_backup_batch)
    run = lambda: jax.block_until_ready(kernel(model, alphas, mask, beliefs))  # noqa: E731
    seconds = best_time(run, repeats)
    per_belief = backup_flops_per_belief(S, A, O, K, num_vectors)
    flops = num_beliefs * per_belief["total"]

    rng = np.random.default_rng(0)
    a = rng.standard_normal((matmul_n, matmul_n), dtype=np.float32)
    b = rng.standard_normal((matmul_n, matmul_n), dtype=np.float32)
    mm_seconds = best_time(lambda: a @ b, repeats)
    mm_flops = 2 * matmul_n ** 3
    backup_rate, mm_rate = flops / seconds / 1e9, mm_flops / mm_seconds / 1e9
    return {"problem": model_name, "S": S, "A": A, "O": O, "K": K, "num_vectors": num_vectors,
            "num_beliefs": num_beliefs, "flops_per_belief": per_belief, "flops": flops,
            "seconds": seconds, "gflops": backup_rate,
            "scores_share": per_belief["scores"] / per_belief["total"],
            "numpy_matmul": {"n": matmul_n, "dtype": "float32", "seconds": mm_seconds, "gflops": mm_rate},
            "ratio_to_matmul": backup_rate / mm_rate}


# ------------------------------------------------------------------ output
def fmt(x, spec=".4g", none="-"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


HEADER = (f"{'problem':22s} {'|S|':>6s} {'|A|':>3s} {'|O|':>3s} {'lower':>9s} {'upper':>9s} {'gap':>9s} "
          f"{'simulated':>17s} {'solve s':>7s} {'comp s':>6s} {'#vec':>5s} | {'SARSOP L':>9s} {'SARSOP U':>9s} "
          f"{'SARSOP sim':>14s} {'L vs S':>6s} {'consistent':>10s}")


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['problem']:22s} ERROR: {r['error']}"
    sim = r["simulated"]
    ref = r.get("sarsop_60s") or {}
    rsim = ref.get("simulated")
    if rsim is None:
        rsim_s = "-"
    elif rsim[1] is None:
        rsim_s = f"{rsim[0]:.4g} p"
    else:
        rsim_s = f"{rsim[0]:.4g} ± {rsim[1]:.2g}"
    cons = r.get("consistent_with_sarsop")
    cons_s = "-" if cons is None else cons + ("*" if r.get("consistency_partial") else "")
    return (f"{r['problem']:22s} {r['num_states']:6d} {r['num_actions']:3d} {r['num_observations']:3d} "
            f"{r['lower']:9.5g} {r['upper']:9.5g} {r['gap']:9.3g} "
            f"{sim['mean']:>9.4g} ± {sim['ci95_half_width']:<5.2g} {r['solve_seconds']:7.1f} "
            f"{r['compile_seconds']:6.1f} {r['num_vectors']:5d} | {fmt(ref.get('lower'), '9.6g'):>9s} "
            f"{fmt(ref.get('upper'), '9.6g'):>9s} {rsim_s:>14s} {fmt(r.get('lower_vs_sarsop'), 's'):>6s} "
            f"{cons_s:>10s}")


def format_flops(f: dict) -> str:
    return (f"backup kernel (point_backup_batch, {f['problem']}: S={f['S']} A={f['A']} O={f['O']} K={f['K']}, "
            f"M={f['num_vectors']} vectors, N={f['num_beliefs']} beliefs): {f['gflops']:.2f} GFLOP/s "
            f"({f['flops'] / 1e9:.2f} GFLOP in {f['seconds'] * 1e3:.1f} ms, scores {100 * f['scores_share']:.1f}% "
            f"of the count); NumPy float32 {f['numpy_matmul']['n']}x{f['numpy_matmul']['n']} matmul: "
            f"{f['numpy_matmul']['gflops']:.2f} GFLOP/s; ratio {f['ratio_to_matmul']:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds of solving per problem (default 60; 2 with --quick)")
    ap.add_argument("--problems", default=None,
                    help="comma-separated problem names (default: every file in ../shared/problems)")
    ap.add_argument("--method", default="hsvi", choices=point_based.METHODS)
    ap.add_argument("--episodes", type=int, default=None, help="simulated episodes (default 2000; 500 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="results/point_based.json")
    ap.add_argument("--quick", action="store_true", help="tiny time limits and a few small problems (a smoke run)")
    args = ap.parse_args(argv)
    if args.time_limit is None:
        args.time_limit = 2.0 if args.quick else 60.0
    if args.episodes is None:
        args.episodes = 500 if args.quick else 2000

    if args.problems:
        names = split_problems(args.problems)
    else:
        names = QUICK_PROBLEMS if args.quick else [p.name for p in shared_files()]
    if not names:
        print(f"no problems: {SHARED_PROBLEMS} has no model files and --problems was not given", file=sys.stderr)
        return 2
    resolved = []
    for n in names:
        try:
            resolved.append(resolve(n))
        except KeyError:
            print(f"unknown problem {n!r} (not a file in {SHARED_PROBLEMS}, nor a built-in name)", file=sys.stderr)
            return 2

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    wall0 = time.perf_counter()
    results = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
               "jaxpomdp_version": jaxpomdp.__version__, "method": args.method,
               "time_limit": args.time_limit, "episodes": args.episodes, "seed": args.seed,
               "quick": args.quick, "problems_dir": str(SHARED_PROBLEMS), "rows": []}

    def save():
        results["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")  # readme_table's "written", not the file's time
        results["peak_rss_mb"] = peak_rss_mb()
        results["wall_seconds"] = time.perf_counter() - wall0
        atomic_write(out, json.dumps(results, indent=2) + "\n")

    # the backup kernel's FLOP rate, first (short), on one mid-size problem
    if args.quick:
        flop_model_name, flop_model = "rocksample_4_4", problems.get("rocksample_4_4")
        flop_args = dict(num_vectors=64, num_beliefs=256, repeats=3, matmul_n=512)
    else:
        path = SHARED_PROBLEMS / "Hallway.pomdp"
        flop_model_name = path.name if path.is_file() else "hallway"
        flop_model = jaxpomdp.load_pomdp(path) if path.is_file() else problems.get("hallway")
        flop_args = dict(num_vectors=512, num_beliefs=2048, repeats=10, matmul_n=2048)
    results["flops"] = bench_flops(flop_model_name, flop_model, **flop_args)
    print(format_flops(results["flops"]), flush=True)
    save()

    print(f"method {args.method}, time limit {args.time_limit:g} s per problem, {args.episodes} episodes, "
          f"seed {args.seed}, backend {jax.default_backend()}", flush=True)
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    errors = 0
    for name, load in resolved:
        try:
            row = run_problem(name, load, args)
        except Exception as e:  # noqa: BLE001 -- one problem's failure must not lose the others
            errors += 1
            row = {"problem": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        results["rows"].append(row)
        print(format_row(row), flush=True)
        save()
    print("-" * len(HEADER))
    print("L vs S: our lower vs SARSOP's 60-s lower, tolerance max(1%, 0.05); consistent: our lower <= SARSOP "
          "upper and our upper >= SARSOP lower (* = SARSOP upper unknown, half checked); p = partial mean")
    print(format_flops(results["flops"]))
    save()
    print(f"peak memory (ru_maxrss): {results['peak_rss_mb']:.0f} MB; wall {results['wall_seconds']:.0f} s; "
          f"{errors} error(s)")
    print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
