"""CoxPHInfluence against R's ``survival::coxph`` on random data, run live.

Random survival data sets are generated here with fixed seeds (tied and continuous
times, strata, delayed entry ``(start, stop]``, integer and fractional case weights,
clusters and subjects with several start-stop rows), written to CSV files, and fitted
by one ``Rscript`` process per batch with ``coxph(..., ties=, control=coxph.control(
eps=1e-12, iter.max=100))``. Compared with skvif, for Efron and Breslow ties:

- ``coef(fit)`` with ``coef_``;
- ``sqrt(diag(fit$naive.var))`` with ``summary()["se(coef)"]``;
- ``sqrt(diag(fit$var))`` (``robust=TRUE``) with ``summary(robust=True)``;
- ``residuals(fit, "dfbeta")`` with ``-influence_(method="if")``;
- with clusters, ``sqrt(diag(fit$var))`` of ``coxph(..., cluster=id)`` with
  ``summary(robust=True, groups=id)``, and ``residuals(fit, "dfbeta", collapse=id)``
  with ``-influence_(method="if", groups=id)``.

The measure is the relative error ``max |skvif - R| / max |R|`` over all entries of
one quantity (one data set), asserted below ``1e-8``. The tests are skipped, naming
the Debian packages, when ``Rscript`` or the ``survival`` package is absent.
"""

import shutil
import subprocess

import numpy as np
import pytest

from skvif import CoxPHInfluence

RTOL = 1e-8
INSTALL = "apt-get install r-base-core r-cran-survival"

R_SCRIPT = r"""
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
cases <- read.csv(file.path(dir, "cases.csv"), stringsAsFactors = FALSE)
out <- function(x, name) {
  x <- as.matrix(x)
  write.table(matrix(sprintf("%.17g", x), nrow(x)), file.path(dir, name),
              quote = FALSE, row.names = FALSE, col.names = FALSE)
}
for (k in seq_len(nrow(cases))) {
  case <- cases[k, ]
  d <- read.csv(file.path(dir, paste0(case$data, ".csv")))
  xs <- grep("^x", names(d), value = TRUE)
  lhs <- if (case$entry) "Surv(entry, time, status)" else "Surv(time, status)"
  rhs <- paste(c(xs, if (case$strata) "strata(stratum)"), collapse = " + ")
  formula <- as.formula(paste(lhs, "~", rhs))
  control <- coxph.control(eps = 1e-12, toler.chol = 1e-15, iter.max = 100)
  w <- if (case$weights) d$weight else NULL
  d$row <- seq_len(nrow(d))  # robust = TRUE: each row its own cluster
  fit <- coxph(formula, data = d, weights = w, ties = case$ties, cluster = row,
               control = control)
  stopifnot(fit$iter < 100)
  out(cbind(coef(fit), sqrt(diag(fit$naive.var)), sqrt(diag(fit$var))),
      paste0(case$name, "_coef.txt"))
  out(residuals(fit, type = "dfbeta"), paste0(case$name, "_dfbeta.txt"))
  if (case$cluster) {
    cfit <- coxph(formula, data = d, weights = w, ties = case$ties, cluster = id,
                  control = control)
    out(sqrt(diag(cfit$var)), paste0(case$name, "_cluster_se.txt"))
    out(residuals(fit, type = "dfbeta", collapse = d$id),
        paste0(case$name, "_cluster_dfbeta.txt"))
  }
}
"""


def r_survival_available():
    if shutil.which("Rscript") is None:
        return False
    done = subprocess.run(["Rscript", "-e", "library(survival)"], capture_output=True)
    return done.returncode == 0


# ------------------------------------------------------------------ random data
def make_case(seed, n, p, *, times, entry=False, strata=False, weights=None,
              cluster=False, start_stop=False, scales=(1.0, 5.0, 0.2, 2.0, 0.5), n_grid=12,
              spread=0.6):
    """A random Cox data set (dict of columns) drawn with a fixed seed.

    ``times="rounded"`` rounds the times to a coarse grid (heavy ties, entry times
    tied with event times); ``"continuous"`` keeps them distinct. ``start_stop``
    splits each subject's follow-up into 1-3 ``(start, stop]`` rows with a
    time-varying first covariate (the subject is the cluster ``id``). Column ``j`` is
    in units ``scales[j]``; ``spread`` bounds the true log hazard ratio of one
    standard deviation of a column; ``n_grid`` is the number of distinct rounded times.
    """
    rng = np.random.default_rng(seed)
    n_subjects = n // 2 if start_stop else n
    scales = np.asarray(scales, float)[:p]
    X = rng.normal(size=(n_subjects, p)) * scales
    beta = rng.uniform(-spread, spread, size=p) / scales
    t = rng.exponential(np.exp(-X @ beta))
    c = rng.exponential(1.5 * np.median(t), size=n_subjects)
    time, status = np.minimum(t, c), (t <= c).astype(int)
    if times == "rounded":
        grid = np.quantile(time, 0.9) / n_grid
        time = np.ceil(time / grid) * grid
    rows = {"time": time, "status": status, "id": np.arange(n_subjects), "X": X}
    if start_stop:
        rows = split_follow_up(rows, rng, grid if times == "rounded" else None)
    m = rows["time"].size
    if entry and not start_stop:
        start = rng.uniform(0, 0.8, m) * rows["time"] * (rng.uniform(size=m) < 0.6)
        if times == "rounded":
            start = np.floor(start / grid) * grid
        rows["entry"] = start
    if strata:
        rows["stratum"] = rng.integers(0, 3, m)
    if weights == "integer":
        rows["weight"] = rng.integers(1, 4, m).astype(float)
    elif weights == "fractional":
        rows["weight"] = rng.uniform(0.1, 3.0, m)
    if cluster and not start_stop:
        rows["id"] = rng.integers(0, max(m // 4, 2), m)
    return rows


def split_follow_up(rows, rng, grid):
    """Split each subject's ``(0, time]`` into 1-3 rows; the event is on the last one."""
    out = {"time": [], "status": [], "id": [], "entry": [], "X": []}
    for i, (stop, status, x) in enumerate(zip(rows["time"], rows["status"], rows["X"])):
        cuts = np.sort(rng.uniform(0, stop, rng.integers(0, 3)))
        if grid is not None:
            cuts = np.floor(cuts / grid) * grid
        bounds = np.unique(np.concatenate([[0.0], cuts, [stop]]))
        for k in range(bounds.size - 1):
            out["entry"].append(bounds[k])
            out["time"].append(bounds[k + 1])
            out["status"].append(status if k == bounds.size - 2 else 0)
            out["id"].append(i)
            out["X"].append(x + np.r_[0.5 * k * rng.normal(), np.zeros(x.size - 1)])
    return {key: np.asarray(value) for key, value in out.items()}


CASES = {
    # name: (seed, n, p, options); every design in the default run, larger ones slow
    "ties": (1, 120, 3, {"times": "rounded"}),
    "continuous": (2, 100, 3, {"times": "continuous"}),
    "strata": (3, 150, 2, {"times": "rounded", "strata": True}),
    "entry": (4, 150, 3, {"times": "rounded", "entry": True}),
    "weights": (5, 120, 3, {"times": "rounded", "weights": "fractional"}),
    "cluster": (6, 120, 2, {"times": "rounded", "cluster": True}),
    "all": (7, 200, 4, {"times": "rounded", "entry": True, "strata": True,
                        "weights": "fractional", "cluster": True}),
    "start_stop": (8, 160, 3, {"times": "rounded", "start_stop": True, "strata": True,
                               "weights": "integer", "cluster": True}),
    "continuous_all": (9, 150, 3, {"times": "continuous", "entry": True, "strata": True,
                                   "weights": "fractional", "cluster": True}),
    # adversarial: three distinct times; columns in units from 1e-3 to 1e4; linear
    # predictors spread over about +-15
    "heavy_ties": (10, 150, 3, {"times": "rounded", "n_grid": 3, "weights": "fractional",
                                "strata": True, "cluster": True}),
    "wide_units": (14, 150, 3, {"times": "continuous", "scales": (1e-3, 1.0, 1e4),
                                "entry": True, "cluster": True}),
    "large_lp": (15, 150, 3, {"times": "continuous", "spread": 4.0,
                              "scales": (1.0, 1.0, 1.0), "weights": "fractional",
                              "cluster": True}),
}
SLOW_CASES = {
    "big_ties": (11, 2000, 5, {"times": "rounded", "entry": True, "strata": True,
                               "weights": "fractional", "cluster": True}),
    "big_continuous": (12, 2000, 5, {"times": "continuous", "weights": "fractional",
                                     "cluster": True}),
    "big_start_stop": (13, 3000, 4, {"times": "rounded", "start_stop": True,
                                     "weights": "fractional", "cluster": True}),
    **{f"random_{seed}": (seed, 300, 3, {
        "times": ["rounded", "continuous"][seed % 2], "entry": seed % 3 == 0,
        "strata": seed % 4 < 2, "weights": [None, "integer", "fractional"][seed % 3],
        "cluster": True, "start_stop": seed % 5 == 0}) for seed in range(20, 40)},
}
TIES = ["efron", "breslow"]


def write_case(directory, name, rows):
    X = rows["X"]
    columns = {f"x{j + 1}": X[:, j] for j in range(X.shape[1])}
    columns.update({key: value for key, value in rows.items() if key != "X"})
    header = ",".join(columns)
    table = np.column_stack([np.asarray(v, float) for v in columns.values()])
    np.savetxt(directory / f"{name}.csv", table, delimiter=",", header=header,
               comments="", fmt="%.17g")


def run_r(directory, cases):
    """Fit every case with R in one process; return {(name, ties): results}."""
    if not r_survival_available():
        pytest.skip(f"Rscript with R package survival not found: {INSTALL}")
    specs = []
    for name, (seed, n, p, options) in cases.items():
        rows = make_case(seed, n, p, **options)
        write_case(directory, name, rows)
        for ties in TIES:
            specs.append((f"{name}_{ties}", name, ties, "entry" in rows, "stratum" in rows,
                          "weight" in rows, options.get("cluster", False)))
    with open(directory / "cases.csv", "w") as f:
        f.write("name,data,ties,entry,strata,weights,cluster\n")
        for spec in specs:
            f.write(",".join(spec[:3]) + ","
                    + ",".join("TRUE" if s else "FALSE" for s in spec[3:]) + "\n")
    (directory / "fit.R").write_text(R_SCRIPT)
    done = subprocess.run(["Rscript", str(directory / "fit.R"), str(directory)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    def read(name):
        return np.loadtxt(directory / name, ndmin=2)

    results = {}
    for name, ties, *_, cluster in specs:
        coef = read(f"{name}_coef.txt")
        got = {"coef": coef[:, 0], "se": coef[:, 1], "robust_se": coef[:, 2],
               "dfbeta": read(f"{name}_dfbeta.txt")}
        if cluster:
            got["cluster_se"] = read(f"{name}_cluster_se.txt")[:, 0]
            got["cluster_dfbeta"] = read(f"{name}_cluster_dfbeta.txt")
        results[name] = got
    return results


@pytest.fixture(scope="module")
def r_fits(tmp_path_factory):
    return run_r(tmp_path_factory.mktemp("r_cox"), CASES)


@pytest.fixture(scope="module")
def r_fits_slow(tmp_path_factory):
    return run_r(tmp_path_factory.mktemp("r_cox_slow"), SLOW_CASES)


# ------------------------------------------------------------------ comparison
def skvif_quantities(rows, ties):
    """skvif's counterparts of the R quantities, same order and sign as R."""
    y = np.column_stack([rows["time"], rows["status"]])
    model = CoxPHInfluence(ties=ties).fit(rows["X"], y, rows.get("weight"),
                                          strata=rows.get("stratum"),
                                          entry=rows.get("entry"))
    summary = model.summary()
    got = {"coef": model.coef_, "se": summary["se(coef)"].to_numpy(),
           "robust_se": model.summary(robust=True)["se(coef)"].to_numpy(),
           "dfbeta": -model.influence_(method="if")}
    got["cluster_se"] = model.summary(robust=True, groups=rows["id"])["se(coef)"].to_numpy()
    got["cluster_dfbeta"] = -model.influence_(method="if", groups=rows["id"])
    return got


def relative_errors(ours, theirs):
    """``max |ours - R| / max |R|`` per quantity R reported."""
    return {key: float(np.max(np.abs(np.reshape(ours[key], np.shape(ref)) - ref))
                       / np.max(np.abs(ref)))
            for key, ref in theirs.items()}


def check_against_r(cases, fits, name, ties):
    seed, n, p, options = cases[name]
    rows = make_case(seed, n, p, **options)
    theirs = fits[f"{name}_{ties}"]
    errors = relative_errors(skvif_quantities(rows, ties), theirs)
    assert max(errors.values()) < RTOL, errors
    return errors


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("name", list(CASES))
def test_coxph_equals_R_on_random_data(r_fits, name, ties):
    check_against_r(CASES, r_fits, name, ties)


@pytest.mark.slow
@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("name", list(SLOW_CASES))
def test_coxph_equals_R_on_large_random_data(r_fits_slow, name, ties):
    check_against_r(SLOW_CASES, r_fits_slow, name, ties)


def test_generated_data_has_the_designs_it_claims():
    # the comparison above is only as strong as the data: ties, tied entries, several
    # rows per subject and fractional weights really occur
    tied = make_case(*CASES["all"][:3], **CASES["all"][3])
    event_times = tied["time"][tied["status"] == 1]
    assert np.unique(event_times).size < 0.5 * event_times.size
    assert np.isin(tied["entry"][tied["entry"] > 0], event_times).any()
    assert np.any(tied["weight"] % 1 > 0) and np.unique(tied["stratum"]).size == 3
    continuous = make_case(*CASES["continuous_all"][:3], **CASES["continuous_all"][3])
    assert np.unique(continuous["time"]).size == continuous["time"].size
    subjects = make_case(*CASES["start_stop"][:3], **CASES["start_stop"][3])
    assert np.bincount(subjects["id"]).max() >= 3
    assert np.all(subjects["entry"] < subjects["time"])
