"""Checkpoints of the point-based solvers and NVI: stopped and resumed equals never stopped;
bad checkpoints are refused in one line; writes are atomic. (The gradient solvers:
tests/test_checkpoint_gradient.py; Ctrl-C through the command line: tests/test_interrupt.py.)"""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest

from jaxpomdp import checkpoint, problems
from jaxpomdp.checkpoint import Checkpointer, StopRequest, load
from jaxpomdp.errors import CheckpointError
from jaxpomdp.solvers import nvi, point_based
from test_nvi import SMALL


def stop_after(k: int):
    """A ``stop`` callable that asks for a stop at its (k+1)-th poll (after k steps)."""
    polls = {"n": 0}

    def stop():
        polls["n"] += 1
        return polls["n"] > k
    return stop


def _same_result(a, b):
    np.testing.assert_array_equal(a.alphas, b.alphas)
    np.testing.assert_array_equal(a.alpha_actions, b.alpha_actions)
    assert (a.lower_bound, a.upper_bound, a.info) == (b.lower_bound, b.upper_bound, b.info)
    assert [row[1:] for row in a.history] == [row[1:] for row in b.history]


@pytest.mark.parametrize("method, n, k", [("hsvi", 20, 7), ("pbvi", 8, 3), ("perseus", 8, 3)])
def test_point_based_stopped_and_resumed_equals_never_stopped(tmp_path, method, n, k):
    model = problems.get("tiger")
    kw = dict(method=method, time_limit=None, max_iterations=n, target_gap=0.0, seed=1, perseus_beliefs=100)
    ref = point_based.solve(model, **kw)
    ckpt = Checkpointer(tmp_path, every=1e9)
    cut = point_based.solve(model, checkpoint=ckpt, stop=stop_after(k), **kw)
    assert cut.info["stop_reason"] == "stopped" and cut.info["iterations"] == k
    assert ckpt.saves == 1  # not due before: written once, at the stop
    resumed = point_based.solve(model, resume=load(tmp_path), checkpoint=ckpt, **kw)
    assert resumed.info["stop_reason"] == "max_iterations"
    _same_result(ref, resumed)
    # resuming the finished run's checkpoint changes nothing
    _same_result(ref, point_based.solve(model, resume=load(tmp_path), **kw))


def test_point_based_resume_twice_and_after_set_growth(tmp_path):
    """Stopped twice on a model whose sets grow and get pruned in between (4x3: hundreds of vectors).

    8 trials per step rather than the default 16: the sets still grow to ~300 vectors by the first stop and
    ~1,000 by the second, and are pruned at step 8, at about half the cost of the steps."""
    model = problems.get("4x3.95")
    kw = dict(time_limit=None, max_iterations=9, target_gap=0.0, seed=3, config=point_based.Config(width=8))
    ref = point_based.solve(model, **kw)
    ckpt = Checkpointer(tmp_path, every=1e9)
    point_based.solve(model, checkpoint=ckpt, stop=stop_after(2), **kw)
    point_based.solve(model, checkpoint=ckpt, resume=load(tmp_path), stop=stop_after(5), **kw)
    assert load(tmp_path).loop["iteration"] == 7
    _same_result(ref, point_based.solve(model, resume=load(tmp_path), **kw))


def test_checkpoints_are_written_when_due_and_hold_only_the_rows_in_use(tmp_path):
    model = problems.get("tiger")
    ckpt = Checkpointer(tmp_path, every=1e-9)
    result = point_based.solve(model, time_limit=None, max_iterations=5, target_gap=0.0, checkpoint=ckpt)
    assert ckpt.saves == 5 + 1  # after every step (always due) and at the end
    saved = load(tmp_path)
    state = saved.restore({"state": point_based._in_use(point_based.init(model)), "beliefs": None})["state"]
    assert state.alphas.shape[0] == int(state.num_alphas) and state.points.shape[0] == int(state.num_points)
    assert saved.loop["capacities"][0] >= 256 and saved.solver == "hsvi"
    assert [tuple(r) for r in saved.history] == [tuple(r) for r in result.history]


def test_time_limit_counts_the_seconds_before_the_checkpoint(tmp_path):
    model = problems.get("tiger")
    ckpt = Checkpointer(tmp_path, every=1e9)
    point_based.solve(model, time_limit=None, max_iterations=3, target_gap=0.0, checkpoint=ckpt)
    elapsed = load(tmp_path).loop["elapsed"]
    r = point_based.solve(model, time_limit=elapsed / 2, target_gap=0.0, resume=load(tmp_path))
    assert r.info["stop_reason"] == "time limit" and r.info["iterations"] == 3
    assert r.solve_seconds >= elapsed


#: tests/test_nvi.py's SMALL, the NVI tests' shared Tiger configuration: its explore / train / init (10-30 s to
#: compile per distinct configuration) are compiled once for the whole session. Edge refreshes included: their
#: random choices must resume too.
NVI_SMALL = SMALL


def test_nvi_stopped_and_resumed_equals_never_stopped(tmp_path):
    model = problems.get("tiger")
    config = NVI_SMALL
    kw = dict(time_limit=None, max_iterations=5, seed=2, config=config, warmup_steps=20)
    ref = nvi.solve(model, **kw)
    ckpt = Checkpointer(tmp_path, every=1e9)
    cut = nvi.solve(model, checkpoint=ckpt, stop=stop_after(2), **kw)
    assert cut.info["stop_reason"] == "stopped" and cut.info["iterations"] == 2
    resumed = nvi.solve(model, resume=load(tmp_path), **kw)
    for x, y in zip(jax.tree.leaves(ref.policy.controller), jax.tree.leaves(resumed.policy.controller)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for key in ("value_estimate", "num_nodes", "iterations", "train_steps", "final_loss", "start_node"):
        assert ref.info[key] == resumed.info[key], key
    assert [row[1:] for row in ref.history] == [row[1:] for row in resumed.history]
    # the controller's valuations before the stop are kept (their seconds include the time before it)
    assert [row[1:] for row in ref.info["snapshots"]] == [row[1:] for row in resumed.info["snapshots"]]
    assert [row[1] for row in cut.info["snapshots"]] == [1, 2]
    # the message names the field that differs, not the whole config
    with pytest.raises(CheckpointError,
                       match=rf"other settings: config\.train_steps {config.train_steps} \(now 11\); "):
        nvi.solve(model, resume=load(tmp_path), **{**kw, "config": config._replace(train_steps=11)})


# ------------------------------------------------------------------ refusals
@pytest.fixture
def tiger_checkpoint(tmp_path):
    point_based.solve(problems.get("tiger"), time_limit=None, max_iterations=2, checkpoint=Checkpointer(tmp_path))
    return tmp_path


def test_a_checkpoint_is_refused_by_another_solver_model_seed_or_precision(tiger_checkpoint):
    saved = load(tiger_checkpoint)
    tiger = problems.get("tiger")
    with pytest.raises(CheckpointError, match="solver 'hsvi', not 'pbvi'"):
        point_based.solve(tiger, method="pbvi", max_iterations=3, resume=saved)
    with pytest.raises(CheckpointError, match="another model"):
        point_based.solve(problems.tiger(discount=0.9), resume=saved)
    with pytest.raises(CheckpointError, match=r"other settings: seed 0 \(now 5\)"):
        point_based.solve(tiger, seed=5, resume=saved)
    with pytest.raises(CheckpointError,
                       match=rf"other settings: config\.width {point_based.Config().width} \(now 3\); "):
        point_based.solve(tiger, config=point_based.Config(width=3), resume=saved)
    # the same numbers in the other precision (float32 under JAX_ENABLE_X64, where the model is float64)
    other = np.float64 if np.asarray(tiger.reward).dtype == np.float32 else np.float32
    changed = jax.tree.map(lambda x: np.asarray(x, other) if np.issubdtype(np.asarray(x).dtype, np.floating) else x,
                           tiger)
    assert checkpoint.model_fingerprint(changed) != checkpoint.model_fingerprint(tiger)


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable checkpoint"),
    (b"\x81\xa6format\xa3bad", "not a jaxpomdp-checkpoint/1 checkpoint .format 'bad'."),
    (None, "no checkpoint there"),
])
def test_unreadable_checkpoints_are_one_line_errors(tmp_path, content, message):
    if content is not None:
        (tmp_path / checkpoint.FILENAME).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load(tmp_path)


def test_a_truncated_checkpoint_is_refused(tiger_checkpoint):
    path = tiger_checkpoint / checkpoint.FILENAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checkpoint"):
        load(tiger_checkpoint)


@pytest.mark.parametrize("alter, message", [
    (lambda r: r["loop"].pop("key"), "the loop's PRNG key"),
    (lambda r: r["loop"].update(iteration="abc"), "the loop's iteration is not a number"),
    (lambda r: r.update(history=5), "history is not a list of rows of numbers"),
    (lambda r: r["history"].append(["x"]), "history is not a list of rows of numbers"),
    (lambda r: r.update(options=[1]), "options is not a mapping"),
    (lambda r: r.update(solver=3), "solver is not a name"),
])
def test_a_checkpoint_that_decodes_but_was_altered_is_refused_in_one_line(tiger_checkpoint, alter, message):
    from flax import serialization
    path = tiger_checkpoint / checkpoint.FILENAME
    record = serialization.msgpack_restore(path.read_bytes())
    alter(record)
    path.write_bytes(serialization.msgpack_serialize(record))
    with pytest.raises(CheckpointError, match=f"damaged checkpoint .{message}"):
        load(tiger_checkpoint)


def test_a_loop_variable_the_solver_needs_and_the_file_lacks_is_a_checkpoint_error(tiger_checkpoint):
    from flax import serialization
    path = tiger_checkpoint / checkpoint.FILENAME
    record = serialization.msgpack_restore(path.read_bytes())
    del record["loop"]["capacities"]
    path.write_bytes(serialization.msgpack_serialize(record))
    with pytest.raises(CheckpointError, match="incomplete checkpoint .no 'capacities' among the loop's"):
        point_based.solve(problems.get("tiger"), time_limit=None, max_iterations=3, resume=load(tiger_checkpoint))


@pytest.mark.parametrize("snapshots", [5, [[1.0, 2, "x", 0.0]], [[1.0, 2, 3.0]], [[1.0, True, 3.0, 0.0]]])
def test_nvi_refuses_a_checkpoint_whose_snapshots_were_altered(tmp_path, snapshots):
    from flax import serialization
    model = problems.get("tiger")
    kw = dict(time_limit=None, max_iterations=1, seed=2, config=NVI_SMALL, warmup_steps=20)
    nvi.solve(model, checkpoint=Checkpointer(tmp_path, every=1e9), **kw)
    path = tmp_path / checkpoint.FILENAME
    record = serialization.msgpack_restore(path.read_bytes())
    record["loop"]["snapshots"] = snapshots
    path.write_bytes(serialization.msgpack_serialize(record))
    with pytest.raises(CheckpointError, match="damaged checkpoint .the loop's snapshots are not rows of 4 numbers"):
        nvi.solve(model, resume=load(tmp_path), **{**kw, "max_iterations": 2})


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tiger_checkpoint, monkeypatch):
    before = (tiger_checkpoint / checkpoint.FILENAME).read_bytes()

    def fail(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        point_based.solve(problems.get("tiger"), time_limit=None, max_iterations=4,
                          checkpoint=Checkpointer(tiger_checkpoint))
    monkeypatch.undo()
    assert (tiger_checkpoint / checkpoint.FILENAME).read_bytes() == before
    assert sorted(p.name for p in tiger_checkpoint.iterdir()) == [checkpoint.FILENAME]  # no temporary left
    assert load(tiger_checkpoint).loop["iteration"] == 2


def test_the_checkpoint_file_itself_may_be_given(tiger_checkpoint):
    assert load(tiger_checkpoint / checkpoint.FILENAME).path == load(tiger_checkpoint).path


def test_checkpointer_refuses_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        Checkpointer(tmp_path, every=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="cannot create"):
        Checkpointer(tmp_path / "file" / "sub")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="is not a folder"):
        Checkpointer(tmp_path / "dangling" / "sub")


def test_checkpointer_makes_its_folder_only_when_it_writes(tmp_path):
    """A run refused after the Checkpointer was made (a bad setting found by the solver) left an empty folder."""
    ckpt = Checkpointer(tmp_path / "a" / "b", every=1e9)
    assert not (tmp_path / "a").exists()
    ckpt.save("test", problems.get("tiger"), {}, {"x": np.zeros(2)}, {}, [])
    assert ckpt.path.is_file() and ckpt.saves == 1


def test_stop_request_first_signal_sets_the_flag_second_one_raises():
    # the handlers before: Python's default, or SIG_IGN when pytest was started in the background by a shell
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with StopRequest() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop() and stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    assert {sig: signal.getsignal(sig) for sig in before} == before  # restored
