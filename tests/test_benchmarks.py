"""Smoke tests of the benchmark scripts: they run (``--quick``) and write their JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "problems"

ROW_FIELDS = {"problem", "num_states", "num_actions", "num_observations", "lower", "upper", "gap",
              "simulated", "solve_seconds", "compile_seconds", "num_vectors", "sarsop_60s",
              "lower_vs_sarsop", "consistent_with_sarsop"}


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def assert_dated_now(data: dict) -> None:
    """The JSON's own UTC time of writing (readme_table's "written" line; a copied file keeps it)."""
    written = datetime.fromisoformat(data["date"])
    assert written.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - written) < timedelta(minutes=30), written


@pytest.mark.skipif(not (SHARED / "Tiger.pomdp").is_file() or not (SHARED / "1d.POMDP").is_file(),
                    reason="needs ../shared/problems beside the repository")
def test_point_based_benchmark_quick(tmp_path):
    out = tmp_path / "point_based.json"
    proc = run_script("point_based.py", "--quick", "--problems", "Tiger.pomdp,1d.POMDP", "--json", str(out))
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["problem"] for r in rows] == ["Tiger.pomdp", "1d.POMDP"]
    for r in rows:
        assert "error" not in r, r.get("traceback")
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert r["lower"] <= r["upper"], r
        assert r["num_vectors"] >= 1
        sim = r["simulated"]
        assert {"mean", "ci95_half_width", "episodes"} <= set(sim)
        assert r["sarsop_60s"]["lower"] is not None
        # these two converge within the quick limit: the bounds bracket SARSOP's
        assert r["consistent_with_sarsop"] == "yes", r
    assert (r["num_states"], r["num_actions"], r["num_observations"]) == (4, 2, 2)
    assert data["peak_rss_mb"] > 0
    assert_dated_now(data)
    flops = data["flops"]
    assert flops["gflops"] > 0 and flops["numpy_matmul"]["gflops"] > 0 and flops["ratio_to_matmul"] > 0
    assert "GFLOP/s" in proc.stdout and "Tiger.pomdp" in proc.stdout


def test_point_based_benchmark_problem_names():
    spec = importlib.util.spec_from_file_location("benchmark_point_based", ROOT / "benchmarks" / "point_based.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.split_problems("Tiger.pomdp,rocksample:7,8,1d.POMDP") == \
        ["Tiger.pomdp", "rocksample:7,8", "1d.POMDP"]
    assert bench.split_problems("rocksample:5,5:3") == ["rocksample:5,5:3"]
    ref = {"lower": 10.0, "upper": 12.0}
    assert bench.lower_vs_sarsop(9.96, ref) == "yes"
    assert bench.lower_vs_sarsop(9.8, ref) == "NO"
    assert bench.lower_vs_sarsop(10.5, ref) == "above"
    assert bench.consistent_with_sarsop(11.0, 13.0, ref) == ("yes", False)
    assert bench.consistent_with_sarsop(12.5, 13.0, ref) == ("NO", False)
    assert bench.consistent_with_sarsop(9.0, 9.5, ref) == ("NO", False)
    assert bench.consistent_with_sarsop(21.0, 22.0, {"lower": 21.1, "upper": None}) == ("yes", True)
    # the .pomdpx twins share the .pomdp reference
    assert bench.reference("Hallway.pomdpx") is bench.reference("Hallway.pomdp")


def test_foundation_benchmark_quick(tmp_path):
    out = tmp_path / "foundation.json"
    run_script("foundation.py", "--quick", "--json", str(out))
    data = json.loads(out.read_text())
    assert {"load", "belief", "rollout"} <= set(data)
    assert data["load"]["mb_per_s"] > 0
    assert all(r["updates_per_s"] > 0 for r in data["belief"])
    assert data["rollout"]["steps_per_s"] > 0
    assert_dated_now(data)


def test_rocksample_heuristic_benchmark(tmp_path):
    out = tmp_path / "heuristic.json"
    proc = run_script("rocksample_heuristic.py", "--problems", "rocksample:5,5,rocksample:6,4:3", "--episodes", "100",
                      "--tune-episodes", "20", "--json", str(out))
    data = json.loads(out.read_text())
    assert [r["problem"] for r in data["rows"]] == ["rocksample:5,5", "rocksample:6,4:3"]
    for r in data["rows"]:
        h = r["heuristic"]
        assert h["episodes"] == 100 and h["ci95_half_width"] > 0 and set(h["thresholds"]) == {
            "sample_at", "discard_below", "check_within", "max_checks"}
        assert 10 * 0.95 ** 5 < h["mean"] <= r["upper_bound"] + 3 * h["ci95_half_width"] and r["upper_bound_exact"]
        assert h["mean"] <= r["perfect_sensor_bound"] + 3 * h["ci95_half_width"]
        assert r["perfect_sensor_bound"] < r["upper_bound"]
    assert "rocksample:6,4:3" in proc.stdout and "ratio" in proc.stdout and "sensor" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rocksample_heuristic.py"), "--problems",
                          "tiger", "--json", str(tmp_path / "x.json")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2 and "rocksample:n,k" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.json").exists()


def test_gpomdp_benchmark_quick(tmp_path):
    out, png = tmp_path / "gpomdp.json", tmp_path / "gpomdp.png"
    proc = run_script("gpomdp.py", "--quick", "--json", str(out), "--plot", str(png), "--fsc-time", "1",
                      "--problems", "tiger", "--restarts", "2", "--repeats", "1", "--chains", "64", timeout=600)
    data = json.loads(out.read_text())
    assert [r["chains"] for r in data["throughput"]] == [1, 64, 4096]
    for r in data["throughput"]:
        assert r["steps_per_second"] > 0 and r["numpy_steps_per_second"] > 0 and r["ratio_to_numpy"] > 0
    rows = data["bias"]["rows"]
    assert {r["beta"] for r in rows} >= {0.0, 0.99} and all(r["relative_stderr"] > 0 for r in rows)
    # the exact limit's bias shrinks as beta grows
    limits = [r["exact_limit_relative_bias"] for r in rows if r["T"] == rows[0]["T"]]
    assert limits == sorted(limits, reverse=True)
    assert data["three_state"][0]["exact_eta"] >= 0.79
    assert data["controllers"][0]["problem"] == "tiger" and data["controllers"][0]["point_based_lower"] == 19.3711
    assert png.exists() == (data["plot"] == str(png))
    assert "x numpy" in proc.stdout and "rel. bias" in proc.stdout
    assert_dated_now(data)


def test_nvi_benchmark_config_overrides():
    spec = importlib.util.spec_from_file_location("benchmark_nvi", ROOT / "benchmarks" / "nvi.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.parse_overrides(["capacity=512", "hidden=[64, 64]", "learning_rate=1e-3", "improve_tol=0",
                                  "improve_z=-1"]) == \
        {"capacity": 512, "hidden": (64, 64), "learning_rate": 1e-3, "improve_tol": 0.0, "improve_z": -1.0}
    for bad, expected in [("capacty=512", "FIELD one of capacity"), ("capacity", "FIELD=VALUE"),
                          ("capacity=5x", "not JSON"), ("hidden=64", "positive integers, like [32, 32]"),
                          ("capacity=[1]", "an integer >= 1, like 256"), ("capacity=1.5", "like 256"),
                          ("capacity=true", "like 256"), ("capacity=0", "an integer >= 1"),
                          ("hidden=[32, 0]", "positive integers"), ("verify_successors=-1", "an integer >= 0"),
                          ("learning_rate=\"x\"", "a positive number, like 0.003"),
                          ("learning_rate=0", "a positive number"), ("explore_random=-0.5", "a number in [0, 1]"),
                          ("explore_random=1.5", "a number in [0, 1]"), ("improve_z=NaN", "a finite number"),
                          ("verified_q_by_networks=1", "true or false, like false")]:
        with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            bench.parse_overrides([bad])
