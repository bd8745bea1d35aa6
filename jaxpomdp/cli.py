"""``jaxpomdp`` / ``scripts/solve.py``: solve a POMDP from the command line.

    jaxpomdp [PROBLEM] [--solver NAME] [--time-limit S] [--seed N]
             [--out POLICY.alpha] [--json RESULTS.json] [--plot FIGURE.png]

PROBLEM is a built-in name (``jaxpomdp --list``) or a ``.pomdp``/``.pomdpx`` file
(optionally ``.gz``); without it the built-in default (``tiger``) is solved. A
readable summary goes to standard output, progress to standard error. A user's
mistake (a malformed file, an unknown name) is reported in one line, exit status 2.
A solve that meets NaN or infinity stops with one line naming the iteration and
what went non-finite, exit status 3; with ``--out`` the last good policy is
written (when there is one).

``--checkpoint DIR`` writes the solver's state to ``DIR/checkpoint.msgpack``
every ``--checkpoint-every`` seconds and at the end; ``--resume DIR`` continues
from it (same problem, solver, seed and settings). Ctrl-C (SIGINT) or SIGTERM
during a solve stops it at the next step: the policy so far goes to ``--out``
(or into the checkpoint directory), the checkpoint is written, and the exit
status is 128 + the signal number (130, 143). A second Ctrl-C aborts at once
(files are written atomically, so none is ever half-written).

The command keeps the XLA programs it compiles in JAX's persistent compilation
cache, ``$XDG_CACHE_HOME/jaxpomdp/xla`` (else ``~/.cache/jaxpomdp/xla``; at most
2 GiB, least recently used first out, file-locked so that runs at the same time
share it safely): a second run of the same solver on a problem of the same sizes
loads them instead of compiling again (:func:`use_compile_cache`). A folder named
in ``JAX_COMPILATION_CACHE_DIR`` is used instead, as JAX configures it;
``--no-compile-cache`` turns the cache off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import jax

from jaxpomdp import __version__, checkpoint, problems
from jaxpomdp.errors import CheckpointError, ConfigError, InvalidModelError, NumericalError, PomdpFormatError
from jaxpomdp.io import atomic_write, load_pomdp
from jaxpomdp.io.alpha import write_alpha
from jaxpomdp.io.limits import gib, memory_limit
from jaxpomdp.model import DEFAULT_TOLERANCE, TabularPOMDP
from jaxpomdp.simulate import default_horizon, evaluate
from jaxpomdp.solvers import POLICY_GRADIENT, SOLVERS, nvi

__all__ = ["main", "build_parser", "resolve_problem", "use_compile_cache", "default_cache_dir"]

DEFAULT_SOLVER = "hsvi"

#: Set by SIGINT/SIGTERM while :func:`main` runs; the solvers poll it between steps.
STOP = checkpoint.StopRequest()

#: The exit status of a solve stopped by NaN or infinity (a user's mistake is 2).
EXIT_NUMERICAL = 3

#: Solvers that run step by step: they take --max-iterations, --checkpoint, --resume
#: and stop at the next step on Ctrl-C (blind and qmdp are one compiled call).
ITERATIVE = ("hsvi", "pbvi", "perseus", "nvi", "gpomdp", "conjpomdp")

#: The command's compilation cache: at most this many bytes (the least recently used
#: programs are removed first), and only programs that took this long to compile.
COMPILE_CACHE_BYTES = 2 << 30
COMPILE_CACHE_MIN_SECONDS = 0.2


class UserError(Exception):
    """A mistake in the command line or its inputs: reported without a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line, like the command's other errors (argparse
    prints the whole usage block first); ``--help`` still prints it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="jaxpomdp",
        description="Solve a POMDP and evaluate the policy by simulation.",
        epilog=f"Built-in problems: {', '.join(problems.names())}.")
    p.add_argument("problem", nargs="?", default=problems.DEFAULT,
                   help=f"a built-in problem name or a .pomdp/.pomdpx file (default: {problems.DEFAULT})")
    p.add_argument("--solver", default=DEFAULT_SOLVER, choices=sorted(SOLVERS),
                   help=f"solver (default: {DEFAULT_SOLVER})")
    p.add_argument("--time-limit", type=float, default=60.0, metavar="S",
                   help="solver time limit in seconds, excluding the first compilation (default 60)")
    p.add_argument("--target-gap", type=float, default=1e-3, metavar="G",
                   help="stop when upper - lower bound at b0 is at most G (default 0.001)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--devices", default=None, metavar="N|all",
                   help="split the solver's batch over the first N devices (or all) with a JAX mesh "
                        "(iterative solvers; default: one device)")
    p.add_argument("--max-iterations", type=int, default=None, metavar="N",
                   help="stop after N solver steps (iterative solvers; counting steps before a --resume)")
    p.add_argument("--out", metavar="FILE", help="write the policy as pomdp-solve .alpha vectors")
    p.add_argument("--json", metavar="FILE", help="write machine-readable results")
    p.add_argument("--plot", metavar="FILE.png",
                   help="save the convergence figure (bounds vs time; learning curve for gpomdp/conjpomdp; "
                        "value vs time for nvi); needs matplotlib: pip install \"jaxpomdp[plot]\"")
    p.add_argument("--episodes", type=int, default=1000, metavar="N",
                   help="simulated episodes for the evaluation (default 1000)")
    p.add_argument("--horizon", type=int, default=None, metavar="H",
                   help="steps per simulated episode (default: enough for a 1%% discounted tail)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"allowed |row sum - 1| in model files (default {DEFAULT_TOLERANCE:g})")
    g = p.add_argument_group("policy-gradient solvers (gpomdp, conjpomdp)")
    g.add_argument("--memory", type=int, default=1, metavar="M",
                   help="memory states of the stochastic policy: 1 = reactive (default), "
                        "M > 1 = a finite-state controller")
    g.add_argument("--objective", choices=("average", "discounted"), default="average",
                   help="maximise the average reward (the paper; default) or the discounted value from b0")
    g.add_argument("--beta", type=float, default=None, metavar="B",
                   help="GPOMDP's trace discount in [0, 1) (default 0.9)")
    g.add_argument("--restarts", type=int, default=1, metavar="R",
                   help="gpomdp: independent random starts trained together, the best kept (default 1)")
    n = p.add_argument_group("neural value iteration (nvi)")
    n.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a field of the NVI configuration (jaxpomdp.solvers.nvi.Config) to a JSON value, "
                        "e.g. --set capacity=768 --set hidden=[64,64]; repeatable (default: "
                        "nvi.default_config for the problem)")
    c = p.add_argument_group("checkpoints (hsvi, pbvi, perseus, nvi, gpomdp, conjpomdp)")
    c.add_argument("--checkpoint", metavar="DIR",
                   help="write the solver state to DIR/checkpoint.msgpack now and then and at the end "
                        "(atomically); Ctrl-C then also keeps it")
    c.add_argument("--checkpoint-every", type=float, default=60.0, metavar="S",
                   help="seconds between checkpoints (default 60)")
    c.add_argument("--resume", metavar="DIR",
                   help="continue the solve saved in DIR (same problem, solver, seed and settings); "
                        "checkpoints go on being written there unless --checkpoint names another DIR")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not keep compiled programs between runs (default: kept in "
                        "$XDG_CACHE_HOME/jaxpomdp/xla or ~/.cache/jaxpomdp/xla, or in JAX_COMPILATION_CACHE_DIR)")
    p.add_argument("--list", action="store_true", help="list the built-in problems and exit")
    p.add_argument("--quiet", action="store_true", help="no progress on standard error")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("--version", action="version", version=f"jaxpomdp {__version__}")
    return p


def _progress_printer(label: str, quiet: bool):
    if quiet:
        return None
    state = {"next": 0.1, "t0": time.perf_counter()}

    def report(fraction: float) -> None:
        if fraction >= state["next"] or fraction >= 1.0:
            elapsed = time.perf_counter() - state["t0"]
            print(f"loading {label}: {100 * fraction:3.0f}% ({elapsed:.1f} s)", file=sys.stderr, flush=True)
            state["next"] = math.floor(fraction * 10 + 1) / 10

    return report


def _progress_line(quiet: bool):
    """A solver callback printing ``time, bounds, gap, vectors`` about once a second."""
    if quiet:
        return None
    state = {"last": -math.inf}

    def report(seconds, lower, upper, num_vectors, num_beliefs):
        if seconds - state["last"] >= 1.0:
            state["last"] = seconds
            print(f"{seconds:7.1f} s  lower {lower:.6g}  upper {upper:.6g}  gap {upper - lower:.4g}  "
                  f"vectors {num_vectors}  beliefs {num_beliefs}", file=sys.stderr, flush=True)

    return report


def _gradient_progress(quiet: bool):
    """A policy-gradient callback printing ``time, iteration, eta estimate, |gradient|`` about once a second."""
    if quiet:
        return None
    state = {"last": -math.inf}

    def report(seconds, eta, grad_norm, iteration):
        if seconds - state["last"] >= 1.0:
            state["last"] = seconds
            print(f"{seconds:7.1f} s  iteration {iteration}  eta {eta:.6g}  |gradient| {grad_norm:.3g}",
                  file=sys.stderr, flush=True)

    return report


def _controller_progress(quiet: bool):
    """An NVI callback printing ``time, network estimate, upper bound, nodes, beliefs`` about once a second."""
    if quiet:
        return None
    state = {"last": -math.inf}

    def report(seconds, estimate, upper, num_nodes, num_beliefs):
        if seconds - state["last"] >= 1.0:
            state["last"] = seconds
            print(f"{seconds:7.1f} s  estimate {estimate:.6g}  upper {upper:.6g}  nodes {num_nodes}  "
                  f"beliefs {num_beliefs}", file=sys.stderr, flush=True)

    return report


def _gradient_config(args: argparse.Namespace):
    for flag, value in (("--memory", args.memory), ("--restarts", args.restarts)):
        if not 1 <= value <= 2 ** 31 - 1:
            raise UserError(f"{flag} must be at least 1" + (f" and at most {2 ** 31 - 1}" if value > 1 else "")
                            + f", got {value}")
    if args.beta is not None and not 0 <= args.beta < 1:
        raise UserError(f"--beta must be in [0, 1), got {args.beta}")
    fields = {"memory": args.memory, "objective": args.objective}
    if args.beta is not None:
        fields["beta"] = args.beta
    if args.solver == "gpomdp":
        fields["num_restarts"] = args.restarts
    elif args.restarts != 1:
        raise UserError("--restarts is for --solver gpomdp")
    return POLICY_GRADIENT[args.solver](**fields)


def resolve_problem(name: str, *, tolerance: float = DEFAULT_TOLERANCE,
                    quiet: bool = True) -> tuple[str, TabularPOMDP]:
    """A problem by built-in name or file path -> ``(label, model)``."""
    if os.path.exists(name):
        if os.path.isdir(name):
            raise UserError(f"{name} is a folder, not a model file")
        large = os.path.getsize(name) > 2 * 2 ** 20
        progress = _progress_printer(os.path.basename(name), quiet or not large)
        return os.path.basename(name), load_pomdp(name, tolerance=tolerance, progress=progress)
    try:
        return name, problems.get(name)
    except KeyError as e:
        if name.strip().lower().startswith("rocksample:"):  # a RockSample name of the wrong form
            raise UserError(e.args[0]) from None
    except ValueError as e:  # e.g. a RockSample instance too large to build as a table
        hint = "; --solver nvi plans on its simulator" if "states; at most" in e.args[0] else ""
        raise UserError(e.args[0] + hint) from None
    if os.sep in name or name.lower().endswith((".pomdp", ".pomdpx", ".gz")):
        raise UserError(f"no such file: {name}")
    raise UserError(f"unknown problem {name!r}: not a file and not a built-in problem "
                    f"(built-in: {', '.join(problems.names())})")


def _num(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(x)


def _resolve_for_solver(args: argparse.Namespace):
    """NVI plans RockSample on the simulator (no |S|-sized table); every other case as resolve_problem."""
    if args.solver == "nvi" and args.problem.strip().lower().startswith("rocksample:") \
            and not os.path.exists(args.problem):
        from jaxpomdp.problems import rocksample_sim
        try:
            return args.problem, rocksample_sim.from_name(args.problem)
        except (KeyError, ValueError) as e:
            raise UserError(e.args[0]) from None
    return resolve_problem(args.problem, tolerance=args.tolerance, quiet=args.quiet)


def run(args: argparse.Namespace) -> int:
    if args.out and args.solver == "nvi" and not args.out.endswith((".pg", ".dot")):
        raise UserError("--out for --solver nvi writes a controller: give a .pg (pomdp-solve) or .dot file")
    if args.out and args.solver in POLICY_GRADIENT:
        raise UserError(f"solver {args.solver} has no alpha-vector policy to write (--out)")
    if args.plot:
        _check_plot_path(args.plot)
    for flag, path in (("--out", args.out), ("--json", args.json), ("--plot", args.plot)):
        if path:
            _check_writable(flag, path)
    _check_distinct_outputs(args)
    if not -2 ** 63 <= args.seed < 2 ** 63:
        raise UserError(f"--seed must be in [-2**63, 2**63), got {args.seed}")
    if not 0 <= args.tolerance < 1:
        raise UserError(f"--tolerance must be in [0, 1), got {args.tolerance}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise UserError(f"--time-limit must be positive, got {args.time_limit}")
    if not args.target_gap >= 0:
        raise UserError(f"--target-gap must be non-negative, got {args.target_gap}")
    _check_evaluation_size(args.episodes, args.horizon)
    _check_iterative_options(args)
    gradient_config = _gradient_config(args) if args.solver in POLICY_GRADIENT else None
    mesh = _mesh(args.devices)
    overrides = _nvi_overrides(args)
    resume = checkpoint.load(args.resume) if args.resume else None
    label, model = _resolve_for_solver(args)
    gamma = float(model.discount)
    if not gamma < 1:
        raise UserError(f"{label}: discount {gamma:g}; the solvers here need discount < 1")
    if args.horizon is None:
        _check_evaluation_size(args.episodes, default_horizon(gamma))
    print(f"jaxpomdp {__version__}: {label} ({model.num_states} states, {model.num_actions} actions, "
          f"{model.num_observations} observations, discount {gamma:g}) on {jax.default_backend()}")

    nvi_config = nvi.default_config(model, **overrides) if args.solver == "nvi" else None
    if args.solver in ITERATIVE:
        directory = args.checkpoint or args.resume
        saver = checkpoint.Checkpointer(directory, every=args.checkpoint_every) if directory else None
        extra = {"max_iterations": args.max_iterations, "checkpoint": saver, "resume": resume, "stop": STOP,
                 "mesh": mesh}
    else:
        saver, extra = None, {}
    if STOP():
        print(f"jaxpomdp: {_signal_name(STOP.signal)} before solving started; nothing written", file=sys.stderr)
        return 128 + STOP.signal
    try:
        if args.solver in POLICY_GRADIENT:
            result = SOLVERS[args.solver](model, time_limit=args.time_limit, target_gap=args.target_gap,
                                          seed=args.seed, callback=_gradient_progress(args.quiet),
                                          config=gradient_config, **extra)
        else:
            progress = _controller_progress(args.quiet) if args.solver == "nvi" else _progress_line(args.quiet)
            if args.solver == "nvi":
                extra["config"] = nvi_config
            result = SOLVERS[args.solver](model, time_limit=args.time_limit, target_gap=args.target_gap,
                                          seed=args.seed, callback=progress, **extra)
    except NumericalError as e:
        if args.debug:
            raise
        print(f"jaxpomdp: error: {e}{_keep_last_good(args, model, e.last_good)}", file=sys.stderr)
        return EXIT_NUMERICAL
    if resume is not None:  # the solver checked that it fits (solver, model, settings)
        print(f"resumed      {resume.path}: {resume.loop.get('iteration')} steps, "
              f"{resume.loop.get('elapsed', 0.0):.1f} s solved before it")
    if STOP():
        return _stopped(args, model, result, saver)
    ev = evaluate(jax.random.key(args.seed), model, result.policy,
                  num_episodes=args.episodes, horizon=args.horizon, batch_size=EVALUATION_BATCH)
    mean, stderr = float(ev.mean), float(ev.stderr)
    lo, hi = (float(x) for x in ev.ci95)

    lower, upper = result.lower_bound, result.upper_bound
    gap = None if lower is None or upper is None else upper - lower
    described = f" (fixed action: {result.info['action']})" if "action" in result.info else ""
    print(f"solver       {args.solver}{described}")
    print(f"lower bound  {lower:.6g}" if lower is not None else "lower bound  -")
    print(f"upper bound  {upper:.6g}" if upper is not None else "upper bound  -")
    if gap is not None:
        print(f"gap          {gap:.6g}")
    if args.solver in POLICY_GRADIENT:
        eta = result.info.get("exact_average_reward")
        last = result.history[-1][1] if result.history else float("nan")
        print(f"policy       {result.info['policy']}, {result.info['memory_states']} memory state(s), "
              f"{result.info['iterations']} iterations, {result.info['environment_steps']} steps simulated")
        print(f"avg reward   {eta:.6g} (exact)" if eta is not None else f"avg reward   {last:.6g} (estimate)")
    if args.solver == "nvi":
        nodes, pbytes, abytes = (result.info.get(k) for k in ("num_nodes", "parameter_bytes", "alpha_vector_bytes"))
        alpha = f", {abytes / 2 ** 20:.3g} MiB as explicit alpha-vectors" if abytes else ""
        print(f"controller   {nodes} nodes, {pbytes / 2 ** 20:.3g} MiB of network parameters{alpha}; "
              f"network estimate at b0 {result.info.get('value_estimate', float('nan')):.6g} (not certified)")
    print(f"simulated    {mean:.6g} ± {1.96 * stderr:.3g} (95% CI, {ev.num_episodes} episodes, "
          f"horizon {ev.horizon}, tail ≤ {float(ev.truncation_bound):.2g})")
    print(f"time         solve {result.solve_seconds:.3f} s, compile {result.compile_seconds:.3f} s")

    if args.out:
        print(f"policy       {_write_policy(args, model, result)}")
    if args.json:
        record = {
            "problem": label,
            "solver": args.solver,
            "num_states": model.num_states,
            "num_actions": model.num_actions,
            "num_observations": model.num_observations,
            "discount": gamma,
            "lower_bound": _num(lower),
            "upper_bound": _num(upper),
            "evaluation": {"mean": mean, "stderr": stderr, "ci95": [lo, hi],
                           "num_episodes": int(ev.num_episodes), "horizon": int(ev.horizon)},
            "solve_seconds": result.solve_seconds,
            "compile_seconds": result.compile_seconds,
            "seed": args.seed,
            "time_limit": _num(args.time_limit),  # null: none (inf is not JSON)
            "target_gap": _num(args.target_gap),
            "num_vectors": None if result.alphas is None else int(len(result.alphas)),
            "backend": jax.default_backend(),
            **({"policy_gradient": _json_info(result.info)} if args.solver in POLICY_GRADIENT else {}),
            **({"controller": {**_controller_info(result.info), "config": nvi_config._asdict()}}
               if args.solver == "nvi" else {}),
            "jaxpomdp_version": __version__,
        }
        atomic_write(args.json, json.dumps(record, indent=2) + "\n")
        print(f"results      {args.json}")
    if args.plot:
        _save_plot(args, label, result)
        print(f"figure       {args.plot}")
    if saver is not None:
        print(f"checkpoint   {saver.path}")
    return 128 + STOP.signal if STOP() else 0


def _nvi_overrides(args: argparse.Namespace) -> dict:
    """The ``--set`` fields (checked before the problem is loaded)."""
    if args.set and args.solver != "nvi":
        raise UserError(f"--set sets a field of the NVI configuration; give --solver nvi (not {args.solver})")
    try:
        return nvi.parse_overrides(args.set)
    except ValueError as e:
        raise UserError(str(e)) from None


def _check_iterative_options(args: argparse.Namespace) -> None:
    given = [flag for flag, value in (("--max-iterations", args.max_iterations), ("--checkpoint", args.checkpoint),
                                      ("--resume", args.resume), ("--devices", args.devices)) if value is not None]
    if given and args.solver not in ITERATIVE:
        raise UserError(f"{given[0]} applies to the step-by-step solvers ({', '.join(ITERATIVE)}); "
                        f"{args.solver} runs as one computation")
    if args.max_iterations is not None and args.max_iterations < 0:
        raise UserError(f"--max-iterations must be non-negative, got {args.max_iterations}")
    if not args.checkpoint_every > 0:
        raise UserError(f"--checkpoint-every must be positive, got {args.checkpoint_every}")


def _mesh(devices: Optional[str]):
    """The mesh of ``--devices N|all`` (None without it)."""
    if devices is None:
        return None
    from jaxpomdp import distributed
    available = jax.devices()
    if devices.strip().lower() == "all":
        return distributed.make_mesh(available)
    try:
        n = int(devices)
    except ValueError:
        raise UserError(f"--devices must be a number or 'all', got {devices!r}") from None
    if not 1 <= n <= len(available):
        raise UserError(f"--devices {n}: this machine has {len(available)} {jax.default_backend()} device(s)")
    return distributed.make_mesh(available[:n])


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _stopped(args: argparse.Namespace, model, result, saver) -> int:
    """After a solve stopped by SIGINT/SIGTERM: writes the policy so far and says where it and the checkpoint are.

    The policy goes to ``--out``, or without it into the checkpoint directory
    (``policy.alpha``; ``controller.pg`` for nvi); the policy-gradient solvers'
    parameters are in the checkpoint. No evaluation, JSON or figure: the run is cut short.
    """
    name = _signal_name(STOP.signal)
    steps = result.info.get("iterations")
    lower, upper = result.lower_bound, result.upper_bound
    bounds_text = "" if lower is None or upper is None else f"; lower bound {lower:.6g}, upper bound {upper:.6g}"
    print(f"stopped      by {name} after {steps} steps ({result.solve_seconds:.1f} s){bounds_text}")
    if args.out:
        print(f"policy       {_write_policy(args, model, result)}")
    elif saver is not None and args.solver not in POLICY_GRADIENT:
        args.out = str(saver.make_directory() / ("controller.pg" if args.solver == "nvi" else "policy.alpha"))
        print(f"policy       {_write_policy(args, model, result)}")
    elif args.solver not in POLICY_GRADIENT:
        print("policy       not written (give --out FILE or --checkpoint DIR to keep it)")
    else:
        print("policy       a stochastic policy: its parameters are in the checkpoint" if saver is not None else
              "policy       not kept (give --checkpoint DIR to keep the stochastic policy's parameters)")
    if saver is not None:
        print(f"checkpoint   {saver.path} (continue with --resume {saver.directory})")
    print(f"jaxpomdp: stopped by {name}", file=sys.stderr)
    return 128 + STOP.signal


def _write_policy(args: argparse.Namespace, model, result) -> str:
    """Writes ``result``'s policy to ``args.out``; returns ``"FILE (what)"``."""
    if args.solver == "nvi":
        from jaxpomdp.controller import write_dot, write_pg
        if args.out.endswith(".pg"):
            write_pg(args.out, result.policy.controller)
        else:
            write_dot(args.out, result.policy.controller, action_names=getattr(model, "action_names", None),
                      observation_names=getattr(model, "observation_names", None))
        return f"{args.out} (controller, {result.info.get('num_nodes')} nodes)"
    if result.alphas is None:
        raise UserError(f"solver {args.solver} has no alpha-vector policy to write")
    write_alpha(args.out, result.alphas, result.alpha_actions)
    return f"{args.out} ({len(result.alpha_actions)} alpha-vectors)"


def _keep_last_good(args: argparse.Namespace, model, last_good) -> str:
    """After a NumericalError: writes the last good policy to ``--out`` if both exist; says what happened."""
    if not args.out or last_good is None:
        return ""
    try:
        return f"; it was written to {_write_policy(args, model, last_good)}"
    except (UserError, OSError) as e:
        return f"; it could not be written to {args.out}: {e}"


def _plot_kind(solver: str) -> str:
    return "gradient" if solver in POLICY_GRADIENT else "controller" if solver == "nvi" else "bounds"


def _check_writable(flag: str, path: str) -> None:
    """Fails before solving when ``path`` could not be written at the end: a folder, a missing
    folder, or one where no file can be created (tried: a probe file is made and removed)."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path}: is a folder, not a file")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {path}: no such folder {folder}")
    probe = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write a file in {folder} ({e.strerror})") from None


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links too
    except OSError:  # one of them does not exist (yet)
        return False


def _check_distinct_outputs(args: argparse.Namespace) -> None:
    """Fails before solving when two outputs, or an output and the model file or checkpoint, are one file:
    the later write would silently replace the earlier (the model itself, with --out on its own name)."""
    outputs = [(flag, path) for flag, path in (("--out", args.out), ("--json", args.json), ("--plot", args.plot))
               if path]
    for i, (flag, path) in enumerate(outputs):
        for other, other_path in outputs[i + 1:]:
            if _same_file(path, other_path):
                raise UserError(f"{flag} and {other} name the same file {path}; give each its own")
        if os.path.isfile(args.problem) and _same_file(path, args.problem):
            raise UserError(f"{flag} {path} is the model file being solved; give another name")
        for option, folder in (("--checkpoint", args.checkpoint), ("--resume", args.resume)):
            if folder and _same_file(path, os.path.join(folder, checkpoint.FILENAME)):
                raise UserError(f"{flag} {path} is the checkpoint file of {option} {folder}; give another name")


#: --episodes and --horizon: the evaluation keeps a random key per episode and, for a batch of episodes,
#: a key and a reward per step; more than the memory limit is refused before solving.
EVALUATION_BATCH = 1024


def _check_evaluation_size(episodes: int, horizon: Optional[int]) -> None:
    """Fails on counts the evaluation cannot hold (beyond int32, or the keys and rewards over the memory limit)."""
    if episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {episodes}")
    if horizon is not None and horizon < 1:
        raise UserError(f"--horizon must be at least 1, got {horizon}")
    steps = horizon or 0  # the default horizon is checked once the discount is known
    for flag, value in (("--episodes", episodes), ("--horizon", horizon)):
        if value is not None and value > 2 ** 31 - 1:
            raise UserError(f"{flag} must be at most {2 ** 31 - 1}, got {value}")
    need = 16 * episodes + 12 * min(episodes, EVALUATION_BATCH) * steps  # keys twice; per step a key and a reward
    try:
        limit, what = memory_limit(4 * 2 ** 30)
    except ValueError as e:
        raise UserError(str(e)) from None
    if need > limit:
        raise UserError(f"{episodes} episodes{f' of {steps} steps' if steps else ''}: the evaluation would need "
                        f"about {gib(need)}, "
                        f"more than {what}; give fewer --episodes or a shorter --horizon")


def _check_plot_path(path: str) -> None:
    """Fails before solving when the figure could not be written (matplotlib missing, bad name or folder)."""
    try:
        from jaxpomdp import plot
        plot.check_output_path(path)
    except (ImportError, ValueError) as e:
        raise UserError(f"--plot: {e}") from None


def _save_plot(args: argparse.Namespace, label: str, result) -> None:
    from jaxpomdp import plot
    try:
        plot.save_convergence(args.plot, result, _plot_kind(args.solver), title=f"{label}: {args.solver}",
                              target_gap=args.target_gap if _plot_kind(args.solver) == "bounds" else None)
    except (ImportError, ValueError) as e:
        raise UserError(f"--plot: {e}") from None


def _json_info(info: dict) -> dict:
    keys = ("policy", "memory_states", "parameters", "iterations", "environment_steps", "gradient_evaluations",
            "exact_average_reward", "exact_discounted_value", "config", "params")
    out = {k: info[k] for k in keys if k in info}
    out["exact_average_reward"] = _num(out.get("exact_average_reward"))
    return out


def _controller_info(info: dict) -> dict:
    keys = ("num_nodes", "reachable_nodes", "parameter_bytes", "parameter_bytes_bank", "alpha_vector_bytes",
            "num_states", "value_estimate", "value_estimate_note", "start_value_mc", "start_value_kind",
            "controller_iteration", "snapshots", "snapshots_note", "upper_bound_kind", "upper_bound_value",
            "iterations", "train_steps", "stop_reason")
    return {k: info[k] for k in keys if k in info}


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/jaxpomdp/xla``, else ``~/.cache/jaxpomdp/xla``."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxpomdp" / "xla"


def use_compile_cache(enabled: bool = True) -> Optional[str]:
    """Turns on JAX's persistent compilation cache for this process; returns its folder (None: off).

    A folder already configured (``JAX_COMPILATION_CACHE_DIR``, or the program
    embedding this one) is kept with JAX's settings. Otherwise the cache goes in
    :func:`default_cache_dir`, bounded to :data:`COMPILE_CACHE_BYTES` and locked
    with ``filelock`` (JAX reads and writes its entries under the lock, so runs at
    the same time never see half-written ones). Nothing is cached when the folder
    cannot be created or written, or ``filelock`` is missing: the run only compiles
    as it would without a cache. The command (:func:`main` with ``program=True``)
    calls this before solving.
    """
    if not enabled:
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    try:
        import filelock  # noqa: F401  (JAX locks the bounded cache with it)
    except ImportError:
        return None
    path = default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECONDS)
    return str(path)


def main(argv: Optional[Sequence[str]] = None, *, program: bool = False) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``program``: this process is the command (:func:`entry`): compiled programs are
    kept between runs (:func:`use_compile_cache`, unless ``--no-compile-cache``), and
    once the run has finished (reported, or stopped and written), SIGINT and SIGTERM
    are ignored instead of handed back to the handlers from before, so that a late
    Ctrl-C cannot turn a finished run into a killed one while the process exits. A
    program calling ``main`` keeps its own JAX configuration.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(problems.names()))
        return 0
    if program:
        use_compile_cache(not args.no_compile_cache)
    try:
        with STOP:
            status = run(args)
            if program:
                STOP.ignore()
            return status
    except (UserError, PomdpFormatError, InvalidModelError, CheckpointError, ConfigError, OSError) as e:
        if args.debug:
            raise
        print(f"jaxpomdp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxpomdp: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``jaxpomdp`` command and ``scripts/solve.py``: :func:`main` on ``sys.argv``, then exit with its status.

    After ``main`` returns, SIGINT and SIGTERM are ignored: a signal landing in the
    interpreter's teardown, where Python no longer runs handlers, would otherwise
    kill the finished process with the signal instead of its status.
    """
    status = main(program=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
