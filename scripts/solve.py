#!/usr/bin/env python
"""Solve a POMDP from the command line: ``python scripts/solve.py [PROBLEM] [options]``.

The same program as the installed ``jaxpomdp`` command; ``--help`` lists the options.
"""

import sys

from jaxpomdp.cli import main

if __name__ == "__main__":
    sys.exit(main())
