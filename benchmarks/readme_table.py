#!/usr/bin/env python
"""Rewrites the README's results block from the JSON files the benchmarks wrote.

    python benchmarks/readme_table.py [--results results] [--readme README.md] [--print]

Reads whichever of ``point_based.json``, ``foundation.json``, ``gpomdp.json`` and
``nvi.json`` exist in ``--results`` (the benchmarks' default output folder), renders
one Markdown table per benchmark, and replaces the text between the markers
``<!-- results:start -->`` and ``<!-- results:end -->`` of the README (written
atomically; ``--print`` prints the block instead). Nothing is typed by hand: every
figure comes from a JSON file, and the block says when each file was written, with
which settings (``--quick`` runs are marked), and the machine: the platform, CPU
count and jax version of the machine running this script (run it right after the
benchmarks, on the same machine) and the jax backend each benchmark recorded.
Benchmarks without a JSON file are listed with the command that produces it.

A long benchmark may run in parts, one process per core (``python benchmarks/nvi.py
--problems A,B --json results/nvi-1.json`` and ``--problems C,D --json
results/nvi-2.json``): ``NAME-*.json`` files beside (or instead of) ``NAME.json``
are parts of the same table, their rows joined (listed by number of states where
every row has one) and each file's date named. Parts must agree on their settings
(seed, episodes, ``--quick``, ...); a benchmark without rows cannot be split.

Exit status 2, with a one-line message, for a README without the markers or an
unreadable JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
BENCHMARKS = ("point_based", "foundation", "gpomdp", "nvi")


class TableError(Exception):
    """A missing marker or a broken JSON file: reported in one line."""


def _num(x, spec: str = ".4g") -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and x != x:
        return "nan"
    return format(x, spec)


def _pm(d, mean="mean", half="ci95_half_width", spec=".3f") -> str:
    if not d:
        return "–"
    return f"{_num(d.get(mean), spec)} ± {_num(d.get(half), '.2g')}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _when(path: Path, data: dict) -> str:
    stamp = data.get("date")
    if stamp:
        try:
            return datetime.fromisoformat(stamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            return str(stamp)
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _backend(data: dict) -> str:
    backend = data.get("backend")
    devices = data.get("devices")
    if backend:
        where = f"{backend} ({len(devices)} device{'s' if len(devices) != 1 else ''})" if devices else backend
        return f"jax backend {where}"
    return f"recorded machine: {data['machine']}" if data.get("machine") else "backend not recorded"


def _quick(data: dict) -> str:
    return " `--quick` (smoke settings)" if data.get("quick") else ""


def _error_row(r: dict, width: int) -> list:
    """A table row for a problem whose benchmark run failed: its name and the error's first line."""
    return [r.get("problem", "?"), "error: " + r["error"].splitlines()[0]] + [""] * (width - 2)


def point_based(data: dict) -> list[str]:
    head = (f"**Point-based solver** (`benchmarks/point_based.py`{_quick(data)}: {data.get('method', 'hsvi')}, "
            f"{_num(data.get('time_limit'), 'g')} s per problem, {data.get('episodes')} simulated episodes; "
            "SARSOP's 60-second figures from BENCHMARKS.md)")
    rows = []
    for r in data.get("rows", []):
        if "error" in r:
            rows.append(_error_row(r, 11))
            continue
        ref = r.get("sarsop_60s") or {}
        rows.append([f"`{r['problem']}`", r.get("num_states"), _num(r.get("lower"), ".5g"), _num(r.get("upper"), ".5g"),
                     _num(r.get("gap"), ".2g"), _pm(r.get("simulated")), _num(r.get("solve_seconds"), ".1f"),
                     _num(r.get("compile_seconds"), ".1f"), r.get("num_vectors", "–"),
                     f"[{_num(ref.get('lower'), '.5g')}, {_num(ref.get('upper'), '.5g')}]" if ref else "–",
                     r.get("consistent_with_sarsop") or "–"])
    return [head, ""] + _table(["problem", "states", "lower", "upper", "gap", "simulated (95%)", "solve s",
                                "compile s", "vectors", "SARSOP [L, U]", "consistent"], rows)


def foundation(data: dict) -> list[str]:
    rows = []
    ld = data.get("load")
    if ld:
        rows.append(["load a `.pomdp` file", f"{_num(ld.get('size_mb'), '.1f')} MB ({ld.get('states')} states)",
                     f"{_num(ld.get('mb_per_s'), '.3g')} MB/s ({_num(ld.get('seconds'), '.1f')} s)", "–"])
    for r in data.get("belief", []):
        rows.append([r.get("what"), f"batch {r.get('batch')}", f"{_num(r.get('updates_per_s'), '.3g')} updates/s",
                     f"{_num(r.get('vs_numpy'), '.1f')}x"])
    ro = data.get("rollout")
    if ro:
        rows.append([ro.get("what"), f"{ro.get('episodes')} episodes x {ro.get('horizon')} steps",
                     f"{_num(ro.get('steps_per_s'), '.3g')} steps/s", "–"])
    return ["**Foundation** (`benchmarks/foundation.py`: belief updates and rollouts on rocksample_4_4)", ""] + \
        _table(["benchmark", "size", "rate", "vs NumPy"], rows)


def gpomdp(data: dict) -> list[str]:
    out = ["**Policy gradients** (`benchmarks/gpomdp.py`)", ""]
    if data.get("throughput"):
        out += _table(["GPOMDP chains", "steps/chain", "steps/s", "NumPy loop steps/s", "x NumPy"],
                      [[r.get("chains"), r.get("steps_per_chain"), _num(r.get("steps_per_second"), ".3g"),
                        _num(r.get("numpy_steps_per_second"), ".3g"), _num(r.get("ratio_to_numpy"), ".1f")]
                       for r in data["throughput"]]) + [""]
    if data.get("three_state"):
        out += _table(["CONJPOMDP seed", "exact eta (optimum 0.8)", "iterations", "gradient estimates", "solve s"],
                      [[r.get("seed"), _num(r.get("exact_eta"), ".5f"), r.get("iterations"),
                        r.get("gradient_evaluations"), _num(r.get("solve_seconds"), ".2f")]
                       for r in data["three_state"]]) + [""]
    if data.get("controllers"):
        out += _table(["controller", "memory", "restarts", "solve s", "simulated (95%)", "exact value",
                       "point-based lower", "ratio"],
                      [[f"`{r.get('problem')}`", r.get("memory"), r.get("restarts", "–"),
                        _num(r.get("solve_seconds"), ".0f"),
                        _pm(r, "simulated"), _num(r.get("exact_discounted_value"), ".4g"),
                        _num(r.get("point_based_lower"), ".5g"), _num(r.get("ratio"), ".3f")]
                       for r in data["controllers"]]) + [""]
    bias = (data.get("bias") or {}).get("rows")
    if bias:
        out += _table(["beta", "T", "relative bias", "relative SE", "exact limit"],
                      [[r.get("beta"), r.get("T"), _num(r.get("relative_bias"), ".4f"),
                        _num(r.get("relative_stderr"), ".4f"), _num(r.get("exact_limit_relative_bias"), ".4f")]
                       for r in bias]) + [""]
    return out[:-1] if out[-1] == "" else out


def nvi(data: dict) -> list[str]:
    heuristic = any("heuristic" in r for r in data.get("rows", []))  # RockSample's yardstick, where it was run
    sensor = any("perfect_sensor_bound" in r for r in data.get("rows", []))  # RockSample up to 15 rocks
    rows = []
    for r in data.get("rows", []):
        if "error" in r:
            rows.append(_error_row(r, 9 + heuristic + sensor))
            continue
        ref = r.get("reference") or {}
        rows.append([f"`{r['problem']}`", _num(r.get("num_states"), ",d") if r.get("num_states") else "–",
                     _num(r.get("time_limit"), "g"), _num(r.get("value_estimate"), ".3f"), _pm(r.get("follow")),
                     _num(r.get("exact"), ".3f")] + ([_pm(r.get("heuristic"))] if heuristic else []) +
                    [_num(r.get("upper_bound"), ".3f")] +
                    ([_num(r.get("perfect_sensor_bound"), ".3f")] if sensor else []) +
                    [_num(ref.get("ref"), ".2f"), r.get("num_nodes")])
    return [f"**Neural Value Iteration** (`benchmarks/nvi.py`{_quick(data)})", ""] + \
        _table(["problem", "states", "limit s", "estimate", "simulated (95%)", "exact"] +
               (["heuristic (95%)"] if heuristic else []) + ["upper"] +
               (["perfect-sensor upper"] if sensor else []) + ["reference", "nodes"], rows)


RENDER = {"point_based": point_based, "foundation": foundation, "gpomdp": gpomdp, "nvi": nvi}


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TableError(f"{path}: cannot read the benchmark results ({e})") from None


# settings that the parts of one benchmark must share (those a part records)
SHARED_SETTINGS = ("quick", "seed", "episodes", "argmax_episodes", "rollout_episodes", "heuristic_episodes", "method",
                   "time_limit", "backend")


def _parts(results: Path, name: str) -> list[Path]:
    """``NAME.json`` and the ``NAME-*.json`` parts in ``results``, in name order."""
    whole = results / f"{name}.json"
    return ([whole] if whole.is_file() else []) + sorted(p for p in results.glob(f"{name}-*.json") if p.is_file())


def _join(name: str, paths: list[Path], parts: list[dict]) -> dict:
    """One benchmark's data from its parts: the first part's settings, every part's rows."""
    if len(parts) == 1:
        return parts[0]
    for path, data in zip(paths, parts):
        if not isinstance(data.get("rows"), list):
            raise TableError(f"{path}: {name} has no rows, so it cannot be joined with "
                             f"{', '.join(p.name for p in paths if p != path)}; keep one {name} file")
    for key in SHARED_SETTINGS:
        values = [data.get(key) for data in parts]
        if any(v != values[0] for v in values):
            seen = ", ".join(f"{p.name}: {v!r}" for p, v in zip(paths, values))
            raise TableError(f"the parts of {name} disagree on {key} ({seen}); rerun them with the same settings")
    rows = [r for data in parts for r in data["rows"]]
    if all(isinstance(r.get("num_states"), int) for r in rows):
        rows.sort(key=lambda r: r["num_states"])
    return dict(parts[0], rows=rows)


def render(results: Path) -> str:
    """The whole block, markers included."""
    import jax

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [START, "",
             f"_Generated by `python benchmarks/readme_table.py` from `{results.name}/*.json` on {now}. "
             f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, jax {jax.__version__}. "
             "Do not edit by hand: rerun the benchmarks, then this script._", ""]
    missing = []
    for name in BENCHMARKS:
        paths = _parts(results, name)
        if not paths:
            missing.append(name)
            continue
        parts = [_load(path) for path in paths]
        lines += RENDER[name](_join(name, paths, parts))
        lines += ["", "<sub>" + "; ".join(f"{path.name}: written {_when(path, data)}, {_backend(data)}"
                                          for path, data in zip(paths, parts)) + ".</sub>", ""]
    if missing:
        lines += ["Not run yet: " + ", ".join(f"`python benchmarks/{m}.py --quick`" for m in missing)
                  + " (without `--quick` for the full runs).", ""]
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the part from the start marker to the end marker replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise TableError(f"the README must hold exactly one {START} and one {END} marker")
    i, j = text.index(START), text.index(END)
    if j < i:
        raise TableError(f"{END} comes before {START} in the README")
    return text[:i] + block + text[j + len(END):]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"), help="folder of the benchmarks' JSON files")
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--print", action="store_true", help="print the block instead of rewriting the README")
    args = ap.parse_args(argv)
    try:
        block = render(Path(args.results))
        if args.print:
            print(block)
            return 0
        readme = Path(args.readme)
        try:
            text = readme.read_text()
        except OSError as e:
            raise TableError(f"cannot read {readme}: {e.strerror}") from None
        new = replace_block(text, block)
        from jaxpomdp.io import atomic_write
        atomic_write(readme, new)
        print(f"rewrote the results block of {readme}")
        return 0
    except TableError as e:
        print(f"readme_table: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
