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

from jaxpomdp.cli import main  # noqa: E402  (after the handlers: importing JAX takes a second or two)

if __name__ == "__main__":
    status = main()
    # done and reported (or stopped and written): a Ctrl-C from here on would land in the interpreter's
    # teardown, where Python no longer handles it, and kill the process with the signal instead of this status
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(status)
