"""Input limits: a model too large for the memory is refused while reading, with its size.

Each refusal is a PomdpFormatError at the offending token that gives the estimate in
GiB, the memory available and what to do instead, and it comes before anything of
that size is allocated (so it is quick). JAXPOMDP_MAX_MODEL_BYTES sets the limit
in most tests, so they do not depend on this machine's memory.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxpomdp.errors import PomdpFormatError
from jaxpomdp.io import cassandra, limits, loads_pomdp, pomdpx

ROOT = Path(__file__).resolve().parents[1]
HINT = ("give a large model as a simulator (jaxpomdp.GenerativePOMDP; NVI plans from simulators), "
        "or write sparse rows (T: a : s : s' p) so only the successors with positive probability are stored")

# 10^7 states and dense transition rows: A * S * S successor slots, petabytes
HUGE = ("discount: 0.95\nstates: 10000000\nactions: 2\nobservations: 2\nstart: uniform\n"
        "T: 0 uniform\nT: 1 : * : * 0.5\nO: * uniform\nR: * : * : * : * 1\n")


def load(text: str, path: str = "model.pomdp"):
    return loads_pomdp(text, path, format="pomdp")


def refusal(text: str, path: str = "model.pomdp") -> PomdpFormatError:
    with pytest.raises(PomdpFormatError, match="model too large") as info:
        load(text, path)
    return info.value


def position(text: str, marker: str, start: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the first ``marker`` in ``text`` from ``start`` on."""
    k = text.index(marker, start)
    return text.count("\n", 0, k) + 1, k - text.rfind("\n", 0, k)


@pytest.fixture
def limit(monkeypatch):
    """Sets JAXPOMDP_MAX_MODEL_BYTES for one test."""
    return lambda value: monkeypatch.setenv(limits.ENV_VAR, str(value))


# ----------------------------------------------------------------- .pomdp
def test_ten_million_states_with_dense_rows_are_refused_in_under_a_second(limit):
    limit("8G")  # the sizes alone fit: the 'uniform' row is what does not
    t = time.perf_counter()
    e = refusal(HUGE, "huge.pomdp")
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, elapsed
    assert (e.path, e.line, e.column) == ("huge.pomdp", *position(HUGE, "uniform\nT: 1"))
    assert str(e).startswith("huge.pomdp:6:6: model too large: 10000000 states x 2 actions x 2 observations, "
                             "with 10000000 successors")
    assert "needs at least 4470350.0 GiB, more than the 8.0 GiB limit set by JAXPOMDP_MAX_MODEL_BYTES" in e.reason
    assert "of memory available" in e.reason
    assert e.reason.endswith(HINT)


def test_without_the_variable_the_limit_is_the_memory_available(monkeypatch):
    monkeypatch.delenv(limits.ENV_VAR, raising=False)
    monkeypatch.setattr(limits, "available_memory", lambda: 3 * 2 ** 30)
    assert limits.memory_limit(cassandra.MAX_MODEL_BYTES) == (
        3 * 2 ** 30, f"the 3.0 GiB of memory available (set {limits.ENV_VAR} to change the limit)")
    e = refusal(HUGE)
    assert e.line == 6 and "more than the 3.0 GiB of memory available" in e.reason
    # more memory than the reader's cap: the cap
    monkeypatch.setattr(limits, "available_memory", lambda: 64 * 2 ** 30)
    assert limits.memory_limit(2 ** 30)[0] == 2 ** 30
    monkeypatch.setattr(limits, "available_memory", lambda: None)  # unknown: the cap
    assert limits.memory_limit(2 ** 30) == (
        2 ** 30, f"the 1.0 GiB limit (available memory unknown; set {limits.ENV_VAR} to change the limit)")
    # and the sizes alone: 10^7 states x 2 actions need about 2 GiB
    monkeypatch.setattr(limits, "available_memory", lambda: 2 ** 30)
    e = refusal(HUGE)
    assert (e.line, e.column) == (3, 1)
    assert e.reason.startswith("model too large: 10000000 states x 2 actions needs at least 1.9 GiB, "
                               "more than the 1.0 GiB of memory available")
    assert "sparse rows" not in e.reason  # the sizes alone: only a simulator helps


def test_available_memory_is_read():
    n = limits.available_memory()
    assert n is None or n > 0


def test_the_command_line_prints_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "huge.pomdp"
    path.write_text(HUGE)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "solve.py"), str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, limits.ENV_VAR: "8G"})
    assert time.perf_counter() - t < 60
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"jaxpomdp: error: {path}:6:6: model too large: ")
    assert "GiB" in lines[0] and lines[0].endswith(HINT)


# a small model: 100 states, 2 actions, 2 observations
SMALL = "discount: 0.9\nstates: 100\nactions: 2\nobservations: 2\nstart: uniform\nO: * uniform\nR: * : * : * : * 1\n"
SPARSE = "T: * identity\n"  # one successor per row: 200 * (12 * 2 + 88) = 22400 bytes
SMALL_LIMIT = 100_000  # the sizes and sparse rows fit; 100 successors (about 0.5 MB) do not


@pytest.mark.parametrize("rows, marker", [
    ("T: * uniform\n", "uniform\n"),
    ("T: * identity\nT: 1 : 7 uniform\n", "uniform\n"),
    ("T: * identity\nT: 1 : 7 reset\n", "reset"),
    ("T: * identity\nT: 1 : 7 " + " ".join(["0.01"] * 100) + "\n", "0.01"),
    ("T: 0 identity\nT: 1\n" + "\n".join(" ".join(["0.01"] * 100) for _ in range(100)) + "\n", "0.01"),
    ("T: * identity\nT: 1 : 7 : * 0.01\n", "* 0.01"),
    ("T: * identity\n" + "".join(f"T: 1 : 7 : {s} 0.01\n" for s in range(100)), "T: 1 : 7 : 99"),
], ids=["uniform", "uniform-row", "reset", "row", "matrix", "star-end-state", "single-entries"])
def test_a_model_that_fits_is_refused_under_a_low_limit_at_its_dense_row(limit, monkeypatch, rows, marker):
    text = SMALL + rows
    monkeypatch.delenv(limits.ENV_VAR, raising=False)
    model = load(text)  # fits by default
    assert model.num_states == 100 and model.num_successors == 100
    limit(SMALL_LIMIT)
    e = refusal(text)
    assert (e.line, e.column) == position(text, marker, len(SMALL)), e
    assert "with 100 successors for one state and action" in e.reason
    assert f"more than the {limits.gib(SMALL_LIMIT)} limit set by {limits.ENV_VAR}" in e.reason
    assert e.reason.endswith(HINT)
    limit(10 * SMALL_LIMIT)
    assert load(text).num_successors == 100


def test_sparse_rows_fit_under_the_same_limit(limit):
    limit(SMALL_LIMIT)
    model = load(SMALL + SPARSE + "T: 1 : 3 : 4 0.5\nT: 1 : 3 : 3 0.5\n")
    assert model.num_successors == 2
    np.testing.assert_allclose(np.asarray(model.next_prob)[1, 3], [0.5, 0.5])


def test_the_sizes_alone_are_checked_at_their_declaration(limit):
    limit(20_000)  # 200 (a, s) pairs x 112 bytes > 20000
    text = SMALL + SPARSE
    e = refusal(text)
    assert (e.line, e.column) == position(text, "observations:")
    assert e.reason.startswith("model too large: 100 states x 2 actions x 2 observations needs at least")
    limit(30_000)
    assert load(text).num_states == 100


@pytest.mark.parametrize("value, limit_bytes", [("100000", 100_000), ("1e5", 100_000), ("8G", 8 * 2 ** 30),
                                                 (" 512 MiB ", 512 * 2 ** 20), ("2kb", 2048)])
def test_the_variable_takes_bytes_with_an_optional_suffix(limit, value, limit_bytes):
    limit(value)
    assert limits.memory_limit(1)[0] == limit_bytes


@pytest.mark.parametrize("value", ["abc", "-5", "1e999", "8X"])
def test_a_malformed_variable_is_reported_at_the_first_check(limit, value):
    limit(value)
    with pytest.raises(PomdpFormatError, match=f"JAXPOMDP_MAX_MODEL_BYTES='{value}' is not a number of bytes") as info:
        load(SMALL + SPARSE)
    assert info.value.line == 2


# ----------------------------------------------------------------- .pomdpx
def document(sizes: dict, transitions: str) -> str:
    """State variables ``{name}_0``/``{name}_1`` of the given sizes, uniform at the start."""
    state_vars = "\n".join(f'  <StateVar vnamePrev="{x}_0" vnameCurr="{x}_1"><NumValues>{n}</NumValues></StateVar>'
                           for x, n in sizes.items())
    init = "\n".join(f"""  <CondProb><Var>{x}_0</Var><Parent>null</Parent>
    <Parameter type="TBL"><Entry><Instance>-</Instance><ProbTable>uniform</ProbTable></Entry></Parameter>
  </CondProb>""" for x in sizes)
    return f"""<?xml version="1.0"?>
<pomdpx version="0.1">
<Discount>0.95</Discount>
<Variable>
{state_vars}
  <ObsVar vname="o"><NumValues>2</NumValues></ObsVar>
  <ActionVar vname="act"><NumValues>2</NumValues></ActionVar>
  <RewardVar vname="r"/>
</Variable>
<InitialStateBelief>
{init}
</InitialStateBelief>
<StateTransitionFunction>
{transitions}
</StateTransitionFunction>
<ObsFunction>
  <CondProb><Var>o</Var><Parent>act</Parent>
    <Parameter type="TBL"><Entry><Instance>* -</Instance><ProbTable>uniform</ProbTable></Entry></Parameter>
  </CondProb>
</ObsFunction>
<RewardFunction>
</RewardFunction>
</pomdpx>
"""


def binary_vars(n: int) -> dict:
    return {f"x{i}": 2 for i in range(n)}


def noisy(n: int) -> str:
    """Each of n binary variables flips with probability 0.5: 2^n successors."""
    return "\n".join(f"""  <CondProb><Var>x{i}_1</Var><Parent>act x{i}_0</Parent>
    <Parameter type="TBL"><Entry><Instance>* * -</Instance><ProbTable>uniform</ProbTable></Entry></Parameter>
  </CondProb>""" for i in range(n))


def pomdpx_refusal(text: str) -> PomdpFormatError:
    with pytest.raises(PomdpFormatError, match=r"would need about [\d.]+ (GiB|MiB|bytes)") as info:
        pomdpx.read_pomdpx(text, "model.pomdpx")
    e = info.value
    assert "of memory available" in e.reason and e.reason.endswith(limits.SIMULATOR_HINT)
    return e


def test_pomdpx_flattened_state_space_too_large_is_refused_at_the_variables(limit):
    limit("8G")
    text = document(binary_vars(40), noisy(40))  # 2^40 states
    t = time.perf_counter()
    e = pomdpx_refusal(text)
    assert time.perf_counter() - t < 1.0
    assert (e.line, e.column) == position(text, "<Variable>")
    assert "(S=1099511627776, A=2, O=2)" in e.reason


def test_pomdpx_dense_flattened_transitions_are_refused_before_they_are_built(limit):
    limit("8G")
    text = document(binary_vars(16), noisy(16))  # 65536 states, each with 65536 successors
    e = pomdpx_refusal(text)
    assert (e.line, e.column) == position(text, "<StateTransitionFunction>")
    assert "65536 successors per state and action" in e.reason
    # a few noisy variables fit; under a low limit they are refused too
    text = document(binary_vars(3), noisy(3))
    assert pomdpx.read_pomdpx(text).num_successors == 8
    limit(3000)  # the sizes (1408 bytes) and the tables fit, the successors (4608 bytes) not
    assert "8 successors" in pomdpx_refusal(text).reason


def test_pomdpx_table_too_large_is_refused_before_it_is_filled(limit):
    limit(2 ** 30)
    big = {"x": 20000}
    table = """  <CondProb><Var>x_1</Var><Parent>x_0</Parent>
    <Parameter type="TBL"><Entry><Instance>- -</Instance><ProbTable>uniform</ProbTable></Entry></Parameter>
  </CondProb>"""  # 20000 x 20000 entries, 3 GB
    text = document(big, table)
    with pytest.raises(PomdpFormatError, match=r"this table has 400000000 entries") as info:
        pomdpx.read_pomdpx(text, "model.pomdpx")
    assert (info.value.line, info.value.column) == position(text, '<Parameter type="TBL"><Entry><Instance>- -')
    assert "GiB" in info.value.reason and info.value.reason.endswith(limits.SIMULATOR_HINT)
