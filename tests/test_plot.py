"""Figures: labelled axes and legends, the command line's --plot, and its user errors."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from jaxpomdp import plot  # noqa: E402
from jaxpomdp.cli import main  # noqa: E402
from jaxpomdp.controller import Controller, ControllerPolicy  # noqa: E402
from jaxpomdp.solvers import SolveResult  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

BOUNDS_HISTORY = [(0.0, -20.0, 87.2, 3, 1), (0.5, 10.0, 40.0, 9, 12), (1.0, 19.0, 20.0, 14, 30),
                  (1.5, 19.37, 19.372, 15, 31)]
GRADIENT_HISTORY = [(0.1 * i, 0.2 + 0.6 * (1 - 0.7 ** i), 1.0 * 0.7 ** i, i, 64000 * i) for i in range(1, 12)]
NVI_HISTORY = [(0.0, 2.0, 22.41, 5, 10), (1.0, 6.0, 22.41, 9, 40), (2.0, 8.5, 22.41, 12, 64)]


def result(history, **info):
    return SolveResult(policy=None, lower_bound=None, upper_bound=None, solve_seconds=1.0, compile_seconds=1.0,
                       history=history, info=info)


def legend_texts(ax):
    legend = ax.get_legend()
    assert legend is not None, "no legend"
    return [t.get_text() for t in legend.get_texts()]


def assert_labelled(ax):
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), (ax.get_xlabel(), ax.get_ylabel())


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


def test_bounds_vs_time_has_units_legend_and_reference():
    ax = plot.bounds_vs_time(BOUNDS_HISTORY, reference=19.3714, title="Tiger")
    assert_labelled(ax)
    assert "(s" in ax.get_xlabel() and "reward" in ax.get_ylabel()
    texts = legend_texts(ax)
    assert any("lower" in t for t in texts) and any("upper" in t for t in texts) and any("V*" in t for t in texts)
    # the lines carry the history's values
    lower = ax.get_lines()[0]
    np.testing.assert_allclose(lower.get_ydata(), [r[1] for r in BOUNDS_HISTORY])
    gap = plot.gap_vs_time(BOUNDS_HISTORY, target=1e-3)
    assert_labelled(gap)
    assert gap.get_yscale() == "log" and any("target" in t for t in legend_texts(gap))


def test_bounds_vs_time_on_a_single_row_and_without_upper_bounds():
    ax = plot.bounds_vs_time([(0.01, -20.0, 189.0, 1, 1)])  # blind / qmdp: one row
    assert len(ax.get_lines()) == 2 and ax.get_lines()[0].get_marker() == "o"
    ax = plot.bounds_vs_time([(0.0, 1.0, None, 1, 1), (1.0, 2.0, None, 1, 1)])
    assert [t for t in legend_texts(ax) if "upper" in t] == []
    with pytest.raises(ValueError, match="empty"):
        plot.bounds_vs_time([])


def test_learning_curve_and_value_vs_time():
    ax = plot.learning_curve(GRADIENT_HISTORY, reference=0.8, reference_label="optimum 0.8")
    assert_labelled(ax)
    assert ax.get_xlabel() == "iteration" and "optimum 0.8" in legend_texts(ax)
    ax = plot.learning_curve(GRADIENT_HISTORY, x="steps")
    assert "steps" in ax.get_xlabel()
    ax = plot.learning_curve([0.1, 0.5, 0.7], label="eta")
    assert legend_texts(ax) == ["eta"]
    with pytest.raises(ValueError, match="x must be"):
        plot.learning_curve(GRADIENT_HISTORY, x="minutes")
    ax = plot.value_vs_time(NVI_HISTORY)
    assert_labelled(ax)
    texts = legend_texts(ax)
    assert any("not certified" in t for t in texts) and any("upper bound" in t for t in texts)
    assert not any("controller's value" in t for t in texts)
    # the controller's own valuations, with their 95% intervals (exact ones: stderr 0)
    ax = plot.value_vs_time(NVI_HISTORY, snapshots=[(1.0, 20, 5.0, 0.5), (2.0, 40, 6.0, 0.25)])
    assert any("controller's value at b0 (simulated, 95%)" in t for t in legend_texts(ax))
    (bars,) = [c for c in ax.containers if hasattr(c, "has_yerr")]
    assert bars.has_yerr
    np.testing.assert_allclose(np.asarray(bars.lines[0].get_ydata()), [5.0, 6.0])
    ax = plot.value_vs_time(NVI_HISTORY, snapshots=[(1.0, 1, 5.0, 0.0)])
    assert any("controller's value at b0 (exact)" in t for t in legend_texts(ax))
    with pytest.raises(ValueError, match="snapshots"):
        plot.value_vs_time(NVI_HISTORY, snapshots=[(1.0, 2.0)])


def test_belief_bars_and_heatmap():
    ax = plot.belief_bars([0.85, 0.15], state_names=["tiger-left", "tiger-right"], labels=["after listening"])
    assert_labelled(ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tiger-left", "tiger-right"]
    assert legend_texts(ax) == ["after listening"]
    ax = plot.belief_bars(np.array([[0.5, 0.5], [0.85, 0.15]]), labels=["b0", "b1"])
    assert legend_texts(ax) == ["b0", "b1"] and len(ax.patches) == 4
    beliefs = np.array([[0.5, 0.5], [0.85, 0.15], [0.97, 0.03], [0.5, 0.5]])
    ax = plot.belief_heatmap(beliefs, state_names=["L", "R"], actions=[0, 0, 2], observations=[0, 0, 1],
                             action_names=["listen", "open-left", "open-right"], observation_names=["hl", "hr"])
    assert_labelled(ax)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[1] == "1\nlisten\nhl" and ticks[3] == "3\nopen-right\nhr"
    colorbar = ax.figure.axes[-1]
    assert "probability" in colorbar.get_ylabel()
    with pytest.raises(ValueError, match="names"):
        plot.belief_bars([0.5, 0.5], state_names=["only one"])


def tiger_controller():
    # n0 listen -> n1 (heard left) / n2 (heard right); n1 listen: left -> n3 (open right), right -> n0; ...
    actions = jnp.array([0, 0, 0, 2, 1, 0], jnp.int32)
    edges = jnp.array([[1, 2], [3, 0], [0, 4], [0, 0], [0, 0], [5, 5]], jnp.int32)
    active = jnp.array([True, True, True, True, True, False])
    return Controller(actions, edges, active, None, jnp.int32(0))


def test_controller_graph_draws_every_reachable_node_with_its_action():
    names = ["listen", "open-left", "open-right"]
    ax = plot.controller_graph(ControllerPolicy(tiger_controller()), action_names=names,
                               observation_names=["left", "right"])
    texts = [t.get_text() for t in ax.texts]
    for n, a in [(0, "listen"), (3, "open-right"), (4, "open-left")]:
        assert f"n{n}\n{a}" in texts
    assert not any(t.startswith("n5") for t in texts)  # inactive, unreachable
    assert "5 reachable nodes" in ax.get_title()
    assert {"left", "right", "left, right"} <= set(texts)  # edge labels, merged where they share a successor
    assert any("start" in t for t in legend_texts(ax))
    ax = plot.controller_graph(tiger_controller(), max_nodes=2)
    assert "first 2 drawn" in ax.get_title()
    with pytest.raises(TypeError, match="Controller"):
        plot.controller_graph(object())


@pytest.mark.parametrize("kind, history, info", [("bounds", BOUNDS_HISTORY, {}),
                                                 ("gradient", GRADIENT_HISTORY, {"exact_average_reward": 0.79}),
                                                 ("controller", NVI_HISTORY, {}),
                                                 ("controller", NVI_HISTORY, {"snapshots": [[1.0, 2, 3.0, 0.1]]})])
def test_convergence_figures_are_labelled_and_saved_atomically(tmp_path, kind, history, info):
    fig = plot.convergence_figure(result(history, **info), kind, title="t")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    for ax in visible:
        assert ax.get_ylabel() and ax.get_legend() is not None
    assert visible[-1].get_xlabel()
    out = tmp_path / f"{kind}.png"
    plot.save_convergence(out, result(history, **info), kind)
    assert out.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 400 and image.shape[1] > 600
    assert os.listdir(tmp_path) == [out.name]  # no temporary file left behind
    with pytest.raises(ValueError, match="kind"):
        plot.convergence_figure(result(history), "other")


def test_an_empty_history_still_gives_a_labelled_figure(tmp_path):
    for kind in plot.KINDS:
        fig = plot.convergence_figure(result([]), kind)
        assert "no steps" in fig.axes[0].texts[0].get_text() and fig.axes[1].get_xlabel()
    plot.save_convergence(tmp_path / "empty.png", result([]), "gradient")
    assert (tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC


def test_check_output_path(tmp_path):
    assert plot.check_output_path(tmp_path / "a.png") == "png"
    assert plot.check_output_path(tmp_path / "a.PDF") == "pdf"
    with pytest.raises(ValueError, match="ending in one of"):
        plot.check_output_path(tmp_path / "a.txt")
    with pytest.raises(FileNotFoundError):
        plot.check_output_path(tmp_path / "missing" / "a.png")


def test_solve_tiger_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "out.png"
    code = main(["tiger", "--plot", str(out), "--quiet", "--episodes", "200"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and f"figure       {out}" in stdout
    assert matplotlib.image.imread(out).shape[1] > 600


def test_plot_user_errors_fail_fast_in_one_line(tmp_path, capsys):
    code = main(["tiger", "--plot", str(tmp_path / "no" / "out.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no such folder" in err and "Traceback" not in err
    code = main(["tiger", "--plot", str(tmp_path / "out.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--plot" in err
    assert os.listdir(tmp_path) == []


def test_plot_failure_while_saving_leaves_nothing(tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        raise ValueError("renderer failed")

    monkeypatch.setattr(Figure, "savefig", broken)
    out = tmp_path / "out.png"
    code = main(["tiger", "--solver", "blind", "--plot", str(out), "--quiet", "--episodes", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "renderer failed" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_without_matplotlib_the_cli_says_how_to_install_it(tmp_path):
    # a fresh interpreter in which `import matplotlib` fails
    script = textwrap.dedent(f"""
        import sys
        sys.modules["matplotlib"] = None
        from jaxpomdp.cli import main
        sys.exit(main(["tiger", "--plot", {str(tmp_path / 'out.png')!r}, "--quiet"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and 'pip install "jaxpomdp[plot]"' in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.png").exists()
    # and the library's own functions raise an ImportError that says the same
    script = "import sys; sys.modules['matplotlib'] = None\nfrom jaxpomdp import plot\n" \
             "try:\n    plot.bounds_vs_time([(0, 1, 2, 1, 1)])\nexcept ImportError as e:\n    print(e)"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert 'pip install "jaxpomdp[plot]"' in proc.stdout
