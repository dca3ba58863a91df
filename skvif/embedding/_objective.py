"""The skip-gram objective over expected random-walk co-occurrences.

Pure math, no estimator glue: the graph enters as an edge list over node
indices ``0 .. n_nodes - 1``; node and edge weights scale the adjacency
matrix, so a weight of zero deletes the node (with all its edges) or the edge
exactly, and the co-occurrences are recomputed from the weighted adjacency
inside the (autograd-differentiable) objective.

Every function accepts a single problem (params ``(p,)``, weights ``(n,)``)
or a batch of ``k`` problems (params ``(k, p)``, weights ``(k, n)``).
"""

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval

__all__ = ["weighted_adjacency", "cooccurrence", "skipgram_objective",
           "unpack", "pair_scores"]


def unpack(params, n_nodes, n_components):
    """Split params ``(..., 2 * n_nodes * n_components)`` into ``phi, psi``."""
    half = n_nodes * n_components
    lead = params.shape[:-1]
    phi = anp.reshape(params[..., :half], lead + (n_nodes, n_components))
    psi = anp.reshape(params[..., half:], lead + (n_nodes, n_components))
    return phi, psi


def weighted_adjacency(edge_index, n_nodes, node_weights=None, edge_weights=None):
    r"""Symmetric weighted adjacency ``A_w`` of an undirected graph.

    Edge ``e = (i, j)`` enters as ``A_ij = A_ji = e_e \, w_i \, w_j`` with
    ``e_e`` its edge weight and ``w_i`` the node weights (1 when omitted); a
    self-loop adds ``e_e w_i^2`` to ``A_ii`` once (as
    :func:`networkx.to_numpy_array`).

    Parameters
    ----------
    edge_index : ndarray of shape (n_edges, 2) of int
    n_nodes : int
    node_weights : array of shape (n_nodes,) or (k, n_nodes), optional
    edge_weights : array of shape (n_edges,) or (k, n_edges), optional

    Returns
    -------
    A : array of shape (n_nodes, n_nodes) or (k, n_nodes, n_nodes)
    """
    edge_index = np.asarray(edge_index, dtype=np.intp).reshape(-1, 2)
    m = edge_index.shape[0]
    src = np.zeros((m, n_nodes))
    dst = np.zeros((m, n_nodes))
    src[np.arange(m), edge_index[:, 0]] = 1.0
    dst[np.arange(m), edge_index[:, 1]] = 1.0
    loops = edge_index[:, 0] == edge_index[:, 1]
    src[loops] *= 0.5  # a self-loop is counted once in A_ii after symmetrizing

    batch = next((np.ndim(w) == 2 for w in (node_weights, edge_weights) if w is not None),
                 False)
    lead = (anp.shape(node_weights if node_weights is not None else edge_weights)[0],) \
        if batch else ()
    factor = anp.ones(lead + (m,))
    if edge_weights is not None:
        factor = factor * edge_weights
    if node_weights is not None:
        # w_i * w_j for every edge, gathered by matrix products (autograd-friendly)
        factor = factor * anp.dot(node_weights, src.T * 2.0 ** loops) \
            * anp.dot(node_weights, dst.T)
    if batch:
        half = anp.einsum("mi,km,mj->kij", src, factor, dst)
        return half + anp.swapaxes(half, 1, 2)
    half = anp.dot(src.T * factor, dst)
    return half + half.T


def cooccurrence(A, window):
    r"""Expected random-walk co-occurrence counts within ``window`` steps.

    .. math::

        C = \sum_{t=1}^{T} D P^{t} = \sum_{t=1}^{T} A (D^{-1} A)^{t-1},

    with ``D = diag(A 1)`` the degrees, ``P = D^{-1} A`` the transition matrix
    and ``T = window``. Rows of isolated nodes (degree 0) are zero: no walk
    starts there. For an undirected graph ``C`` is symmetric.

    Parameters
    ----------
    A : array of shape (n, n) or (k, n, n)
        Nonnegative symmetric weighted adjacency.
    window : int

    Returns
    -------
    C : array of the shape of ``A``
    """
    degree = anp.sum(A, axis=-1)
    safe = anp.where(degree > 0, degree, 1.0)
    P = A / anp.expand_dims(safe, -1)
    M = A
    C = A
    for _ in range(int(window) - 1):
        M = anp.matmul(M, P)
        C = C + M
    return C


def skipgram_objective(params, C, node_weights, n_components, alpha):
    r"""Skip-gram loss with full (masked) softmax plus L2 penalty.

    .. math::

        L(\phi, \psi) = \sum_{u, v} C_{uv}\Big[\log \sum_{x} w_x
            e^{\phi_u \cdot \psi_x} - \phi_u \cdot \psi_v\Big]
            + \frac{\alpha}{2}\sum_{x} w_x \big(\|\phi_x\|^2 + \|\psi_x\|^2\big)

    Parameters
    ----------
    params : array of shape (p,) or (k, p)
        ``p = 2 * n_nodes * n_components``: node vectors ``phi`` then context
        vectors ``psi``, each row-major ``(n_nodes, n_components)``.
    C : array of shape (n, n) or (k, n, n)
        Co-occurrence counts (zero rows and columns for deleted nodes).
    node_weights : array of shape (n,) or (k, n)
        Softmax mask and penalty weights (1 kept, 0 deleted).
    n_components : int
    alpha : float

    Returns
    -------
    float or array of shape (k,)
    """
    n = C.shape[-1]
    phi, psi = unpack(params, n, n_components)
    S = anp.matmul(phi, anp.swapaxes(psi, -1, -2))  # S_uv = phi_u . psi_v
    # log-sum-exp shifted by the row maximum, held constant for autograd: the
    # result does not depend on the shift, so neither do its derivatives
    shift = np.max(getval(S), axis=-1, keepdims=True)
    Z = anp.sum(anp.expand_dims(node_weights, -2) * anp.exp(S - shift), axis=-1)
    lse = anp.log(Z) + shift[..., 0]
    # sum_uv C_uv S_uv = sum_u phi_u . (C psi)_u
    data = (anp.sum(anp.sum(C, axis=-1) * lse, axis=-1)
            - anp.sum(anp.sum(phi * anp.matmul(C, psi), axis=-1), axis=-1))
    norms = anp.sum(phi ** 2, axis=-1) + anp.sum(psi ** 2, axis=-1)
    return data + 0.5 * alpha * anp.sum(node_weights * norms, axis=-1)


def pair_scores(params, pair_index, n_nodes, n_components):
    """``phi_u . psi_v`` for each row ``(u, v)`` of ``pair_index``."""
    phi, psi = unpack(params, n_nodes, n_components)
    return anp.sum(phi[pair_index[:, 0]] * psi[pair_index[:, 1]], axis=-1)
