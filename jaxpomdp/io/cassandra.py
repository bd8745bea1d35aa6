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
and ``T:listen`` are fine. ``reset`` (a pomdp-solve extension) makes the row the
start distribution. Entries left unset are 0, so every transition and
observation row must be given; rows must sum to 1 within ``tolerance``.

Rewards are reduced to the expected immediate reward
``R(s, a) = sum_{s', o} T(s'|s, a) Z(o|a, s') R(a, s, s', o)``.
Transitions are kept sparse while reading, so a RockSample-sized file (tens of
thousands of states) never needs a dense ``|S| x |S|`` array.

Names must not be one of the format's keywords (``T``, ``O``, ``R``, ``discount``,
``values``, ``states``, ``actions``, ``observations``, ``start``, ``include``,
``exclude``, ``uniform``, ``identity``, ``reset``) nor look like numbers.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional

import numpy as np

from jaxpomdp.errors import InvalidModelError, PomdpFormatError
from jaxpomdp.model import DEFAULT_TOLERANCE, TabularPOMDP, validate

__all__ = ["read_cassandra", "write_cassandra", "MAX_MODEL_BYTES"]

#: Models whose arrays would need more than this many bytes are refused up front.
MAX_MODEL_BYTES = 4 * 2 ** 30

_TOKEN = re.compile(r"#[^\n]*|:|[^\s:#]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_COUNT = re.compile(r"\d+\Z")
_PREAMBLE = ("discount", "values", "states", "actions", "observations", "start")
_ENTRY = ("T", "O", "R")
_KEYWORDS = frozenset(_PREAMBLE + _ENTRY + ("include", "exclude", "uniform", "identity", "reset"))
_SECTION = frozenset(_PREAMBLE + _ENTRY)  # tokens that end a list of names
_MAX_COUNT = 2 ** 31 - 1

_UNIFORM = "uniform"  # sentinel rows
_RESET = "reset"


def _valid_name(tok: str) -> bool:
    return (tok not in _KEYWORDS and tok != "*" and _NUMBER.match(tok) is None
            and tok.isprintable())


class _Parser:
    """A recursive-descent parser over whitespace/colon-separated tokens."""

    def __init__(self, text: str, path: str, tolerance: float,
                 progress: Optional[Callable[[float], None]]):
        self.text = text
        self.path = path
        self.tol = tolerance
        self.progress = progress
        # token texts only (fast); a token's offset is recomputed when needed
        self.toks = [t for t in _TOKEN.findall(text) if t[0] != "#"]
        self.toks.append("")  # end-of-file sentinel
        self._offsets: Optional[list[int]] = None
        self.i = 0

    # ------------------------------------------------------------ positions
    def offset(self, tok: int) -> int:
        """Character offset of token ``tok`` (computed once, on first need)."""
        if self._offsets is None:
            self._offsets = [m.start() for m in _TOKEN.finditer(self.text) if m.group()[0] != "#"]
            self._offsets.append(len(self.text))
        return self._offsets[tok]

    def where(self, offset: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, offset) + 1
        return line, offset - (self.text.rfind("\n", 0, offset) + 1) + 1

    def error(self, reason: str, tok: Optional[int] = None, offset: Optional[int] = None):
        if offset is None:
            offset = self.offset(self.i if tok is None else tok)
        line, col = self.where(offset)
        return PomdpFormatError(reason, self.path, line, col)

    def found(self, i: Optional[int] = None) -> str:
        t = self.toks[self.i if i is None else i]
        if not t:
            return "the end of the file"
        if len(t) > 40:
            t = t[:37] + "..."
        return repr(t)

    # --------------------------------------------------------------- tokens
    def peek(self) -> str:
        return self.toks[self.i]

    def take(self) -> str:
        t = self.toks[self.i]
        if t:
            self.i += 1
        return t

    def expect_colon(self, after: str):
        if self.peek() != ":":
            raise self.error(f"expected ':' after {after}, found {self.found()}")
        self.i += 1

    def number(self, what: str) -> float:
        t = self.peek()
        if not _NUMBER.match(t):
            raise self.error(f"expected {what}, found {self.found()}")
        v = float(t)
        if not math.isfinite(v) or abs(v) > 1e300:
            raise self.error(f"number {self.found()} is out of range")
        self.i += 1
        return v

    def numbers(self, count: int, what: str, *, probability: bool) -> np.ndarray:
        """Reads a block of exactly ``count`` numbers."""
        start = self.i
        out = []
        while _NUMBER.match(self.peek()):
            out.append(self.number(what))
        if len(out) != count:
            if len(out) > count:
                raise self.error(
                    f"too many numbers: expected {count} ({what}), found {len(out)}", tok=start + count)
            raise self.error(f"expected {count} numbers ({what}), found {len(out)} and then {self.found()}")
        arr = np.asarray(out, dtype=np.float64)
        if probability:
            bad = np.flatnonzero((arr < 0) | (arr > 1))
            if bad.size:
                raise self.error(f"expected a probability in [0, 1], found {self.found(start + bad[0])}",
                                 tok=start + bad[0])
        return arr

    def probability(self) -> float:
        start = self.i
        v = self.number("a probability")
        if not 0.0 <= v <= 1.0:
            raise self.error(f"expected a probability in [0, 1], found {self.found(start)}", tok=start)
        return v

    # ------------------------------------------------------------ preamble
    def parse(self) -> TabularPOMDP:
        if self.peek() == "":
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
            self.discount = self.number("the discount factor")
            if not 0.0 <= self.discount <= 1.0:
                raise self.error(f"expected a discount factor in [0, 1], found {self.found(start)}", tok=start)
        elif key == "values":
            t = self.peek()
            if t not in ("reward", "cost"):
                raise self.error(f"expected 'reward' or 'cost' after 'values:', found {self.found()}")
            self.cost = t == "cost"
            self.i += 1
        else:
            self.declare(key[:-1])

    def declare(self, kind: str):
        """``states:`` / ``actions:`` / ``observations:`` as a count or names."""
        t = self.peek()
        start = self.i
        if _COUNT.match(t):
            n = int(t) if len(t) <= 12 else _MAX_COUNT + 1
            if n < 1 or n > _MAX_COUNT:
                raise self.error(f"expected a number of {kind}s between 1 and {_MAX_COUNT}, found {self.found()}")
            self.i += 1
            if self.peek() not in _SECTION and self.peek() != "":
                raise self.error(f"expected the next section after '{kind}s: {t}', found {self.found()} "
                                 f"(give either a count or a list of names)")
            names = None
        else:
            names = []
            while self.peek() not in _SECTION and self.peek() != "":
                tok = self.peek()
                if not _valid_name(tok):
                    why = ("a keyword" if tok in _KEYWORDS else "a number" if _NUMBER.match(tok)
                           else "not a valid name")
                    raise self.error(f"expected a {kind} name, found {self.found()} ({why})")
                names.append(tok)
                self.i += 1
            if not names:
                raise self.error(f"expected a number of {kind}s or a list of {kind} names, found {self.found()}")
            n = len(names)
            seen: dict[str, int] = {}
            for j, nm in enumerate(names):
                if nm in seen:
                    raise self.error(f"duplicate {kind} name {nm!r}", tok=start + j)
                seen[nm] = j
            self.index[kind] = seen
        self.names[kind] = names
        self.sizes[kind] = n
        self.index.setdefault(kind, {})

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
            chosen = []
            while self.peek() not in _SECTION and self.peek() != "":
                chosen.append(self.ref("state"))
            if not chosen:
                raise self.error(f"expected a list of states after 'start {mode}:', found {self.found()}")
            mask = np.zeros(S, bool)
            for c in chosen:
                mask[c] = True
            if mode == "exclude":
                mask = ~mask
            if not mask.any():
                raise self.error("'start exclude:' excludes every state", tok=first)
            self.start_spec = (mask / mask.sum(), key_tok)
            return
        t = self.peek()
        if t == "uniform":
            self.i += 1
            self.start_spec = (np.full(S, 1.0 / S), key_tok)
        elif _NUMBER.match(t) and not (S > 1 and _COUNT.match(t) and not _NUMBER.match(self.toks[self.i + 1])):
            self.start_spec = (self.numbers(S, "the start distribution over the states", probability=True),
                               key_tok)
        else:
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
            return slice(None)
        n = self.sizes[kind]
        if _COUNT.match(t):
            v = int(t) if len(t) <= 12 else n
            if v >= n:
                raise self.error(f"{kind} index {t} is out of range (there are {n} {kind}s: 0..{n - 1})")
            self.i += 1
            return v
        if not t or t in _KEYWORDS or t == ":":
            raise self.error(f"expected a {kind} (name, index or '*'), found {self.found()}")
        known = self.names[kind]
        hint = (f"known {kind}s: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''}"
                if known else f"{kind}s are numbered 0..{n - 1}")
        raise self.error(f"unknown {kind} {self.found()} ({hint})")

    # ---------------------------------------------------------------- body
    def allocate(self):
        A, S, O = self.sizes["action"], self.sizes["state"], self.sizes["observation"]
        need = A * S * O * 8 + A * S * 8 * 2
        if need > MAX_MODEL_BYTES:
            raise self.error(
                f"model too large: {S} states x {A} actions x {O} observations needs about "
                f"{need / 2 ** 30:.1f} GiB for the observation and reward arrays alone "
                f"(limit {MAX_MODEL_BYTES / 2 ** 30:.0f} GiB); give a large model as a simulator "
                f"(jaxpomdp.GenerativePOMDP) instead", tok=self.decl_tok["states"])
        self.trows = [[None] * S for _ in range(A)]
        self.tloc = np.full((A, S), -1, np.int64)
        self.obs = np.zeros((A, S, O))
        self.oloc = np.full((A, S), -1, np.int64)
        self.rentries: list[tuple] = []

    def body(self):
        count = 0
        total = len(self.toks)
        while True:
            t = self.peek()
            if t == "":
                break
            if t not in _ENTRY:
                if t in _PREAMBLE:
                    raise self.error(f"'{t}:' must come before the first T:, O: or R: entry")
                raise self.error(f"expected an entry 'T:', 'O:' or 'R:', found {self.found()}")
            stmt = self.i
            self.i += 1
            self.expect_colon(f"'{t}'")
            if t == "T":
                self.t_entry(stmt)
            elif t == "O":
                self.o_entry(stmt)
            else:
                self.r_entry(stmt)
            count += 1
            if self.progress is not None and count % 50000 == 0:
                self.progress(self.i / total)

    def _row_dict(self, a: int, s: int) -> dict:
        row = self.trows[a][s]
        if row is None or isinstance(row, str):
            row = self._materialize(row, a, s)
            self.trows[a][s] = row
        return row

    def _materialize(self, row, a, s) -> dict:
        S = self.sizes["state"]
        if row is None:
            return {}
        if row == _UNIFORM:
            return dict.fromkeys(range(S), 1.0 / S)
        return {j: p for j, p in enumerate(self.start()) if p > 0}  # reset

    def t_entry(self, stmt: int):
        S = self.sizes["state"]
        a = self.ref("action")
        acts = range(self.sizes["action"])[a] if isinstance(a, slice) else (a,)
        off = stmt
        if self.peek() != ":":  # T: a <matrix | uniform | identity>
            kw = self.peek()
            if kw in ("uniform", "identity"):
                self.i += 1
                for ai in acts:
                    self.trows[ai] = ([_UNIFORM] * S if kw == "uniform"
                                      else [{s: 1.0} for s in range(S)])
            else:
                m = self.numbers(S * S, f"a {S}x{S} transition matrix, 'uniform' or 'identity'",
                                 probability=True).reshape(S, S)
                rows = [{int(j): float(m[s, j]) for j in np.flatnonzero(m[s])} for s in range(S)]
                for ai in acts:
                    self.trows[ai] = [dict(r) for r in rows]
            self.tloc[list(acts)] = off
            return
        self.i += 1
        s = self.ref("state")
        states = range(S)[s] if isinstance(s, slice) else (s,)
        if self.peek() != ":":  # T: a : s <row | uniform | reset>
            kw = self.peek()
            if kw in ("uniform", "reset"):
                self.i += 1
                row = _UNIFORM if kw == "uniform" else _RESET
                for ai in acts:
                    for si in states:
                        self.trows[ai][si] = row
            else:
                r = self.numbers(S, "a row of transition probabilities over the states, 'uniform' or 'reset'",
                                 probability=True)
                row = {int(j): float(r[j]) for j in np.flatnonzero(r)}
                for ai in acts:
                    for si in states:
                        self.trows[ai][si] = dict(row)
        else:
            self.i += 1
            s2 = self.ref("state")
            p = self.probability()
            targets = range(S)[s2] if isinstance(s2, slice) else (s2,)
            for ai in acts:
                for si in states:
                    row = self._row_dict(ai, si)
                    for sj in targets:
                        row[sj] = p
        self.tloc[a, s] = off

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
        return self.start_spec[0] if self.start_spec is not None else np.full(S, 1.0 / S)

    def end_error(self, reason: str):
        return self.error(reason, offset=len(self.text.rstrip()))

    def loc_error(self, reason: str, tok: int):
        """An error located at the statement (token index) that last set a row."""
        return self.error(reason, tok=int(tok)) if tok >= 0 else self.end_error(reason)

    def build(self) -> TabularPOMDP:
        A, S, O = self.sizes["action"], self.sizes["state"], self.sizes["observation"]
        an = self.names["action"] or [str(i) for i in range(A)]
        sn = self.names["state"] or [str(i) for i in range(S)]
        b0 = self.start()
        if abs(b0.sum() - 1.0) > self.tol:
            raise self.error(f"the start distribution sums to {b0.sum():.10g} (expected 1 ± {self.tol:g})",
                             tok=self.start_spec[1])
        # transitions: sparse rows -> padded [A, S, K]
        lengths = np.zeros((A, S), np.int64)
        for ai in range(A):
            rows = self.trows[ai]
            for si in range(S):
                row = rows[si]
                if row is None:
                    raise self.end_error(
                        f"no transition probabilities given for action {an[ai]!r} in state {sn[si]!r} "
                        f"(every T row must be specified)")
                if isinstance(row, str):
                    row = rows[si] = self._materialize(row, ai, si)
                lengths[ai, si] = len(row)
        K = max(int(lengths.max()), 1)
        if A * S * K * 12 > MAX_MODEL_BYTES:
            raise self.end_error(f"model too large: {A * S * K * 12 / 2 ** 30:.1f} GiB of transitions")
        ns = np.zeros((A, S, K), np.int64)
        npb = np.zeros((A, S, K))
        for ai in range(A):
            for si, row in enumerate(self.trows[ai]):
                n = len(row)
                if n:
                    ns[ai, si, :n] = list(row.keys())
                    npb[ai, si, :n] = list(row.values())
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
            what = ("no observation probabilities given" if self.oloc[ai, si] < 0 else
                    f"observation probabilities sum to {osums[ai, si]:.10g} (expected 1 ± {self.tol:g})")
            raise self.loc_error(f"{what} for action {an[ai]!r} arriving in state {sn[si]!r}",
                                 self.oloc[ai, si])
        reward = self.expected_reward(ns, npb)
        if self.cost:
            reward = -reward
        try:
            model = TabularPOMDP.create(
                ns, npb, self.obs, reward, b0, self.discount,
                state_names=self.names["state"], action_names=self.names["action"],
                observation_names=self.names["observation"])
            return validate(model, tolerance=self.tol)
        except InvalidModelError as e:  # pragma: no cover - the checks above come first
            raise self.end_error(str(e)) from None

    def expected_reward(self, ns: np.ndarray, npb: np.ndarray) -> np.ndarray:
        """Reduces the R entries (in file order, later overriding) to R(s, a).

        Entries with ``s' = *`` and ``o = *`` set a per-(a, s) base value. Other
        entries matter only at the (a, s) pairs they touch after that pair's last
        base entry; only those pairs are expanded over (successor, observation).
        """
        A, S, K = ns.shape
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
        succ = ns[pa, ps]  # [P, K]
        values = np.broadcast_to(base[pa, ps][:, None, None], (pa.size, K, self.obs.shape[2])).copy()
        for idx in fine:
            a, s, s2, o, v = self.rentries[idx]
            ids = pair_id[a, s]
            live = last_base[a, s] < idx
            rows = np.unique(np.asarray(ids)[np.asarray(live) & (np.asarray(ids) >= 0)])
            if rows.size == 0:
                continue
            if s2 == "matrix":  # v[s', o]
                values[rows] = v[succ[rows]]
                continue
            kmask = (np.ones((rows.size, K), bool) if isinstance(s2, slice)
                     else succ[rows] == s2)[..., None]
            if o == "row":
                new = np.broadcast_to(v, values[rows].shape)
            else:
                new = np.full(values[rows].shape, v)
                omask = np.zeros(values.shape[2], bool)
                omask[o] = True
                kmask = kmask & omask
            values[rows] = np.where(kmask, new, values[rows])
        pa_b = pa[:, None]
        weights = npb[pa, ps][..., None] * self.obs[pa_b, succ]  # [P, K, O]
        reward[pa, ps] = (weights * values).sum((1, 2))
        return reward


def read_cassandra(data: bytes, path: str = "<string>", *, tolerance: float = DEFAULT_TOLERANCE,
                   progress: Optional[Callable[[float], None]] = None) -> TabularPOMDP:
    """Parses the bytes of a Cassandra ``.pomdp`` file (see the module docstring).

    Raises:
      PomdpFormatError: naming file, line and column, for any malformed input.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # non-ASCII is fine in comments; tokens are checked
    bad = re.search(r"[^\t\n\r\f\v\x20-\x7e\x80-\U0010ffff]", text)
    if bad is not None:
        # control characters (binary junk) are refused anywhere outside comments
        comment_free = _TOKEN.sub(lambda m: " " * len(m.group()) if m.group()[0] == "#" else m.group(), text)
        bad = re.search(r"[^\t\n\r\f\v\x20-\x7e\x80-\U0010ffff]", comment_free)
        if bad is not None:
            p = _Parser("", path, tolerance, None)
            p.text = text
            line, col = p.where(bad.start())
            raise PomdpFormatError(
                f"unexpected binary byte 0x{ord(bad.group()):02x}: this does not look like a text .pomdp file",
                path, line, col)
    if progress is not None:
        progress(0.0)
    parser = _Parser(text, path, tolerance, progress)
    model = parser.parse()
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
