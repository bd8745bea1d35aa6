"""APPL/SARSOP .policy files: exact round trips, SARSOP's layout, and clear errors."""

import jax
import numpy as np
import pytest

from jaxpomdp import PomdpFormatError, problems, simulate
from jaxpomdp.io.appl_policy import policy_from_appl, read_appl_policy, write_appl_policy
from jaxpomdp.model import dense_transitions

# The optimal value function of Tiger (discount 0.95) in SARSOP's layout and number
# format (C++ ostream, 6 significant digits). The vectors were derived by exact
# point-based value iteration on 1001 beliefs to convergence (V*(b0) = 19.371377);
# test_tiger_vectors_are_a_bellman_fixed_point checks them independently.
TIGER_POLICY = """\
<?xml version="1.0" encoding="ISO-8859-1"?>
<Policy version="0.1" type="value" model="Tiger.pomdp" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="policyx.xsd">
<AlphaVector vectorLength="2" numObsValue="1" numVectors="9">
<Vector action="1" obsValue="0">-81.5972 28.4028 </Vector>
<Vector action="0" obsValue="0">0.690897 25.005 </Vector>
<Vector action="0" obsValue="0">3.01479 24.6957 </Vector>
<Vector action="0" obsValue="0">16.4935 21.5418 </Vector>
<Vector action="0" obsValue="0">19.3714 19.3714 </Vector>
<Vector action="0" obsValue="0">21.5418 16.4935 </Vector>
<Vector action="0" obsValue="0">24.6957 3.01479 </Vector>
<Vector action="0" obsValue="0">25.005 0.690897 </Vector>
<Vector action="2" obsValue="0">28.4028 -81.5972 </Vector>
</AlphaVector> </Policy>
"""


def _write(tmp_path, text, name="p.policy"):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if isinstance(text, str) else text)
    return path


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    alphas = rng.normal(size=(7, 5)) * 10.0 ** rng.integers(-5, 6, size=(7, 5))
    alphas[0, :3] = [-0.0, 5e-324, 1.7976931348623157e308]
    actions = rng.integers(0, 4, 7)
    path = tmp_path / "p.policy"
    write_appl_policy(path, alphas, actions, model_name='odd "name" <&> é€')
    a2, act2, obs2 = read_appl_policy(path, num_states=5, num_actions=4)
    assert a2.dtype == np.float64 and act2.dtype == np.int32 and obs2.dtype == np.int32
    np.testing.assert_array_equal(a2, alphas)
    np.testing.assert_array_equal(np.signbit(a2), np.signbit(alphas))
    np.testing.assert_array_equal(act2, actions)
    np.testing.assert_array_equal(obs2, np.zeros(7))
    text = path.read_text("latin-1")
    assert text.startswith('<?xml version="1.0" encoding="ISO-8859-1"?>\n<Policy version="0.1" type="value"')
    assert '<AlphaVector vectorLength="5" numObsValue="1" numVectors="7">' in text


def test_momdp_round_trip_keeps_obs_values(tmp_path):
    alphas = np.arange(12.0).reshape(4, 3)
    path = tmp_path / "m.policy"
    write_appl_policy(path, alphas, [0, 1, 1, 0], obs_values=[0, 0, 2, 1], num_obs_values=4)
    a2, act2, obs2 = read_appl_policy(path)
    np.testing.assert_array_equal(a2, alphas)
    np.testing.assert_array_equal(obs2, [0, 0, 2, 1])
    assert 'numObsValue="4"' in path.read_text()
    with pytest.raises(ValueError, match="MOMDP"):
        policy_from_appl(path, problems.tiger())


def test_writer_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="finite"):
        write_appl_policy(tmp_path / "x", [[1.0, np.inf]], [0])
    with pytest.raises(ValueError, match="shape|expected"):
        write_appl_policy(tmp_path / "x", [[1.0, 2.0]], [0, 1])
    assert not (tmp_path / "x").exists()


def _tiger_backup_residual(alphas, model, grid=501):
    """max over a belief grid of |(H V)(b) - V(b)| for V = max_k alphas[k] . b (one exact backup)."""
    T = np.asarray(dense_transitions(model), np.float64)
    Z = np.asarray(model.obs_prob, np.float64)
    R = np.asarray(model.reward, np.float64)
    g = float(model.discount)
    p = np.linspace(0.0, 1.0, grid)
    B = np.stack([p, 1.0 - p], axis=1)
    # unnormalised successor beliefs tau[a, o, b, s'] = sum_s b(s) T(s'|s,a) Z(o|a,s')
    tau = np.einsum("bs,ast,ato->aobt", B, T, Z)
    future = (tau @ alphas.T).max(-1).sum(1)            # [A, B]: sum_o max_k alpha_k . tau
    HV = (B @ R.T).T + g * future
    return np.abs(HV.max(0) - (B @ alphas.T).max(1)).max()


def test_tiger_vectors_are_a_bellman_fixed_point(tmp_path):
    model = problems.tiger()
    alphas, actions, _ = read_appl_policy(_write(tmp_path, TIGER_POLICY), num_states=2, num_actions=3)
    # |V - V*| <= residual / (1 - gamma): the file is within 0.01 of the optimum everywhere
    assert _tiger_backup_residual(alphas, model) < 5e-4
    v0 = (alphas @ np.array([0.5, 0.5])).max()
    assert 19.3711 - 0.01 <= v0 <= 19.3721 + 0.01


def test_sarsop_tiger_policy_evaluates_to_its_value(tmp_path):
    model = problems.tiger()
    policy = policy_from_appl(_write(tmp_path, TIGER_POLICY), model)
    np.testing.assert_array_equal(np.asarray(policy.actions), [1, 0, 0, 0, 0, 0, 0, 0, 2])
    v0 = float(policy.value(model.initial_belief))
    assert abs(v0 - 19.3716) < 0.2
    ev = simulate.evaluate(jax.random.key(0), model, policy, num_episodes=4000)
    lo, hi = float(ev.ci95[0]), float(ev.ci95[1])
    assert lo - ev.truncation_bound <= v0 <= hi + ev.truncation_bound, (lo, hi, v0)


def test_sparse_vectors(tmp_path):
    text = """<?xml version="1.0" encoding="ISO-8859-1"?>
<Policy version="0.1" type="value" model="m">
<AlphaVector vectorLength="4" numObsValue="1" numVectors="3">
<SparseVector action="1" obsValue="0"><Entry>0 1.5</Entry>
  <Entry> 3   -2e3 </Entry></SparseVector>
<Vector action="0" obsValue="0">1 2 3 4</Vector>
<SparseVector action="2" obsValue="0"></SparseVector>
</AlphaVector></Policy>
"""
    alphas, actions, obs = read_appl_policy(_write(tmp_path, text), num_states=4, num_actions=3)
    np.testing.assert_array_equal(alphas, [[1.5, 0, 0, -2000.0], [1, 2, 3, 4], [0, 0, 0, 0]])
    np.testing.assert_array_equal(actions, [1, 0, 2])
    np.testing.assert_array_equal(obs, [0, 0, 0])


def test_policy_from_appl_checks_the_model(tmp_path):
    path = _write(tmp_path, TIGER_POLICY)
    three = problems.three_state()          # 3 states, 2 actions
    with pytest.raises(PomdpFormatError, match="action") as e:
        policy_from_appl(path, three)
    assert e.value.line == 12  # the open-right vector, action 2
    short = TIGER_POLICY.replace('action="1"', 'action="0"').replace('action="2"', 'action="0"')
    with pytest.raises(PomdpFormatError, match="vectorLength") as e:
        policy_from_appl(_write(tmp_path, short, "s.policy"), three)
    assert e.value.line == 3


HEAD = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<Policy version="0.1" type="value" model="m">\n'
AV = '<AlphaVector vectorLength="2" numObsValue="1" numVectors="1">\n'
TAIL = '</AlphaVector> </Policy>\n'


@pytest.mark.parametrize("text, line, column, phrase", [
    ("", 1, 1, "empty"),
    ("   \n\n", 1, 1, "empty"),
    (HEAD + AV + '<Vector action="0" obsValue="0">1 2\n' + TAIL, 5, None, "malformed XML"),
    ('<?xml version="1.0"?>\n<!DOCTYPE Policy [<!ENTITY x "y">]>\n<Policy/>', 2, None, "DTD"),
    ('<?xml version="1.0"?>\n\n<Policies/>\n', 3, 1, "root element <Policy>"),
    (HEAD.replace('type="value"', 'type="graph"') + "</Policy>", 2, 1, 'type="graph"'),
    (HEAD + "</Policy>\n", 3, None, "missing <AlphaVector>"),
    (HEAD + AV + TAIL.replace("</AlphaVector>", "</AlphaVector><AlphaVector/>"), 4, None,
     "duplicate <AlphaVector>"),
    (HEAD + '<AlphaVector numVectors="1">\n' + '<Vector action="0" obsValue="0">1 2</Vector>\n' + TAIL,
     3, 1, "vectorLength"),
    (HEAD + '<AlphaVector vectorLength="two">\n' + TAIL, 3, 1, "non-negative integer"),
    (HEAD + '<AlphaVector vectorLength="0">\n' + TAIL, 3, 1, "at least 1"),
    (HEAD + AV + TAIL, 4, None, "no <Vector>"),
    (HEAD + AV + '<Vector action="0" obsValue="0">1.5</Vector>\n' + TAIL, 4, None, "expected 2 numbers"),
    (HEAD + AV + '<Vector action="0" obsValue="0">1 2\n  3</Vector>\n' + TAIL, 5, 3, "expected 2 numbers"),
    (HEAD + AV + '<Vector action="0" obsValue="0">1 abc</Vector>\n' + TAIL, 4, 35, "expected a number"),
    (HEAD + AV + '<Vector action="0" obsValue="0">1\nnan</Vector>\n' + TAIL, 5, 1, "expected a number"),
    (HEAD + AV + '<Vector action="0" obsValue="0">1 1e999</Vector>\n' + TAIL, 4, 35, "out of range"),
    (HEAD + AV + '<Vector action="7" obsValue="0">1 2</Vector>\n' + TAIL, 4, 1, "action=\"7\" is out of range"),
    (HEAD + AV + '<Vector action="-1" obsValue="0">1 2</Vector>\n' + TAIL, 4, 1, "non-negative integer"),
    (HEAD + AV + '<Vector obsValue="0">1 2</Vector>\n' + TAIL, 4, 1, 'needs the attribute action="'),
    (HEAD + AV + '<Vector action="0">1 2</Vector>\n' + TAIL, 4, 1, 'needs the attribute obsValue="'),
    (HEAD + AV + '<Vector action="0" obsValue="1">1 2</Vector>\n' + TAIL, 4, 1, "obsValue=\"1\" is out of range"),
    (HEAD + AV + '<Vector action="0" obsValue="0">1 2</Vector>\n<Vector action="1" obsValue="0">3 4</Vector>\n'
     + TAIL, 5, 1, 'numVectors="1" but'),
    (HEAD + AV.replace('"1">', '"2">') + '<Vector action="0" obsValue="0">1 2</Vector>\n' + TAIL, 5, None,
     'numVectors="2" but'),
    (HEAD + AV + '<Vector action="0" obsValue="0">1 2</Vector>\n<Matrix/>\n' + TAIL, 5, 1, "unexpected element <Matrix>"),
    (HEAD + AV + 'junk <Vector action="0" obsValue="0">1 2</Vector>\n' + TAIL, 4, 1, "unexpected text"),
    (HEAD + AV + '<Vector action="0" obsValue="0">1 <b>2</b></Vector>\n' + TAIL, 4, 35, "unexpected element <b>"),
    (HEAD + AV + '<SparseVector action="0" obsValue="0">\n<Entry>2 1.0</Entry></SparseVector>\n' + TAIL, 5, 8,
     "state index 2 is out of range"),
    (HEAD + AV + '<SparseVector action="0" obsValue="0">\n<Entry>1 1.0</Entry>\n<Entry> 1 2</Entry>'
     '</SparseVector>\n' + TAIL, 6, 9, "appears twice"),
    (HEAD + AV + '<SparseVector action="0" obsValue="0">\n<Entry>1 1.0 3</Entry></SparseVector>\n' + TAIL, 5, 14,
     "index value"),
    (HEAD + AV + '<SparseVector action="0" obsValue="0">\n<Entry>x 1.0</Entry></SparseVector>\n' + TAIL, 5, 8,
     "state index"),
    (HEAD + AV + '<SparseVector action="0" obsValue="0">\n<Entry>0 1.0x</Entry></SparseVector>\n' + TAIL, 5, 10,
     "expected a number"),
    (HEAD + AV + '<SparseVector action="0" obsValue="0">\n<Item>0 1</Item></SparseVector>\n' + TAIL, 5, 1,
     "expected <Entry>"),
])
def test_malformed_policy_files(tmp_path, text, line, column, phrase):
    path = _write(tmp_path, text, "bad.policy")
    with pytest.raises(PomdpFormatError, match=phrase) as e:
        read_appl_policy(path, num_actions=3)
    assert e.value.line == line, str(e.value)
    if column is not None:
        assert e.value.column == column, str(e.value)
    assert str(e.value).startswith(f"{path}:{line}:")


def test_num_states_must_match_vector_length(tmp_path):
    with pytest.raises(PomdpFormatError, match="does not match the model's 3 states") as e:
        read_appl_policy(_write(tmp_path, TIGER_POLICY), num_states=3)
    assert (e.value.line, e.value.column) == (3, 1)


def test_huge_sparse_vector_length_is_refused_before_allocating(tmp_path):
    text = (HEAD + '<AlphaVector vectorLength="2000000000" numObsValue="1" numVectors="3">\n'
            + '<SparseVector action="0" obsValue="0"><Entry>7 1</Entry></SparseVector>\n' * 3 + TAIL)
    with pytest.raises(PomdpFormatError, match="GiB") as e:
        read_appl_policy(_write(tmp_path, text))
    assert e.value.line == 3


def test_a_value_too_large_for_the_models_dtype_is_refused_at_its_number(tmp_path):
    """1e300 is a finite float64 (read_appl_policy keeps it) but infinite in a float32 model's policy."""
    text = TIGER_POLICY.replace("-81.5972 28.4028 ", "-81.5972 1e300 ")
    path = _write(tmp_path, text)
    assert read_appl_policy(path)[0][0, 1] == 1e300
    tiger = problems.tiger()
    if np.asarray(tiger.reward).dtype != np.float32:
        assert float(policy_from_appl(path, tiger).alphas[0, 1]) == 1e300
        return
    with pytest.raises(PomdpFormatError, match="number '1e300' is too large for float32") as e:
        policy_from_appl(path, tiger)
    assert (e.value.line, e.value.column) == (4, 42)
