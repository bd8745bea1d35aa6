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


@pytest.mark.parametrize("text", [
    "0\n-81.5 3.3\n\n1\n3.3 -81.5\n",          # pomdp-solve's own layout
    "0 -81.5 3.3\n1 3.3 -81.5\n",              # an action and its vector on one line
    "0\n-81.5\n3.3\n1\n3.3\n-81.5",            # vectors wrapped, no blank lines, no final newline
    "0 -81.5 3.3 1 3.3 -81.5",                 # one line
    "\t0\r\n-81.5\x0b3.3\x0c\r\n1\r3.3   -81.5\n\n\n",  # any ASCII whitespace between numbers
])
def test_with_num_states_the_numbers_are_read_as_one_stream_like_pomdp_solve(tmp_path, text):
    # pomdp-solve reads an .alpha file with fscanf: a stream of numbers whose vector length is the model's
    path = tmp_path / "tiger.alpha"
    path.write_bytes(text.encode())
    alphas, actions = read_alpha(path, num_states=2, num_actions=3)
    np.testing.assert_array_equal(actions, [0, 1])
    np.testing.assert_array_equal(alphas, [[-81.5, 3.3], [3.3, -81.5]])
    assert alphas.dtype == np.float64 and actions.dtype == np.int32


def test_stream_reading_gives_the_line_layout_the_same_vectors(tmp_path):
    rng = np.random.default_rng(1)
    alphas, actions = rng.normal(size=(40, 9)) * 50, rng.integers(0, 4, 40)
    path = tmp_path / "p.alpha"
    write_alpha(path, alphas, actions)
    for a, b in zip(read_alpha(path), read_alpha(path, num_states=9, num_actions=4)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("text, where, phrase", [
    ("0\n1 2 2\n", (2, 6), "expected 2 values (one per state) after action index 2, found 0 and the end of the file "
                          "(the vector before it has more than 2 values?)"),
    ("0\n1 2 3\n", (2, 5), "action index 3 is out of range (the model has 3 actions) (the vector before it"),
    ("0\n1 2\n2\n", (3, 2), "after action index 2, found 0 and the end of the file"),
    ("0\n1 2\n1 3 4 5\n", (3, 7), "action index 5 is out of range (the model has 3 actions) (the vector before"),
    ("0\n1 2 1.5\n3 4\n", (2, 5), "expected an action index (a non-negative integer), found '1.5' (the vector "
                                  "before it has more than 2 values?)"),
    ("0\n1 x\n", (2, 3), "expected a number, found 'x'"),
    ("0\n1 nan\n", (2, 3), "expected a number, found 'nan'"),
    ("0\n1 1e999\n", (2, 3), "number '1e999' is out of range"),
    ("0\n1 2\n\n7\n3 4\n", (4, 1), "action index 7 is out of range (the model has 3 actions)"),
    ("-1\n1 2\n", (1, 1), "expected an action index (a non-negative integer), found '-1'"),
    ("0\n1\u00a02\n", (2, 1), "expected a number"),      # a no-break space is not a separator
])
def test_stream_reading_errors_name_line_and_column(tmp_path, text, where, phrase):
    path = tmp_path / "bad.alpha"
    path.write_bytes(text.encode())
    with pytest.raises(PomdpFormatError) as info:
        read_alpha(path, num_states=2, num_actions=3)
    assert phrase in info.value.reason, info.value.reason
    assert (info.value.line, info.value.column) == where, str(info.value)


def test_without_num_states_a_wrapped_vector_says_how_to_read_it(tmp_path):
    path = tmp_path / "wrapped.alpha"
    path.write_text("0\n1 2\n3 4\n\n1\n5 6\n7 8\n")
    with pytest.raises(PomdpFormatError, match="give num_states to read vectors that span lines") as info:
        read_alpha(path)
    assert (info.value.line, info.value.column) == (3, 1)
    alphas, _ = read_alpha(path, num_states=4)
    assert alphas.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
