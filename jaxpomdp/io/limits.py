"""How much memory a model read from a file may take, and how a reader refuses one.

The readers (``.pomdp``, ``.pomdpx``) estimate the bytes a model will need as
soon as its sizes (and, for transitions, the number of successors per state and
action) are known, and refuse it with a :class:`~jaxpomdp.PomdpFormatError` at
the offending token, before allocating anything that large, rather than being
killed by the operating system.

The limit is ``JAXPOMDP_MAX_MODEL_BYTES`` when that environment variable is set
(a number of bytes: ``8000000000``, ``8e9``, or with a binary suffix ``8G``,
``512M``); otherwise the smaller of the reader's cap (4 GiB) and the memory
available (``MemAvailable`` in ``/proc/meminfo``, else the physical memory).
"""

from __future__ import annotations

import math
import os
import re
from typing import Optional

__all__ = ["ENV_VAR", "SIMULATOR_HINT", "available_memory", "memory_limit", "gib", "refusal"]

ENV_VAR = "JAXPOMDP_MAX_MODEL_BYTES"
#: What to do instead, the end of every refusal.
SIMULATOR_HINT = "give a large model as a simulator (jaxpomdp.GenerativePOMDP; NVI plans from simulators)"

_BYTES = re.compile(r"([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SUFFIX = {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}


def available_memory() -> Optional[int]:
    """Bytes of memory available now (``MemAvailable``, else the physical memory), or None."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        n = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return n if n > 0 else None


def gib(nbytes: int) -> str:
    """A byte count for messages: in GiB (with one decimal), MiB below 0.1 GiB, bytes below 0.1 MiB."""
    if nbytes >= 10 ** 300:  # a float would overflow
        return f"10^{len(str(nbytes)) - 10} GiB"
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if nbytes >= size // 10:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def memory_limit(cap: int) -> tuple[int, str]:
    """The bytes a model may take and, for messages, what they are.

    ``JAXPOMDP_MAX_MODEL_BYTES`` when set, else the smaller of ``cap`` and the
    memory available. Raises ValueError when the variable is not a byte count.
    """
    avail = available_memory()
    have = f"{gib(avail)} of memory available" if avail is not None else "available memory unknown"
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        m = _BYTES.fullmatch(text)
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()] if m else math.inf
        if not value < 2 ** 63:
            raise ValueError(f"{ENV_VAR}={text!r} is not a number of bytes (such as 8000000000, 8e9 or 8G)")
        limit = int(value)
        return limit, f"the {gib(limit)} limit set by {ENV_VAR} ({have})"
    if avail is not None and avail < cap:
        return avail, f"the {have} (set {ENV_VAR} to change the limit)"
    return cap, f"the {gib(cap)} limit ({have}; set {ENV_VAR} to change the limit)"


def refusal(need: int, what: str, cap: int, detail: str = "", hint: str = SIMULATOR_HINT) -> Optional[str]:
    """Why a model that needs ``need`` bytes is refused, or None when it fits.

    The reason reads ``"{what} {need in GiB}{detail}, more than {the limit}; {hint}"``,
    e.g. with ``what="model too large: 10 states needs at least"``. ``cap`` is the
    reader's own limit (see :func:`memory_limit`).
    """
    try:
        limit, which = memory_limit(cap)
    except ValueError as e:
        return str(e)
    if need <= limit:
        return None
    return f"{what} {gib(need)}{detail}, more than {which}; {hint}"
