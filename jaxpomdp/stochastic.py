"""Stochastic policies for the policy-gradient methods (GPOMDP, OLPOMDP, CONJPOMDP).

A stochastic policy is a frozen pytree whose fields fix its structure (sizes,
network shape) and whose numbers live in a separate ``params`` pytree, so that
``jax.grad`` differentiates through ``params`` only::

    params = policy.init_params(key)
    logp = policy.log_probs(params, memory, obs_features)     # float[M, A]

``logp[h, u] = log P(next memory h, action u | params, memory g, observation y)``
is the joint law of what the policy draws at one step: the internal memory it
moves to and the action it takes. ``M = policy.num_memory`` (1 for a policy
without memory, whose memory is always 0). The observation is seen through its
feature vector (:func:`observation_features`): the model's
``observation_feature(o)`` when it has one (the three-state system gives the
paper's ``phi``), else the one-hot vector of ``o``. Before the first observation
of an episode the policy sees the zero vector (:func:`initial_observation`).

Gradients of ``log_probs`` are taken by JAX autodiff, never by hand. Four
policies are built in:

* :class:`LogisticPolicy`: the policy of Baxter & Bartlett's experiments, two
  actions, ``mu(action 0 | theta, phi) = sigmoid(theta . phi)``.
* :class:`SoftmaxPolicy`: ``mu(u | W, b, phi) = softmax(W phi + b)[u]``, any
  number of actions.
* :class:`FiniteStateController`: a stochastic finite-state controller with
  ``M`` memory states (internal-state GPOMDP, Aberdeen & Baxter 2002): from memory
  ``g`` on observation ``y`` it draws the next memory ``h`` and the action ``u``
  jointly, ``softmax(W[g] phi(y) + b[g])`` over the ``M x A`` pairs, so it can
  remember.
* :class:`MLPPolicy`: a flax MLP from observation features to action logits.

:meth:`as_policy` makes any of them a :mod:`jaxpomdp.policy` policy that
``jaxpomdp.simulate.evaluate`` runs (its memory is the internal state and the
features of the last observation).
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxpomdp.errors import InvalidPolicyError, is_integer
from jaxpomdp.model import as_pytree, check_methods, inverse_cdf, spec, trace

__all__ = ["StochasticPolicy", "LogisticPolicy", "SoftmaxPolicy", "FiniteStateController",
           "MLPPolicy", "SampledPolicy", "observation_features", "observation_feature_size",
           "initial_observation", "sample", "sample_with_uniform", "log_prob", "as_stochastic_policy"]


def _float():
    """JAX's default float dtype (float32 unless ``jax_enable_x64``)."""
    return jax.dtypes.canonicalize_dtype(jnp.float_)


def observation_features(model: Any, observation: jax.Array) -> jax.Array:
    """The feature vector of an observation as a policy sees it.

    ``model.observation_feature(observation)`` when the model defines it (a
    :class:`~jaxpomdp.model.TabularPOMDP` does: its ``observation_features`` or
    one-hot), else the one-hot vector over ``model.num_observations``.
    """
    fn = getattr(model, "observation_feature", None)
    if fn is not None:
        return fn(observation)
    return jax.nn.one_hot(observation, model.num_observations, dtype=_float())


def observation_feature_size(model: Any) -> int:
    """The length ``F`` of :func:`observation_features` (static)."""
    return int(jax.eval_shape(lambda: observation_features(model, jnp.zeros((), jnp.int32))).shape[-1])


def initial_observation(model: Any) -> jax.Array:
    """What a policy sees before the first observation: the zero feature vector."""
    shape = jax.eval_shape(lambda: observation_features(model, jnp.zeros((), jnp.int32)))
    return jnp.zeros(shape.shape, shape.dtype)


class StochasticPolicy:
    """The interface (documentation only; the classes below implement it).

    Attributes:
      num_actions: int, static.
      num_memory: int, static, ``M`` (1 without memory).

    Methods:
      init_params(key) -> params.
      log_probs(params, memory, obs_features) -> float[M, A], the joint
        log-probabilities of (next memory, action); ``memory`` is int32[].
    """

    num_actions: int
    num_memory: int

    def init_params(self, key: jax.Array) -> Any:  # pragma: no cover - documentation
        raise NotImplementedError

    def log_probs(self, params: Any, memory: jax.Array, obs_features: jax.Array) -> jax.Array:  # pragma: no cover
        raise NotImplementedError


def as_stochastic_policy(policy: Any, model: Any, params: Any = None, *, name: str = "policy") -> Any:
    """Checks that ``policy`` follows :class:`StochasticPolicy` on ``model`` and returns it in a form jit accepts.

    The policy-gradient entry points (``gpomdp.gpomdp``, ``olpomdp``, ``solve``) call it,
    so a policy written as a plain Python class works (held as static data,
    :class:`~jaxpomdp.model.StaticObject`) and a broken one is refused with what is
    wrong. Checked: ``num_actions`` is the model's, ``num_memory`` a positive
    integer, and ``log_probs(params, memory, obs_features)`` traces (with ``params``,
    or ``init_params(key)``'s shapes when None) to a real ``[num_memory, num_actions]``
    array.

    Raises:
      InvalidPolicyError: naming the attribute or method and what it gave.
    """
    for attr in ("num_actions", "num_memory"):
        value = getattr(policy, attr, None)
        if not (is_integer(value) and value >= 1):
            raise InvalidPolicyError(f"{name}.{attr} must be a positive integer, found {value!r}")
    if int(policy.num_actions) != int(model.num_actions):
        raise InvalidPolicyError(f"{name}.num_actions is {policy.num_actions}; the model has {model.num_actions} "
                                 "actions")
    check_methods(InvalidPolicyError, policy, name, ("init_params", "log_probs"), "a stochastic policy")
    policy = as_pytree(policy)
    if params is None:
        params = trace(InvalidPolicyError, f"{name}.init_params(key)", lambda k: policy.init_params(k),
                       jax.random.key(0))
    obs = jax.eval_shape(lambda o: observation_features(model, o), jax.ShapeDtypeStruct((), jnp.int32))
    out = trace(InvalidPolicyError, f"{name}.log_probs(params, memory, obs_features)",
                lambda p, m, f: policy.log_probs(p, m, f), params, jax.ShapeDtypeStruct((), jnp.int32), obs)
    want = (int(policy.num_memory), int(policy.num_actions))
    if not hasattr(out, "shape") or tuple(out.shape) != want or not jnp.issubdtype(out.dtype, jnp.floating):
        raise InvalidPolicyError(f"{name}.log_probs(params, memory, obs_features) must be a float "
                                 f"[num_memory, num_actions] = {list(want)} array; it is {spec(out)}")
    return policy


def sample(key: jax.Array, policy: Any, params: Any, memory: jax.Array, obs_features: jax.Array):
    """Draws ``(next_memory, action)`` from the policy's joint law. Both int32[]."""
    return sample_with_uniform(jax.random.uniform(key), policy, params, memory, obs_features)


def sample_with_uniform(u: jax.Array, policy: Any, params: Any, memory: jax.Array, obs_features: jax.Array):
    """:func:`sample` by inversion of the joint distribution function at ``u ~ U[0, 1)``.

    One uniform per draw (cheaper than a Gumbel per outcome); outcomes of
    probability zero are never drawn.
    """
    flat = inverse_cdf(u, jnp.exp(policy.log_probs(params, memory, obs_features).reshape(-1)))
    return (flat // policy.num_actions).astype(jnp.int32), (flat % policy.num_actions).astype(jnp.int32)


def log_prob(policy: Any, params: Any, memory: jax.Array, obs_features: jax.Array,
             next_memory: jax.Array, action: jax.Array) -> jax.Array:
    """``log P(next_memory, action | params, memory, obs_features)``: differentiate this for the score."""
    return policy.log_probs(params, memory, obs_features)[next_memory, action]


class _AsPolicy:
    def as_policy(self, params: Any) -> "SampledPolicy":
        """This policy with these parameters as a :mod:`jaxpomdp.policy` policy (for ``simulate``)."""
        return SampledPolicy(self, params)


@struct.dataclass
class LogisticPolicy(_AsPolicy):
    """Baxter & Bartlett's two-action policy: ``P(action 0) = sigmoid(theta . phi(y))``.

    ``params`` is ``theta``, float[F], zeros at :meth:`init_params` (the paper's
    start). No memory.
    """

    num_features: int = struct.field(pytree_node=False)
    num_actions: int = struct.field(pytree_node=False, default=2)
    num_memory: int = struct.field(pytree_node=False, default=1)

    def __post_init__(self):
        if self.num_actions != 2:
            raise ValueError(f"LogisticPolicy has two actions; got num_actions={self.num_actions}")

    def init_params(self, key: jax.Array) -> jax.Array:
        del key
        return jnp.zeros((self.num_features,), _float())

    def log_probs(self, params, memory, obs_features):
        chex.assert_rank(obs_features, 1)
        x = jnp.dot(params, obs_features.astype(params.dtype))
        return jnp.stack([jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)])[None, :]


@struct.dataclass
class SoftmaxPolicy(_AsPolicy):
    """``P(u | phi(y)) = softmax(W phi(y) + b)[u]``; ``params = {"w": [A, F], "b": [A]}``, zeros at init. No memory."""

    num_features: int = struct.field(pytree_node=False)
    num_actions: int = struct.field(pytree_node=False)
    num_memory: int = struct.field(pytree_node=False, default=1)

    def init_params(self, key: jax.Array) -> dict:
        del key
        return {"w": jnp.zeros((self.num_actions, self.num_features), _float()),
                "b": jnp.zeros((self.num_actions,), _float())}

    def log_probs(self, params, memory, obs_features):
        chex.assert_rank(obs_features, 1)
        logits = params["w"] @ obs_features.astype(params["w"].dtype) + params["b"]
        return jax.nn.log_softmax(logits)[None, :]


@struct.dataclass
class FiniteStateController(_AsPolicy):
    """A stochastic finite-state controller with ``num_memory`` internal states.

    From memory ``g`` on observation features ``phi`` it draws the next memory
    ``h`` and the action ``u`` together from one softmax over the ``M x A`` pairs::

        P(h, u | g, phi) = softmax(w[g] phi + b[g])[h * A + u]

    (internal-state GPOMDP, Aberdeen & Baxter 2002, with memory and action drawn
    jointly so that a controller can couple them: open a door *and* forget what
    it heard). The memory starts at 0. ``params = {"w": [M, M*A, F], "b": [M,
    M*A]}``; :meth:`init_params` draws them as ``init_scale * N(0, 1)`` (zeros
    would make the memory states interchangeable, and their gradients equal, for
    ever).
    """

    num_features: int = struct.field(pytree_node=False)
    num_actions: int = struct.field(pytree_node=False)
    num_memory: int = struct.field(pytree_node=False, default=2)
    init_scale: float = struct.field(pytree_node=False, default=1.0)

    def init_params(self, key: jax.Array) -> dict:
        M, A, F = self.num_memory, self.num_actions, self.num_features
        k1, k2 = jax.random.split(key)
        return {"w": self.init_scale * jax.random.normal(k1, (M, M * A, F), _float()),
                "b": self.init_scale * jax.random.normal(k2, (M, M * A), _float())}

    def log_probs(self, params, memory, obs_features):
        chex.assert_rank(obs_features, 1)
        phi = obs_features.astype(params["w"].dtype)
        logits = params["w"][memory] @ phi + params["b"][memory]
        return jax.nn.log_softmax(logits).reshape(self.num_memory, self.num_actions)


class _MLP(nn.Module):
    hidden: Sequence[int]
    num_actions: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.tanh(nn.Dense(width)(x))
        return nn.Dense(self.num_actions, kernel_init=nn.initializers.zeros)(x)


@struct.dataclass
class MLPPolicy(_AsPolicy):
    """``P(u | phi(y)) = softmax(mlp(phi(y)))[u]`` with a flax MLP (tanh hidden layers).

    The last layer starts at zero, so the initial policy is uniform. No memory.
    """

    num_features: int = struct.field(pytree_node=False)
    num_actions: int = struct.field(pytree_node=False)
    hidden: tuple = struct.field(pytree_node=False, default=(32,))
    num_memory: int = struct.field(pytree_node=False, default=1)

    def _module(self):
        return _MLP(tuple(self.hidden), self.num_actions)

    def init_params(self, key: jax.Array) -> Any:
        return self._module().init(key, jnp.zeros((self.num_features,), _float()))

    def log_probs(self, params, memory, obs_features):
        chex.assert_rank(obs_features, 1)
        return jax.nn.log_softmax(self._module().apply(params, obs_features.astype(_float())))[None, :]


@struct.dataclass
class SampledPolicy:
    """A stochastic policy with fixed parameters, as a :mod:`jaxpomdp.policy` policy.

    Memory: ``(internal state int32[], features of the last observation)``; the
    internal state is drawn with the action (``sample``), the features are set by
    ``update``.
    """

    policy: Any
    params: Any

    def init(self, model: Any):
        return jnp.zeros((), jnp.int32), initial_observation(model)

    def sample(self, key: jax.Array, memory):
        g, phi = memory
        h, u = sample(key, self.policy, self.params, g, phi)
        return u, (h, phi)

    def act(self, key: jax.Array, memory) -> jax.Array:
        return self.sample(key, memory)[0]

    def update(self, model: Any, memory, action, observation):
        g, phi = memory
        return g, observation_features(model, observation).astype(phi.dtype)
