"""APPL/SARSOP ``.policy`` files: a policy as alpha-vectors, in XML.

SARSOP's ``pomdpsol`` writes its policy (the lower-bound alpha-vectors) as::

    <?xml version="1.0" encoding="ISO-8859-1"?>
    <Policy version="0.1" type="value" model="Tiger.pomdp" xmlns:xsi="..." xsi:noNamespaceSchemaLocation="policyx.xsd">
    <AlphaVector vectorLength="2" numObsValue="1" numVectors="5">
    <Vector action="0" obsValue="0">-81.5975 3.01448 </Vector>
    ...
    </AlphaVector> </Policy>

* ``vectorLength`` is the number of (unobserved) states, ``numVectors`` the number
  of vectors, ``numObsValue`` the number of values of the fully observed part of a
  MOMDP model (1 for a flat model).
* Each ``<Vector action=".." obsValue="..">`` holds ``vectorLength`` numbers; a
  ``<SparseVector action=".." obsValue="..">`` holds ``<Entry>index value</Entry>``
  children instead (states not listed are 0).
* The value of a belief ``b`` (within observed value ``x``) is the largest
  ``alpha . b`` over the vectors with ``obsValue = x``; the policy takes the action
  of that vector.

:func:`read_appl_policy` validates everything (the root and its children, the
attributes, the counts, every number and index) and reports any problem as a
:class:`~jaxpomdp.PomdpFormatError` naming file, line and column; DTDs and entity
declarations are refused. :func:`write_appl_policy` writes SARSOP's layout with
numbers that read back exactly.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np

from jaxpomdp.errors import PomdpFormatError
from jaxpomdp.model import too_large

__all__ = ["read_appl_policy", "write_appl_policy", "format_appl_policy", "policy_from_appl"]

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INDEX = re.compile(r"[0-9]+")
#: The largest count or index accepted in an attribute.
_MAX_INT = 2 ** 31 - 1
#: Refuse policies whose vectors (N x vectorLength float64) would need more memory than this.
MAX_BYTES = 4 * 2 ** 30


# --------------------------------------------------------------------- writing
def _attr_text(value: str) -> str:
    if any((ord(c) < 0x20 and c not in "\t\n\r") or c in "\ufffe\uffff" for c in value):
        raise ValueError(f"model_name {value!r} contains characters XML cannot hold")
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;"))


def format_appl_policy(alphas, actions, *, model_name: str = "", obs_values=None,
                       num_obs_values: Optional[int] = None) -> str:
    """The text of a SARSOP ``.policy`` file (see :func:`write_appl_policy`)."""
    alphas = np.asarray(alphas)
    actions = np.asarray(actions)
    if alphas.ndim != 2 or actions.shape != alphas.shape[:1]:
        raise ValueError(f"expected alphas [N, S] and actions [N]; got {alphas.shape} and {actions.shape}")
    N, S = alphas.shape
    if N == 0 or S == 0:
        raise ValueError(f"a policy needs at least one vector of at least one state; got {alphas.shape}")
    if not np.issubdtype(actions.dtype, np.integer) or (actions < 0).any():
        raise ValueError("actions must be non-negative integers")
    if not np.isfinite(alphas).all():
        raise ValueError("alpha-vectors must be finite")
    obs = np.zeros(N, np.int64) if obs_values is None else np.asarray(obs_values)
    if obs.shape != (N,) or not np.issubdtype(obs.dtype, np.integer) or (obs < 0).any():
        raise ValueError(f"obs_values must be N = {N} non-negative integers")
    n_obs = int(obs.max()) + 1 if num_obs_values is None else int(num_obs_values)
    if n_obs <= int(obs.max()):
        raise ValueError(f"num_obs_values = {n_obs} but an obsValue is {int(obs.max())}")
    lines = ['<?xml version="1.0" encoding="ISO-8859-1"?>',
             f'<Policy version="0.1" type="value" model="{_attr_text(str(model_name))}" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
             'xsi:noNamespaceSchemaLocation="policyx.xsd">',
             f'<AlphaVector vectorLength="{S}" numObsValue="{n_obs}" numVectors="{N}">']
    # float64 repr: the shortest text that reads back to the same double
    for a, x, row in zip(actions.tolist(), obs.tolist(), alphas.astype(np.float64).tolist()):
        lines.append(f'<Vector action="{a}" obsValue="{x}">' + "".join(f"{v!r} " for v in row) + "</Vector>")
    lines.append("</AlphaVector> </Policy>")
    return "\n".join(lines) + "\n"


def write_appl_policy(path: str | os.PathLike, alphas, actions, *, model_name: str = "",
                      obs_values=None, num_obs_values: Optional[int] = None) -> None:
    """Writes alpha-vectors as a SARSOP ``.policy`` file, atomically.

    Args:
      path: the file.
      alphas: float[N, S] the vectors (finite; written as float64 so that they read
        back exactly).
      actions: int[N] the action of each vector.
      model_name: the ``model`` attribute (SARSOP puts the model file's name there).
      obs_values: optional int[N], each vector's value of the fully observed part
        (MOMDP policies); all 0 by default.
      num_obs_values: ``numObsValue``; by default ``max(obs_values) + 1``.

    Raises:
      ValueError: on inconsistent shapes or non-finite values.
    """
    from jaxpomdp.io import atomic_write

    text = format_appl_policy(alphas, actions, model_name=model_name, obs_values=obs_values,
                              num_obs_values=num_obs_values)
    atomic_write(path, text.encode("latin-1", errors="xmlcharrefreplace"))


# --------------------------------------------------------------------- reading
class _Reader:
    def __init__(self, path: str, dtype=None):
        self.path = path
        # the policy's dtype (the model's) when known: larger values would become infinite in it
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.max_value = np.inf if dtype is None else float(np.finfo(dtype).max)

    def fail(self, reason, where):
        if hasattr(where, "line"):
            where = (where.line, where.col)
        raise PomdpFormatError(reason, self.path, *where)

    def int_attr(self, node, name, *, required=True, minimum=0, default=None):
        value = node.attrs.get(name)
        if value is None:
            if required:
                self.fail(f'<{node.tag}> needs the attribute {name}="..." (a non-negative integer)', node)
            return default
        text = value.strip()
        if not _INDEX.fullmatch(text) or len(text.lstrip("0")) > 10 or int(text) > _MAX_INT:
            self.fail(f'expected a non-negative integer in {name}="..." of <{node.tag}>, found {value!r}', node)
        v = int(text)
        if v < minimum:
            self.fail(f'{name}="{value}" of <{node.tag}> must be at least {minimum}', node)
        return v

    def no_text(self, node):
        """Character data between child elements must be whitespace."""
        m = re.search(r"\S", node.text)
        if m:
            self.fail(f"unexpected text {node.text[m.start():m.start() + 20]!r} in <{node.tag}>; "
                      "expected only child elements", node.pos(m.start()))

    def no_children(self, node):
        if node.children:
            c = node.children[0]
            self.fail(f"unexpected element <{c.tag}> in <{node.tag}>; expected only numbers", c)

    def number(self, node, word, index):
        if not _NUMBER.fullmatch(word):
            self.fail(f"expected a number in <{node.tag}>, found {word[:40]!r}", node.token_pos(index))
        v = float(word)
        if not np.isfinite(v):
            self.fail(f"number {word[:40]!r} is out of range (alpha-vector entries must be finite)",
                      node.token_pos(index))
        if not abs(v) <= self.max_value:
            self.fail(f"number {word[:40]!r} {too_large(self.dtype)}", node.token_pos(index))
        return v

    def dense(self, node, length):
        self.no_children(node)
        words = node.text.split()
        if len(words) != length:
            where = node.token_pos(length) if len(words) > length else node.end
            self.fail(f"expected {length} numbers in <Vector> (vectorLength), found {len(words)}", where)
        try:  # fast path; float() alone would also take "1_0", "nan" and non-ASCII digits
            text = node.text
            if text.isascii() and "_" not in text and not re.search(r"[a-df-zA-DF-Z]", text):
                vals = np.array(words, dtype=np.float64)
                if np.isfinite(vals).all() and (np.abs(vals) <= self.max_value).all():  # also in the policy's dtype
                    return vals
        except ValueError:
            pass
        return np.array([self.number(node, w, i) for i, w in enumerate(words)], np.float64)

    def sparse(self, node, length):
        """The ``(indices, values)`` of a SparseVector (the row is filled in later)."""
        self.no_text(node)
        seen: dict[int, int] = {}
        values: list[float] = []
        for entry in node.children:
            if entry.tag != "Entry":
                self.fail(f"unexpected element <{entry.tag}> in <SparseVector>; expected <Entry>", entry)
            self.no_children(entry)
            words = entry.text.split()
            if len(words) != 2:
                where = entry.token_pos(2) if len(words) > 2 else entry
                self.fail(f"expected 'index value' (2 numbers) in <Entry>, found {len(words)} item(s)", where)
            if not _INDEX.fullmatch(words[0]):
                self.fail(f"expected a state index (a non-negative integer) in <Entry>, found {words[0][:40]!r}",
                          entry.token_pos(0))
            i = int(words[0]) if len(words[0].lstrip("0")) <= 12 else length
            if i >= length:
                self.fail(f"state index {words[0][:40]} is out of range (vectorLength is {length})",
                          entry.token_pos(0))
            if i in seen:
                self.fail(f"state index {i} appears twice in this <SparseVector> (first at line {seen[i]})",
                          entry.token_pos(0))
            seen[i] = entry.line
            values.append(self.number(entry, words[1], 1))
        return np.fromiter(seen, np.int64, len(seen)), np.asarray(values, np.float64)

    def read(self, data: bytes, num_states, num_actions):
        from jaxpomdp.io.pomdpx import _parse_xml

        if not data.strip():
            raise PomdpFormatError("empty file; expected an APPL policy XML document", self.path, 1, 1)
        try:
            root = _parse_xml(data, self.path)
        except PomdpFormatError as e:  # the tree builder speaks of POMDPX files
            reason = (e.reason.replace("a POMDPX XML document", "an APPL policy XML document")
                      .replace("a POMDPX file", "a policy file"))
            raise PomdpFormatError(reason, e.path, e.line, e.column) from None
        if root.tag != "Policy":
            self.fail(f"expected the root element <Policy>, found <{root.tag}>", root)
        kind = root.attrs.get("type")
        if kind is not None and kind != "value":
            self.fail(f'<Policy type="{kind}"> is not supported; expected type="value" (alpha-vectors)', root)
        self.no_text(root)
        blocks = [c for c in root.children if c.tag == "AlphaVector"]
        for c in root.children:
            if c.tag != "AlphaVector":
                self.fail(f"unexpected element <{c.tag}> in <Policy>; expected <AlphaVector>", c)
        if not blocks:
            self.fail("missing <AlphaVector> in <Policy> (opened at line %d)" % root.line, root.end)
        if len(blocks) > 1:
            self.fail(f"duplicate <AlphaVector> in <Policy> (the first is at line {blocks[0].line})", blocks[1])
        av = blocks[0]
        length = self.int_attr(av, "vectorLength", minimum=1)
        if num_states is not None and length != num_states:
            self.fail(f'vectorLength="{length}" does not match the model\'s {num_states} states', av)
        n_obs = self.int_attr(av, "numObsValue", required=False, minimum=1, default=1)
        n_vec = self.int_attr(av, "numVectors", required=False, minimum=1)
        self.no_text(av)
        if not av.children:
            self.fail("no <Vector> in <AlphaVector>; a policy needs at least one", av.end)
        rows, acts, obs = [], [], []
        for v in av.children:
            if v.tag not in ("Vector", "SparseVector"):
                self.fail(f"unexpected element <{v.tag}> in <AlphaVector>; expected <Vector> or <SparseVector>", v)
            a = self.int_attr(v, "action")
            if num_actions is not None and a >= num_actions:
                self.fail(f'action="{a}" is out of range (the model has {num_actions} actions)', v)
            x = self.int_attr(v, "obsValue")
            if x >= n_obs:
                self.fail(f'obsValue="{x}" is out of range (numObsValue is {n_obs})', v)
            rows.append(self.dense(v, length) if v.tag == "Vector" else self.sparse(v, length))
            acts.append(a)
            obs.append(x)
        if n_vec is not None and len(rows) != n_vec:
            where = av.children[n_vec] if len(rows) > n_vec else av.end
            self.fail(f'numVectors="{n_vec}" but <AlphaVector> holds {len(rows)} vector(s)', where)
        nbytes = len(rows) * length * 8
        if nbytes > MAX_BYTES:
            self.fail(f"{len(rows)} vectors of vectorLength={length} would need {nbytes / 2 ** 30:.3g} GiB "
                      f"(more than {MAX_BYTES / 2 ** 30:g} GiB)", av)
        alphas = np.zeros((len(rows), length), np.float64)
        for r, row in enumerate(rows):
            if isinstance(row, tuple):
                alphas[r, row[0]] = row[1]
            else:
                alphas[r] = row
        return alphas, np.asarray(acts, np.int32), np.asarray(obs, np.int32), n_obs


def _read(path, num_states, num_actions, dtype=None):
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return _Reader(path, dtype).read(data, num_states, num_actions)


def read_appl_policy(path: str | os.PathLike, *, num_states: Optional[int] = None,
                     num_actions: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads a SARSOP ``.policy`` file (dense ``<Vector>`` and ``<SparseVector>``).

    Args:
      path: the file.
      num_states: if given, ``vectorLength`` must equal it.
      num_actions: if given, every ``action`` must be below it.

    Returns:
      ``(alphas float64[N, S], actions int32[N], obs_values int32[N])``, the vectors
      in file order; ``obs_values`` are all 0 for a flat (non-MOMDP) model.

    Raises:
      PomdpFormatError: naming file, line and column of the first problem.
      OSError: the file cannot be read.
    """
    alphas, actions, obs, _ = _read(path, num_states, num_actions)
    return alphas, actions, obs


def policy_from_appl(path: str | os.PathLike, model):
    """A SARSOP policy file as an :class:`~jaxpomdp.policy.AlphaVectorPolicy` for ``model``.

    Args:
      path: the ``.policy`` file.
      model: the flat :class:`~jaxpomdp.TabularPOMDP` it was computed for (the
        vector length must be its number of states, the actions its actions).

    Raises:
      PomdpFormatError: the file is malformed or does not fit the model.
      ValueError: the policy is for a MOMDP (``numObsValue`` > 1): its vectors range
        over the unobserved states only and need the factored model to be used.
    """
    import jax.numpy as jnp

    from jaxpomdp.policy import AlphaVectorPolicy

    path = os.fspath(path)
    # A MOMDP policy's vectors are shorter than the flat state space: look at
    # numObsValue before holding the length against the model.
    dtype = model.reward.dtype
    alphas, actions, obs, n_obs = _read(path, None, model.num_actions, dtype)
    if n_obs > 1 or obs.any():
        raise ValueError(
            f"{path}: this is a MOMDP policy (numObsValue = {n_obs}): its vectors range over the "
            f"{alphas.shape[1]} values of the partially observed state variables, one set per value "
            "of the fully observed ones, so it needs the factored model; only flat policies "
            "(numObsValue = 1) can be used with a TabularPOMDP")
    if alphas.shape[1] != model.num_states:
        _read(path, model.num_states, model.num_actions)  # raises with the position
    return AlphaVectorPolicy(jnp.asarray(alphas.astype(dtype)), jnp.asarray(actions, jnp.int32))
