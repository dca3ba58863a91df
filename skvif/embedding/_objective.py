"""The skip-gram objective over expected random-walk co-occurrences, matrix-free.

Pure math, no estimator glue. The graph is a sparse symmetric adjacency
``A`` (:mod:`scipy.sparse`); the co-occurrences ``C = sum_{t<=T} D P^t`` are
sparse (window-truncated walks); the full softmax over the nodes is evaluated
in row chunks of at most ``_CHUNK_ELEMENTS`` numbers, never as an ``n x n``
array. Gradients and Hessian-vector products are closed forms (checked against
autograd on a dense reference in the tests); a Hessian-vector product costs one
pass over the softmax whatever the number of directions.

The leave-out changes (:class:`LeaveOutChanges`) give the change of the
gradient, along given directions, when a node or edge is removed, computed
from the removed unit's window-limited neighbourhood only.

Parameters ``theta`` are ``[phi; psi]`` row-major, ``phi, psi`` of shape
``(n_nodes, n_components)``.
"""

import numpy as np
import scipy.sparse as sp

__all__ = ["sparse_adjacency", "sparse_cooccurrence", "SkipGram", "LeaveOutChanges",
           "removal_weights"]

# Rows of the softmax evaluated at once hold about this many numbers.
_CHUNK_ELEMENTS = 2**21
# The softmax rows of the last parameters are kept (for the many Hessian-vector
# products at one point) while n_nodes**2 is at most this: 2**25 numbers,
# 256 MiB, about 5,800 nodes. Larger graphs recompute them for every product.
_SOFTMAX_CACHE_ELEMENTS = 2**25


def sparse_adjacency(edge_index, n_nodes):
    """0/1 symmetric adjacency (CSR); a self-loop puts 1 on the diagonal once."""
    edge_index = np.asarray(edge_index, dtype=np.intp).reshape(-1, 2)
    i, j = edge_index[:, 0], edge_index[:, 1]
    loop = i == j
    rows = np.concatenate([i, j[~loop]])
    cols = np.concatenate([j, i[~loop]])
    A = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(n_nodes, n_nodes))
    A.sum_duplicates()
    return A


def transition(A):
    """``P = D^{-1} A`` (CSR) and the degrees; zero rows for isolated nodes."""
    degree = np.asarray(A.sum(axis=1)).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree != 0)
    return sp.csr_array(sp.diags_array(inverse) @ A), degree


def sparse_cooccurrence(A, window):
    r"""Window-truncated expected co-occurrences ``C = sum_{t=1}^{T} D P^t`` (CSR).

    Equal to ``sum_{t=1}^{T} A P^{t-1}``, ``P = D^{-1} A``, ``T = window``;
    rows of isolated nodes are zero. ``C`` is symmetric and its row sums are
    ``T * degree``.
    """
    P, _ = transition(A)
    M = sp.csr_array(A, copy=True)
    C = sp.csr_array(A, copy=True)
    for _ in range(int(window) - 1):
        M = sp.csr_array(M @ P)
        C = sp.csr_array(C + M)
    C.sum_duplicates()
    return C


def removal_weights(A, unit, index, eps=1.0):
    """Weighted adjacency after scaling a node's or an edge's weight to ``1 - eps``.

    As the weighted objective defines it: an edge ``(i, j)`` gets weight
    ``1 - eps``; node ``r`` scales its edges by ``1 - eps`` (a self-loop by
    ``(1 - eps)^2``). ``eps=1`` deletes the edge, or all edges of the node.
    """
    A = sp.lil_array(A, copy=True)
    if unit == "edge":
        i, j = index
        A[i, j] = A[j, i] = 1.0 - eps
    else:
        for j in sp.csr_array(A[[index], :]).indices:
            scale = (1.0 - eps) ** 2 if j == index else 1.0 - eps
            A[index, j] = A[j, index] = scale
    A = sp.csr_array(A)
    A.eliminate_zeros()
    return A


def _row_chunks(rows, n_cols, n_directions=1):
    size = max(1, _CHUNK_ELEMENTS // max(n_cols * n_directions, 1))
    return [rows[s:s + size] for s in range(0, rows.size, size)]


class SkipGram:
    r"""Skip-gram objective of one (possibly leave-out) graph, matrix-free.

    .. math::

        L(\phi, \psi) = \sum_{u} c_u \log \sum_x w_x e^{\phi_u \cdot \psi_x}
            - \sum_{u, v} C_{uv}\, \phi_u \cdot \psi_v
            + \frac{\alpha}{2}\sum_x w_x \big(\|\phi_x\|^2 + \|\psi_x\|^2\big)
            + \frac{\gamma}{2}\big\|\mathrm{skew}\big(\Theta_0^\top W \Theta\big)\big\|_F^2,

    ``c = C 1`` the row sums, ``w`` node weights (0 for a removed node),
    ``Theta = [phi; psi]``, ``W`` the node weights twice on the diagonal,
    ``skew(M) = (M - M^T)/2``; the last term (the rotation gauge, see the
    estimator's Notes) only when ``anchor = Theta_0`` is given.

    Parameters
    ----------
    C : sparse array of shape (n, n)
        Symmetric co-occurrence counts.
    node_weights : ndarray of shape (n,) or None
    n_components : int
    alpha : float
    anchor : ndarray of shape (2 n d,), optional
    gauge : float, default=1.0
    """

    def __init__(self, C, node_weights, n_components, alpha, anchor=None, gauge=1.0):
        self.C = sp.csr_array(C)
        self.n = self.C.shape[0]
        self.d = int(n_components)
        self.alpha = float(alpha)
        self.w = np.ones(self.n) if node_weights is None else np.asarray(node_weights, float)
        self.c = np.asarray(self.C.sum(axis=1)).ravel()
        self.rows = np.flatnonzero(self.c != 0)  # rows of the softmax that count
        self.anchor = None if anchor is None else np.reshape(anchor, (2 * self.n, self.d))
        self.gauge = float(gauge)

    def unpack(self, theta):
        half = self.n * self.d
        return theta[:half].reshape(self.n, self.d), theta[half:].reshape(self.n, self.d)

    def _softmax(self, phi, psi, rows):
        """Rows ``rows`` of the masked softmax ``P_ux = w_x e^{S_ux} / Z_u``, and ``log Z``."""
        S = phi[rows] @ psi.T
        shift = S.max(axis=1, keepdims=True)
        E = np.exp(S - shift)
        if np.any(self.w != 1):
            E *= self.w
        Z = E.sum(axis=1, keepdims=True)
        return E / Z, (np.log(Z) + shift)[:, 0]

    def softmax_chunks(self, theta):
        """``(rows, P_rows, log Z_rows)`` over the rows that count, in chunks.

        Kept for the last ``theta`` when the graph is small enough
        (``_SOFTMAX_CACHE_ELEMENTS``), recomputed otherwise.
        """
        cached = getattr(self, "_cache", None)
        if cached is not None and np.array_equal(cached[0], theta):
            return cached[1]
        phi, psi = self.unpack(theta)
        chunks = [(U,) + self._softmax(phi, psi, U) for U in _row_chunks(self.rows, self.n)]
        if self.n * self.n <= _SOFTMAX_CACHE_ELEMENTS:
            self._cache = (theta.copy(), chunks)
        return chunks

    def log_normalizers(self, theta):
        """``log Z_u`` for every node ``u`` (a chunked pass over the softmax)."""
        phi, psi = self.unpack(theta)
        out = np.empty(self.n)
        for U in _row_chunks(np.arange(self.n), self.n):
            out[U] = self._softmax(phi, psi, U)[1]
        return out

    def _gauge_parts(self, theta, V=None):
        if self.anchor is None:
            return 0.0 if V is not None else (0.0, 0.0)
        mask = np.concatenate([self.w, self.w])[:, None]
        if V is not None:  # Hessian-vector products of the (quadratic) gauge
            Vt = V.reshape(2 * self.n, self.d, -1) * mask[..., None]
            M = np.einsum("xi,xjq->ijq", self.anchor, Vt)
            K = 0.5 * (M - np.swapaxes(M, 0, 1))
            out = self.gauge * mask[..., None] * np.einsum("xi,ijq->xjq", self.anchor, K)
            return out.reshape(V.shape)
        Theta = theta.reshape(2 * self.n, self.d) * mask
        M = self.anchor.T @ Theta
        K = 0.5 * (M - M.T)
        return 0.5 * self.gauge * np.sum(K ** 2), (self.gauge * mask * (self.anchor @ K)).ravel()

    def value_and_grad(self, theta):
        """Objective and gradient, shape ``(2 n d,)``."""
        phi, psi = self.unpack(theta)
        g_phi = np.zeros_like(phi)
        g_psi = np.zeros_like(psi)
        value = 0.0
        for U, P, lse in self.softmax_chunks(theta):
            value += self.c[U] @ lse
            g_phi[U] = self.c[U, None] * (P @ psi)
            g_psi += P.T @ (self.c[U, None] * phi[U])
        Cpsi, Cphi = self.C @ psi, self.C @ phi
        value -= np.sum(phi * Cpsi)
        g_phi -= Cpsi
        g_psi -= Cphi
        value += 0.5 * self.alpha * np.sum(self.w * (np.sum(phi ** 2, 1) + np.sum(psi ** 2, 1)))
        g_phi += self.alpha * self.w[:, None] * phi
        g_psi += self.alpha * self.w[:, None] * psi
        gauge_value, gauge_grad = self._gauge_parts(theta)
        return value + gauge_value, np.concatenate([g_phi.ravel(), g_psi.ravel()]) + gauge_grad

    def hvp(self, theta, V):
        r"""Hessian-vector products ``H V`` for ``V`` of shape ``(2 n d,)`` or ``(2 n d, q)``.

        With ``dS = a psi^T + phi b^T`` for a direction ``(a, b)``, the
        softmax part needs only the moments ``sum_x P_ux [b_x, psi_x psi_x^T,
        psi_x b_x^T]`` and their transposed counterparts: one pass over the
        softmax rows for all ``q`` directions.
        """
        single = V.ndim == 1
        V = V.reshape(-1, 1) if single else V
        n, d, q = self.n, self.d, V.shape[1]
        phi, psi = self.unpack(theta)
        a = V[:n * d].reshape(n, d, q)
        b = V[n * d:].reshape(n, d, q)
        psi_b = (psi[:, :, None, None] * b[:, None, :, :]).reshape(n, -1)  # (n, d*d*q)
        psi_psi = (psi[:, :, None] * psi[:, None, :]).reshape(n, -1)
        right = np.concatenate([psi, psi_psi, b.reshape(n, -1), psi_b], axis=1)
        h_phi = np.zeros((n, d, q))
        h_psi = np.zeros((n, d, q))
        widths = np.cumsum([d, d * d, d * q])
        for U, P, _ in self.softmax_chunks(theta):
            mu, sig, beta, gam = np.split(P @ right, widths, axis=1)
            k = U.size
            sig, beta = sig.reshape(k, d, d), beta.reshape(k, d, q)
            gam = gam.reshape(k, d, d, q)
            aU, phU, cU = a[U], phi[U], self.c[U]
            m = np.einsum("kdq,kd->kq", aU, mu) + np.einsum("kd,kdq->kq", phU, beta)
            h_phi[U] = cU[:, None, None] * (
                np.einsum("kij,kjq->kiq", sig, aU) + np.einsum("kijq,kj->kiq", gam, phU)
                - m[:, None, :] * mu[:, :, None] + beta)
            left = np.concatenate([
                (cU[:, None, None] * phU[:, :, None] * phU[:, None, :]).reshape(k, -1),
                (cU[:, None, None, None] * phU[:, :, None, None] * aU[:, None]).reshape(k, -1),
                (cU[:, None, None] * (aU - m[:, None, :] * phU[:, :, None])).reshape(k, -1),
            ], axis=1)
            t_phi2, t_phia, t_rest = np.split(P.T @ left, [d * d, d * d + d * d * q], axis=1)
            h_psi += (np.einsum("xij,xjq->xiq", t_phi2.reshape(n, d, d), b)
                      + np.einsum("xijq,xj->xiq", t_phia.reshape(n, d, d, q), psi)
                      + t_rest.reshape(n, d, q))
        h_phi -= (self.C @ b.reshape(n, -1)).reshape(n, d, q)
        h_psi -= (self.C @ a.reshape(n, -1)).reshape(n, d, q)
        h_phi += self.alpha * self.w[:, None, None] * a
        h_psi += self.alpha * self.w[:, None, None] * b
        out = np.concatenate([h_phi.reshape(n * d, q), h_psi.reshape(n * d, q)])
        out = out + self._gauge_parts(theta, V)
        return out[:, 0] if single else out

    def hessian_diagonal(self, theta):
        """Exact diagonal of the Hessian (the Jacobi preconditioner of the solves)."""
        n, d = self.n, self.d
        phi, psi = self.unpack(theta)
        d_phi = np.zeros((n, d))
        d_psi = np.zeros((n, d))
        for U, P, _ in self.softmax_chunks(theta):
            mu, second = np.split(P @ np.concatenate([psi, psi ** 2], axis=1), 2, axis=1)
            d_phi[U] = self.c[U, None] * (second - mu ** 2)
            weighted = self.c[U, None] * phi[U] ** 2
            d_psi += P.T @ weighted - (P ** 2).T @ weighted
        out = np.concatenate([d_phi.ravel(), d_psi.ravel()]) + self.alpha * np.tile(
            np.repeat(self.w, d), 2)
        if self.anchor is not None:
            mask = np.concatenate([self.w, self.w])[:, None]
            A0 = self.anchor
            out += (0.5 * self.gauge * mask ** 2
                    * (np.sum(A0 ** 2, axis=1, keepdims=True) - A0 ** 2)).ravel()
        return out

    def hessian(self, theta):
        """Dense Hessian ``(p, p)`` from ``p`` products (small problems only)."""
        H = self.hvp(theta, np.eye(2 * self.n * self.d))
        return 0.5 * (H + H.T)


class LeaveOutChanges:
    r"""Exact change of the gradient along given directions when a unit is removed.

    For directions ``V = [v_1 .. v_m]`` (``(2 n d, m)``, split as
    ``v = (a, b)``) and a unit ``u`` whose weight goes from 1 to ``1 - eps``,
    :meth:`changes` returns ``R[u, j] = v_j^T (grad L(theta; 1) - grad
    L(theta; w^{(-u)}))``; ``eps=1`` is deletion, ``"if"`` is the complex-step
    derivative ``Im R(i h) / h``. It splits into three exact parts:

    - data term ``-sum C_uv phi_u.psi_v``: ``<V, (C' - C) [psi, phi]>``,
      where ``(C' - C) X = A' sum_s P'^s X - A sum_s P^s X`` is carried by
      the recursion ``dY_s = P dY_{s-1} + dP (Y_{s-1} + dY_{s-1})``, ``dP``
      nonzero only on the rows whose degree changes: each ``dY_s`` lives on
      the ``s``-step neighbourhood of the unit (window-limited), and
      ``C`` itself is never formed again;
    - softmax term: the row sums ``c = window * degree`` change only at the
      unit's end nodes; a removed node ``r`` leaves every softmax,
      ``E'_u[dS_u] = (E_u[dS_u] - eps P_ur dS_ur) / (1 - eps P_ur)``, which
      needs the softmax column of ``r`` only;
    - penalty: ``alpha eps (phi_r.a_r + psi_r.b_r)`` for a node. The
      rotation gauge contributes nothing at its anchor (its gradient is zero
      for any node weights there).
    """

    def __init__(self, A, window, objective, theta, V):
        self.A = sp.csr_array(A)
        self.P, self.degree = transition(self.A)
        self.window = int(window)
        self.obj = objective
        n, d = objective.n, objective.d
        self.phi, self.psi = objective.unpack(theta)
        m = V.shape[1]
        a, b = V[:n * d].reshape(n, d, m), V[n * d:].reshape(n, d, m)
        self.a, self.b = a, b
        self.Vnode = np.concatenate([a, b], axis=1)  # pairs with X = [psi, phi]
        X = np.concatenate([self.psi, self.phi], axis=1)
        self.Y = [X]
        for _ in range(self.window - 1):  # Y_s = P^s X, s < window
            self.Y.append(self.P @ self.Y[-1])
        self.Ysum = np.sum(self.Y, axis=0)
        # m_u^(j) = E_u[dS^(j)_u] = a_u.(P psi)_u + phi_u.(P b)_u; rows that
        # start no walk (c_u = 0) never count
        self.lse = np.zeros(n)
        mean = np.zeros((n, d * (1 + m)))
        right = np.concatenate([self.psi, b.reshape(n, -1)], axis=1)
        for U, P_U, lse in objective.softmax_chunks(theta):
            self.lse[U] = lse
            mean[U] = P_U @ right
        mu, beta = mean[:, :d], mean[:, d:].reshape(n, d, m)
        self.mean_dS = np.einsum("udj,ud->uj", a, mu) + np.einsum("ud,udj->uj", self.phi, beta)

    def _neighbours(self, x):
        A = self.A
        return A.indices[A.indptr[x]:A.indptr[x + 1]], A.data[A.indptr[x]:A.indptr[x + 1]]

    def _unit_entries(self, unit, index, eps):
        """``dA`` entries and ``dP`` rows of one unit, as (rows, cols, values)."""
        if unit == "edge":
            i, j = index
            dA = {(i, j): -eps, (j, i): -eps}
        else:
            r = index
            dA = {}
            for j in self._neighbours(r)[0]:
                if j == r:
                    dA[r, r] = (1.0 - eps) ** 2 - 1.0
                else:
                    dA[r, j] = dA[j, r] = -eps
        changed = sorted({x for x, _ in dA})
        a_rows, a_cols = zip(*dA) if dA else ((), ())
        a_vals = list(dA.values())
        p_rows, p_cols, p_vals = [], [], []
        for x in changed:
            cols, vals = self._neighbours(x)
            new = vals.astype(np.result_type(vals, eps))
            for k, col in enumerate(cols):
                new[k] = new[k] + dA.get((x, col), 0.0)
            deg_new = new.sum()
            inv_new = 1.0 / deg_new if deg_new != 0 else 0.0
            p_rows += [x] * cols.size
            p_cols += list(cols)
            p_vals += list(new * inv_new - vals / self.degree[x])
        return (list(a_rows), list(a_cols), a_vals), (p_rows, p_cols, p_vals), dA

    def _data_part(self, unit, indices, eps):
        n, k = self.obj.n, len(indices)
        width = self.Y[0].shape[1]
        dtype = np.result_type(float, eps)
        tri_a = [[], [], [], []]
        tri_p = [[], [], [], []]
        for u, index in enumerate(indices):
            (ar, ac, av), (pr, pc, pv), _ = self._unit_entries(unit, index, eps)
            for tri, (rr, cc, vv) in ((tri_a, (ar, ac, av)), (tri_p, (pr, pc, pv))):
                tri[0] += [u] * len(rr)
                tri[1] += rr
                tri[2] += cc
                tri[3] += vv
        tri_a = [np.asarray(t, dtype=dtype if i == 3 else np.intp) for i, t in enumerate(tri_a)]
        tri_p = [np.asarray(t, dtype=dtype if i == 3 else np.intp) for i, t in enumerate(tri_p)]
        dY = np.zeros((n, k, width), dtype=dtype)
        dY_sum = np.zeros_like(dY)
        for s in range(1, self.window):
            u, r, c, v = tri_p
            new = (self.P @ dY.reshape(n, -1)).reshape(n, k, width)
            np.add.at(new, (r, u), v[:, None] * (self.Y[s - 1][c] + dY[c, u]))
            dY = new
            dY_sum += dY
        dCX = (self.A @ dY_sum.reshape(n, -1)).reshape(n, k, width)
        u, r, c, v = tri_a
        np.add.at(dCX, (r, u), v[:, None] * (self.Ysum[c] + dY_sum[c, u]))
        return np.einsum("xud,xdj->uj", dCX, self.Vnode)

    def changes(self, unit, indices, eps=1.0):
        """``R`` of shape ``(len(indices), m)``; ``indices`` are edges ``(i, j)`` or nodes."""
        R = self._data_part(unit, indices, eps)
        T = self.window
        if unit == "edge":
            for u, (i, j) in enumerate(indices):
                ends = [i] if i == j else [i, j]
                R[u] += T * eps * self.mean_dS[ends].sum(axis=0)
            return R
        nodes = np.asarray(indices, dtype=np.intp)
        phi, psi, a, b = self.phi, self.psi, self.a, self.b
        # softmax columns of the removed nodes and dS_ur for every row u that
        # starts walks (the others have c_u = c'_u = 0)
        rows = self.obj.rows
        where = np.full(self.obj.n, -1)
        where[rows] = np.arange(rows.size)
        P_col = np.exp(phi[rows] @ psi[nodes].T - self.lse[rows, None])  # (rows, k)
        dS = (np.einsum("udj,rd->urj", a[rows], psi[nodes])
              + np.einsum("ud,rdj->urj", phi[rows], b[nodes]))  # (rows, k, m)
        c = self.obj.c[rows]
        c_new = np.repeat(c[:, None], nodes.size, axis=1).astype(np.result_type(float, eps))
        for k, r in enumerate(nodes):
            _, _, dA = self._unit_entries("node", r, eps)
            for (x, _), value in dA.items():
                c_new[where[x], k] += T * value
        mean_dS = self.mean_dS[rows]
        shrink = 1.0 - eps * P_col
        mean_new = (mean_dS[:, None, :] - eps * P_col[:, :, None] * dS) / shrink[:, :, None]
        R += (c @ mean_dS)[None, :] - np.einsum("uk,ukj->kj", c_new, mean_new)
        R += self.obj.alpha * eps * (np.einsum("kd,kdj->kj", phi[nodes], a[nodes])
                                     + np.einsum("kd,kdj->kj", psi[nodes], b[nodes]))
        return R
