"""``NodeEmbeddingInfluence``: a skip-gram node embedding that explains itself."""

import warnings
from numbers import Integral, Real

import autograd.numpy as anp
import networkx as nx
import numpy as np
import pandas as pd
import scipy.optimize
from autograd import grad
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .._engine import (METHODS, SOLVERS, check_choice, check_nonnegative, check_units,
                       influence, minimize)
from ._objective import cooccurrence, pair_scores, skipgram_objective, weighted_adjacency

__all__ = ["NodeEmbeddingInfluence"]

TARGETS = ("score",)
UNITS = ("node", "edge")

# The fit stops once the gradient norm is below this (scipy's trust-exact).
_GTOL = 1e-9
_MAX_ITER = 1000
_MAX_POLISH = 50
# Scale of the random start (standard normal times this).
_INIT_SCALE = 0.1
# Weight of the rotation gauge (see ``_Problem``); results do not depend on it.
_GAUGE = 1.0


def _check_graph(G):
    if not isinstance(G, nx.Graph):
        raise TypeError(f"G must be a networkx graph, got {type(G).__name__}.")
    if G.is_directed():
        raise ValueError("G must be undirected (a random walk on it is reversible); "
                         "got a directed graph. Use G.to_undirected().")
    if G.is_multigraph():
        raise ValueError("Multigraphs are not supported: collapse parallel edges first, "
                         "e.g. nx.Graph(G).")
    if G.number_of_nodes() < 2 or G.number_of_edges() < 1:
        raise ValueError(f"G must have at least 2 nodes and 1 edge, got "
                         f"{G.number_of_nodes()} nodes and {G.number_of_edges()} edges.")


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


class NodeEmbeddingInfluence(BaseEstimator):
    r"""Skip-gram (DeepWalk-style) node embedding with node and edge influence.

    Embeds the nodes of a graph by a skip-gram model with full softmax over
    the nodes, fitted to the *expected* co-occurrence counts of random walks
    within ``window`` steps (deterministic: no sampled walks, so fits and
    refits are reproducible), then estimates how each node or edge shapes the
    pair scores ``phi_u . psi_v`` (:meth:`influence_`).

    Parameters
    ----------
    n_components : int, default=2
        Dimension ``d`` of the node vectors ``phi`` and context vectors ``psi``.
    window : int, default=3
        Co-occurrences are counted within this many random-walk steps.
    alpha : float, default=1.0
        L2 penalty ``alpha/2 (||phi||^2 + ||psi||^2)``; must be > 0 (without it
        the objective is invariant to ``phi -> phi A, psi -> psi A^{-T}`` and
        has no minimizer in general). The co-occurrences of a graph with
        ``m`` edges add up to ``2 m window``, so ``alpha`` is small against the
        data unless the graph is tiny.
    damping : float, default=0.1
        Default damping of :meth:`influence_`: added to the absolute
        eigenvalues of the leave-out Hessian in the (saddle-free) Newton step
        and to the Hessian of the full objective in ``"vif"``/``"if"``; must be
        > 0. See Notes for why.
    random_state : int, RandomState instance or None, default=None
        Seeds the random start ``0.1 * N(0, 1)`` of the parameters. The same
        seed gives the same embedding.

    Attributes
    ----------
    embedding_ : ndarray of shape (n_nodes, n_components)
        Node vectors ``phi``, rows in ``nodes_`` (``G.nodes``) order.
    context_embedding_ : ndarray of shape (n_nodes, n_components)
        Context vectors ``psi``.
    nodes_ : list
        Node labels in ``G.nodes`` order (rows of ``influence_(unit="node")``).
    edges_ : list of tuple
        Edges in ``G.edges`` order (rows of ``influence_(unit="edge")``).
    edge_index_ : ndarray of shape (n_edges, 2)
        The edges as positions in ``nodes_``.
    cooccurrence_ : ndarray of shape (n_nodes, n_nodes)
        The expected co-occurrence counts ``C``.
    objective_ : float
        The objective at the fitted parameters.
    n_iter_ : int
        Iterations of the fit (trust region, plus Newton polishing if any).

    See Also
    --------
    skvif.vif : The engine, for any loss written with autograd.

    Notes
    -----
    **Objective.** With ``A`` the 0/1 adjacency matrix of the undirected
    graph (edge attributes such as ``weight`` are ignored; a self-loop puts 1
    on the diagonal), ``D = diag(A 1)`` the degrees, ``P = D^{-1} A`` the
    random-walk transition matrix and ``T = window``,

    .. math::

        C = \sum_{t=1}^{T} D P^{t},

    i.e. ``C_uv`` is the expected number of visits to ``v`` within ``T``
    steps of walks started ``deg(u)`` times from every node ``u`` (the
    stationary start ``pi = D 1 / vol(G)``, scaled by ``vol(G) = 2 m``). ``C``
    is symmetric; isolated nodes start no walks (zero rows). The fitted
    ``phi, psi`` minimize

    .. math::

        L(\phi, \psi) = \sum_{u, v} C_{uv}\Big[-\log
            \frac{e^{\phi_u \cdot \psi_v}}{\sum_x e^{\phi_u \cdot \psi_x}}\Big]
            + \frac{\alpha}{2}\big(\|\phi\|_F^2 + \|\psi\|_F^2\big),

    the softmax over all nodes ``x``. The fit is scipy's ``trust-exact``
    (exact Hessians by autograd) from the random start, polished if needed by
    the engine's saddle-free Newton, to a
    gradient norm below ``1e-9``: influence is only as good as the optimum.

    **Removal.** Removing node ``u`` deletes it from the graph: ``C`` is
    recomputed from the adjacency without ``u`` (walks change everywhere, a
    neighbour may become isolated), ``u`` leaves every softmax and its own
    vectors leave the penalty. Removing an edge recomputes ``C`` without it.
    Both are written as weights inside the objective -- ``A_ij`` scaled by
    the edge's weight and both end nodes' weights, the softmax terms and the
    penalty by the node weights, ``C`` recomputed from the weighted ``A`` --
    so that a weight of 0 gives exactly the objective of the graph with the
    node or edge deleted (tested against graphs deleted with networkx).

    **Non-convexity, damping and rotations.** ``L`` is invariant to rotating
    all ``phi`` and ``psi`` together, so its Hessian is singular along
    rotations; pair scores ``phi_u . psi_v`` are rotation invariant, and so is
    every result of :meth:`influence_` (rotating ``embedding_`` and
    ``context_embedding_`` together leaves it unchanged). The engine is given
    ``L`` plus a rotation gauge anchored at the fit (zero, with zero gradient,
    there and at every Procrustes-aligned refit), which gives the rotations
    curvature without changing any score, so ``"vif"`` needs no damping for
    them and exact refits converge quadratically. What remains is the
    non-convexity of the *leave-out* objectives: at the full-data optimum
    their Hessian is often indefinite (karate club: smallest eigenvalue
    about -0.3 after removing an edge, -1 after removing a node; the vectors
    of a removed node are flat). A plain Newton step would divide by these
    near-zero or negative eigenvalues, so ``method="newton"`` takes a
    *saddle-free* step ``-V (|Lambda| + damping)^{-1} V^T g`` from the
    eigendecomposition of the leave-out Hessian. The default ``damping=0.1``
    (a few per cent of the typical curvature) bounds that step and, for
    ``"vif"``, mildly shrinks the estimate, which tends to overshoot the exact
    refit; see the accuracy figures below.

    **Accuracy** (``benchmarks/bench_embedding.py``: 20 random node pairs,
    Pearson correlation of all pair-score changes with warm-started exact
    refits, defaults; pairs containing a removed node excluded). Zachary's
    karate club (34 nodes, 78 edges): edges 0.96 (vif), 0.95 (if), 0.98
    (newton); nodes 0.95 (vif), 0.93 (if), 0.81 (newton). Florentine families
    (15 nodes, 20 edges): edges 0.66, 0.64, 0.62; nodes 0.62, 0.63, 0.65. On
    the small, sparse Florentine graph many edges are bridges and many nodes
    have one or two neighbours, so one removal rewires a large share of the
    walks: a large perturbation, which a one-step linearization at the
    full-data optimum only ranks roughly. Use ``method="loo"`` (13-50 times
    slower on these graphs) when exact numbers matter.

    Examples
    --------
    >>> import networkx as nx
    >>> from skvif.embedding import NodeEmbeddingInfluence
    >>> G = nx.path_graph(["a", "b", "c", "d"])
    >>> model = NodeEmbeddingInfluence(random_state=0).fit(G)
    >>> model.embedding_.shape
    (4, 2)
    >>> model.influence_([("a", "d")], unit="edge").shape
    (3, 1)
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "window": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "damping": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, n_components=2, window=3, alpha=1.0, damping=0.1,
                 random_state=None):
        self.n_components = n_components
        self.window = window
        self.alpha = alpha
        self.damping = damping
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags

    def _problem(self, anchor=None):
        n_components, window, alpha = self._fitted_objective
        return _Problem(self.edge_index_, len(self.nodes_), n_components, window, alpha,
                        anchor)

    def _params(self):
        return np.concatenate([np.ravel(self.embedding_), np.ravel(self.context_embedding_)])

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, G, y=None):
        """Fit the embedding of the graph ``G``.

        Parameters
        ----------
        G : networkx.Graph
            Undirected graph, at least 2 nodes and 1 edge; node labels of any
            hashable type. Edge attributes are ignored.
        y : None
            Ignored.

        Returns
        -------
        self : NodeEmbeddingInfluence
        """
        _check_graph(G)
        self.nodes_ = list(G.nodes)
        position = {node: i for i, node in enumerate(self.nodes_)}
        self.edges_ = list(G.edges())
        self.edge_index_ = np.array([[position[a], position[b]] for a, b in self.edges_],
                                    dtype=np.intp).reshape(-1, 2)
        # the objective is fixed at fit: set_params afterwards changes the next fit only
        self._fitted_objective = (int(self.n_components), int(self.window), float(self.alpha))
        n, d = len(self.nodes_), int(self.n_components)
        problem = self._problem()
        ones = np.ones(len(self.edges_))
        self.cooccurrence_ = cooccurrence(
            weighted_adjacency(self.edge_index_, n), int(self.window))

        rng = check_random_state(self.random_state)
        theta0 = _INIT_SCALE * rng.standard_normal(2 * n * d)
        gradient = grad(problem.edge_loss)
        result = scipy.optimize.minimize(
            lambda th: float(problem.edge_loss(th, ones)), theta0,
            jac=lambda th: gradient(th, ones),
            hess=lambda th: _hessian(problem.edge_loss, th, ones),
            method="trust-exact", options={"gtol": _GTOL, "maxiter": _MAX_ITER},
        )
        theta = result.x
        g_norm = np.linalg.norm(gradient(theta, ones))
        n_iter = int(result.nit)
        if g_norm > _GTOL:
            # trust-exact can stop early on rounding; polish by the engine's
            # saddle-free Newton, with the rotation gauge so it converges
            polish = self._problem(anchor=theta)
            P, it, _ = minimize(polish.edge_loss, theta[None], ones[None], tol=1e-12,
                                max_iter=_MAX_POLISH)
            theta, n_iter = P[0], n_iter + int(it[0])
            g_norm = np.linalg.norm(gradient(theta, ones))
        if not np.isfinite(g_norm) or g_norm > 1e3 * _GTOL:
            warnings.warn(f"The fit did not converge in {n_iter} iterations (gradient "
                          f"norm {g_norm:.3g}); influence estimates need a tight optimum.",
                          ConvergenceWarning, stacklevel=2)
        self.embedding_ = theta[:n * d].reshape(n, d).copy()
        self.context_embedding_ = theta[n * d:].reshape(n, d).copy()
        self.objective_ = float(problem.edge_loss(theta, ones))
        self.n_iter_ = n_iter
        return self

    def _pair_index(self, pairs):
        position = {node: i for i, node in enumerate(self.nodes_)}
        if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
            raise TypeError("pairs must be a sequence of (u, v) node-label pairs, "
                            f"got {type(pairs).__name__}.")
        index = []
        for k, pair in enumerate(pairs):
            try:
                u, v = pair
            except (TypeError, ValueError):
                raise TypeError(f"pairs[{k}] must be a pair (u, v) of node labels, "
                                f"got {pair!r}.") from None
            for node in (u, v):
                try:
                    known = node in position
                except TypeError:  # unhashable
                    known = False
                if not known:
                    raise ValueError(f"pairs[{k}] = {pair!r}: node {node!r} is not in the "
                                     "fitted graph.")
            index.append((position[u], position[v]))
        if not index:
            raise ValueError("pairs is empty: give at least one (u, v) pair.")
        return np.array(index, dtype=np.intp)

    def score_pairs(self, pairs):
        """Pair scores ``phi_u . psi_v`` of the fitted embedding.

        Parameters
        ----------
        pairs : sequence of (u, v)
            Node labels of the fitted graph.

        Returns
        -------
        scores : ndarray of shape (n_pairs,)
        """
        check_is_fitted(self)
        index = self._pair_index(pairs)
        return np.sum(self.embedding_[index[:, 0]] * self.context_embedding_[index[:, 1]],
                      axis=1)

    def influence_(self, pairs, *, target="score", unit="node", method="vif", solver="auto",
                   damping=None, n_jobs=None, as_frame=False, verbose=0):
        r"""Estimated change of pair scores when each node or edge is removed.

        Parameters
        ----------
        pairs : sequence of (u, v)
            Pairs of node labels of the fitted graph.
        target : {"score"}, default="score"
            The pair score ``phi_u . psi_v`` of each pair.
        unit : {"node", "edge"}, default="node"
            Remove one node (with its edges; co-occurrences recomputed, the
            node leaves the softmax) or one edge at a time. Rows of the
            result follow ``nodes_`` (``G.nodes``) or ``edges_`` (``G.edges``).
        method : {"vif", "if", "newton", "loo"}, default="vif"
            ``"vif"``: the versatile influence function (exact deletion inside
            the gradient, full-data Hessian); ``"if"``: linearized in the
            node/edge weights; ``"newton"``: one saddle-free damped Newton
            step on the objective without the unit (see the class Notes);
            ``"loo"``: exact refits warm-started at the fit (slow, the ground
            truth).
        solver : {"auto", "direct", "cg"}, default="auto"
            How Hessian systems are solved (see :func:`skvif.vif`);
            ``"newton"`` always uses the dense eigendecomposition here.
        damping : float, default=None
            ``None`` uses the estimator's ``damping``; must be > 0.
        n_jobs : int, default=None
            Number of joblib workers over chunks of units.
        as_frame : bool, default=False
            Return a DataFrame indexed by node labels (or edges), one column
            per pair.
        verbose : int, default=0
            Print progress to stderr.

        Returns
        -------
        influence : ndarray of shape (n_units, n_pairs) or DataFrame
            ``influence[r, j]`` estimates ``score_j(fit without unit r) -
            score_j(fit on G)``. For ``unit="node"`` the entries of pairs that
            contain the removed node itself are NaN (the pair no longer
            exists).
        """
        check_is_fitted(self)
        check_choice(target, "target", TARGETS)
        check_choice(unit, "unit", UNITS)
        check_choice(method, "method", METHODS)
        check_choice(solver, "solver", SOLVERS)
        damping = self.damping if damping is None else damping
        damping = check_nonnegative(damping, "damping")
        if damping == 0:
            raise ValueError("damping must be > 0 for this non-convex objective "
                             "(see the class Notes).")
        index = self._pair_index(pairs)
        n, d = self.embedding_.shape
        theta = self._params()
        problem = self._problem(anchor=theta)
        if unit == "node":
            loss, n_units = problem.node_loss, n
        else:
            loss, n_units = problem.edge_loss, len(self.edges_)

        def target_fn(params):
            return pair_scores(params, index, n, d)

        out = influence(loss, theta, n_units, check_units(None, n_units), target=target_fn,
                        method=method, solver="direct" if method == "newton" else solver,
                        damping=damping, n_jobs=n_jobs, batched=True, verbose=verbose,
                        saddle_free=True)
        if unit == "node":
            rows = np.arange(n)[:, None]
            out[(rows == index[:, 0]) | (rows == index[:, 1])] = np.nan
        if not as_frame:
            return out
        labels = (pd.Index(self.nodes_, tupleize_cols=False) if unit == "node"
                  else pd.MultiIndex.from_tuples(self.edges_))
        columns = pd.MultiIndex.from_tuples([(self.nodes_[a], self.nodes_[b])
                                             for a, b in index], names=["u", "v"])
        return pd.DataFrame(out, index=labels, columns=columns)
