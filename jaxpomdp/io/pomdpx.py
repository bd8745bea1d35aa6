"""Reader for APPL/SARSOP ``.pomdpx`` files (factored XML), flattened to a TabularPOMDP.

A POMDPX file declares state variables (each with a previous-slice name
``vnamePrev`` and a current-slice name ``vnameCurr``), observation, action and
reward variables, and gives the model as conditional probability tables
(``<CondProb>``) and reward functions (``<Func>``) over those variables:

* ``<InitialStateBelief>``: one CondProb per state variable (``Var`` its previous
  name; parents: other previous-slice state variables, or ``null``);
* ``<StateTransitionFunction>``: one CondProb per state variable (``Var`` its
  current name; parents: action variables and previous-slice state variables);
* ``<ObsFunction>``: one CondProb per observation variable (parents: action
  variables and current-slice state variables); an MDP, with no observation
  variables, may leave it out;
* ``<RewardFunction>``: any number of Funcs (``Var`` a reward variable; parents:
  action variables, previous- and current-slice state variables). The reward is
  the SUM of all Funcs; a Func that depends on current-slice variables is reduced
  to the expected reward ``R(s, a) = sum_s' T(s' | s, a) f(a, s, s')``.

Tables (``<Parameter type="TBL">``) are lists of ``<Entry>``: an ``<Instance>``
with one token per parent (in ``<Parent>`` order) and then, for a CondProb, one
for ``Var``; a token is a value name, ``*`` (every value; the numbers are
repeated) or ``-`` (every value, enumerated: the table lists one number per
combination of the ``-`` positions, the last ``-`` varying fastest). A
``<ProbTable>`` may also be ``identity`` (exactly two ``-``, the last one ``Var``,
both of the same size) or ``uniform`` (``1/|Var|`` everywhere the instance
covers). Later entries override earlier ones; cells no entry covers are 0. Every
row of a CondProb must sum to 1 (within ``tolerance``). Values are named by
``<ValueEnum>`` or, for ``<NumValues>n</NumValues>``, APPL's names ``s0..s{n-1}``
(state variables), ``o0..`` (observation variables) and ``a0..`` (action
variables).

Flattening (the layout of the returned model):

* **State order.** The flat state index is mixed-radix over the state variables
  in declaration order, the FIRST declared variable MOST significant: with state
  variables ``x`` (size ``n_x``) then ``y`` (size ``n_y``), state ``(x=i, y=j)``
  is ``i * n_y + j``. Actions likewise over the action variables, in declaration
  order.
* **Observations** are mixed-radix over the observation variables in declaration
  order, followed by the fully observed state variables (``fullyObs="true"``) in
  declaration order: such a variable's current value is observed exactly, so
  ``Z'(o, x | a, s') = Z(o | a, s') * 1[x = value of that variable in s']``.
* **Names.** With one variable the flat names are its value names; with several,
  the value names joined by ``_`` (``"left_open"``), or ``None`` names when
  joining makes duplicates.
* ``T`` is built sparsely: per state variable, the at most ``K_i`` values with
  positive probability in any row of its table; a flat ``(a, s)`` has at most
  ``K = prod_i K_i`` successors (the Kronecker product of those per-variable
  lists), so no dense ``S x S`` array is ever formed.

Not supported: decision-diagram parameters (``type="DD"``); observation variables
or intra-slice (current-to-current) parents in transitions; observation variables
as reward parents. Each table is materialised densely (``parents x Var``). A
file whose flattened model, or whose tables, would need more memory than the
limit is refused up front with the estimated size, at the element that says so
(``<Variable>`` for the sizes, the table, ``<StateTransitionFunction>`` for the
successors): the limit is the environment variable ``JAXPOMDP_MAX_MODEL_BYTES``
when set (bytes: ``8000000000``, ``8e9``, ``8G``), else the smaller of
:data:`MAX_BYTES` and the memory available (see :mod:`jaxpomdp.io.limits`).
DTDs and entity declarations are refused (no entity-expansion bombs).

Every problem with the input raises :class:`~jaxpomdp.PomdpFormatError` naming
the file, the line and the column (1-based) and what was expected there.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from typing import Optional
from xml.parsers import expat

import numpy as np

from jaxpomdp.errors import InvalidModelError, PomdpFormatError
from jaxpomdp.io.limits import refusal
from jaxpomdp.model import DEFAULT_TOLERANCE, TabularPOMDP, float_dtype, too_large, validate

__all__ = ["read_pomdpx", "MAX_BYTES"]

#: Refuse files whose flattened model, or tables, need more memory than this (or than
#: the memory available), unless ``JAXPOMDP_MAX_MODEL_BYTES`` sets the limit.
MAX_BYTES = 4 * 2 ** 30
#: The largest ``<NumValues>`` accepted for one variable.
MAX_VALUES = 2 ** 31 - 1

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TOKEN = re.compile(r"\S+")
_PREFIX = {"state": "s", "obs": "o", "action": "a"}
_ROLE_WORDS = {"prev": "a previous-slice state variable", "curr": "a current-slice state variable",
               "obs": "an observation variable", "action": "an action variable",
               "reward": "a reward variable"}


# ------------------------------------------------------------------------ XML tree
class _Node:
    """An XML element with positions: start ``(line, col)``, ``end`` (of its end tag)
    and its character data in chunks, each with its own start position."""

    __slots__ = ("tag", "attrs", "line", "col", "end", "children", "starts", "chunks", "_text")

    def __init__(self, tag: str, attrs: dict, line: int, col: int):
        self.tag, self.attrs, self.line, self.col = tag, attrs, line, col
        self.end = (line, col)
        self.children: list[_Node] = []
        self.starts: list[int] = []                   # offset of each chunk in the text
        self.chunks: list[tuple[int, int, str]] = []  # (line, col, text)
        self._text: Optional[str] = None

    def add_text(self, text: str, line: int, col: int) -> None:
        self.starts.append(self.starts[-1] + len(self.chunks[-1][2]) if self.chunks else 0)
        self.chunks.append((line, col, text))

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "".join(c[2] for c in self.chunks)
        return self._text

    def pos(self, offset: int = 0) -> tuple[int, int]:
        """``(line, col)`` of the character at ``offset`` in :attr:`text`."""
        if not self.chunks:
            return self.line, self.col
        i = max(bisect.bisect_right(self.starts, offset) - 1, 0)
        line, col, chunk = self.chunks[i]
        k = offset - self.starts[i]
        nl = chunk.rfind("\n", 0, k)
        return (line, col + k) if nl < 0 else (line + chunk.count("\n", 0, k), k - nl)

    def token_pos(self, index: int) -> tuple[int, int]:
        """``(line, col)`` of the ``index``-th whitespace-separated token of the text."""
        m = next(itertools.islice(_TOKEN.finditer(self.text), index, None))
        return self.pos(m.start())


def _parse_xml(data: bytes, path: str) -> _Node:
    """Parses ``data`` with expat into a tree of :class:`_Node` (no DTDs, no entities)."""
    if not data.strip():
        raise PomdpFormatError("empty file; expected a POMDPX XML document", path, 1, 1)
    parser = expat.ParserCreate()
    top: list[_Node] = []
    stack: list[_Node] = []

    def here():
        return parser.CurrentLineNumber, parser.CurrentColumnNumber + 1

    def start(tag, attrs):
        node = _Node(tag, attrs, *here())
        (stack[-1].children if stack else top).append(node)
        stack.append(node)

    def end(tag):
        stack.pop().end = here()

    def chars(text):
        if stack:
            stack[-1].add_text(text, *here())

    def refuse(*_):
        raise PomdpFormatError("DTDs and entity declarations are not allowed in a POMDPX file",
                               path, *here())

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = chars
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except PomdpFormatError:
        raise
    except expat.ExpatError as e:
        raise PomdpFormatError(f"malformed XML: {expat.ErrorString(e.code)}; expected a POMDPX "
                               "XML document", path, e.lineno, e.offset + 1) from None
    except (LookupError, ValueError) as e:  # the XML declaration names an unusable encoding
        raise PomdpFormatError(f"unsupported encoding in the XML declaration ({e}); expected "
                               "UTF-8, UTF-16, ISO-8859-1 or US-ASCII", path, *here()) from None
    return top[0]


# ----------------------------------------------------------------------- helpers
def _size_text(n: int) -> str:
    """An integer for a message, without overflowing floats."""
    return str(n) if n < 10 ** 15 else f"about 10^{len(str(n)) - 1}"


def _flat_names(value_lists: list) -> Optional[list]:
    """Names of a mixed-radix product (first list most significant), or None."""
    if len(value_lists) == 1:
        return list(value_lists[0])
    if not value_lists:
        return None
    names = ["_".join(combo) for combo in itertools.product(*value_lists)]
    return names if len(set(names)) == len(names) else None


class _Var:
    """A declared variable. ``kind`` is state/obs/action/reward; ``name`` is the
    previous-slice name of a state variable, ``curr`` its current-slice name;
    ``stride`` its place value in the flat state (or action) index."""

    def __init__(self, kind: str, name: str, node: _Node):
        self.kind, self.name, self.node = kind, name, node
        self.curr = ""
        self.fully_observed = False
        self.size = 0
        self.enum: Optional[dict] = None   # ValueEnum: name -> index; None for NumValues
        self.values: list = []
        self.stride = 1

    def lookup(self, token: str) -> Optional[int]:
        if self.enum is not None:
            return self.enum.get(token)
        digits = token[1:]
        if (token[:1] == _PREFIX[self.kind] and len(digits) <= 10 and digits.isascii() and digits.isdigit()
                and (digits == "0" or digits[0] != "0") and int(digits) < self.size):
            return int(digits)
        return None


class _Table:
    """A parsed CondProb or Func: ``values`` has axes ``parents`` (+ ``var`` for a CondProb)."""

    def __init__(self, node, axis, parents, values):
        self.node, self.axis, self.var, self.parents, self.values = node, axis, axis[0], parents, values


def _axis_name(axis) -> str:
    var, role = axis
    return var.curr if role == "curr" else var.name


# ------------------------------------------------------------------------ reader
class _Reader:
    def __init__(self, path: str, tolerance: float):
        self.path, self.tolerance = path, tolerance
        self.dtype = float_dtype()  # the model's: larger numbers would become infinite
        self.names: dict[str, tuple[_Var, str]] = {}   # variable name -> (var, role)
        self.vars: dict[str, list[_Var]] = {"state": [], "obs": [], "action": [], "reward": []}
        self.table_bytes = 0  # held by the tables read so far

    def check_memory(self, need: int, what: str, where, detail: str = "") -> None:
        """Refuses (at ``where``) what would need ``need`` bytes, more than the limit."""
        reason = refusal(need, what, MAX_BYTES, detail)
        if reason is not None:
            self.fail(reason, where)

    def fail(self, reason: str, where=None):
        """Raises PomdpFormatError at ``where``: a node (its start), ``(line, col)`` or None."""
        if isinstance(where, _Node):
            where = (where.line, where.col)
        raise PomdpFormatError(reason, self.path, *(where or (None, None)))

    def children(self, node: _Node, spec: dict) -> dict:
        """Children of ``node`` by tag; ``spec`` maps each allowed tag to ``(min, max)``
        occurrences (max None: unbounded). Anything else is an error."""
        found = {tag: [] for tag in spec}
        for child in node.children:
            if child.tag not in spec:
                self.fail(f"unexpected element <{child.tag}> in <{node.tag}>; expected "
                          + (" or ".join(f"<{t}>" for t in spec) or "no child elements"), child)
            found[child.tag].append(child)
        for tag, (lo, hi) in spec.items():
            got = found[tag]
            if hi is not None and len(got) > hi:
                self.fail(f"duplicate <{tag}> in <{node.tag}> (the first is at line {got[0].line})",
                          got[hi])
            if len(got) < lo:
                self.fail(f"missing <{tag}> in <{node.tag}> (opened at line {node.line})", node.end)
        return found

    def attr(self, node: _Node, name: str) -> str:
        value = node.attrs.get(name)
        if value is None:
            self.fail(f"<{node.tag}> needs a {name}=\"...\" attribute", node)
        return value

    def numbers(self, node: _Node, expected: int, prob: bool, why: str = "") -> np.ndarray:
        """The numbers of a text, checked: count, syntax, finite, in [0, 1] if ``prob``."""
        text = node.text
        words = text.split()
        try:  # fast path; NumPy (like float()) would also take "1_0" and non-ASCII digits
            vals = np.array(words, dtype=np.float64) if text.isascii() and "_" not in text else None
        except ValueError:
            vals = None
        if vals is None:
            bad = next((i for i, w in enumerate(words) if not _NUMBER.fullmatch(w)), None)
            if bad is not None:
                self.fail(f"expected a number in <{node.tag}>, found {words[bad]!r}", node.token_pos(bad))
            vals = np.array(words, dtype=np.float64)
        if len(words) != expected:
            where = node.token_pos(expected) if len(words) > expected else node
            self.fail(f"expected {expected} number(s) in <{node.tag}>{why}, found {len(words)}", where)
        bad_mask = ~np.isfinite(vals)
        if prob:
            bad_mask |= (vals < 0) | (vals > 1)
        if bad_mask.any():
            i = int(np.argmax(bad_mask))
            what = "a probability in [0, 1]" if prob else "a finite number"
            self.fail(f"expected {what}, found {words[i]!r}", node.token_pos(i))
        big = np.abs(vals) > np.finfo(self.dtype).max  # finite here, infinite in the model's dtype
        if big.any():
            i = int(np.argmax(big))
            self.fail(f"number {words[i]!r} {too_large(self.dtype)}", node.token_pos(i))
        return vals

    # ------------------------------------------------------------------ variables
    def variables(self, node: _Node) -> None:
        kinds = {"StateVar": "state", "ObsVar": "obs", "ActionVar": "action", "RewardVar": "reward"}
        self.children(node, {"StateVar": (1, None), "ObsVar": (0, None),
                             "ActionVar": (1, None), "RewardVar": (0, None)})
        for el in node.children:
            kind = kinds[el.tag]
            var = _Var(kind, self.attr(el, "vnamePrev" if kind == "state" else "vname"), el)
            self.declare(var.name, var, "prev" if kind == "state" else kind)
            if kind == "state":
                var.curr = self.attr(el, "vnameCurr")
                self.declare(var.curr, var, "curr")
                flag = el.attrs.get("fullyObs", "false").strip().lower()
                if flag not in ("true", "false"):
                    self.fail(f"fullyObs must be \"true\" or \"false\", found {flag!r}", el)
                var.fully_observed = flag == "true"
            if kind == "reward":
                self.children(el, {})
            else:
                self.domain(el, var)
            self.vars[kind].append(var)

    def declare(self, name: str, var: _Var, role: str) -> None:
        if not name or any(c.isspace() for c in name) or name in ("*", "-", "null"):
            self.fail(f"invalid variable name {name!r} in <{var.node.tag}>; expected a name "
                      "without spaces (and not *, - or null)", var.node)
        if name in self.names:
            self.fail(f"duplicate variable name {name!r} (first declared at line "
                      f"{self.names[name][0].node.line})", var.node)
        self.names[name] = (var, role)

    def domain(self, el: _Node, var: _Var) -> None:
        kids = self.children(el, {"NumValues": (0, 1), "ValueEnum": (0, 1)})
        if len(kids["NumValues"]) + len(kids["ValueEnum"]) != 1:
            self.fail(f"<{el.tag}> {var.name!r} needs exactly one of <NumValues> or <ValueEnum>", el)
        if kids["NumValues"]:
            num = kids["NumValues"][0]
            words = num.text.split()
            if words and words[0].startswith("+"):  # xs:integer allows a sign
                words[0] = words[0][1:]
            if words:  # xs:integer allows leading zeros; the length check below is of the digits that count
                words[0] = words[0].lstrip("0") or "0"
            if len(words) != 1 or len(words[0]) > 10 or not (words[0].isascii() and words[0].isdigit()) \
                    or not 1 <= int(words[0]) <= MAX_VALUES:
                self.fail(f"expected a positive integer at most {MAX_VALUES} in <NumValues>, "
                          f"found {num.text.strip()[:40]!r}", num.pos(len(num.text) - len(num.text.lstrip())))
            var.size = int(words[0])
            return
        enum = kids["ValueEnum"][0]
        var.enum = {}
        for m in _TOKEN.finditer(enum.text):
            name = m.group()
            if name in ("*", "-") or name in var.enum:
                self.fail(f"{'duplicate' if name in var.enum else 'reserved'} value name {name!r} "
                          f"in <ValueEnum> of {var.name!r}", enum.pos(m.start()))
            var.enum[name] = len(var.enum)
        if not var.enum:
            self.fail(f"empty <ValueEnum> for {var.name!r}; expected at least one value name", enum)
        var.size = len(var.enum)

    def layout(self, node: _Node) -> tuple[int, int, int]:
        """Sets strides and value names; refuses models over the memory limit. Returns (S, A, O)."""
        dims = {}
        for kind in ("state", "action"):
            stride = 1
            for var in reversed(self.vars[kind]):
                var.stride, stride = stride, stride * var.size
            dims[kind] = stride
        S, A = dims["state"], dims["action"]
        O = math.prod(v.size for v in self.vars["obs"] + self.observed())
        need = 8 * A * S * (O + 3) + 64 * (S + A + O)
        self.check_memory(need, "the flattened model would need about", node,
                          f" (S={_size_text(S)}, A={_size_text(A)}, O={_size_text(O)})")
        for var in self.vars["state"] + self.vars["obs"] + self.vars["action"]:
            var.values = (list(var.enum) if var.enum is not None
                          else [f"{_PREFIX[var.kind]}{i}" for i in range(var.size)])
        return S, A, O

    def observed(self) -> list:
        return [v for v in self.vars["state"] if v.fully_observed]

    # --------------------------------------------------------------------- tables
    def tables(self, section: _Node, tag: str, var_roles, parent_roles, each: Optional[list]):
        """Parses the CondProbs (``tag="CondProb"``) or Funcs of a section.

        ``each``: the variables that need exactly one CondProb each (None for Funcs).
        Returns ``{var: _Table}`` for CondProbs, a list of tables for Funcs.
        """
        nodes = self.children(section, {tag: (0, None)})[tag]
        tables = [self.table(n, var_roles, parent_roles, prob=each is not None) for n in nodes]
        if each is None:
            return tables
        found = {}
        for t in tables:
            if t.var in found:
                self.fail(f"second <CondProb> for {_axis_name(t.axis)!r} in <{section.tag}> (the first is at "
                          f"line {found[t.var].node.line})", t.node)
            found[t.var] = t
        for var in each:
            if var not in found:
                self.fail(f"missing <CondProb> for variable {_axis_name((var, var_roles[0]))!r} "
                          f"in <{section.tag}>",
                          section.end)
        return found

    def resolve(self, node: _Node, offset: int, name: str, roles, what: str):
        var_role = self.names.get(name)
        if var_role is None or var_role[1] not in roles:
            expected = " or ".join(_ROLE_WORDS[r] for r in roles)
            found = "unknown variable" if var_role is None else f"{_ROLE_WORDS[var_role[1]]}"
            self.fail(f"{what} {name!r} is {'an ' if var_role is None else ''}{found}; expected "
                      f"{expected}", node.pos(offset))
        return var_role

    def table(self, node: _Node, var_roles, parent_roles, prob: bool) -> _Table:
        kids = self.children(node, {"Var": (1, 1), "Parent": (0, 1), "Parameter": (1, 1)})
        var_el = kids["Var"][0]
        words = list(_TOKEN.finditer(var_el.text))
        if len(words) != 1:
            self.fail(f"expected one variable name in <Var>, found {len(words)}", var_el)
        var_axis = self.resolve(var_el, words[0].start(), words[0].group(), var_roles, "<Var>")
        parents = []
        if kids["Parent"]:
            par = kids["Parent"][0]
            words = list(_TOKEN.finditer(par.text))
            if [m.group() for m in words] != ["null"]:
                for m in words:
                    axis = self.resolve(par, m.start(), m.group(), parent_roles, "parent")
                    if axis in parents or (prob and axis == var_axis):
                        self.fail(f"variable {m.group()!r} appears twice", par.pos(m.start()))
                    parents.append(axis)
        axes = parents + [var_axis] if prob else parents
        values = self.parameter(kids["Parameter"][0], axes, prob)
        return _Table(node, var_axis, parents, values)

    def parameter(self, node: _Node, axes: list, prob: bool) -> np.ndarray:
        """Fills a table with axes ``axes`` from a ``<Parameter type="TBL">``."""
        kind = node.attrs.get("type", "TBL").strip()
        if kind != "TBL":
            self.fail(f"<Parameter type={kind!r}> is not supported; only type=\"TBL\" (tables) is", node)
        shape = [var.size for var, _ in axes]
        size = math.prod(shape)
        need = 8 * (size + size // shape[-1] if prob else size)  # the table and, for a CondProb, its rows' sources
        self.check_memory(self.table_bytes + need, f"this table has {_size_text(size)} entries: with the "
                          "tables before it, the tables would need about", node)
        self.table_bytes += need
        table = np.zeros(shape)
        source = np.full(shape[:-1] if prob else (), -1)   # CondProb: last entry per row
        entries = self.children(node, {"Entry": (0, None)})["Entry"]
        table_tag = "ProbTable" if prob else "ValueTable"
        for e, entry in enumerate(entries):
            kids = self.children(entry, {"Instance": (1, 1), table_tag: (1, 1)})
            index, dashes = self.instance(kids["Instance"][0], axes)
            values = self.entry_values(kids[table_tag][0], axes, dashes, prob)
            block = [shape[k] if k in dashes else 1 for k, i in enumerate(index) if isinstance(i, slice)]
            table[tuple(index)] = values.reshape(block)
            if prob:
                source[tuple(index[:-1])] = e
        if prob:
            self.check_rows(node, axes, table, source, entries)
        return table

    def instance(self, node: _Node, axes: list):
        """An ``<Instance>``'s index into the table (ints and slices) and its ``-`` axes."""
        words = list(_TOKEN.finditer(node.text))
        if len(words) != len(axes):
            names = " ".join(_axis_name(a) for a in axes) or "nothing"
            self.fail(f"expected {len(axes)} token(s) in <Instance> (values of: {names}), "
                      f"found {len(words)}", node.pos(words[0].start()) if words else node)
        index, dashes = [], []
        for k, (m, (var, role)) in enumerate(zip(words, axes)):
            token = m.group()
            if token in ("*", "-"):
                index.append(slice(None))
                if token == "-":
                    dashes.append(k)
                continue
            value = var.lookup(token)
            if value is None:
                shown = ", ".join(var.values[:6]) + (", ..." if var.size > 6 else "")
                self.fail(f"unknown value {token!r} of variable {_axis_name((var, role))!r}; "
                          f"expected one of {shown}, * or -", node.pos(m.start()))
            index.append(value)
        return index, dashes

    def entry_values(self, node: _Node, axes: list, dashes: list, prob: bool) -> np.ndarray:
        """The numbers of a ProbTable/ValueTable, one per combination of the ``-`` axes."""
        text = node.text.strip() if prob else ""
        keyword = text.lower() if len(text) <= 8 else ""  # any case, as APPL (which lowercases the text)
        shape = [axes[k][0].size for k in dashes]
        if keyword == "identity":
            if len(dashes) != 2 or dashes[-1] != len(axes) - 1 or shape[0] != shape[1]:
                self.fail("'identity' needs an <Instance> with exactly two '-', the last for the "
                          "variable itself, both with the same number of values; found "
                          f"{len(dashes)} '-' with sizes {shape}", node.pos(node.text.index(text)))
            return np.eye(shape[0])
        if keyword == "uniform":
            return np.full(math.prod(shape), 1.0 / axes[-1][0].size)
        why = (f" (one per combination of the '-' positions: {' x '.join(map(str, shape))})"
               if dashes else " (the <Instance> has no '-')")
        return self.numbers(node, math.prod(shape), prob, why)

    def check_rows(self, node: _Node, axes: list, table: np.ndarray, source: np.ndarray, entries):
        """Every row of a CondProb must sum to 1 within the tolerance."""
        sums = table.reshape(-1, table.shape[-1]).sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > self.tolerance)
        if not bad.size:
            return
        r = int(bad[0])
        combo = np.unravel_index(r, table.shape[:-1]) if table.ndim > 1 else ()
        given = ", ".join(f"{_axis_name(a)}={a[0].values[int(i)]}" for a, i in zip(axes, combo))
        cond = f"{_axis_name(axes[-1])}" + (f" | {given}" if given else "")
        e = int(source.reshape(-1)[r])
        self.fail(f"P({cond}) sums to {sums[r]:.10g}; expected 1 ± {self.tolerance:g}"
                  + ("" if e >= 0 else " (no <Entry> covers it)"), entries[e] if e >= 0 else node)

    # ----------------------------------------------------------------- flattening
    @staticmethod
    def row_index(axes: list, a=None, s=None, sp=None) -> np.ndarray:
        """Flat row of a table with axes ``axes`` at flat action ``a``, state ``s``
        and next state ``sp`` (broadcastable int arrays; only the ones used)."""
        flat = {"action": a, "prev": s, "curr": sp}
        idx = np.zeros((), np.int64)
        for var, role in axes:
            idx = idx * var.size + (flat[role] // var.stride) % var.size
        return idx

    def read(self, data: bytes) -> TabularPOMDP:
        root = _parse_xml(data, self.path)
        if root.tag != "pomdpx":
            self.fail(f"the root element is <{root.tag}>; expected <pomdpx>", root)
        one = (1, 1)
        sec = {k: v[0] if v else root for k, v in self.children(root, {
            "Description": (0, None), "Discount": one, "Variable": one, "InitialStateBelief": one,
            "StateTransitionFunction": one, "ObsFunction": (0, 1), "RewardFunction": one}).items()}
        disc = sec["Discount"]
        discount = float(self.numbers(disc, 1, prob=False)[0])
        if not 0.0 <= discount <= 1.0:
            self.fail(f"expected a discount in [0, 1], found {disc.text.strip()!r}", disc.token_pos(0))
        self.variables(sec["Variable"])
        S, A, O = self.layout(sec["Variable"])
        states = self.vars["state"]
        init = self.tables(sec["InitialStateBelief"], "CondProb", ("prev",), ("prev",), states)
        trans = self.tables(sec["StateTransitionFunction"], "CondProb", ("curr",), ("action", "prev"), states)
        if sec["ObsFunction"] is not root:
            obsf = self.tables(sec["ObsFunction"], "CondProb", ("obs",), ("action", "curr"), self.vars["obs"])
        elif self.vars["obs"]:  # an MDP (no observation variables) may leave it out
            self.fail(f"missing <ObsFunction> in <pomdpx> (it has observation variables: "
                      f"{', '.join(repr(v.name) for v in self.vars['obs'])})", root.end)
        else:
            obsf = {}
        funcs = self.tables(sec["RewardFunction"], "Func", ("reward",), ("action", "prev", "curr"), None)

        next_state, next_prob = self.transitions(trans, S, A, O, sec["StateTransitionFunction"])
        arrays = (next_state, next_prob, self.observations(obsf, S, A),
                  self.reward(funcs, next_state, next_prob), self.initial_belief(init, S), discount)
        names = {"state_names": _flat_names([v.values for v in states]),
                 "action_names": _flat_names([v.values for v in self.vars["action"]]),
                 "observation_names": _flat_names([v.values for v in self.vars["obs"] + self.observed()])}
        try:
            return validate(TabularPOMDP.create(*arrays, **names), tolerance=self.tolerance)
        except InvalidModelError as e:   # e.g. many rows each within the tolerance
            culprit = {"next_prob": "StateTransitionFunction", "obs_prob": "ObsFunction",
                       "reward": "RewardFunction", "initial_belief": "InitialStateBelief"}
            tag = next((t for k, t in culprit.items() if str(e).startswith(k)), "Discount")
            self.fail(f"the flattened model is invalid: {e}", sec[tag])

    def transitions(self, trans: dict, S: int, A: int, O: int, node: _Node):
        """Sparse ``T``: ``next_state`` int64[A, S, K] and ``next_prob`` float64[A, S, K].

        Per state variable, the at most ``K_i`` values with positive probability in
        any row of its table; the successors of ``(a, s)`` are their Kronecker product.
        """
        a, s = np.arange(A)[:, None], np.arange(S)[None, :]
        tops = []
        for var in self.vars["state"]:
            rows = trans[var].values.reshape(-1, var.size)
            k = max(int((rows > 0).sum(axis=1).max()), 1)
            top = np.argsort(-rows, axis=1, kind="stable")[:, :k]
            tops.append((var, top, np.take_along_axis(rows, top, axis=1)))
        K = math.prod(t[1].shape[1] for t in tops)
        need = 8 * A * S * (4 * K + O + 2)
        self.check_memory(self.table_bytes + need, "the flattened model would need about", node,
                          f" (S={S}, A={A}, O={O}, {K} successors per state and action)")
        next_state, next_prob = np.zeros((A, S, 1), np.int64), np.ones((A, S, 1))
        for var, top, prob in tops:
            r = np.broadcast_to(self.row_index(trans[var].parents, a, s), (A, S))
            next_state = (next_state[..., :, None] + top[r][..., None, :] * var.stride).reshape(A, S, -1)
            next_prob = (next_prob[..., :, None] * prob[r][..., None, :]).reshape(A, S, -1)
        return next_state, next_prob

    def observations(self, obsf: dict, S: int, A: int) -> np.ndarray:
        """Dense ``Z``: float64[A, S, O], the product of the observation variables' tables
        and then the indicators of the fully observed state variables."""
        a, s = np.arange(A)[:, None], np.arange(S)[None, :]
        obs = np.ones((A, S, 1))
        for var in self.vars["obs"] + self.observed():
            if var.kind == "obs":
                rows = obsf[var].values.reshape(-1, var.size)
                z = rows[np.broadcast_to(self.row_index(obsf[var].parents, a, sp=s), (A, S))]
            else:
                z = ((s[..., None] // var.stride) % var.size == np.arange(var.size)).astype(float)
            obs = (obs[..., :, None] * z[..., None, :]).reshape(A, S, -1)
        return obs

    def initial_belief(self, init: dict, S: int) -> np.ndarray:
        """``b0``: float64[S], the product of the initial-belief tables."""
        s = np.arange(S)
        b0 = np.ones(S)
        for var in self.vars["state"]:
            rows = init[var].values.reshape(-1, var.size)
            r = np.broadcast_to(self.row_index(init[var].parents, s=s), (S,))
            b0 *= rows[r, (s // var.stride) % var.size]
        return b0

    def reward(self, funcs: list, next_state: np.ndarray, next_prob: np.ndarray) -> np.ndarray:
        """``R``: float64[A, S], the sum of the Funcs; one that depends on current-slice
        variables contributes its expectation over ``s' ~ T(. | s, a)``."""
        A, S, _ = next_state.shape
        a, s = np.arange(A)[:, None], np.arange(S)[None, :]
        reward = np.zeros((A, S))
        with np.errstate(over="ignore", invalid="ignore"):   # overflow: refused by validate
            for f in funcs:
                vals = f.values.reshape(-1)
                if any(role == "curr" for _, role in f.parents):
                    r = self.row_index(f.parents, a[..., None], s[..., None], next_state)
                    reward += (next_prob * vals[r]).sum(axis=-1)
                else:
                    reward += vals[self.row_index(f.parents, a, s)]
        return reward


def read_pomdpx(data: bytes, path: str = "<string>", *,
                tolerance: float = DEFAULT_TOLERANCE) -> TabularPOMDP:
    """Reads an APPL ``.pomdpx`` file and flattens it (see the module docstring).

    Args:
      data: the file's bytes (any encoding expat knows; the XML declaration says which).
      path: the file's name, for error messages.
      tolerance: allowed ``|row sum - 1|`` for every CondProb row and flattened row.

    Returns:
      A :class:`~jaxpomdp.TabularPOMDP` with ``S = prod |state var|``,
      ``A = prod |action var|``, ``O = prod |obs var| * prod |fully observed var|``,
      ``reward[a, s]`` the expected immediate reward, and the flat names.

    Raises:
      PomdpFormatError: anything wrong with the input, with file, line and column.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    return _Reader(str(path), tolerance).read(bytes(data))
