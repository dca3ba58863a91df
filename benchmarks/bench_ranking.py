"""Benchmark: all-items influence of a listwise ranker vs one fit vs brute-force refits.

Mode ``items`` (default), below; mode ``labels``: label ranking as the
published VIF experiments do it (``LabelRankerInfluence``, see
:func:`run_labels`).

2,000 queries x 20 items x 50 features (40,000 rows), synthetic graded labels,
rows of a query scattered (non-contiguous qids). Times one fit, the influence of
every item (``vif``, ``newton``, ``if``) and of every query (``vif``), and a
sample of exact refits without one item (the engine's batched warm-started
refits as ``influence_(method="loo")`` runs them, and scipy's L-BFGS on the same
objective), scaled to all items.

Run: ``python benchmarks/bench_ranking.py [items|labels] [--loss listnet|listmle|both]
[--shape both|mediamill|delicious]
[--n-queries 2000] [--items 20] [--features 50] [--sample 20] [--threads 1]``.
BLAS is limited to ``--threads`` threads (default 1: timings on a shared
machine are otherwise dominated by thread oversubscription).
"""

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np
from autograd import value_and_grad
from scipy.optimize import minimize as scipy_minimize
from scipy.stats import pearsonr
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _accuracy  # noqa: E402  (the tests' entry-by-entry agreement: one definition)

from skvif._engine import influence
from skvif.ranking import LabelRankerInfluence, ListwiseRankerInfluence


def make_data(n_queries, items, features, seed=0):
    rng = np.random.default_rng(seed)
    n = n_queries * items
    X = rng.normal(size=(n, features))
    beta = rng.normal(scale=0.3, size=features)
    y = np.clip(np.round(X @ beta + rng.normal(size=n)), 0, 4)
    qid = np.repeat(np.arange(n_queries), items)
    perm = rng.permutation(n)
    return X[perm], y[perm], qid[perm]


def timed(func):
    start = time.perf_counter()
    out = func()
    return out, time.perf_counter() - start


def scipy_refit(f, theta, weights):
    fg = value_and_grad(lambda th: f(th, weights))
    res = scipy_minimize(fg, theta, jac=True, method="L-BFGS-B",
                         options={"gtol": 1e-9, "ftol": 0.0, "maxiter": 1000})
    return res.x


def run(loss, args):
    X, y, qid = make_data(args.n_queries, args.items, args.features)
    n, p = X.shape
    print(f"\n== loss={loss}: {args.n_queries} queries x {args.items} items x "
          f"{p} features = {n} rows ==")
    est, t_fit = timed(lambda: ListwiseRankerInfluence(loss=loss, alpha=1.0).fit(X, y, qid))
    print(f"fit                           {t_fit:8.2f} s   ({est.n_iter_} Newton iterations)")
    results = {}
    for label, kwargs in [("vif", dict(method="vif")), ("newton", dict(method="newton")),
                          ("if", dict(method="if")),
                          ("vif, unit=query", dict(method="vif", unit="query"))]:
        results[label], t = timed(lambda: est.influence_(**kwargs))
        units = args.n_queries if "query" in label else n
        print(f"influence {label:19s} {t:8.2f} s   = {t / t_fit:6.2f} x fit   "
              f"({units} units)")
        results[label + " time"] = t

    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(n, args.sample, replace=False))
    units = [np.array([i]) for i in sample]
    f = est._objective()
    # as influence_(method="loo") calls the engine (ridge alpha > 0: strongly convex)
    loo, t_loo = timed(lambda: influence(f, est.coef_.copy(), n, units, method="loo",
                                         batched=True, tol=1e-10,
                                         strongly_convex=est.alpha > 0))
    per_refit = t_loo / args.sample
    print(f"exact refits (engine, fixed-Hessian steps, warm start): {args.sample} in "
          f"{t_loo:.2f} s -> {per_refit * n:9.1f} s for all {n} items "
          f"= {per_refit * n / results['vif time']:8.0f} x all-items vif")
    ref, t_sp = timed(lambda: np.stack([
        scipy_refit(f, est.coef_, np.where(np.arange(n) == i, 0.0, 1.0)) for i in sample]))
    per_sp = t_sp / args.sample
    print(f"exact refits (scipy L-BFGS-B, warm start):         {args.sample} in "
          f"{t_sp:.2f} s -> {per_sp * n:9.1f} s for all {n} items "
          f"= {per_sp * n / results['vif time']:8.0f} x all-items vif")
    print(f"engine refits vs scipy refits: max |diff| = "
          f"{np.abs(loo - (ref - est.coef_)).max():.2e}")
    for m in ["vif", "newton", "if"]:
        est_u = results[m][sample]
        r = pearsonr(est_u.ravel(), loo.ravel())[0]
        rel = np.abs(est_u - loo).max() / np.abs(loo).max()
        print(f"  sampled items: {m:6s} vs exact refits  Pearson {r:.5f}, "
              f"max |err| / max |change| {rel:.3f}")


def multilabel_data(n_train, n_labels, n_features, label_cardinality, n_valid=500, seed=0):
    """make_multilabel_classification at a published shape, reduced by TruncatedSVD(8)."""
    from sklearn.datasets import make_multilabel_classification
    from sklearn.decomposition import TruncatedSVD

    X, Y = make_multilabel_classification(
        n_samples=n_train + n_valid, n_features=n_features, n_classes=n_labels,
        n_labels=label_cardinality, random_state=seed)
    Z = TruncatedSVD(8, random_state=seed).fit_transform(X)
    Z /= Z.std(axis=0)
    return Z[:n_train], Y[:n_train], Z[n_train:], Y[n_train:]


def agreement(estimate, exact):
    got = _accuracy.agreement(estimate, exact)
    return (f"Pearson {got['r']:.5f}, slope {got['slope']:.4f}, "
            f"max |err| / max |change| {got['max_error']:.4f}")


def timed_cpu(func):
    """``func()``, its wall time and its CPU time (the machine is shared)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = func()
    return out, time.perf_counter() - start, time.process_time() - cpu


def run_labels_shape(name, loss, n_train, n_labels, n_features, cardinality, n_units,
                     n_exact, alpha, methods):
    """Fit, influence of ``n_units`` labels on the validation losses, ``n_exact`` refits."""
    X, Y, X_val, Y_val = multilabel_data(n_train, n_labels, n_features, cardinality)
    print(f"\n== {name} shape, loss={loss}: {n_train} training instances x {n_labels} labels, "
          f"{n_labels * 9} parameters, {len(X_val)} validation instances, "
          f"{Y.sum(axis=1).mean():.1f} relevant labels per instance ==")
    ranker, t_fit, c_fit = timed_cpu(lambda: LabelRankerInfluence(loss=loss, alpha=alpha).fit(X, Y))
    print(f"fit                                {t_fit:8.2f} s wall {c_fit:8.2f} s CPU   "
          f"({ranker.n_iter_} Newton-CG iterations)")
    units = ranker.items_[np.linspace(0, n_labels - 1, n_units).round().astype(int)]
    estimates = {}
    for method in methods:
        estimates[method], t, c = timed_cpu(lambda: ranker.influence_(
            X_val, Y_val, target="loss", units=units, method=method))
        print(f"influence {method:6s} ({n_units} labels)       {t:8.2f} s wall {c:8.2f} s CPU   "
              f"(fit + influence {t_fit + t:.1f} s wall, {c_fit + c:.1f} s CPU)")
        if method == "vif":
            t_vif = t
    sample = units[np.linspace(0, n_units - 1, n_exact).round().astype(int)]
    rows = np.searchsorted(units, sample)
    exact, t_loo, c_loo = timed_cpu(lambda: ranker.influence_(
        X_val, Y_val, target="loss", units=sample, method="loo"))
    print(f"exact refits ({n_exact} labels)                {t_loo:8.2f} s wall {c_loo:8.2f} s CPU "
          f"-> {t_loo / n_exact * n_units:.1f} s for {n_units} labels "
          f"= {t_loo / n_exact * n_units / t_vif:.1f} x vif")
    # the direct part (the removed label masked from the validation lists at the fitted
    # parameters) is exact in every method: report the agreement without it as well
    direct = _direct_part(ranker, X_val, Y_val, sample)
    for method, est in estimates.items():
        print(f"  {method:6s} vs exact refits, validation losses:       "
              f"{agreement(est[rows], exact)}")
        print(f"  {method:6s} vs exact refits, without the direct part: "
              f"{agreement(est[rows] - direct, exact - direct)}")
    print(f"peak memory of this run (ru_maxrss): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB", flush=True)


def _direct_part(ranker, X_val, Y_val, units):
    """Change of the validation losses when the label is masked, at the fitted parameters."""
    from skvif.ranking._label_ranker import _loss_changes

    lists, scores, _ = ranker._data(X_val, Y_val, None, None, fitting=False)
    zero = np.zeros((len(units), ranker._theta.size))
    return _loss_changes(lists, scores, ranker._loss, ranker._theta, zero,
                         np.searchsorted(ranker.items_, units), exact=True)


def run_labels(args):
    """Mediamill and Delicious shapes of the published label-ranking experiments.

    ``make_multilabel_classification`` data reduced by ``TruncatedSVD(8)``:
    Mediamill, 5,000 training instances, 120 features, 101 labels (about 4
    per instance), 909 parameters, every label removed (``vif`` and
    ``newton``) and refit exactly; Delicious, ``--delicious-train`` training
    instances (default 5,000; the real set has 12,920), 500 features, 983
    labels (about 19 per instance), 8,847 parameters, 100 labels removed
    (``vif``), ``--sample-labels`` of them refit exactly. Both on 500
    validation instances, with ``LabelRankerInfluence`` (per-label scores,
    ``alpha=--alpha``); the default solvers (dense below 2,000 parameters,
    preconditioned conjugate gradients above). Each (shape, loss) runs in
    its own process, which reports its peak resident memory.
    """
    if args.shape == "both" or args.loss == "both":
        for loss in (["listnet", "listmle"] if args.loss == "both" else [args.loss]):
            for shape in (["mediamill", "delicious"] if args.shape == "both" else [args.shape]):
                command = [sys.executable, __file__, "labels", "--shape", shape, "--loss", loss,
                           "--alpha", str(args.alpha), "--threads", str(args.threads),
                           "--mediamill-exact", str(args.mediamill_exact),
                           "--delicious-train", str(args.delicious_train),
                           "--sample-labels", str(args.sample_labels)]
                subprocess.run(command, check=True)
        return
    if args.shape == "mediamill":
        run_labels_shape("Mediamill", args.loss, 5000, 101, 120, 4, 101, args.mediamill_exact,
                         args.alpha, ["vif", "newton"])
    else:
        run_labels_shape("Delicious", args.loss, args.delicious_train, 983, 500, 19, 100,
                         args.sample_labels, args.alpha, ["vif"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="items", choices=["items", "labels"])
    parser.add_argument("--shape", default="both", choices=["both", "mediamill", "delicious"],
                        help="labels: which published shape(s)")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="labels: ridge penalty of LabelRankerInfluence")
    parser.add_argument("--mediamill-exact", type=int, default=101,
                        help="labels: exact refits at the Mediamill shape (all 101 labels)")
    parser.add_argument("--delicious-train", type=int, default=5000,
                        help="labels: training instances at the Delicious shape")
    parser.add_argument("--sample-labels", type=int, default=5,
                        help="labels: exact refits at the Delicious shape")
    parser.add_argument("--loss", default="both", choices=["listnet", "listmle", "both"])
    parser.add_argument("--n-queries", type=int, default=2000)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with threadpool_limits(limits=args.threads):
        print(f"BLAS threads: {args.threads}")
        if args.mode == "labels":
            run_labels(args)
            return
        for loss in (["listnet", "listmle"] if args.loss == "both" else [args.loss]):
            run(loss, args)


if __name__ == "__main__":
    main()
