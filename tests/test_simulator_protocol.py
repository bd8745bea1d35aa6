"""Simulators written by users: plain Python classes work, and a broken one is refused with what is wrong.

The solvers' entry points pass the model through ``as_simulator``: a plain object (not a pytree) is held as
static data so jit accepts it, and the GenerativePOMDP protocol is checked by tracing, so a simulator that
returns three values, a float observation or a state of another dtype gets one InvalidModelError naming the
method instead of a JAX traceback from inside a compiled loop.
"""

import copy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxpomdp import InvalidModelError, InvalidPolicyError, simulate
from jaxpomdp.checkpoint import model_fingerprint
from jaxpomdp.model import StaticObject, as_simulator
from jaxpomdp.policy import BlindPolicy
from jaxpomdp.solvers import conjpomdp, gpomdp, nvi
from jaxpomdp.stochastic import SoftmaxPolicy


class PlainTiger:
    """The tiger problem as a user would write it: a plain class (listen 0, open-left 1, open-right 2)."""

    num_actions = 3
    num_observations = 2
    discount = 0.95

    def initial_state(self, key):
        return jax.random.bernoulli(key).astype(jnp.int32)  # 0: tiger left, 1: tiger right

    def step(self, key, s, a):
        k_obs, k_reset = jax.random.split(key)
        opened = a > 0
        reward = jnp.where(opened, jnp.where(a - 1 == s, -100.0, 10.0), -1.0)
        s2 = jnp.where(opened, jax.random.bernoulli(k_reset).astype(jnp.int32), s)
        hear = jnp.where(jax.random.uniform(k_obs) < 0.85, s2, 1 - s2)
        obs = jnp.where(opened, jax.random.bernoulli(k_obs).astype(jnp.int32), hear)
        return s2, obs.astype(jnp.int32), reward, jnp.bool_(False)

    def features(self, s):
        return jax.nn.one_hot(s, 2)


@struct.dataclass
class PytreeTiger(PlainTiger):
    """The same simulator as a (leafless) pytree."""


class ComparesItsArrays(PlainTiger):
    """``__eq__`` without ``__hash__``: unhashable, so it cannot be a jit static argument as it is."""

    def __init__(self):
        self.layout = np.arange(3)

    def __eq__(self, other):
        return self.layout == other.layout


TINY = nvi.Config(capacity=16, hidden=(8,), num_particles=16, b0_particles=64, max_depth=6, pool_capacity=32,
                  batch_per_node=4, td_steps=4, train_steps=4, fit_steps=4, fit_repeats=1, info_steps=2,
                  verify_successors=0, refresh_nodes=0, snapshot_every=2)


def test_a_plain_class_gives_what_the_same_simulator_as_a_pytree_gives():
    plain, tree = PlainTiger(), PytreeTiger()
    assert isinstance(as_simulator(plain), StaticObject)
    assert as_simulator(tree) is tree  # pytrees pass as they are
    runs = [nvi.solve(m, time_limit=None, max_iterations=3, config=TINY, seed=3) for m in (plain, tree)]
    a, b = (r.policy.controller for r in runs)
    np.testing.assert_array_equal(np.asarray(a.actions), np.asarray(b.actions))
    np.testing.assert_array_equal(np.asarray(a.edges), np.asarray(b.edges))
    assert runs[0].info["value_estimate"] == runs[1].info["value_estimate"]
    evs = [simulate.evaluate(jax.random.key(0), m, BlindPolicy(jnp.int32(0)), num_episodes=64, horizon=20)
           for m in (plain, tree)]
    assert float(evs[0].mean) == float(evs[1].mean) == pytest.approx(-(1 - 0.95 ** 20) / 0.05)
    pol = SoftmaxPolicy(num_features=2, num_actions=3)
    ests = [gpomdp.gpomdp(jax.random.key(1), m, pol, pol.init_params(None), num_steps=50, beta=0.5, num_chains=4)
            for m in (plain, tree)]
    jax.tree.map(np.testing.assert_array_equal, ests[0].gradient, ests[1].gradient)


def test_an_unhashable_plain_simulator_is_held_by_identity():
    m = ComparesItsArrays()
    ev = simulate.evaluate(jax.random.key(0), m, BlindPolicy(jnp.int32(0)), num_episodes=8, horizon=5)
    assert float(ev.mean) == pytest.approx(-(1 - 0.95 ** 5) / 0.05)
    w = as_simulator(m)
    assert w.wrapped is m and w.layout is m.layout and w == as_simulator(m)
    assert w != as_simulator(ComparesItsArrays())  # another object: another compiled program
    for c in (copy.copy(w), copy.deepcopy(w)):  # no recursion through __getattr__
        assert isinstance(c, StaticObject)


def test_checkpoint_fingerprints_tell_plain_simulator_classes_apart():
    class Other(PlainTiger):
        pass

    assert model_fingerprint(as_simulator(PlainTiger())) == model_fingerprint(as_simulator(PlainTiger()))
    assert model_fingerprint(as_simulator(PlainTiger())) != model_fingerprint(as_simulator(Other()))


def _broken(**methods):
    return type("Broken", (PlainTiger,), methods)()


def _step_then(change):
    return lambda self, k, s, a: change(*PlainTiger.step(self, k, s, a))


def _branchy_step(self, k, s, a):
    if a == 1:  # Python control flow on a traced action
        return PlainTiger.step(self, k, s, a)
    return PlainTiger.step(self, k, s, a)


BROKEN = [
    ("three-values", dict(step=_step_then(lambda s, o, r, d: (s, o, r))),
     "model.step must return (next_state, observation, reward, done); it returned 3 values"),
    ("float-observation", dict(step=_step_then(lambda s, o, r, d: (s, o.astype(jnp.float32), r, d))),
     "model.step's observation must be an integer scalar (an index below num_observations); it is float32[]"),
    ("vector-reward", dict(step=_step_then(lambda s, o, r, d: (s, o, jnp.stack([r, r]), d))),
     "model.step's reward must be a real scalar; it is float32[2]"),
    ("float-done", dict(step=_step_then(lambda s, o, r, d: (s, o, r, jnp.float32(0))),),
     "model.step's done must be a boolean scalar; it is float32[]"),
    ("state-changes-dtype", dict(step=_step_then(lambda s, o, r, d: (s.astype(jnp.float32), o, r, d))),
     "model.step returned a next state float32[] unlike initial_state's int32[]"),
    ("state-changes-structure", dict(step=_step_then(lambda s, o, r, d: ((s, s), o, r, d))),
     "unlike initial_state's int32[]: a state must keep its structure, shapes and dtypes"),
    ("python-branch", dict(step=_branchy_step),
     "model.step(key, state, action) with a traced int32 action cannot be traced by JAX (TracerBoolConversionError"),
    ("initial-state-fails", dict(initial_state=lambda self, k: int(jax.random.bernoulli(k))),
     "model.initial_state(key) cannot be traced by JAX (ConcretizationTypeError"),
    ("no-step", dict(step=None), "model has no method step (a GenerativePOMDP needs initial_state, step)"),
    ("zero-actions", dict(num_actions=0), "model.num_actions must be a positive integer, found 0"),
    ("fractional-observations", dict(num_observations=2.5),
     "model.num_observations must be a positive integer, found 2.5"),
    ("float-count", dict(num_actions=3.0), "model.num_actions must be a positive integer, found 3.0"),
    ("bool-count", dict(num_actions=True), "model.num_actions must be a positive integer, found True"),
    ("discount-above-one", dict(discount=1.5), "model.discount must be a number in [0, 1], found 1.5"),
    ("discount-missing", dict(discount=None), "model.discount must be a number in [0, 1], found None"),
]


@pytest.mark.parametrize("methods, phrase", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_simulator_is_refused_with_what_is_wrong(methods, phrase):
    m = _broken(**methods)
    with pytest.raises(InvalidModelError) as info:
        as_simulator(m)
    assert phrase in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("features, phrase", [
    (None, "model has no method features (a GenerativePOMDP needs initial_state, step, features)"),
    (lambda self, s: jnp.eye(2)[s][None],
     "model.features(state) must be a non-empty 1-D real array; it is float32[1, 2]"),
    (lambda self, s: jnp.zeros(0), "must be a non-empty 1-D real array; it is float32[0]"),
])
def test_nvi_also_needs_features(features, phrase):
    m = _broken(features=features)
    as_simulator(m)  # the other solvers do not use them
    with pytest.raises(InvalidModelError) as info:
        nvi.solve(m, time_limit=None, max_iterations=1, config=TINY)
    assert phrase in str(info.value), str(info.value)


def test_every_entry_point_checks_the_simulator():
    m = _broken(step=_step_then(lambda s, o, r, d: (s, o, r)))
    pol = SoftmaxPolicy(num_features=2, num_actions=3)
    calls = [
        lambda: nvi.solve(m, time_limit=None, max_iterations=1, config=TINY),
        lambda: simulate.evaluate(jax.random.key(0), m, BlindPolicy(jnp.int32(0)), num_episodes=4, horizon=3),
        lambda: gpomdp.gpomdp(jax.random.key(0), m, pol, pol.init_params(None), num_steps=5, beta=0.5),
        lambda: gpomdp.olpomdp(jax.random.key(0), m, pol, pol.init_params(None), num_steps=5, beta=0.5,
                               step_size=0.1),
        lambda: gpomdp.solve(m, time_limit=None, max_iterations=1, policy=pol),
    ]
    for call in calls:
        with pytest.raises(InvalidModelError, match="it returned 3 values"):
            call()


def test_the_readme_simulator_example_runs_and_plans():
    # the README's block, run for 10 iterations instead of 30 seconds (deterministic under the seed)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### Your own simulator", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    short = block.replace("time_limit=30", "time_limit=None, max_iterations=10")
    assert short != block
    scope = {}
    exec(compile(short, "README.md", "exec"), scope)
    tiger = scope["Tiger"]()
    assert jax.tree.leaves(tiger) == [tiger]  # a plain class, not a pytree
    assert float(scope["ev"].mean) > 15  # the optimum is 19.37; listening forever earns -20, any blind door -45


# ------------------------------------------------------------------ policies
class ListenThenOpen:
    """A plain-class policy: listen until the count of 'heard left' minus 'heard right' reaches 2, then open
    the other door and start counting again."""

    def init(self, model):
        return jnp.int32(0)

    def act(self, key, memory):
        return jnp.where(memory >= 2, 2, jnp.where(memory <= -2, 1, 0)).astype(jnp.int32)

    def update(self, model, memory, action, observation):
        heard = jnp.where(observation == 0, 1, -1)
        return jnp.where(action == 0, memory + heard, 0).astype(jnp.int32)


@struct.dataclass
class PytreeListenThenOpen(ListenThenOpen):
    pass


def test_a_plain_class_policy_gives_what_the_same_policy_as_a_pytree_gives():
    evs = [simulate.evaluate(jax.random.key(0), PlainTiger(), p, num_episodes=500, horizon=100)
           for p in (ListenThenOpen(), PytreeListenThenOpen())]
    assert float(evs[0].mean) == float(evs[1].mean)
    assert float(evs[0].mean) > 0  # far better than listening forever (-20) or opening blindly (-45)


def _policy(**methods):
    return type("BrokenPolicy", (ListenThenOpen,), methods)()


BROKEN_POLICIES = [
    ("float-action", dict(act=lambda self, k, m: jnp.float32(0)),
     "policy.act(key, memory) must give an integer scalar (an action); it gives float32[]"),
    ("vector-action", dict(act=lambda self, k, m: jnp.zeros(3, jnp.int32)), "it gives int32[3]"),
    ("memory-changes-dtype", dict(update=lambda self, mo, m, a, o: m.astype(jnp.float32)),
     "policy.update returned a memory float32[] unlike init's int32[]"),
    ("python-branch", dict(update=lambda self, mo, m, a, o: m + 1 if o == 0 else m),
     "policy.update(model, memory, action, observation) with a traced action and observation cannot be traced"),
    ("no-update", dict(update=None), "policy has no method update (a policy needs init, act, update)"),
    ("sample-one-value", dict(sample=lambda self, k, m: jnp.int32(0)),
     "policy.sample(key, memory) must return (action, memory)"),
    ("sample-changes-memory", dict(sample=lambda self, k, m: (jnp.int32(0), jnp.zeros(2))),
     "policy.sample returned a memory float32[2] unlike init's int32[]"),
]


@pytest.mark.parametrize("methods, phrase", [b[1:] for b in BROKEN_POLICIES], ids=[b[0] for b in BROKEN_POLICIES])
def test_a_broken_policy_is_refused_by_evaluate_with_what_is_wrong(methods, phrase):
    with pytest.raises(InvalidPolicyError) as info:
        simulate.evaluate(jax.random.key(0), PlainTiger(), _policy(**methods), num_episodes=4, horizon=3)
    assert phrase in str(info.value), str(info.value)


# ------------------------------------------------------------------ stochastic policies (policy gradients)
class PlainSoftmax:
    """A softmax over actions of the observation's one-hot features, written as a plain class."""

    num_actions, num_memory = 3, 1

    def init_params(self, key):
        return {"w": jnp.zeros((3, 2))}

    def log_probs(self, params, memory, obs_features):
        return jax.nn.log_softmax(params["w"] @ obs_features)[None]


def test_a_plain_class_stochastic_policy_gives_what_the_built_in_one_gives():
    # SoftmaxPolicy computes log_softmax(w @ f + b); with b = 0 the same law as PlainSoftmax
    plain, built = PlainSoftmax(), SoftmaxPolicy(num_features=2, num_actions=3)
    w = jnp.asarray([[0.5, -1.0], [0.0, 0.3], [-0.2, 0.1]])
    est = [gpomdp.gpomdp(jax.random.key(2), PlainTiger(), p, params, num_steps=40, beta=0.8, num_chains=8)
           for p, params in ((plain, {"w": w}), (built, {"w": w, "b": jnp.zeros(3)}))]
    np.testing.assert_allclose(np.asarray(est[0].gradient["w"]), np.asarray(est[1].gradient["w"]), rtol=1e-5,
                               atol=1e-6)
    assert float(est[0].average_reward) == pytest.approx(float(est[1].average_reward), rel=1e-6)
    r = gpomdp.solve(PlainTiger(), time_limit=None, max_iterations=2, policy=plain,
                     config=gpomdp.Config(num_steps=20, num_chains=4))
    assert r.info["iterations"] == 2 and r.info["policy"] == "PlainSoftmax"
    ev = simulate.evaluate(jax.random.key(0), PlainTiger(), r.policy, num_episodes=16, horizon=10)
    assert np.isfinite(float(ev.mean))
    r = conjpomdp.solve(PlainTiger(), time_limit=None, max_iterations=1, policy=plain,
                        config=conjpomdp.Config(num_steps=20, num_chains=4))
    assert r.info["iterations"] == 1


def _stochastic(**attrs):
    return type("BrokenSoftmax", (PlainSoftmax,), attrs)()


BROKEN_STOCHASTIC = [
    ("wrong-number-of-actions", dict(num_actions=2), "policy.num_actions is 2; the model has 3 actions"),
    ("no-memory-count", dict(num_memory=None), "policy.num_memory must be a positive integer, found None"),
    ("log-probs-shape", dict(log_probs=lambda self, p, m, f: jax.nn.log_softmax(p["w"] @ f)),
     "policy.log_probs(params, memory, obs_features) must be a float [num_memory, num_actions] = [1, 3] array; "
     "it is float32[3]"),
    ("log-probs-fails", dict(log_probs=lambda self, p, m, f: p["v"] @ f),
     "policy.log_probs(params, memory, obs_features) cannot be traced by JAX (KeyError"),
    ("no-init-params", dict(init_params=None), "policy has no method init_params"),
]


@pytest.mark.parametrize("attrs, phrase", [b[1:] for b in BROKEN_STOCHASTIC], ids=[b[0] for b in BROKEN_STOCHASTIC])
def test_a_broken_stochastic_policy_is_refused_with_what_is_wrong(attrs, phrase):
    pol = _stochastic(**attrs)
    params = {"w": jnp.zeros((3, 2))}
    for call in (lambda: gpomdp.gpomdp(jax.random.key(0), PlainTiger(), pol, params, num_steps=5, beta=0.5),
                 lambda: gpomdp.solve(PlainTiger(), time_limit=None, max_iterations=1, policy=pol),
                 lambda: conjpomdp.solve(PlainTiger(), time_limit=None, max_iterations=1, policy=pol)):
        with pytest.raises(InvalidPolicyError) as info:
            call()
        assert phrase in str(info.value), str(info.value)


def test_nvi_takes_a_plain_class_guide_and_refuses_a_broken_one():
    cfg = TINY._replace(guide_share=0.5)
    r = nvi.solve(PlainTiger(), time_limit=None, max_iterations=2, config=cfg, guide=ListenThenOpen())
    assert r.info["iterations"] == 2
    with pytest.raises(InvalidPolicyError, match=r"guide.act\(key, memory\) must give an integer scalar"):
        nvi.solve(PlainTiger(), time_limit=None, max_iterations=1, config=cfg,
                  guide=_policy(act=lambda self, k, m: jnp.float32(0)))


def test_a_policy_holding_a_plain_class_model_is_told_to_pass_it_through_as_simulator():
    from jaxpomdp.controller import ParticleArgmaxPolicy
    r = nvi.solve(PlainTiger(), time_limit=None, max_iterations=1, config=TINY)
    pol = ParticleArgmaxPolicy(r.policy.controller, PlainTiger(), num_particles=8)
    with pytest.raises(InvalidPolicyError, match=r"policy.model is a PlainTiger, not an array.*as_simulator"):
        simulate.evaluate(jax.random.key(0), PlainTiger(), pol, num_episodes=2, horizon=3)
    pol = ParticleArgmaxPolicy(r.policy.controller, as_simulator(PlainTiger()), num_particles=8)
    ev = simulate.evaluate(jax.random.key(0), PlainTiger(), pol, num_episodes=2, horizon=3)
    assert np.isfinite(float(ev.mean))
