#!/usr/bin/env python
"""Solve a POMDP from the command line: ``python scripts/solve.py [PROBLEM] [options]``.

The same program as the installed ``jaxpomdp`` command; ``--help`` lists the options.
"""

import os
import signal
import sys


def _before_start(signum, frame):  # Ctrl-C while JAX is still being imported: no traceback
    sys.stderr.write(f"jaxpomdp: {signal.Signals(signum).name} before solving started; nothing written\n")
    sys.stderr.flush()
    os._exit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _before_start)
    signal.signal(signal.SIGTERM, _before_start)

from jaxpomdp.cli import entry  # noqa: E402  (after the handlers: importing JAX takes a second or two)

if __name__ == "__main__":
    entry()
