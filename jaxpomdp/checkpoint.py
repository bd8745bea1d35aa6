"""Checkpoints: a solver's state written to a directory as it runs, and resumed from it.

A checkpoint is one file, ``DIR/checkpoint.msgpack``, in flax's msgpack format
(:func:`flax.serialization.msgpack_serialize`: numpy arrays as msgpack extension
records, everything else plain msgpack), written atomically: a temporary file in
``DIR``, flushed and fsynced, then renamed over the old one, so a reader (or a
resume after a crash or ``kill -9``) sees either the previous checkpoint or the
whole new one, never half of one. It holds:

* ``format``: :data:`FORMAT`; ``solver``: the solver's name (``"hsvi"``, ``"nvi"``, ...);
* ``model``: a fingerprint of the model's numbers, shapes and dtypes
  (:func:`model_fingerprint`), so a checkpoint is never resumed on another model
  or in another precision;
* ``options``: the settings that shape the computation (method, config, seed);
  a resume with different ones is refused;
* ``state``: the solver state's array leaves (PRNG keys as their key data) and its
  tree structure, checked against the resuming solver's own;
* ``loop``: the driver's own variables (iteration, bounds, solving seconds so far,
  the PRNG key), and ``history``.

Usage, for any solver here::

    ckpt = Checkpointer("run1", every=60)          # write every 60 s and at the end
    result = point_based.solve(model, checkpoint=ckpt, max_iterations=500)
    ...
    result = point_based.solve(model, resume=load("run1"), checkpoint=ckpt, max_iterations=500)

A run stopped (``stop`` callable, Ctrl-C in the command line) and resumed ends
with exactly the result of a run that was never stopped, on the same device with
the same settings, when it ends by an iteration count or target gap; with a time
limit, the limit counts the solving seconds before the checkpoint too, and where a
wall-clock limit falls differs from run to run anyway.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxpomdp.errors import CheckpointError

__all__ = ["FORMAT", "FILENAME", "Checkpoint", "Checkpointer", "load", "model_fingerprint", "StopRequest"]

#: The format tag written in every checkpoint.
FORMAT = "jaxpomdp-checkpoint/1"
#: The checkpoint's file name inside its directory.
FILENAME = "checkpoint.msgpack"


class Checkpoint(NamedTuple):
    """A checkpoint as loaded by :func:`load` (the state leaves still as numpy arrays)."""

    path: str
    solver: str
    model: str
    options: dict
    leaves: list
    treedef: str
    loop: dict
    history: list
    version: str

    def restore(self, template: Any) -> Any:
        """The saved state in the tree structure of ``template`` (a state of the same
        solver, e.g. a freshly initialised one; array shapes may differ from it).

        Raises CheckpointError when the structure or a leaf's dtype differs.
        """
        leaves, treedef = jax.tree.flatten(template)
        if str(treedef) != self.treedef or len(leaves) != len(self.leaves):
            raise CheckpointError(f"{self.path}: the saved {self.solver} state has another structure than this "
                                  "version's (written by jaxpomdp " f"{self.version})")
        out = []
        for i, (t, x) in enumerate(zip(leaves, self.leaves)):
            if _is_key(t):
                if not isinstance(x, dict) or "key_data" not in x:
                    raise CheckpointError(f"{self.path}: state leaf {i}: expected a PRNG key")
                out.append(_unkey(x))
                continue
            x = np.asarray(x)
            if np.dtype(getattr(t, "dtype", x.dtype)) != x.dtype:
                raise CheckpointError(f"{self.path}: state leaf {i}: saved as {x.dtype}, expected "
                                      f"{np.dtype(t.dtype)} (another precision? JAX_ENABLE_X64 must match)")
            out.append(jnp.asarray(x))
        return jax.tree.unflatten(treedef, out)

    def check(self, solver: str, model: Any, options: dict) -> None:
        """Raises CheckpointError unless this checkpoint is of ``solver`` on ``model`` with ``options``."""
        if self.solver != solver:
            raise CheckpointError(f"{self.path}: a checkpoint of solver {self.solver!r}, not {solver!r}")
        if self.model != model_fingerprint(model):
            raise CheckpointError(f"{self.path}: made for another model (or another precision) than this one")
        changed = _changed(self.options, _plain(options))
        if changed:
            what = ", ".join(f"{k} {old!r} (now {new!r})" for k, old, new in changed)
            raise CheckpointError(f"{self.path}: made with other settings: {what}; resume with the same ones")

    def key(self) -> jax.Array:
        """The driver's PRNG key at the checkpoint."""
        return _unkey(self.loop["key"])


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_record(key: jax.Array) -> dict:
    return {"key_data": np.asarray(jax.random.key_data(key)), "impl": str(jax.random.key_impl(key))}


def _unkey(record: dict) -> jax.Array:
    return jax.random.wrap_key_data(jnp.asarray(record["key_data"]), impl=record["impl"])


def _changed(saved: dict, now: dict, prefix: str = "") -> list:
    """``[(name, saved value, value now)]`` of the settings that differ; in a setting that is itself a
    dict (a solver's config) the fields that differ, as ``config.capacity``."""
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def _plain(x: Any) -> Any:
    """``x`` with tuples as lists and numpy scalars as Python numbers (what msgpack, and
    ``==`` after a round trip, need)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if _is_key(x):
        return _key_record(x)
    if isinstance(x, np.ndarray) or isinstance(x, jax.Array):
        return np.asarray(x)
    if isinstance(x, np.generic):
        return x.item()
    return x


def model_fingerprint(model: Any) -> str:
    """A hash of the model's type, and its arrays' shapes, dtypes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    from jaxpomdp.model import StaticObject
    if isinstance(model, StaticObject):  # no leaves: the class of the object it holds tells models apart
        kind = type(model.wrapped)
        h.update(f"{kind.__module__}.{kind.__qualname__}".encode())
    else:
        h.update(type(model).__name__.encode())
    for leaf in jax.tree.leaves(model):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def load(directory: str | os.PathLike) -> Checkpoint:
    """Reads ``DIR/checkpoint.msgpack`` (or the file itself when given); CheckpointError
    (one line) when it is missing or unreadable."""
    path = Path(directory)
    if not path.is_file():
        path = path / FILENAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no checkpoint there ({FILENAME} not found)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {e.strerror or e}") from None
    try:
        record = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types for corrupt data
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else None
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (format {found!r})")
    try:
        state = record["state"]
        leaves = [state["leaves"][str(i)] for i in range(len(state["leaves"]))]
        fields = {k: record[k] for k in ("solver", "model", "options", "loop", "history")}
        treedef = state["treedef"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {e})") from None
    _check_types(path, {**fields, "treedef": treedef})
    return Checkpoint(str(path), fields["solver"], fields["model"], fields["options"], leaves, treedef,
                      _Loop(path, fields["loop"]), fields["history"], record.get("version", "?"))


class _Loop(dict):
    """A checkpoint's driver variables; one a solver needs and the file lacks is a CheckpointError."""

    def __init__(self, path, values: dict):
        super().__init__(values)
        self.path = path

    def __missing__(self, name):
        raise CheckpointError(f"{self.path}: incomplete checkpoint (no {name!r} among the loop's variables)")


def _check_types(path, fields: dict) -> None:
    """The parts every solver reads: CheckpointError (one line) for a file that decodes but was altered."""
    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) or isinstance(x, np.number)

    expected = {"solver": (str, "a name"), "model": (str, "a fingerprint"), "treedef": (str, "a tree structure"),
                "options": (dict, "a mapping"), "loop": (dict, "a mapping")}
    for name, (kind, what) in expected.items():
        if not isinstance(fields[name], kind):
            raise CheckpointError(f"{path}: damaged checkpoint ({name} is not {what})")
    loop, history = fields["loop"], fields["history"]
    key = loop.get("key")
    if not (isinstance(key, dict) and isinstance(key.get("impl"), str) and isinstance(key.get("key_data"), np.ndarray)):
        raise CheckpointError(f"{path}: damaged checkpoint (the loop's PRNG key)")
    for name in ("iteration", "elapsed"):
        if name in loop and not number(loop[name]):
            raise CheckpointError(f"{path}: damaged checkpoint (the loop's {name} is not a number)")
    if not (isinstance(history, list)
            and all(isinstance(row, list) and all(number(x) or x is None for x in row) for row in history)):
        raise CheckpointError(f"{path}: damaged checkpoint (history is not a list of rows of numbers)")


class Checkpointer:
    """Writes a solver's checkpoints into ``directory``: at safe points once ``every``
    seconds have passed since the last one, and at the end of the solve.

    The directory is created (with its parents) when the first checkpoint is
    written, not before: a run refused before solving leaves nothing behind. That it
    can be created is checked here (an existing file in its place, or a nearest
    existing folder that is not writable, raises :class:`CheckpointError` now).
    ``saves`` counts the checkpoints written; ``path`` is the checkpoint file.
    """

    def __init__(self, directory: str | os.PathLike, *, every: float = 60.0):
        if not every > 0:
            raise ValueError(f"checkpoint interval must be positive, got {every}")
        self.directory = Path(directory)
        self.path = self.directory / FILENAME
        self.every = float(every)
        self.saves = 0
        self._last = time.monotonic()
        existing = self.directory
        while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():  # a file, or a dangling link, where a folder must be
            what = "the checkpoint directory" if existing == self.directory else f"{existing} on its path"
            raise CheckpointError(f"{directory}: cannot create the checkpoint directory: {what} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CheckpointError(f"{directory}: the checkpoint directory is not writable"
                                  if existing == self.directory else
                                  f"{directory}: cannot create the checkpoint directory: {existing} is not writable")

    def make_directory(self) -> Path:
        """Creates the directory (and its parents) if needed; returns it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(
                f"{self.directory}: cannot create the checkpoint directory: {e.strerror or e}") from None
        return self.directory

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since the last save (or since creation)."""
        return time.monotonic() - self._last >= self.every

    def save(self, solver: str, model: Any, options: dict, state: Any, loop: dict, history: list) -> Path:
        """Writes one checkpoint atomically (see the module docstring) and returns its path."""
        from jaxpomdp.io import atomic_write
        leaves, treedef = jax.tree.flatten(state)
        record = {
            "format": FORMAT,
            "version": _version(),
            "solver": solver,
            "model": model_fingerprint(model),
            "options": _plain(options),
            "state": {"treedef": str(treedef),
                      "leaves": {str(i): _plain(x) for i, x in enumerate(jax.device_get(leaves))}},
            "loop": _plain(loop),
            "history": _plain(history),
        }
        self.make_directory()
        atomic_write(self.path, serialization.msgpack_serialize(record))
        self.saves += 1
        self._last = time.monotonic()
        return self.path


def _version() -> str:
    from jaxpomdp import __version__
    return __version__


def start_seconds(resume: Optional[Checkpoint]) -> float:
    """Solving seconds spent before the checkpoint (0 without one)."""
    return 0.0 if resume is None else float(resume.loop.get("elapsed", 0.0))


def remaining(time_limit: Optional[float], resume: Optional[Checkpoint]) -> float:
    """``time_limit`` minus the seconds already spent before ``resume`` (inf for no limit)."""
    return math.inf if time_limit is None else time_limit - start_seconds(resume)


class StopRequest:
    """A flag solvers poll at safe points (``stop()`` is True once a stop was asked for).

    :meth:`install` makes SIGINT and SIGTERM set it: the first signal asks the solver
    to stop at its next safe point (it then writes its checkpoint, and the command
    line the policy); a second one raises ``KeyboardInterrupt`` at once. Use as a
    context manager to install and restore the previous handlers.
    """

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict = {}

    def __call__(self) -> bool:
        return self.signal is not None

    def request(self, signum: int = signal.SIGINT) -> None:
        self.signal = signum

    def _handler(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def install(self) -> "StopRequest":
        """Clears the flag and handles SIGINT and SIGTERM (only in the main thread,
        where Python delivers signals; elsewhere the flag is set by :meth:`request`)."""
        self.signal = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def ignore(self) -> None:
        """Ignores SIGINT and SIGTERM from now on (a program that is done and only exiting), and forgets the
        previous handlers, so that leaving the context does not put them back."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()


def stopped(stop: Optional[Callable[[], bool]]) -> bool:
    """Whether ``stop`` (a solver's ``stop=`` argument) asks for a stop."""
    return stop is not None and bool(stop())
