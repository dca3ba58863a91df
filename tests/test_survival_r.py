"""CoxPHInfluence against R's ``survival`` package: published numbers and R's own formulas.

Every reference number below was printed by R (``survival::coxph``); the comment next
to it names the file it was copied from and the R call that made it. R's printed
precision is the bar: a value printed with ``k`` significant digits must be matched to
half a unit of its last digit.

Sources
-------
- statsmodels 0.15.0, ``statsmodels/duration/tests/results/`` (copied unchanged to
  ``tests/data/statsmodels_phreg/``, see its README): ``survival.R`` fits
  ``coxph(Surv(time, status) ~ exog)``, ``Surv(entry, time, status)`` and
  ``+ strata(strata)`` with ``ties = "breslow"`` and ``"efron"`` on five data sets
  whose times are rounded to 0.1 (heavy ties).
- lifelines, ``lifelines/tests/test_estimation.py`` (commit aa019b18f289), whose test
  docstrings quote the R calls: Rossi recidivism data, Stanford heart transplant
  start-stop data, the ``dfcv`` start-stop data, and five-row data sets with R's
  ``residuals(fit, type="dfbeta")``, ``robust=TRUE``, ``cluster()`` and ``weights=``.

No published R dfbeta on tied data was found, so :func:`r_score_residuals` re-implements
R's definition (``survival``'s ``coxscore``/``agscore``: weighted Efron score residuals
for counting-process data with strata, and the Efron information matrix) as a plain
loop over event times, independently of skvif's autograd objective. It is first checked
against R's published dfbeta (untied, with strata, with case weights), then used as the
reference on tied data: R's ``dfbeta = (w_i U_i) V`` with ``V`` = ``fit$var`` (the
inverse information), and R's robust variance is ``crossprod(dfbeta)`` (collapsed by
cluster first), which for case weights is the *weighted* dfbeta: ``residuals.coxph``
defaults to ``weighted=TRUE`` for ``type="dfbeta"``; the five-row weighted examples
below confirm it numerically.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_dfcv, load_rossi, load_stanford_heart_transplants

from _accuracy import assert_agrees
from skvif import CoxPHInfluence

DATA = Path(__file__).parent / "data" / "statsmodels_phreg"
R_SM = json.loads((DATA / "survival_r_results.json").read_text())


def assert_printed(actual, printed, digits=None, decimals=None):
    """``actual`` rounds to R's ``printed`` value (within half a unit of its last digit)."""
    actual, printed = np.asarray(actual, float), np.asarray(printed, float)
    if decimals is not None:
        half = np.full(printed.shape, 0.5 * 10.0 ** -decimals)
    else:
        half = 0.5 * 10.0 ** (np.floor(np.log10(np.abs(printed))) - digits + 1)
    err = np.abs(actual - printed)
    assert np.all(err <= half * (1 + 1e-6)), f"{actual} vs R {printed} (err {err}, bar {half})"


def load_sm(n, p):
    a = pd.read_csv(DATA / f"survival_data_{n}_{p}.csv", sep=" ", header=None).to_numpy()
    strata = np.kron(np.arange(5), np.ones(n // 5))  # survival.R: kronecker(seq(5), ...)
    return a[:, 3:], a[:, 0], a[:, 1], a[:, 2], strata


# five-row data of lifelines' R tests
V1 = np.array([0.209325, 0.693919, 0.443804, 0.065636, 0.386294])
V2 = np.array([0.184677, 0.071893, 1.364646, 0.098375, 1.663092])
T_A = np.array([7.335846, 5.269797, 11.684092, 12.678458, 6.601666])
T_SORTED = np.array([5.269797, 6.601666, 7.335846, 11.684092, 12.678458])


def fit5(X, T, E=np.ones(5), weights=None, **kw):
    X = np.asarray(X, float).reshape(5, -1)
    return CoxPHInfluence().fit(X, np.c_[T, E], weights, **kw)


# ----------------------------------------------------------------- R's definition
def r_score_residuals(X, time, event, beta, weights=None, entry=None, strata=None,
                      ties="efron"):
    """R's score residuals ``U`` (per unit case weight) and information matrix ``I``.

    A direct loop over (stratum, event time), as in ``survival``'s C code: at an
    event time with ``d`` tied deaths ``D`` and risk set ``R = {entry < t <= time}``,
    for ``k = 0..d-1`` (Efron; Breslow uses ``f = 0``) with ``f = k/d``,
    ``den_k = S0 - f E0``, ``mean_k = (S1 - f E1) / den_k`` and hazard
    ``meanwt / den_k`` (``meanwt`` = mean case weight of the tied deaths), row
    ``j in R`` gets ``-(1 - f [j in D]) r_j haz_k (x_j - mean_k)`` and a death gets
    ``(x_j - mean_k) / d``; ``I = sum meanwt ((S2 - f E2) / den_k - mean_k mean_k')``.
    """
    n, p = X.shape
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    entry = np.full(n, -np.inf) if entry is None else np.asarray(entry, float)
    strata = np.zeros(n) if strata is None else np.asarray(strata)
    r = np.exp(X @ beta)
    U, info = np.zeros((n, p)), np.zeros((p, p))
    for s in np.unique(strata):
        in_s = strata == s
        for t in np.unique(time[in_s & (event == 1)]):
            risk = np.flatnonzero(in_s & (entry < t) & (time >= t))
            dead = np.flatnonzero(in_s & (time == t) & (event == 1))
            d, wr = len(dead), w * r
            meanwt = w[dead].sum() / d
            S0, S1 = wr[risk].sum(), wr[risk] @ X[risk]
            S2 = (X[risk].T * wr[risk]) @ X[risk]
            E0, E1 = wr[dead].sum(), wr[dead] @ X[dead]
            E2 = (X[dead].T * wr[dead]) @ X[dead]
            for k in range(d):
                f = k / d if ties == "efron" else 0.0
                den = S0 - f * E0
                mean = (S1 - f * E1) / den
                haz = meanwt / den
                info += meanwt * ((S2 - f * E2) / den - np.outer(mean, mean))
                down = np.where(np.isin(risk, dead), 1 - f, 1.0)
                U[risk] -= (down * r[risk] * haz)[:, None] * (X[risk] - mean)
                U[dead] += (X[dead] - mean) / d
    return U, info


def r_dfbeta(X, time, event, beta, weights=None, **kw):
    """R's ``residuals(fit, type="dfbeta")`` (weighted, R's default) and ``fit$var``."""
    U, info = r_score_residuals(X, time, event, beta, weights, **kw)
    w = np.ones(len(time)) if weights is None else np.asarray(weights, float)
    V = np.linalg.inv(info)
    return (w[:, None] * U) @ V, V


# --------------------------------------------------- statsmodels' R results: ties
DESIGNS = {"": {}, "et_": {"entry"}, "st_": {"strata"}, "et_st_": {"entry", "strata"}}


@pytest.mark.parametrize("ties", ["breslow", "efron"])
@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("n,p", [(20, 1), (50, 1), (50, 2), (100, 5), (1000, 10)])
def test_coef_and_se_equal_R_statsmodels_results(n, p, design, ties):
    # statsmodels results/survival_r_results.py, made by results/survival.R:
    #   coxph(Surv(time, status) ~ exog, ties=ties)                    -> coef_/se_{n}_{p}_{ti}
    #   coxph(Surv(entry, time, status) ~ exog, ties=ties)             -> ..._et_...
    #   coxph(Surv(time, status) ~ exog + strata(strata), ties=ties)   -> ..._st_...
    #   coxph(Surv(entry, time, status) ~ exog + strata(strata), ...)  -> ..._et_st_...
    # with se = sqrt(diag(md$var)); printed with 7 significant digits
    X, time, status, entry, strata = load_sm(n, p)
    kw = {name: {"entry": entry, "strata": strata}[name] for name in DESIGNS[design]}
    model = CoxPHInfluence(ties=ties).fit(X, np.c_[time, status], **kw)
    tag = f"{n}_{p}_{design}{ties[:3]}"
    assert_printed(model.coef_, R_SM[f"coef_{tag}"], digits=7)
    assert_printed(model.summary()["se(coef)"], R_SM[f"se_{tag}"], digits=7)


# ------------------------------------------------------- lifelines' quoted R output
def test_rossi_equals_R():
    # lifelines test_coef_output_against_R_super_accurate, test_standard_error_coef_
    # output_against_R, test_z_value_output_against_R_to_3_decimal_places:
    #   r <- coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio,
    #              data=rossi); summary(r)        (Efron, tied weekly times)
    rossi = load_rossi()
    model = CoxPHInfluence().fit(rossi.drop(columns=["week", "arrest"]),
                                 rossi[["week", "arrest"]])
    summary = model.summary()
    assert_printed(model.coef_, [-0.3794222, -0.0574377, 0.3138998, -0.1497957,
                                 -0.4337039, -0.0848711, 0.0914971], decimals=7)
    assert_printed(summary["se(coef)"], [0.19138, 0.02200, 0.30799, 0.21222, 0.38187,
                                         0.19576, 0.02865], decimals=5)
    assert_printed(summary["z"], [-1.983, -2.611, 1.019, -0.706, -1.136, -0.434, 3.194],
                   decimals=3)
    # test_coef_output_against_R_with_strata_super_accurate:
    #   coxph(Surv(week, arrest) ~ fin + age + strata(race) + wexp + mar + paro + prio)
    strat = CoxPHInfluence().fit(rossi.drop(columns=["week", "arrest", "race"]),
                                 rossi[["week", "arrest"]], strata=rossi.race)
    assert_printed(strat.coef_, [-0.3788, -0.0576, -0.1427, -0.4388, -0.0858, 0.0922],
                   decimals=4)


def test_start_stop_heart_transplant_equals_R():
    # lifelines test_summary_output_versus_Rs_against_standford_heart_transplant:
    #   data(heart); coxph(Surv(start, stop, event) ~ age + transplant + surgery + year)
    # (coefficients listed in lifelines' column order: age, year, surgery, transplant)
    heart = load_stanford_heart_transplants()
    y = heart[["stop", "event"]]
    model = CoxPHInfluence().fit(heart[["age", "year", "surgery", "transplant"]], y,
                                 entry=heart.start)
    summary = model.summary()
    assert_printed(model.coef_, [0.0272, -0.1463, -0.6372, -0.0103], decimals=4)
    assert_printed(summary["se(coef)"], [0.0137, 0.0705, 0.3672, 0.3138], decimals=4)
    assert_printed(summary["p"], [0.048, 0.038, 0.083, 0.974], decimals=3)
    # test_ctv_with_strata_against_R:
    #   coxph(Surv(start, stop, event) ~ age + strata(transplant) + surgery + year)
    #   (sorted by name: age, surgery, year); logLik(r) = -254.7144
    strat = CoxPHInfluence().fit(heart[["age", "surgery", "year"]], y, entry=heart.start,
                                 strata=heart.transplant)
    summary = strat.summary()
    assert_printed(strat.coef_, [0.0293, -0.6176, -0.1527], decimals=4)
    assert_printed(summary["se(coef)"], [0.0139, 0.3707, 0.0710], decimals=4)
    assert_printed(summary["z"], [2.11, -1.67, -2.15], decimals=2)
    assert_printed(strat.log_likelihood_, -254.7144, decimals=4)


def test_start_stop_dfcv_with_and_without_weights_equals_R():
    # lifelines test_inference_against_known_R_output (slides rxu/math284/slect7.pdf):
    #   coxph(Surv(time = start, time2 = stop, event) ~ group + z, data = dfcv)
    dfcv = load_dfcv()
    X, y = dfcv[["group", "z"]], dfcv[["stop", "event"]]
    model = CoxPHInfluence().fit(X, y, entry=dfcv.start)
    assert_printed(model.coef_, [1.826757, 0.705963], decimals=6)
    assert_printed(model.summary()["se(coef)"], [1.229, 1.206], decimals=3)
    # test_inference_against_known_R_output_with_weights: the same with weights=
    w = [0.4600926178338619, 0.046432574620396294, 0.38150793079960477,
         0.11903675541025949, 0.5196585971574837, 0.9617313298681641,
         0.3243552664091651, 0.16708398114269085, 0.8546441798716636,
         0.15146480991643507, 0.24713429350878657, 0.5519831777187729,
         0.16948366380884838, 0.19246482703103884]
    weighted = CoxPHInfluence().fit(X, y, w, entry=dfcv.start)
    assert_printed(weighted.coef_, [0.313, 0.423], decimals=3)
    assert_printed(weighted.summary()["se(coef)"], [1.542, 1.997], decimals=3)


def test_case_weights_equal_R():
    # lifelines test_trival_float_weights_with_no_ties_is_the_same_as_R:
    #   coxph(Surv(T, E) ~ var1 + var2, data=df, weights=var3), var3 = 0.75
    #   coef 7.680 -0.915, se 6.641 1.650, loglik -1.142397
    model = fit5(np.c_[V1, V2], T_A, weights=np.full(5, 0.75))
    assert_printed(model.coef_, [7.680, -0.915], decimals=3)
    assert_printed(model.summary()["se(coef)"], [6.641, 1.650], decimals=3)
    assert_printed(model.log_likelihood_, -1.142397, decimals=6)
    # test_less_trival_float_weights_with_no_ties_is_the_same_as_R: var3 = (1.75, .75, ...)
    model = fit5(np.c_[V1, V2], T_A, weights=[1.75, 0.75, 0.75, 0.75, 0.75])
    assert_printed(model.coef_, [7.995, -1.154], decimals=3)
    assert_printed(model.summary()["se(coef)"], [6.690, 1.614], decimals=3)
    # test_robust_errors_with_less_trival_weights_is_the_same_as_R: T = 1..5,
    # weights (2, 2, 2, 1, 2); r$naive.var printed as [[3.5439245, -0.3549099],
    # [-0.3549099, 0.4499553]] (the inverse information of the weighted likelihood)
    model = fit5(np.c_[V1, V2], [1, 2, 3, 4, 5], weights=[2, 2, 2, 1, 2])
    assert_printed(model.coef_, [1.431, -1.277], decimals=3)
    naive = model.summary()["se(coef)"].to_numpy() ** 2
    assert_printed(naive, [3.5439245, 0.4499553], decimals=7)
    _, V = r_dfbeta(np.c_[V1, V2], np.arange(1.0, 6.0), np.ones(5), model.coef_,
                    [2, 2, 2, 1, 2])
    assert_printed(V[0, 1], -0.3549099, decimals=7)


def test_robust_and_cluster_se_equal_R():
    # lifelines test_robust_errors_is_the_same_as_R:
    #   coxph(Surv(T, E) ~ var1 + var2, data=df, robust=TRUE)   -> se 2.097 0.827
    model = fit5(np.c_[V1, V2], T_A)
    assert_printed(model.summary(robust=True)["se(coef)"], [2.097, 0.827], decimals=3)
    # test_robust_errors_with_trivial_weights_is_the_same_than_R: weights 0.75, same se
    model = fit5(np.c_[V1, V2], T_A, weights=np.full(5, 0.75))
    assert_printed(model.summary(robust=True)["se(coef)"], [2.097, 0.827], decimals=3)
    # test_robust_errors_with_less_trival_weights_is_the_same_as_R -> se 2.094 0.452
    model = fit5(np.c_[V1, V2], [1, 2, 3, 4, 5], weights=[2, 2, 2, 1, 2])
    assert_printed(model.summary(robust=True)["se(coef)"], [2.094, 0.452], decimals=3)
    # test_robust_errors_with_non_trivial_weights_is_the_same_as_R:
    #   coxph(Surv(T, E) ~ var1 + var2, weights=var3, robust=TRUE), var3 = var2
    model = fit5(np.c_[V1, V2], T_A, weights=V2)
    assert_printed(model.coef_, [-5.16231, 1.71924], decimals=5)
    assert_printed(model.summary(robust=True)["se(coef)"], [9.97730, 2.45648], decimals=5)
    # ..._with_censorship_...: E = (1, 1, 0, 1, 1)
    model = fit5(np.c_[V1, V2], T_A, E=np.array([1, 1, 0, 1, 1]), weights=V2)
    assert_printed(model.coef_, [-8.360533, 1.781126], decimals=6)
    assert_printed(model.summary(robust=True)["se(coef)"], [12.303338, 2.395670],
                   decimals=6)
    # test_cluster_option: coxph(Surv(T, E) ~ var1 + var2 + cluster(id)),
    #   id = (1, 1, 2, 3, 4)                                     -> se 5.9752 4.0683
    # skvif gives 5.975208, 4.068387: the second quoted value is one unit off in its
    # last digit (4.06839 rounds to 4.0684; it looks truncated). R's own Newton
    # iterates (from 0, stopping at |1 - old/new loglik| <= 1e-9) end at the same
    # optimum, so convergence does not explain it; we hold it to one unit.
    model = fit5(np.c_[[1, 1, 2, 2, 2], V2], T_A)
    se = model.summary(robust=True, groups=[1, 1, 2, 3, 4])["se(coef)"].to_numpy()
    assert_printed(se[0], 5.9752, decimals=4)
    assert abs(se[1] - 4.0683) < 1e-4
    # test_cluster_option_with_strata:
    #   coxph(Surv(T, E) ~ strata(strata) + var + cluster(id))   -> se 0.643
    model = fit5(V2, T_SORTED, strata=[1, 1, 2, 2, 2])
    assert_printed(model.summary(robust=True, groups=[1, 1, 2, 3, 4])["se(coef)"], [0.643],
                   decimals=3)


# lifelines test_delta_betas_are_the_same_as_in_R, ..._with_strata_..., ..._with_weights_...:
#   coxph(Surv(T, E) ~ var1 [+ strata(strata)], data=df [, weights=w]);
#   residuals(r, 'dfbeta')
# The R comment of the first lists T in another order than the data frame the test
# fits; the printed numbers belong to the data frame's pairing (T sorted), used here.
PUBLISHED_DFBETA = [
    ({}, [-1.1099688, 0.6620063, 0.4630473, 0.5807250, -0.5958099]),
    ({"strata": [1, 1, 1, 2, 2]}, [-0.6960789, 1.6729761, 0.3094744, -0.2895864,
                                   -0.9967852]),
    ({"weights": [1, 0.5, 2, 1, 1]}, [-1.1156470, 0.7698781, 0.3923246, 0.8040079,
                                      -0.8505637]),
]


@pytest.mark.parametrize("options,dfbeta", PUBLISHED_DFBETA)
def test_minus_if_and_the_reference_formula_equal_published_R_dfbeta(options, dfbeta):
    options = dict(options)
    weights = options.pop("weights", None)
    model = fit5(V1, T_SORTED, weights=weights, **options)
    assert_printed(-model.influence_(method="if")[:, 0], dfbeta, decimals=7)
    ref, _ = r_dfbeta(V1[:, None], T_SORTED, np.ones(5), model.coef_, weights, **options)
    assert_printed(ref[:, 0], dfbeta, decimals=7)


# ------------------------------------------------------ R's dfbeta on tied data
@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("design", ["plain", "entry+strata", "weights+entry+strata"])
def test_minus_if_equals_R_dfbeta_on_tied_data(ties, design):
    # statsmodels survival_data_100_5: 100 rows, 70 distinct event times, heavy ties
    X, time, status, entry, strata = load_sm(100, 5)
    kw = {} if design == "plain" else {"entry": entry, "strata": strata}
    weights = None
    if design.startswith("weights"):
        weights = np.random.default_rng(0).uniform(0.2, 2.0, size=len(time))
    model = CoxPHInfluence(ties=ties).fit(X, np.c_[time, status], weights, **kw)
    ref, V = r_dfbeta(X, time, status, model.coef_, weights, ties=ties, **kw)
    np.testing.assert_allclose(-model.influence_(method="if"), ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.summary()["se(coef)"], np.sqrt(np.diag(V)),
                               rtol=1e-8)


def test_minus_if_equals_R_dfbeta_on_rossi():
    rossi = load_rossi()
    X = rossi.drop(columns=["week", "arrest"])
    model = CoxPHInfluence().fit(X, rossi[["week", "arrest"]])
    ref, _ = r_dfbeta(X.to_numpy(float), rossi.week.to_numpy(float),
                      rossi.arrest.to_numpy(), model.coef_)
    np.testing.assert_allclose(-model.influence_(method="if"), ref, rtol=0, atol=1e-8)


# ------------------------------------------------------------- sandwich variance
def test_robust_variance_is_the_direct_sandwich():
    # H^-1 (sum_i U_i U_i') H^-1 with R's score residuals U_i (times the case weight)
    # and H the information, computed independently; clustered: U summed per cluster
    X, time, status, entry, strata = load_sm(100, 5)
    weights = np.random.default_rng(1).uniform(0.5, 1.5, size=len(time))
    kw = {"entry": entry, "strata": strata}
    model = CoxPHInfluence().fit(X, np.c_[time, status], weights, **kw)
    U, H = r_score_residuals(X, time, status, model.coef_, weights, **kw)
    U = weights[:, None] * U
    Hinv = np.linalg.inv(H)
    D = model.influence_(method="if")
    np.testing.assert_allclose(D.T @ D, Hinv @ (U.T @ U) @ Hinv, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(model.summary(robust=True)["se(coef)"],
                               np.sqrt(np.diag(Hinv @ (U.T @ U) @ Hinv)), rtol=1e-8)
    groups = np.arange(len(time)) % 17
    Ug = np.stack([U[groups == g].sum(axis=0) for g in range(17)])
    np.testing.assert_allclose(model.summary(robust=True, groups=groups)["se(coef)"],
                               np.sqrt(np.diag(Hinv @ (Ug.T @ Ug) @ Hinv)), rtol=1e-8)


# ----------------------------------------------- exact deletion against refits
@pytest.fixture(scope="module")
def entry_strata_fit():
    # Rossi with strata (wexp), delayed entry (tied, integer weeks) and case weights
    rossi = load_rossi()
    rng = np.random.default_rng(3)
    entry = np.floor(rng.uniform(0, 0.7, len(rossi)) * rossi.week.to_numpy())
    weights = rng.uniform(0.5, 1.5, len(rossi))
    X, y = rossi.drop(columns=["week", "arrest", "wexp"]), rossi[["week", "arrest"]]
    design = {"sample_weight": weights, "entry": entry, "strata": rossi.wexp}
    model = CoxPHInfluence().fit(X, y, **design)
    return model, model.influence_(method="loo"), X, y, design


# bands of (r, slope of estimate on refit, max |error| / max |change|) per column; the
# measured ranges over the columns are in the comments
ENTRY_BANDS = {
    "vif": {"min_r": 0.998, "slope": (0.91, 1.0), "max_error": 0.12},  # [0.929, 0.982], 0.093
    "newton": {"min_r": 0.999, "slope": (0.94, 1.02), "max_error": 0.09},  # [0.961, 1.001], 0.070
}
SUBJECT_BANDS = {
    "vif": {"min_r": 0.998, "slope": (0.93, 0.99), "max_error": 0.1},  # [0.952, 0.971], 0.078
    "newton": {"min_r": 0.998, "slope": (0.98, 1.02), "max_error": 0.08},  # [0.999, 1.005], 0.058
}


@pytest.mark.parametrize("method", ["vif", "newton"])
def test_entry_strata_weights_influence_matches_refits(entry_strata_fit, method):
    model, loo, X, y, design = entry_strata_fit
    est = model.influence_(method=method)
    for j in range(loo.shape[1]):
        assert_agrees(est[:, j], loo[:, j], **ENTRY_BANDS[method], label=f"column {j}")
    # "loo" is a real refit without the row: one of them by hand
    keep = np.arange(len(X)) != 7
    refit = CoxPHInfluence().fit(X[keep], y[keep],
                                 **{k: np.asarray(v)[keep] for k, v in design.items()})
    np.testing.assert_allclose(refit.coef_ - model.coef_, loo[7], atol=1e-7)


@pytest.mark.parametrize("method", ["vif", "newton"])
def test_start_stop_subject_influence_matches_refits(method):
    # Stanford heart transplant, start-stop rows; a unit is a subject (all its rows)
    heart = load_stanford_heart_transplants()
    X = heart[["age", "year", "surgery"]]
    model = CoxPHInfluence().fit(X, heart[["stop", "event"]], entry=heart.start,
                                 strata=heart.transplant)
    loo = model.influence_(method="loo", groups=heart.id)
    est = model.influence_(method=method, groups=heart.id)
    assert est.shape == (heart.id.nunique(), 3)
    for j in range(loo.shape[1]):
        assert_agrees(est[:, j], loo[:, j], **SUBJECT_BANDS[method], label=f"column {j}")
