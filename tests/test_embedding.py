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

from skvif.embedding import NodeEmbeddingInfluence
from skvif.embedding import _estimator as estimator_module
from skvif.embedding._estimator import _hessian

N_PAIRS = 20


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
        cache[unit, method] = model.influence_(pairs, unit=unit, method=method)
    return cache[unit, method]


# --------------------------------------------------------------------------
# the objective: exact deletion, co-occurrences, derivatives
# --------------------------------------------------------------------------
def test_cooccurrence_by_hand():
    # path a-b-c, window 2: C = A + A D^-1 A
    model = NodeEmbeddingInfluence(window=2, random_state=0).fit(nx.path_graph("abc"))
    expected = np.array([[0.5, 1.0, 0.5], [1.0, 2.0, 1.0], [0.5, 1.0, 0.5]])
    np.testing.assert_allclose(model.cooccurrence_, expected, rtol=0, atol=1e-15)


def test_cooccurrence_counts_walks():
    G = nx.karate_club_graph()
    model = NodeEmbeddingInfluence(window=4).fit(G)
    C = model.cooccurrence_
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
    problem = model._problem()
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
    got = model._problem().edge_loss(theta, w)
    assert abs(got - expected) <= 1e-12 * abs(expected)
    full = reference_objective(G, theta, model.window, model.alpha, d)
    assert abs(model._problem().edge_loss(theta, np.ones(m)) - full) <= 1e-12 * abs(full)


def test_gradient_and_hessian_against_finite_differences():
    G = nx.florentine_families_graph()
    model = NodeEmbeddingInfluence(random_state=0).fit(G)
    problem = model._problem()
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


def test_karate_edge_influence_tracks_refits(karate):
    exact = cached(karate, "edge", "loo")
    assert exact.shape == (78, N_PAIRS)
    vif = cached(karate, "edge", "vif")
    newton = cached(karate, "edge", "newton")
    assert pearson(vif, exact) >= 0.85
    assert pearson(newton, exact) >= 0.85
    # same sign convention and scale as the refits (removal minus full), not only correlated
    slope = (vif.ravel() @ exact.ravel()) / (vif.ravel() @ vif.ravel())
    assert 0.67 < slope < 1.5


def test_karate_node_influence_tracks_refits(karate):
    exact = cached(karate, "node", "loo")
    assert exact.shape == (34, N_PAIRS)
    vif = cached(karate, "node", "vif")
    newton = cached(karate, "node", "newton")
    assert pearson(vif, exact) >= 0.6
    assert pearson(newton, exact) >= 0.6
    _, model, pairs, _ = karate
    # pairs containing the removed node no longer exist: NaN, in every method
    for u, v in pairs:
        for method_result in (exact, vif, newton):
            assert np.isnan(method_result[model.nodes_.index(u), pairs.index((u, v))])
    assert np.isfinite(vif).sum() == 34 * N_PAIRS - 2 * N_PAIRS


def test_florentine_is_measured(florentine):
    # a 15-node graph: reported, asserted loosely only
    for unit in ("edge", "node"):
        exact = cached(florentine, unit, "loo")
        for method in ("vif", "newton"):
            assert pearson(cached(florentine, unit, method), exact) > 0.5, (unit, method)


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
    assert np.all(model.cooccurrence_[-1] == 0)
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


def test_docstring_example_runs():
    result = doctest.testmod(estimator_module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
