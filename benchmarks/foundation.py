#!/usr/bin/env python
"""Foundation benchmarks: file loading, belief updates, simulation throughput.

Prints a table and writes JSON (``--json``, default ``results/foundation.json``).
All ratios compare numbers measured in this one run (these machines are noisy).

    python benchmarks/foundation.py [--quick] [--json FILE]

Rows:
  * load: seconds to read a generated RockSample-sized ``.pomdp`` (~25 MB; the
    target is under 30 s for 20 MB), MB/s;
  * belief: exact belief updates per second, jit+vmap over a batch of beliefs,
    against a plain NumPy loop of the same update on the same model;
  * rollout: simulated environment steps per second of ``simulate.evaluate``
    (QMDP policy with exact belief tracking).

``--quick`` (a smoke run): a 2000-state file (~2.6 MB), belief batches 1 and 256
(rounds of 5 calls for at least 0.05 s each), 64 rollout episodes (full: 20000
states, batches up to 4096 in rounds of 20 calls for at least 1 s each, 2048
episodes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxpomdp
from jaxpomdp import belief, policy, problems, simulate
from jaxpomdp.io import atomic_write


def big_model(num_states: int, seed: int = 0) -> jaxpomdp.TabularPOMDP:
    """A random sparse model the size of a RockSample instance (3 successors)."""
    rng = np.random.default_rng(seed)
    A, O, K = 5, 4, 3
    ns = rng.integers(0, num_states, (A, num_states, K))
    p = rng.dirichlet(np.ones(K), (A, num_states))
    obs = rng.dirichlet(np.ones(O), (A, num_states))
    return jaxpomdp.TabularPOMDP.create(
        ns, p, obs, rng.normal(size=(A, num_states)), np.full(num_states, 1 / num_states), 0.95,
        state_names=[f"s{i:06d}" for i in range(num_states)])


def bench_load(num_states: int) -> dict:
    model = big_model(num_states)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.pomdp"
        jaxpomdp.save_pomdp(model, path)
        size = path.stat().st_size
        t0 = time.perf_counter()
        jaxpomdp.load_pomdp(path)
        seconds = time.perf_counter() - t0
    return {"what": "load .pomdp", "size_mb": size / 1e6, "states": num_states,
            "seconds": seconds, "mb_per_s": size / 1e6 / seconds}


def _per_second(run, rounds: int, min_seconds: float) -> float:
    """Calls per second of ``run(k)`` (k calls, waits for their results), over rounds of ``rounds`` calls until
    at least ``min_seconds`` have passed: a fixed count of batch-1 calls takes well under a millisecond, where
    the clock's and the first calls' noise decide the figure."""
    calls, t0 = 0, time.perf_counter()
    while True:
        run(rounds)
        calls += rounds
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return calls / elapsed


def bench_belief(model, batch_sizes, repeats: int, min_seconds: float) -> list[dict]:
    S = model.num_states
    T = np.asarray(jaxpomdp.dense_transitions(model), np.float64)
    Z = np.asarray(model.obs_prob, np.float64)
    b0 = np.asarray(model.initial_belief, np.float64)

    def numpy_loop(k):  # the same update, one belief at a time, observation 0
        b = b0
        for i in range(k):
            a = i % model.num_actions
            unnormalised = (b @ T[a]) * Z[a, :, 0]
            total = unnormalised.sum()
            b = unnormalised / total if total > 0 else b0

    numpy_rate = _per_second(numpy_loop, 100, min_seconds)
    rows = [{"what": "belief update, NumPy loop", "batch": 1, "updates_per_s": numpy_rate, "vs_numpy": 1.0}]
    step = jax.jit(jax.vmap(belief.update, in_axes=(None, 0, 0, 0)))
    for n in batch_sizes:
        key = jax.random.key(n)
        bs = jax.random.dirichlet(key, jnp.ones(S), (n,)).astype(model.initial_belief.dtype)
        acts = jnp.arange(n, dtype=jnp.int32) % model.num_actions
        obs = jnp.zeros(n, jnp.int32)
        jax.block_until_ready(step(model, bs, acts, obs))

        def jax_calls(k):
            for _ in range(k):
                out = step(model, bs, acts, obs)
            jax.block_until_ready(out)

        rate = n * _per_second(jax_calls, repeats, min_seconds)
        rows.append({"what": "belief update, jit+vmap", "batch": n, "updates_per_s": rate,
                     "vs_numpy": rate / numpy_rate})
    return rows


def bench_rollout(model, episodes: int) -> dict:
    pol = policy.greedy_qmdp_policy(model)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    ev = simulate.evaluate(key, model, pol, num_episodes=episodes)
    jax.block_until_ready(ev.mean)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = simulate.evaluate(jax.random.key(1), model, pol, num_episodes=episodes)
    jax.block_until_ready(ev.mean)
    seconds = time.perf_counter() - t0
    steps = episodes * ev.horizon
    return {"what": "evaluate (QMDP policy, exact belief)", "episodes": episodes, "horizon": ev.horizon,
            "compile_and_first_s": first, "seconds": seconds, "steps_per_s": steps / seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--json", default="results/foundation.json")
    args = ap.parse_args(argv)
    load_states = 2000 if args.quick else 20000  # ~2.6 / ~25 MB: the foundation's target is 20 MB in under 30 s
    batches = [1, 256] if args.quick else [1, 256, 4096]
    model = problems.get("rocksample_4_4")

    results = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
               "jaxpomdp_version": jaxpomdp.__version__}
    results["load"] = bench_load(load_states)
    results["belief"] = bench_belief(model, batches, repeats=5 if args.quick else 20,
                                     min_seconds=0.05 if args.quick else 1.0)
    results["rollout"] = bench_rollout(model, 64 if args.quick else 2048)

    ld = results["load"]
    print(f"{'benchmark':40s} {'size':>14s} {'rate':>18s} {'vs NumPy':>9s}")
    print(f"{'load .pomdp':40s} {ld['size_mb']:11.1f} MB {ld['mb_per_s']:13.2f} MB/s {'':>9s}"
          f"   ({ld['seconds']:.1f} s, {ld['states']} states)")
    for r in results["belief"]:
        print(f"{r['what']:40s} {'batch ' + str(r['batch']):>14s} {r['updates_per_s']:11.3g} upd/s "
              f"{r['vs_numpy']:8.2f}x")
    ro = results["rollout"]
    print(f"{ro['what']:40s} {str(ro['episodes']) + ' episodes':>14s} {ro['steps_per_s']:10.3g} steps/s"
          f"   (horizon {ro['horizon']}, compile+first {ro['compile_and_first_s']:.1f} s)")
    print(f"model for belief/rollout rows: rocksample_4_4 ({model.num_states} states); backend {jax.default_backend()}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    results["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")  # readme_table's "written", not the file's time
    atomic_write(out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
