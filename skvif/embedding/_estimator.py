"""``NodeEmbeddingInfluence``: a skip-gram node embedding that explains itself."""

import hashlib
import sys
import warnings
from numbers import Integral, Real

import networkx as nx
import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .._engine import METHODS, SOLVERS, check_choice, check_nonnegative
from .._robustness import check_refine, refine_rows, with_exactness
from ._linalg import block_cg, dense_saddle_free_solve, saddle_free_solve
from ._objective import (LeaveOutChanges, SkipGram, removal_weights, sparse_adjacency,
                         sparse_cooccurrence)

__all__ = ["NodeEmbeddingInfluence"]

TARGETS = ("score",)
UNITS = ("node", "edge")

# The fit stops once the gradient norm is below this.
_GTOL = 1e-9
# Trust-region iterations of the fit from the random start, and the gradient
# norm at which the polish (rotation gauge added) takes over.
_MAX_ITER = 2000
_START_GTOL = 1e-6
# Trust-region Newton-CG iterations of the polish (and of each "loo" refit).
_MAX_POLISH = 200
# Newton steps (by the gradient norm) that finish the polish, at most.
_NEWTON_FINISH = 8
# Scale of the random start (standard normal times this).
_INIT_SCALE = 0.1
# Weight of the rotation gauge (see ``SkipGram``); results do not depend on it.
_GAUGE = 1.0
# solver="auto" forms dense Hessians below this many parameters (2 n d).
_DENSE_MAX_PARAMS = 500
# Relative residual of the conjugate-gradient solves of "vif" / "if".
_CG_RTOL = 1e-10
# Step of the complex-step derivative of method="if" (exact to rounding).
_COMPLEX_STEP = 1e-30
# "newton" with line_search=True moves to the minimum of the leave-out objective
# along its step, at most this many steps far, located to this absolute tolerance.
_MAX_LINE_STEP = 2.0
_LINE_XATOL = 1e-5
# Units whose leave-out changes are computed together hold about this many numbers.
_UNIT_CHUNK_ELEMENTS = 2**21


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
    cooccurrence_ : scipy.sparse.csr_array of shape (n_nodes, n_nodes)
        The expected co-occurrence counts ``C`` (nonzero only for nodes at
        most ``window`` steps apart).
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

        C = \sum_{t=1}^{T} D P^{t} = \sum_{t=1}^{T} A P^{t-1},

    i.e. ``C_uv`` is the expected number of visits to ``v`` within ``T``
    steps of walks started ``deg(u)`` times from every node ``u`` (the
    stationary start ``pi = D 1 / vol(G)``, scaled by ``vol(G) = 2 m``). The
    walks are truncated at ``T`` steps and nothing else is cut off: ``C`` is
    exact, symmetric, with row sums ``c_u = T deg(u)``, and nonzero only for
    nodes at most ``T`` steps apart, so it is stored sparse (about 600
    nonzeros per row on a graph of mean degree 10 at ``T = 3``). Isolated
    nodes start no walks (zero rows). The fitted ``phi, psi`` minimize

    .. math::

        L(\phi, \psi) = \sum_{u, v} C_{uv}\Big[-\log
            \frac{e^{\phi_u \cdot \psi_v}}{\sum_x e^{\phi_u \cdot \psi_x}}\Big]
            + \frac{\alpha}{2}\big(\|\phi\|_F^2 + \|\psi\|_F^2\big)
          = \sum_u c_u \log \sum_x e^{\phi_u \cdot \psi_x}
            - \sum_{u, v} C_{uv}\, \phi_u \cdot \psi_v
            + \frac{\alpha}{2}\big(\|\phi\|_F^2 + \|\psi\|_F^2\big),

    the softmax over *all* nodes ``x`` (no negative sampling: the objective
    is deterministic and exact).

    **Removal.** Removing node ``u`` deletes it from the graph: ``C`` is
    recomputed from the adjacency without ``u`` (walks change everywhere, a
    neighbour may become isolated), ``u`` leaves every softmax and its own
    vectors leave the penalty. Removing an edge recomputes ``C`` without it.
    Both are written as weights inside the objective -- ``A_ij`` scaled by
    the edge's weight and both end nodes' weights, the softmax terms and the
    penalty by the node weights, ``C`` recomputed from the weighted ``A`` --
    so that a weight of 0 gives exactly the objective of the graph with the
    node or edge deleted (tested against graphs deleted with networkx).

    **Computation.** Nothing of size ``n x n`` is formed except the softmax,
    which is evaluated in blocks of rows of about ``2**21`` numbers; for the
    many Hessian-vector products at one point it is kept whole while ``n**2
    <= 2**25`` (256 MiB, about 5,800 nodes), recomputed block by block
    above. Gradients and Hessian-vector products (any number of directions in
    one pass over the softmax) are closed forms, tested against autograd.

    - *Fit*: scipy's ``trust-krylov`` (trust-region Newton on exact
      Hessian-vector products, never a Hessian) from the random start to a
      gradient norm of ``1e-6``; if that is not reached, ``trust-krylov``
      again with the rotation gauge (below) anchored at that point; finally
      up to 8 saddle-free Newton steps (Lanczos, no damping), each kept only
      if it lowers the gradient norm, to a gradient norm below ``1e-9``:
      influence is only as good as the optimum.
    - ``"vif"`` / ``"if"``: target first. One damped solve per pair score,
      ``v_j = (H + damping I)^{-1} grad score_j``, ``H`` the Hessian of ``L``
      plus the gauge at the fit (block conjugate gradients with a Jacobi
      preconditioner, relative residual ``1e-10``; a dense factorization
      below 500 parameters or with ``solver="direct"``); then for each unit
      the exact change of the gradient along the ``v_j``. That change needs
      only what the unit touches: the change of ``C X`` (``X = [psi, phi]``)
      is carried by the recursion ``dY_s = P dY_{s-1} + dP (Y_{s-1} +
      dY_{s-1})``, ``Y_s = P^s X``, ``dP`` nonzero only on the rows whose
      degree changes, so it lives on the ``T``-step neighbourhood of the
      unit; the softmax terms change only in the row sums of the end nodes
      and, for a removed node ``r``, by its softmax column
      (``E'_u[f] = (E_u[f] - P_ur f_r) / (1 - P_ur)``); ``C`` is never
      recomputed.
    - ``"newton"``: per unit, the saddle-free step ``s`` on the leave-out
      objective (below), restricted to the Krylov space of its Hessian and
      gradient (Lanczos with full reorthogonalization, until the step changes
      by less than ``1e-8`` relative), or from a dense eigendecomposition below
      500 parameters; the estimate is ``J s`` (``J`` the gradients of the
      pair scores): one Newton step, as the spec defines ``"newton"``. With
      ``line_search=True`` it is ``t J s`` instead, ``t`` the minimizer of the
      leave-out objective on the segment ``theta + t s``, ``0 <= t <= 2``
      (bounded Brent search, ``|t - t*| <= 1e-5``): the Newton direction,
      with its length set by the leave-out objective itself.
    - ``"loo"``: the fit's second and third stages on the leave-out
      objective, warm-started at the fit, with the gauge anchored at the fit.

    **Non-convexity, damping and rotations.** ``L`` is invariant to rotating
    all ``phi`` and ``psi`` together, so its Hessian is singular along
    rotations; pair scores ``phi_u . psi_v`` are rotation invariant, and so is
    every result of :meth:`influence_` (rotating ``embedding_`` and
    ``context_embedding_`` together leaves it unchanged). The engine is given
    ``L`` plus a rotation gauge ``gamma/2 ||skew(Theta_0^T W Theta)||_F^2``
    (``Theta = [phi; psi]``, ``Theta_0`` the anchor, ``W`` the node weights,
    ``gamma = 1``): zero, with zero gradient, at the anchor and at every
    Procrustes-aligned refit, it gives the rotations curvature without
    changing any score, so ``"vif"`` needs no damping for them and exact
    refits converge quadratically. What remains is the non-convexity of the
    *leave-out* objectives: at the full-data optimum their Hessian is often
    indefinite (karate club: smallest eigenvalue about -0.3 after removing an
    edge, -1 after removing a node; the vectors of a removed node are flat).
    A plain Newton step would divide by these near-zero or negative
    eigenvalues, so ``method="newton"`` takes a *saddle-free* step ``-V
    (|Lambda| + damping)^{-1} V^T g`` from the eigendecomposition of the
    leave-out Hessian. The default ``damping=0.1`` (a few per cent of the
    typical curvature) bounds that step and, for ``"vif"``, mildly shrinks
    the estimate, which tends to overshoot the exact refit. Where the
    removal is large (a hub node), the curvature grows along the way and even
    the damped step overshoots (removing the hub of Les Miserables: errors of 3 times
    the largest exact change); the line search above stops it at the minimum
    along its direction. See the accuracy figures below.

    **Accuracy** (``benchmarks/bench_embedding.py``, defaults; Pearson
    correlation and slope of the estimates on warm-started exact refits over
    all (unit, pair) entries, pairs containing a removed node excluded).
    Zachary's karate club (34 nodes, 78 edges), all units, 20 random pairs:
    edges 0.96 (slope 0.77, vif), 0.95 (if), 0.98 (0.93, newton); nodes
    0.95 (0.82, vif), 0.93 (if), 0.93 (0.83, newton). Florentine families
    (15 nodes, 20 edges): edges 0.66, 0.64, 0.65; nodes 0.62, 0.63, 0.67. On
    the small, sparse Florentine graph many edges are bridges and many nodes
    have one or two neighbours, so one removal rewires a large share of the
    walks: a large perturbation, which a one-step linearization at the
    full-data optimum only ranks roughly. On larger graphs (stochastic block
    models of 200 and 1,000 nodes, mean degree 10; 20 sampled units, 10
    random pairs) ``"vif"`` reaches 0.99-1.00 with slopes 0.90-0.95 for edges
    and nodes, ``"newton"`` (``line_search=True``, as every ``"newton"``
    number here) 1.00 with slopes 0.99-1.005. ``"newton"`` is
    unreliable for a node whose removal rewires much of the graph: on Les
    Miserables (77 nodes, 20 sampled nodes, 10 pairs) it reaches 0.71 (slope
    0.46) against 0.97 (0.87) for ``"vif"``, its error dominated by the hub
    Valjean (36 neighbours). Use ``refine=k`` (exact refits for the ``k``
    largest estimated changes) or ``method="loo"`` (30 to 500 times slower
    than ``"vif"`` on these graphs) when exact numbers matter.

    **Cost** (same benchmark, one BLAS thread, a shared 2-core machine): a
    graph of 1,000 nodes and 4,968 edges fits in 4 s; ``"vif"`` for all
    edges, then all nodes, on 10 pair scores takes 3 s and 1.3 s, peak
    memory 256 MiB. At 5,000 nodes and 24,799 edges: fit 168 s of CPU time,
    all edges 71 s, all nodes 10 s, peak memory 865 MiB.

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

    def _objective(self, node_weights=None, C=None, anchor=None):
        """The (leave-out) objective: co-occurrences ``C``, node weights, gauge anchor."""
        n_components, _, alpha = self._fitted_objective
        return SkipGram(self.cooccurrence_ if C is None else C, node_weights,
                        n_components, alpha, anchor=anchor, gauge=_GAUGE)

    def _adjacency(self):
        return sparse_adjacency(self.edge_index_, len(self.nodes_))

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
        self.cooccurrence_ = sparse_cooccurrence(self._adjacency(), int(self.window))
        objective = self._objective()

        rng = check_random_state(self.random_state)
        theta0 = _INIT_SCALE * rng.standard_normal(2 * n * d)
        # trust-region Newton-CG (exact Hessian-vector products, never a dense
        # Hessian); it copes with the flat rotations and with saddles on the way
        result = scipy.optimize.minimize(
            objective.value_and_grad, theta0, jac=True, hessp=objective.hvp,
            method="trust-krylov", options={"maxiter": _MAX_ITER, "gtol": _START_GTOL})
        theta, n_iter = _polish(lambda th: self._objective(anchor=th), result.x)
        n_iter += int(result.nit)
        value, gradient = objective.value_and_grad(theta)
        g_norm = np.linalg.norm(gradient)
        if not np.isfinite(g_norm) or g_norm > 1e3 * _GTOL:
            warnings.warn(f"The fit did not converge in {n_iter} iterations (gradient "
                          f"norm {g_norm:.3g}); influence estimates need a tight optimum.",
                          ConvergenceWarning, stacklevel=2)
        self.embedding_ = theta[:n * d].reshape(n, d).copy()
        self.context_embedding_ = theta[n * d:].reshape(n, d).copy()
        self.objective_ = float(value)
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

    def _unit_index(self, unit, units):
        """Positions (nodes) or end-node pairs (edges) of the requested units."""
        labels = self.nodes_ if unit == "node" else self.edges_
        if units is None:
            positions = np.arange(len(labels))
        else:
            lookup = {label: k for k, label in enumerate(labels)}
            if unit == "edge":  # an undirected edge may be given either way round
                lookup.update({(b, a): k for (a, b), k in list(lookup.items())})
            positions = []
            for label in units:
                try:
                    positions.append(lookup[label])
                except (KeyError, TypeError):
                    raise ValueError(f"units: {label!r} is not a {unit} of the fitted "
                                     "graph.") from None
            if not positions:
                raise ValueError("units is empty: give at least one node or edge.")
            positions = np.asarray(positions, dtype=np.intp)
        if unit == "node":
            return positions, list(positions)
        return positions, [tuple(e) for e in self.edge_index_[positions]]

    def _leave_out(self, unit, index, theta):
        """The objective of the graph without one node or edge, gauge anchored at theta."""
        A = removal_weights(self._adjacency(), unit, index)
        weights = None
        if unit == "node":
            weights = np.ones(len(self.nodes_))
            weights[index] = 0.0
        return self._objective(weights, sparse_cooccurrence(A, self._fitted_objective[1]), theta)

    def influence_(self, pairs, *, target="score", unit="node", method="vif", solver="auto",
                   damping=None, n_jobs=None, as_frame=False, verbose=0, units=None,
                   refine=None, return_exact=False, line_search=False):
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
            ``"direct"`` forms dense Hessians (``2 n d`` Hessian-vector
            products each) and factorizes them; ``"cg"`` never forms them:
            ``"vif"``/``"if"`` solve ``(H + damping I) v_j = grad score_j``
            by conjugate gradients, ``"newton"`` takes the saddle-free step
            on the Krylov space of the leave-out Hessian (Lanczos). ``"auto"``
            is ``"direct"`` below 500 parameters, ``"cg"`` from there on.
        damping : float, default=None
            ``None`` uses the estimator's ``damping``; must be > 0.
        n_jobs : int, default=None
            Accepted for compatibility; the computation runs in this process
            (its products are BLAS calls, threaded by BLAS itself).
        as_frame : bool, default=False
            Return a DataFrame indexed by node labels (or edges), one column
            per pair.
        verbose : int, default=0
            Print progress to stderr.
        units : sequence of nodes or edges, default=None
            Only these nodes (``unit="node"``) or edges (``unit="edge"``, either
            orientation); rows of the result then follow this order.
            ``None``: every node or edge.
        refine : int, default=None
            After the estimate for every unit, recompute the ``refine`` units
            with the largest estimated change by exact refit (as
            ``method="loo"``, only those units). Size of a change: the root
            mean square of the unit's pair-score changes (the NaN entries of
            pairs that contain a removed node count as 0).
        return_exact : bool, default=False
            Also return which units are exact refits: a boolean ndarray of
            shape ``(n_units,)``, or with ``as_frame`` a boolean Series named
            ``exact`` indexed like the result. With ``refine`` and
            ``as_frame`` the result also carries it as ``frame.attrs["exact"]``.
        line_search : bool, default=False
            ``method="newton"`` only: scale each Newton step to the minimum of
            the leave-out objective along it (``0 <= t <= 2``), which helps
            where one removal rewires much of the graph (see the class Notes).

        Returns
        -------
        influence : ndarray of shape (n_units, n_pairs) or DataFrame
            ``influence[r, j]`` estimates ``score_j(fit without unit r) -
            score_j(fit on G)``. For ``unit="node"`` the entries of pairs that
            contain the removed node itself are NaN (the pair no longer
            exists).
        is_exact : ndarray or pandas.Series of bool
            Only with ``return_exact``.
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
        positions, unit_index = self._unit_index(unit, units)
        refine = check_refine(refine, len(unit_index))
        out = self._estimate(index, unit, unit_index, positions, method, solver, damping,
                             verbose, line_search)
        if unit == "node":  # pairs that contain the removed node no longer exist
            rows = np.asarray(unit_index)[:, None]
            gone = (rows == index[:, 0]) | (rows == index[:, 1])
            out[gone] = 0.0
        is_exact = np.full(len(unit_index), method == "loo")
        if refine and method != "loo":
            out, is_exact = refine_rows(out, refine, lambda top: self._estimate(
                index, unit, [unit_index[k] for k in top], positions[top], "loo", solver,
                damping, verbose, False))
        if unit == "node":
            out[gone] = np.nan
        labels = ([self.nodes_[k] for k in positions] if unit == "node"
                  else [self.edges_[k] for k in positions])
        labels = (pd.Index(labels, tupleize_cols=False) if unit == "node"
                  else pd.MultiIndex.from_tuples(labels))
        if as_frame:
            columns = pd.MultiIndex.from_tuples([(self.nodes_[a], self.nodes_[b])
                                                 for a, b in index], names=["u", "v"])
            out = pd.DataFrame(out, index=labels, columns=columns)
        return with_exactness(out, is_exact, labels, as_frame, refine, return_exact)

    def _estimate(self, index, unit, unit_index, positions, method, solver, damping, verbose,
                  line_search):
        """``(len(unit_index), n_pairs)`` changes of the pair scores by one method."""
        theta = self._params()
        objective = self._objective(anchor=theta)
        J = _pair_jacobian(theta, index, len(self.nodes_), self.embedding_.shape[1])
        dense = (solver == "direct"
                 or (solver == "auto" and theta.size < _DENSE_MAX_PARAMS))
        log = _progress(verbose, f"{method} {unit}s", len(unit_index))
        if method in ("vif", "if"):
            return self._linearized(objective, theta, J, unit, unit_index, method, dense,
                                    damping, log)
        out = np.empty((len(unit_index), index.shape[0]))
        if method == "newton":
            for k, unit_pos in enumerate(unit_index):
                leave_out = self._leave_out(unit, unit_pos, theta)
                g = leave_out.value_and_grad(theta)[1]
                if dense:
                    step = -dense_saddle_free_solve(leave_out.hessian(theta), g, damping)
                else:
                    step = -saddle_free_solve(lambda v: leave_out.hvp(theta, v), g, damping)
                length = _line_minimum(leave_out, theta, step) if line_search else 1.0
                out[k] = length * (J @ step)
                log(k + 1)
            return out
        base = _pair_scores(theta, index, len(self.nodes_), self.embedding_.shape[1])
        failed = []
        for k, unit_pos in enumerate(unit_index):
            refit, converged = _polish(
                lambda th, u=unit_pos: self._leave_out(unit, u, theta), theta,
                fixed_anchor=True)
            failed += [] if converged else [positions[k]]
            out[k] = (_pair_scores(refit, index, len(self.nodes_), self.embedding_.shape[1])
                      - base)
            log(k + 1)
        if failed:
            warnings.warn(f"{len(failed)} leave-one-out refits did not reach a gradient "
                          f"norm of {1e3 * _GTOL:g} (units at positions {failed[:10]}).",
                          ConvergenceWarning, stacklevel=3)
        return out

    def _linearized(self, objective, theta, J, unit, unit_index, method, dense, damping, log):
        """``"vif"`` / ``"if"``: one damped Hessian solve per pair, then a product per unit."""
        V = self._pair_solves(objective, theta, J, dense, damping)
        changes = LeaveOutChanges(self._adjacency(), self._fitted_objective[1], objective,
                                  theta, V)
        n, width = len(self.nodes_), 2 * self.embedding_.shape[1]
        size = max(1, _UNIT_CHUNK_ELEMENTS // (n * max(width, V.shape[1])))
        eps = 1.0 if method == "vif" else 1j * _COMPLEX_STEP
        out = []
        for start in range(0, len(unit_index), size):
            R = changes.changes(unit, unit_index[start:start + size], eps)
            out.append(R if method == "vif" else R.imag / _COMPLEX_STEP)
            log(start + len(out[-1]))
        return np.concatenate(out, axis=0)


    def _pair_solves(self, objective, theta, J, dense, damping):
        """``V = (H + damping I)^{-1} J^T``, one solve per pair, reused for the same inputs."""
        key = (hashlib.sha1(theta.tobytes() + J.tobytes()).hexdigest(), float(damping), dense)
        cached = getattr(self, "_pair_solve_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        if dense:
            H = objective.hessian(theta) + damping * np.eye(theta.size)
            V = scipy.linalg.solve(H, J.T, assume_a="sym")
        else:
            V = block_cg(lambda X: objective.hvp(theta, X) + damping * X, J.T,
                         rtol=_CG_RTOL, diagonal=objective.hessian_diagonal(theta) + damping)
        self._pair_solve_cache = (key, V)
        return V


def _pair_jacobian(theta, pair_index, n_nodes, n_components):
    """``d score_j / d theta`` for the pair scores ``phi_u . psi_v``, shape ``(m, p)``."""
    d = n_components
    phi = theta[:n_nodes * d].reshape(n_nodes, d)
    psi = theta[n_nodes * d:].reshape(n_nodes, d)
    J = np.zeros((pair_index.shape[0], theta.size))
    for j, (u, v) in enumerate(pair_index):
        J[j, u * d:(u + 1) * d] += psi[v]
        J[j, (n_nodes + v) * d:(n_nodes + v + 1) * d] += phi[u]
    return J


def _pair_scores(theta, pair_index, n_nodes, n_components):
    """Pair scores ``phi_u . psi_v``."""
    d = n_components
    phi = theta[:n_nodes * d].reshape(n_nodes, d)
    psi = theta[n_nodes * d:].reshape(n_nodes, d)
    return np.sum(phi[pair_index[:, 0]] * psi[pair_index[:, 1]], axis=1)


def _line_minimum(objective, theta, step):
    """``argmin_{0 <= t <= 2} objective(theta + t step)`` (bounded Brent, ``t`` to 1e-5)."""
    if not np.any(step):
        return 1.0
    result = scipy.optimize.minimize_scalar(
        lambda t: objective.value_and_grad(theta + t * step)[0], bounds=(0.0, _MAX_LINE_STEP),
        method="bounded", options={"xatol": _LINE_XATOL})
    return float(result.x)


def _polish(make_objective, theta, fixed_anchor=False):
    """Trust-region Newton-CG on exact Hessian-vector products, rotation gauge included.

    ``make_objective(anchor)`` returns the objective with its gauge anchored
    at ``anchor``: at ``theta`` for the fit's polish (the gauge only pins the
    rotation of the optimum nearest the first-stage fit), at the full-data fit
    for a refit (``fixed_anchor``; ``theta`` is then the warm start).

    Returns the minimizer and the iteration count (fit), or the minimizer and
    whether the gradient norm reached ``1e3 * _GTOL`` (refits).
    """
    objective = make_objective(theta)
    g = objective.value_and_grad(theta)[1]
    n_iter = 0
    if np.linalg.norm(g) > _START_GTOL:  # a refit's warm start: far from its optimum
        result = scipy.optimize.minimize(
            objective.value_and_grad, theta, jac=True, hessp=objective.hvp,
            method="trust-krylov", options={"gtol": _START_GTOL, "maxiter": _MAX_POLISH})
        theta, n_iter = result.x, int(result.nit)
        g = objective.value_and_grad(theta)[1]
    # near the optimum the objective's decrease drowns in rounding and the trust
    # region stalls: finish with Newton steps judged by the gradient norm alone
    for _ in range(_NEWTON_FINISH):
        if np.linalg.norm(g) <= _GTOL:
            break
        step = saddle_free_solve(lambda v: objective.hvp(theta, v), g, 0.0, rtol=1e-6)
        g_new = objective.value_and_grad(theta - step)[1]
        if not np.linalg.norm(g_new) < np.linalg.norm(g):
            break
        theta, g, n_iter = theta - step, g_new, n_iter + 1
    if fixed_anchor:
        return theta, bool(np.linalg.norm(g) <= 1e3 * _GTOL)
    return theta, n_iter


def _progress(verbose, label, total):
    def log(done):
        if verbose:
            print(f"[skvif] {label}: {done}/{total} units", file=sys.stderr)
    return log
