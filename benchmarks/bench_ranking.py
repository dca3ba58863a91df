"""Benchmark: all-items influence of a listwise ranker vs one fit vs brute-force refits.

2,000 queries x 20 items x 50 features (40,000 rows), synthetic graded labels,
rows of a query scattered (non-contiguous qids). Times one fit, the influence of
every item (``vif``, ``newton``, ``if``) and of every query (``vif``), and a
sample of exact refits without one item (the engine's batched warm-started
refits as ``influence_(method="loo")`` runs them, and scipy's L-BFGS on the same
objective), scaled to all items.

Run: ``python benchmarks/bench_ranking.py [--loss listnet|listmle|both]
[--n-queries 2000] [--items 20] [--features 50] [--sample 20] [--threads 1]``.
BLAS is limited to ``--threads`` threads (default 1: timings on a shared
machine are otherwise dominated by thread oversubscription).
"""

import argparse
import time

import numpy as np
from autograd import value_and_grad
from scipy.optimize import minimize as scipy_minimize
from scipy.stats import pearsonr
from threadpoolctl import threadpool_limits

from skvif._engine import influence
from skvif.ranking import ListwiseRankerInfluence


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="both", choices=["listnet", "listmle", "both"])
    parser.add_argument("--n-queries", type=int, default=2000)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with threadpool_limits(limits=args.threads):
        print(f"BLAS threads: {args.threads}")
        for loss in (["listnet", "listmle"] if args.loss == "both" else [args.loss]):
            run(loss, args)


if __name__ == "__main__":
    main()
