"""Influence at 10^4 parameters: a neural Cox model on SUPPORT and on synthetic data.

Usage::

    python benchmarks/bench_engine.py neural [support synthetic] [--sample 6 --top 6]
    python benchmarks/bench_engine.py generic [--params 100000]

``neural``: each configuration runs in its own subprocess (its peak resident
memory, ``ru_maxrss``, is printed): one training run of an MLP with about 10^4
parameters (:class:`skvif.NeuralCoxPHInfluence`, L-BFGS then Newton-CG), the
influence of every training row on the test loss (``method="vif"``, target
first), and exact refits without sampled rows (warm-started at the fit,
trust-region Newton-CG to the fit's tolerance), whose time is scaled to all
rows; agreement (Pearson, slope of the estimate on the refit, max error over
the largest refit change; ``tests/_accuracy.py``) of ``"vif"`` and
``"newton"`` with those refits, on ``--sample`` random rows and on the
``--top`` rows with the largest estimated change.

SUPPORT is read offline from the ``SurvSet`` package (``support2``): DeepSurv's
14 covariates (age, sex, race, number of comorbidities, diabetes, dementia,
cancer, mean blood pressure, heart rate, respiration rate, temperature, white
blood cells, sodium, creatinine), complete rows (8,873), race and cancer
one-hot, numeric columns standardized; 80% train, 20% test (fixed seed).
Nothing is asserted.

``generic``: see :func:`generic`.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _accuracy import agreement  # noqa: E402

import skvif  # noqa: E402
from skvif.survival import NeuralCoxPHInfluence, mlp_risk_function  # noqa: E402

warnings.filterwarnings("ignore")

SUPPORT_COLUMNS = ["num_age", "fac_sex", "fac_race", "num_num_co", "fac_diabetes",
                   "fac_dementia", "fac_ca", "num_meanbp", "num_hrt", "num_resp", "num_temp",
                   "num_wblc", "num_sod", "num_crea"]
HIDDEN = {"support": (96, 96), "synthetic": (96, 96)}


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
    X, y = support() if name == "support" else synthetic()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(X.shape[0])
    cut = int(0.8 * X.shape[0])
    train, test = order[:cut], order[cut:]
    risk, theta0 = mlp_risk_function(X.shape[1], hidden=HIDDEN[name], random_state=args.seed)
    row = {"data": name, "n_train": int(cut), "n_test": int(X.shape[0] - cut),
           "n_features": int(X.shape[1]), "n_params": int(theta0.size)}
    model, row["fit_s"] = timed(lambda: NeuralCoxPHInfluence(
        risk, theta0, alpha=args.alpha, max_iter=args.max_iter).fit(X[train], y[train]))
    row["fit_iter"] = model.n_iter_
    row["test_cindex"] = model.score(X[test], y[test])
    Xt, yt = X[test], y[test]
    estimate, row["vif_all_s"] = timed(lambda: model.influence_(Xt, yt))
    row["rss_after_vif_mib"] = rss_mib()
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
        if args.newton:
            newton, seconds = timed(lambda: model.influence_(Xt, yt, rows=rows,
                                                             method="newton"))
            row[f"newton_{group}"] = agreement(newton, exact)
            row[f"newton_{group}_s_per_row"] = seconds / rows.size
    row["refit_s_per_row"] = refit_s / max(refits, 1)
    row["refits_all_s"] = row["refit_s_per_row"] * cut
    row["rss_mib"] = rss_mib()
    print(json.dumps(row), flush=True)


def run_subprocess(arguments):
    command = [sys.executable, os.path.abspath(__file__)] + arguments
    # the subprocess imports the same skvif as this one
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(skvif.__file__)), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def neural(args):
    print("== neural Cox: influence of every training row on the test loss ==")
    for name in args.configs:
        row = run_subprocess(["neural-one", name, "--seed", str(args.seed), "--sample",
                              str(args.sample), "--top", str(args.top), "--alpha",
                              str(args.alpha), "--max-iter", str(args.max_iter)]
                             + (["--newton"] if args.newton else []))
        print(f"\n{name}: n_train {row['n_train']}, n_test {row['n_test']}, "
              f"{row['n_features']} columns, MLP {HIDDEN[name]}, {row['n_params']} params; "
              f"test concordance {row['test_cindex']:.3f}")
        print(f"  one training run          {row['fit_s']:9.1f} s ({row['fit_iter']} iterations)")
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
    parser.add_argument("mode", choices=["neural", "neural-one"])
    parser.add_argument("configs", nargs="*", default=["support", "synthetic"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=6)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--max-iter", type=int, default=2000)
    parser.add_argument("--newton", action="store_true")
    args = parser.parse_args()
    if args.mode == "neural":
        neural(args)
    else:
        neural_one(args.configs[0], args)


if __name__ == "__main__":
    main()
