"""Figures for solver runs, beliefs and controllers (matplotlib, an optional dependency).

Install with ``pip install "jaxpomdp[plot]"``. matplotlib is imported inside each
function, so ``import jaxpomdp`` never needs it; without it every function
raises :class:`MatplotlibMissing` (an ``ImportError``) saying how to install it.
Where no display is available (and no notebook kernel is running) the ``Agg``
backend is used, so figures can always be saved.

Every function draws on ``ax`` (a new figure's axes when None) and returns the
axes, with labelled axes (and units) and a legend wherever more than one thing is
drawn:

* :func:`bounds_vs_time`: the certified lower and upper bounds at ``b0`` against
  solve time (``SolveResult.history`` of the point-based, blind and QMDP
  solvers), optionally beside a reference value; :func:`gap_vs_time` the gap on a
  log scale;
* :func:`value_vs_time`: Neural Value Iteration's network estimate and upper
  bound against planning time;
* :func:`learning_curve`: a policy-gradient run's objective estimate per
  iteration (or second, or simulated step);
* :func:`belief_bars` and :func:`belief_heatmap`: one belief, or a belief along an
  episode (state by time step, with the actions and observations);
* :func:`controller_graph`: a finite controller (:mod:`jaxpomdp.controller`)
  drawn as a graph with matplotlib alone (no Graphviz binary needed);
* :func:`convergence_figure` / :func:`save_convergence`: the figure of
  ``jaxpomdp --plot FILE`` for each kind of solver, written atomically.
"""

from __future__ import annotations

import io
import os
import sys
from collections import deque
from typing import Optional, Sequence

import numpy as np

__all__ = ["MatplotlibMissing", "bounds_vs_time", "gap_vs_time", "value_vs_time", "learning_curve",
           "belief_bars", "belief_heatmap", "controller_graph", "convergence_figure", "save_convergence",
           "check_output_path", "KINDS"]

#: The kinds of run :func:`convergence_figure` draws: alpha-vector solvers with
#: bounds, policy-gradient solvers, and Neural Value Iteration's controllers.
KINDS = ("bounds", "gradient", "controller")

INSTALL_HINT = 'pip install "jaxpomdp[plot]"'
TIME_LABEL = "solve time (s, compilation excluded)"
VALUE_LABEL = "value at b0 (expected discounted reward)"


class MatplotlibMissing(ImportError):
    """matplotlib is not installed (``pip install "jaxpomdp[plot]"``)."""


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise MatplotlibMissing(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    if "matplotlib.pyplot" not in sys.modules and _headless():
        matplotlib.use("Agg")
    return matplotlib


def _headless() -> bool:
    """No display to open windows on, no notebook kernel, no backend chosen by the user."""
    if os.environ.get("MPLBACKEND") or "ipykernel" in sys.modules:
        return False
    if sys.platform.startswith(("linux", "freebsd")):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def _axes(ax, figsize=(7.0, 4.0)):
    if ax is not None:
        return ax
    _matplotlib()
    import matplotlib.pyplot as plt
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _rows(history, width: int, what: str) -> np.ndarray:
    """History rows as float64[N, width] (None -> NaN); one row per step of the run."""
    rows = [tuple(np.nan if v is None else v for v in row) for row in history]
    if not rows:
        raise ValueError(f"{what}: the history is empty")
    arr = np.asarray(rows, np.float64)
    if arr.ndim != 2 or arr.shape[1] < width:
        raise ValueError(f"{what}: expected rows of at least {width} numbers, got shape {arr.shape}")
    return arr


def _reference(ax, reference, label):
    if reference is not None and np.isfinite(reference):
        ax.axhline(float(reference), color="black", linestyle="--", linewidth=1, label=label)


def _finish(ax, xlabel: str, ylabel: str, title: Optional[str], which: str = "major"):
    """Axis labels, a light grid, the legend and an optional title: every line plot ends so."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which=which, alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return ax


def bounds_vs_time(history, ax=None, *, reference: Optional[float] = None,
                   reference_label: str = "V*(b0), reference", label: Optional[str] = None,
                   title: Optional[str] = None):
    """Certified lower and upper bounds at ``b0`` against solve time.

    Args:
      history: rows ``(seconds, lower, upper, num_vectors, num_beliefs)``, as in
        ``SolveResult.history`` of the point-based, blind and QMDP solvers.
      ax: matplotlib axes to draw on (default: a new figure).
      reference: a known value to draw as a dashed line (e.g. ``V*(b0)``).
      reference_label: its legend entry.
      label: a prefix of the legend entries (to compare several runs on one axes).
      title: the axes title.

    Returns:
      The axes.
    """
    h = _rows(history, 3, "bounds_vs_time")
    ax = _axes(ax)
    t, lower, upper = h[:, 0], h[:, 1], h[:, 2]
    prefix = f"{label}: " if label else ""
    marker = "o" if len(h) < 3 else None
    (lo_line,) = ax.step(t, lower, where="post", marker=marker, label=f"{prefix}lower bound")
    if np.any(np.isfinite(upper)):
        (up_line,) = ax.step(t, upper, where="post", marker=marker, label=f"{prefix}upper bound")
        ax.fill_between(t, lower, upper, step="post", alpha=0.15, color=up_line.get_color(),
                        label=f"{prefix}gap (V* lies inside)")
    _reference(ax, reference, reference_label)
    return _finish(ax, TIME_LABEL, VALUE_LABEL, title)


def gap_vs_time(history, ax=None, *, label: Optional[str] = None, target: Optional[float] = None,
                title: Optional[str] = None):
    """``upper - lower`` at ``b0`` against solve time, on a log scale (history as in :func:`bounds_vs_time`)."""
    h = _rows(history, 3, "gap_vs_time")
    ax = _axes(ax)
    gap = h[:, 2] - h[:, 1]
    ok = np.isfinite(gap)
    shown = np.maximum(gap[ok], 1e-12)
    ax.step(h[ok, 0], shown, where="post", marker="o" if ok.sum() < 3 else None,
            label=f"{label}: gap" if label else "gap = upper - lower")
    if target is not None and target > 0:
        ax.axhline(target, color="black", linestyle=":", linewidth=1, label=f"target gap {target:g}")
    ax.set_yscale("log")
    return _finish(ax, TIME_LABEL, "gap at b0 (reward units, log scale)", title, which="both")


def value_vs_time(history, ax=None, *, reference: Optional[float] = None,
                  reference_label: str = "reference value", label: Optional[str] = None,
                  title: Optional[str] = None, snapshots=None):
    """Neural Value Iteration: the network estimate at ``b0`` (not certified) and the upper bound.

    Args:
      history: rows ``(seconds, value_estimate, upper, num_nodes, num_beliefs)``,
        ``SolveResult.history`` of :func:`jaxpomdp.solvers.nvi.solve` (``upper``
        may be None).
      ax, reference, reference_label, label, title: as in :func:`bounds_vs_time`.
      snapshots: optional rows ``(seconds, iteration, value, stderr)``,
        ``info["snapshots"]`` of the solve: the controller's own value at ``b0``
        (simulated, drawn with its 95% interval, or exact), as points.
    """
    h = _rows(history, 3, "value_vs_time")
    ax = _axes(ax)
    prefix = f"{label}: " if label else ""
    marker = "o" if len(h) < 3 else "." if len(h) < 50 else None
    ax.plot(h[:, 0], h[:, 1], marker=marker, label=f"{prefix}network estimate at b0 (not certified)")
    if np.any(np.isfinite(h[:, 2])):
        ax.plot(h[:, 0], h[:, 2], linestyle="-.", marker="o" if len(h) < 3 else None,
                label=f"{prefix}upper bound (certified)")
    if snapshots is not None and len(snapshots):
        v = _rows(snapshots, 4, "value_vs_time's snapshots")
        ax.errorbar(v[:, 0], v[:, 2], yerr=1.96 * v[:, 3], fmt="s", markersize=3, capsize=2, color="tab:purple",
                    label=f"{prefix}controller's value at b0 ({'exact' if not np.any(v[:, 3]) else 'simulated, 95%'})")
    _reference(ax, reference, reference_label)
    return _finish(ax, "planning time (s, compilation excluded)", VALUE_LABEL, title)


_LEARNING_X = {"iteration": (3, "iteration"), "seconds": (0, "solve time (s, compilation excluded)"),
               "steps": (4, "environment steps simulated")}


def learning_curve(history, ax=None, *, x: str = "iteration", reference: Optional[float] = None,
                   reference_label: str = "optimum", label: Optional[str] = None,
                   ylabel: str = "average reward per step (estimate)", title: Optional[str] = None):
    """A policy-gradient run's objective estimate as it learns.

    Args:
      history: rows ``(seconds, eta_estimate, grad_norm, iteration, steps)`` as in
        ``SolveResult.history`` of :func:`jaxpomdp.solvers.gpomdp.solve` and
        :func:`jaxpomdp.solvers.conjpomdp.solve`, or a plain sequence of values
        (one per iteration).
      ax: axes to draw on (default: a new figure).
      x: ``"iteration"``, ``"seconds"`` or ``"steps"`` (environment steps); plain
        values have only iterations.
      reference: a value to draw as a dashed line (e.g. the optimum).
      reference_label, label, ylabel, title: legend entries and labels.
    """
    if x not in _LEARNING_X:
        raise ValueError(f"x must be one of {sorted(_LEARNING_X)}; got {x!r}")
    values = np.asarray(history, dtype=object)
    if values.ndim == 1 and all(np.isscalar(v) or np.ndim(v) == 0 for v in values):
        if x != "iteration":
            raise ValueError("plain values have only iterations (x='iteration')")
        y = np.asarray(values, np.float64)
        xs = np.arange(1, len(y) + 1)
    else:
        h = _rows(history, 5 if x == "steps" else 4, "learning_curve")
        col, _ = _LEARNING_X[x]
        xs, y = h[:, col], h[:, 1]
    if len(y) == 0:
        raise ValueError("learning_curve: the history is empty")
    ax = _axes(ax)
    ax.plot(xs, y, marker="." if len(y) < 60 else None, label=label or "objective estimate")
    _reference(ax, reference, reference_label)
    return _finish(ax, _LEARNING_X[x][1], ylabel, title)


def _names(names, count, prefix):
    if names is None:
        return [f"{prefix}{i}" for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"{len(names)} names given for {count} {prefix or 'item'}s")
    return names


def belief_bars(belief, ax=None, *, state_names: Optional[Sequence[str]] = None,
                labels: Optional[Sequence[str]] = None, title: Optional[str] = None):
    """A belief as bars, one per state; several beliefs (float[K, S]) as grouped bars.

    Args:
      belief: float[S] or float[K, S].
      ax: axes (default: a new figure).
      state_names: the x tick labels (default ``s0, s1, ...``; none past 40 states).
      labels: one legend entry per belief (default ``belief 0, ...``; a single belief
        gets a legend only when a label is given).
      title: the axes title.
    """
    b = np.atleast_2d(np.asarray(belief, np.float64))
    if b.ndim != 2:
        raise ValueError(f"belief must be float[S] or float[K, S]; got shape {np.shape(belief)}")
    K, S = b.shape
    single = np.ndim(belief) == 1
    if labels is None:
        labels = [None] if single else [f"belief {k}" for k in range(K)]
    if len(labels) != K:
        raise ValueError(f"{len(labels)} labels for {K} beliefs")
    names = _names(state_names, S, "s")
    ax = _axes(ax, figsize=(max(4.0, min(12.0, 0.6 * S * max(1, K) + 2)), 3.5))
    width = 0.8 / K
    xs = np.arange(S)
    for k in range(K):
        ax.bar(xs + (k - (K - 1) / 2) * width, b[k], width=width, label=labels[k])
    if S <= 40:
        ax.set_xticks(xs, names, rotation=0 if S <= 8 else 90)
    ax.set_xlabel("state")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    if any(lab is not None for lab in labels):
        ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return ax


def belief_heatmap(beliefs, ax=None, *, state_names: Optional[Sequence[str]] = None,
                   actions: Optional[Sequence[int]] = None, observations: Optional[Sequence[int]] = None,
                   action_names: Optional[Sequence[str]] = None,
                   observation_names: Optional[Sequence[str]] = None, title: Optional[str] = None):
    """The belief along an episode: states (rows) by time step (columns), colour = probability.

    Args:
      beliefs: float[T + 1, S] the beliefs ``b_0, ..., b_T``.
      ax: axes (default: a new figure).
      state_names: the row labels.
      actions, observations: int[T] ``a_t`` and ``o_t`` (``b_{t+1}`` follows them);
        when given (and ``T <= 30``), each step's tick reads ``a_t / o_t``.
      action_names, observation_names: their names (default: numbers).
      title: the axes title.
    """
    b = np.asarray(beliefs, np.float64)
    if b.ndim != 2:
        raise ValueError(f"beliefs must be float[T + 1, S]; got shape {b.shape}")
    T1, S = b.shape
    names = _names(state_names, S, "s")
    ax = _axes(ax, figsize=(max(5.0, min(14.0, 0.45 * T1 + 3)), max(2.5, min(8.0, 0.35 * S + 1.5))))
    image = ax.imshow(b.T, aspect="auto", origin="lower", cmap="viridis", vmin=0.0, vmax=1.0,
                      interpolation="nearest", extent=(-0.5, T1 - 0.5, -0.5, S - 0.5))
    ax.figure.colorbar(image, ax=ax, label="probability b_t(s)")
    if S <= 40:
        ax.set_yticks(np.arange(S), names)
    ax.set_ylabel("state")
    ax.set_xlabel("time step t")
    if actions is not None and len(actions) and T1 <= 31:
        an = (lambda a: action_names[int(a)]) if action_names is not None else str
        on = (lambda o: observation_names[int(o)]) if observation_names is not None else str
        ticks = [f"{t}" for t in range(T1)]
        for t in range(min(len(actions), T1 - 1)):
            o = f"\n{on(observations[t])}" if observations is not None else ""
            ticks[t + 1] = f"{t + 1}\n{an(actions[t])}{o}"
        ax.set_xticks(np.arange(T1), ticks, fontsize=7)
        ax.set_xlabel("time step t (the action and observation that led to b_t)")
    if title:
        ax.set_title(title)
    return ax


# ------------------------------------------------------------------ controllers
def _controller_nodes(controller, reachable_only: bool):
    """Node order as in ``to_pg``/``to_dot``: the start node first, the others in bank order."""
    from jaxpomdp.controller import reachable
    keep = reachable(controller) if reachable_only else np.asarray(controller.active).copy()
    start = int(controller.start)
    keep[start] = True
    return [start] + [int(i) for i in np.flatnonzero(keep) if i != start]


def _layers(order, edges):
    """Breadth-first depth of each kept node: from the start, then from each node not reached yet
    (in order), its layers following the previous ones."""
    kept = set(order)
    depth: dict[int, int] = {}
    offset = 0
    for root in order:
        if root in depth:
            continue
        depth[root] = offset
        queue = deque([root])
        while queue:
            n = queue.popleft()
            for m in edges[n]:
                m = int(m)
                if m in kept and m not in depth:
                    depth[m] = depth[n] + 1
                    queue.append(m)
        offset = max(depth.values()) + 1
    return depth


def _layout(shown, layer, max_columns: int = 6):
    """Node positions: layers left to right, wrapped into bands of ``max_columns`` layers
    (alternate bands right to left, so that consecutive layers stay side by side)."""
    columns: dict[int, list[int]] = {}
    for n in shown:
        columns.setdefault(layer[n], []).append(n)
    ranks = {L: i for i, L in enumerate(sorted(columns))}
    bands: dict[int, int] = {}
    for L, nodes in columns.items():
        b = ranks[L] // max_columns
        bands[b] = max(bands.get(b, 0), len(nodes))
    top = {}
    y = 0.0
    for b in sorted(bands):
        top[b] = y
        y -= 2.2 * bands[b] + 0.8
    pos = {}
    for L, nodes in columns.items():
        b, c = divmod(ranks[L], max_columns)
        if b % 2:
            c = max_columns - 1 - c
        for i, n in enumerate(nodes):
            pos[n] = (3.0 * c, top[b] - 2.2 * (i + (bands[b] - len(nodes)) / 2))
    return pos


def _towards(p, q, distance):
    """The point ``distance`` from ``p`` in the direction of ``q``."""
    v = np.subtract(q, p)
    norm = float(np.hypot(*v)) or 1.0
    return (p[0] + distance * v[0] / norm, p[1] + distance * v[1] / norm)


def controller_graph(controller, ax=None, *, action_names: Optional[Sequence[str]] = None,
                     observation_names: Optional[Sequence[str]] = None, reachable_only: bool = True,
                     max_nodes: int = 40, title: Optional[str] = None):
    """A finite controller drawn as a graph (matplotlib only).

    Nodes are numbered as in :func:`jaxpomdp.controller.to_pg` (start node 0,
    drawn with a double ring) and laid out in columns by their breadth-first
    distance from the start (wrapped into bands of six columns; nodes not
    reachable from the start follow, each group from its lowest number); each
    node shows its action, each arrow the observations that lead along it (edges
    to the same successor merged, as in :func:`jaxpomdp.controller.to_dot`).

    Args:
      controller: a :class:`~jaxpomdp.controller.Controller` or a policy holding
        one (``.controller``, e.g. :class:`~jaxpomdp.controller.ControllerPolicy`).
      ax: axes (default: a new figure sized to the graph).
      action_names, observation_names: names (default: numbers).
      reachable_only: only the nodes reachable from the start (else all active ones).
      max_nodes: draw at most this many nodes (the first in breadth-first order);
        the title says how many were left out.
      title: the axes title (default: the node count).
    """
    _matplotlib()
    import matplotlib.patches as mpatches
    from matplotlib.lines import Line2D

    controller = getattr(controller, "controller", controller)
    if not hasattr(controller, "edges") or not hasattr(controller, "actions"):
        raise TypeError(f"controller_graph needs a jaxpomdp.controller.Controller; got {type(controller).__name__}")
    order = _controller_nodes(controller, reachable_only)
    actions, edges = np.asarray(controller.actions), np.asarray(controller.edges)
    number = {old: new for new, old in enumerate(order)}
    layer = _layers(order, edges)
    shown = sorted(order, key=lambda n: (layer[n], number[n]))[:max(1, int(max_nodes))]
    shown_set = set(shown)
    pos = _layout(shown, layer)
    an = (lambda a: str(action_names[a])) if action_names is not None else str
    on = (lambda o: str(observation_names[o])) if observation_names is not None else str

    width = max(p[0] for p in pos.values()) - min(p[0] for p in pos.values())
    height = max(p[1] for p in pos.values()) - min(p[1] for p in pos.values())
    ax = _axes(ax, figsize=(min(16.0, 0.8 * width + 5), min(12.0, 0.6 * height + 2.5)))
    radius = 0.5
    for n in shown:
        x, y = pos[n]
        ax.add_patch(mpatches.Circle((x, y), radius, facecolor="#dbe9f6", edgecolor="#1f4e79", linewidth=1.5,
                                     zorder=3))
        if n == order[0]:
            ax.add_patch(mpatches.Circle((x, y), radius + 0.1, fill=False, edgecolor="#1f4e79", linewidth=1.5,
                                         zorder=3))
        ax.text(x, y, f"n{number[n]}\n{an(int(actions[n]))}", ha="center", va="center", fontsize=8, zorder=4)
    hidden_edges = 0
    middle = float(np.mean([p[1] for p in pos.values()]))
    for n in shown:
        groups: dict[int, list[str]] = {}
        for o, m in enumerate(edges[n]):
            groups.setdefault(int(m), []).append(on(o))
        for m, obs in groups.items():
            text = ", ".join(obs)
            if m not in shown_set:
                hidden_edges += 1
                continue
            x0, y0 = pos[n]
            if m == n:  # a self-loop above the node
                ax.add_patch(mpatches.FancyArrowPatch((x0 - 0.3, y0 + radius - 0.05), (x0 + 0.3, y0 + radius - 0.05),
                                                      connectionstyle="arc3,rad=-1.6", arrowstyle="-|>",
                                                      mutation_scale=10, color="#555555", zorder=2))
                ax.text(x0, y0 + radius + 0.55, text, ha="center", va="bottom", fontsize=7, color="#333333",
                        zorder=5)
                continue
            x1, y1 = pos[m]
            # edges that jump over a column bend further, around the nodes between
            # (to the outside of the layout: up in its upper half, down in its lower half)
            rad = 0.2
            if abs(x1 - x0) > 3.0:
                rad = 0.4 if (x0 - x1) * (y0 + y1 - 2 * middle + 1e-9) > 0 else -0.4
            # matplotlib's arc3 control point is mid + rad (dy, -dx): leave and enter the
            # circles towards it, so that the arrow heads stay outside the nodes
            dx, dy = x1 - x0, y1 - y0
            cx, cy = (x0 + x1) / 2 + rad * dy, (y0 + y1) / 2 - rad * dx
            start = _towards((x0, y0), (cx, cy), radius + 0.02)
            end = _towards((x1, y1), (cx, cy), radius + 0.12)
            ax.add_patch(mpatches.FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={rad}",
                                                  arrowstyle="-|>", mutation_scale=12, color="#555555",
                                                  shrinkA=0, shrinkB=0, zorder=2))
            # the midpoint of the quadratic curve: halfway from the chord's middle to the control point
            mx, my = (x0 + x1) / 2 + rad / 2 * dy, (y0 + y1) / 2 - rad / 2 * dx
            ax.text(mx, my, text, ha="center", va="center", fontsize=7, color="#333333", zorder=5,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    handles = [
        Line2D([], [], marker="o", markersize=14, markerfacecolor="#dbe9f6", markeredgecolor="#1f4e79",
               linestyle="none", label="node: number, action"),
        Line2D([], [], marker="o", markersize=16, markerfacecolor="#dbe9f6", markeredgecolor="#1f4e79",
               markeredgewidth=3, linestyle="none", label="start node (n0)"),
        Line2D([], [], color="#555555", marker=">", label="edge: observations"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    left_out = len(order) - len(shown)
    if title is None:
        title = f"controller: {len(order)} {'reachable' if reachable_only else 'active'} nodes"
        if left_out:
            title += f" (first {len(shown)} drawn, {hidden_edges} edges to the others not drawn)"
    ax.set_title(title)
    return ax


# ------------------------------------------------------------------ the CLI's figure
def convergence_figure(result, kind: str, *, title: Optional[str] = None, reference: Optional[float] = None,
                       target_gap: Optional[float] = None):
    """The figure of a whole run (a ``matplotlib.figure.Figure``, not registered with pyplot).

    Args:
      result: a :class:`~jaxpomdp.solvers.SolveResult`.
      kind: ``"bounds"`` (bounds vs time above, the gap on a log scale below),
        ``"gradient"`` (the learning curve above, ``|gradient|`` below; the exact
        average reward of the final policy as a dashed line when known) or
        ``"controller"`` (NVI: the value estimate, the controller's valuations
        and the upper bound above, the number of controller nodes below).
      title: the figure title.
      reference: a value to draw on the top panel.
      target_gap: the target gap to mark on the gap panel (``"bounds"``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    _matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    history = list(result.history)
    if not history:  # e.g. a gradient method that stopped before its first iteration
        top.text(0.5, 0.5, "the solver recorded no steps", ha="center", va="center", transform=top.transAxes)
        top.set(xlabel="", ylabel=VALUE_LABEL if kind != "gradient" else "average reward per step")
        bottom.set(xlabel=TIME_LABEL, ylabel="(no data)")
    elif kind == "bounds":
        bounds_vs_time(history, top, reference=reference)
        if any(row[2] is not None and np.isfinite(row[2]) for row in history):
            gap_vs_time(history, bottom, target=target_gap)
        else:
            bottom.set_visible(False)
        top.set_xlabel("")
    elif kind == "gradient":
        info = getattr(result, "info", {}) or {}
        exact = info.get("exact_average_reward")
        ref = reference if reference is not None else exact
        ref_label = "reference" if reference is not None else "exact average reward of the final policy"
        learning_curve(history, top, x="seconds", reference=ref, reference_label=ref_label,
                       label="estimate (mean reward per step of the chains)",
                       ylabel="average reward per step")
        h = _rows(history, 3, "learning_curve")
        bottom.plot(h[:, 0], h[:, 2], color="tab:red", marker="o" if len(h) < 3 else None,
                    label="|gradient estimate|")
        bottom.set_yscale("log")
        bottom.set_xlabel("solve time (s, compilation excluded)")
        bottom.set_ylabel("gradient norm (log scale)")
        bottom.grid(True, which="both", alpha=0.3)
        bottom.legend(loc="best")
        top.set_xlabel("")
    else:
        value_vs_time(history, top, reference=reference, snapshots=(getattr(result, "info", {}) or {}).get("snapshots"))
        h = _rows(history, 4, "value_vs_time")
        bottom.step(h[:, 0], h[:, 3], where="post", color="tab:green", marker="o" if len(h) < 3 else None,
                    label="active controller nodes")
        bottom.set_xlabel("planning time (s, compilation excluded)")
        bottom.set_ylabel("nodes")
        bottom.grid(True, alpha=0.3)
        bottom.legend(loc="best")
        top.set_xlabel("")
    if title:
        fig.suptitle(title)
    return fig


def check_output_path(path) -> str:
    """Checks, before a long run, that a figure can be written to ``path``; returns its format.

    Raises:
      MatplotlibMissing: matplotlib is not installed.
      ValueError: the file name has no extension matplotlib can write.
      OSError: the folder does not exist or is not writable, or ``path`` is a folder.
    """
    _matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise ValueError(f"cannot write a figure to {path!r}: give a file name ending in one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not a figure file")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: no such folder {folder}")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write {path}: the folder {folder} is not writable")
    return ext


def save_convergence(path, result, kind: str, *, title: Optional[str] = None, reference: Optional[float] = None,
                     target_gap: Optional[float] = None, dpi: int = 120) -> None:
    """Writes :func:`convergence_figure` to ``path`` (format from its extension), atomically.

    The figure is rendered in memory and written through a temporary file and a
    rename: nothing half-written is ever left at ``path``.
    """
    from jaxpomdp.io import atomic_write

    fmt = check_output_path(path)
    fig = convergence_figure(result, kind, title=title, reference=reference, target_gap=target_gap)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    atomic_write(path, buf.getvalue())
