"""Errors raised for a user's bad input (malformed files, invalid models) and for a solve that
meets non-finite numbers."""

from __future__ import annotations

import numbers

__all__ = ["PomdpFormatError", "InvalidModelError", "InvalidPolicyError", "NumericalError", "CheckpointError",
           "ConfigError", "is_integer"]


def is_integer(x) -> bool:
    """A Python or NumPy integer, not a bool: what the argument checks accept as a count, size or seed."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


class PomdpFormatError(ValueError):
    """A model file could not be read.

    The message names the file, the line and the column (both 1-based) and says
    what was expected there, e.g.::

        Tiger.pomdp:12:7: expected a probability in [0, 1], found '1.5'

    Attributes:
      path: the file's path as given (or ``"<string>"``).
      line: 1-based line number (a missing section is reported where the file, or
        its enclosing element, ends), or ``None`` for a problem with no position in
        the text (such as corrupt gzip data).
      column: 1-based column number, or ``None``.
      reason: the bare description, without the location prefix.
    """

    def __init__(self, reason: str, path: str = "<string>", line: int | None = None,
                 column: int | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        self.reason = reason
        where = self.path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {reason}")


class InvalidModelError(ValueError):
    """A model's arrays do not describe a valid POMDP (raised by ``validate``), or a simulator does
    not follow the ``GenerativePOMDP`` protocol (raised by ``as_simulator``).

    The message names the offending entry, e.g.
    ``next_prob[action='listen', state='tiger-left'] sums to 0.9 (expected 1 ± 1e-05)``.
    """


class InvalidPolicyError(ValueError):
    """A policy does not follow the policy interface of :mod:`jaxpomdp.policy` (raised by ``as_policy``).

    The message names the method and what it returned, e.g.
    ``policy.act(key, memory) must give an integer scalar (an action); it gives float32[3]``.
    """


class NumericalError(FloatingPointError):
    """A solve met NaN or infinity and stopped (a ``FloatingPointError``, so an ``ArithmeticError``).

    Raised by the solvers' driver loops when a value they compute (a bound, an
    alpha-vector, a gradient estimate, the policy parameters) is not finite. The
    message names the solver, the iteration and what went non-finite, e.g.
    ``hsvi: lower-bound alpha-vectors not finite (3 NaN of 40 entries) at iteration 4;
    stopped, the last good policy is from iteration 3``.

    Attributes:
      iteration: the iteration whose result was not finite (0: the initial values
        before the first step; None for a solver without iterations).
      what: what went non-finite, e.g. ``"upper bound at b0"``,
        ``"lower-bound alpha-vectors"``, ``"policy parameters"``,
        ``"gradient estimate"``.
      last_good: the result built from the last finite state (a ``SolveResult``
        whose policy can be used or saved), or None when there is none.
    """

    def __init__(self, message: str, *, iteration: int | None = None, what: str | None = None,
                 last_good=None):
        super().__init__(message)
        self.iteration = iteration
        self.what = what
        self.last_good = last_good


class CheckpointError(ValueError):
    """A checkpoint cannot be written, read or resumed: missing, corrupt, or made
    for another solver, model, precision or settings. The message is one line
    naming the file and what is wrong."""


class ConfigError(ValueError):
    """Solver settings that cannot run on the model (e.g. an NVI node bank smaller
    than the number of actions, or networks too large for memory). The message is
    one line saying what to change."""
