"""Time of ``refine=k`` next to the fast estimate alone and to all exact refits.

Run: ``python benchmarks/bench_refine.py [k]`` (default k = 10). For each data
set: the VIF estimate for all rows, VIF + exact refits of the k rows with the
largest estimated change, and exact refits of all rows (``method="loo"``);
also the largest error of the refined rows against lifelines refits at tight
precision.
"""

import sys
import time

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi

from skvif import CoxPHInfluence

TIGHT = {"precision": 1e-16, "r_precision": 1e-18}


def sksurv_data(name):
    import sksurv.datasets

    X, y = getattr(sksurv.datasets, name)()
    X = pd.get_dummies(X, drop_first=True, dtype=float).astype(float)
    event, time_ = y.dtype.names
    return X, pd.DataFrame({"time": y[time_], "event": y[event].astype(float)})


def rossi():
    df = load_rossi()
    return df.drop(columns=["week", "arrest"]), df[["week", "arrest"]]


def lifelines_coef(X, y):
    frame = pd.concat([X, y.set_axis(["T", "E"], axis=1)], axis=1).reset_index(drop=True)
    return CoxPHFitter().fit(frame, "T", "E", fit_options=TIGHT).params_.to_numpy()


def timed(func):
    start = time.perf_counter()
    out = func()
    return out, time.perf_counter() - start


def main(k=10):
    data = {"rossi": rossi, "veterans": lambda: sksurv_data("load_veterans_lung_cancer"),
            "whas500": lambda: sksurv_data("load_whas500"),
            "gbsg2": lambda: sksurv_data("load_gbsg2")}
    print(f"{'data':>9} {'n':>4} {'vif all':>9} {'vif+refine':>11} {'all refits':>11} "
          f"{'refine/vif':>10} {'loo/refine':>10} {'max err refined':>16}")
    for name, load in data.items():
        X, y = load()
        model = CoxPHInfluence(tol=1e-12).fit(X, y)
        _, t_vif = timed(lambda: model.influence_())
        (refined, exact), t_refine = timed(lambda: model.influence_(refine=k,
                                                                    return_exact=True))
        _, t_loo = timed(lambda: model.influence_(method="loo"))
        base = lifelines_coef(X, y)
        err = 0.0
        for row in np.flatnonzero(exact):
            keep = np.arange(len(X)) != row
            truth = lifelines_coef(X.iloc[keep], y.iloc[keep]) - base
            err = max(err, np.max(np.abs(refined[row] - truth)))
        print(f"{name:>9} {len(X):>4} {t_vif:>8.3f}s {t_refine:>10.3f}s {t_loo:>10.3f}s "
              f"{t_refine / t_vif:>10.1f} {t_loo / t_refine:>10.1f} {err:>16.2e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
