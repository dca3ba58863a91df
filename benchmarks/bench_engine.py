"""Influence at 10^4 parameters: a neural Cox model on SUPPORT and on synthetic data.

Usage::

    python benchmarks/bench_engine.py neural [support synthetic] [--sample 6 --top 6]
        [--alpha A --max-iter 2000 --hidden 96 96 --n-synthetic 6000 --newton]
    python benchmarks/bench_engine.py generic [--params 100000 --dattri-max-iter 10 100]

``neural``: each configuration runs in its own subprocess (its peak resident
memory, ``ru_maxrss``, is printed): one training run of an MLP with about 10^4
parameters (:class:`skvif.NeuralCoxPHInfluence`, L-BFGS then Newton-CG), the
influence of every training row on the test loss (``method="vif"``, target
first), and exact refits without sampled rows (warm-started at the fit,
trust-region Newton-CG to the fit's tolerance), whose time is scaled to all
rows; agreement (Pearson, slope of the estimate on the refit, max error over
the largest refit change; ``tests/_accuracy.py``) of ``"vif"`` and
``"newton"`` with those refits, on ``--sample`` random rows and on the
``--top`` rows with the largest estimated change. Weight decay ``--alpha``
defaults to 100 on SUPPORT and 10 on the synthetic set (with 1 or 10 the
SUPPORT fit was still far from a stationary point after 2,000 L-BFGS
iterations); a fit that did not converge is flagged in the output.

SUPPORT is read offline from the ``SurvSet`` package (``support2``): DeepSurv's
14 covariates (age, sex, race, number of comorbidities, diabetes, dementia,
cancer, mean blood pressure, heart rate, respiration rate, temperature, white
blood cells, sodium, creatinine), complete rows (8,873), race and cancer
one-hot, numeric columns standardized; 80% train, 20% test (fixed seed).
Nothing is asserted.

``generic``: a ridge logistic regression written as a :func:`skvif.vif` loss
(batched), in subprocesses: ``vif`` for every row on 5 test predictions at
``--params`` (default 10^5) parameters (``solver="auto"``: conjugate gradients),
and ``loo`` / ``newton`` / ``vif`` for 3 rows at 10^4 parameters, where the
engine forms no dense Hessian (trust-region Newton-CG refits, CG Newton
steps). Time and peak memory of each.

The same 10^5-parameter problem is then given to dattri (``pip install torch
dattri``; imported only in its own subprocess, skipped with a message when it
is not installed): ``IFAttributorCG`` on a ``torch.nn.Linear(p, 1,
bias=False)`` holding skvif's fitted parameters, in float64, the loss
``sum_i log(1 + exp(-y_i x_i . theta))`` with the ridge ``alpha`` passed as
dattri's ``regularization`` (its Hessian is then ``H + alpha I``, skvif's, and
its per-row gradients are the data terms alone, as in skvif's removal of a
row), the target the 5 test predictions, one batch for the train and one
for the test rows. dattri's score ``grad l_i . (H + alpha I)^-1 grad f_t`` is
the first-order change of ``f_t`` when row ``i`` is removed, skvif's sign
convention (``f(without i) - f(all)``), so the two are compared entry by
entry (``tests/_accuracy.py``, no rescaling). dattri's CG runs a fixed
number of iterations (it has no tolerance): one run per ``--dattri-max-iter``
value (default 10, dattri's default, and 100).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import autograd.numpy as anp
import numpy as np
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _accuracy import agreement  # noqa: E402

import skvif  # noqa: E402
from skvif.survival import NeuralCoxPHInfluence, mlp_risk_function  # noqa: E402

warnings.filterwarnings("ignore")

ALPHA = 1.0  # ridge of the generic problem
# weight decay of the neural Cox fits: on SUPPORT, alpha = 1 or 10 left the fit far from a
# stationary point after 2,000 L-BFGS iterations (gradient norms 700 and 300)
NEURAL_ALPHA = {"support": 100.0, "synthetic": 10.0}

SUPPORT_COLUMNS = ["num_age", "fac_sex", "fac_race", "num_num_co", "fac_diabetes",
                   "fac_dementia", "fac_ca", "num_meanbp", "num_hrt", "num_resp", "num_temp",
                   "num_wblc", "num_sod", "num_crea"]


def progress(row):
    print(json.dumps(row), file=sys.stderr, flush=True)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def support():
    """SUPPORT (SurvSet ``support2``): design, ``[time, event]``."""
    import pandas as pd
    from SurvSet.data import SurvLoader

    df = SurvLoader().load_dataset("support2")["df"]
    df = df[SUPPORT_COLUMNS + ["time", "event"]].dropna()
    numeric = [c for c in SUPPORT_COLUMNS if c.startswith("num_")]
    parts = [(df[numeric] - df[numeric].mean()) / df[numeric].std(),
             (df["fac_sex"] == "male").astype(float).rename("male"),
             df["fac_diabetes"].astype(float), df["fac_dementia"].astype(float),
             pd.get_dummies(df["fac_race"], prefix="race", drop_first=True, dtype=float),
             pd.get_dummies(df["fac_ca"], prefix="ca", drop_first=True, dtype=float)]
    X = pd.concat(parts, axis=1).to_numpy(dtype=float)
    return X, np.c_[df["time"].to_numpy(float), df["event"].to_numpy(float)]


def synthetic(n=6000, d=10, seed=0):
    """Non-linear log-risk, exponential times, censoring, times on a grid of 200 (ties)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    log_risk = np.tanh(X[:, 0]) + 0.5 * X[:, 1] ** 2 - 0.5 * X[:, 2] * X[:, 3] + 0.3 * X[:, 4]
    t = rng.exponential(np.exp(-log_risk))
    c = rng.exponential(2 * np.median(t), size=n)
    time_ = np.minimum(t, c)
    time_ = np.ceil(time_ / np.quantile(time_, 0.99) * 200).clip(1, 200)
    return X, np.c_[time_, t <= c]


def neural_one(name, args):
    """One configuration, in its own process: a JSON line of times, memory and agreement."""
    X, y = support() if name == "support" else synthetic(args.n_synthetic)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(X.shape[0])
    cut = int(0.8 * X.shape[0])
    train, test = order[:cut], order[cut:]
    risk, theta0 = mlp_risk_function(X.shape[1], hidden=args.hidden, random_state=args.seed)
    row = {"data": name, "n_train": int(cut), "n_test": int(X.shape[0] - cut),
           "n_features": int(X.shape[1]), "n_params": int(theta0.size)}
    row["alpha"] = NEURAL_ALPHA[name] if args.alpha is None else args.alpha
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model, row["fit_s"] = timed(lambda: NeuralCoxPHInfluence(
            risk, theta0, alpha=row["alpha"], max_iter=args.max_iter).fit(X[train], y[train]))
    row["fit_converged"] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    row["fit_iter"] = model.n_iter_
    row["test_cindex"] = model.score(X[test], y[test])
    progress(row)
    Xt, yt = X[test], y[test]
    estimate, row["vif_all_s"] = timed(lambda: model.influence_(Xt, yt))
    row["rss_after_vif_mib"] = rss_mib()
    progress(row)
    picks = {"random": rng.choice(cut, args.sample, replace=False),
             "top": np.argsort(-np.abs(estimate))[:args.top]}
    refit_s, refits = 0.0, 0
    for group, rows in picks.items():
        if rows.size == 0:
            continue
        exact, seconds = timed(lambda: model.influence_(Xt, yt, rows=rows, method="loo"))
        refit_s, refits = refit_s + seconds, refits + rows.size
        row[f"vif_{group}"] = agreement(estimate[rows], exact)
        row[f"max_change_{group}"] = float(np.max(np.abs(exact)))
        row[f"refit_{group}_s"] = seconds
        progress(row)
        if args.newton:
            newton, seconds = timed(lambda: model.influence_(Xt, yt, rows=rows,
                                                             method="newton"))
            row[f"newton_{group}"] = agreement(newton, exact)
            row[f"newton_{group}_s_per_row"] = seconds / rows.size
    row["refit_s_per_row"] = refit_s / max(refits, 1)
    row["refits_all_s"] = row["refit_s_per_row"] * cut
    row["rss_mib"] = rss_mib()
    print(json.dumps(row), flush=True)


def logistic_loss(theta, weights, *, X, y, alpha):
    """Ridge logistic loss, batched: theta (p,) or (k, p), weights (n,) or (k, n)."""
    margin = anp.dot(theta, X.T) * y
    return (anp.sum(weights * anp.logaddexp(0.0, -margin), axis=-1)
            + 0.5 * alpha * anp.sum(theta * theta, axis=-1))


def generic_problem(p, n, seed):
    """Design ``X`` (n, p), labels ``y`` in {-1, 1} and 5 test rows ``X_test``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 5, p)) / np.sqrt(200.0)
    y = np.where(X[:, :200] @ rng.normal(size=200) + 0.5 * rng.normal(size=n + 5) > 0, 1.0,
                 -1.0)
    return X[:n], y[:n], X[n:]


def generic_one(mode, args):
    """One generic configuration in its own process: a JSON line."""
    from functools import partial

    from skvif._engine import minimize_hessian_free

    p = args.params if mode == "vif" else 10_000
    n = 200 if mode == "vif" else 300
    X, y, X_test = generic_problem(p, n, args.seed)
    loss = partial(logistic_loss, X=X, y=y, alpha=ALPHA)
    (theta, _, _), fit_s = timed(lambda: minimize_hessian_free(loss, np.zeros(p), np.ones(n),
                                                               gtol=1e-9))
    row = {"mode": mode, "n": n, "p": p, "fit_s": fit_s}
    target = lambda th: anp.dot(X_test, th)
    if mode == "vif":
        out, row["vif_s"] = timed(lambda: skvif.vif(loss, theta, n, target=target,
                                                    batched=True))
        row["shape"] = list(out.shape)
        if args.save:
            np.savez(args.save, theta=theta, influence=out)
    else:
        units = [[0], [1], [2]]
        results = {}
        for method in ("vif", "newton", "loo"):
            results[method], row[f"{method}_s"] = timed(lambda: skvif.vif(
                loss, theta, n, target=target, method=method, units=units, batched=True))
        for method in ("vif", "newton"):
            row[method] = agreement(results[method], results["loo"])
    row["rss_mib"] = rss_mib()
    print(json.dumps(row), flush=True)


def dattri_one(args):
    """dattri's ``IFAttributorCG`` on the generic problem, in its own process: a JSON line.

    Loads skvif's fitted parameters and influence from ``args.save``; prints
    ``{"installed": false}`` when torch or dattri cannot be imported.
    """
    try:
        import torch
        from dattri.algorithm.influence_function import IFAttributorCG
        from dattri.task import AttributionTask
    except ImportError as error:
        print(json.dumps({"installed": False, "error": str(error)}), flush=True)
        return
    from importlib.metadata import version

    from torch.utils.data import DataLoader, TensorDataset

    torch.set_default_dtype(torch.float64)
    row = {"installed": True, "dattri": version("dattri"), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "max_iter": args.dattri_max_iter[0]}
    p, n = args.params, 200
    X, y, X_test = generic_problem(p, n, args.seed)
    saved = np.load(args.save)
    theta, skvif_influence = saved["theta"], saved["influence"]
    row["rss_before_mib"] = rss_mib()

    def run():
        model = torch.nn.Linear(p, 1, bias=False)
        checkpoint = {"weight": torch.as_tensor(theta).reshape(1, p)}

        def loss_func(params, data):
            # data terms only: dattri adds the ridge as ``regularization * v``
            x, label = data
            margin = torch.func.functional_call(model, params, x).reshape(-1) * label
            return torch.nn.functional.softplus(-margin).sum()

        def target_func(params, data):
            x, _ = data
            return torch.func.functional_call(model, params, x).sum()

        task = AttributionTask(loss_func=loss_func, model=model, checkpoints=checkpoint,
                               target_func=target_func)
        train = DataLoader(TensorDataset(torch.as_tensor(X), torch.as_tensor(y)),
                           batch_size=n, shuffle=False)
        test = DataLoader(TensorDataset(torch.as_tensor(X_test), torch.zeros(len(X_test))),
                          batch_size=len(X_test), shuffle=False)
        attributor = IFAttributorCG(task=task, max_iter=args.dattri_max_iter[0],
                                    regularization=ALPHA)
        attributor.cache(train)
        return attributor.attribute(train, test).detach().numpy()

    out, row["dattri_s"] = timed(run)
    row["shape"] = list(out.shape)
    row["agreement"] = agreement(out, skvif_influence)
    row["rss_mib"] = rss_mib()
    print(json.dumps(row), flush=True)


def generic(args):
    import tempfile

    print("== generic engine at large p: ridge logistic regression as a skvif.vif loss ==")
    with tempfile.TemporaryDirectory() as folder:
        save = os.path.join(folder, "skvif.npz")
        vif_row = run_subprocess(["generic-one", "vif", "--params", str(args.params),
                                  "--seed", str(args.seed), "--save", save])
        print(f"vif, all {vif_row['n']} rows x 5 targets, p = {vif_row['p']}: fit "
              f"{vif_row['fit_s']:.1f} s, vif {vif_row['vif_s']:.1f} s "
              f"({vif_row['vif_s'] / vif_row['fit_s']:.2f} x the fit), peak memory "
              f"{vif_row['rss_mib']:.0f} MiB")
        # TQDM_DISABLE: dattri's progress bars (read when tqdm is imported)
        dattri_rows = [run_subprocess(["dattri-one", "--params", str(args.params), "--seed",
                                       str(args.seed), "--save", save, "--dattri-max-iter",
                                       str(max_iter)], env={"TQDM_DISABLE": "1"})
                       for max_iter in args.dattri_max_iter]
    row = run_subprocess(["generic-one", "loo", "--seed", str(args.seed)])
    cells = "  ".join(f"{m} {row[f'{m}_s']:.1f} s" for m in ("vif", "newton", "loo"))
    print(f"3 rows x 5 targets, p = {row['p']}, n = {row['n']}: {cells}; peak memory "
          f"{row['rss_mib']:.0f} MiB")
    for m in ("vif", "newton"):
        print(f"  {m} vs loo: r {row[m]['r']:.4f} slope {row[m]['slope']:.4f} "
              f"max err {row[m]['max_error']:.4f}")
    if not dattri_rows[0]["installed"]:
        print("dattri: not installed (pip install torch dattri)")
        return
    first = dattri_rows[0]
    print(f"dattri {first['dattri']} (torch {first['torch']}, {first['threads']} threads), "
          f"IFAttributorCG, float64, the same problem (p = {vif_row['p']}, all "
          f"{vif_row['n']} rows x 5 targets, skvif's fitted parameters); against skvif's "
          f"vif ({vif_row['vif_s']:.1f} s, {vif_row['rss_mib']:.0f} MiB):")
    for dattri_row in dattri_rows:
        a = dattri_row["agreement"]
        print(f"  {dattri_row['max_iter']:4d} CG iterations: {dattri_row['dattri_s']:6.1f} s "
              f"(skvif / dattri time {vif_row['vif_s'] / dattri_row['dattri_s']:.2f}), peak "
              f"memory {dattri_row['rss_mib']:.0f} MiB ({dattri_row['rss_before_mib']:.0f} "
              f"after imports and data); vs skvif entry by entry: r {a['r']:.6f} slope "
              f"{a['slope']:.6f} max err {a['max_error']:.2e}")


def run_subprocess(arguments, env=None):
    command = [sys.executable, os.path.abspath(__file__)] + arguments
    # the subprocess imports the same skvif as this one
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(skvif.__file__)), os.environ.get("PYTHONPATH", "")]))
    # (stderr passes through: the workers' progress lines)
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def neural(args):
    print("== neural Cox: influence of every training row on the test loss ==")
    for name in args.configs:
        row = run_subprocess(["neural-one", name, "--seed", str(args.seed), "--sample",
                              str(args.sample), "--top", str(args.top), "--max-iter",
                              str(args.max_iter),
                              "--n-synthetic", str(args.n_synthetic), "--hidden"]
                             + [str(h) for h in args.hidden]
                             + (["--newton"] if args.newton else [])
                             + ([] if args.alpha is None else ["--alpha", str(args.alpha)]))
        print(f"\n{name}: n_train {row['n_train']}, n_test {row['n_test']}, "
              f"{row['n_features']} columns, MLP {tuple(args.hidden)}, {row['n_params']} params, "
              f"alpha {row['alpha']:g}; "
              f"test concordance {row['test_cindex']:.3f}")
        print(f"  one training run          {row['fit_s']:9.1f} s ({row['fit_iter']} iterations"
              f"{'' if row['fit_converged'] else ', NOT CONVERGED: the estimates mean nothing'})")
        print(f"  vif, all rows             {row['vif_all_s']:9.1f} s "
              f"({row['vif_all_s'] / row['fit_s']:.2f} x one training run)")
        print(f"  exact refits, per row     {row['refit_s_per_row']:9.1f} s; all "
              f"{row['n_train']} rows ~ {row['refits_all_s']:.0f} s "
              f"({row['refits_all_s'] / row['vif_all_s']:.0f} x vif)")
        for group in ("random", "top"):
            if f"vif_{group}" not in row:
                continue
            cells = "  ".join(
                f"{m} r {row[f'{m}_{group}']['r']:.3f} slope {row[f'{m}_{group}']['slope']:.3f}"
                f" max err {row[f'{m}_{group}']['max_error']:.3f}"
                for m in ("vif", "newton") if f"{m}_{group}" in row)
            print(f"  vs refits, {group:<6} rows: {cells} (largest refit change "
                  f"{row[f'max_change_{group}']:.3g})")
        if "newton_top_s_per_row" in row:
            print(f"  newton per row            {row['newton_top_s_per_row']:9.1f} s")
        print(f"  peak memory (ru_maxrss)   {row['rss_after_vif_mib']:9.0f} MiB after vif, "
              f"{row['rss_mib']:.0f} MiB with refits")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["neural", "neural-one", "generic", "generic-one", "dattri-one"])
    parser.add_argument("configs", nargs="*", default=["support", "synthetic"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=6)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--max-iter", type=int, default=2000)
    parser.add_argument("--newton", action="store_true")
    parser.add_argument("--n-synthetic", type=int, default=6000)
    parser.add_argument("--hidden", type=int, nargs="+", default=[96, 96])
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--dattri-max-iter", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    if args.mode == "neural":
        neural(args)
    elif args.mode == "neural-one":
        neural_one(args.configs[0], args)
    elif args.mode == "generic":
        generic(args)
    elif args.mode == "dattri-one":
        dattri_one(args)
    else:
        generic_one(args.configs[0], args)


if __name__ == "__main__":
    main()
