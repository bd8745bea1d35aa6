#!/usr/bin/env python
"""GPOMDP benchmark: estimator throughput, bias and variance against the exact gradient, trained policies.

Three tables, all measured in this run, written to JSON (``--json``, default
``results/gpomdp.json``) and, when matplotlib is installed (``pip install
".[plot]"``), a PNG of the bias/variance experiment (``--plot``, default
``results/gpomdp.png``):

1. **Throughput**: environment steps per second of :func:`jaxpomdp.solvers.gpomdp.gpomdp`
   (jitted, warm; the best of ``--repeats`` timed calls) on the three-state system
   with the paper's logistic policy, for 1, 64 and 4096 chains, against a plain
   NumPy per-step loop of the same algorithm (same model, policy and recursion;
   ``rng.choice`` draws, the trace and ``Delta`` updated in NumPy) timed in the
   same run. ``x numpy`` is the ratio.
2. **Bias and standard error** against the exact ``grad eta``
   (:mod:`jaxpomdp.markov`) for several ``beta`` and ``T``, like the paper's
   figures, on Tiger with a fixed random 2-state controller (where, unlike the
   three-state system, the trace discount matters): ``rel. bias`` is
   ``||mean Delta_T - grad eta|| / ||grad eta||`` over ``--chains`` chains,
   ``rel. SE`` the norm of the standard errors over ``||grad eta||``, ``angle``
   the angle in degrees between the mean estimate and ``grad eta``; ``exact
   limit`` is the relative distance of ``grad_beta eta`` itself (the bias that
   remains as ``T -> infinity``).
3. **Trained policies**: CONJPOMDP+GPOMDP on the three-state system from
   ``theta = 0`` (``--seeds`` seeds; exact ``eta``, iterations, wall time including
   compilation) and GPOMDP-trained finite-state controllers (``--memory`` memory
   states, discounted objective, ``--restarts`` restarts, ``--fsc-time`` seconds)
   on Tiger and 4x3.95: simulated discounted value ± 95% interval beside the
   point-based lower bound (SARSOP's, from BENCHMARKS.md) and their ratio.

``--quick`` (a smoke run): 2000 NumPy-loop steps and 25 steps per chain in the
throughput table; betas 0, 0.5, 0.9, 0.99 and ``T = 100`` only (one compilation)
in the bias table, 128 chains; one CONJPOMDP seed with 100 steps per chain per
``GRAD`` (the default 1000; the three-state system still reaches ``eta ~ 0.8``);
4 restarts and 5 s per controller, 1000 simulated episodes.

    python benchmarks/gpomdp.py [--quick] [--json FILE] [--plot FILE] [--fsc-time S]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxpomdp import markov, problems, simulate, stochastic
from jaxpomdp.io import atomic_write
from jaxpomdp.solvers import conjpomdp, gpomdp

#: SARSOP's 60-second lower bounds (../shared/docs/BENCHMARKS.md), the point-based reference.
REFERENCE_LOWER = {"tiger": 19.3711, "4x3.95": 1.88988}


# ---------------------------------------------------------------- throughput
def numpy_gpomdp(model, theta, beta, num_steps, seed=0):
    """The paper's recursion as a plain per-step NumPy loop (the baseline)."""
    rng = np.random.default_rng(seed)
    T = np.asarray(model.next_prob)            # three-state: dense successors in canonical order
    succ = np.asarray(model.next_state)
    R = np.asarray(model.reward)
    phi_table = np.asarray(model.observation_features)
    b0 = np.asarray(model.initial_belief)
    theta = np.asarray(theta, np.float64)
    s = rng.choice(len(b0), p=b0)
    phi = np.zeros_like(theta)
    z = np.zeros_like(theta)
    delta = np.zeros_like(theta)
    for t in range(num_steps):
        p0 = 1.0 / (1.0 + math.exp(-float(theta @ phi)))
        u = 0 if rng.random() < p0 else 1
        score = phi * ((1 - p0) if u == 0 else -p0)
        z = beta * z + score
        k = rng.choice(T.shape[-1], p=T[u, s])
        r = R[u, s]
        s = int(succ[u, s, k])
        phi = phi_table[s]                   # three-state observes its state
        delta += (r * z - delta) / (t + 1)
    return delta


def throughput(repeats: int, numpy_steps: int, chain_counts, steps_per_chain: int):
    model = problems.three_state()
    policy = stochastic.LogisticPolicy(num_features=2)
    theta = jnp.array([0.5, -0.5])
    t0 = time.perf_counter()
    numpy_gpomdp(model, theta, 0.9, numpy_steps)
    numpy_rate = numpy_steps / (time.perf_counter() - t0)
    rows = []
    for chains in chain_counts:
        run = lambda key: gpomdp.gpomdp(key, model, policy, theta, num_steps=steps_per_chain,  # noqa: E731
                                        beta=0.9, num_chains=chains)
        t0 = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(0)))
        first = time.perf_counter() - t0
        best = math.inf
        for i in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(run(jax.random.key(i + 1)))
            best = min(best, time.perf_counter() - t0)
        rate = chains * steps_per_chain / best
        rows.append({"chains": chains, "steps_per_chain": steps_per_chain, "seconds": best,
                     "first_call_seconds": first, "steps_per_second": rate,
                     "numpy_steps_per_second": numpy_rate, "ratio_to_numpy": rate / numpy_rate})
    return rows


# ------------------------------------------------------------- bias/variance
def bias_table(betas, horizons, chains, seed=0):
    model = problems.tiger()
    policy = stochastic.FiniteStateController(num_features=2, num_actions=3, num_memory=2)
    params = policy.init_params(jax.random.key(1))
    with jax.enable_x64(True):
        m64 = problems.tiger()
        p64 = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64), params)
        chain_fn = lambda p: markov.induced_chain(m64, policy, p)  # noqa: E731
        exact = np.asarray(ravel_pytree(markov.gradient(chain_fn, p64))[0])
        limits = {b: np.asarray(ravel_pytree(markov.beta_gradient(chain_fn, p64, b))[0]) for b in betas}
    norm = np.linalg.norm(exact)
    rows = []
    for beta in betas:
        for T in horizons:
            est = gpomdp.gpomdp(jax.random.key(seed), model, policy, params, num_steps=T, beta=beta,
                                num_chains=chains)
            mean = np.asarray(ravel_pytree(est.gradient)[0], np.float64)
            se = np.asarray(ravel_pytree(est.stderr)[0], np.float64)
            cos = mean @ exact / (np.linalg.norm(mean) * norm)
            rows.append({"beta": beta, "T": T, "chains": chains,
                         "relative_bias": float(np.linalg.norm(mean - exact) / norm),
                         "relative_stderr": float(np.linalg.norm(se) / norm),
                         "angle_degrees": float(np.degrees(np.arccos(np.clip(cos, -1, 1)))),
                         "exact_limit_relative_bias": float(np.linalg.norm(limits[beta] - exact) / norm)})
    return rows, float(norm)


def plot_bias(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install '.[plot]'): no PNG"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for T in sorted({r["T"] for r in rows}):
        sub = [r for r in rows if r["T"] == T]
        betas = [r["beta"] for r in sub]
        axes[0].plot(betas, [r["relative_bias"] for r in sub], marker="o", label=f"GPOMDP, T = {T}")
        axes[1].plot(betas, [r["relative_stderr"] for r in sub], marker="o", label=f"T = {T}")
    sub = [r for r in rows if r["T"] == rows[0]["T"]]
    axes[0].plot([r["beta"] for r in sub], [r["exact_limit_relative_bias"] for r in sub], "k--",
                 label="exact grad_beta eta (T = inf)")
    axes[0].set(xlabel="trace discount beta", ylabel="||mean Delta_T - grad eta|| / ||grad eta||",
                title="Bias of GPOMDP (Tiger, 2-state controller)", yscale="log")
    axes[1].set(xlabel="trace discount beta", ylabel="||standard error|| / ||grad eta||",
                title=f"Standard error of the mean over {rows[0]['chains']} chains", yscale="log")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


# ----------------------------------------------------------- trained policies
def three_state_runs(seeds, time_limit, config=None):
    model = problems.three_state()
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        r = conjpomdp.solve(model, time_limit=time_limit, seed=seed, config=config)
        wall = time.perf_counter() - t0
        rows.append({"seed": seed, "exact_eta": r.info["exact_average_reward"], "iterations": r.info["iterations"],
                     "gradient_evaluations": r.info["gradient_evaluations"], "solve_seconds": r.solve_seconds,
                     "compile_seconds": r.compile_seconds, "wall_seconds": wall})
    return rows


def fsc_runs(names, memory, restarts, time_limit, episodes, seed):
    rows = []
    for name in names:
        model = problems.get(name)
        config = gpomdp.Config(memory=memory, objective="discounted", num_restarts=restarts, num_chains=8,
                               num_steps=100, learning_rate=0.05, beta=0.9)
        r = gpomdp.solve(model, time_limit=time_limit, seed=seed, config=config)
        ev = simulate.evaluate(jax.random.key(seed + 1000), model, r.policy, num_episodes=episodes)
        ref = REFERENCE_LOWER.get(name)
        rows.append({"problem": name, "memory": memory, "restarts": restarts, "iterations": r.info["iterations"],
                     "solve_seconds": r.solve_seconds, "compile_seconds": r.compile_seconds,
                     "simulated": float(ev.mean), "ci95_half_width": 1.96 * float(ev.stderr),
                     "exact_discounted_value": r.info.get("exact_discounted_value"),
                     "point_based_lower": ref, "ratio": None if ref is None else float(ev.mean) / ref,
                     "within_10_percent": None if ref is None else bool(float(ev.mean) >= 0.9 * ref)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small settings (a smoke run)")
    ap.add_argument("--json", default="results/gpomdp.json")
    ap.add_argument("--plot", default="results/gpomdp.png")
    ap.add_argument("--chains", type=int, default=None, help="chains per estimate in the bias table (default 2048)")
    ap.add_argument("--seeds", type=int, default=None, help="three-state CONJPOMDP seeds (default 5)")
    ap.add_argument("--fsc-time", type=float, default=None, help="seconds per controller run (default 300)")
    ap.add_argument("--memory", type=int, default=4)
    ap.add_argument("--restarts", type=int, default=32)
    ap.add_argument("--problems", default="tiger,4x3.95", help="controller problems (default tiger,4x3.95)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sections", default="throughput,bias,three-state,controllers",
                    help="which parts to run (default: all four)")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    unknown = sections - {"throughput", "bias", "three-state", "controllers"}
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    quick = args.quick
    chains = args.chains or (128 if quick else 2048)
    seeds = range(args.seeds if args.seeds is not None else (1 if quick else 5))
    fsc_time = args.fsc_time if args.fsc_time is not None else (5.0 if quick else 300.0)
    restarts = 4 if quick and args.restarts == 32 else args.restarts

    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} "
                          f"{jax.default_backend()} device(s)", "jax": jax.__version__}

    if "throughput" in sections:
        run_throughput(results, args, quick)
    if "bias" in sections:
        run_bias(results, args, quick, chains)
    if "three-state" in sections:
        run_three_state(results, seeds, quick)
    if "controllers" in sections:
        run_controllers(results, args, restarts, fsc_time, quick)

    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory {results['peak_rss_mb']:.0f} MB")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")
    return 0


def run_throughput(results, args, quick):
    print("1. GPOMDP throughput (three-state, logistic policy, environment steps per second)")
    rows = throughput(args.repeats, 2000 if quick else 20000, (1, 64, 4096), 25 if quick else 1000)
    results["throughput"] = rows
    print(f"{'chains':>7} {'steps/chain':>11} {'seconds':>9} {'steps/s':>12} {'numpy steps/s':>14} {'x numpy':>8}")
    for r in rows:
        print(f"{r['chains']:>7} {r['steps_per_chain']:>11} {r['seconds']:>9.4f} {r['steps_per_second']:>12.3g} "
              f"{r['numpy_steps_per_second']:>14.3g} {r['ratio_to_numpy']:>8.1f}")


def run_bias(results, args, quick, chains):
    print("\n2. Bias and standard error against the exact gradient (Tiger, fixed 2-state controller)")
    betas = (0.0, 0.5, 0.9, 0.99) if quick else (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99)
    horizons = (100,) if quick else (100, 1000, 10000)
    rows, norm = bias_table(betas, horizons, chains)
    results["bias"] = {"exact_gradient_norm": norm, "rows": rows}
    print(f"||grad eta|| = {norm:.4g}; {chains} chains per estimate")
    print(f"{'beta':>5} {'T':>6} {'rel. bias':>10} {'rel. SE':>9} {'angle':>7} {'exact limit':>12}")
    for r in rows:
        print(f"{r['beta']:>5} {r['T']:>6} {r['relative_bias']:>10.4f} {r['relative_stderr']:>9.4f} "
              f"{r['angle_degrees']:>7.2f} {r['exact_limit_relative_bias']:>12.4f}")
    results["plot"] = plot_bias(rows, args.plot)
    print(f"plot: {results['plot']}")


def run_three_state(results, seeds, quick):
    config = conjpomdp.Config(num_steps=100) if quick else None  # None: the solver's default (1000 steps)
    print("\n3a. CONJPOMDP + GPOMDP on the three-state system from theta = 0 (optimum eta = 0.8)"
          + (f"; GRAD: {config.num_chains} chains x {config.num_steps} steps" if quick else ""))
    rows = three_state_runs(seeds, 60.0, config)
    results["three_state"] = rows
    print(f"{'seed':>4} {'exact eta':>10} {'iters':>6} {'GRAD calls':>10} {'solve s':>8} {'compile s':>9} {'wall s':>7}")
    for r in rows:
        print(f"{r['seed']:>4} {r['exact_eta']:>10.5f} {r['iterations']:>6} {r['gradient_evaluations']:>10} "
              f"{r['solve_seconds']:>8.2f} {r['compile_seconds']:>9.2f} {r['wall_seconds']:>7.2f}")


def run_controllers(results, args, restarts, fsc_time, quick):
    names = [n for n in args.problems.split(",") if n]
    print(f"\n3b. GPOMDP finite-state controllers ({args.memory} memory states, discounted objective, "
          f"{restarts} restarts, {fsc_time:g} s each)")
    rows = fsc_runs(names, args.memory, restarts, fsc_time, 1000 if quick else 4000, 0)
    results["controllers"] = rows
    print(f"{'problem':>8} {'iters':>6} {'solve s':>8} {'simulated':>18} {'exact V':>9} {'PB lower':>9} {'ratio':>6}")
    for r in rows:
        exact = "-" if r["exact_discounted_value"] is None else f"{r['exact_discounted_value']:.4f}"
        ref = "-" if r["point_based_lower"] is None else f"{r['point_based_lower']:.4f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        print(f"{r['problem']:>8} {r['iterations']:>6} {r['solve_seconds']:>8.1f} "
              f"{r['simulated']:>9.4f} ± {r['ci95_half_width']:<6.3f} {exact:>9} {ref:>9} {ratio:>6}")


if __name__ == "__main__":
    sys.exit(main())
