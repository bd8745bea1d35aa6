"""pomdp-solve .alpha files: exact round trips and clear errors."""

import numpy as np
import pytest

from jaxpomdp import PomdpFormatError
from jaxpomdp.io.alpha import read_alpha, write_alpha


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    alphas = rng.normal(size=(7, 5)) * 100
    actions = rng.integers(0, 3, 7)
    path = tmp_path / "p.alpha"
    write_alpha(path, alphas, actions)
    a2, act2 = read_alpha(path, num_states=5, num_actions=3)
    np.testing.assert_array_equal(a2, alphas)
    np.testing.assert_array_equal(act2, actions)


def test_reads_pomdp_solve_layout(tmp_path):
    path = tmp_path / "tiger.alpha"
    path.write_text("0\n-81.5 3.3\n\n1\n  3.3   -81.5  \n\n")
    alphas, actions = read_alpha(path)
    np.testing.assert_array_equal(actions, [0, 1])
    np.testing.assert_array_equal(alphas, [[-81.5, 3.3], [3.3, -81.5]])


@pytest.mark.parametrize("text, line, phrase", [
    ("", 1, "empty"),
    ("0\n1 2\n\n1\n1 2 3\n", 5, "expected 2 values"),
    ("0\n1 x\n", 2, "expected a number"),
    ("0 1\n1 2\n", 1, "action index"),
    ("0\n1 2\n1\n", 3, "end of the file"),
    ("5\n1 2\n", 1, "out of range"),
    ("0\n1 inf\n", 2, "expected a number"),
    ("0\n1 1e999\n", 2, "out of range"),
])
def test_malformed_alpha_files(tmp_path, text, line, phrase):
    path = tmp_path / "bad.alpha"
    path.write_text(text)
    with pytest.raises(PomdpFormatError, match=phrase) as e:
        read_alpha(path, num_actions=3)
    assert e.value.line == line and str(path) in str(e.value)


@pytest.mark.parametrize("text, where, phrase", [
    ("0\r1 2\r\r1\r3 x\r", (5, 3), "expected a number, found 'x'"),  # old Mac line ends: lines counted at \r
    ("0\r\n1 2\r\n1\r\n3 x\r\n", (4, 3), "expected a number, found 'x'"),
    ("0\x0b5\n", (1, 1), "on its own line"),  # a vertical tab does not end a line
    ("0\x0c1 2\n", (1, 1), "on its own line"),  # nor does a form feed
    ("99999999999999999999\n1 2\n", (1, 1), r"out of range \(at most 2147483647\)"),
    ("0\n1 2\n\n3000000000\n3 4\n", (4, 1), "action index 3000000000 is out of range"),
])
def test_line_ends_and_int32_actions(tmp_path, text, where, phrase):
    path = tmp_path / "p.alpha"
    path.write_bytes(text.encode())
    with pytest.raises(PomdpFormatError, match=phrase) as info:
        read_alpha(path)
    assert (info.value.line, info.value.column) == where


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "bom.alpha"
    path.write_bytes("\ufeff0\n1 2\n".encode())
    alphas, actions = read_alpha(path)
    assert actions.tolist() == [0] and alphas.tolist() == [[1.0, 2.0]]
