"""pomdp-solve ``.alpha`` files: a policy (or value function) as alpha-vectors.

The format, one block per vector, blank lines between blocks::

    <action index>
    <alpha(s_0)> <alpha(s_1)> ... <alpha(s_{S-1})>

The value of a belief ``b`` is ``max_k alpha_k . b`` and the policy takes the
action of the maximising vector. pomdp-solve itself reads the numbers as one
whitespace-separated stream, the vector length being the model's number of
states; :func:`read_alpha` does the same when given ``num_states`` (a vector may
then span lines, or share a line with its action), and otherwise takes the
length from the layout above (the action alone on its line, the vector on the
next). pomdp-solve writes these files and APPL/SARSOP's
``pomdpconvert`` reads and writes them, so policies move between the tools.
"""

from __future__ import annotations

import bisect
import os
import re
from typing import Optional

import numpy as np

from jaxpomdp.errors import PomdpFormatError

__all__ = ["write_alpha", "read_alpha", "format_alpha"]

_NUM = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_BREAK = re.compile(r"\r\n|\r|\n")
_MAX_ACTION = 2 ** 31 - 1  # actions are int32


def format_alpha(alphas, actions) -> str:
    """The text of an ``.alpha`` file for ``alphas`` float[N, S] and ``actions`` int[N]."""
    alphas = np.asarray(alphas)
    actions = np.asarray(actions)
    if alphas.ndim != 2 or actions.shape != alphas.shape[:1]:
        raise ValueError(f"expected alphas [N, S] and actions [N]; got {alphas.shape} and {actions.shape}")
    blocks = [f"{int(a)}\n" + " ".join(str(v) for v in row) + "\n" for a, row in zip(actions, alphas)]
    return "\n".join(blocks)


def write_alpha(path: str | os.PathLike, alphas, actions) -> None:
    """Writes an ``.alpha`` file atomically (numbers round-trip exactly)."""
    from jaxpomdp.io import atomic_write

    atomic_write(path, format_alpha(alphas, actions))


def read_alpha(path: str | os.PathLike, *, num_states: Optional[int] = None,
               num_actions: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Reads an ``.alpha`` file.

    Args:
      path: the file.
      num_states: if given, every vector has this length, and the file is read as
        pomdp-solve reads it: a stream of numbers, line breaks anywhere (an action
        index, then ``num_states`` values, and so on). Without it, each action index
        stands alone on its line and its vector fills the next line.
      num_actions: if given, every action index must be below it.

    Returns:
      ``(alphas float64[N, S], actions int32[N])``.

    Raises:
      PomdpFormatError: naming line and column of the first malformed token.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        text = f.read().decode("utf-8-sig", errors="replace")  # a byte order mark is not part of the text
    starts = [0] + [m.end() for m in _BREAK.finditer(text)]  # lines end at \n, \r\n or \r only

    def fail(reason, offset):
        line = bisect.bisect_right(starts, offset)
        return PomdpFormatError(reason, path, line, offset - starts[line - 1] + 1)

    if not text.strip():
        raise PomdpFormatError("empty .alpha file: expected an action index and a vector", path, 1, 1)
    if num_states is not None:
        return _read_stream(text, int(num_states), num_actions, fail)
    # vectors are separated by their action line: split on line structure
    lines = [(ln, off) for ln, off in _lines(text) if ln.strip()]
    actions, rows = [], []
    i = 0
    while i < len(lines):
        ln, off = lines[i]
        head = ln.split()
        if len(head) != 1 or not re.fullmatch(r"[0-9]+", head[0]):
            raise fail(f"expected an action index (a non-negative integer) on its own line, found {ln.strip()[:40]!r}"
                       " (give num_states to read vectors that span lines, as pomdp-solve does)",
                       off + len(ln) - len(ln.lstrip()))
        a = _action(head[0], off, num_actions, fail)
        if i + 1 >= len(lines):
            raise fail("expected a vector of values after the action index, found the end of the file",
                       len(text.rstrip()))
        vec_line, voff = lines[i + 1]
        vals = []
        for m in re.finditer(r"\S+", vec_line):
            if not _NUM.match(m.group()):
                raise fail(f"expected a number, found {m.group()[:40]!r}", voff + m.start())
            v = float(m.group())
            if not np.isfinite(v):
                raise fail(f"number {m.group()!r} is out of range", voff + m.start())
            vals.append(v)
        if rows and len(vals) != len(rows[0]):
            raise fail(f"expected {len(rows[0])} values (as in the first vector), found {len(vals)}", voff)
        if num_states is not None and len(vals) != num_states:
            raise fail(f"expected {num_states} values (one per state), found {len(vals)}", voff)
        actions.append(a)
        rows.append(vals)
        i += 2
    return np.asarray(rows, np.float64), np.asarray(actions, np.int32)


def _action(token: str, offset: int, num_actions: Optional[int], fail) -> int:
    """An action index token (already known to be digits) checked against int32 and the model."""
    a = int(token)
    if a > _MAX_ACTION:
        raise fail(f"action index {token[:40]} is out of range (at most {_MAX_ACTION})", offset)
    if num_actions is not None and a >= num_actions:
        raise fail(f"action index {a} is out of range (the model has {num_actions} actions)", offset)
    return a


def _read_stream(text: str, num_states: int, num_actions: Optional[int], fail):
    """pomdp-solve's reading: an action index, ``num_states`` numbers, ..., line breaks anywhere."""
    if num_states < 1:
        raise ValueError(f"num_states must be positive, got {num_states}")
    tokens = [(m.group(), m.start()) for m in re.finditer(r"\S+", text, re.ASCII)]
    actions, values = [], np.empty((len(tokens) // (num_states + 1) + 1, num_states), np.float64)
    i = 0
    while i < len(tokens):
        tok, off = tokens[i]
        follows = bool(actions)  # a vector came before this index

        def extra(always: bool = False) -> str:
            """A hint for errors at an index that follows a vector: the vector may have a value too many (likely
            when numbers stand before the index on its line). Computed only for an error: rfind is O(line)."""
            start = max(text.rfind("\n", 0, off), text.rfind("\r", 0, off)) + 1
            likely = follows and (always or text[start:off].strip())
            return f" (the vector before it has more than {num_states} values?)" if likely else ""

        if not re.fullmatch(r"[0-9]+", tok):
            raise fail(f"expected an action index (a non-negative integer), found {tok[:40]!r}"
                       f"{extra(always=bool(_NUM.match(tok)))}", off)
        try:
            actions.append(_action(tok, off, num_actions, fail))
        except PomdpFormatError as e:
            raise fail(e.reason + extra(), off) from None
        vec = tokens[i + 1:i + 1 + num_states]
        for j, (v, voff) in enumerate(vec):
            if not _NUM.match(v):
                raise fail(f"expected a number, found {v[:40]!r}", voff)
            x = float(v)
            if not np.isfinite(x):
                raise fail(f"number {v!r} is out of range", voff)
            values[len(actions) - 1, j] = x
        if len(vec) < num_states:
            raise fail(f"expected {num_states} values (one per state) after action index {tok[:40]}, found "
                       f"{len(vec)} and the end of the file{extra()}", len(text.rstrip()))
        i += 1 + num_states
    return values[:len(actions)].copy(), np.asarray(actions, np.int32)


def _lines(text: str):
    """``(line, offset)`` of each line; only LF, CRLF and CR end one (``str.splitlines`` would
    also split at a vertical tab, a form feed and other Unicode separators)."""
    off = 0
    for m in _BREAK.finditer(text):
        yield text[off:m.start()], off
        off = m.end()
    yield text[off:], off
