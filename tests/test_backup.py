"""Point-based backups, FIB, sawtooth, pruning and the point-based solver state.

Every kernel is checked against an independent float64 NumPy reference written
with plain loops over the dense ``T[a, s, s']``, ``Z[a, s', o]`` and ``R[a, s]``
(from ``test_model.dense_arrays``), on Tiger, paint.95 and random sparse models.
:func:`test_reference_checks_under_x64` repeats the reference checks with
float64 models and tolerances near float64 rounding; the whole file also passes
with ``JAX_ENABLE_X64=1`` (its tolerances follow ``jax_enable_x64``).
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpomdp import backup, bounds, problems, prune
from jaxpomdp.solvers import point_based
from test_model import dense_arrays, random_model

X64 = bool(jax.config.jax_enable_x64)
# relative accuracy of float kernels, in units of max|R| / (1 - gamma) (float32: a few ulp of |V|)
ACC = 1e-11 if X64 else 1e-6
TIGER_OPTIMUM = 19.3721  # V*(b0) of Tiger, gamma = 0.95 (SARSOP's converged upper bound)


def _models():
    rng = np.random.default_rng(7)
    return {
        "tiger": problems.tiger(),
        "paint": problems.get("paint.95"),
        "random-a": random_model(rng, 0.9, A=3, S=6, O=3, max_successors=3)[0],
        "random-b": random_model(rng, 0.95, A=2, S=5, O=4, max_successors=2)[0],
    }


MODELS = _models()
NAMES = list(MODELS)
POINT_BACKUP = jax.jit(backup.point_backup)  # one compile per (model, alpha set) shape, shared by the tests


def scale(m):
    return float(np.abs(np.asarray(m.reward)).max()) / (1 - float(m.discount))


def tol(m):
    return ACC * scale(m)


def random_beliefs(rng, S, n, sparse=True):
    """``n`` beliefs: dense Dirichlet ones and (when ``sparse``) some with zeros."""
    out = rng.dirichlet(np.ones(S), size=n)
    if sparse:
        for i in range(0, n, 3):
            support = rng.random(S) < 0.5
            support[rng.integers(S)] = True
            out[i] = np.where(support, out[i], 0)
            out[i] /= out[i].sum()
    return out


def dtype_of(m):
    return np.asarray(m.reward).dtype


# ---------------------------------------------------------------- references
def np_successors(T, Z, b):
    """``tau[a, o, s'] = Z[a, s', o] sum_s T[a, s, s'] b[s]`` by loops."""
    A, S, _ = T.shape
    O = Z.shape[2]
    tau = np.zeros((A, O, S))
    for a in range(A):
        for o in range(O):
            for s2 in range(S):
                tau[a, o, s2] = Z[a, s2, o] * sum(T[a, s, s2] * b[s] for s in range(S))
    return tau


def np_vector(T, Z, R, gamma, alphas, a, ks):
    """``alpha(s) = R[a, s] + gamma sum_o sum_s' T[a, s, s'] Z[a, s', o] alphas[ks[o], s']``."""
    S = T.shape[1]
    out = np.array(R[a], float)
    for s in range(S):
        for o, k in enumerate(ks):
            out[s] += gamma * sum(T[a, s, s2] * Z[a, s2, o] * alphas[k, s2] for s2 in range(S))
    return out


def np_backup(T, Z, R, gamma, alphas, mask, b, slack):
    """Brute-force backup: ``q[a]`` and, per ``(a, o)``, every ``k`` within ``slack`` of the best."""
    A = T.shape[0]
    O = Z.shape[2]
    alphas = np.asarray(alphas, float)
    active = [k for k in range(len(alphas)) if mask[k]]
    tau = np_successors(T, Z, b)
    q = np.zeros(A)
    options = []
    for a in range(A):
        q[a] = R[a] @ b
        per_o = []
        for o in range(O):
            scores = {k: float(alphas[k] @ tau[a, o]) for k in active}
            best = max(scores.values())
            q[a] += gamma * best
            per_o.append([k for k in active if scores[k] >= best - slack])
        options.append(per_o)
    return q, options


def np_fib(T, Z, R, gamma):
    """Value iteration of ``Q[a,s] = R[a,s] + gamma sum_o max_a' sum_s' T[a,s,s'] Z[a,s',o] Q[a',s']``."""
    W = T[:, :, :, None] * Z[:, None, :, :]  # [a, s, s', o]
    q = np.full_like(R, R.max() / (1 - gamma))
    bound = np.abs(R).max() / (1 - gamma)
    for _ in range(20_000):
        inner = np.einsum("aspo,bp->asob", W, q)
        q_new = R + gamma * inner.max(-1).sum(-1)
        done = np.abs(q_new - q).max() <= 1e-15 * bound
        q = q_new
        if done:
            break
    return q


def np_sawtooth(points, values, mask, corner, b):
    """``b.c + min_i min(0, c_i(b) (v_i - b_i.c))``, ``c_i(b) = min_{s: b_i(s) > 0} b(s) / b_i(s)``."""
    out = float(b @ corner)
    best = 0.0
    for i in range(len(points)):
        if not mask[i]:
            continue
        support = [s for s in range(len(b)) if points[i, s] > 0]
        if not support:
            continue
        c = min(b[s] / points[i, s] for s in support)
        best = min(best, c * (values[i] - points[i] @ corner))
    return out + best


# ------------------------------------------------------------ 1. successors
@pytest.mark.parametrize("name", NAMES)
def test_successor_beliefs_match_the_dense_formula(name):
    m = MODELS[name]
    T, Z, _, b0, _ = dense_arrays(m)
    rng = np.random.default_rng(1)
    beliefs = np.concatenate([b0[None], np.eye(m.num_states), random_beliefs(rng, m.num_states, 5)])
    beliefs[-1] *= 3.5  # unnormalised: tau is linear in b
    fn = jax.jit(backup.successor_beliefs)
    for b in beliefs:
        tau = fn(m, jnp.asarray(b, dtype_of(m)))
        assert tau.shape == (m.num_actions, m.num_observations, m.num_states)
        assert tau.dtype == dtype_of(m)
        ref = np_successors(T, Z, b)
        np.testing.assert_allclose(tau, ref, rtol=0, atol=(1e-12 if X64 else 1e-6) * b.sum())
        # P(o | b, a) sums to the belief's mass for every action
        np.testing.assert_allclose(np.asarray(tau).sum((1, 2)), np.full(m.num_actions, b.sum()),
                                   rtol=1e-12 if X64 else 1e-5)


# ------------------------------------------------------------ 2. point backup
def _alpha_set(m, rng, extra=5):
    """Blind vectors plus random ones of the same scale (a valid lower-bound set is not needed here)."""
    blind = np.asarray(bounds.blind_alphas(m), float)
    rand = rng.normal(size=(extra, m.num_states)) * scale(m) * 0.3
    return np.concatenate([blind, rand])


def check_backup(m, alphas, mask, b, out, t=None):
    """``out`` (a kernel Backup) against the brute-force backup at ``b``, to ``t`` (default ``tol(m)``)."""
    T, Z, R, _, gamma = dense_arrays(m)
    alphas64 = np.asarray(alphas, float)
    alphas64 = np.where(np.asarray(mask)[:, None], alphas64, 0.0)  # masked rows may hold NaN
    t = tol(m) if t is None else t
    q_ref, options = np_backup(T, Z, R, gamma, alphas64, np.asarray(mask), np.asarray(b, float), t)
    alpha, action, value, q, successors = (np.asarray(x) for x in out)
    assert np.all(np.isfinite(alpha)) and np.all(np.isfinite(q)) and np.isfinite(value)
    assert alpha.dtype == dtype_of(m) and action.dtype == np.int32
    np.testing.assert_allclose(q, q_ref, rtol=0, atol=t)
    assert q_ref[action] >= q_ref.max() - 2 * t, (q_ref, int(action))
    np.testing.assert_allclose(value, q[action], rtol=0, atol=0)
    np.testing.assert_allclose(value, q_ref.max(), rtol=0, atol=2 * t)
    np.testing.assert_allclose(alpha @ np.asarray(b, float), value, rtol=0, atol=t)  # value = alpha . b
    # the vector is the backup of one of the (near-)argmax choices for a*
    choices = options[int(action)]
    assert np.prod([len(c) for c in choices]) <= 4096
    errors = [np.abs(alpha - np_vector(T, Z, R, gamma, alphas64, int(action), ks)).max()
              for ks in itertools.product(*choices)]
    assert min(errors) <= t, (min(errors), choices)
    # the successor links it reports are the ones it was built from
    assert successors.shape == (m.num_observations,) and successors.dtype == np.int32
    assert all(int(k) in c for k, c in zip(successors, choices)), (successors, choices)
    np.testing.assert_allclose(alpha, np_vector(T, Z, R, gamma, alphas64, int(action), successors),
                               rtol=0, atol=t)


@pytest.mark.parametrize("name", NAMES)
def test_point_backup_equals_brute_force(name):
    m = MODELS[name]
    rng = np.random.default_rng(2)
    alphas = jnp.asarray(_alpha_set(m, rng), dtype_of(m))
    mask = jnp.ones(alphas.shape[0], bool)
    beliefs = np.concatenate([np.asarray(m.initial_belief, float)[None], np.eye(m.num_states),
                              random_beliefs(rng, m.num_states, 6)])
    fn = POINT_BACKUP
    for b in beliefs:
        b = jnp.asarray(b, dtype_of(m))
        check_backup(m, alphas, mask, b, fn(m, alphas, mask, b))


@pytest.mark.parametrize("name", NAMES)
def test_point_backup_ignores_masked_vectors(name):
    m = MODELS[name]
    rng = np.random.default_rng(3)
    alphas = _alpha_set(m, rng)
    mask = np.ones(len(alphas), bool)
    mask[[1, len(alphas) - 2, len(alphas) - 1]] = False  # three vectors unused
    alphas[len(alphas) - 2] = 1e4 * scale(m)  # would win everywhere if it were used
    alphas[len(alphas) - 1] = np.nan  # unused rows may hold anything
    alphas, mask = jnp.asarray(alphas, dtype_of(m)), jnp.asarray(mask)
    fn = POINT_BACKUP
    for b in np.concatenate([np.asarray(m.initial_belief, float)[None], random_beliefs(rng, m.num_states, 4)]):
        b = jnp.asarray(b, dtype_of(m))
        out = fn(m, alphas, mask, b)
        check_backup(m, alphas, mask, b, out)  # the reference sees only the vectors in use
    # a single vector in use
    only = jnp.zeros(alphas.shape[0], bool).at[2].set(True)
    b = m.initial_belief
    check_backup(m, alphas, only, b, fn(m, alphas, only, b))


@pytest.mark.parametrize("name", ["paint", "random-a", "random-b"])
def test_point_backup_with_zero_probability_observations(name):
    m = MODELS[name]
    T, Z, _, _, _ = dense_arrays(m)
    rng = np.random.default_rng(4)
    alphas = jnp.asarray(_alpha_set(m, rng), dtype_of(m))
    mask = jnp.ones(alphas.shape[0], bool).at[0].set(False)
    fn = POINT_BACKUP
    seen_zero = 0
    for b in np.concatenate([np.asarray(m.initial_belief, float)[None], np.eye(m.num_states)]):
        p_o = np_successors(T, Z, b).sum(-1)  # [A, O]
        seen_zero += int((p_o == 0).sum())
        b = jnp.asarray(b, dtype_of(m))
        out = fn(m, alphas, mask, b)
        assert not any(np.isnan(np.asarray(x)).any() for x in out)
        check_backup(m, alphas, mask, b, out)
    assert seen_zero > 0  # the case was exercised


@pytest.mark.parametrize("name", ["random-a"])
def test_point_backup_batch_in_chunks_equals_vmap(name):
    m = MODELS[name]
    rng = np.random.default_rng(5)
    alphas = jnp.asarray(_alpha_set(m, rng), dtype_of(m))
    mask = jnp.ones(alphas.shape[0], bool).at[1].set(False)
    beliefs = jnp.asarray(random_beliefs(rng, m.num_states, 10), dtype_of(m))
    chunked = jax.jit(lambda bs: backup.point_backup_batch(m, alphas, mask, bs, chunk=3))(beliefs)  # 3 + 3 + 3 + 1
    whole = jax.jit(jax.vmap(lambda b: backup.point_backup(m, alphas, mask, b)))(beliefs)
    np.testing.assert_array_equal(chunked.action, whole.action)
    for x, y in zip(chunked, whole):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=1e-6 if not X64 else 1e-13, atol=tol(m) * 1e-2)
    check_backup(m, alphas, mask, beliefs[9], jax.tree.map(lambda x: x[9], chunked))
    # lower_value_batch likewise
    lv = backup.lower_value_batch(alphas, mask, beliefs, chunk=4)
    ref = np.where(np.asarray(mask), np.asarray(beliefs, float) @ np.asarray(alphas, float).T, -np.inf).max(1)
    np.testing.assert_allclose(lv, ref, rtol=0, atol=tol(m))


# ---------------------------------------------------------------- 3. validity
@pytest.mark.parametrize("name", NAMES)
def test_repeated_backups_from_blind_stay_below_fib_and_improve(name):
    m = MODELS[name]
    rng = np.random.default_rng(6)
    blind = bounds.blind_alphas(m)
    q_fib = np.asarray(bounds.fib(m), float)
    A, S = blind.shape
    steps = 30
    alphas = jnp.zeros((A + steps, S), dtype_of(m)).at[:A].set(blind)
    mask = jnp.arange(A + steps) < A

    @jax.jit
    def step(alphas, mask, n, b):
        out = backup.point_backup(m, alphas, mask, b)
        old = backup.lower_value(alphas, mask, b)
        return alphas.at[n].set(out.alpha), mask.at[n].set(True), out, old

    beliefs = np.concatenate([np.asarray(m.initial_belief, float)[None],
                              random_beliefs(rng, S, steps - 1)])
    t = tol(m)
    b0_values = []
    for i, b in enumerate(beliefs):
        bj = jnp.asarray(b, dtype_of(m))
        alphas, mask, out, old = step(alphas, mask, A + i, bj)
        # the backed-up vector is at least as good as the old lower bound at its belief
        assert float(out.value) >= float(old) - t, (i, float(out.value), float(old))
        np.testing.assert_allclose(np.asarray(out.alpha, float) @ b, out.value, rtol=0, atol=t)
        b0_values.append(float(backup.lower_value(alphas, mask, m.initial_belief)))
    assert np.all(np.diff(b0_values) >= 0)
    test_beliefs = np.concatenate([np.eye(S), random_beliefs(rng, S, 200)])
    values = test_beliefs @ np.asarray(alphas, float).T  # [N, M]: every vector, not only the max
    upper = (test_beliefs @ q_fib.T).max(1)
    assert np.all(values <= upper[:, None] + t), (values - upper[:, None]).max()
    if name == "tiger":
        b0 = np.asarray(m.initial_belief, float)
        assert (np.asarray(alphas, float) @ b0).max() <= TIGER_OPTIMUM + 1e-3
        assert b0_values[-1] > -20 + 1  # it did improve on "always listen"


# ------------------------------------------------------------------- 4. FIB
@pytest.mark.parametrize("name", NAMES)
def test_fib_matches_numpy_value_iteration(name):
    m = MODELS[name]
    T, Z, R, _, gamma = dense_arrays(m)
    ref = np_fib(T, Z, R, gamma)
    q = np.asarray(bounds.fib(m), float)
    assert q.shape == R.shape
    # certified: never below the exact fixed point (beyond the rounding of the stored result) ...
    assert np.all(q >= ref - 1e-6 * np.abs(ref) - (1e-12 if X64 else 1e-6)), (q - ref).min()
    # ... and close to it: 1e-4 absolute in float64, the float32 certification pad in float32
    np.testing.assert_allclose(q, ref, rtol=0, atol=1e-4 if X64 else 1e-4 + 2e-6 * scale(m))


@pytest.mark.parametrize("name", NAMES)
def test_qmdp_above_fib_above_blind(name):
    m = MODELS[name]
    q_mdp, q_fib = np.asarray(bounds.qmdp(m), float), np.asarray(bounds.fib(m), float)
    blind = np.asarray(bounds.blind_alphas(m), float)
    t = tol(m)
    assert np.all(q_fib <= q_mdp + t)  # entrywise
    rng = np.random.default_rng(8)
    beliefs = np.concatenate([np.asarray(m.initial_belief, float)[None], np.eye(m.num_states),
                              random_beliefs(rng, m.num_states, 100)])
    v_mdp, v_fib, v_blind = ((beliefs @ x.T).max(1) for x in (q_mdp, q_fib, blind))
    assert np.all(v_mdp >= v_fib - t) and np.all(v_fib >= v_blind - t)
    if name == "tiger":
        assert v_fib[0] >= TIGER_OPTIMUM
        assert v_fib[0] < v_mdp[0] - 1  # FIB is strictly tighter on Tiger


# --------------------------------------------------------------- 5. sawtooth
def _sawtooth_data(rng, S=5, P=8):
    points = random_beliefs(rng, S, P)
    corner = rng.normal(size=S) * 5
    values = points @ corner + rng.normal(size=P) * 3  # some improve on the corners, some do not
    return points, values, corner


def test_sawtooth_matches_numpy_loop_and_is_homogeneous():
    rng = np.random.default_rng(9)
    points, values, corner = _sawtooth_data(rng)
    mask = np.ones(len(points), bool)
    mask[3] = False
    dt = dtype_of(MODELS["tiger"])
    fn = jax.jit(bounds.sawtooth)
    args = [jnp.asarray(x, dt) for x in (points, values)] + [jnp.asarray(mask), jnp.asarray(corner, dt)]
    beliefs = np.concatenate([np.eye(5), points, random_beliefs(rng, 5, 40)])
    atol = 1e-12 if X64 else 2e-5
    for b in beliefs:
        v = float(fn(*args, jnp.asarray(b, dt)))
        np.testing.assert_allclose(v, np_sawtooth(points, values, mask, corner, b), rtol=0, atol=atol)
        np.testing.assert_allclose(float(fn(*args, jnp.asarray(2 * b, dt))), 2 * v, rtol=0, atol=2 * atol)
        np.testing.assert_allclose(float(fn(*args, jnp.asarray(0.3 * b, dt))), 0.3 * v, rtol=0, atol=atol)
        assert v <= b @ corner + atol  # never above the corner interpolation
    # exact at the points themselves: V(b_i) <= v_i, and = min(v_i, b_i . c) for a lone point
    for i in np.flatnonzero(mask):
        assert float(fn(*args, jnp.asarray(points[i], dt))) <= values[i] + atol
        lone = np.arange(len(points)) == i
        got = float(fn(args[0], args[1], jnp.asarray(lone), args[3], jnp.asarray(points[i], dt)))
        np.testing.assert_allclose(got, min(values[i], points[i] @ corner), rtol=0, atol=atol)


def test_sawtooth_of_a_convex_function_is_exact_at_points_and_above_it():
    """Values from a convex f <= b.c: V(b_i) = v_i exactly and V >= f everywhere."""
    rng = np.random.default_rng(10)
    S, P = 5, 10
    corner = rng.normal(size=S) * 5
    vecs = corner - np.abs(rng.normal(size=(3, S))) * 4  # f(b) = max_k vecs[k] . b <= b . corner
    points = random_beliefs(rng, S, P)
    values = (points @ vecs.T).max(1)
    mask = np.ones(P, bool)
    dt = dtype_of(MODELS["tiger"])
    fn = jax.jit(jax.vmap(bounds.sawtooth, in_axes=(None, None, None, None, 0)))
    args = [jnp.asarray(x, dt) for x in (points, values)] + [jnp.asarray(mask), jnp.asarray(corner, dt)]
    atol = 1e-12 if X64 else 2e-5
    np.testing.assert_allclose(fn(*args, jnp.asarray(points, dt)), values, rtol=0, atol=atol)
    beliefs = random_beliefs(rng, S, 200)
    v = np.asarray(fn(*args, jnp.asarray(beliefs, dt)), float)
    assert np.all(v >= (beliefs @ vecs.T).max(1) - atol)
    assert np.all(v <= beliefs @ corner + atol)


def test_sawtooth_ignores_masked_points_and_batch_equals_vmap():
    rng = np.random.default_rng(11)
    points, values, corner = _sawtooth_data(rng, S=4, P=6)
    used = np.array([True, False, True, True, False, True])
    garbage_points = points.copy()
    garbage_values = values.copy()
    garbage_points[1] = 0.0  # an unused all-zero row
    garbage_values[1] = -1e6
    garbage_points[4] = np.eye(4)[2]
    garbage_values[4] = -1e6
    dt = dtype_of(MODELS["tiger"])
    J = lambda x: jnp.asarray(x, dt)  # noqa: E731
    beliefs = np.concatenate([np.eye(4), random_beliefs(rng, 4, 30)])
    batch = jax.jit(lambda *args: bounds.sawtooth_batch(*args, chunk=7))  # 7 + 7 + 7 + 7 + 6 rows
    full = batch(J(garbage_points), J(garbage_values), jnp.asarray(used), J(corner), J(beliefs))
    compact = jax.jit(jax.vmap(bounds.sawtooth, in_axes=(None, None, None, None, 0)))(
        J(points[used]), J(values[used]), jnp.ones(used.sum(), bool), J(corner), J(beliefs))
    np.testing.assert_allclose(full, compact, rtol=1e-6, atol=1e-6)
    ref = [np_sawtooth(garbage_points, garbage_values, used, corner, b) for b in beliefs]
    np.testing.assert_allclose(full, ref, rtol=0, atol=1e-12 if X64 else 2e-5)
    # no point in use: the corner interpolation
    none = batch(J(points), J(values), jnp.zeros(6, bool), J(corner), J(beliefs))
    np.testing.assert_allclose(none, beliefs @ corner, rtol=0, atol=1e-12 if X64 else 1e-5)


# ------------------------------------------------------------------ 6. prune
def np_pointwise_keep(alphas, mask):
    M = len(alphas)
    keep = np.zeros(M, bool)
    for i in range(M):
        if not mask[i]:
            continue
        dominated = False
        for j in range(M):
            if j == i or not mask[j]:
                continue
            if np.all(alphas[j] >= alphas[i]) and (np.any(alphas[j] != alphas[i]) or j < i):
                dominated = True
        keep[i] = not dominated
    return keep


def test_pointwise_dominated_removes_dominated_and_one_of_equal_vectors():
    rng = np.random.default_rng(12)
    S = 6
    base = 20 * np.eye(S) + rng.normal(size=(S, S))  # no base vector dominates another
    alphas = np.concatenate([
        base,
        base[[0]] - 0.5,                     # 6: strictly dominated by 0
        base[[1]] - np.eye(S)[2],             # 7: weakly dominated by 1 (equal in five states)
        base[[2]],                           # 8: equal to 2 -> only 2 is kept
        base[[3]], base[[3]],                # 9, 10: three copies of 3 -> only 3 is kept
        base[[4]] + 1.0,                     # 11: dominates 4, but is masked out -> 4 stays
        base[[5]],                           # 12: equal to 5, and 5 is masked out -> 12 is kept
    ])
    mask = np.ones(len(alphas), bool)
    mask[[11, 5]] = False
    dt = dtype_of(MODELS["tiger"])
    keep = np.asarray(prune.pointwise_dominated(jnp.asarray(alphas, dt), jnp.asarray(mask)))
    expected = np_pointwise_keep(np.asarray(jnp.asarray(alphas, dt)), mask)
    np.testing.assert_array_equal(keep, expected)
    assert keep[[0, 1, 2, 3, 4, 12]].all() and not keep[[5, 6, 7, 8, 9, 10, 11]].any()
    # the max at any belief is unchanged
    beliefs = random_beliefs(rng, S, 100)
    before = np.where(mask, beliefs @ alphas.T, -np.inf).max(1)
    after = np.where(keep, beliefs @ alphas.T, -np.inf).max(1)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    # random sets against the loop
    for _ in range(3):
        a = np.round(rng.normal(size=(12, 3)), 0)  # rounding makes ties and dominance common
        msk = rng.random(12) < 0.8
        got = np.asarray(prune.pointwise_dominated(jnp.asarray(a, dt), jnp.asarray(msk)))
        np.testing.assert_array_equal(got, np_pointwise_keep(a, msk))


def test_best_at_beliefs_keeps_exactly_the_argmax_vectors():
    rng = np.random.default_rng(13)
    S, M, N = 5, 20, 12
    alphas = rng.normal(size=(M, S)) * 5
    alphas[7] = alphas[3]  # a tie: the lower index wins
    mask = rng.random(M) < 0.8
    mask[[3, 7]] = True
    mask[[10, 11]] = False
    alphas[10] = 100.0  # unused: it would be best everywhere
    alphas[11] = np.nan  # unused rows may hold anything
    beliefs = random_beliefs(rng, S, N)
    belief_mask = rng.random(N) < 0.75
    dt = dtype_of(MODELS["tiger"])
    a32, b32 = np.asarray(jnp.asarray(alphas, dt), float), np.asarray(jnp.asarray(beliefs, dt), float)
    keep = np.asarray(prune.best_at_beliefs(jnp.asarray(a32, dt), jnp.asarray(mask), jnp.asarray(b32, dt),
                                            jnp.asarray(belief_mask)))
    expected = np.zeros(M, bool)
    for n in range(N):
        if belief_mask[n]:
            scores = [float(a32[k] @ b32[n]) if mask[k] else -np.inf for k in range(M)]
            expected[int(np.argmax(scores))] = True
    np.testing.assert_array_equal(keep, expected)
    assert not keep[7]
    values = np.where(mask, b32 @ np.where(mask[:, None], a32, 0).T, -np.inf)
    before = values.max(1)
    after = np.where(keep, values, -np.inf).max(1)
    np.testing.assert_allclose(after[belief_mask], before[belief_mask], rtol=0, atol=1e-5)
    # no belief counts: nothing is kept
    got = np.asarray(prune.best_at_beliefs(jnp.asarray(a32, dt), jnp.asarray(mask), jnp.asarray(b32, dt),
                                           jnp.zeros(N, bool)))
    assert not got.any()


# ------------------------------------------------------------- 7. solver state
def test_point_based_update_keeps_valid_monotone_bounds_traces_once_and_is_deterministic():
    m = problems.tiger()
    config = point_based.Config(width=4, max_depth=20)
    traces = []

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state):
        traces.append(1)  # runs only while tracing
        return point_based.update(key, m, state, config)

    state = point_based.init(m, alpha_capacity=128, point_capacity=128)
    rng = np.random.default_rng(14)
    beliefs = np.concatenate([np.asarray(m.initial_belief, float)[None], random_beliefs(rng, 2, 100, sparse=False)])
    both = jax.jit(jax.vmap(lambda st, b: (point_based.lower_bound(st, b), point_based.upper_bound(st, b)),
                            in_axes=(None, 0)))
    fib_at = (beliefs @ np.asarray(bounds.fib(m), float).T).max(1)
    t = tol(m)
    lower, upper = map(np.asarray, both(state, jnp.asarray(beliefs, dtype_of(m))))
    history = [(lower[0], upper[0])]
    np.testing.assert_allclose(upper[0], fib_at[0], rtol=1e-6)  # starts at FIB(b0)
    for i in range(4):
        state = step(jax.random.key(i), state)
        new_lower, new_upper = map(np.asarray, both(state, jnp.asarray(beliefs, dtype_of(m))))
        assert np.all(new_lower <= new_upper + t), (new_lower - new_upper).max()
        assert np.all(new_lower >= lower) and np.all(new_upper <= upper)  # vectors and points only tighten
        assert np.all(new_lower <= fib_at + t)
        # both bounds certified at b0: lower <= V*(b0) <= upper
        assert new_lower[0] <= TIGER_OPTIMUM + 1e-3 and new_upper[0] >= TIGER_OPTIMUM - 1e-3
        lower, upper = new_lower, new_upper
        history.append((lower[0], upper[0]))
    assert len(traces) == 1  # four calls, one trace: the state's shapes and dtypes are stable
    lows, ups = np.array(history).T
    assert np.all(np.diff(lows) >= 0) and np.all(np.diff(ups) <= 0)
    assert lows[-1] > lows[0] + 1 and ups[-1] < ups[0] - 1  # progress
    assert int(state.iteration) == 4 and int(state.num_alphas) > m.num_actions and int(state.num_points) > 1
    # deterministic for the same key
    a = step(jax.random.key(99), state)
    b = step(jax.random.key(99), state)
    chex.assert_trees_all_equal(a, b)
    assert len(traces) == 1


def test_initial_state_and_lower_update_are_what_solve_starts_and_runs_with():
    m = problems.tiger()
    config = point_based.Config(width=4, max_depth=20)
    state = point_based.initial_state(m, config)
    M, P = state.alphas.shape[0], state.points.shape[0]
    need = config.width * (config.max_depth + config.lower_sweeps)  # what one step can add
    assert M - int(state.num_alphas) >= need and P - int(state.num_points) >= need
    assert int(state.num_alphas) == m.num_actions and int(state.num_points) == 1  # blind vectors, b0
    np.testing.assert_array_equal(state.points[0], m.initial_belief)
    key = jax.random.key(3)
    # the lowered step, compiled, is the step: same state out as calling update
    stepped = point_based.lower_update(m, state, config, key=key).compile()(key, m, state)
    chex.assert_trees_all_equal(stepped, point_based.update(key, m, state, config))
    assert int(stepped.num_alphas) > m.num_actions
    # other capacities: only the abstract shapes change
    lowered = point_based.lower_update(m, state, config, capacities=(2 * M, P))
    arg = lowered.args_info[0][2]
    assert arg.alphas.shape == (2 * M, m.num_states) and arg.points.shape == (P, m.num_states)
    with pytest.raises(ValueError, match="unknown method"):
        point_based.initial_state(m, config, method="sarsop")


def _check_additions(both, before, after, rows, valid):
    """What ``backup_beliefs(before, rows, valid)`` added: only improvements, one per distinct valid row."""
    rows64, valid = np.asarray(rows, float), np.asarray(valid)
    lower_here, upper_here = map(np.asarray, both(before, rows))
    distinct = len({tuple(r) for r in rows64[valid]})
    n0, n1 = int(before.num_alphas), int(after.num_alphas)
    p0, p1 = int(before.num_points), int(after.num_points)
    assert n1 - n0 <= distinct and p1 - p0 <= distinct

    def row_of(b):
        return int(np.flatnonzero(np.all(rows64 == b, axis=1))[0])

    # a vector is added only where it improves the lower bound at its witness belief
    for w, v in zip(np.asarray(after.witnesses[n0:n1], float), np.asarray(after.alphas[n0:n1], float)):
        r = row_of(w)
        assert valid[r] and v @ w > lower_here[r]
    # a point is added only where its backed-up value improves on the sawtooth; old values only go down
    for p, v in zip(np.asarray(after.points[p0:p1], float), np.asarray(after.values[p0:p1], float)):
        r = row_of(p)
        assert valid[r] and v < upper_here[r]
    assert np.all(np.asarray(after.values[:p0]) <= np.asarray(before.values[:p0]))
    np.testing.assert_array_equal(after.alphas[:n0], before.alphas[:n0])
    np.testing.assert_array_equal(after.points[:p0], before.points[:p0])
    return (n1 - n0) + (p1 - p0)


def test_backup_beliefs_only_tightens_and_backs_up_repeats_once():
    m = problems.tiger()
    state = point_based.init(m, alpha_capacity=32, point_capacity=32)
    rng = np.random.default_rng(15)
    rows = np.array([[0.02, 0.98], [0.9, 0.1], [0.35, 0.65]])
    beliefs = jnp.asarray(np.concatenate([rows, rows[:2], np.asarray(m.initial_belief, float)[None]]), dtype_of(m))
    valid = jnp.array([True, True, True, True, True, False])
    test_b = jnp.asarray(random_beliefs(rng, 2, 100, sparse=False), dtype_of(m))
    fn = jax.jit(point_based.backup_beliefs)
    both = jax.jit(jax.vmap(lambda st, b: (point_based.lower_bound(st, b), point_based.upper_bound(st, b)),
                            in_axes=(None, 0)))
    lower, upper = map(np.asarray, both(state, test_b))
    added = 0
    for _ in range(3):
        new_state = fn(m, state, beliefs, valid)
        added += _check_additions(both, state, new_state, beliefs, valid)
        state = new_state
        new_lower, new_upper = map(np.asarray, both(state, test_b))
        assert np.all(new_lower >= lower) and np.all(new_upper <= upper)
        assert np.all(new_lower <= new_upper + tol(m))
        lower, upper = new_lower, new_upper
    assert added > 0
    # nothing is added where the backup cannot improve: a vector above every backup (1000 > -1 + 0.95 * 1000)
    # and a point value at b0 below every backup (-1000 < -45 + 0.95 * -1000); not bounds, just the rules
    n, p = int(state.num_alphas), int(state.num_points)
    stuck = state._replace(alphas=state.alphas.at[n].set(1000.0), num_alphas=jnp.int32(n + 1),
                           values=state.values.at[0].set(-1000.0))
    all_valid = jnp.ones(len(valid), bool)
    near_b0 = beliefs.at[-1].set(jnp.asarray([0.45, 0.55], dtype_of(m)))  # its sawtooth leans on b0's -1000
    after = fn(m, stuck, near_b0, all_valid)
    _check_additions(both, stuck, after, near_b0, all_valid)
    assert int(after.num_alphas) == n + 1
    assert not np.any(np.all(np.asarray(after.points[p:int(after.num_points)]) == np.asarray(near_b0[-1]), axis=1))
    after = fn(m, stuck, jnp.broadcast_to(m.initial_belief, beliefs.shape), all_valid)
    assert int(after.num_alphas) == n + 1 and int(after.num_points) == p and float(after.values[0]) == -1000.0


# ---------------------------------------------------------------------- 8. x64
def test_reference_checks_under_x64():
    """The kernels against the NumPy references with float64 models (much tighter tolerances)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(16)
        for m in (problems.tiger(), random_model(rng, 0.95, A=3, S=5, O=3)[0]):
            assert m.reward.dtype == jnp.float64
            T, Z, R, b0, gamma = dense_arrays(m)
            atol = 1e-10 * scale(m)
            # successors
            for b in (b0, random_beliefs(rng, m.num_states, 1)[0]):
                tau = backup.successor_beliefs(m, jnp.asarray(b))
                assert tau.dtype == jnp.float64
                np.testing.assert_allclose(tau, np_successors(T, Z, b), rtol=0, atol=1e-14)
            # point backup
            alphas = _alpha_set(m, rng)
            mask = np.ones(len(alphas), bool)
            mask[-1] = False
            for b in np.concatenate([b0[None], np.eye(m.num_states)[:1], random_beliefs(rng, m.num_states, 2)]):
                out = jax.jit(backup.point_backup)(m, jnp.asarray(alphas), jnp.asarray(mask), jnp.asarray(b))
                assert out.alpha.dtype == jnp.float64
                check_backup(m, alphas, mask, b, out, t=atol)
            # FIB: certified above the exact fixed point and within 1e-4 of it
            q = np.asarray(bounds.fib(m))
            ref = np_fib(T, Z, R, gamma)
            assert q.dtype == np.float64 and np.all(q >= ref - 1e-12 * scale(m))
            np.testing.assert_allclose(q, ref, rtol=0, atol=1e-4)
            if m.num_states == 2:
                assert (q @ b0).max() >= TIGER_OPTIMUM
        # sawtooth
        points, values, corner = _sawtooth_data(rng)
        mask = np.array([True, True, False, True, True, True, False, True])
        for b in random_beliefs(rng, 5, 10):
            v = bounds.sawtooth(jnp.asarray(points), jnp.asarray(values), jnp.asarray(mask), jnp.asarray(corner),
                                jnp.asarray(b))
            assert v.dtype == jnp.float64
            np.testing.assert_allclose(v, np_sawtooth(points, values, mask, corner, b), rtol=0, atol=1e-12)
