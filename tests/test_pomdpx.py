"""Tests for the APPL ``.pomdpx`` reader (jaxpomdp/io/pomdpx.py)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxpomdp
from jaxpomdp import PomdpFormatError
from jaxpomdp.io import pomdpx
from jaxpomdp.io.pomdpx import read_pomdpx
from jaxpomdp.problems import tiger

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "problems"


def shared_bytes(name: str) -> bytes:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path.read_bytes()


def read(text: str, path: str = "model.pomdpx", **kw):
    return read_pomdpx(text.encode("utf-8"), path, **kw)


def arrays(model):
    """The dense arrays of a model, in float64: T[a, s, s'], Z[a, s', o], R[a, s], b0."""
    return (np.asarray(jaxpomdp.dense_transitions(model), np.float64), np.asarray(model.obs_prob, np.float64),
            np.asarray(model.reward, np.float64), np.asarray(model.initial_belief, np.float64))


def fmt(values) -> str:
    return " ".join(repr(float(x)) for x in np.ravel(values))


# ------------------------------------------------------------- document builders
def entry(instance: str, table, tag: str = "ProbTable") -> str:
    table = table if isinstance(table, str) else fmt(table)
    return f"<Entry><Instance>{instance}</Instance><{tag}>{table}</{tag}></Entry>"


def cond(var: str, parents: str, *entries: str, element: str = "CondProb", ptype: str = "TBL") -> str:
    body = "\n      ".join(entries)
    return (f"  <{element}><Var>{var}</Var><Parent>{parents}</Parent>\n"
            f"    <Parameter type=\"{ptype}\">\n      {body}\n    </Parameter>\n  </{element}>")


def func(var: str, parents: str, *entries: str) -> str:
    return cond(var, parents, *entries, element="Func")


def document(variables: str, init: str, trans: str, obs: str, reward: str, discount="0.95") -> str:
    return (f"<?xml version=\"1.0\"?>\n<pomdpx version=\"0.1\">\n<Discount>{discount}</Discount>\n"
            f"<Variable>\n{variables}\n</Variable>\n<InitialStateBelief>\n{init}\n</InitialStateBelief>\n"
            f"<StateTransitionFunction>\n{trans}\n</StateTransitionFunction>\n<ObsFunction>\n{obs}\n"
            f"</ObsFunction>\n<RewardFunction>\n{reward}\n</RewardFunction>\n</pomdpx>\n")


def state_var(prev, curr, values, fully_observed=False):
    return (f"  <StateVar vnamePrev=\"{prev}\" vnameCurr=\"{curr}\" "
            f"fullyObs=\"{str(fully_observed).lower()}\">{values}</StateVar>")


def enum(*names):
    return f"<ValueEnum>{' '.join(names)}</ValueEnum>"


def num(n):
    return f"<NumValues>{n}</NumValues>"


# A small two-variable model used by several tests: a door (hidden) and a light
# (fully observed); the malformed-input tests break it in many ways.
BASE = """<?xml version="1.0" encoding="ISO-8859-1"?>
<pomdpx version="0.1" id="base">
<Description>base model for the tests</Description>
<Discount>0.9</Discount>
<Variable>
  <StateVar vnamePrev="door_0" vnameCurr="door_1" fullyObs="false">
    <ValueEnum>left right</ValueEnum>
  </StateVar>
  <StateVar vnamePrev="light_0" vnameCurr="light_1" fullyObs="true">
    <NumValues>2</NumValues>
  </StateVar>
  <ObsVar vname="hear">
    <ValueEnum>hear-left hear-right</ValueEnum>
  </ObsVar>
  <ActionVar vname="act">
    <ValueEnum>listen open switch</ValueEnum>
  </ActionVar>
  <RewardVar vname="gain"/>
</Variable>
<InitialStateBelief>
  <CondProb><Var>door_0</Var><Parent>null</Parent>
    <Parameter type="TBL"><Entry><Instance>-</Instance><ProbTable>0.5 0.5</ProbTable></Entry></Parameter>
  </CondProb>
  <CondProb><Var>light_0</Var><Parent>door_0</Parent>
    <Parameter type="TBL"><Entry><Instance>* -</Instance><ProbTable>1 0</ProbTable></Entry></Parameter>
  </CondProb>
</InitialStateBelief>
<StateTransitionFunction>
  <CondProb><Var>door_1</Var><Parent>act door_0</Parent>
    <Parameter type="TBL">
      <Entry><Instance>* - -</Instance><ProbTable>identity</ProbTable></Entry>
      <Entry><Instance>open * -</Instance><ProbTable>uniform</ProbTable></Entry>
    </Parameter>
  </CondProb>
  <CondProb><Var>light_1</Var><Parent>act light_0</Parent>
    <Parameter type="TBL">
      <Entry><Instance>- - -</Instance><ProbTable>1 0 0 1  1 0 0 1  0 1 1 0</ProbTable></Entry>
    </Parameter>
  </CondProb>
</StateTransitionFunction>
<ObsFunction>
  <CondProb><Var>hear</Var><Parent>act door_1</Parent>
    <Parameter type="TBL">
      <Entry><Instance>* * -</Instance><ProbTable>0.5 0.5</ProbTable></Entry>
      <Entry><Instance>listen - -</Instance><ProbTable>0.85 0.15 0.15 0.85</ProbTable></Entry>
    </Parameter>
  </CondProb>
</ObsFunction>
<RewardFunction>
  <Func><Var>gain</Var><Parent>act door_0</Parent>
    <Parameter type="TBL">
      <Entry><Instance>listen *</Instance><ValueTable>-1</ValueTable></Entry>
      <Entry><Instance>open -</Instance><ValueTable>-100 10</ValueTable></Entry>
    </Parameter>
  </Func>
  <Func><Var>gain</Var><Parent>light_1</Parent>
    <Parameter type="TBL">
      <Entry><Instance>s1</Instance><ValueTable>2.5</ValueTable></Entry>
    </Parameter>
  </Func>
</RewardFunction>
</pomdpx>
"""


# ------------------------------------------------------------ the shipped files
@pytest.mark.parametrize("name, sizes", [("Tiger.pomdpx", (2, 3, 2, 0.95)),
                                         ("Hallway.pomdpx", (60, 5, 21, 0.95))])
def test_shared_files_load(name, sizes):
    m = read_pomdpx(shared_bytes(name), str(SHARED / name))
    assert (m.num_states, m.num_actions, m.num_observations) == sizes[:3]
    assert float(m.discount) == pytest.approx(sizes[3])
    jaxpomdp.validate(m)


def test_tiger_pomdpx_is_the_builtin_tiger():
    m = read_pomdpx(shared_bytes("Tiger.pomdpx"), "Tiger.pomdpx")
    t = tiger()
    for field in ("next_state", "next_prob", "obs_prob", "reward", "initial_belief", "discount"):
        np.testing.assert_array_equal(np.asarray(getattr(m, field)), np.asarray(getattr(t, field)), field)
    assert (m.state_names, m.action_names, m.observation_names) == \
        (t.state_names, t.action_names, t.observation_names)


def test_hallway_pomdpx_is_hallway_pomdp():
    pytest.importorskip("jaxpomdp.io.cassandra")
    from jaxpomdp.io import load_pomdp

    x = read_pomdpx(shared_bytes("Hallway.pomdpx"), "Hallway.pomdpx")
    p = load_pomdp(SHARED / "Hallway.pomdp")
    # Hallway.pomdp's reward depends on s'; the .pomdpx has the rounded expected values
    for got, want in zip(arrays(x), arrays(p)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(x.discount) == pytest.approx(float(p.discount))


def test_loads_pomdp_dispatches_here():
    m = jaxpomdp.io.loads_pomdp(BASE.encode(), "base.pomdpx")
    assert m.num_states == 4


# ---------------------------------------------------- hand-written factored models
def brute_force_base():
    """The BASE model, flattened with plain loops (states (door, light), obs (hear, light))."""
    door_T = {"listen": np.eye(2), "open": np.full((2, 2), 0.5), "switch": np.eye(2)}
    light_T = {"listen": np.eye(2), "open": np.eye(2), "switch": np.eye(2)[::-1]}
    hear_Z = {"listen": np.array([[0.85, 0.15], [0.15, 0.85]]), "open": np.full((2, 2), 0.5),
              "switch": np.full((2, 2), 0.5)}
    r_door = {"listen": [-1, -1], "open": [-100, 10], "switch": [0, 0]}
    acts = ["listen", "open", "switch"]
    T, Z, R = np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), np.zeros((3, 4))
    for a, act in enumerate(acts):
        for d, l, d2, l2 in itertools.product(range(2), repeat=4):
            T[a, 2 * d + l, 2 * d2 + l2] = door_T[act][d, d2] * light_T[act][l, l2]
        for d2, l2, h, lo in itertools.product(range(2), repeat=4):
            Z[a, 2 * d2 + l2, 2 * h + lo] = hear_Z[act][d2, h] * (lo == l2)
        for d, l in itertools.product(range(2), repeat=2):
            s = 2 * d + l
            R[a, s] = r_door[act][d] + sum(T[a, s, 2 * d2 + 1] * 2.5 for d2 in range(2))
    b0 = np.array([0.5, 0.0, 0.5, 0.0])
    return T, Z, R, b0


def test_base_model_against_brute_force():
    m = read(BASE)
    for got, want in zip(arrays(m), brute_force_base()):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert float(m.discount) == pytest.approx(0.9)
    assert m.state_names == ("left_s0", "left_s1", "right_s0", "right_s1")
    assert m.observation_names == ("hear-left_s0", "hear-left_s1", "hear-right_s0", "hear-right_s1")
    assert m.action_names == ("listen", "open", "switch")


def random_cpt(rng, shape, zeros=0.4):
    """A random table whose last axis sums to 1, with some exact zeros."""
    p = rng.random(shape) * (rng.random(shape) > zeros)
    p[..., 0] += 0.01
    return p / p.sum(-1, keepdims=True)


def test_grid_model_against_brute_force():
    """2x3 grid position x a fully observed flag; two action vars; two obs vars;
    rewards from four Funcs (one constant, two depending on current variables)."""
    rng = np.random.default_rng(1)
    cells = [f"c{r}{c}" for r in range(2) for c in range(3)]
    moves = ["n", "s", "e", "w"]
    P0pos = random_cpt(rng, 6)
    P0flag = random_cpt(rng, (6, 2))                 # parent pos_0
    Tpos = random_cpt(rng, (4, 6, 6), zeros=0.6)     # move, pos_0 -> pos_1
    Tflag = random_cpt(rng, (2, 2, 6, 2))            # probe, flag_0, pos_0 -> flag_1
    Zbump = random_cpt(rng, (4, 6, 2))               # move, pos_1 -> bump
    Zsense = random_cpt(rng, (2, 2, 6, 3))           # flag_1, probe, pos_1 -> sense
    R1 = rng.normal(size=(4, 6))                     # move, pos_0
    R2 = rng.normal(size=(2, 2))                     # probe, flag_1
    R3 = rng.normal(size=(6, 6))                     # pos_1, pos_0
    C = -0.25

    flag_entries = [entry(f"a{p} s{f} {cells[c]} s{f2}", Tflag[p, f, c, f2])
                    for p, f, c, f2 in itertools.product(range(2), range(2), range(6), range(2))
                    if Tflag[p, f, c, f2] > 0]
    text = document(
        "\n".join([state_var("pos_0", "pos_1", enum(*cells)),
                   state_var("flag_0", "flag_1", num(2), fully_observed=True),
                   f"  <ObsVar vname=\"bump\">{enum('no', 'yes')}</ObsVar>",
                   f"  <ObsVar vname=\"sense\">{num(3)}</ObsVar>",
                   f"  <ActionVar vname=\"move\">{enum(*moves)}</ActionVar>",
                   f"  <ActionVar vname=\"probe\">{num(2)}</ActionVar>",
                   "  <RewardVar vname=\"r1\"/>", "  <RewardVar vname=\"r2\"/>"]),
        "\n".join([cond("pos_0", "null", entry("-", P0pos)),
                   cond("flag_0", "pos_0", *[entry(f"{cells[c]} -", P0flag[c]) for c in range(6)])]),
        "\n".join([cond("pos_1", "move pos_0", *[entry(f"{mv} - -", Tpos[i]) for i, mv in enumerate(moves)]),
                   cond("flag_1", "probe flag_0 pos_0", *flag_entries)]),
        "\n".join([cond("bump", "move pos_1", entry("- - -", Zbump)),
                   cond("sense", "flag_1 probe pos_1", entry("- - - -", Zsense))]),
        "\n".join([func("r1", "move pos_0", entry("- -", R1, "ValueTable")),
                   func("r2", "probe flag_1", entry("- -", R2, "ValueTable")),
                   func("r1", "pos_1 pos_0", entry("- -", R3, "ValueTable")),
                   func("r2", "null", entry("", [C], "ValueTable"))]),
        discount="0.99")
    m = read(text)

    S, A, O = 12, 8, 12
    T, Z, R, b0 = np.zeros((A, S, S)), np.zeros((A, S, O)), np.zeros((A, S)), np.zeros(S)
    for mv in range(4):
        for pr in range(2):
            a = mv * 2 + pr
            for pos, flag, pos2, flag2 in itertools.product(range(6), range(2), range(6), range(2)):
                T[a, pos * 2 + flag, pos2 * 2 + flag2] = Tpos[mv, pos, pos2] * Tflag[pr, flag, pos, flag2]
            for pos2, flag2, b, se, fo in itertools.product(range(6), range(2), range(2), range(3), range(2)):
                Z[a, pos2 * 2 + flag2, (b * 3 + se) * 2 + fo] = (
                    Zbump[mv, pos2, b] * Zsense[flag2, pr, pos2, se] * (fo == flag2))
            for pos, flag in itertools.product(range(6), range(2)):
                s = pos * 2 + flag
                R[a, s] = R1[mv, pos] + C
                for pos2, flag2 in itertools.product(range(6), range(2)):
                    R[a, s] += T[a, s, pos2 * 2 + flag2] * (R2[pr, flag2] + R3[pos2, pos])
    for pos, flag in itertools.product(range(6), range(2)):
        b0[pos * 2 + flag] = P0pos[pos] * P0flag[pos, flag]

    for got, want in zip(arrays(m), (T, Z, R, b0)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(m.discount) == pytest.approx(0.99)
    assert m.state_names[:3] == ("c00_s0", "c00_s1", "c01_s0")
    assert m.action_names == ("n_a0", "n_a1", "s_a0", "s_a1", "e_a0", "e_a1", "w_a0", "w_a1")
    assert m.observation_names[:4] == ("no_o0_s0", "no_o0_s1", "no_o1_s0", "no_o1_s1")
    assert m.num_successors == int((T > 0).sum(-1).max())


def test_large_factored_model_is_flattened_sparsely():
    """17 binary state variables (131072 states): a dense S x S array would need 128 GiB."""
    n = 17
    svars = [state_var(f"x{i}_0", f"x{i}_1", num(2)) for i in range(n)]
    init = [cond(f"x{i}_0", "null", entry("-", [1, 0])) for i in range(n)]
    flip = [0.9, 0.1, 0.1, 0.9]
    trans = [cond(f"x{i}_1", f"act x{i}_0", entry("* - -", flip if i < 2 else "identity")) for i in range(n)]
    text = document("\n".join(svars + [f"  <ObsVar vname=\"o\">{num(2)}</ObsVar>",
                                       f"  <ActionVar vname=\"act\">{num(2)}</ActionVar>",
                                       "  <RewardVar vname=\"r\"/>"]),
                    "\n".join(init), "\n".join(trans),
                    cond("o", "act x0_1", entry("* - -", "identity")),
                    func("r", "x1_0", entry("s1", [1.0], "ValueTable")))
    m = read(text)
    assert (m.num_states, m.num_actions, m.num_observations, m.num_successors) == (2 ** n, 2, 2, 4)
    ns, npb = np.asarray(m.next_state), np.asarray(m.next_prob)
    s = 2 ** (n - 1) + 5               # x0 = s1, x14 = x16 = s1, x15 = s0
    want = {s: 0.81, s - 2 ** (n - 1): 0.09, s + 2 ** (n - 2): 0.09, s - 2 ** (n - 1) + 2 ** (n - 2): 0.01}
    assert dict(zip(ns[0, s].tolist(), npb[0, s].tolist())) == pytest.approx(want)
    assert float(m.initial_belief[0]) == 1.0
    assert m.state_names[1] == "_".join(["s0"] * (n - 1) + ["s1"])
    assert float(m.reward[0, 2 ** (n - 2)]) == 1.0


# ------------------------------------------------ table syntax: * - identity uniform
def one_var_model(trans_entries, obs_entries=(entry("* * -", "uniform"),), values=enum("a", "b", "c"),
                  actions=enum("go", "stay")):
    return document("\n".join([state_var("x_0", "x_1", values),
                               f"  <ObsVar vname=\"o\">{num(2)}</ObsVar>",
                               f"  <ActionVar vname=\"act\">{actions}</ActionVar>",
                               "  <RewardVar vname=\"r\"/>"]),
                    cond("x_0", "null", entry("-", "uniform")),
                    cond("x_1", "act x_0", *trans_entries),
                    cond("o", "act x_1", *obs_entries),
                    func("r", "act", entry("-", [1, 2], "ValueTable")))


def T_of(text):
    return arrays(read(text))[0]


def test_dash_enumerates_row_major_last_fastest():
    P = random_cpt(np.random.default_rng(2), (2, 3, 3))
    np.testing.assert_allclose(T_of(one_var_model([entry("- - -", P)])), P, atol=1e-6)


def test_star_broadcasts_the_numbers():
    T = T_of(one_var_model([entry("* * -", [0.2, 0.3, 0.5])]))
    np.testing.assert_allclose(T, np.broadcast_to([0.2, 0.3, 0.5], (2, 3, 3)), atol=1e-6)
    T = T_of(one_var_model([entry("* - *", [0.5, 0.25, 0.2]), entry("* a c", "0"), entry("* b a", "0.5"),
                            entry("* c b", "0.6"), entry("stay b *", "0.5"), entry("stay b c", "0")]))
    want = np.array([[[0.5, 0.5, 0], [0.5, 0.25, 0.25], [0.2, 0.6, 0.2]]] * 2)
    want[1, 1] = [0.5, 0.5, 0]
    np.testing.assert_allclose(T, want, atol=1e-6)


def test_identity_uniform_and_overriding_entries():
    T = T_of(one_var_model([entry("* * -", "uniform"), entry("stay - -", "identity"),
                            entry("go c -", [0, 1, 0]), entry("go c b", "0"), entry("go c a", "1")]))
    want = np.full((2, 3, 3), 1 / 3)
    want[1] = np.eye(3)
    want[0, 2] = [1, 0, 0]
    np.testing.assert_allclose(T, want, atol=1e-6)


def test_value_names_enum_and_numvalues():
    m = read(one_var_model([entry("* - -", "identity")], values=num(3), actions=num(2)))
    assert m.state_names == ("s0", "s1", "s2")
    assert m.action_names == ("a0", "a1")
    assert m.observation_names == ("o0", "o1")
    m = read(one_var_model([entry("* - -", "identity")], values=enum("x", "y", "z")))
    assert m.state_names == ("x", "y", "z")
    for written in ("+3", "003", "+00000000003", " 3 "):  # xs:integer: a sign, leading zeros, whitespace
        m = read(one_var_model([entry("* - -", "identity")], values=f"<NumValues>{written}</NumValues>"))
        assert m.num_states == 3, written


def test_joined_names_fall_back_to_none_on_duplicates():
    text = BASE.replace("<ValueEnum>left right</ValueEnum>", "<ValueEnum>left left_s0</ValueEnum>") \
               .replace("<NumValues>2</NumValues>", "<ValueEnum>s0 s0_s0</ValueEnum>") \
               .replace("<Instance>s1</Instance>", "<Instance>s0_s0</Instance>")
    m = read(text)  # "left" + "s0_s0" == "left_s0" + "s0"
    assert m.state_names is None and m.action_names == ("listen", "open", "switch")
    assert m.num_states == 4


def test_tolerance_is_respected():
    text = one_var_model([entry("* * -", [0.2, 0.3, 0.499])])
    with pytest.raises(PomdpFormatError, match="sums to 0.999"):
        read(text)
    assert read(text, tolerance=0.01).num_states == 3


# ---------------------------------------------------------------- malformed input
def line_of(text: str, marker: str) -> int:
    return text[:text.index(marker)].count("\n") + 1


# (description, old, new, marker whose line the error must name, fragment of the message)
MALFORMED = [
    ("xml syntax", "</Discount>", "</Discont>", "</Discont>", "malformed XML"),
    ("doctype", '<pomdpx version="0.1" id="base">',
     '<!DOCTYPE pomdpx [<!ENTITY a "aaaa">]>\n<pomdpx version="0.1" id="base">', "<!DOCTYPE", "DTD"),
    ("unknown element", "<Description>", "<Descriptio>x</Descriptio><Description>", "<Descriptio>",
     "unexpected element <Descriptio>"),
    ("discount range", "<Discount>0.9</Discount>", "<Discount>1.5</Discount>", "<Discount>1.5",
     "discount in [0, 1]"),
    ("discount not a number", "<Discount>0.9</Discount>", "<Discount>0.9x</Discount>", "<Discount>0.9x",
     "expected a number"),
    ("duplicate variable", '<ObsVar vname="hear">', '<ObsVar vname="light_1">', '<ObsVar vname="light_1">',
     "duplicate variable name 'light_1'"),
    ("numvalues zero", "<NumValues>2</NumValues>", "<NumValues>0</NumValues>", "<NumValues>0",
     "positive integer"),
    ("numvalues text", "<NumValues>2</NumValues>", "<NumValues>two</NumValues>", "<NumValues>two",
     "positive integer"),
    ("numvalues huge", "<NumValues>2</NumValues>", "<NumValues>99999999999999</NumValues>",
     "<NumValues>9", "positive integer"),
    ("duplicate value", "<ValueEnum>left right</ValueEnum>", "<ValueEnum>left\n right left</ValueEnum>",
     " right left", "duplicate value name 'left'"),
    ("no values", "<ValueEnum>listen open switch</ValueEnum>", "", '<ActionVar vname="act">',
     "exactly one of <NumValues> or <ValueEnum>"),
    ("unknown parent", "<Parent>act door_1</Parent>", "<Parent>act dor_1</Parent>", "dor_1",
     "'dor_1' is an unknown variable"),
    ("parent not allowed", "<Parent>act door_1</Parent>", "<Parent>act door_0</Parent>",
     "<Parent>act door_0</Parent>\n    <Parameter type=\"TBL\">\n      <Entry><Instance>* * -",
     "'door_0' is a previous-slice state variable"),
    ("var of wrong kind", "<Var>door_1</Var>", "<Var>door_0</Var>", "<Var>door_0</Var><Parent>act",
     "expected a current-slice state variable"),
    ("unknown value", "<Instance>listen - -</Instance>", "<Instance>listen - lft</Instance>", "lft",
     "unknown value 'lft' of variable 'hear'"),
    ("instance length", "<Instance>listen *</Instance>", "<Instance>listen * *</Instance>",
     "<Instance>listen * *", "expected 2 token(s)"),
    ("too few numbers", "0.85 0.15 0.15 0.85", "0.85 0.15 0.15", "<ProbTable>0.85",
     "expected 4 number(s) in <ProbTable>"),
    ("too many numbers", "0.85 0.15 0.15 0.85", "0.85 0.15 0.15 0.85\n 0.625", "0.625", "found 5"),
    ("not a number", "0.85 0.15 0.15 0.85", "0.85 0.15 0.15 O.85", "O.85", "found 'O.85'"),
    ("probability > 1", "0.85 0.15 0.15 0.85", "0.85 0.15 1.15 0.85", "1.15", "probability in [0, 1]"),
    ("negative probability", "0.85 0.15 0.15 0.85", "0.85 0.15 -0.15 0.85", "-0.15", "probability in [0, 1]"),
    ("nan", "0.85 0.15 0.15 0.85", "0.85 0.15 nan 0.85", "nan", "found 'nan'"),
    ("unicode digit", "0.85 0.15 0.15 0.85", "0.85 0.15 0.15 \u0660.85", "\u0660", "expected a number"),
    ("underscore", "0.85 0.15 0.15 0.85", "0.85 0.15 0.15 0.8_5", "0.8_5", "expected a number"),
    ("inf reward", "<ValueTable>2.5</ValueTable>", "<ValueTable>1e999</ValueTable>", "1e999", "finite number"),
    ("row sum", "<ProbTable>0.5 0.5</ProbTable></Entry></Parameter>",
     "<ProbTable>0.5 0.4</ProbTable></Entry></Parameter>", "<Entry><Instance>-</Instance><ProbTable>0.5 0.4",
     "P(door_0) sums to 0.9"),
    ("uncovered row", "<Entry><Instance>* - -</Instance><ProbTable>identity</ProbTable></Entry>", "",
     "<Parameter type=\"TBL\">\n      \n", "no <Entry> covers it"),
    ("identity sizes", "<Instance>* - -</Instance><ProbTable>identity",
     "<Instance>- * -</Instance><ProbTable>identity", "identity</ProbTable></Entry>\n      <Entry><Instance>open",
     "'identity' needs"),
    ("decision diagram", '<Parameter type="TBL">\n      <Entry><Instance>listen *',
     '<Parameter type="DD">\n      <Entry><Instance>listen *', 'type="DD"', "only type=\"TBL\""),
    ("missing Var", "<Var>hear</Var>", "", "</CondProb>\n</ObsFunction>", "missing <Var> in <CondProb>"),
    ("second CondProb", "<Var>light_1</Var>", "<Var>door_1</Var>", "<CondProb><Var>door_1</Var><Parent>act light",
     "second <CondProb> for 'door_1'"),
    ("missing CondProb", """  <CondProb><Var>light_0</Var><Parent>door_0</Parent>
    <Parameter type="TBL"><Entry><Instance>* -</Instance><ProbTable>1 0</ProbTable></Entry></Parameter>
  </CondProb>
""", "", "</InitialStateBelief>", "missing <CondProb> for variable 'light_0'"),
    ("func var", "<Var>gain</Var><Parent>light_1</Parent>", "<Var>hear</Var><Parent>light_1</Parent>",
     "<Var>hear</Var><Parent>light_1", "expected a reward variable"),
    ("table keyword in func", "<ValueTable>2.5</ValueTable>", "<ValueTable>uniform</ValueTable>",
     "uniform</ValueTable>", "expected a number"),
    ("wrong table tag", "<ValueTable>2.5</ValueTable>", "<ProbTable>1</ProbTable>", "<ProbTable>1</ProbTable>",
     "unexpected element <ProbTable> in <Entry>"),
    ("too large", "<NumValues>2</NumValues>", "<NumValues>2000000000</NumValues>",
     "<Variable>", "GiB"),
    ("fullyObs flag", 'fullyObs="true"', 'fullyObs="yes"', 'fullyObs="yes"', "fullyObs must be"),
]


@pytest.mark.parametrize("old, new, marker, fragment", [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_inputs_name_file_and_line(old, new, marker, fragment):
    assert old in BASE
    text = BASE.replace(old, new, 1)
    path = "bad/model.pomdpx"
    with pytest.raises(PomdpFormatError) as info:
        read(text, path)
    e = info.value
    assert e.path == path and e.line == line_of(text, marker), str(e)
    assert str(e).startswith(f"{path}:{e.line}:{e.column}: "), str(e)
    assert fragment in str(e)


def test_missing_section_is_reported_at_the_end_of_the_root():
    start, stop = BASE.index("<ObsFunction>"), BASE.index("</ObsFunction>") + len("</ObsFunction>")
    text = BASE[:start] + BASE[stop:]
    with pytest.raises(PomdpFormatError, match="missing <ObsFunction> in <pomdpx>") as info:
        read(text, "m.pomdpx")
    assert info.value.line == line_of(text, "</pomdpx>")


def test_invalid_flattened_model_is_reported_at_its_section():
    """Each table is valid, but a cyclic initial belief (x | y, y | x) does not sum to 1."""
    text = BASE.replace("<Var>door_0</Var><Parent>null</Parent>", "<Var>door_0</Var><Parent>light_0</Parent>") \
               .replace("<Instance>-</Instance><ProbTable>0.5 0.5</ProbTable>",
                        "<Instance>- -</Instance><ProbTable>identity</ProbTable>") \
               .replace("<Instance>* -</Instance><ProbTable>1 0</ProbTable>",
                        "<Instance>- -</Instance><ProbTable>identity</ProbTable>")
    with pytest.raises(PomdpFormatError, match="initial_belief sums to 2") as info:
        read(text)
    assert info.value.line == line_of(text, "<InitialStateBelief>")


def test_root_must_be_pomdpx():
    text = BASE.replace("<pomdpx ", "<pomdp ").replace("</pomdpx>", "</pomdp>")
    with pytest.raises(PomdpFormatError, match="the root element is <pomdp>; expected <pomdpx>") as info:
        read(text)
    assert info.value.line == 2


def test_error_column_points_at_the_bad_token():
    text = BASE.replace("<Instance>listen - -</Instance>", "<Instance>listen - lft</Instance>")
    with pytest.raises(PomdpFormatError) as info:
        read(text)
    line_start = text.rfind("\n", 0, text.index("lft")) + 1
    assert info.value.column == text.index("lft") - line_start + 1


@pytest.mark.parametrize("data, line", [(b"", 1), (b"  \n\t", 1), (b"\x00\xff\xfe\x89PNG junk", 1),
                                        (b"<pomdpx>\n<Discount>0.95</Discount>\n", 3),
                                        (b"discount: 0.95\nstates: 2\n", 1)])
def test_empty_binary_and_truncated_files(data, line):
    with pytest.raises(PomdpFormatError) as info:
        read_pomdpx(data, "x.pomdpx")
    assert info.value.line == line and str(info.value).startswith("x.pomdpx:")


def test_truncated_base_at_every_tenth_line():
    lines = BASE.splitlines(keepends=True)
    for k in range(1, len(lines), 10):
        with pytest.raises(PomdpFormatError, match=r"model\.pomdpx:\d+:\d+: "):
            read("".join(lines[:k]))


def test_entity_expansion_is_refused():
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
            ' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n]>\n<pomdpx>&lol2;</pomdpx>\n')
    with pytest.raises(PomdpFormatError, match="DTD"):
        read(bomb)


def test_flattened_model_over_the_cap_is_refused_with_its_size():
    text = BASE.replace("<NumValues>2</NumValues>", "<NumValues>3000</NumValues>")
    with mock.patch.object(pomdpx, "MAX_BYTES", 2 ** 20):
        with pytest.raises(PomdpFormatError, match=r"about [\d.]+ GiB .*limit") as info:
            read(text)
    assert info.value.line == line_of(text, "<Variable>")


# ------------------------------------------------------------------------ fuzzing
FUZZ_SOURCES = ["Tiger.pomdpx", "Hallway.pomdpx", "base.pomdpx"]
SPECIAL = [b"-", b"*", b"identity", b"uniform", b"null", b"99999999", b"1e999", b"nan", b"<", b"&", b"]]>",
           b"</Entry>", b"<Entry>", b"s99", b"a0", b"state_1", b"0", b"\xff", b"\x00", b"<!DOCTYPE x>"]


def mutate(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "swap", "special", "duplicate",
                                 "text"]))
    n = len(data)
    i = draw(st.integers(0, n))
    j = min(n, i + draw(st.integers(0, 40)))
    if kind == "delete":
        return data[:i] + data[j:]
    if kind == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    if kind == "replace":
        return data[:i] + draw(st.binary(min_size=0, max_size=8)) + data[j:]
    if kind == "truncate":
        return data[:i]
    if kind == "text":
        return data[:i] + draw(st.text(" \n0123456789.e-*_sao<>/", max_size=8)).encode() + data[j:]
    if kind == "special":
        return data[:i] + draw(st.sampled_from(SPECIAL)) + data[j:]
    if kind == "duplicate":
        return data[:j] + data[i:j] + data[j:]
    tokens = re.split(rb"(\s+)", data)
    words = range(0, len(tokens), 2)
    a, b = draw(st.sampled_from(words)), draw(st.sampled_from(words))
    tokens[a], tokens[b] = tokens[b], tokens[a]
    return b"".join(tokens)


@settings(max_examples=100, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_files_load_or_raise_format_errors(data):
    source = data.draw(st.sampled_from(FUZZ_SOURCES))
    text = BASE.encode() if source == "base.pomdpx" else shared_bytes(source)
    for _ in range(data.draw(st.integers(1, 4))):
        text = mutate(text, data.draw)
    with mock.patch.object(pomdpx, "MAX_BYTES", 2 ** 24):
        try:
            model = read_pomdpx(text, source)
        except PomdpFormatError as e:
            assert str(e).startswith(source + ":")
        else:
            assert model.num_states >= 1


# ------------------------------------------------- what the schema allows that is rarely written
def _mdp_of_base() -> str:
    """BASE as an MDP: the door fully observed too, no observation variable, no <ObsFunction>."""
    text = BASE.replace('vnameCurr="door_1" fullyObs="false"', 'vnameCurr="door_1" fullyObs="true"')
    start, stop = text.index("  <ObsVar"), text.index("</ObsVar>") + len("</ObsVar>\n")
    text = text[:start] + text[stop:]
    start, stop = text.index("<ObsFunction>"), text.index("</ObsFunction>") + len("</ObsFunction>\n")
    return text[:start] + text[stop:]


def test_an_mdp_may_leave_out_the_obs_function():
    """The format's MDPs: no observation variables, so no <ObsFunction> (the schema wants a CondProb in it,
    for an observation variable); the state is observed through the fully observed variables."""
    text = _mdp_of_base()
    m = read(text)
    assert m.num_states == 4 and m.num_observations == 4
    T, Z, R, b0 = arrays(m)
    np.testing.assert_array_equal(Z, np.broadcast_to(np.eye(4), (3, 4, 4)))  # each state its own observation
    T_base, _, R_base, b0_base = arrays(read(BASE))
    np.testing.assert_allclose(T, T_base, atol=1e-7)
    np.testing.assert_allclose(R, R_base, atol=1e-6)
    np.testing.assert_allclose(b0, b0_base)
    empty = text.replace("<RewardFunction>", "<ObsFunction/>\n<RewardFunction>")
    np.testing.assert_array_equal(arrays(read(empty))[1], Z)
    # with an observation variable the section is still needed
    with pytest.raises(PomdpFormatError, match="missing <ObsFunction> in <pomdpx>.*'hear'"):
        read(BASE.replace(BASE[BASE.index("<ObsFunction>"):BASE.index("<RewardFunction>")], ""))


def test_table_keywords_in_any_case_and_with_any_whitespace():
    """APPL lowercases a ProbTable's text; XML whitespace around it does not matter, however long."""
    want = T_of(one_var_model([entry("* * -", "uniform"), entry("stay - -", "identity")]))
    pad = "\n" + " " * 150 + "\t\n"
    got = T_of(one_var_model([entry("* * -", pad + "UNIFORM" + pad), entry("stay - -", pad + "Identity" + pad)]))
    np.testing.assert_array_equal(got, want)
    with pytest.raises(PomdpFormatError, match="'identity' needs an <Instance> with exactly two '-'"):
        read(one_var_model([entry("* * -", pad + "IDENTITY")]))


def test_several_descriptions_and_a_signed_numvalues():
    """The schema allows any number of <Description>s, and <NumValues> is an xs:integer ('+3')."""
    m = read(one_var_model([entry("* - -", "identity")], values=num("+3")).replace(
        "<Discount>", "<Description>one</Description><Description>two</Description>\n<Discount>"))
    assert m.state_names == ("s0", "s1", "s2")
    with pytest.raises(PomdpFormatError, match="expected a positive integer"):
        read(one_var_model([entry("* - -", "identity")], values=num("-3")))


def test_a_reward_too_large_for_the_model_dtype_is_refused_at_its_number():
    if jaxpomdp.model.float_dtype() != np.float32:
        pytest.skip("float64: 1e39 fits")
    text = BASE.replace("<ValueTable>-100 10</ValueTable>", "<ValueTable>-100 1e39</ValueTable>")
    with pytest.raises(PomdpFormatError, match="number '1e39' is too large for float32") as info:
        read(text)
    line = line_of(text, "1e39")
    assert info.value.line == line
    assert info.value.column == text.index("1e39") - text.rfind("\n", 0, text.index("1e39"))
