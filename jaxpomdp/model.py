"""The model pytrees: ``TabularPOMDP`` and the ``GenerativePOMDP`` simulator protocol.

Conventions (used everywhere in jaxpomdp):

* ``T(s' | s, a)`` is stored sparsely: ``next_state[a, s, k]`` are the successor
  states of ``(s, a)`` and ``next_prob[a, s, k]`` their probabilities, ``k < K``
  where ``K`` is the largest number of successors of any ``(s, a)``. Unused slots
  hold state 0 with probability 0, so every gather stays in range.
* ``Z(o | a, s')`` is dense: ``obs_prob[a, s', o]``, the probability of observing
  ``o`` after action ``a`` arrives in ``s'``.
* ``R(s, a)`` is the *expected* immediate reward ``reward[a, s]`` (file formats
  whose rewards depend on ``s'`` and ``o`` are reduced to it on reading).
* States, actions and observations are int32 indices; their names are static
  metadata kept outside the pytree.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxpomdp.errors import InvalidModelError

__all__ = [
    "TabularPOMDP",
    "GenerativePOMDP",
    "StaticObject",
    "as_pytree",
    "as_simulator",
    "Names",
    "from_dense",
    "dense_transitions",
    "validate",
    "DEFAULT_TOLERANCE",
]

#: Default tolerance on |sum of a probability row - 1| (``validate`` and the readers).
DEFAULT_TOLERANCE = 1e-5


class Names(tuple):
    """An immutable tuple of names with a cached hash.

    Names are static pytree metadata, so jit compares them on every call; caching
    the hash keeps that cheap even for hundreds of thousands of states.
    """

    def __hash__(self):  # noqa: D105
        h = self.__dict__.get("_hash")
        if h is None:
            h = self.__dict__["_hash"] = tuple.__hash__(self)
        return h

    def __eq__(self, other):  # noqa: D105
        return self is other or tuple.__eq__(self, other)

    def __ne__(self, other):  # noqa: D105
        return not self.__eq__(other)

    def __reduce__(self):
        return (Names, (tuple(self),))


def float_dtype() -> np.dtype:
    """The float dtype models are kept in: JAX's default (float32 unless ``jax_enable_x64``)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float_))


def too_large(dtype) -> str:
    """The end of the message for a number that ``dtype`` cannot hold (it would become infinite)."""
    dtype = np.dtype(dtype)
    hint = "; JAX_ENABLE_X64=1 keeps models in float64" if dtype.itemsize < 8 else ""
    return f"is too large for {dtype} (at most {np.finfo(dtype).max:.4g} in size{hint})"


def _names(values: Optional[Sequence[str]], count: int, what: str) -> Optional[Names]:
    if values is None:
        return None
    values = Names(str(v) for v in values)
    if len(values) != count:
        raise InvalidModelError(f"{len(values)} {what} names given for {count} {what}s")
    if len(set(values)) != len(values):
        seen = set()
        dup = next(v for v in values if v in seen or seen.add(v))
        raise InvalidModelError(f"duplicate {what} name {dup!r}")
    return values


@runtime_checkable
class GenerativePOMDP(Protocol):
    """A POMDP given as a simulator (what NVI, GPOMDP and ``simulate`` need).

    Every method is pure and jit/vmap-able; the PRNG key comes first.

    * ``initial_state(key) -> state`` draws ``s0 ~ b0``;
    * ``step(key, state, action) -> (state', observation, reward, done)`` draws
      ``s' ~ T(.|s, a)``, ``o ~ Z(.|a, s')`` and returns the reward of ``(s, a)``;
      ``done`` is True when ``s'`` is terminal (absorbing, no further reward);
    * ``features(state) -> float[F]`` describes a state to a function approximator.

    ``num_actions``, ``num_observations`` and ``discount`` describe the problem.
    Optional methods the particle filter (:mod:`jaxpomdp.particles`) uses when
    present: ``observation_probability(state, action, state', observation)``
    (``Z(o | a, s')``; without it the filter accepts a particle whose own sampled
    observation matches) and ``resample_particles(key, states, weights) -> states``
    (its own resampling, e.g. RockSample's by rock); NVI's exploration uses
    ``upper_value(state)`` (an upper bound on the value of a known state);
    ``simulate.evaluate`` reads ``max_abs_reward`` (``max |R|``) for its default horizon.

    A plain Python class will do: the solvers' entry points pass the model through
    :func:`as_simulator`, which checks the protocol by tracing (refusing a broken
    simulator with :class:`~jaxpomdp.errors.InvalidModelError`) and holds an object
    that is not a pytree as static data.
    """

    num_actions: int
    num_observations: int
    discount: Any

    def initial_state(self, key: jax.Array) -> Any: ...

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, jax.Array, jax.Array, jax.Array]: ...

    def features(self, state: Any) -> jax.Array: ...


class _ById:
    """Holds an object as static pytree data compared by identity (a simulator may define ``__eq__``
    without ``__hash__``, or compare arrays elementwise)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ById) and other.obj is self.obj


@struct.dataclass
class StaticObject:
    """An object that is not a pytree, made one: held as static data (hashed by identity).

    :func:`as_simulator` and :func:`jaxpomdp.policy.as_policy` wrap a plain Python
    object this way so that it can be passed to jit-compiled functions; every
    attribute and method is the wrapped object's. Arrays it holds become constants of
    the compiled programs (each new object compiles anew); for large arrays, or to
    vmap over them, make the class a pytree instead (``flax.struct.dataclass``,
    ``chex.dataclass``, a NamedTuple).
    """

    held: _ById = struct.field(pytree_node=False)

    @property
    def wrapped(self) -> Any:
        """The object held."""
        return self.held.obj

    def __getattr__(self, name):
        if name.startswith("__") or name == "held":  # copy/pickle probe dunders before __init__ ran
            raise AttributeError(name)
        return getattr(self.held.obj, name)


def as_pytree(obj: Any) -> Any:
    """``obj`` itself when it is a pytree (registered, with or without leaves), else a
    :class:`StaticObject` holding it."""
    leaves = jax.tree.leaves(obj)
    return StaticObject(_ById(obj)) if len(leaves) == 1 and leaves[0] is obj else obj


def short_error(e: BaseException) -> str:
    """``TypeName: first line`` of an exception, for a message that wraps it."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def spec(x) -> str:
    """``float32[2, 3]``: an array's (or a ShapeDtypeStruct's) dtype and shape, for messages."""
    return f"{np.dtype(x.dtype).name}{list(x.shape)}" if hasattr(x, "shape") else type(x).__name__


def specs(tree) -> Any:
    """:func:`spec` of every leaf of a pytree, for messages."""
    return jax.tree.map(spec, tree)


def same_types(a, b) -> bool:
    """Whether two pytrees (of arrays or ShapeDtypeStructs) have one structure, shapes and dtypes."""
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.shape == y.shape and x.dtype == y.dtype for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


#: The end of a message for a method JAX could not trace.
PURE_JAX = "it must be pure JAX code (jnp, jax.random, lax; no Python if/int() on traced values)"


def trace(error: type, what: str, fn, *args) -> Any:
    """``jax.eval_shape(fn, *args)``, or ``error`` saying that ``what`` cannot be traced, and why.

    Warnings raised while tracing are dropped: the solve traces the same code again and
    shows them then (a check of a policy too large to solve would otherwise print JAX's
    int64-index warning before the one-line refusal)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return jax.eval_shape(fn, *args)
    except Exception as e:
        raise error(f"{what} cannot be traced by JAX ({short_error(e)}); {PURE_JAX}") from e


def check_methods(error: type, obj: Any, name: str, needed: Sequence[str], kind: str) -> None:
    """``error`` naming the methods of ``needed`` that ``obj`` lacks (``kind`` says what needs them)."""
    missing = [m for m in needed if not callable(getattr(obj, m, None))]
    if missing:
        raise error(f"{name} has no method {', '.join(missing)} ({kind} needs {', '.join(needed)})")


def as_simulator(model: Any, *, features: bool = False, name: str = "model") -> Any:
    """Checks that ``model`` follows :class:`GenerativePOMDP` and returns it in a form jit accepts.

    The solvers' entry points (``nvi.solve``, ``gpomdp.solve``, ``simulate.evaluate``,
    ...) call it, so a simulator written as a plain Python class works, and a broken
    one is refused with what is wrong rather than a JAX traceback from deep inside a
    compiled loop. Call it yourself before passing a plain object to the lower-level
    pieces (``nvi.init``, ``simulate.rollout``, ``particles.update``) under your own jit.

    What is checked, by tracing (``jax.eval_shape``, no computation): ``num_actions``
    and ``num_observations`` are positive integers and ``discount`` a number in
    ``[0, 1]``; ``initial_state(key)`` and ``step(key, state, action)`` can be traced
    with a traced action; ``step`` returns four things, a next state of the same
    structure, shapes and dtypes as ``initial_state``'s (``lax.scan`` carries it), an
    integer (or boolean) scalar observation, a real scalar reward and a boolean (or
    integer) scalar ``done``; with ``features=True`` (what NVI needs),
    ``features(state)`` is a 1-D real array.

    Args:
      model: a simulator; a :class:`TabularPOMDP` or another registered pytree is
        returned as it is (after the checks), any other object as a
        :class:`StaticObject` holding it.
      features: also check ``features``.
      name: how messages call the model.

    Raises:
      InvalidModelError: naming the method or attribute and what it gave.
    """
    if isinstance(model, TabularPOMDP):
        return model  # checked when built (validate)
    for attr in ("num_actions", "num_observations"):
        value = getattr(model, attr, None)
        try:  # an int, a NumPy integer or a concrete 0-d integer array; not a bool, not 3.0
            ok = not isinstance(value, bool) and operator.index(value) >= 1
        except (TypeError, jax.errors.ConcretizationTypeError):
            ok = False
        if not ok:
            raise InvalidModelError(f"{name}.{attr} must be a positive integer, found {value!r}")
    discount = getattr(model, "discount", None)
    if isinstance(discount, jax.core.Tracer):  # a model traced by the caller's own jit or vmap
        discount = 0.0
    try:
        d = float(np.asarray(discount))
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        d = float("nan")
    if not 0.0 <= d <= 1.0:
        raise InvalidModelError(f"{name}.discount must be a number in [0, 1], found {discount!r}")
    check_methods(InvalidModelError, model, name, ("initial_state", "step") + (("features",) if features else ()),
                  "a GenerativePOMDP")
    model = as_pytree(model)  # a plain object: held as static data, which jit can take
    key = jax.random.key(0)
    state = trace(InvalidModelError, f"{name}.initial_state(key)", lambda k: model.initial_state(k), key)
    out = trace(InvalidModelError, f"{name}.step(key, state, action) with a traced int32 action",
                lambda k, s, a: model.step(k, s, a), key, state, jax.ShapeDtypeStruct((), jnp.int32))
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        got = f"{len(out)} values" if isinstance(out, (tuple, list)) else type(out).__name__
        raise InvalidModelError(f"{name}.step must return (next_state, observation, reward, done); it returned {got}")
    nxt, obs, reward, done = out
    if not same_types(nxt, state):
        raise InvalidModelError(f"{name}.step returned a next state {specs(nxt)} unlike initial_state's "
                                f"{specs(state)}: a state must keep its structure, shapes and dtypes")
    for what, x, kinds, means in (("observation", obs, "iub", "an integer scalar (an index below num_observations)"),
                                  ("reward", reward, "iuf", "a real scalar"),
                                  ("done", done, "biu", "a boolean scalar")):
        if not hasattr(x, "shape") or x.shape != () or np.dtype(x.dtype).kind not in kinds:
            raise InvalidModelError(f"{name}.step's {what} must be {means}; it is {spec(x)}")
    if features:
        f = trace(InvalidModelError, f"{name}.features(state)", lambda s: model.features(s), state)
        if not hasattr(f, "shape") or len(f.shape) != 1 or np.dtype(f.dtype).kind not in "biuf" or not f.shape[0]:
            raise InvalidModelError(f"{name}.features(state) must be a non-empty 1-D real array; it is {spec(f)}")
    return model


@struct.dataclass
class TabularPOMDP:
    """A finite POMDP as a frozen pytree with sparse successors.

    Fields (A actions, S states, O observations, K successors):
      next_state: int32[A, S, K] successor states of ``(s, a)``, padded with 0.
      next_prob: float[A, S, K] their probabilities (0 in padding).
      obs_prob: float[A, S, O] ``Z(o | a, s')`` for the state arrived in.
      reward: float[A, S] expected immediate reward ``R(s, a)``.
      initial_belief: float[S] the initial belief ``b0``.
      discount: float[] the discount factor (a leaf, so it can be vmapped).
      state_features: optional float[S, F] features of each state (``features``
        returns a one-hot vector when it is None).
      observation_features: optional float[O, G] features of each observation,
        what a policy that sees observations through features (the GPOMDP
        policies) receives (:meth:`observation_feature` returns a one-hot vector
        when it is None).
      state_names, action_names, observation_names: static names (or None).

    Build one with :meth:`TabularPOMDP.create` (canonical sparse form from NumPy
    arrays), :func:`from_dense`, a reader (``jaxpomdp.load_pomdp``) or
    ``jaxpomdp.problems.get``. It implements :class:`GenerativePOMDP`.
    """

    next_state: jax.Array
    next_prob: jax.Array
    obs_prob: jax.Array
    reward: jax.Array
    initial_belief: jax.Array
    discount: jax.Array
    state_features: Optional[jax.Array] = None
    observation_features: Optional[jax.Array] = None
    state_names: Optional[Names] = struct.field(pytree_node=False, default=None)
    action_names: Optional[Names] = struct.field(pytree_node=False, default=None)
    observation_names: Optional[Names] = struct.field(pytree_node=False, default=None)

    # ----------------------------------------------------------------- sizes
    @property
    def num_actions(self) -> int:
        return self.next_state.shape[-3]

    @property
    def num_states(self) -> int:
        return self.next_state.shape[-2]

    @property
    def num_successors(self) -> int:
        return self.next_state.shape[-1]

    @property
    def num_observations(self) -> int:
        return self.obs_prob.shape[-1]

    def state_name(self, s: int) -> str:
        return self.state_names[s] if self.state_names is not None else str(int(s))

    def action_name(self, a: int) -> str:
        return self.action_names[a] if self.action_names is not None else str(int(a))

    def observation_name(self, o: int) -> str:
        return self.observation_names[o] if self.observation_names is not None else str(int(o))

    # ----------------------------------------------------------- construction
    @classmethod
    def create(cls, next_state, next_prob, obs_prob, reward, initial_belief, discount, *,
               state_names=None, action_names=None, observation_names=None,
               state_features=None, observation_features=None, dtype=None) -> "TabularPOMDP":
        """Builds a model in canonical form from host (NumPy) arrays.

        Canonical form: in each ``(a, s)`` row the successors with nonzero
        probability come first in increasing state order, a successor listed twice
        is merged (probabilities added), zero-probability slots are dropped where
        possible (``K`` = the largest number of successors) and padding is state 0
        with probability 0. Two models describing the same
        POMDP therefore have identical arrays.

        Args:
          next_state: int[A, S, K] successor states.
          next_prob: float[A, S, K] their probabilities.
          obs_prob: float[A, S, O].
          reward: float[A, S].
          initial_belief: float[S].
          discount: scalar.
          state_names, action_names, observation_names: optional sequences of str.
          state_features: optional float[S, F].
          observation_features: optional float[O, G].
          dtype: float dtype of the arrays (default: JAX's default float, float32
            unless ``jax_enable_x64``).

        Raises:
          InvalidModelError: on inconsistent shapes or names.
        """
        ns = np.asarray(next_state)
        npb = np.asarray(next_prob, dtype=np.float64)
        if ns.ndim != 3 or npb.shape != ns.shape:
            raise InvalidModelError(
                f"next_state and next_prob must both have shape [A, S, K]; got {ns.shape} and {npb.shape}")
        if not (np.issubdtype(ns.dtype, np.integer) or ns.dtype == np.bool_):
            try:
                nsf = ns.astype(np.float64)
            except (TypeError, ValueError):
                raise InvalidModelError(f"next_state must hold integer state indices; got dtype {ns.dtype}") from None
            frac = np.argwhere(~np.isfinite(nsf) | (nsf != np.round(nsf)))
            if frac.size:
                a, s, k = frac[0]
                raise InvalidModelError(
                    f"next_state[{a}, {s}, {k}] = {float(nsf[a, s, k])!r} is not an integer state index")
        if ns.shape[0] < 1 or ns.shape[1] < 1:
            raise InvalidModelError(
                f"a model needs at least one action and one state; got A={ns.shape[0]}, S={ns.shape[1]}")
        ns, npb = _canonical_successors(ns.astype(np.int64), npb)
        A, S, _ = ns.shape
        if S >= 2 ** 31:
            raise InvalidModelError(f"{S} states do not fit int32 indices")
        obs = np.asarray(obs_prob, dtype=np.float64)
        rew = np.asarray(reward, dtype=np.float64)
        b0 = np.asarray(initial_belief, dtype=np.float64)
        if obs.ndim != 3 or obs.shape[:2] != (A, S):
            raise InvalidModelError(f"obs_prob must have shape [A={A}, S={S}, O]; got {obs.shape}")
        if obs.shape[2] < 1:
            raise InvalidModelError("a model needs at least one observation; obs_prob has O=0")
        if rew.shape != (A, S):
            raise InvalidModelError(f"reward must have shape [A={A}, S={S}]; got {rew.shape}")
        if b0.shape != (S,):
            raise InvalidModelError(f"initial_belief must have shape [S={S}]; got {b0.shape}")
        if np.ndim(discount) != 0:
            raise InvalidModelError(f"discount must be a scalar; got shape {np.shape(discount)}")
        # cast on the host: jnp.asarray(x, dtype) would compile a conversion per shape
        dtype = np.dtype(jax.dtypes.canonicalize_dtype(dtype if dtype is not None else jnp.float_))
        big = np.argwhere(np.abs(rew) > np.finfo(dtype).max)  # would be cast to infinity
        if big.size:
            a, s = big[0]
            an = action_names[a] if action_names is not None else int(a)
            sn = state_names[s] if state_names is not None else int(s)
            raise InvalidModelError(f"reward[action={an!r}, state={sn!r}] = {rew[a, s]:.6g} {too_large(dtype)}")
        feats = None
        if state_features is not None:
            feats = np.asarray(state_features)
            if feats.ndim != 2 or feats.shape[0] != S:
                raise InvalidModelError(f"state_features must have shape [S={S}, F]; got {feats.shape}")
            feats = jnp.asarray(feats.astype(dtype))
        obs_feats = None
        if observation_features is not None:
            obs_feats = np.asarray(observation_features)
            if obs_feats.ndim != 2 or obs_feats.shape[0] != obs.shape[2]:
                raise InvalidModelError(
                    f"observation_features must have shape [O={obs.shape[2]}, G]; got {obs_feats.shape}")
            obs_feats = jnp.asarray(obs_feats.astype(dtype))
        return cls(
            next_state=jnp.asarray(ns.astype(np.int32)),
            next_prob=jnp.asarray(npb.astype(dtype)),
            obs_prob=jnp.asarray(obs.astype(dtype)),
            reward=jnp.asarray(rew.astype(dtype)),
            initial_belief=jnp.asarray(b0.astype(dtype)),
            discount=jnp.asarray(np.asarray(discount, dtype)),
            state_features=feats,
            observation_features=obs_feats,
            state_names=_names(state_names, S, "state"),
            action_names=_names(action_names, A, "action"),
            observation_names=_names(observation_names, obs.shape[2], "observation"),
        )

    # ------------------------------------------------- GenerativePOMDP protocol
    def initial_state(self, key: jax.Array) -> jax.Array:
        """Draws ``s0 ~ b0``. Returns an int32 scalar."""
        return inverse_cdf(jax.random.uniform(key, (), self.initial_belief.dtype), self.initial_belief)

    def step(self, key: jax.Array, state: jax.Array, action: jax.Array):
        """Samples one transition.

        Returns ``(s', o, r, done)`` with ``s' ~ T(.|s, a)``, ``o ~ Z(.|a, s')``,
        ``r = R(s, a)`` (the expected reward: unbiased for returns, lower variance
        than sampling a reward that depends on ``s'`` and ``o``) and ``done = False``
        (a tabular model has no terminal flag; absorbing states are part of it).
        """
        u_t, u_o = jax.random.uniform(key, (2,), self.next_prob.dtype)
        nxt = self.next_state[action, state, inverse_cdf(u_t, self.next_prob[action, state])]
        obs = inverse_cdf(u_o, self.obs_prob[action, nxt])
        return nxt, obs, self.reward[action, state], jnp.zeros((), bool)

    def features(self, state: jax.Array) -> jax.Array:
        """``state_features[state]``, or the one-hot vector of ``state``."""
        if self.state_features is not None:
            return self.state_features[state]
        return jax.nn.one_hot(state, self.num_states, dtype=self.reward.dtype)

    def observation_feature(self, observation: jax.Array) -> jax.Array:
        """``observation_features[observation]``, or the one-hot vector of ``observation``."""
        if self.observation_features is not None:
            return self.observation_features[observation]
        return jax.nn.one_hot(observation, self.num_observations, dtype=self.reward.dtype)


def inverse_cdf(u: jax.Array, probs: jax.Array) -> jax.Array:
    """The index drawn from (unnormalised) ``probs`` by inversion at ``u ~ U[0, 1)``: int32[].

    One uniform per draw (cheaper than ``jax.random.categorical``'s Gumbel per
    outcome); an outcome of probability zero is never drawn.
    """
    cdf = jnp.cumsum(probs)
    above = cdf > u * cdf[-1]
    return jnp.where(jnp.any(above), jnp.argmax(above), jnp.argmax(cdf >= cdf[-1])).astype(jnp.int32)


def _canonical_successors(ns: np.ndarray, npb: np.ndarray):
    """Merges duplicate successors, sorts them by state and drops zero slots.

    Entries with a nonzero (possibly invalid: negative or NaN) probability are
    kept, so that ``validate`` can still name them.
    """
    A, S, K = ns.shape
    keep = npb != 0
    if keep.any():
        bad = keep & ((ns < 0) | (ns >= S))
        if bad.any():
            a, s, k = np.argwhere(bad)[0]
            raise InvalidModelError(
                f"next_state[{a}, {s}, {k}] = {ns[a, s, k]} is not a state index in [0, {S})")
    rows = np.broadcast_to(np.arange(A * S, dtype=np.int64).reshape(A, S, 1), ns.shape)
    key = rows[keep] * S + ns[keep]
    uniq, inv = np.unique(key, return_inverse=True)
    prob = np.bincount(inv.ravel(), weights=npb[keep], minlength=uniq.size)
    urow, ustate = np.divmod(uniq, S)
    counts = np.bincount(urow, minlength=A * S)
    k_new = max(int(counts.max(initial=0)), 1)
    slot = np.arange(uniq.size) - (np.cumsum(counts) - counts)[urow]
    out_ns = np.zeros((A * S, k_new), np.int64)
    out_p = np.zeros((A * S, k_new), np.float64)
    out_ns[urow, slot] = ustate
    out_p[urow, slot] = prob
    return out_ns.reshape(A, S, k_new), out_p.reshape(A, S, k_new)


def from_dense(transition, observation, reward, initial_belief, discount, **names) -> TabularPOMDP:
    """Builds a :class:`TabularPOMDP` from dense arrays.

    Args:
      transition: float[A, S, S] with ``transition[a, s, s'] = T(s' | s, a)``.
      observation: float[A, S, O] with ``observation[a, s', o] = Z(o | a, s')``.
      reward: float[A, S] expected immediate reward ``R(s, a)``.
      initial_belief: float[S].
      discount: scalar.
      **names: ``state_names``, ``action_names``, ``observation_names``,
        ``state_features``, ``observation_features``, ``dtype`` as in :meth:`TabularPOMDP.create`.

    Example:
      >>> import numpy as np
      >>> m = from_dense(np.ones((1, 2, 2)) / 2, np.ones((1, 2, 1)), np.zeros((1, 2)),
      ...                np.array([1.0, 0.0]), 0.9)
      >>> m.num_states, m.num_successors
      (2, 2)
    """
    T = np.asarray(transition, dtype=np.float64)
    if T.ndim != 3 or T.shape[1] != T.shape[2]:
        raise InvalidModelError(f"transition must have shape [A, S, S]; got {T.shape}")
    A, S, _ = T.shape
    ns = np.broadcast_to(np.arange(S), (A, S, S))
    return TabularPOMDP.create(ns, T, observation, reward, initial_belief, discount, **names)


def dense_transitions(model: TabularPOMDP) -> jax.Array:
    """The dense ``T[a, s, s']`` of a model (for small models and tests)."""
    A, S, K = model.next_state.shape
    T = jnp.zeros((A, S, S), model.next_prob.dtype)
    a = jnp.arange(A)[:, None, None]
    s = jnp.arange(S)[None, :, None]
    return T.at[a, s, model.next_state].add(model.next_prob)


def validate(model: TabularPOMDP, *, tolerance: float = DEFAULT_TOLERANCE) -> TabularPOMDP:
    """Checks that a model is a valid POMDP; returns it unchanged.

    Runs on the host, outside jit. Checks shapes, dtypes, index ranges, that every
    probability is finite and in [0, 1], that every transition row, observation
    row and the initial belief sums to 1 within ``tolerance``, that rewards are
    finite and that ``0 <= discount <= 1``.

    Raises:
      InvalidModelError: naming the first offending entry by its names, e.g.
        ``obs_prob[action='listen', state='tiger-left'] sums to 0.9``.
    """
    ns = np.asarray(model.next_state)
    npb = np.asarray(model.next_prob, dtype=np.float64)
    obs = np.asarray(model.obs_prob, dtype=np.float64)
    rew = np.asarray(model.reward, dtype=np.float64)
    b0 = np.asarray(model.initial_belief, dtype=np.float64)
    gamma = np.asarray(model.discount, dtype=np.float64)
    if ns.ndim != 3:
        raise InvalidModelError(f"next_state must have shape [A, S, K]; got {ns.shape}")
    A, S, K = ns.shape
    O = obs.shape[-1] if obs.ndim == 3 else None
    expected = {
        "next_prob": ((A, S, K), npb),
        "obs_prob": ((A, S, O), obs),
        "reward": ((A, S), rew),
        "initial_belief": ((S,), b0),
        "discount": ((), gamma),
    }
    for name, (shape, arr) in expected.items():
        if arr.shape != shape:
            raise InvalidModelError(f"{name} has shape {arr.shape}; expected {shape}")
    if not np.issubdtype(ns.dtype, np.integer):
        raise InvalidModelError(f"next_state must be integer; got {ns.dtype}")
    if min(A, S, O) < 1:
        raise InvalidModelError(
            f"a model needs at least one action, state and observation; got A={A}, S={S}, O={O}")
    if model.state_features is not None and np.shape(model.state_features)[:1] != (S,):
        raise InvalidModelError(f"state_features has shape {np.shape(model.state_features)}; expected [S={S}, F]")
    if model.observation_features is not None and np.shape(model.observation_features)[:1] != (O,):
        raise InvalidModelError(
            f"observation_features has shape {np.shape(model.observation_features)}; expected [O={O}, G]")

    sn, an, on = model.state_name, model.action_name, model.observation_name

    bad = np.argwhere((ns < 0) | (ns >= S))
    if bad.size:
        a, s, k = bad[0]
        raise InvalidModelError(
            f"next_state[action={an(a)!r}, state={sn(s)!r}, slot {k}] = {ns[a, s, k]} is not a state index in [0, {S})")

    def check_probs(name, arr, where):
        bad = np.argwhere(~np.isfinite(arr) | (arr < 0) | (arr > 1))
        if bad.size:
            idx = tuple(bad[0])
            raise InvalidModelError(f"{name}[{where(*idx)}] = {float(arr[idx]):.10g} is not a probability in [0, 1]")

    check_probs("next_prob", npb, lambda a, s, k: f"action={an(a)!r}, state={sn(s)!r}, slot {k}")
    check_probs("obs_prob", obs, lambda a, s, o: f"action={an(a)!r}, state={sn(s)!r}, observation={on(o)!r}")
    check_probs("initial_belief", b0, lambda s: f"state={sn(s)!r}")

    # the arrays' own rounding (float32: 6e-8 per unit summed) does not count against the tolerance:
    # a row that sums to 1 within it as written is not refused once stored
    slack = tolerance + float(np.finfo(np.asarray(model.next_prob).dtype).eps)

    def check_sums(name, sums, where):
        bad = np.argwhere(np.abs(sums - 1.0) > slack)
        if bad.size:
            idx = tuple(bad[0])
            raise InvalidModelError(
                f"{name}[{where(*idx)}] sums to {sums[idx]:.10g} (expected 1 ± {tolerance:g})")

    check_sums("next_prob", npb.sum(-1), lambda a, s: f"action={an(a)!r}, state={sn(s)!r}")
    check_sums("obs_prob", obs.sum(-1), lambda a, s: f"action={an(a)!r}, state={sn(s)!r}")
    if abs(b0.sum() - 1.0) > slack:
        raise InvalidModelError(f"initial_belief sums to {b0.sum():.10g} (expected 1 ± {tolerance:g})")

    bad = np.argwhere(~np.isfinite(rew))
    if bad.size:
        a, s = bad[0]
        raise InvalidModelError(f"reward[action={an(a)!r}, state={sn(s)!r}] = {float(rew[a, s])} is not finite")
    if not (np.isfinite(gamma) and 0.0 <= gamma <= 1.0):
        raise InvalidModelError(f"discount = {float(gamma)!r} is not in [0, 1]")
    return model
