#!/usr/bin/env python
"""Scaling benchmark: the solvers' batch work on 1, 2, 4 and 8 devices, and model batches vs a loop.

1. **Devices**: for each device count, in a fresh process (on CPU the devices are
   forced with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``; on GPUs or
   TPUs the first ``N`` real devices are used, counts above the machine's are
   skipped), under a :func:`jaxpomdp.distributed.make_mesh` mesh, jitted and warm,
   the best of ``--repeats`` timed calls of:

   * the point-based backup (:func:`jaxpomdp.solvers.point_based.backup_beliefs`)
     of a batch of beliefs of Hallway against the vectors of a short HSVI run
     (``--quick``: against the initial blind-policy vectors, no solve): beliefs
     backed up per second;
   * NVI's train step (:func:`jaxpomdp.solvers.nvi.train`, Tiger, 256 nodes): train
     steps per second;
   * the GPOMDP estimator (4096 chains on the three-state system, 1000 steps
     each; ``--quick``: 25): environment steps per second.

   ``speed-up`` is against one device in the same run. Forced CPU devices share
   the machine's cores, so on a 2-core machine they show the cost of the
   partitioning, not a speed-up; real accelerators show the scaling.
2. **Model batches** (:mod:`model_batch`, beside this file): many models solved in
   one vmapped call against a Python loop of single-model calls.

    python benchmarks/scaling.py [--quick] [--devices 1,2,4,8] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------ worker
def _best(fn, repeats: int) -> float:
    import jax
    jax.block_until_ready(fn())  # compile and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def worker(devices: int, quick: bool, repeats: int) -> dict:
    """The three throughputs on the first ``devices`` devices (this process's JAX)."""
    import jax
    import jax.numpy as jnp

    from jaxpomdp import distributed, problems
    from jaxpomdp.solvers import gpomdp, nvi, point_based

    mesh = distributed.make_mesh(jax.devices()[:devices])
    row = {"devices": devices, "backend": jax.default_backend()}

    # point-based backup of a batch of beliefs
    model = problems.get("hallway")
    if quick:  # a smoke run: the initial vectors (blind policies); no HSVI solve to compile first
        state = point_based.init(model, alpha_capacity=256)
        num_vectors = int(state.num_alphas)
    else:  # the vectors of 4 HSVI steps
        hsvi = point_based.solve(model, time_limit=None, max_iterations=4, target_gap=0.0, seed=0)
        num_vectors = len(hsvi.alphas)
        state = point_based.init(model, alpha_capacity=max(256, num_vectors))
        state = state._replace(alphas=state.alphas.at[:num_vectors].set(hsvi.alphas),
                               actions=state.actions.at[:num_vectors].set(hsvi.alpha_actions),
                               num_alphas=jnp.int32(num_vectors))
    batch = 64 if quick else 256
    beliefs = jax.random.dirichlet(jax.random.key(0), jnp.ones(model.num_states) * 0.3, (batch,))
    valid = jnp.ones(batch, bool)
    with distributed.using(mesh):
        step = jax.jit(lambda st, b: point_based.backup_beliefs(model, st, b, valid, upper=False).alphas)
        seconds = _best(lambda: step(state, beliefs), repeats)
    row["backup_beliefs_per_s"] = batch / seconds
    row["backup_vectors"] = num_vectors

    # NVI train steps
    tiger = problems.get("tiger")
    config = nvi.default_config(tiger)._replace(train_steps=5 if quick else 20)
    net = nvi.Network(*nvi.mlp(config.hidden, config.value_scale))
    tiger_u = nvi._with_upper_table(tiger)
    st = nvi.init(jax.random.key(0), tiger_u, config, net)
    with distributed.using(mesh):
        seconds = _best(lambda: nvi.train(jax.random.key(1), tiger_u, st, config, net.apply_fn)[1], repeats)
    row["nvi_train_steps_per_s"] = config.train_steps / seconds
    row["nvi_nodes"] = config.capacity

    # GPOMDP chains
    three = problems.get("three-state")
    policy = gpomdp.default_policy(three)
    params = policy.init_params(jax.random.key(0))
    chains, steps = 4096, (25 if quick else 1000)
    with distributed.using(mesh):
        seconds = _best(lambda: gpomdp.gpomdp(jax.random.key(2), three, policy, params, num_steps=steps,
                                              num_chains=chains, beta=0.9).gradient, repeats)
    row["gpomdp_steps_per_s"] = chains * steps / seconds
    return row


# ------------------------------------------------------------------ driver
def _run_worker(devices: int, quick: bool, repeats: int, backend_is_cpu: bool) -> dict:
    env = dict(os.environ)
    if backend_is_cpu:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(devices), "--repeats", str(repeats)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"devices": devices, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small settings (a smoke run)")
    ap.add_argument("--devices", default="1,2,4,8", help="device counts (default 1,2,4,8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="results/scaling.json")
    ap.add_argument("--sections", default="devices,models", help="devices, models or both (default)")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.quick, args.repeats)))
        return 0

    import jax
    backend = jax.default_backend()
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"{jax.device_count()} {backend} device(s)", "jax": jax.__version__}
    sections = set(args.sections.split(","))
    if "devices" in sections:
        counts = [int(x) for x in args.devices.split(",")]
        if backend != "cpu":
            counts = [n for n in counts if n <= jax.device_count()]
        rows = [_run_worker(n, args.quick, args.repeats, backend == "cpu") for n in counts]
        base = next((r for r in rows if "error" not in r), None)
        shared = f", forced host devices sharing {os.cpu_count()} cores" if backend == "cpu" else ""
        print(f"\nDevices ({backend}{shared})")
        print(f"{'devices':>7}  {'backup beliefs/s':>16} {'x':>5}  {'NVI train steps/s':>17} {'x':>5}  "
              f"{'GPOMDP steps/s':>14} {'x':>5}")
        for r in rows:
            if "error" in r:
                print(f"{r['devices']:>7}  error: {r['error']}")
                continue
            cells = []
            for key in ("backup_beliefs_per_s", "nvi_train_steps_per_s", "gpomdp_steps_per_s"):
                r[key.replace("_per_s", "_speedup")] = r[key] / base[key]
                cells.append((r[key], r[key] / base[key]))
            print(f"{r['devices']:>7}  {cells[0][0]:>16.4g} {cells[0][1]:>5.2f}  {cells[1][0]:>17.4g} "
                  f"{cells[1][1]:>5.2f}  {cells[2][0]:>14.4g} {cells[2][1]:>5.2f}")
        results["devices"] = rows
    if "models" in sections:
        sys.path.insert(0, str(HERE))
        import model_batch
        print("\nModel batches (one vmapped call vs a Python loop)")
        rows = model_batch.run(quick=args.quick)
        if rows:
            keys = [k for k in ("family", "solver", "models", "num_states", "batched_seconds", "loop_seconds",
                                "speedup", "max_abs_diff") if k in rows[0]]
            print("  ".join(f"{k:>14}" for k in keys))
            for r in rows:
                print("  ".join(f"{_fmt(r[k]) if isinstance(r[k], float) else str(r[k]):>14}" for k in keys))
        results["models"] = rows
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    from jaxpomdp.io import atomic_write
    atomic_write(out, json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
