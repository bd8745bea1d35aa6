"""Finite network controllers (FNC): a policy graph whose nodes carry value networks.

A :class:`Controller` is a node bank of fixed capacity ``N``:

* ``actions[N]``: the action of each node;
* ``edges[N, O]``: the node to go to after each observation;
* ``active[N]``: which rows are in use (the rest is free capacity);
* ``params``: ONE pytree of stacked network parameters, leading axis ``N``;
  ``f_n(s) = apply_fn(params[n], features(s))`` approximates the alpha-vector of
  node ``n``: the expected discounted return of running the controller from node
  ``n`` when the hidden state is ``s`` (You et al. 2026, "Neural Value Iteration").
  All nodes are evaluated at once with ``jax.vmap`` (:func:`node_values`);
* ``start``: the node to start from at ``b0``.

``apply_fn(params, x)`` maps one node's parameters and a batch of features
float[B, F] to float[B]; any network library fits. :func:`mlp` gives the default
flax MLP.

Three ways to act (all :class:`~jaxpomdp.policy.Policy`, so
:func:`jaxpomdp.simulate.evaluate` runs them):

* :class:`ControllerPolicy` follows the graph: act ``a_n``, observe ``o``, move to
  ``e_n(o)``; no belief is tracked and no network is evaluated;
* :class:`ParticleArgmaxPolicy` keeps a particle belief
  (:mod:`jaxpomdp.particles`) and acts ``a_{n*}`` with
  ``n* = argmax_n mean_i f_n(s_i)`` over the active nodes, unless the node the
  graph leads to is within a small margin of it (then it follows the edge);
* :class:`ParticleRolloutPolicy` keeps a particle belief and, at every step,
  moves from the edge's node to another node (one the networks rank high) only
  where running the graph from states of the belief earns clearly more: a
  rollout step at run time, with the simulator.

Export: :func:`to_dot` (Graphviz) and :func:`to_pg` (pomdp-solve's policy graph:
one line per node, ``node action succ_obs0 succ_obs1 ...``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct
from jax import lax

from jaxpomdp import particles
from jaxpomdp.policy import bucket_size
from jaxpomdp.precision import HIGHEST, exact

__all__ = ["Controller", "MLP", "mlp", "init_params", "node_values", "belief_values", "best_node",
           "ControllerPolicy", "ParticleArgmaxPolicy", "ParticleRolloutPolicy", "controller_return", "reachable",
           "to_dot", "to_pg", "write_dot", "write_pg", "read_pg", "parameter_bytes", "node_parameter_count",
           "exact_alphas", "exact_value", "plan_value"]


class MLP(nn.Module):
    """A small ReLU MLP with a scalar output: float[B, F] -> float[B].

    The output is multiplied by ``scale`` (values of tens to hundreds of reward
    units are then a few units of the last layer, which keeps Adam's steps useful).
    """

    hidden: Sequence[int] = (64, 64)
    scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return self.scale * nn.Dense(1)(x)[..., 0]


@functools.lru_cache(maxsize=None)
def _mlp(hidden: tuple, scale: float):
    module = MLP(hidden, scale)

    def init_fn(key, num_features, dtype=jnp.float32):
        params = module.init(key, jnp.zeros((1, num_features), dtype))
        return jax.tree.map(lambda p: p.astype(dtype), params)

    return init_fn, module.apply


def mlp(hidden: Sequence[int] = (64, 64), scale: float = 1.0) -> tuple[Callable, Callable]:
    """``(init_fn, apply_fn)`` of the default network (:class:`MLP`).

    ``init_fn(key, num_features, dtype) -> params`` of one node; ``apply_fn(params,
    x float[B, F]) -> float[B]``. The same arguments give the same function
    objects, so jit caches keyed on them hit.
    """
    return _mlp(tuple(int(h) for h in hidden), float(scale))


def init_params(key: jax.Array, init_fn: Callable, capacity: int, num_features: int, dtype=jnp.float32):
    """Stacked parameters of ``capacity`` independently initialised nodes (leading axis N)."""
    return jax.vmap(lambda k: init_fn(k, num_features, dtype))(jax.random.split(key, capacity))


@struct.dataclass
class Controller:
    """A finite network controller (module docstring).

    Fields:
      actions: int32[N].
      edges: int32[N, O].
      active: bool[N].
      params: stacked parameter pytree (leading axis N).
      start: int32[] the start node.
      apply_fn: static ``apply_fn(params, x float[B, F]) -> float[B]``.
    """

    actions: jax.Array
    edges: jax.Array
    active: jax.Array
    params: Any
    start: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False, default=None)

    @property
    def capacity(self) -> int:
        return self.actions.shape[0]

    @property
    def num_observations(self) -> int:
        return self.edges.shape[1]


def node_values(apply_fn: Callable, params: Any, features: jax.Array) -> jax.Array:
    """float[N, B]: every node's network at every feature row float[B, F] (vmap over nodes)."""
    chex.assert_rank(features, 2)
    return jax.vmap(lambda p: apply_fn(p, features))(params)


def belief_values(controller: Controller, model: Any, belief: particles.ParticleBelief) -> jax.Array:
    """float[N] ``sum_i w_i f_n(s_i)`` for each node (``-inf`` for inactive nodes)."""
    feats = jax.vmap(model.features)(belief.states)
    v = particles.expectation(belief, node_values(controller.apply_fn, controller.params, feats).T)
    return jnp.where(controller.active, v, -jnp.inf)


def best_node(controller: Controller, model: Any, belief: particles.ParticleBelief) -> jax.Array:
    """int32[] the active node of highest value at a particle belief."""
    return jnp.argmax(belief_values(controller, model, belief)).astype(jnp.int32)


@struct.dataclass
class ControllerPolicy:
    """Follows the controller graph from its start node (no belief tracking).

    Memory: int32[] the current node.

    Example:
      >>> import jax.numpy as jnp
      >>> c = Controller(jnp.array([0, 1], jnp.int32), jnp.array([[0, 1], [0, 0]], jnp.int32),
      ...                jnp.array([True, True]), None, jnp.int32(0))
      >>> p = ControllerPolicy(c)
      >>> int(p.update(None, p.init(None), jnp.int32(0), jnp.int32(1)))
      1
    """

    controller: Controller

    def init(self, model: Any) -> jax.Array:
        del model
        return jnp.asarray(self.controller.start, jnp.int32)

    def act(self, key: jax.Array, memory: jax.Array) -> jax.Array:
        del key
        return self.controller.actions[memory].astype(jnp.int32)

    def update(self, model: Any, memory: jax.Array, action: jax.Array, observation: jax.Array) -> jax.Array:
        del model, action
        return self.controller.edges[memory, observation].astype(jnp.int32)

    def bucketed(self) -> "ControllerPolicy":
        """The same policy on a controller of :func:`~jaxpomdp.policy.bucket_size`
        nodes: the added nodes are inactive, act 0 and lead to themselves, and
        nothing leads to them, so from the same start node every step is the same;
        without the networks (following the graph does not read them). For concrete
        arrays (it pads on the host)."""
        c = self.controller
        actions, edges = np.asarray(c.actions), np.asarray(c.edges)
        n, size = actions.shape[0], bucket_size(actions.shape[0])
        added = np.arange(n, size)
        return ControllerPolicy(Controller(
            jnp.asarray(np.concatenate([actions, np.zeros(size - n, actions.dtype)])),
            jnp.asarray(np.concatenate([edges, np.repeat(added[:, None], edges.shape[1], 1).astype(edges.dtype)])),
            jnp.asarray(np.concatenate([np.asarray(c.active, bool), np.zeros(size - n, bool)])),
            None, jnp.asarray(c.start)))


def _track(model: Any, memory, action: jax.Array, observation: jax.Array, resample_threshold: float):
    """The particle filter's step of a belief-tracking policy's memory ``(belief, key, node)``: the updated
    belief and the key, folded with the action and observation (so the policy is a function of the history)."""
    belief, key, _ = memory
    key = jax.random.fold_in(jax.random.fold_in(key, action), observation)
    key, sub = jax.random.split(key)
    belief, _ = particles.update(sub, model, belief, action, observation, resample_threshold=resample_threshold)
    return belief, key


@struct.dataclass
class ParticleArgmaxPolicy:
    """Tracks a particle belief and acts with the best node's action at it.

    ``n* = argmax_n sum_i w_i f_n(s_i)`` over the active nodes; action ``a_{n*}``.
    After acting with node ``n`` and observing ``o``, the node the graph leads to,
    ``e_n(o)``, is kept unless ``n*`` beats it at the updated belief by more than
    ``switch_margin * (1 + |V_{e_n(o)}(b)|)`` (relative; ``0``: switch to the
    argmax whenever it is strictly better, ties keep the edge). Why a margin: the
    networks are approximations, and where an action is free and leaves the
    belief nearly unchanged (RockSample's sensing actions), the node that takes
    it can stay the argmax after it is taken, by a network error smaller than the
    discount it costs; pure argmax then repeats it forever, while following the
    edge commits to that node's plan. With a margin the policy follows the graph
    and re-plans only when the belief says the graph's node is clearly worse.
    Measured on RockSample(7,8) after 120 s of planning (64 episodes, 256
    particles): the plain argmax (``switch_margin=None``) 1.17 ± 0.90, margin
    0.02 the same, margin 0.1 6.36 ± 1.43; with 64 particles an infinite margin (following the graph
    from the argmax node at ``b0``) 14.4 ± 1.5; so switching only helps where the
    networks are accurate away from the beliefs they were trained at.

    Memory: ``(ParticleBelief, key, node)``. The filter's randomness comes from
    ``key`` (started from ``seed`` and folded with each action and observation),
    so the policy is a deterministic function of the history. Each step evaluates
    all ``N`` networks at ``num_particles`` states: much dearer than
    :class:`ControllerPolicy`.

    Fields:
      controller: the :class:`Controller`.
      model: the model (the Policy protocol's ``act`` has no model argument; the
        networks need the model's ``features``).
      seed: uint32[] seed of the filter's key.
      num_particles: static particle count.
      resample_threshold: static ESS fraction below which to resample.
      switch_margin: relative margin by which the argmax node must beat the
        followed edge's node to replace it (static; default 0.1); ``None``: the
        plain argmax at every step.
    """

    controller: Controller
    model: Any
    seed: jax.Array = struct.field(default_factory=lambda: jnp.uint32(0))
    num_particles: int = struct.field(pytree_node=False, default=256)
    resample_threshold: float = struct.field(pytree_node=False, default=0.5)
    switch_margin: Optional[float] = struct.field(pytree_node=False, default=0.1)

    def init(self, model: Any):
        key = jax.random.key(jnp.asarray(self.seed, jnp.uint32))
        k0, k1 = jax.random.split(key)
        belief = particles.init(k0, model, self.num_particles)
        return belief, k1, best_node(self.controller, self.model, belief)

    def act(self, key: jax.Array, memory) -> jax.Array:
        del key
        return self.controller.actions[memory[2]].astype(jnp.int32)

    def update(self, model: Any, memory, action: jax.Array, observation: jax.Array):
        belief, key = _track(model, memory, action, observation, self.resample_threshold)
        node = memory[2]
        v = belief_values(self.controller, self.model, belief)
        follow = self.controller.edges[node, observation]
        best = jnp.argmax(v)
        if self.switch_margin is None:  # the plain argmax, every step
            return belief, key, best.astype(jnp.int32)
        switch = v[best] > v[follow] + self.switch_margin * (1 + jnp.abs(v[follow]))
        return belief, key, jnp.where(switch, best, follow).astype(jnp.int32)


def controller_return(key: jax.Array, model: Any, controller: Controller, state: Any, node: jax.Array,
                      horizon: int) -> jax.Array:
    """``sum_{t<H} gamma^t r_t``: the discounted return of following the graph for ``horizon`` steps from
    ``(state, node)`` on the simulator ``model`` (no network is evaluated; 0 after a terminal step)."""
    dtype = jnp.result_type(float)  # float32, or float64 under JAX_ENABLE_X64
    gamma = jnp.asarray(model.discount, dtype)

    def body(carry, key):
        s, n, g, disc, done = carry
        s2, o, r, d = model.step(key, s, controller.actions[n])
        g = g + jnp.where(done, 0.0, disc * jnp.asarray(r, dtype))
        return (s2, controller.edges[n, jnp.asarray(o, jnp.int32)], g, disc * gamma, done | d), None

    init = (state, jnp.asarray(node, jnp.int32), jnp.zeros((), dtype), jnp.ones((), dtype), jnp.zeros((), bool))
    (_, _, g, _, _), _ = lax.scan(body, init, jax.random.split(key, horizon))
    return g


@struct.dataclass
class ParticleRolloutPolicy:
    """Tracks a particle belief and, at every step, re-chooses the node to act from by simulation.

    After acting with node ``n`` and observing ``o``, the candidates at the updated
    belief ``b`` are the node the graph leads to, ``e_n(o)``, and the ``candidates``
    nodes of highest network value at ``b``. ``num_rollouts`` states are drawn from
    ``b`` and the graph is followed from each candidate for ``horizon`` steps, every
    candidate with the same states and random numbers; the policy moves to the
    candidate of highest mean return if it beats ``e_n(o)`` by more than ``z``
    standard errors of the paired difference, else it follows the edge. The start
    node is chosen the same way at ``b0`` (against the controller's start node).

    Running the graph, not the networks, decides: a candidate is taken only where
    following it from the actual belief earned more in simulation, so the networks
    only propose. This is a rollout (policy improvement) step over the controller's
    nodes: much dearer than :class:`ControllerPolicy` (``num_rollouts x (candidates
    + 1) x horizon`` simulator steps per step), for simulators that are cheap to run.

    Memory: ``(ParticleBelief, key, node)``; the randomness comes from ``seed``
    folded with each action and observation, so the policy is a deterministic
    function of the history.

    Fields:
      controller: the :class:`Controller`.
      model: the simulator (``step``, ``features``) the rollouts and networks use.
      seed: uint32[] seed of the filter's and rollouts' keys.
      num_particles: static particle count of the belief.
      resample_threshold: static ESS fraction below which to resample.
      candidates: static number of nodes the networks propose.
      num_rollouts: static states drawn from the belief for the rollouts.
      horizon: static rollout length.
      z: standard errors by which a candidate must beat the edge's node (``inf``:
        always follow the edge). Why 2: the best of several candidates, picked on
        the same rollouts, looks better than it is. On Tiger with its optimal
        controller (nothing to gain; 4 candidates, 32 rollouts, 512 episodes, 2
        seeds) following scored 18.70 / 18.00 (± 1.35), ``z = 1`` 13.28 / 14.65,
        ``z = 2`` 17.71 / 18.06, ``z = 3`` 18.60 / 17.98; on RockSample(7,8) with a
        controller planned for 60 s (following: 13.98 ± 0.23) ``z = 1`` 15.57 ±
        0.70 and ``z = 3`` 15.21 ± 0.74 (256 episodes).
    """

    controller: Controller
    model: Any
    seed: jax.Array = struct.field(default_factory=lambda: jnp.uint32(0))
    num_particles: int = struct.field(pytree_node=False, default=256)
    resample_threshold: float = struct.field(pytree_node=False, default=0.5)
    candidates: int = struct.field(pytree_node=False, default=8)
    num_rollouts: int = struct.field(pytree_node=False, default=128)
    horizon: int = struct.field(pytree_node=False, default=60)
    z: float = 2.0

    def _choose(self, key: jax.Array, belief: particles.ParticleBelief, keep: jax.Array) -> jax.Array:
        k_s, k_r = jax.random.split(key)
        v = belief_values(self.controller, self.model, belief)
        cand = jnp.asarray(keep, jnp.int32)[None]
        K = min(self.candidates, v.shape[0])
        if K > 0:
            cand = jnp.concatenate([cand, lax.top_k(v, K)[1].astype(jnp.int32)])
        idx = jax.random.categorical(k_s, belief.log_weights, shape=(self.num_rollouts,))
        states = jax.tree.map(lambda x: x[idx], belief.states)
        keys = jax.random.split(k_r, self.num_rollouts)
        g = jax.vmap(lambda k, s: jax.vmap(
            lambda n: controller_return(k, self.model, self.controller, s, n, self.horizon))(cand))(keys, states)
        diff = g - g[:, :1]                                                    # [M, K + 1], paired
        gain = jnp.mean(diff, axis=0)
        se = jnp.std(diff, axis=0, ddof=1) / jnp.sqrt(self.num_rollouts)
        ok = (gain > self.z * se) & (gain > 0) & self.controller.active[cand]
        best = jnp.argmax(jnp.where(ok, gain, -jnp.inf))
        return jnp.where(jnp.any(ok), cand[best], cand[0]).astype(jnp.int32)

    def init(self, model: Any):
        key = jax.random.key(jnp.asarray(self.seed, jnp.uint32))
        k0, k1, k2 = jax.random.split(key, 3)
        belief = particles.init(k0, model, self.num_particles)
        return belief, k1, self._choose(k2, belief, self.controller.start)

    act = ParticleArgmaxPolicy.act

    def update(self, model: Any, memory, action: jax.Array, observation: jax.Array):
        belief, key = _track(model, memory, action, observation, self.resample_threshold)
        keep = self.controller.edges[memory[2], observation]
        return belief, key, self._choose(jax.random.fold_in(key, 1), belief, keep)


# ------------------------------------------------------- exact evaluation
@functools.partial(jax.jit, static_argnames=("max_iterations",))
def exact_alphas(controller: Controller, model: Any, tol: float = 1e-6, max_iterations: int = 100_000) -> jax.Array:
    """float[N, S]: each node's exact value at each state, for a tabular model.

    The controller run from node ``n`` at state ``s`` (act ``a_n``, move to
    ``e_n(o)``) is a Markov chain on (node, state); its value solves
    ``V[n, s] = R(s, a_n) + gamma sum_{s'} T(s'|s, a_n) sum_o Z(o|a_n, s') V[e_n(o), s']``,
    iterated here to a sup-norm change below ``tol (1 - gamma) / gamma`` (so within
    ``tol`` of the fixed point). Inactive nodes are evaluated too (their edges are
    whatever the bank holds); the networks are not used: this is what following the
    graph earns, the yardstick of :class:`ControllerPolicy`.

    Differentiable with respect to the model's numbers (``reward``, ``next_prob``,
    ``obs_prob``, ``discount``) in forward and reverse mode (``jax.jvp``,
    ``jax.grad``; also under ``jax.vmap``): the derivative is that of the exact
    solution of the equations above, by implicit differentiation
    (:func:`jaxpomdp.bounds.implicit_fixed_point`: ``dV = (I - gamma P)^{-1}
    (dR + d(gamma P) V)``, the linear system solved by the same iteration).
    """
    from jaxpomdp.bounds import implicit_fixed_point  # (bounds imports nothing from here)

    def sweep_of(params):
        """The sweep ``V -> R_a + gamma T_a Z_a V[e]`` of the controller ``params = (model, (actions, edges))``."""
        m, (a, e) = params
        gamma = jnp.asarray(m.discount, m.reward.dtype)
        reward = m.reward[a]                                        # [N, S]
        succ, prob = m.next_state[a], m.next_prob[a]                # [N, S, K]
        z = m.obs_prob[a]                                           # [N, S', O]
        rows = jnp.arange(a.shape[0])[:, None, None]

        @exact
        def sweep(V):
            W = jnp.einsum("nso,nos->ns", z, V[e])                    # [N, S'] value on arrival
            return reward + gamma * jnp.sum(prob * W[rows, succ], axis=-1)

        return sweep

    def bellman(params, V):
        return sweep_of(params)(V)

    def solve(params, V0, tol, max_iterations):
        m = params[0]
        gamma = jnp.asarray(m.discount, m.reward.dtype)
        stop = tol * (1 - gamma) / jnp.maximum(gamma, 1e-12)
        sweep = sweep_of(params)

        def cond(carry):
            i, _, delta = carry
            return (i < max_iterations) & (delta > stop)

        def body(carry):
            i, V, _ = carry
            V2 = sweep(V)
            return i + 1, V2, jnp.max(jnp.abs(V2 - V))

        return lax.while_loop(cond, body, (0, V0, jnp.asarray(jnp.inf, V0.dtype)))[1]

    params = (model, (controller.actions, controller.edges))
    V0 = jnp.zeros((controller.actions.shape[0], model.reward.shape[-1]), model.reward.dtype)
    gamma = jnp.asarray(model.discount, model.reward.dtype)
    return implicit_fixed_point(bellman, solve, params, V0, gamma, max_iterations, tol, max_iterations)


def exact_value(controller: Controller, model: Any, tol: float = 1e-6, max_iterations: int = 100_000) -> float:
    """The exact value at ``b0`` of following the controller from its start node (tabular models).

    A Python float; under a JAX transformation (``jax.grad``, ``jax.jit``,
    ``jax.vmap``) a traced scalar, so that it is differentiable with respect to the
    model's numbers (:func:`exact_alphas`; ``initial_belief`` too).
    """
    alphas = exact_alphas(controller, model, tol, max_iterations)
    value = jnp.dot(alphas[controller.start], model.initial_belief, precision=HIGHEST)
    return value if isinstance(value, jax.core.Tracer) else float(value)


def plan_value(actions: jax.Array, successors: jax.Array, model: Any, b: Optional[jax.Array] = None, *,
               tol: float = 1e-6, max_iterations: int = 100_000) -> jax.Array:
    """The exact value at a belief of a fixed alpha-vector policy given as its plans (tabular models).

    An alpha-vector policy from the point-based solver is a policy graph: vector
    ``k`` acts ``actions[k]`` and, after observation ``o``, continues with vector
    ``successors[k, o]`` (:class:`jaxpomdp.solvers.point_based.PointBasedState`'s
    ``actions`` and ``successors`` over the ``num_alphas`` vectors in use; the set
    is closed). Its plans re-evaluated exactly on ``model`` are
    ``exact_alphas(Controller(actions, successors, ...), model)`` (the
    :class:`Controller` with those actions as nodes and successors as edges), and
    the policy's value at ``b`` is ``max_k alpha_k . b``: what starting with the
    best plan at ``b`` and following the graph earns.

    Args:
      actions: int[K] the action of each vector.
      successors: int[K, O] the vector each continues with after each observation.
      model: the tabular model.
      b: float[S] the belief (default: the initial belief).
      tol, max_iterations: as in :func:`exact_alphas`.

    Returns:
      float[] ``max_k alpha_k(model) . b``, differentiable with respect to the
      model's numbers and ``b`` (:func:`exact_alphas`; at a belief where two plans
      of different values tie, the max is not differentiable).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxpomdp import problems
      >>> always_listen = plan_value(jnp.array([0]), jnp.array([[0, 0]]), problems.tiger())
      >>> round(float(always_listen), 3)  # -1 / (1 - 0.95)
      -20.0
    """
    actions = jnp.asarray(actions, jnp.int32)
    successors = jnp.asarray(successors, jnp.int32)
    graph = Controller(actions, successors, jnp.ones(actions.shape, bool), None, jnp.int32(0))
    alphas = exact_alphas(graph, model, tol, max_iterations)
    b = model.initial_belief if b is None else b
    return jnp.max(jnp.matmul(alphas, b, precision=HIGHEST))


# ------------------------------------------------------------------ export
def _check_graph(controller: Controller) -> None:
    """ValueError for a graph an export would write wrongly: an edge or the start outside the nodes,
    a negative action."""
    actions, edges, N = np.asarray(controller.actions), np.asarray(controller.edges), controller.capacity
    if edges.ndim != 2 or edges.shape[0] != N:
        raise ValueError(f"the controller's edges have shape {edges.shape}; expected ({N}, num_observations)")
    for what, values in (("an edge", edges), ("the start node", np.asarray(controller.start))):
        bad = (values < 0) | (values >= N)
        if bad.any():
            raise ValueError(f"{what} of the controller is {int(values[bad].ravel()[0])}, not a node in [0, {N})")
    if (actions < 0).any():
        raise ValueError(f"an action of the controller is {int(actions[actions < 0][0])}, not a non-negative index")


def reachable(controller: Controller, starts=None) -> np.ndarray:
    """bool[N]: the nodes reachable along edges from ``start`` (or from the nodes ``starts``), host-side."""
    edges = np.asarray(controller.edges)
    seen = np.zeros(edges.shape[0], bool)
    stack = [int(controller.start)] if starts is None else [int(n) for n in starts]
    while stack:
        n = stack.pop()
        if seen[n]:
            continue
        seen[n] = True
        stack.extend(int(m) for m in edges[n] if not seen[m])
    return seen


def _export_nodes(controller: Controller, reachable_only: bool):
    _check_graph(controller)
    # every active node, and what they lead to: an edge to a node not written would be dangling
    starts = None if reachable_only else [int(controller.start), *np.flatnonzero(np.asarray(controller.active))]
    keep = reachable(controller, starts)
    start = int(controller.start)
    order = [start] + [int(i) for i in np.flatnonzero(keep) if i != start]
    renumber = {old: new for new, old in enumerate(order)}
    return order, renumber


def to_pg(controller: Controller, *, reachable_only: bool = True) -> str:
    """The controller in pomdp-solve's ``.pg`` format.

    One line per node, ``node action succ_0 succ_1 ... succ_{O-1}`` (0-based node,
    action and observation numbers); the start node is node 0, the other nodes
    keep their relative order. ``reachable_only``: only the nodes reachable from
    the start (else every active node).

    Example:
      >>> import jax.numpy as jnp
      >>> c = Controller(jnp.array([0, 1], jnp.int32), jnp.array([[0, 1], [0, 0]], jnp.int32),
      ...                jnp.array([True, True]), None, jnp.int32(0))
      >>> print(to_pg(c), end="")
      0 0  0 1
      1 1  0 0
    """
    order, renumber = _export_nodes(controller, reachable_only)
    actions, edges = np.asarray(controller.actions), np.asarray(controller.edges)
    lines = []
    for new, old in enumerate(order):
        succ = " ".join(str(renumber.get(int(m), -1)) for m in edges[old])
        lines.append(f"{new} {int(actions[old])}  {succ}")
    return "\n".join(lines) + "\n"


def _quote(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(controller: Controller, *, action_names: Optional[Sequence[str]] = None,
           observation_names: Optional[Sequence[str]] = None, reachable_only: bool = True,
           name: str = "controller") -> str:
    """The controller as a Graphviz DOT digraph (nodes numbered as in :func:`to_pg`).

    Each node is labelled ``n<i>: <action>``; the start node is drawn double; the
    edges from a node to the same successor are merged into one labelled with
    their observations.
    """
    order, renumber = _export_nodes(controller, reachable_only)
    actions, edges = np.asarray(controller.actions), np.asarray(controller.edges)
    for names, what, need in ((action_names, "action_names", int(actions[order].max()) + 1),
                              (observation_names, "observation_names", edges.shape[1])):
        if names is not None and len(names) < need:
            raise ValueError(f"{what} has {len(names)} names; the controller uses {need}")
    an = (lambda a: action_names[a]) if action_names is not None else str
    on = (lambda o: observation_names[o]) if observation_names is not None else str
    out = [f"digraph {_quote(name)} {{", "  rankdir=LR;", "  node [shape=ellipse];"]
    for new, old in enumerate(order):
        shape = ", shape=doublecircle" if new == 0 else ""
        out.append(f"  n{new} [label={_quote(f'n{new}: {an(int(actions[old]))}')}{shape}];")
    for new, old in enumerate(order):
        groups: dict[int, list[str]] = {}
        for o, m in enumerate(edges[old]):
            groups.setdefault(renumber.get(int(m), -1), []).append(on(o))
        for dst, obs in groups.items():
            if dst < 0:
                continue
            out.append(f"  n{new} -> n{dst} [label={_quote(', '.join(obs))}];")
    out.append("}")
    return "\n".join(out) + "\n"


def write_pg(path, controller: Controller, **kwargs) -> None:
    """Writes :func:`to_pg` to ``path`` atomically."""
    from jaxpomdp.io import atomic_write
    atomic_write(path, to_pg(controller, **kwargs))


def read_pg(path, *, num_actions: Optional[int] = None, num_observations: Optional[int] = None) -> Controller:
    """Reads a pomdp-solve ``.pg`` policy graph (as :func:`to_pg` writes it) as a :class:`Controller`.

    One line per node: ``node action succ_0 ... succ_{O-1}``, nodes numbered
    0, 1, ... in order, node 0 the start. A successor ``-`` or ``-1`` (pomdp-solve's
    mark for an observation that cannot occur there) becomes a self-loop. The
    controller has no networks (``params`` None): :class:`ControllerPolicy` runs
    it and :func:`exact_value` evaluates it.

    Raises:
      PomdpFormatError: naming line and column of the first malformed token.
    """
    import os
    import re
    from jaxpomdp.errors import PomdpFormatError
    path = os.fspath(path)
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = [(m.group(), m.start() + 1) for m in re.finditer(r"\S+", line)]
        if not tokens:
            continue

        def fail(reason, column, number=number):
            return PomdpFormatError(reason, path, number, column)

        values = []
        for i, (tok, col) in enumerate(tokens):
            if i >= 2 and tok in ("-", "-1"):
                values.append(-1)
            elif re.fullmatch(r"\d+", tok):
                values.append(int(tok))
            else:
                what = "a node number" if i == 0 else "an action number" if i == 1 else "a successor node (or -)"
                raise fail(f"expected {what}, found {tok[:40]!r}", col)
        if values[0] != len(rows):
            raise fail(f"expected node {len(rows)} (nodes are numbered in order from 0), found {values[0]}", tokens[0][1])
        if len(values) < 3:
            raise fail("expected a node number, an action and one successor per observation", len(line) + 1)
        if num_actions is not None and values[1] >= num_actions:
            raise fail(f"action {values[1]} is out of range (the model has {num_actions} actions)", tokens[1][1])
        width = len(rows[0][1]) if rows else num_observations
        if width is not None and len(values) - 2 != width:
            raise fail(f"expected {width} successors (one per observation), found {len(values) - 2}", tokens[0][1])
        rows.append((values[1], values[2:], [c for _, c in tokens[2:]], number))
    if not rows:
        raise PomdpFormatError("empty .pg file: expected one line per node", path, 1, 1)
    n = len(rows)
    for node, (_, succ, cols, number) in enumerate(rows):
        for m, col in zip(succ, cols):
            if m >= n:
                raise PomdpFormatError(f"successor {m} is not a node (there are {n})", path, number, col)
    actions = np.asarray([a for a, *_ in rows], np.int32)
    edges = np.asarray([[node if m < 0 else m for m in succ] for node, (_, succ, *_) in enumerate(rows)], np.int32)
    return Controller(jnp.asarray(actions), jnp.asarray(edges), jnp.ones(n, bool), None, jnp.int32(0))


def write_dot(path, controller: Controller, **kwargs) -> None:
    """Writes :func:`to_dot` to ``path`` atomically."""
    from jaxpomdp.io import atomic_write
    atomic_write(path, to_dot(controller, **kwargs))


def node_parameter_count(params: Any) -> int:
    """Parameters of ONE node (stacked leaves divided by the capacity)."""
    leaves = jax.tree.leaves(params)
    return int(sum(np.prod(x.shape[1:]) for x in leaves))


def parameter_bytes(controller: Controller, *, active_only: bool = True) -> int:
    """Bytes of the network parameters (of the active nodes, or of the whole bank)."""
    leaves = jax.tree.leaves(controller.params)
    per_node = int(sum(np.prod(x.shape[1:]) * x.dtype.itemsize for x in leaves))
    count = int(np.sum(np.asarray(controller.active))) if active_only else controller.capacity
    return per_node * count
