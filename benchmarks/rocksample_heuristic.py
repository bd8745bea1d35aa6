#!/usr/bin/env python
"""RockSample yardstick: the check-and-sample heuristic on each layout, beside the certified upper bounds.

Seeded layouts have no published reference value, and layouts differ in how much
they allow; this prints, for each instance, what a hand-written policy with exact
belief tracking earns (:mod:`jaxpomdp.problems.rocksample_heuristic`: its four
thresholds tuned on ``--tune-episodes`` episodes, then evaluated on ``--episodes``
other ones, mean ± 95% half-width) and two certified upper bounds at ``b0``: the
fully observable MDP's value and, for at most 15 rocks, the perfect-sensor value
(:func:`jaxpomdp.problems.rocksample_sim.perfect_sensor_value`; 15 rocks: 25 s,
0.9 GB). No planning: a few seconds to a minute per instance. JSON (``--json``,
default ``results/rocksample_heuristic.json``) is rewritten atomically after every
instance.

    python benchmarks/rocksample_heuristic.py [--problems rocksample:15,15,...] [--episodes 2000]
                                              [--tune-episodes 500] [--seed 0] [--json FILE]

Problems are simulator names, ``rocksample:n,k`` or ``rocksample:n,k:seed`` (default:
(7,8), (11,11), (15,15), (20,20) and (15,15) with layout seed 142, the one layout of
seeds 0-199 with 6 rocks within 4 steps of the start, like DESPOT's own).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax

import jaxpomdp
from jaxpomdp.io import atomic_write
from jaxpomdp.problems import rocksample_heuristic
from jaxpomdp.problems.rocksample_sim import from_name, fully_observable_value, perfect_sensor_value

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nvi import PERFECT_SENSOR_MAX_ROCKS, split_problems  # noqa: E402 -- as the NVI benchmark

DEFAULT_PROBLEMS = ["rocksample:7,8", "rocksample:11,11", "rocksample:15,15", "rocksample:15,15:142",
                    "rocksample:20,20"]

HEADER = (f"{'problem':22s} {'|S|':>11s} {'heuristic':>13s} {'tuned':>6s} {'upper':>7s} {'ratio':>5s} "
          f"{'sensor':>7s} {'ratio':>5s} "
          f"{'sample_at':>9s} {'discard':>7s} {'within':>6s} {'checks':>6s} {'sec':>5s}")


def run_problem(name: str, args) -> dict:
    t0 = time.perf_counter()
    sim = from_name(name)
    ref = rocksample_heuristic.reference(sim, args.seed, tune_episodes=args.tune_episodes, episodes=args.episodes)
    ev = ref.evaluation
    fo = fully_observable_value(sim)
    ps = perfect_sensor_value(sim) if sim.k <= PERFECT_SENSOR_MAX_ROCKS else None
    return {"problem": name, "num_states": sim.num_states, "heuristic": {
                "mean": float(ev.mean), "ci95_half_width": 1.96 * float(ev.stderr), "episodes": ev.num_episodes,
                "horizon": ev.horizon, "tuning_mean": ref.tuning_mean, "tune_episodes": args.tune_episodes,
                "thresholds": ref.thresholds._asdict()},
            "upper_bound": fo.value, "upper_bound_exact": fo.exact, "perfect_sensor_bound": ps,
            "seconds": time.perf_counter() - t0}


def format_row(r: dict) -> str:
    h, t, ps = r["heuristic"], r["heuristic"]["thresholds"], r.get("perfect_sensor_bound")
    return (f"{r['problem']:22s} {r['num_states']:11d} {h['mean']:7.2f}±{h['ci95_half_width']:<5.2f} "
            f"{h['tuning_mean']:6.2f} {r['upper_bound']:7.2f} {h['mean'] / r['upper_bound']:5.2f} "
            + ("      -     - " if ps is None else f"{ps:7.2f} {h['mean'] / ps:5.2f} ") +
            f"{t['sample_at']:9.2f} {t['discard_below']:7.2f} {t['check_within']:6d} {t['max_checks']:6d} "
            f"{r['seconds']:5.0f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join(DEFAULT_PROBLEMS),
                    help="comma-separated rocksample:n,k[:seed] names")
    ap.add_argument("--episodes", type=int, default=2000, help="episodes of the evaluation (default 2000)")
    ap.add_argument("--tune-episodes", type=int, default=500, help="episodes per setting of the grid (default 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="results/rocksample_heuristic.json")
    args = ap.parse_args(argv)
    if args.episodes < 2 or args.tune_episodes < 1:
        ap.error("--episodes must be at least 2 and --tune-episodes at least 1")
    names = split_problems(args.problems)
    try:
        for name in names:
            from_name(name)
    except (KeyError, ValueError) as e:
        ap.error(str(e.args[0] if isinstance(e, KeyError) else e))

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    wall0 = time.perf_counter()
    results = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
               "platform": platform.platform(), "jaxpomdp_version": jaxpomdp.__version__, "seed": args.seed,
               "episodes": args.episodes, "tune_episodes": args.tune_episodes,
               "grid": {k: list(v) for k, v in rocksample_heuristic.GRID.items()}, "rows": []}
    print(f"RockSample check-and-sample heuristic, backend {jax.default_backend()}, seed {args.seed}", flush=True)
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    for name in names:
        row = run_problem(name, args)
        results["rows"].append(row)
        print(format_row(row), flush=True)
        results["wall_seconds"] = time.perf_counter() - wall0
        atomic_write(out, json.dumps(results, indent=2) + "\n")
    print("-" * len(HEADER))
    print("heuristic: mean ± 95% half-width on episodes not used for tuning; tuned: the best grid setting's mean "
          "on the tuning episodes (biased upward); upper: fully observable MDP at b0 (certified); sensor: the "
          "perfect-sensor value at b0 (certified, tighter; at most 15 rocks); ratio: heuristic / the bound before it.")
    print(f"wall {time.perf_counter() - wall0:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
