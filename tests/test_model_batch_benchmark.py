"""Smoke test of ``benchmarks/model_batch.py``: it runs (``--quick``), writes its JSON, and
the batched results equal the loop's (the way tests/test_benchmarks.py tests the others)."""

from __future__ import annotations

import importlib.util
import inspect
import json

from test_benchmarks import ROOT, run_script

ROW_FIELDS = {"family", "solver", "models", "num_states", "batched_seconds", "loop_seconds", "speedup",
              "max_abs_diff", "max_rel_diff", "first_call_batched_seconds", "first_call_loop_seconds"}


def test_model_batch_benchmark_quick(tmp_path):
    out = tmp_path / "model_batch.json"
    proc = run_script("model_batch.py", "--quick", "--json", str(out))
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert data["quick"] is True
    assert [(r["family"], r["solver"]) for r in rows] == [("tiger", s) for s in ("solve_fixed", "qmdp", "fib", "blind")]
    for r in rows:
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert list(r) == list(rows[0])  # the same columns in every row (scaling.py prints them)
        assert r["models"] == 16 and r["num_states"] == 2
        assert r["batched_seconds"] > 0 and r["loop_seconds"] > 0
        assert r["speedup"] == r["loop_seconds"] / r["batched_seconds"]
        assert r["max_rel_diff"] < 1e-5, r  # the batched results are the loop's
    assert "speed-up" in proc.stdout and "solve_fixed" in proc.stdout


def test_model_batch_benchmark_exposes_run_for_other_scripts():
    spec = importlib.util.spec_from_file_location("benchmark_model_batch", ROOT / "benchmarks" / "model_batch.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sig = inspect.signature(bench.run)
    assert list(sig.parameters)[0] == "quick" and sig.parameters["quick"].default is False
    # the Tiger family varies every kind of number and stacks
    models = bench.tiger_family(64)
    assert len(models) == 64
    stacked = bench.batched.stack_models(models)
    for field in ("discount", "reward", "next_prob", "obs_prob"):
        assert float(stacked.__getattribute__(field).std(axis=0).max()) > 0, field
    assert len(bench.tiger_family(16)) == 16 and len(bench.grid_family(64)) == 64


def test_scaling_benchmark_quick(tmp_path):
    """``benchmarks/scaling.py``: 1 and 2 (forced) devices and the model batches, table and JSON.

    One timed call per measurement (``--repeats 1``): the workers' time is compilation, not these calls."""
    out = tmp_path / "scaling.json"
    proc = run_script("scaling.py", "--quick", "--devices", "1,2", "--repeats", "1", "--json", str(out), timeout=600)
    assert "backup beliefs/s" in proc.stdout and "Model batches" in proc.stdout
    data = json.loads(out.read_text())
    rows = data["devices"]
    assert [r["devices"] for r in rows] == [1, 2] and not any("error" in r for r in rows)
    for r in rows:
        assert r["backup_beliefs_per_s"] > 0 and r["nvi_train_steps_per_s"] > 0 and r["gpomdp_steps_per_s"] > 0
    assert rows[0]["gpomdp_steps_speedup"] == 1.0
    assert data["models"] and all(r["max_abs_diff"] < 1e-3 for r in data["models"])
