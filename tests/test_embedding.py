"""Tests of NodeEmbeddingInfluence against independent references.

The reference objective below is written from the documented formula alone:
networkx builds the (deleted) graph and its adjacency, co-occurrences come from
explicit matrix powers, the softmax from scipy/autograd ``logsumexp``.
"""

import copy
import doctest
import pickle

import autograd.numpy as anp
import networkx as nx
import numpy as np
import pytest
import scipy.optimize
from autograd import grad, hessian
from autograd.scipy.special import logsumexp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from autograd.tracer import getval

from _accuracy import assert_agrees
from skvif._engine import check_units, influence
from skvif.embedding import NodeEmbeddingInfluence
from skvif.embedding import _estimator as estimator_module
from skvif.embedding._objective import (LeaveOutChanges, SkipGram, removal_weights,
                                        sparse_adjacency, sparse_cooccurrence)

N_PAIRS = 20
_GAUGE = 1.0


# --------------------------------------------------------------------------
# independent reference
# --------------------------------------------------------------------------
def reference_cooccurrence(H, window):
    """``sum_t D P^t`` by explicit matrix powers on networkx's adjacency."""
    A = nx.to_numpy_array(H, nodelist=list(H.nodes), weight=None)
    deg = A.sum(axis=1)
    P = np.divide(A, deg[:, None], out=np.zeros_like(A), where=deg[:, None] > 0)
    return sum(np.diag(deg) @ np.linalg.matrix_power(P, t) for t in range(1, window + 1))


def reference_objective(H, theta, window, alpha, d):
    """Skip-gram objective of graph ``H``; ``theta`` = [phi; psi] in ``H.nodes`` order."""
    C = reference_cooccurrence(H, window)
    n = H.number_of_nodes()
    phi = anp.reshape(theta[:n * d], (n, d))
    psi = anp.reshape(theta[n * d:], (n, d))
    S = anp.dot(phi, psi.T)
    log_softmax = S - logsumexp(S, axis=1, keepdims=True)
    return -anp.sum(C * log_softmax) + 0.5 * alpha * (anp.sum(phi ** 2) + anp.sum(psi ** 2))


def drop_node(theta, n, d, i):
    """Params of the graph without node ``i`` (its rows of phi and psi dropped)."""
    phi, psi = theta[:n * d].reshape(n, d), theta[n * d:].reshape(n, d)
    return np.concatenate([np.delete(phi, i, 0).ravel(), np.delete(psi, i, 0).ravel()])


def pearson(estimate, exact):
    keep = np.isfinite(estimate) & np.isfinite(exact)
    return np.corrcoef(estimate[keep], exact[keep])[0, 1]


def random_pairs(nodes, n_pairs=N_PAIRS, seed=0):
    rng = np.random.RandomState(seed)
    return [tuple(nodes[i] for i in rng.choice(len(nodes), 2, replace=False))
            for _ in range(n_pairs)]


def rotation(d, seed):
    Q, _ = np.linalg.qr(np.random.RandomState(seed).standard_normal((d, d)))
    return Q


# --------------------------------------------------------------------------
# generic (dense, autograd) path: the implementation before the sparse one,
# kept as the reference of every fast piece
# --------------------------------------------------------------------------
# ---- generic (dense, autograd) reference: the pre-sparse implementation ----
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

def _hessian(lossb, theta, weights):
    """Dense Hessian of a batched loss in one reverse-over-reverse pass.

    The ``p`` Hessian-vector products with the unit vectors are evaluated as
    one batch of ``p`` copies of the problem (rows of the result are the
    gradients of the ``p`` partial derivatives).
    """
    p = theta.size
    Q = np.tile(theta, (p, 1))
    W = np.tile(weights, (p, 1))
    eye = np.eye(p)
    gradient = grad(lambda Q: anp.sum(lossb(Q, W)))
    H = grad(lambda Q: anp.sum(gradient(Q) * eye))(Q)
    return 0.5 * (H + H.T)


class _Problem:
    """The objective of one fitted graph as batched losses over node or edge weights.

    Built on demand from the estimator's stored arrays (never stored on it).
    The co-occurrences depend only on the weights, so the last ones computed
    are cached: the engine evaluates many Hessian-vector products at the
    same weights.

    ``anchor`` adds the rotation gauge ``gauge/2 * ||skew(Theta0^T W Theta)||_F^2``
    with ``Theta = [phi; psi]``, ``W`` the node weights (twice) on the diagonal
    and ``skew(M) = (M - M^T)/2``. It is zero, with
    zero gradient, at ``Theta0`` and at every optimum aligned to ``Theta0`` by
    orthogonal Procrustes, so it changes no pair score of any optimum; it only
    gives curvature to the rotation directions, which the objective leaves
    flat (without it a Newton refit never stops drifting along them and the
    Hessian is singular).
    """

    def __init__(self, edge_index, n_nodes, n_components, window, alpha, anchor=None):
        self.edge_index = edge_index
        self.n_nodes = n_nodes
        self.n_components = n_components
        self.window = window
        self.alpha = alpha
        self.anchor = None if anchor is None else np.reshape(anchor, (2 * n_nodes,
                                                                      n_components))
        self._key = None
        self._C = None

    def _cooccurrence(self, node_weights, edge_weights):
        def compute():
            A = weighted_adjacency(self.edge_index, self.n_nodes, node_weights, edge_weights)
            return cooccurrence(A, self.window)

        w = node_weights if edge_weights is None else edge_weights
        if type(w) is not np.ndarray:  # traced by autograd (method="if"): no cache
            return compute()
        key = (node_weights is None, w.shape, w.tobytes())
        if key != self._key:
            self._key, self._C = None, compute()
            self._key = key
        return self._C

    def _gauge(self, params, node_weights=None):
        if self.anchor is None:
            return 0.0
        lead = params.shape[:-1]
        Theta = anp.reshape(params, lead + (2 * self.n_nodes, self.n_components))
        if node_weights is not None:  # a removed node's vectors leave the gauge too
            mask = anp.concatenate([node_weights, node_weights], axis=-1)
            Theta = Theta * anp.expand_dims(mask, -1)
        M = anp.matmul(self.anchor.T, Theta)
        skew = 0.5 * (M - anp.swapaxes(M, -1, -2))
        return 0.5 * _GAUGE * anp.sum(anp.sum(skew ** 2, axis=-1), axis=-1)

    def node_loss(self, params, weights):
        """Objective with node weights ``(n_nodes,)`` or ``(k, n_nodes)``."""
        C = self._cooccurrence(weights, None)
        return (skipgram_objective(params, C, weights, self.n_components, self.alpha)
                + self._gauge(params, weights))

    def edge_loss(self, params, weights):
        """Objective with edge weights ``(n_edges,)`` or ``(k, n_edges)``."""
        C = self._cooccurrence(None, weights)
        node_weights = np.ones(np.shape(weights)[:-1] + (self.n_nodes,))
        return (skipgram_objective(params, C, node_weights, self.n_components, self.alpha)
                + self._gauge(params))




def generic_problem(model, anchor=None):
    return _Problem(model.edge_index_, len(model.nodes_), model.n_components, model.window,
                    float(model.alpha), anchor)


# --------------------------------------------------------------------------
# fixtures (module scope: refits are the expensive part)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def karate():
    G = nx.karate_club_graph()
    model = NodeEmbeddingInfluence(random_state=0).fit(G)
    pairs = random_pairs(model.nodes_)
    return G, model, pairs, {}


@pytest.fixture(scope="module")
def florentine():
    G = nx.florentine_families_graph()
    model = NodeEmbeddingInfluence(random_state=0).fit(G)
    pairs = random_pairs(model.nodes_)
    return G, model, pairs, {}


def cached(fixture, unit, method):
    G, model, pairs, cache = fixture
    if (unit, method) not in cache:
        # (the measured newton numbers are those of the line-searched step)
        cache[unit, method] = model.influence_(pairs, unit=unit, method=method,
                                               line_search=method == "newton")
    return cache[unit, method]


# --------------------------------------------------------------------------
# the objective: exact deletion, co-occurrences, derivatives
# --------------------------------------------------------------------------
def test_cooccurrence_by_hand():
    # path a-b-c, window 2: C = A + A D^-1 A
    model = NodeEmbeddingInfluence(window=2, random_state=0).fit(nx.path_graph("abc"))
    expected = np.array([[0.5, 1.0, 0.5], [1.0, 2.0, 1.0], [0.5, 1.0, 0.5]])
    np.testing.assert_allclose(model.cooccurrence_.toarray(), expected, rtol=0, atol=1e-15)


def test_cooccurrence_counts_walks():
    G = nx.karate_club_graph()
    model = NodeEmbeddingInfluence(window=4).fit(G)
    C = model.cooccurrence_.toarray()
    np.testing.assert_allclose(C, reference_cooccurrence(G, 4), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(C, C.T, atol=1e-12)
    degree = np.array([G.degree(v) for v in model.nodes_])
    np.testing.assert_allclose(C.sum(axis=1), 4 * degree, rtol=1e-13)


def _graph_with_extras():
    """Karate club plus a self-loop, a pendant chain and string/tuple labels."""
    G = nx.relabel_nodes(nx.karate_club_graph(), {0: "hub", 33: ("t", 33)})
    G.add_edge(5, 5)
    G.add_edge("hub", "leaf")
    return G


@pytest.mark.parametrize("node_pos", [0, 11, 33, 34])
def test_node_weight_zero_is_exact_deletion(node_pos):
    G = _graph_with_extras()
    model = NodeEmbeddingInfluence(random_state=0)
    model.fit(G)
    n, d = len(model.nodes_), model.n_components
    theta = np.random.RandomState(1).standard_normal(2 * n * d)
    problem = generic_problem(model)
    w = np.ones(n)
    w[node_pos] = 0.0
    H = G.copy()
    H.remove_node(model.nodes_[node_pos])  # node 0 ("hub") leaves "leaf" and 11 isolated
    expected = reference_objective(H, drop_node(theta, n, d, node_pos), model.window,
                                   model.alpha, d)
    got = problem.node_loss(theta, w)
    assert abs(got - expected) <= 1e-12 * abs(expected)
    # batched evaluation agrees with single problems
    W = np.ones((3, n))
    W[1, node_pos] = 0.0
    Theta = np.stack([theta, theta, 0.5 * theta])
    batch = problem.node_loss(Theta, W)
    single = [problem.node_loss(Theta[i], W[i]) for i in range(3)]
    np.testing.assert_allclose(batch, single, rtol=1e-13)


@pytest.mark.parametrize("edge_pos", [0, 10, -2, -1])
def test_edge_weight_zero_is_exact_deletion(edge_pos):
    G = _graph_with_extras()
    model = NodeEmbeddingInfluence(random_state=0).fit(G)
    n, d, m = len(model.nodes_), model.n_components, len(model.edges_)
    theta = np.random.RandomState(2).standard_normal(2 * n * d)
    w = np.ones(m)
    w[edge_pos] = 0.0
    H = G.copy()
    H.remove_edge(*model.edges_[edge_pos])  # -1: ("hub", "leaf") isolates "leaf"
    expected = reference_objective(H, theta, model.window, model.alpha, d)
    got = generic_problem(model).edge_loss(theta, w)
    assert abs(got - expected) <= 1e-12 * abs(expected)
    full = reference_objective(G, theta, model.window, model.alpha, d)
    assert abs(generic_problem(model).edge_loss(theta, np.ones(m)) - full) <= 1e-12 * abs(full)


def test_gradient_and_hessian_against_finite_differences():
    G = nx.florentine_families_graph()
    model = NodeEmbeddingInfluence(random_state=0).fit(G)
    problem = generic_problem(model)
    n, d, m = len(model.nodes_), model.n_components, len(model.edges_)
    rng = np.random.RandomState(3)
    theta = 0.5 * rng.standard_normal(2 * n * d)
    w = rng.uniform(0.2, 1.0, m)  # non-trivial weights
    f = lambda th: float(problem.edge_loss(th, w))  # noqa: E731
    g = grad(problem.edge_loss)(theta, w)
    h = 1e-6
    E = np.eye(theta.size)
    fd = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in E])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)
    # the one-pass Hessian used by the fit vs differences of the gradient
    Hs = _hessian(problem.edge_loss, theta, w)
    gfun = lambda th: grad(problem.edge_loss)(th, w)  # noqa: E731
    fd_h = np.array([(gfun(theta + h * e) - gfun(theta - h * e)) / (2 * h) for e in E])
    np.testing.assert_allclose(Hs, 0.5 * (fd_h + fd_h.T), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# the sparse, matrix-free pieces against the generic dense autograd path
# --------------------------------------------------------------------------
def _adversarial_graph():
    """Karate club with a self-loop, a pendant chain, an isolated node and odd labels."""
    G = _graph_with_extras()
    G.add_edge("leaf", "leaf2")
    G.add_node("alone")
    return G


@pytest.fixture(scope="module")
def adversarial():
    G = _adversarial_graph()
    model = NodeEmbeddingInfluence(window=3, alpha=0.7, random_state=0).fit(G)
    pos = {v: i for i, v in enumerate(model.nodes_)}
    # nodes: hub (leaves a node isolated), self-loop node, pendant, end of chain, isolated
    nodes = [pos[v] for v in ("hub", 5, "leaf", "leaf2", "alone", ("t", 33))]
    edges = [model.edges_.index(e) for e in model.edges_
             if e[0] == e[1] or "leaf" in e or "leaf2" in e][:4] + [0, 10, 40]
    return G, model, nodes, edges


@pytest.mark.parametrize("window", [1, 2, 4])
def test_sparse_cooccurrence_equals_dense(adversarial, window):
    G, model, _, _ = adversarial
    n = len(model.nodes_)
    A = sparse_adjacency(model.edge_index_, n)
    np.testing.assert_array_equal(A.toarray(), weighted_adjacency(model.edge_index_, n))
    C = sparse_cooccurrence(A, window)
    np.testing.assert_allclose(C.toarray(), reference_cooccurrence(G, window),
                               rtol=1e-13, atol=1e-13)
    dense = cooccurrence(weighted_adjacency(model.edge_index_, n), window)
    np.testing.assert_allclose(C.toarray(), dense, rtol=1e-13, atol=1e-13)


def _leave_out_dense(model, unit, pos, eps):
    """Dense generic C and node weights with one unit's weight at 1 - eps."""
    n, m = len(model.nodes_), len(model.edges_)
    w = np.ones(n if unit == "node" else m)
    w[pos] = 1.0 - eps
    if unit == "node":
        return cooccurrence(weighted_adjacency(model.edge_index_, n, node_weights=w),
                            model.window), w
    return cooccurrence(weighted_adjacency(model.edge_index_, n, edge_weights=w),
                        model.window), np.ones(n)


@pytest.mark.parametrize("eps", [1.0, 0.3])
def test_leave_out_cooccurrence_updates(adversarial, eps):
    """removal_weights + sparse C, and the local (C' - C) X of LeaveOutChanges."""
    G, model, nodes, edges = adversarial
    n = len(model.nodes_)
    A = sparse_adjacency(model.edge_index_, n)
    C = sparse_cooccurrence(A, model.window).toarray()
    theta = model._params()
    V = np.random.RandomState(0).standard_normal((theta.size, 3))
    changes = LeaveOutChanges(A, model.window, model._objective(), theta, V)
    X = np.concatenate([model.context_embedding_, model.embedding_], axis=1)
    for unit, positions in (("node", nodes), ("edge", edges)):
        index = positions if unit == "node" else [tuple(model.edge_index_[k]) for k in positions]
        for pos, idx in zip(positions, index):
            dense, _ = _leave_out_dense(model, unit, pos, eps)
            sparse = sparse_cooccurrence(removal_weights(A, unit, idx, eps), model.window)
            np.testing.assert_allclose(sparse.toarray(), dense, rtol=1e-12, atol=1e-12)
        # (C' - C) X dotted with V, all units of a chunk at once
        got = changes._data_part(unit, index, eps)
        for k, pos in enumerate(positions):
            dense, _ = _leave_out_dense(model, unit, pos, eps)
            dCX = (dense - C) @ X  # (n, 2d): pairs with [a, b]
            expected = np.einsum("xd,xdj->j", dCX, changes.Vnode)
            np.testing.assert_allclose(got[k], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("unit", ["node", "edge"])
def test_objective_gradient_hvp_equal_autograd(adversarial, unit):
    G, model, nodes, edges = adversarial
    n, d = len(model.nodes_), model.n_components
    rng = np.random.RandomState(4)
    theta = 0.7 * rng.standard_normal(2 * n * d)
    anchor = model._params()
    generic = generic_problem(model, anchor=anchor)
    A = sparse_adjacency(model.edge_index_, n)
    for pos in (nodes[:3] if unit == "node" else edges[:3]):
        for eps in (1.0, 0.4):
            idx = pos if unit == "node" else tuple(model.edge_index_[pos])
            C = sparse_cooccurrence(removal_weights(A, unit, idx, eps), model.window)
            _, w = _leave_out_dense(model, unit, pos, eps)
            fast = SkipGram(C, w if unit == "node" else None, d, model.alpha, anchor=anchor)
            loss = generic.node_loss if unit == "node" else generic.edge_loss
            weights = np.ones(n if unit == "node" else len(model.edges_))
            weights[pos] = 1.0 - eps
            value, gradient = fast.value_and_grad(theta)
            assert abs(value - loss(theta, weights)) <= 1e-12 * abs(value)
            np.testing.assert_allclose(gradient, grad(loss)(theta, weights),
                                       rtol=1e-11, atol=1e-10)
            H = _hessian(loss, theta, weights)
            np.testing.assert_allclose(fast.hessian(theta), H, rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(fast.hessian_diagonal(theta), np.diag(H),
                                       rtol=1e-10, atol=1e-9)
            v = rng.standard_normal(theta.size)
            np.testing.assert_allclose(fast.hvp(theta, v), H @ v, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("unit", ["node", "edge"])
@pytest.mark.parametrize("method,line_search", [("vif", False), ("if", False),
                                                ("newton", False), ("newton", True)])
def test_target_first_influence_equals_generic_engine(adversarial, unit, method, line_search):
    """Both solvers of the estimator vs the engine on the dense autograd objective."""
    G, model, nodes, edges = adversarial
    pairs = random_pairs(model.nodes_, 6, seed=2) + [("hub", "leaf"), (5, 5)]
    index = model._pair_index(pairs)
    n, d = len(model.nodes_), model.n_components
    theta = model._params()
    generic = generic_problem(model, anchor=theta)
    loss, n_units = ((generic.node_loss, n) if unit == "node"
                     else (generic.edge_loss, len(model.edges_)))
    positions = nodes if unit == "node" else edges
    units = check_units([np.array([k]) for k in positions], n_units)
    options = dict(method=method, solver="direct", damping=0.05, batched=True,
                   saddle_free=True)
    expected = influence(loss, theta, n_units, units,
                         target=lambda th: pair_scores(th, index, n, d), **options)
    if line_search:
        # the engine's saddle-free step goes to the minimum of the leave-out
        # objective along it (0 <= t <= 2), located here to 1e-10
        steps = influence(loss, theta, n_units, units, **options)
        for row, (k, step) in enumerate(zip(positions, steps)):
            weights = np.ones(n_units)
            weights[k] = 0.0
            t = scipy.optimize.minimize_scalar(
                lambda t: loss(theta + t * step, weights), bounds=(0.0, 2.0),
                method="bounded", options={"xatol": 1e-10}).x
            assert 0.05 < t < 1.95, t  # inside the bounds: the search itself is tested
            expected[row] *= t
    units = [model.nodes_[k] for k in positions] if unit == "node" else \
        [model.edges_[k] for k in positions]
    if unit == "node":
        rows = np.asarray(positions)[:, None]
        expected[(rows == index[:, 0]) | (rows == index[:, 1])] = np.nan
    for solver in ("direct", "cg"):
        got = model.influence_(pairs, unit=unit, method=method, solver=solver, damping=0.05,
                               units=units, line_search=line_search)
        # (the estimator's line search stops at |t - t*| <= 1e-5)
        tol = 1e-4 if line_search else 1e-6
        np.testing.assert_allclose(got, expected, rtol=tol, atol=1e-2 * tol * np.nanmax(
            np.abs(expected)), err_msg=solver)


def test_fit_reaches_a_tight_optimum_of_the_reference(karate):
    G, model, _, _ = karate
    theta = model._params()
    g = grad(reference_objective, 1)(G, theta, model.window, model.alpha, model.n_components)
    assert np.linalg.norm(g) < 1e-8
    assert model.embedding_.shape == (34, 2)
    assert model.nodes_ == list(G.nodes) and model.edges_ == list(G.edges)


# --------------------------------------------------------------------------
# influence against exact refits
# --------------------------------------------------------------------------
def test_loo_refits_match_an_independent_refit(karate):
    """The "loo" ground truth equals refits of the reference objective of G - e / G - u."""
    G, model, pairs, _ = karate
    n, d = len(model.nodes_), model.n_components
    theta = model._params()
    sub_pairs = [p for p in pairs if 5 not in p]
    edge_pos = model.edges_.index((5, 16))
    node_pos = model.nodes_.index(5)
    got_edge = model.influence_(sub_pairs, unit="edge", method="loo")[edge_pos]
    got_node = model.influence_(sub_pairs, unit="node", method="loo")[node_pos]

    def refit(H, start):
        f = lambda th: reference_objective(H, th, model.window, model.alpha, d)  # noqa: E731
        res = scipy.optimize.minimize(f, start, jac=grad(f), hess=hessian(f),
                                      method="trust-exact", options={"gtol": 1e-10})
        return res.x

    def scores(th, H):
        k = H.number_of_nodes()
        phi, psi = th[:k * d].reshape(k, d), th[k * d:].reshape(k, d)
        pos = {v: i for i, v in enumerate(H.nodes)}
        return np.array([phi[pos[u]] @ psi[pos[v]] for u, v in sub_pairs])

    base = scores(theta, G)
    H = G.copy()
    H.remove_edge(5, 16)
    np.testing.assert_allclose(scores(refit(H, theta), H) - base, got_edge, atol=1e-6)
    H = G.copy()
    H.remove_node(5)
    np.testing.assert_allclose(scores(refit(H, drop_node(theta, n, d, node_pos)), H) - base,
                               got_node, atol=1e-6)


def agrees(estimate, exact, **bounds):
    """``assert_agrees`` on the entries that exist (pairs with a removed node are NaN)."""
    keep = np.isfinite(estimate) & np.isfinite(exact)
    assert keep.sum() > 0.9 * np.isfinite(exact).sum()
    return assert_agrees(estimate[keep], exact[keep], **bounds)


# bounds around the values measured by benchmarks/bench_embedding.py (r, slope, max error)
KARATE_BOUNDS = {
    ("edge", "vif"): dict(min_r=0.95, slope=(0.70, 0.85), max_error=0.65),      # .960 .766 .571
    ("edge", "newton"): dict(min_r=0.975, slope=(0.85, 1.0), max_error=0.40),   # .984 .930 .306
    ("node", "vif"): dict(min_r=0.94, slope=(0.75, 0.90), max_error=0.40),      # .949 .819 .301
    ("node", "newton"): dict(min_r=0.90, slope=(0.75, 0.95), max_error=0.60),   # .930 .828 .503
}


def test_karate_edge_influence_tracks_refits(karate):
    exact = cached(karate, "edge", "loo")
    assert exact.shape == (78, N_PAIRS)
    for method in ("vif", "newton"):
        agrees(cached(karate, "edge", method), exact, label=method,
               **KARATE_BOUNDS["edge", method])


def test_karate_node_influence_tracks_refits(karate):
    exact = cached(karate, "node", "loo")
    assert exact.shape == (34, N_PAIRS)
    vif = cached(karate, "node", "vif")
    newton = cached(karate, "node", "newton")
    agrees(vif, exact, label="vif", **KARATE_BOUNDS["node", "vif"])
    agrees(newton, exact, label="newton", **KARATE_BOUNDS["node", "newton"])
    _, model, pairs, _ = karate
    # pairs containing the removed node no longer exist: NaN, in every method
    for u, v in pairs:
        for method_result in (exact, vif, newton):
            assert np.isnan(method_result[model.nodes_.index(u), pairs.index((u, v))])
    assert np.isfinite(vif).sum() == 34 * N_PAIRS - 2 * N_PAIRS


@pytest.mark.parametrize("unit", ["edge", "node"])
def test_refine_replaces_the_largest_changes_by_exact_refits(karate, unit):
    """refine=k: the k units of largest RMS estimated change equal their exact refits."""
    _, model, pairs, _ = karate
    exact = cached(karate, unit, "loo")
    fast = cached(karate, unit, "vif")
    k = 5
    refined, is_exact = model.influence_(pairs, unit=unit, refine=k, return_exact=True)
    size = np.sqrt(np.mean(np.nan_to_num(fast) ** 2, axis=1))
    top = np.argsort(-size, kind="stable")[:k]
    np.testing.assert_array_equal(np.flatnonzero(is_exact), np.sort(top))
    np.testing.assert_allclose(refined[is_exact], exact[is_exact], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(refined[~is_exact], fast[~is_exact])
    assert np.array_equal(np.isnan(refined), np.isnan(fast))  # removed-node pairs stay NaN
    # the refits are the rows of the largest changes, and fix what the estimate got wrong
    assert np.nanmax(np.abs(refined[is_exact] - fast[is_exact])) > 1e-3
    frame, marker = model.influence_(pairs, unit=unit, refine=k, as_frame=True,
                                     return_exact=True)
    assert frame.attrs["exact"].equals(marker) and marker.sum() == k
    np.testing.assert_array_equal(frame.to_numpy(), refined)
    labels = model.nodes_ if unit == "node" else model.edges_
    assert list(marker.index[marker]) == [labels[t] for t in np.sort(top)]
    loo, loo_exact = model.influence_(pairs, unit=unit, method="loo",
                                      units=[labels[t] for t in top[:2]], refine=1,
                                      return_exact=True)
    assert loo_exact.all()
    np.testing.assert_allclose(loo, exact[top[:2]], rtol=0, atol=1e-9)


def test_florentine_is_measured(florentine):
    # a 15-node graph where one removal rewires much of it: loose bounds around
    # the measured r 0.62-0.67, slopes 0.40-0.51, max errors 0.69-0.85
    for unit in ("edge", "node"):
        exact = cached(florentine, unit, "loo")
        for method in ("vif", "newton"):
            agrees(cached(florentine, unit, method), exact, label=f"{unit} {method}",
                   min_r=0.6, slope=(0.35, 0.6), max_error=0.9)


def test_if_method_runs_and_correlates(florentine):
    G, model, pairs, _ = florentine
    for unit in ("edge", "node"):
        result = model.influence_(pairs, unit=unit, method="if")
        assert pearson(result, cached(florentine, unit, "loo")) > 0.5


def test_pair_score_influence_is_rotation_invariant(florentine):
    G, model, pairs, _ = florentine
    rotated = copy.deepcopy(model)
    R = rotation(model.n_components, 7)
    rotated.embedding_ = model.embedding_ @ R
    rotated.context_embedding_ = model.context_embedding_ @ R
    np.testing.assert_allclose(rotated.score_pairs(pairs), model.score_pairs(pairs),
                               atol=1e-12)
    for unit in ("edge", "node"):
        for method in ("vif", "newton", "if"):
            np.testing.assert_allclose(rotated.influence_(pairs, unit=unit, method=method),
                                       model.influence_(pairs, unit=unit, method=method),
                                       rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(rotated.influence_(pairs, unit="edge", method="loo"),
                               cached(florentine, "edge", "loo"), atol=1e-7)


def test_newton_is_safe_at_any_damping(florentine):
    # tiny damping would blow a plain Newton step up on an indefinite Hessian
    G, model, pairs, _ = florentine
    for damping in (1e-8, 1e-3, 10.0):
        result = model.influence_(pairs, unit="node", method="newton", damping=damping)
        assert np.all(np.isfinite(result[~np.isnan(cached(florentine, "node", "loo"))]))
        assert np.nanmax(np.abs(result)) < 1e3
    assert not np.allclose(model.influence_(pairs, unit="edge", damping=10.0),
                           cached(florentine, "edge", "vif"))  # damping takes effect


# --------------------------------------------------------------------------
# reproducibility, labels, sklearn conventions
# --------------------------------------------------------------------------
def test_same_seed_same_embedding():
    G = nx.florentine_families_graph()
    a = NodeEmbeddingInfluence(random_state=3).fit(G)
    b = NodeEmbeddingInfluence(random_state=3).fit(G)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    np.testing.assert_array_equal(a.context_embedding_, b.context_embedding_)
    pairs = random_pairs(a.nodes_, 5)
    np.testing.assert_array_equal(a.influence_(pairs, unit="edge"),
                                  b.influence_(pairs, unit="edge"))
    rs = np.random.RandomState(5)
    c = NodeEmbeddingInfluence(random_state=rs).fit(G)
    assert c.embedding_.shape == (15, 2)


def test_any_hashable_labels_and_order(florentine):
    G, model, pairs, _ = florentine
    mapping = {v: (i, "family", v[:3]) for i, v in enumerate(G.nodes)}
    H = nx.relabel_nodes(G, mapping)  # tuple labels, same node and edge order
    other = NodeEmbeddingInfluence(random_state=0).fit(H)
    assert other.nodes_ == list(H.nodes)
    np.testing.assert_array_equal(other.embedding_, model.embedding_)
    new_pairs = [(mapping[u], mapping[v]) for u, v in pairs]
    np.testing.assert_allclose(other.influence_(new_pairs, unit="edge"),
                               cached(florentine, "edge", "vif"), rtol=1e-10, atol=1e-12)
    frame = other.influence_(new_pairs, unit="node", as_frame=True)
    assert list(frame.index) == list(H.nodes)
    assert list(frame.columns) == new_pairs
    frame = model.influence_(pairs, unit="edge", as_frame=True)
    assert list(frame.index) == list(G.edges)


def test_isolated_node_in_the_graph():
    G = nx.path_graph(5)
    G.add_node("alone")
    model = NodeEmbeddingInfluence(random_state=0).fit(G)
    assert np.all(model.cooccurrence_.toarray()[-1] == 0)
    np.testing.assert_allclose(model.embedding_[-1], 0.0, atol=1e-8)  # only the penalty
    result = model.influence_([(0, 4), ("alone", 2)], unit="node")
    assert result.shape == (6, 2)
    assert np.isnan(result[5, 1]) and np.isfinite(result[5, 0])


def test_clone_and_pickle(florentine):
    G, model, pairs, _ = florentine
    params = model.get_params()
    assert params == {"n_components": 2, "window": 3, "alpha": 1.0, "damping": 0.1,
                      "random_state": 0}
    fresh = clone(model)
    assert fresh.get_params() == params and not hasattr(fresh, "embedding_")
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.embedding_, model.embedding_)
    np.testing.assert_array_equal(restored.influence_(pairs, unit="edge"),
                                  cached(florentine, "edge", "vif"))
    refit = clone(model).fit(G)
    np.testing.assert_array_equal(refit.embedding_, model.embedding_)


def test_bad_input(florentine):
    G, model, pairs, _ = florentine
    with pytest.raises(TypeError, match="networkx graph"):
        NodeEmbeddingInfluence().fit(np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least 2 nodes"):
        NodeEmbeddingInfluence().fit(nx.Graph())
    with pytest.raises(ValueError, match="at least 2 nodes"):
        NodeEmbeddingInfluence().fit(nx.empty_graph(4))
    with pytest.raises(ValueError, match="undirected"):
        NodeEmbeddingInfluence().fit(nx.DiGraph([(0, 1)]))
    with pytest.raises(ValueError, match="Multigraph"):
        NodeEmbeddingInfluence().fit(nx.MultiGraph([(0, 1)]))
    for bad in ({"n_components": 0}, {"window": 0}, {"alpha": 0.0}, {"damping": -1.0},
                {"n_components": 1.5}):
        with pytest.raises(ValueError):
            NodeEmbeddingInfluence(**bad).fit(G)
    with pytest.raises(NotFittedError):
        NodeEmbeddingInfluence().influence_(pairs)
    with pytest.raises(ValueError, match="not in the fitted graph"):
        model.influence_([("Medici", "Nobody")])
    with pytest.raises(ValueError, match="unit"):
        model.influence_(pairs, unit="row")
    with pytest.raises(ValueError, match="method"):
        model.influence_(pairs, method="exact")
    with pytest.raises(ValueError, match="target"):
        model.influence_(pairs, target="embedding")
    with pytest.raises(ValueError, match="damping"):
        model.influence_(pairs, damping=0.0)
    with pytest.raises(TypeError, match="pair"):
        model.influence_(["Medici"])
    with pytest.raises(TypeError, match="pairs"):
        model.influence_(3)
    with pytest.raises(ValueError, match="empty"):
        model.influence_([])
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="refine"):
            model.influence_(pairs, refine=bad)


def test_docstring_example_runs():
    result = doctest.testmod(estimator_module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
