"""Certified bounds on the optimal value V*(b0) of tiny POMDPs: a test reference.

Plain NumPy and SciPy (``scipy.sparse.linalg.spsolve``, ``scipy.optimize.linprog``;
SciPy is a dependency of JAX), independent of every solver in ``jaxpomdp``: only a
model's arrays are read (``dense_transitions``, ``obs_prob``, ``reward``,
``initial_belief``, ``discount``), in float64, with each probability row
renormalised to sum to 1 (the reference is the value of that model; the float32
rounding of the stored model moves V* by ~1e-7 relative).

Two methods live here.

1. :func:`exact_value_bounds`, the reference (point-set policy iteration with
   certified bounds; the structure of HSVI/SARSOP, solved synchronously):

   * Upper bound: a finite set of beliefs ``B`` (the corners ``e_s``, ``b0`` and the
     beliefs that HSVI-style trials from ``b0`` visit). Every successor belief
     ``b' = b_i^{ao}`` is written as a convex combination of points of ``B``
     (the sawtooth choice: ``b' = r b_j + sum_s (b'(s) - r b_j(s)) e_s`` with
     ``r = min_s b'(s) / b_j(s)``). Because V* is convex,
     ``V*(b') <= r V*(b_j) + sum_s (...) V*(e_s)``, so the finite MDP on ``B``,
     ``v_i = max_a [R_a . b_i + gamma sum_o P(o|b_i,a) (weights . v)]``, has a
     fixed point ``v >= V*`` on ``B`` (if ``D = max_i V*(b_i) - v_i > 0`` then
     ``D <= gamma D``). That MDP is solved exactly by policy iteration (sparse
     linear solves); the interpolation choices are then re-optimised and it is
     solved again (each fixed point is below the previous one).
   * Lower bound: a finite-state controller whose nodes are improved by
     point-based backups at the beliefs of ``B`` (Hansen's rules: a node is
     replaced only by a vector that dominates it pointwise, otherwise added), and
     evaluated exactly by a sparse linear solve. A controller is a policy, so
     ``max_n beta_n . b0 <= V*(b0)``.
   * Rigour in floating point: each linear solve is certified by its Bellman
     residual (for a monotone gamma-contraction ``M`` with ``M(x + c) = Mx + gamma c``:
     ``fixed point <= x + max(Mx - x)^+ / (1 - gamma)``, and the mirror image
     below); the blind, QMDP and fast-informed-bound starts are certified the same
     way or by monotonicity; the returned bracket is widened by
     ``1e-10 (1 + max|V|)`` for the rounding of the residuals themselves and of
     the belief/interpolation arithmetic (~1e-13 |V|). Stopping early (time limit)
     never breaks the bracket, it only leaves it wider.

2. :func:`value_iteration_bounds`, exact finite-horizon value iteration over
   alpha-vector sets with incremental pruning (Cassandra, Littman & Zhang 1997):
   ``L_t = H^t L_0`` from the blind vectors and ``U_t = H^t U_0`` from the QMDP
   vectors; ``H`` is monotone and ``V* = H V*``, so every ``L_t <= V* <= U_t``
   (no tail term is needed). Pruning is Lark's LP filter (or an exact upper
   envelope for 2 states), and drops a vector only with a *certified* bound on
   its largest gain (LP duality: ``max_b min_w (alpha - w) . b =
   min_{lambda in simplex} max_s (alpha - lambda^T W)_s``, any ``lambda`` taken
   from the LP's duals and checked in NumPy bounds it); on the upper side the
   certified losses are carried as an additive constant ``c_{t+1} = gamma c_t +
   loss``. This is exact but blows up on network (hundreds of vectors after 7
   backups) and needs ~log(tol)/log(gamma) backups, so it serves as an
   independent cross-check on short horizons and on 1d.

References:
  T. Smith, R. Simmons, "Heuristic search value iteration for POMDPs", UAI 2004.
  E. Hansen, "Solving POMDPs by searching in policy space", UAI 1998.
  S. Ji, R. Parr, H. Li, X. Liao, L. Carin, "Point-based policy iteration", AAAI 2007.
  W. Lovejoy, "Computationally feasible bounds for POMDPs", Oper. Res. 1991.
  A. Cassandra, M. Littman, N. Zhang, "Incremental pruning: a simple, fast, exact
  method for partially observable Markov decision processes", UAI 1997.
  M. Hauskrecht, "Value-function approximations for POMDPs", JAIR 2000.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
from scipy.optimize import linprog

__all__ = ["ExactBounds", "model_arrays", "blind_vectors", "qmdp_vectors", "fib_vectors",
           "exact_value_bounds", "exact_reference", "prune", "backup", "value_iteration_bounds"]

#: Relative widening of every returned bracket (float64 rounding, see the module doc).
PAD = 1e-10


class ExactBounds(NamedTuple):
    """``lower <= V*(b0) <= upper``.

    Attributes:
      lower, upper: the certified bracket.
      horizon: the deepest belief (steps from b0) the bounds were built on
        (for :func:`value_iteration_bounds`: the number of backups).
      num_vectors: alpha-vectors of the lower bound (controller nodes).
      info: ``seconds``, ``converged`` (``upper - lower <= tol``), ``num_beliefs``,
        ``rounds``, ``history`` rows ``(seconds, lower, upper)``, ``alphas``.
    """

    lower: float
    upper: float
    horizon: int
    num_vectors: int
    info: dict


# --------------------------------------------------------------------- the model
def model_arrays(model):
    """``(T[a,s,s'], Z[a,s',o], R[a,s], b0[s], gamma)`` in float64, rows renormalised."""
    import jaxpomdp  # only to read the arrays

    T = np.asarray(jaxpomdp.dense_transitions(model), np.float64)
    Z = np.asarray(model.obs_prob, np.float64)
    R = np.asarray(model.reward, np.float64)
    b0 = np.asarray(model.initial_belief, np.float64)
    gamma = float(np.asarray(model.discount, np.float64))
    if not 0 <= gamma < 1:
        raise ValueError(f"discount {gamma}: the bounds need 0 <= gamma < 1")
    return T / T.sum(-1, keepdims=True), Z / Z.sum(-1, keepdims=True), R, b0 / b0.sum(), gamma


def _pad(*arrays):
    return PAD * (1.0 + max(float(np.max(np.abs(x))) for x in arrays))


def blind_vectors(T, R, gamma):
    """float[A, S]: certified lower bounds on ``alpha_a = (I - gamma T_a)^-1 R_a``."""
    A, S, _ = T.shape
    out = np.empty((A, S))
    for a in range(A):
        x = np.linalg.solve(np.eye(S) - gamma * T[a], R[a])
        d = np.min(R[a] + gamma * T[a] @ x - x) - _pad(R, x)  # x* >= x + min(Bx - x) / (1 - gamma)
        out[a] = x + min(d, 0.0) / (1 - gamma)
    return out


def qmdp_vectors(T, R, gamma):
    """float[A, S]: certified upper bounds on the QMDP vectors (MDP policy iteration)."""
    A, S, _ = T.shape
    rows = np.arange(S)
    pi = np.argmax(R, axis=0)
    for _ in range(10 * A * S + 10):
        v = np.linalg.solve(np.eye(S) - gamma * T[pi, rows], R[pi, rows])
        q = R + gamma * T @ v
        new = np.where(q.max(0) > q[pi, rows] + 1e-12 * (1 + np.abs(v)), np.argmax(q, 0), pi)
        if np.array_equal(new, pi):
            break
        pi = new
    d = np.max((R + gamma * T @ v).max(0) - v) + _pad(R, v)  # v* <= v + max(Bv - v)^+ / (1 - gamma)
    v = v + max(d, 0.0) / (1 - gamma)
    return R + gamma * T @ v + _pad(R, v)


def fib_vectors(T, Z, R, gamma, iterations=200):
    """float[A, S]: the fast informed bound (Hauskrecht 2000), iterated down from QMDP.

    ``F_a(s) = R(s,a) + gamma sum_o max_a' sum_s' T(s'|s,a) Z(o|a,s') F_a'(s')``; the
    FIB operator is monotone and above the exact backup, so every iterate from an
    upper bound is an upper bound.
    """
    TZ = np.einsum("aij,ajo->aoij", T, Z)
    F = qmdp_vectors(T, R, gamma)
    for _ in range(iterations):
        new = R + gamma * np.einsum("aoij,bj->aobi", TZ, F).max(2).sum(1)
        new = np.minimum(new + _pad(R, F), F)
        if np.array_equal(new, F):
            break
        F = new
    return F


# ------------------------------------------------------------ point-set bounds
class _PointSet:
    """Beliefs ``B``, upper values on them, and a finite-state controller (lower)."""

    def __init__(self, T, Z, R, b0, gamma, max_depth):
        self.T, self.Z, self.R, self.b0, self.gamma = T, Z, R, b0, gamma
        A, S, O = Z.shape
        self.A, self.S, self.O = A, S, O
        self.max_depth = max_depth
        self.TZ = np.einsum("aij,ajo->aoij", T, Z)  # [A, O, S, S']: T(s'|s,a) Z(o|a,s')
        self.F = fib_vectors(T, Z, R, gamma)
        self.n = 0
        cap = 64
        self.P = np.zeros((cap, S))
        self.U = np.zeros((cap, A, O, S))  # unnormalised successors of each point
        self.v = np.zeros(cap)
        self.depth = np.zeros(cap, int)
        self.key = {}
        for s in range(S):
            self._add(np.eye(S)[s], float(np.max(self.F[:, s])), 0)
        self.i0 = self._add(b0, float(np.max(self.F @ b0)), 0)
        self._refresh_bases()
        self.c_j = self.c_r = None  # interpolation choices of the last solve
        blind = blind_vectors(T, R, gamma)  # node a: "always do a", value alpha_a
        self.act = np.arange(A)
        self.succ = np.tile(np.arange(A)[:, None], (1, O))
        self.beta = blind
        self.lower_b0 = float(np.max(blind @ b0))
        self.upper_b0 = float(self.v[self.i0])

    # ------------------------------------------------------------ points
    def _add(self, b, value, depth):
        k = tuple(np.round(b, 11))
        i = self.key.get(k)
        if i is not None:  # value was computed for b, not exactly for P[i]: not used
            self.depth[i] = min(self.depth[i], depth)
            return i
        if self.n == len(self.P):
            grow = lambda x: np.concatenate([x, np.zeros_like(x)])  # noqa: E731
            self.P, self.U, self.v, self.depth = map(grow, (self.P, self.U, self.v, self.depth))
        i = self.n
        self.key[k] = i
        self.P[i] = b
        self.U[i] = np.einsum("s,aost->aot", b, self.TZ)
        self.v[i] = value
        self.depth[i] = depth
        self.n += 1
        return i

    # ------------------------------------------------------------ upper bound
    def _refresh_bases(self):
        """Caches the interior points that can lower the sawtooth (``v_j < b_j . v_corner``)."""
        S, n = self.S, self.n
        self.vc = self.v[:S].copy()
        exc = self.v[S:n] - self.P[S:n] @ self.vc
        idx = S + np.flatnonzero(exc < 0)
        self.b_idx = idx
        self.b_exc = exc[idx - S]
        self.b_inv, self.b_off = self._inverse(self.P[idx])  # [S, m], contiguous per state

    @staticmethod
    def _inverse(P):
        """``1 / P.T`` where ``P > 0`` (else 0) and an offset that is +inf where ``P = 0``."""
        pos = P.T > 0
        inv = np.where(pos, 1.0 / np.where(pos, P.T, 1.0), 0.0)
        return np.ascontiguousarray(inv), np.ascontiguousarray(np.where(pos, 0.0, np.inf))

    def _add_base(self, i):
        exc = self.v[i] - self.P[i] @ self.vc
        if exc >= 0:
            return
        hit = np.flatnonzero(self.b_idx == i)
        if len(hit):
            self.b_exc[hit[0]] = exc
            return
        self.b_idx = np.append(self.b_idx, i)
        self.b_exc = np.append(self.b_exc, exc)
        inv, off = self._inverse(self.P[i:i + 1])
        self.b_inv, self.b_off = np.hstack([self.b_inv, inv]), np.hstack([self.b_off, off])

    def _sawtooth(self, B, sel=None):
        """For beliefs B [K, S]: the best single interior point j, its ratio r and score.

        ``r_j = min_{s: b_j(s) > 0} b(s) / b_j(s)`` (so ``b - r_j b_j >= 0``), score
        ``r_j (v_j - b_j . v_corner) <= 0``; j = 0 (a corner) with ``r = b(0)`` and
        score 0 when no interior point helps (then the interpolation is ``b . v_corner``).
        """
        K = len(B)
        j = np.zeros(K, int)
        r = B[:, 0].copy()
        score = np.zeros(K)
        b_idx, b_inv, b_off, b_exc = self.b_idx, self.b_inv, self.b_off, self.b_exc
        if sel is not None:
            b_idx, b_inv, b_off, b_exc = b_idx[sel], b_inv[:, sel], b_off[:, sel], b_exc[sel]
        m = len(b_idx)
        if m == 0:
            return j, r, score
        step = max(1, 1_000_000 // m)
        for k0 in range(0, K, step):
            blk = B[k0:k0 + step]
            ratio = blk[:, 0, None] * b_inv[0] + b_off[0]
            tmp = np.empty_like(ratio)
            for s in range(1, self.S):
                np.multiply(blk[:, s, None], b_inv[s], out=tmp)
                tmp += b_off[s]
                np.minimum(ratio, tmp, out=ratio)
            sc = ratio * b_exc[None]
            best = np.argmin(sc, 1)
            rows = np.arange(len(blk))
            ok = sc[rows, best] < 0
            j[k0:k0 + step] = np.where(ok, b_idx[best], 0)
            r[k0:k0 + step] = np.where(ok, ratio[rows, best], blk[:, 0])
            score[k0:k0 + step] = np.where(ok, sc[rows, best], 0.0)
        return j, r, score

    def upper(self, B):
        """Certified upper bounds on V* at beliefs B [K, S] (sawtooth over the points, FIB)."""
        B = np.atleast_2d(B)
        _, _, score = self._sawtooth(B)
        return np.minimum(B @ self.vc + score, np.max(B @ self.F.T, 1))

    def _upper_q(self, v, j, r, p):
        """``Q[i, a] = R_a . b_i + gamma sum_o p (r v_j + (b' - r b_j) . v_corner)`` on all points."""
        n, S = self.n, self.S
        U, P = self.U[:n], self.P[:n]
        pr = p * r
        vc = v[:S]
        return P @ self.R.T + self.gamma * (pr * v[j] + U @ vc - pr * (P[j] @ vc)).sum(-1)

    def _choices(self, nb, full):
        """Interpolation choices ``(j, r)`` for the successors ``nb [n, A, O, S]`` of all points.

        Incremental unless ``full``: the successors of points seen at the last call keep
        their previous choice (re-scored with the current values; any choice is valid)
        unless a base added since then is better; the new points' successors search all
        bases.
        """
        S = self.S
        flat = nb.reshape(-1, S)
        old = 0 if full or self.c_j is None else len(self.c_j)
        j, r, _ = self._sawtooth(flat[old:])
        if old:
            jo, ro = self.c_j, self.c_r
            exc = self.v[jo] - np.einsum("ks,s->k", self.P[jo], self.vc)
            so = np.where((jo >= S) & (exc < 0), ro * exc, 0.0)
            jo, ro = np.where(so < 0, jo, 0), np.where(so < 0, ro, flat[:old, 0])
            seen = np.zeros(len(self.P), bool)
            seen[:len(self.c_isbase)] = self.c_isbase
            fresh = np.flatnonzero(~seen[self.b_idx])
            if len(fresh):
                jn, rn, sn = self._sawtooth(flat[:old], sel=fresh)
                better = sn < so
                jo, ro = np.where(better, jn, jo), np.where(better, rn, ro)
            j, r = np.concatenate([jo, j]), np.concatenate([ro, r])
        self.c_j, self.c_r = j, r
        self.c_isbase = np.zeros(len(self.P), bool)
        self.c_isbase[self.b_idx] = True
        return j, r

    def solve_upper(self, full=False):
        """Solves the interpolated MDP on the points, capped by the current values; lowers v.

        The operator is ``(M x)_i = min(v_i, max_a [R_a . b_i + gamma sum_o p (r x_j +
        (b' - r b_j) . x_corner)])`` with v the current (valid) values: monotone, and
        ``M(x + c) <= Mx + gamma c`` for ``c >= 0``, so its fixed point is >= V* on the
        points. Solved by policy iteration over the actions and the capped set
        (sparse linear solves), then certified: ``x* <= x + max(Mx - x)^+ / (1 - gamma)``.
        """
        n, A, O, S, gamma = self.n, self.A, self.O, self.S, self.gamma
        U, P = self.U[:n], self.P[:n]
        p = U.sum(-1)
        nb = U / np.where(p > 0, p, 1.0)[..., None]
        cap = self.v[:n].copy()
        rows = np.arange(n)
        self._refresh_bases()
        j, r = self._choices(nb, full)
        j, r = j.reshape(n, A, O), np.where(p > 0, r.reshape(n, A, O), 0.0)
        Q = self._upper_q(cap, j, r, p)
        act, capped = np.argmax(Q, 1), Q.max(1) >= cap
        for _ in range(100):
            free = (~capped).astype(float)[:, None]
            ja, pr, Ua = j[rows, act], p[rows, act] * r[rows, act] * free, U[rows, act] * free[..., None]
            W = sparse.csr_matrix(
                (np.concatenate([pr.ravel(), Ua.ravel(), -(pr[..., None] * P[ja]).ravel()]),
                 (np.concatenate([np.repeat(rows, O), np.tile(np.repeat(rows, O * S), 2)]),
                  np.concatenate([ja.ravel(), np.tile(np.arange(S), 2 * n * O)]))),
                shape=(n, n))
            rho = np.where(capped, cap, np.sum(P * self.R[act], 1))
            x = sparse_linalg.spsolve((sparse.identity(n, format="csc") - gamma * W).tocsc(), rho)
            if not np.all(np.isfinite(x)):
                return
            Q = self._upper_q(x, j, r, p)
            best = Q.max(1)
            new_act = np.where(best > Q[rows, act] + 1e-12 * (1 + np.abs(x)), np.argmax(Q, 1), act)
            new_capped = np.where(capped, best >= cap - 1e-12 * (1 + np.abs(cap)), best >= cap)
            if np.array_equal(new_act, act) and np.array_equal(new_capped, capped):
                break
            act, capped = new_act, new_capped
        d = np.max(np.minimum(cap, best) - x) + _pad(self.R, x)
        self.v[:n] = np.minimum(cap, x + max(d, 0.0) / (1 - gamma))
        self._refresh_bases()
        self.upper_b0 = min(self.upper_b0, float(self.v[self.i0]))

    # ------------------------------------------------------------ lower bound
    def lower(self, B):
        return np.max(np.atleast_2d(B) @ self.beta.T, 1)

    def improve_controller(self):
        """Point-based backups of the controller at every point (Hansen's rules)."""
        n, O = self.n, self.O
        U, P, beta = self.U[:n], self.P[:n], self.beta
        vals = np.einsum("naos,ms->naom", U, beta)
        sig, best = vals.argmax(-1), vals.max(-1)
        Q = P @ self.R.T + self.gamma * best.sum(-1)
        a = Q.argmax(1)
        cur = P @ beta.T
        k, cur = cur.argmax(1), cur.max(1)
        gain = Q[np.arange(n), a] - cur
        improving = np.flatnonzero(gain > 1e-10 * (1 + np.abs(cur)))
        act, succ = list(self.act), list(self.succ)
        done, replaced = set(), set()
        for i in improving[np.argsort(-gain[improving], kind="stable")]:
            d = (int(a[i]), tuple(int(x) for x in sig[i, a[i]]))
            if d in done:
                continue
            done.add(d)
            g = self.R[d[0]] + self.gamma * np.einsum("oij,oj->i", self.TZ[d[0]], beta[list(d[1])])
            if k[i] not in replaced and np.all(g >= beta[k[i]]):
                act[k[i]], succ[k[i]] = d[0], np.array(d[1])
                replaced.add(k[i])
            else:
                act.append(d[0])
                succ.append(np.array(d[1]))
        self.act, self.succ = np.array(act), np.array(succ).reshape(-1, O)
        return len(improving)

    def evaluate_controller(self):
        """Exact (sparse) evaluation of the controller, certified by its residual."""
        M, S, gamma = len(self.act), self.S, self.gamma
        blocks = gamma * self.TZ[self.act]  # [M, O, S, S']
        rows = np.broadcast_to(np.arange(M)[:, None, None, None] * S + np.arange(S)[:, None], blocks.shape)
        cols = np.broadcast_to(self.succ[:, :, None, None] * S + np.arange(S), blocks.shape)
        nz = blocks != 0
        Pm = sparse.csr_matrix((blocks[nz], (rows[nz], cols[nz])), shape=(M * S, M * S))
        x = sparse_linalg.spsolve((sparse.identity(M * S, format="csc") - Pm).tocsc(),
                                  self.R[self.act].ravel())
        beta = x.reshape(M, S)
        if not np.all(np.isfinite(beta)):  # I - gamma P is nonsingular for gamma < 1
            raise FloatingPointError("controller evaluation failed")
        res = self.R[self.act] + np.einsum("moij,moj->mi", blocks, beta[self.succ]) - beta
        beta = beta + min(float(res.min()) - _pad(self.R, beta), 0.0) / (1 - gamma)
        self.beta = beta
        self.lower_b0 = max(self.lower_b0, float(np.max(beta @ self.b0)))

    def prune_controller(self):
        """Keeps the nodes reachable from those that are best at some point."""
        keep = np.zeros(len(self.act), bool)
        stack = [int(m) for m in np.unique(np.argmax(self.P[:self.n] @ self.beta.T, 1))]
        while stack:
            m = stack.pop()
            if not keep[m]:
                keep[m] = True
                stack.extend(int(x) for x in self.succ[m] if not keep[x])
        idx = np.flatnonzero(keep)
        remap = np.full(len(keep), -1)
        remap[idx] = np.arange(len(idx))
        self.act, self.succ, self.beta = self.act[idx], remap[self.succ[idx]], self.beta[idx]

    # ------------------------------------------------------------ exploration
    def trial(self, tol, deadline):
        """One HSVI trial from b0 (greedy on the upper bound, largest weighted gap);
        adds the beliefs it visits and backs the upper bound up on the way back."""
        b, t, path = self.b0, 0, []
        u, l = self.upper_b0, self.lower_b0
        S, gamma = self.S, self.gamma
        while t < self.max_depth and u - l > tol * gamma ** -t and time.perf_counter() < deadline:
            U = np.einsum("s,aost->aot", b, self.TZ)
            p = U.sum(-1)
            nb = (U / np.where(p > 0, p, 1.0)[..., None]).reshape(-1, S)
            un = self.upper(nb).reshape(self.A, self.O)
            ln = self.lower(nb).reshape(self.A, self.O)
            a = int(np.argmax(self.R @ b + gamma * (p * un).sum(1)))
            excess = np.where(p[a] > 0, p[a] * (un[a] - ln[a] - tol * gamma ** (-t - 1)), -np.inf)
            o = int(np.argmax(excess))
            t += 1
            b, u, l = nb[a * self.O + o], un[a, o], ln[a, o]
            path.append(self._add(b, u, t))
        for i in reversed(path):  # local upper backups (valid: H of an upper bound)
            U = self.U[i]
            p = U.sum(-1)
            nb = (U / np.where(p > 0, p, 1.0)[..., None]).reshape(-1, S)
            q = self.P[i] @ self.R.T + gamma * (p * self.upper(nb).reshape(self.A, self.O)).sum(1)
            if q.max() < self.v[i]:
                self.v[i] = q.max()
                if i >= S:
                    self._add_base(i)
        return t


def exact_value_bounds(model, *, tol=1e-3, max_horizon=400, time_limit=30.0, trials_per_round=4):
    """Certified bounds ``lower <= V*(b0) <= upper`` on a tiny POMDP's optimal value.

    Point-set policy iteration (see the module docstring): rounds of HSVI-style
    trials from b0 that add beliefs, then an exact solve of the interpolated
    upper-bound MDP and a few policy-iteration steps of the lower-bound controller,
    until ``upper - lower <= tol`` or ``time_limit`` seconds. The bracket is
    certified whenever it stops.

    Args:
      model: a ``jaxpomdp.TabularPOMDP`` with discount < 1 (tens of states at most).
      tol: the target width of the bracket.
      max_horizon: the deepest belief a trial may add (steps from b0).
      time_limit: wall-clock cap in seconds (the bracket is then wider than tol).
      trials_per_round: trials between two global solves.

    Returns:
      :class:`ExactBounds` ``(lower, upper, horizon, num_vectors, info)``.
    """
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    T, Z, R, b0, gamma = model_arrays(model)
    ps = _PointSet(T, Z, R, b0, gamma, max_horizon)
    history = [(time.perf_counter() - t0, ps.lower_b0, ps.upper_b0)]
    rounds = stalled = 0
    while ps.upper_b0 - ps.lower_b0 > tol and time.perf_counter() < deadline and stalled < 3:
        rounds += 1
        before = (ps.n, ps.lower_b0, ps.upper_b0)
        for _ in range(trials_per_round):
            ps.trial(tol, deadline)
            ps.upper_b0 = min(ps.upper_b0, float(ps.v[ps.i0]))
        ps.solve_upper(full=rounds % 4 == 0 or stalled > 0)
        for _ in range(4):
            improved = ps.improve_controller()
            ps.evaluate_controller()
            ps.prune_controller()
            if not improved:
                break
        history.append((time.perf_counter() - t0, ps.lower_b0, ps.upper_b0))
        stalled = stalled + 1 if (ps.n, ps.lower_b0, ps.upper_b0) == before else 0
    pad = _pad(np.array([ps.lower_b0, ps.upper_b0]))
    info = {"seconds": time.perf_counter() - t0, "converged": ps.upper_b0 - ps.lower_b0 <= tol,
            "num_beliefs": ps.n, "rounds": rounds, "history": history, "alphas": ps.beta,
            "alpha_actions": ps.act}
    return ExactBounds(ps.lower_b0 - pad, ps.upper_b0 + pad, int(ps.depth[:ps.n].max()),
                       len(ps.act), info)


#: Target bracket width and time cap per built-in problem, for :func:`exact_reference`.
REFERENCE_SETTINGS = {
    "tiger": (1e-3, 30.0),
    "1d": (1e-3, 30.0),
    "paint.95": (1e-3, 30.0),
    "network": (0.1, 30.0),  # ~10 s on a busy 2-core machine; V* ~ 293.19
}


@functools.lru_cache(maxsize=None)
def exact_reference(name):
    """:func:`exact_value_bounds` of the built-in problem ``name``, cached per process."""
    import jaxpomdp

    tol, limit = REFERENCE_SETTINGS.get(name, (1e-3, 20.0))
    return exact_value_bounds(jaxpomdp.problems.get(name), tol=tol, time_limit=limit)


# --------------------------------------------------------------------- pruning
def _pointwise_prune(V):
    """Drops duplicates and vectors dominated componentwise (exact, no loss)."""
    n = len(V)
    if n <= 1:
        return V
    V = np.unique(V, axis=0)  # sorted: deterministic
    n = len(V)
    keep = np.ones(n, bool)
    chunk = max(1, 4_000_000 // (n * V.shape[1] + 1))
    for i0 in range(0, n, chunk):
        blk = V[i0:i0 + chunk]
        # dom[i, j]: V[j] >= V[i] everywhere (and j != i; no duplicates are left)
        dom = np.all(V[None, :, :] >= blk[:, None, :], axis=-1)
        dom[np.arange(len(blk)), np.arange(i0, i0 + len(blk))] = False
        keep[i0:i0 + chunk] = ~dom.any(1)
    return V[keep]


def _envelope_1d(V):
    """Exact upper envelope of lines ``f(p) = V[0] (1 - p) + V[1] p`` on [0, 1].

    Returns ``(kept, loss)``, ``loss`` the largest ``max(all) - max(kept)`` over
    [0, 1] (0 up to rounding), found at the kept envelope's breakpoints and ends.
    """
    slope = V[:, 1] - V[:, 0]
    kept = []
    p = 0.0
    i = int(np.lexsort((slope, V[:, 0]))[-1])  # best at p = 0, ties: steepest
    breaks = [0.0]
    while True:
        kept.append(i)
        # the first line with a larger slope that overtakes line i after p
        ds = slope - slope[i]
        up = ds > 0
        if not up.any():
            break
        cross = np.full(len(V), np.inf)
        cross[up] = (V[i, 0] - V[up, 0]) / ds[up]
        cross[up] = np.maximum(cross[up], p)
        if cross.min() >= 1.0:
            break
        pmin = cross.min()
        cands = np.flatnonzero(cross <= pmin)
        j = int(cands[np.argmax(slope[cands])])
        p = pmin
        breaks.append(p)
        i = j
    breaks.append(1.0)
    kept_V = V[np.array(sorted(set(kept)))]
    pts = np.array(breaks)
    P = np.stack([1 - pts, pts], 1)
    loss = float(np.max((P @ V.T).max(1) - (P @ kept_V.T).max(1)))
    return kept_V, max(loss, 0.0)


def _advantage_lp(alpha, W):
    """``max_b min_w (alpha - w) . b``: returns (witness b or None, certified bound).

    The certified bound is ``max_s (alpha - lambda^T W)(s)`` for the LP's dual
    weights ``lambda`` (renormalised to the simplex), valid whatever the LP's
    accuracy by weak duality.
    """
    m, S = W.shape
    c = np.zeros(S + 1)
    c[-1] = -1.0  # maximise delta
    A_ub = np.hstack([W - alpha, np.ones((m, 1))])  # (w - alpha) . b + delta <= 0
    A_eq = np.hstack([np.ones((1, S)), np.zeros((1, 1))])
    res = linprog(c, A_ub=A_ub, b_ub=np.zeros(m), A_eq=A_eq, b_eq=[1.0],
                  bounds=[(0, None)] * S + [(None, None)], method="highs")
    if res.status != 0:
        return None, np.inf
    lam = np.maximum(-np.asarray(res.ineqlin.marginals), 0.0)
    total = lam.sum()
    cert = np.inf if total <= 0 else float(np.max(alpha - (lam / total) @ W))
    b = np.maximum(res.x[:S], 0.0)
    b = b / b.sum() if b.sum() > 0 else None
    return b, cert


def prune(V, eps=0.0, probes=None):
    """Lark's filter with certified epsilon-pruning.

    Args:
      V: float[N, S] alpha-vectors.
      eps: a vector is dropped when its certified largest gain over the kept ones
        is <= eps.
      probes: optional float[P, S] beliefs; the best vectors there are kept
        straight away (cheap, speeds up the filter).

    Returns:
      ``(kept, loss)``: kept is a subset of V (rows), and
      ``max_{alpha in V} alpha . b <= max_{w in kept} w . b + loss`` for every belief b.
    """
    V = np.asarray(V, np.float64)
    n, S = V.shape
    if n <= 1:
        return V, 0.0
    if S == 1:
        return V[np.argmax(V[:, 0])][None], 0.0
    if S == 2:
        return _envelope_1d(V)
    V = _pointwise_prune(V)
    n = len(V)
    if n <= 1:
        return V, 0.0
    corners = np.eye(S)
    P = corners if probes is None else np.vstack([corners, probes])
    in_w = np.zeros(n, bool)
    in_w[np.unique(np.argmax(P @ V.T, axis=1))] = True
    F = [int(i) for i in np.flatnonzero(~in_w)]
    loss = 0.0
    while F:
        i = F.pop()
        W = V[in_w]
        b, cert = _advantage_lp(V[i], W)
        if cert <= eps:
            loss = max(loss, cert)
            continue
        if b is not None:
            cand = np.array(F + [i])
            vals = V[cand] @ b
            j = int(cand[np.argmax(vals)])
            if vals.max() > np.max(W @ b):
                in_w[j] = True
                if j != i:
                    F.remove(j)
                    F.append(i)
                continue
        in_w[i] = True  # undecided: keeping a vector is always safe
    return V[in_w], max(loss, 0.0)


# ---------------------------------------------------------------------- backup
def backup(V, T, Z, R, gamma, eps=0.0, probes=None):
    """One exact Bellman backup ``H`` of the alpha-vector set V, by incremental pruning.

    ``g_{a,o}^alpha(s) = R(s,a)/|O| + gamma sum_s' T(s'|s,a) Z(o|a,s') alpha(s')``;
    ``S^a = prune(... prune(S^{a,1} (+) S^{a,2}) ... (+) S^{a,|O|})``;
    ``V' = prune(union_a S^a)``.

    Returns ``(V', loss)``: ``H(max V) <= max V' + loss`` everywhere, and every
    vector of V' is one of ``H``'s exact vectors.
    """
    A, S, O = Z.shape
    sets, losses = [], []
    for a in range(A):
        cur, loss_a = None, 0.0
        for o in range(O):
            G = R[a] / O + gamma * (V * Z[a, :, o]) @ T[a].T
            G, e = prune(G, eps, probes)
            loss_a += e
            if cur is None:
                cur = G
            else:
                cur, e = prune((cur[:, None, :] + G[None, :, :]).reshape(-1, S), eps, probes)
                loss_a += e
        sets.append(cur)
        losses.append(loss_a)
    out, e = prune(np.vstack(sets), eps, probes)
    return out, max(losses) + e



def value_iteration_bounds(model, horizon, *, prune_eps=None, time_limit=None):
    """Exact value iteration with incremental pruning: ``L_t <= V*(b0) <= U_t`` after ``horizon`` backups.

    ``L_0`` = the blind vectors, ``U_0`` = the QMDP vectors (both certified), then
    ``L_t = H L_{t-1}``, ``U_t = H U_{t-1}`` by :func:`backup`; the upper set's
    certified pruning losses are carried as a constant ``c_t = gamma c_{t-1} + loss_t``.
    Stops early (bounds still valid) at ``time_limit`` seconds.

    Args:
      model: a tiny ``jaxpomdp.TabularPOMDP``.
      horizon: the number of backups.
      prune_eps: certified loss allowed per prune (default ``1e-10 (1 + max|V|)``).
      time_limit: optional cap in seconds.

    Returns:
      :class:`ExactBounds`; ``info`` holds ``lower_alphas``, ``upper_alphas``,
      ``upper_shift`` (``c_t``) and ``history`` rows ``(t, lower, upper, |L_t|, |U_t|)``.
    """
    t0 = time.perf_counter()
    T, Z, R, b0, gamma = model_arrays(model)
    lo = prune(blind_vectors(T, R, gamma))[0]
    up, shift = prune(qmdp_vectors(T, R, gamma))
    if prune_eps is None:
        prune_eps = PAD * (1 + float(np.max(np.abs(up))))
    history = [(0, float(np.max(lo @ b0)), float(np.max(up @ b0)), len(lo), len(up))]
    t = 0
    while t < horizon and (time_limit is None or time.perf_counter() - t0 < time_limit):
        t += 1
        lo = backup(lo, T, Z, R, gamma, prune_eps)[0]
        up, loss = backup(up, T, Z, R, gamma, prune_eps)
        shift = gamma * shift + loss
        history.append((t, float(np.max(lo @ b0)), float(np.max(up @ b0)) + shift, len(lo), len(up)))
    lower = max(h[1] for h in history)
    upper = min(h[2] for h in history)
    pad = _pad(np.array([lower, upper]))
    info = {"seconds": time.perf_counter() - t0, "history": history, "lower_alphas": lo,
            "upper_alphas": up, "upper_shift": shift}
    return ExactBounds(lower - pad, upper + pad, t, len(lo), info)
