"""Cassandra's ``.pomdp`` format (pomdp-solve, APPL, ZMDP, POMDPs.jl), read and written.

The whole format is read::

    discount: 0.95                      # required, in [0, 1]
    values: reward | cost               # optional, default reward; cost negates
    states: 3 | s1 s2 s3                # a count or a list of names
    actions: ... ; observations: ...    # the same
    start: 0.5 0.5 0                    # optional, default uniform; also
    start: uniform | start: s2          #   'uniform', a single state,
    start include: s1 s3                #   uniform over a list,
    start exclude: s2                   #   uniform over the rest

    T: a : s : s' p       T: a : s  <row of |S|, uniform, reset>    T: a  <matrix, uniform, identity>
    O: a : s' : o p       O: a : s' <row of |O|, uniform>           O: a  <matrix, uniform>
    R: a : s : s' : o v   R: a : s : s' <row of |O|>                R: a : s <matrix |S| x |O|>

Names or 0-based indices may be used anywhere, ``*`` is a wildcard in any
position, later entries override earlier ones, ``#`` starts a comment, and
whitespace (line breaks included) only separates tokens, so ``discount : 0.95``
and ``T:listen`` are fine. Numbers may be written ``1``, ``.5``, ``+0.5``, ``5E-01``;
a sign may also stand apart from its digits (``- 5``), as pomdp-solve's grammar
allows. ``reset`` (a pomdp-solve extension) makes the row the start distribution.
Entries left unset are 0, so every transition and observation row must be
given; rows must sum to 1 within ``tolerance``. The text is UTF-8 (a byte order
mark is skipped) or Latin-1; CRLF and CR line endings are fine.

Rewards are reduced to the expected immediate reward
``R(s, a) = sum_{s', o} T(s'|s, a) Z(o|a, s') R(a, s, s', o)``.
Transitions are kept sparse while reading, so a RockSample-sized file (tens of
thousands of states) never needs a dense ``|S| x |S|`` array; single entries
given by name or index (the bulk of large files) take a fast path.

Models too large to hold are refused, with the estimated size, as soon as the
sizes or the entries say so and before anything that large is allocated: at
``states:``/``actions:``/``observations:`` (the dense ``|A| x |S| x |O|``
observation array and the per-row bookkeeping), and at the first transition
entry that gives a state and action more successors than fit (the model pads
every row to the largest number of successors ``K``, so ``A * S * K`` slots): a
``uniform`` row, a ``reset`` row, a ``*`` end state, or a row or matrix of
numbers with many positive entries. The limit is the environment variable
``JAXPOMDP_MAX_MODEL_BYTES`` when set (bytes: ``8000000000``, ``8e9``, ``8G``),
else the smaller of ``MAX_MODEL_BYTES`` and the memory available (see
:mod:`jaxpomdp.io.limits`). Wildcards and keywords may also expand to at most
``MAX_EXPANDED_ENTRIES`` entries while reading.

Names must not be one of the format's keywords (``T``, ``O``, ``R``, ``discount``,
``values``, ``states``, ``actions``, ``observations``, ``start``, ``include``,
``exclude``, ``uniform``, ``identity``, ``reset``), ``*``, ``+``, ``-`` nor look like
numbers. Every problem is a ``PomdpFormatError`` naming file, line and column.
"""

from __future__ import annotations

import gc
import math
import re
from collections import defaultdict
from itertools import chain, islice, repeat
from typing import Callable, Optional

import numpy as np

from jaxpomdp.errors import InvalidModelError, PomdpFormatError
from jaxpomdp.io.limits import SIMULATOR_HINT, refusal
from jaxpomdp.model import DEFAULT_TOLERANCE, TabularPOMDP, float_dtype, too_large, validate

__all__ = ["read_cassandra", "write_cassandra", "MAX_MODEL_BYTES", "MAX_EXPANDED_ENTRIES"]

#: Models whose arrays would need more than this many bytes (or more than the memory
#: available) are refused up front, unless ``JAXPOMDP_MAX_MODEL_BYTES`` sets the limit.
MAX_MODEL_BYTES = 4 * 2 ** 30
#: The end of a refusal caused by the transitions.
SPARSE_HINT = (SIMULATOR_HINT + ", or write sparse rows (T: a : s : s' p) so only the successors "
               "with positive probability are stored")
#: Transition entries that ``*``, ``identity`` and overridden ``uniform``/``reset``
#: rows may expand to while reading (entries written out in the file don't count).
MAX_EXPANDED_ENTRIES = 2 ** 25

_TOKEN = re.compile(r"#[^\n]*|:|[^\s:#]+")
_COMMENT = re.compile(r"#[^\n]*")
_BINARY = re.compile(r"[^\t\n\r\f\v\x20-\x7e\x80-\U0010ffff]")
_UNSIGNED = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")  # [0-9]: \d is any Unicode digit
_NUMBER = re.compile(r"[+-]?" + _UNSIGNED.pattern)
_SIGNS = ("+", "-")  # pomdp-solve's grammar also allows a sign apart from its digits: '- 5'
_COUNT = re.compile(r"[0-9]+\Z")
_PREAMBLE = ("discount", "values", "states", "actions", "observations", "start")
_ENTRY = ("T", "O", "R")
_KEYWORDS = frozenset(_PREAMBLE + _ENTRY + ("include", "exclude", "uniform", "identity", "reset"))
_SECTION = frozenset(_PREAMBLE + _ENTRY)  # tokens that end a list of names
_MAX_COUNT = 2 ** 31 - 1
_MAX_VALUE = 1e300
_INDEX_NAMES = 2 ** 16  # indices below this are also looked up as names (fast path)
_CHUNK = 2 ** 22  # (pair, successor, observation) cells per block when reducing rewards
_PAD = 10  # end-of-file sentinels after the last token, so the fast path may look ahead
_ALL = slice(None)

_UNIFORM = "uniform"  # rows kept as keywords until they must be expanded
_RESET = "reset"
_WHY = {_UNIFORM: "'uniform' makes every state a successor",
        _RESET: "'reset' makes every state of the start distribution a successor"}


def _valid_name(tok: str) -> bool:
    return (tok not in _KEYWORDS and tok not in ("*", ":") + _SIGNS and _NUMBER.match(tok) is None
            and tok.isprintable())


def _show(tok: str) -> str:
    return "the end of the file" if not tok else repr(tok if len(tok) <= 40 else tok[:37] + "...")


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _where(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _as_row(vec: np.ndarray) -> dict:
    nz = np.flatnonzero(vec)
    return dict(zip(nz.tolist(), vec[nz].tolist()))


def _looks_utf16(data: bytes) -> bool:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    head = data[:64]
    even, odd = head[0::2], head[1::2]
    return len(head) >= 8 and any(z.count(0) == len(z) and 0 not in n for z, n in ((even, odd), (odd, even)))


class _Rows(dict):
    """The transition rows of each action, a list of ``S`` made when first used."""

    def __init__(self, S: int):
        super().__init__()
        self.S = S

    def __missing__(self, a: int) -> list:
        rows = self[a] = [None] * self.S
        return rows


class _Parser:
    """A recursive-descent parser over whitespace/colon-separated tokens."""

    def __init__(self, text: str, path: str, tolerance: float,
                 progress: Optional[Callable[[float], None]]):
        self.text = text
        self.path = path
        self.tol = tolerance
        self.progress = progress
        dtype = float_dtype()  # the model's: larger numbers would become infinite
        self.max_value = min(_MAX_VALUE, float(np.finfo(dtype).max))
        self.too_large = "number {} " + too_large(dtype)
        # token texts only (fast); a token's offset is recomputed when an error needs it
        self.toks = (_COMMENT.sub("", text) if "#" in text else text).replace(":", " : ").split()
        self.ntok = len(self.toks)
        self.toks += [""] * _PAD  # end-of-file sentinels
        self.i = 0
        self.work = 0

    # ------------------------------------------------------------ positions
    def offset(self, tok: int) -> int:
        """Character offset of token ``tok`` (the end of the last token for end-of-file)."""
        real = (m for m in _TOKEN.finditer(self.text) if m.group()[0] != "#")
        if tok < self.ntok:
            return next(islice(real, tok, None)).start()
        return next(islice(real, self.ntok - 1, None)).end() if self.ntok else 0

    def error(self, reason: str, tok: Optional[int] = None):
        offset = self.offset(self.i if tok is None else int(tok))
        return PomdpFormatError(reason, self.path, *_where(self.text, offset))

    def found(self, i: Optional[int] = None) -> str:
        return _show(self.toks[self.i if i is None else i])

    # --------------------------------------------------------------- tokens
    def peek(self) -> str:
        return self.toks[self.i]

    def take(self) -> str:
        t = self.toks[self.i]
        if t:
            self.i += 1
        return t

    def expect_colon(self, after: str):
        if self.toks[self.i] != ":":
            raise self.error(f"expected ':' after {after}, found {self.found()}")
        self.i += 1

    def number(self, what: str, probability: bool = False) -> float:
        toks, i = self.toks, self.i
        t, n = toks[i], 1
        if not _NUMBER.match(t):
            if not (t in _SIGNS and _UNSIGNED.match(toks[i + 1])):
                raise self.error(f"expected {what}, found {self.found()}")
            t, n = t + toks[i + 1], 2
        v = float(t)
        if not abs(v) <= self.max_value:
            raise self.error(self.out_of_range(t, v))
        if probability and not 0.0 <= v <= 1.0:
            raise self.error(f"expected a probability in [0, 1], found {_show(t)}")
        self.i = i + n
        return v

    def out_of_range(self, t: str, v: float) -> str:
        return (f"number {_show(t)} is out of range" if not abs(v) <= _MAX_VALUE
                else self.too_large.format(_show(t)))

    def probability(self) -> float:
        return self.number("a probability", probability=True)

    def numbers(self, count: int, what: str, *, probability: bool) -> np.ndarray:
        """Reads a block of exactly ``count`` numbers."""
        toks, start = self.toks, self.i
        end = start
        while True:
            t = toks[end]
            if _NUMBER.match(t):
                end += 1
            elif t in _SIGNS and _UNSIGNED.match(toks[end + 1]):
                end += 2
            else:
                break
        words, pos = toks[start:end], range(start, end)
        if "+" in words or "-" in words:  # signs apart from their digits: join them
            pos = [k for k in pos if k == start or toks[k - 1] not in _SIGNS]
            words = [toks[k] + toks[k + 1] if toks[k] in _SIGNS else toks[k] for k in pos]
        n = len(words)
        if n > count:
            raise self.error(f"too many numbers: expected {count} ({what}), found {n}", tok=pos[count])
        if n < count:
            raise self.error(f"expected {count} numbers ({what}), found {n} and then {self.found(end)}",
                             tok=end)
        arr = np.array(words, dtype=np.float64)
        big = ~(np.abs(arr) <= self.max_value)
        bad = big | (arr < 0) | (arr > 1) if probability else big
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            reason = (self.out_of_range(words[k], arr[k]) if big[k]
                      else f"expected a probability in [0, 1], found {_show(words[k])}")
            raise self.error(reason, tok=pos[k])
        self.i = end
        return arr

    # ------------------------------------------------------------ preamble
    def parse(self) -> TabularPOMDP:
        if self.ntok == 0:
            raise self.error("empty file: expected a .pomdp model (discount:, states:, actions:, observations:, ...)")
        self.discount = None
        self.cost = False
        self.names: dict[str, Optional[list[str]]] = {}
        self.sizes: dict[str, int] = {}
        self.index: dict[str, dict[str, int]] = {}
        self.start_spec = None
        self.decl_tok: dict[str, int] = {}
        while self.peek() in _PREAMBLE:
            self.preamble_item()
        missing = [k for k in ("discount", "states", "actions", "observations")
                   if k not in self.decl_tok]
        if missing:
            raise self.error(
                "missing " + ", ".join(f"'{k}:'" for k in missing)
                + f" before the first entry (found {self.found()})")
        self.allocate()
        self.body()
        return self.build()

    def preamble_item(self):
        key_tok = self.i
        key = self.take()
        if key in self.decl_tok:
            raise self.error(f"'{key}:' is given twice", tok=key_tok)
        self.decl_tok[key] = key_tok
        if key == "start":
            return self.start_item(key_tok)
        self.expect_colon(f"'{key}'")
        if key == "discount":
            start = self.i
            self.discount = self.number("the discount factor (a number in [0, 1])")
            if not 0.0 <= self.discount <= 1.0:
                raise self.error(f"expected a discount factor in [0, 1], found "
                                 f"{_show(''.join(self.toks[start:self.i]))}", tok=start)
        elif key == "values":
            t = self.peek()
            if t not in ("reward", "cost"):
                raise self.error(f"expected 'reward' or 'cost' after 'values:', found {self.found()}")
            self.cost = t == "cost"
            self.i += 1
        else:
            self.declare(key[:-1])
            self.check_size(key_tok)

    def declare(self, kind: str):
        """``states:`` / ``actions:`` / ``observations:`` as a count or names."""
        t = self.peek()
        start = self.i
        if _NUMBER.match(t):
            n = int(t) if _COUNT.match(t) and len(t) <= 12 else -1
            if not 1 <= n <= _MAX_COUNT:
                raise self.error(f"expected a number of {kind}s (a whole number from 1 to {_MAX_COUNT}) "
                                 f"or a list of {kind} names, found {self.found()}")
            self.i += 1
            if self.peek() not in _SECTION and self.peek() != "":
                raise self.error(f"expected the next section after '{kind}s: {t}', found {self.found()} "
                                 f"(give either a count or a list of names)")
            names, index = None, {}
        else:
            names = []
            while self.peek() not in _SECTION and self.peek() != "":
                tok = self.peek()
                if not _valid_name(tok):
                    why = ("a keyword" if tok in _KEYWORDS else "a number" if _NUMBER.match(tok)
                           else "not a valid name")
                    raise self.error(f"expected {_a(kind)} name, found {self.found()} ({why})")
                names.append(tok)
                self.i += 1
            if not names:
                raise self.error(f"expected a number of {kind}s or a list of {kind} names, found {self.found()}")
            n = len(names)
            index = {}
            for j, nm in enumerate(names):
                if index.setdefault(nm, j) != j:
                    raise self.error(f"duplicate {kind} name {nm!r}", tok=start + j)
        index.update((str(j), j) for j in range(min(n, _INDEX_NAMES)))  # indices, as names
        self.names[kind] = names
        self.sizes[kind] = n
        self.index[kind] = index

    def check_size(self, tok: int, successors: int = 1, why: str = ""):
        """Refuses, before anything that large is allocated, a model whose arrays could not fit.

        Called at each size declaration, and when a transition row (token ``tok``)
        would give a state and action ``successors`` successors (``why``): every
        row is padded to the largest number, so that is ``A * S * successors`` slots.
        """
        A, S, O = (self.sizes.get(k, 1) for k in ("action", "state", "observation"))
        # per (a, s): observations (float64 while reading, float32 in the model), the
        # rewards and row bookkeeping; per successor slot: int64 + float64 while
        # reading, int32 + float32 in the model
        need = A * S * (12 * O + 64 + 24 * successors)
        sizes = " x ".join(f"{self.sizes[k]} {k}s" for k in ("state", "action", "observation")
                           if k in self.sizes)
        if successors > 1:
            sizes += f", with {successors} successors for one state and action ({why}),"
        reason = refusal(need, f"model too large: {sizes} needs at least", MAX_MODEL_BYTES,
                         hint=SPARSE_HINT if successors > 1 else SIMULATOR_HINT)
        if reason is not None:
            raise self.error(reason, tok=tok)

    def check_successors(self, successors: int, tok: int, why: str):
        """``check_size`` for a transition row, when it raises the most successors seen."""
        if successors > self.kmax:
            self.check_size(tok, successors, why)
            self.kmax = successors

    def start_item(self, key_tok: int):
        mode = "vector"
        if self.peek() in ("include", "exclude"):
            mode = self.take()
        self.expect_colon("'start'" if mode == "vector" else f"'start {mode}'")
        if "state" not in self.sizes:
            raise self.error("'start' must come after 'states:'", tok=key_tok)
        S = self.sizes["state"]
        first = self.i
        if mode != "vector":
            mask = np.zeros(S, bool)
            while self.peek() not in _SECTION and self.peek() != "":
                mask[self.ref("state")] = True
            if self.i == first:
                raise self.error(f"expected a list of states after 'start {mode}:', found {self.found()}")
            if mode == "exclude":
                mask = ~mask
            if not mask.any():
                raise self.error("'start exclude:' excludes every state", tok=first)
            self.start_spec = (mask / mask.sum(), key_tok)
            return
        t = self.peek()
        if t == "uniform":
            self.i += 1
            self.start_spec = (None, key_tok)  # made when needed: S may be too large to hold
        elif _NUMBER.match(t) and not (_COUNT.match(t) and not _NUMBER.match(self.toks[self.i + 1])
                                       and (S > 1 or not t.strip("0"))):  # else a state's index
            self.start_spec = (self.numbers(S, "the start distribution over the states", probability=True),
                               key_tok)
        else:
            if t == "" or t in _SECTION:
                raise self.error(f"expected a start distribution (one probability per state), 'uniform' or "
                                 f"a state, found {self.found()}")
            s = self.ref("state")
            if isinstance(s, slice):
                raise self.error("expected a start distribution, 'uniform' or a state, found '*'", tok=first)
            b = np.zeros(S)
            b[s] = 1.0
            self.start_spec = (b, key_tok)

    # ------------------------------------------------------------ references
    def ref(self, kind: str):
        """A state/action/observation: a name, an index or '*' (slice)."""
        t = self.toks[self.i]
        j = self.index[kind].get(t)
        if j is not None:
            self.i += 1
            return j
        if t == "*":
            self.i += 1
            return _ALL
        n = self.sizes[kind]
        if _COUNT.match(t):
            v = int(t) if len(t) <= 12 else n
            if v >= n:
                raise self.error(f"{kind} index {self.found()} is out of range (there are {n} {kind}s: 0..{n - 1})")
            self.i += 1
            return v
        if not t or t in _KEYWORDS or t == ":":
            raise self.error(f"expected {_a(kind)} (name, index or '*'), found {self.found()}")
        known = self.names[kind]
        hint = (f"known {kind}s: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''}"
                if known else f"{kind}s are numbered 0..{n - 1}")
        raise self.error(f"unknown {kind} {self.found()} ({hint})")

    # ---------------------------------------------------------------- body
    def allocate(self):
        A, S, O = self.sizes["action"], self.sizes["state"], self.sizes["observation"]
        # Nothing here touches memory in proportion to A * S (np.zeros maps zero pages
        # lazily), so a model whose entries are too large is refused quickly.
        self.trows = _Rows(S)  # action -> [None | dict | _UNIFORM | _RESET] * S
        self.tloc = np.zeros((A, S), np.int64)  # token of the entry that last set a row (0: none yet)
        self.obs = np.zeros((A, S, O))
        self.oloc = np.zeros((A, S), np.int64)
        self.rentries: list[tuple] = []
        self.kmax = 1  # the most successors of any transition row so far (checked by check_size)
        b0 = None if self.start_spec is None else self.start_spec[0]
        self.reset_k = S if b0 is None else int(np.count_nonzero(b0))  # successors of a 'reset' row
        self.reset_row = None  # their (states, probabilities), made when a reset row is expanded

    def body(self):
        """The T:, O: and R: entries; single entries by name or index take a fast path."""
        toks, num = self.toks, _NUMBER.match
        act, st, ob = self.index["action"], self.index["state"], self.index["observation"]
        trows, tloc, obs, oloc, rent = self.trows, self.tloc, self.obs, self.oloc, self.rentries
        progress = self.progress
        step = max(self.ntok // 100, 4096)
        mark = step if progress is not None else math.inf
        i = self.i
        while True:
            if i >= mark:
                progress(i / (self.ntok + 1))
                mark = i + step
            t = toks[i]
            if toks[i + 1] == ":" and toks[i + 3] == ":" and toks[i + 5] == ":":
                a, x = act.get(toks[i + 2]), st.get(toks[i + 4])
                if t == "T" or t == "O":  # T: a : s : s' p / O: a : s' : o p
                    y, v = (st if t == "T" else ob).get(toks[i + 6]), toks[i + 7]
                    if (a is not None and x is not None and y is not None and num(v)
                            and 0.0 <= (p := float(v)) <= 1.0):
                        if t == "T":
                            row = trows[a][x]
                            if type(row) is not dict:
                                row = self._row_dict(a, x, i)
                            row[y] = p
                            tloc[a, x] = i
                        else:
                            obs[a, x, y] = p
                            oloc[a, x] = i
                        i += 8
                        continue
                elif t == "R" and toks[i + 7] == ":":  # R: a : s : s' : o v
                    y, o, v = toks[i + 6], toks[i + 8], toks[i + 9]
                    y = _ALL if y == "*" else st.get(y)
                    o = _ALL if o == "*" else ob.get(o)
                    if (a is not None and x is not None and y is not None and o is not None and num(v)
                            and abs(r := float(v)) <= self.max_value):
                        rent.append((a, x, y, o, r))
                        i += 10
                        continue
            self.i = i
            if t == "":
                break
            if t not in _ENTRY:
                if t in _PREAMBLE:
                    raise self.error(f"'{t}:' must come before the first T:, O: or R: entry")
                extra = (" (a number after a complete entry: the entry before has too many numbers?)"
                         if _NUMBER.match(t) or t in _SIGNS else "")
                raise self.error(f"expected an entry 'T:', 'O:' or 'R:', found {self.found()}{extra}")
            self.i += 1
            self.expect_colon(f"'{t}'")
            (self.t_entry if t == "T" else self.o_entry if t == "O" else self.r_entry)(i)
            i = self.i

    def spend(self, entries: int, stmt: int):
        """Counts transition entries not written out in the file; refuses too many."""
        self.work += entries
        if self.work > MAX_EXPANDED_ENTRIES:
            raise self.error(
                f"model too large: wildcards and keywords expand the transitions to more than "
                f"{MAX_EXPANDED_ENTRIES} entries (jaxpomdp.io.cassandra.MAX_EXPANDED_ENTRIES)", tok=stmt)

    def special_row(self, row: str):
        """(successors, probabilities) of a 'uniform' or 'reset' row."""
        if row == _UNIFORM:
            S = self.sizes["state"]
            return range(S), repeat(1.0 / S, S)
        if self.reset_row is None:
            b0 = self.start()
            nz = np.flatnonzero(b0)
            self.reset_row = (nz.tolist(), b0[nz].tolist())
        return self.reset_row

    def _row_dict(self, a: int, s: int, stmt: int) -> dict:
        row = self.trows[a][s]
        if type(row) is not dict:
            if row is None:
                row = {}
            else:
                keys, values = self.special_row(row)
                self.spend(len(keys), stmt)
                row = dict(zip(keys, values))
            self.trows[a][s] = row
        return row

    def t_entry(self, stmt: int):
        S = self.sizes["state"]
        a = self.ref("action")
        acts = range(self.sizes["action"])[a] if isinstance(a, slice) else (a,)
        if self.peek() != ":":  # T: a <matrix | uniform | identity>
            kw = self.peek()
            if kw == "uniform":
                self.check_successors(S, self.i, _WHY[_UNIFORM])
                self.i += 1
                for ai in acts:
                    self.trows[ai] = [_UNIFORM] * S
            elif kw == "identity":
                self.i += 1
                self.spend(len(acts) * S, stmt)
                for ai in acts:
                    self.trows[ai] = [{s: 1.0} for s in range(S)]
            else:
                first = self.i
                m = self.numbers(S * S, f"a {S}x{S} transition matrix, 'uniform' or 'identity'",
                                 probability=True).reshape(S, S)
                self.check_successors(int(np.count_nonzero(m, axis=1).max()), first,
                                      "a row of the matrix has that many positive probabilities")
                rows = [_as_row(r) for r in m]
                self.spend((len(acts) - 1) * sum(map(len, rows)), stmt)
                for ai in acts:
                    self.trows[ai] = [dict(r) for r in rows]
            self.tloc[a] = stmt
            return
        self.i += 1
        s = self.ref("state")
        states = range(S)[s] if isinstance(s, slice) else (s,)
        if self.peek() != ":":  # T: a : s <row | uniform | reset>
            kw = self.peek()
            if kw in (_UNIFORM, _RESET):
                self.check_successors(S if kw == _UNIFORM else self.reset_k, self.i, _WHY[kw])
                self.i += 1
                for ai in acts:
                    for si in states:
                        self.trows[ai][si] = kw
            else:
                first = self.i
                vec = self.numbers(S, "a row of transition probabilities over the states, "
                                      "'uniform' or 'reset'", probability=True)
                self.check_successors(int(np.count_nonzero(vec)), first,
                                      "the row has that many positive probabilities")
                row = _as_row(vec)
                self.spend((len(acts) * len(states) - 1) * len(row), stmt)
                for ai in acts:
                    for si in states:
                        self.trows[ai][si] = dict(row)
        else:  # T: a : s : s' p
            self.i += 1
            end = self.i
            s2 = self.ref("state")
            p = self.probability()
            targets = range(S)[s2] if isinstance(s2, slice) else (s2,)
            self.check_successors(len(targets), end, "'*' as the end state makes every state a successor")
            self.spend(len(acts) * len(states) * len(targets) - 1, stmt)
            for ai in acts:
                for si in states:
                    self._row_dict(ai, si, stmt).update(zip(targets, repeat(p)))
        self.tloc[a, s] = stmt

    def o_entry(self, stmt: int):
        S, O = self.sizes["state"], self.sizes["observation"]
        a = self.ref("action")
        if self.peek() != ":":  # O: a <matrix | uniform>
            if self.peek() == "uniform":
                self.i += 1
                self.obs[a] = 1.0 / O
            else:
                self.obs[a] = self.numbers(
                    S * O, f"a {S}x{O} observation matrix (states x observations) or 'uniform'",
                    probability=True).reshape(S, O)
            self.oloc[a] = stmt
            return
        self.i += 1
        s = self.ref("state")
        if self.peek() != ":":  # O: a : s' <row | uniform>
            if self.peek() == "uniform":
                self.i += 1
                self.obs[a, s] = 1.0 / O
            else:
                self.obs[a, s] = self.numbers(
                    O, "a row of observation probabilities or 'uniform'", probability=True)
        else:
            self.i += 1
            o = self.ref("observation")
            self.obs[a, s, o] = self.probability()
        self.oloc[a, s] = stmt

    def r_entry(self, stmt: int):
        S, O = self.sizes["state"], self.sizes["observation"]
        a = self.ref("action")
        self.expect_colon("the action of an R: entry (R: action : state ...)")
        s = self.ref("state")
        if self.peek() != ":":  # R: a : s <matrix S' x O>
            m = self.numbers(S * O, f"a {S}x{O} reward matrix (end states x observations)",
                             probability=False).reshape(S, O)
            self.rentries.append((a, s, "matrix", None, m))
            return
        self.i += 1
        s2 = self.ref("state")
        if self.peek() != ":":  # R: a : s : s' <row over O>
            r = self.numbers(O, "a row of rewards over the observations", probability=False)
            self.rentries.append((a, s, s2, "row", r))
            return
        self.i += 1
        o = self.ref("observation")
        self.rentries.append((a, s, s2, o, self.number("a reward value")))

    # --------------------------------------------------------------- build
    def start(self) -> np.ndarray:
        S = self.sizes["state"]
        b0 = None if self.start_spec is None else self.start_spec[0]
        return np.full(S, 1.0 / S) if b0 is None else b0

    def end_error(self, reason: str):
        return self.error(reason, tok=self.ntok)

    def loc_error(self, reason: str, tok: int):
        """An error located at the statement (token index) that last set a row."""
        return self.error(reason, tok=int(tok)) if tok > 0 else self.end_error(reason)

    def build(self) -> TabularPOMDP:
        A, S = self.sizes["action"], self.sizes["state"]
        an = self.names["action"] or [str(i) for i in range(A)]
        sn = self.names["state"] or [str(i) for i in range(S)]
        b0 = self.start()
        if abs(b0.sum() - 1.0) > self.tol:
            raise self.error(f"the start distribution sums to {b0.sum():.10g} (expected 1 ± {self.tol:g})",
                             tok=self.start_spec[1])
        # transitions: sparse rows -> padded [A, S, K]
        rows = [r for a in range(A) for r in self.trows[a]]
        missing = [k for k, r in enumerate(rows) if r is None]
        if missing:
            ai, si = divmod(missing[0], S)
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise self.end_error(
                f"no transition probabilities given for action {an[ai]!r} in state {sn[si]!r}{more} "
                f"(every T row must be specified)")
        parts = [(r.keys(), r.values()) if type(r) is dict else self.special_row(r) for r in rows]
        lengths = np.fromiter((len(k) for k, _ in parts), np.int64, len(parts))
        K = max(int(lengths.max()), 1)
        if K > self.kmax:  # single entries: the row with the most, at its last entry
            self.check_size(self.tloc.flat[int(lengths.argmax())], K,
                            "the entries for it list that many end states")
        total = int(lengths.sum())
        row_id = np.repeat(np.arange(A * S), lengths)
        slot = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ns = np.zeros((A * S, K), np.int64)
        npb = np.zeros((A * S, K))
        ns[row_id, slot] = np.fromiter(chain.from_iterable(k for k, _ in parts), np.int64, total)
        npb[row_id, slot] = np.fromiter(chain.from_iterable(v for _, v in parts), np.float64, total)
        del parts, rows, row_id, slot
        ns, npb = ns.reshape(A, S, K), npb.reshape(A, S, K)
        sums = npb.sum(-1)
        bad = np.argwhere(np.abs(sums - 1.0) > self.tol)
        if bad.size:
            ai, si = bad[0]
            raise self.loc_error(
                f"transition probabilities for action {an[ai]!r} from state {sn[si]!r} sum to "
                f"{sums[ai, si]:.10g} (expected 1 ± {self.tol:g})", self.tloc[ai, si])
        osums = self.obs.sum(-1)
        bad = np.argwhere(np.abs(osums - 1.0) > self.tol)
        if bad.size:
            ai, si = bad[0]
            where = f"for action {an[ai]!r} arriving in state {sn[si]!r}"
            if not self.oloc[ai, si]:
                more = int((self.oloc == 0).sum()) - 1
                raise self.end_error(f"no observation probabilities given {where}"
                                     + (f" (and {more} more)" if more else ""))
            raise self.loc_error(f"observation probabilities {where} sum to {osums[ai, si]:.10g} "
                                 f"(expected 1 ± {self.tol:g})", self.oloc[ai, si])
        reward = self.expected_reward(ns, npb)
        if self.cost:
            reward = -reward
        try:
            model = TabularPOMDP.create(
                ns, npb, self.obs, reward, b0, self.discount,
                state_names=self.names["state"], action_names=self.names["action"],
                observation_names=self.names["observation"])
            return validate(model, tolerance=self.tol)
        except InvalidModelError as e:  # e.g. a reward that overflows float32
            raise self.end_error(str(e)) from None

    def expected_reward(self, ns: np.ndarray, npb: np.ndarray) -> np.ndarray:
        """Reduces the R entries (in file order, later overriding) to R(s, a).

        Entries with ``s' = *`` and ``o = *`` set a per-(a, s) base value. Other
        entries matter only at the (a, s) pairs they touch after that pair's last
        base entry; only those pairs are expanded over (successor, observation),
        a block of pairs at a time.
        """
        A, S, K = ns.shape
        O = self.obs.shape[2]
        base = np.zeros((A, S))
        last_base = np.full((A, S), -1, np.int64)
        fine = []
        for idx, (a, s, s2, o, v) in enumerate(self.rentries):
            if isinstance(s2, slice) and isinstance(o, slice):
                base[a, s] = v
                last_base[a, s] = idx
            else:
                fine.append(idx)
        reward = base.copy()
        if not fine:
            return reward
        touched = np.zeros((A, S), bool)
        for idx in fine:
            a, s = self.rentries[idx][:2]
            touched[a, s] |= last_base[a, s] < idx
        pa, ps = np.nonzero(touched)
        pair_id = np.full((A, S), -1, np.int64)
        pair_id[pa, ps] = np.arange(pa.size)
        block = max(1, _CHUNK // (K * O))
        todo = defaultdict(list)  # block -> [(entry, pair ids)] in file order
        for idx in fine:
            a, s = self.rentries[idx][:2]
            ids = pair_id[a, s]
            if ids.ndim == 0:
                if last_base[a, s] < idx:
                    todo[int(ids) // block].append((idx, int(ids)))
                continue
            ids = ids[(last_base[a, s] < idx) & (ids >= 0)]  # increasing
            cut = np.flatnonzero(np.diff(ids // block)) + 1
            for part in np.split(ids, cut) if ids.size else ():
                todo[int(part[0]) // block].append((idx, part))
        for b, items in todo.items():
            pb, sb = pa[b * block:(b + 1) * block], ps[b * block:(b + 1) * block]
            succ = ns[pb, sb]  # [P, K]
            values = np.repeat(base[pb, sb], K * O).reshape(pb.size, K, O)
            for idx, rows in items:
                _, _, s2, o, v = self.rentries[idx]
                rows = rows - b * block
                if s2 == "matrix":  # v[s', o]
                    values[rows] = v[succ[rows]]
                    continue
                sub = values[rows]
                ksel = np.ones(succ[rows].shape, bool) if isinstance(s2, slice) else succ[rows] == s2
                if o == "row":
                    sub[ksel] = v
                else:
                    sub[ksel, o] = v
                values[rows] = sub
            weights = npb[pb, sb][..., None] * self.obs[pb[:, None], succ]  # [P, K, O]
            reward[pb, sb] = (weights * values).sum((1, 2))
        return reward


def read_cassandra(data: bytes, path: str = "<string>", *, tolerance: float = DEFAULT_TOLERANCE,
                   progress: Optional[Callable[[float], None]] = None) -> TabularPOMDP:
    """Parses the bytes of a Cassandra ``.pomdp`` file (see the module docstring).

    Raises:
      PomdpFormatError: naming file, line and column, for any malformed input.
    """
    if _looks_utf16(data):
        raise PomdpFormatError("the file looks UTF-16 (or UTF-32) encoded: save it as ASCII or UTF-8",
                               path, 1, 1)
    if data[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte order mark
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # non-ASCII is fine in comments; tokens are checked
    if "\r" in text:  # CRLF and old Mac line endings
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    bad = _BINARY.search(text)
    if bad is not None:  # control characters (binary junk) are refused anywhere outside comments
        bad = _BINARY.search(_COMMENT.sub(lambda m: " " * len(m.group()), text))
        if bad is not None:
            raise PomdpFormatError(
                f"unexpected binary byte 0x{ord(bad.group()):02x}: this does not look like a text .pomdp file",
                path, *_where(text, bad.start()))
    if progress is not None:
        progress(0.0)
    collect = gc.isenabled()
    gc.disable()  # the parser makes millions of small objects and no cycles
    try:
        model = _Parser(text, path, tolerance, progress).parse()
    finally:
        if collect:
            gc.enable()
    if progress is not None:
        progress(1.0)
    return model


# ------------------------------------------------------------------ writing
def _fmt(x) -> str:
    s = str(x)  # NumPy's shortest repr that round-trips in the array's dtype
    return s


def _name_list(names, count: int) -> tuple[str, bool]:
    if names is not None and all(_valid_name(n) and re.fullmatch(r"[^\s:#*]+", n) for n in names):
        return " ".join(names), True
    return str(count), False


def write_cassandra(model: TabularPOMDP) -> str:
    """The ``.pomdp`` text of a model; reading it back gives the same model exactly.

    States, actions and observations are written by name when the model has
    valid names (by count otherwise); transitions and observations as single
    entries for each positive probability; rewards as ``R: a : s : * : * v``.
    """
    ns = np.asarray(model.next_state)
    npb = np.asarray(model.next_prob)
    obs = np.asarray(model.obs_prob)
    rew = np.asarray(model.reward)
    b0 = np.asarray(model.initial_belief)
    A, S, K = ns.shape
    O = obs.shape[2]
    snames, s_named = _name_list(model.state_names, S)
    anames, a_named = _name_list(model.action_names, A)
    onames, o_named = _name_list(model.observation_names, O)
    sn = list(model.state_names) if s_named else [str(i) for i in range(S)]
    an = list(model.action_names) if a_named else [str(i) for i in range(A)]
    on = list(model.observation_names) if o_named else [str(i) for i in range(O)]
    out = ["# written by jaxpomdp", f"discount: {_fmt(np.asarray(model.discount))}", "values: reward",
           f"states: {snames}", f"actions: {anames}", f"observations: {onames}",
           "start: " + " ".join(_fmt(p) for p in b0), ""]
    for a in range(A):
        for s in range(S):
            for k in range(K):
                p = npb[a, s, k]
                if p > 0:
                    out.append(f"T: {an[a]} : {sn[s]} : {sn[ns[a, s, k]]} {_fmt(p)}")
    out.append("")
    for a, s, o in zip(*np.nonzero(obs > 0)):
        out.append(f"O: {an[a]} : {sn[s]} : {on[o]} {_fmt(obs[a, s, o])}")
    out.append("")
    for a, s in zip(*np.nonzero(rew)):
        out.append(f"R: {an[a]} : {sn[s]} : * : * {_fmt(rew[a, s])}")
    out.append("")
    return "\n".join(out)
