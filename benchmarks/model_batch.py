#!/usr/bin/env python
"""Model-batch benchmark: a batch of models solved in one compiled call against a Python loop.

For a family of models of the same shapes and different numbers, each solver is
timed two ways, both compiled beforehand (one warm-up call each) and both
measured in this one run (these machines are noisy; best of ``--repeats``):

* **batched**: one call of the :mod:`jaxpomdp.solvers.batched` batch function
  for all ``M`` models (``jax.jit(jax.vmap(f))`` of the single-model function
  ``f``), host-side checks included;
* **loop**: a Python loop calling ``jax.jit(f)`` on each model in turn (the
  models split out of the batch beforehand; dispatch is asynchronous and the loop
  blocks once, at the end, so it is as fast as a loop can be).

The speed-up is loop time / batched time; ``max |diff|`` is the largest absolute
difference between the batched results and the loop's (the bounds at ``b0`` for
``solve_fixed``, every Q-vector entry for QMDP/FIB/blind). ``dispatch %`` is the
share of the loop's time that is per-call overhead (Python, argument flattening,
launching the executable), measured by the same loop over a trivial jitted
function of each model: all a batched call can save besides doing the arithmetic
more efficiently. Where the single-model call is compute-bound (a small share: on
a CPU XLA runs the compiled single-model loop with little overhead per step) the
batch cannot win much: on a CPU its vectorised arithmetic runs at about the same
speed per element as the single model's (the arrays are ``M`` times larger and
leave the L1 cache; vmapped gathers and small batched matrix products get no
faster per element), and a vmapped ``while_loop`` (QMDP/FIB/blind) runs as many
sweeps as the batch's slowest model. Where the call is launch-bound (a large
share; or an accelerator, whose kernel launches cost microseconds whatever the
size) the batch wins by up to ``M``.

    python benchmarks/model_batch.py [--quick] [--families tiger,4x3] [--repeats 5] [--json FILE]

Families:
  * ``tiger``: 64 Tiger variants, 4 discounts (0.86-0.95) x 4 listening
    accuracies (0.65-0.95) x 2 listening costs (0.5, 2) x 2 chances that the tiger
    changes sides while we listen (0.02, 0.1): discount, observation and transition
    probabilities and rewards all vary. ``solve_fixed``: 16 reachable beliefs per
    model, 250 iterations. The issue's acceptance: the batched call at least 10x
    faster than the loop (``target`` column).
  * ``4x3``: 64 variants of ``4x3.95`` (11 states, 4 actions, 6 observations), 16
    discounts (0.8-0.95) x 4 reward scales (0.5-2); ``solve_fixed``: 32 reachable
    beliefs, 100 iterations.

``--quick`` (a smoke run of a few seconds): 16 Tiger variants, 50 iterations, one
repeat. Other scripts call :func:`run` and use its rows (``benchmarks/scaling.py``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxpomdp
from jaxpomdp import bounds, problems
from jaxpomdp.io import atomic_write
from jaxpomdp.solvers import batched

#: The acceptance target of the issue: the batched call >= 10x faster than the loop (64 Tiger variants).
TARGET_SPEEDUP = 10.0
SOLVERS = ("solve_fixed", "qmdp", "fib", "blind")


def tiger_variant(base, discount, accuracy, listen_cost, move):
    """Tiger with another discount, listening accuracy, listening cost and chance that the
    tiger changes sides while we listen (the listen rows of ``next_state`` become ``[s, 1 - s]``)."""
    dtype = base.obs_prob.dtype
    acc = jnp.asarray(accuracy, dtype)
    m = jnp.asarray(move, dtype)
    return base.replace(
        obs_prob=base.obs_prob.at[0].set(jnp.stack([jnp.stack([acc, 1 - acc]), jnp.stack([1 - acc, acc])])),
        reward=base.reward.at[0].set(-jnp.asarray(listen_cost, dtype)),
        next_state=base.next_state.at[0].set(jnp.array([[0, 1], [1, 0]], jnp.int32)),
        next_prob=base.next_prob.at[0].set(jnp.stack([jnp.stack([1 - m, m])] * 2)),
        discount=jnp.asarray(discount, dtype))


def tiger_family(count: int = 64) -> list:
    """``count`` (at most 64) Tiger variants, every kind of number varying (see the module doc)."""
    base = problems.tiger()
    params = [(g, p, c, m) for g in (0.86, 0.9, 0.93, 0.95) for p in (0.65, 0.75, 0.85, 0.95)
              for c in (0.5, 2.0) for m in (0.02, 0.1)]
    pick = np.sort(np.random.default_rng(0).permutation(len(params))[:count]) if count < len(params) \
        else range(len(params))
    return [tiger_variant(base, *params[i]) for i in pick]


def grid_family(count: int = 64) -> list:
    """``count`` variants of ``4x3.95``: discounts 0.8-0.95 x reward scales 0.5-2."""
    base = problems.get("4x3.95")
    scales = (0.5, 1.0, 1.5, 2.0)
    discounts = np.linspace(0.8, 0.95, max(count // len(scales), 1))
    out = [base.replace(discount=jnp.asarray(g, base.discount.dtype), reward=base.reward * s)
           for g in discounts for s in scales]
    return out[:count]


# family -> (build(count), count, solve_fixed beliefs per model, iterations)
FAMILIES = {
    "tiger": (tiger_family, 64, 16, 250),
    "4x3": (grid_family, 64, 32, 100),
}


def _best_time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def _timed_first(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def dispatch_seconds(singles: list, repeats: int) -> float:
    """Per-call overhead of a Python loop of jitted calls on these models (a trivial function)."""
    trivial = jax.jit(lambda m: m.discount * 2)
    return _best_time(lambda: [trivial(m) for m in singles], max(repeats, 3)) / len(singles)


def bench_solver(family: str, models: list, solver: str, num_beliefs: int, iterations: int,
                 repeats: int) -> dict:
    """Times one solver on one family of models, batched and in a loop; returns a table row."""
    stacked = batched.stack_models(models)
    singles = [batched.model_at(stacked, i) for i in range(len(models))]  # what the loop gets
    jax.block_until_ready(singles)
    # every row has the same keys, in the same order (other scripts print them as columns)
    row = {"family": family, "solver": solver, "models": len(models), "num_states": models[0].num_states,
           "num_actions": models[0].num_actions, "num_observations": models[0].num_observations,
           "beliefs_per_model": None, "iterations": None, "tol": None, "max_iter": None}
    if solver == "solve_fixed":
        beliefs = np.stack([batched.reachable_beliefs(m, num_beliefs) for m in models])
        beliefs_j = jnp.asarray(beliefs)
        per_model = [beliefs_j[i] for i in range(len(models))]
        single = jax.jit(functools.partial(batched.solve_fixed, num_iterations=iterations))

        def run_batched():
            return batched.solve_fixed_batch(stacked, beliefs_j, iterations)

        def run_loop():
            return [single(m, b) for m, b in zip(singles, per_model)]

        def results(out):  # the bounds at b0
            if isinstance(out, list):
                return np.stack([np.stack([np.asarray(o.lower), np.asarray(o.upper)]) for o in out])
            return np.stack([np.asarray(out.lower), np.asarray(out.upper)], axis=1)

        row.update(beliefs_per_model=num_beliefs, iterations=iterations)
    else:
        single = jax.jit({"qmdp": bounds.qmdp, "fib": bounds.fib, "blind": bounds.blind_alphas}[solver])
        batch_fn = {"qmdp": batched.qmdp_batch, "fib": batched.fib_batch, "blind": batched.blind_batch}[solver]

        def run_batched():
            return batch_fn(stacked)

        def run_loop():
            return [single(m) for m in singles]

        def results(out):
            return np.stack([np.asarray(o) for o in out]) if isinstance(out, list) else np.asarray(out)

        row.update(tol=bounds.DEFAULT_TOL, max_iter=bounds.DEFAULT_MAX_ITER)
    out_b, first_b = _timed_first(run_batched)
    out_l, first_l = _timed_first(run_loop)
    t_batched = _best_time(run_batched, repeats)
    t_loop = _best_time(run_loop, repeats)
    xb, xl = results(out_b).astype(np.float64), results(out_l).astype(np.float64)
    diff = np.abs(xb - xl)
    dispatch = dispatch_seconds(singles, repeats)
    row.update(batched_seconds=t_batched, loop_seconds=t_loop, loop_seconds_per_model=t_loop / len(models),
               speedup=t_loop / t_batched, first_call_batched_seconds=first_b, first_call_loop_seconds=first_l,
               dispatch_seconds_per_call=dispatch, loop_dispatch_share=min(dispatch * len(models) / t_loop, 1.0),
               max_abs_diff=float(diff.max()), max_rel_diff=float(np.max(diff / (1 + np.abs(xl)))),
               repeats=repeats)
    acceptance = family == "tiger" and len(models) == 64  # the issue's target is for these
    row["target_speedup"] = TARGET_SPEEDUP if acceptance else None
    row["meets_target"] = bool(row["speedup"] >= TARGET_SPEEDUP) if acceptance else None
    return row


def run(quick: bool = False, *, families=None, repeats: int | None = None) -> list[dict]:
    """The benchmark's table rows: one per (family, solver), batched vs loop timings and speed-up.

    Args:
      quick: a smoke run (16 Tiger variants, 50 iterations, one repeat).
      families: names from :data:`FAMILIES` (default: all; ``["tiger"]`` when quick).
      repeats: timed repeats of each way, the best kept (default 5; 1 when quick).
    """
    families = list(families) if families is not None else (["tiger"] if quick else list(FAMILIES))
    repeats = repeats if repeats is not None else (1 if quick else 5)
    rows = []
    for name in families:
        build, count, num_beliefs, iterations = FAMILIES[name]
        if quick:
            count, iterations = 16, 50
        models = build(count)
        for solver in SOLVERS:
            rows.append(bench_solver(name, models, solver, num_beliefs, iterations, repeats))
    return rows


HEADER = (f"{'family':7s} {'solver':12s} {'M':>3s} {'|S|':>4s} {'batched ms':>10s} {'loop ms':>9s} "
          f"{'speed-up':>8s} {'dispatch %':>10s} {'max |diff|':>10s} {'1st batched s':>13s} {'1st loop s':>10s} "
          f"{'target':>9s}")


def format_row(r: dict) -> str:
    target = "-" if r.get("target_speedup") is None else \
        f">={r['target_speedup']:.0f}x {'ok' if r['meets_target'] else 'NO'}"
    return (f"{r['family']:7s} {r['solver']:12s} {r['models']:3d} {r['num_states']:4d} "
            f"{1e3 * r['batched_seconds']:10.2f} {1e3 * r['loop_seconds']:9.2f} {r['speedup']:7.1f}x "
            f"{100 * r['loop_dispatch_share']:10.0f} {r['max_abs_diff']:10.2e} {r['first_call_batched_seconds']:13.2f} "
            f"{r['first_call_loop_seconds']:10.2f} {target:>9s}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run (16 Tiger variants)")
    ap.add_argument("--families", default=None, help=f"comma-separated, from {', '.join(FAMILIES)} (default all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats, best kept (default 5; 1 quick)")
    ap.add_argument("--json", default="results/model_batch.json")
    args = ap.parse_args(argv)
    families = None if args.families is None else [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families or ()) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    wall0 = time.perf_counter()
    print(f"model-batch benchmark, backend {jax.default_backend()}: one compiled call for M models "
          f"vs a Python loop of the jitted single-model call", flush=True)
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    rows = run(args.quick, families=families, repeats=args.repeats)
    for r in rows:
        print(format_row(r), flush=True)
    print("-" * len(HEADER))
    print("ms: best of the repeats, after a warm-up call (1st: that first call, compilation included); "
          "speed-up = loop / batched;\ndispatch %: the loop's per-call overhead (a trivial jitted call per model) "
          "as a share of the loop's time;\nmax |diff|: batched vs loop results (bounds at b0 for solve_fixed, "
          "Q-vectors for qmdp/fib/blind).")
    results = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
               "jaxpomdp_version": jaxpomdp.__version__, "quick": args.quick, "rows": rows,
               "wall_seconds": time.perf_counter() - wall0}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
