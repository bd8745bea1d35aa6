"""One persistent XLA compilation cache for the whole test session.

Many tests compile the same programs again: in-process (a new closure or a new
``Config`` per test) and above all in the subprocesses they start (``solve.py``,
the benchmark scripts, the notebooks' kernels, the 4-device and float32/float64
workers). JAX's persistent cache (``jax_compilation_cache_dir``) hands an
identical program's executable back instead of compiling it again; the results
are the same executables, so no result changes. The cache lives in a temporary
folder made by the first pytest process (the xdist controller, or the only
process), which every xdist worker and subprocess inherits through the
environment; it is removed at the end. With ``jax_compilation_cache_max_size``
set, JAX reads and writes entries under a file lock (``filelock``), so the
processes that share it never read a half-written entry. A ``JAX_COMPILATION_CACHE_DIR`` already
in the environment is used as it is (and kept).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

#: Programs that compile faster than this stay out (the many tiny eager-op compilations).
MIN_COMPILE_SECONDS = 0.2
#: A size limit turns on JAX's file lock.
MAX_BYTES = 8 << 30

#: XLA flags for every process of the test session: LLVM optimization level 0 for the compiled programs.
#: The suite's time is mostly compiling (a full run's compile events: ~1800 of ~2300 CPU seconds), and at level
#: 0 NVI's explore step compiles in about half the time (measured: a cold ``solve.py tiger --solver nvi``,
#: 43 -> 24 CPU s; tests/test_nvi.py with test_backup.py, 213 -> 129 CPU s). The programs compute the same
#: thing, only slower (less optimized machine code; XLA:CPU's fast-math is off at every level); the printed
#: results of the runs compared were the same to the last digit, and the tests that compare runs bit for bit
#: compare runs made with the same flags. Users' runs keep XLA's default level: the README's main job in
#: .ci/run, and tests/test_cli.py's ``test_script_runs_the_default_problem_as_a_user_would`` runs ``solve.py``
#: with the flag removed (as do tests/test_interrupt.py's runs, which mostly solve from cached programs, where
#: level 0 is slower). The xdist
#: workers and every subprocess (``solve.py``, the notebooks' kernels, the 4-device and float32/float64
#: workers) inherit it through the environment, and ``XLA_FLAGS`` is part of the compilation cache's key, so
#: they all share the session's cache. An ``XLA_FLAGS`` that already sets the level is kept as it is.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0",)

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join([*os.environ.get("XLA_FLAGS", "").split(), *TEST_XLA_FLAGS])

_OWNED = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWNED = tempfile.mkdtemp(prefix="jaxpomdp-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWNED
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_COMPILE_SECONDS))
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(MAX_BYTES))
    if "jax" in sys.modules:  # imported before this file (a plugin): its config has read the environment
        import jax
        jax.config.update("jax_compilation_cache_dir", _OWNED)
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
        jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))


def pytest_unconfigure(config):
    if _OWNED is not None and not hasattr(config, "workerinput"):  # the process that made it
        shutil.rmtree(_OWNED, ignore_errors=True)


#: Seconds each of the slowest test files took in a full run (``pytest -n 2 --durations=0`` on a
#: 2-core machine, summed per file). Only the order matters: the files run longest first, so that
#: xdist's ``--dist loadfile`` (with ``--no-loadscope-reorder``, which keeps this order instead of
#: sorting files by their number of tests) does not leave one worker a long file at the end while
#: the other has nothing left (largest first is the classic rule for spreading jobs over machines).
#: A stale figure can only cost balance, never a result; files not listed run after these.
SLOWEST_FILES = {
    "test_interrupt.py": 352, "test_cli.py": 235, "test_distributed.py": 198, "test_solver_harness.py": 156,
    "test_precision.py": 147, "test_benchmarks.py": 133, "test_gpomdp.py": 122, "test_notebooks.py": 116,
    "test_nvi.py": 97, "test_model_batch_benchmark.py": 96, "test_simulator_protocol.py": 81, "test_guards.py": 70,
    "test_gradients.py": 61, "test_controller.py": 61, "test_batched.py": 58, "test_checkpoint.py": 45,
}  # test_simulator_protocol.py: measured alone, in one process (it had run last, unlisted, the slowest unlisted file)


def pytest_collection_modifyitems(config, items):
    """The slowest files first (a stable sort: the order within a file is kept)."""
    items.sort(key=lambda item: -SLOWEST_FILES.get(item.path.name, 0))


def pytest_runtest_teardown(item, nextitem):
    """JAX's in-memory caches are emptied after each test file (``jax.clear_caches``).

    Each file compiles its own programs (new closures, configs and models), so the
    executables of the files before are seldom used again, but a worker kept them all:
    over a full ``-n 2`` run each xdist worker grew to 5.5-5.8 GB of resident memory
    (``ru_maxrss`` after every test), and the README's test command runs on machines
    of a few cores and a few GiB per core. A program used again is taken from the
    persistent cache above (or compiled again, if it compiles in under 0.2 s); nothing
    a test computes changes. Measured on four files in one process (test_cassandra,
    test_exact_pomdp, test_controller, test_rocksample_sim): peak 1.96 GB -> 1.47 GB,
    58.7 s -> 58.2 s; a full ``-n 2`` run: worker peaks 5822/5477 MB -> 3365/2073 MB,
    1263 passed in 727-768 s before (two runs), 712 s after.
    """
    if nextitem is None or nextitem.path != item.path:
        import jax
        jax.clear_caches()
