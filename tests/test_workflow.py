"""The statistician's workflow: formulas, factors, missing data, fits from other libraries."""

import shutil
import subprocess
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from sklearn.base import clone
from sksurv.datasets import load_gbsg2, load_whas500
from sksurv.linear_model import CoxPHSurvivalAnalysis

from skvif import CoxPHInfluence
from skvif._progress import check_verbose
from skvif.survival import check_survival_y, coxph

PRECISE = {"precision": 1e-16, "r_precision": 1e-18}
# R 3.5: coxph(Surv(time, cens) ~ ., gbsg2) on the CSV (string factors), from the issue
R_GBSG2 = {"horThyes": -0.3463, "menostatPre": -0.2584, "tgradeII": 0.6361,
           "tgradeIII": 0.7797}
needs_r = pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs Rscript")


@pytest.fixture(scope="module")
def gbsg2_csv(tmp_path_factory):
    X, y = load_gbsg2()
    path = tmp_path_factory.mktemp("gbsg2") / "gbsg2.csv"
    X.assign(time=y["time"], cens=y["cens"].astype(int)).to_csv(path, index=False)
    return path


def run_r(code):
    res = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def read_r_table(text):
    rows = [line.split(",") for line in text.strip().splitlines()]
    return pd.DataFrame([[float(v) for v in r[1:]] for r in rows[1:]],
                        index=[r[0].strip('"') for r in rows[1:]])


def hand_encoded(frame):
    X = frame.drop(columns=["time", "cens"])
    X = pd.get_dummies(X, columns=["horTh", "menostat", "tgrade"], drop_first=True,
                       prefix_sep="", dtype=float)
    return X, frame[["time", "cens"]]


def test_gbsg2_formula_gives_r_coefficients(gbsg2_csv):
    model = coxph("Surv(time, cens) ~ .", pd.read_csv(gbsg2_csv))
    coef = pd.Series(model.coef_, index=model.feature_names_in_)
    for name, value in R_GBSG2.items():
        assert abs(coef[name] - value) < 1e-4, name
    assert model.reference_levels_ == {"horTh": "no", "menostat": "Post", "tgrade": "I"}


@needs_r
def test_gbsg2_formula_against_r_directly(gbsg2_csv):
    out = run_r(f'library(survival); d <- read.csv("{gbsg2_csv}", stringsAsFactors=TRUE); '
                'f <- coxph(Surv(time, cens) ~ ., d); '
                'write.csv(cbind(coef(f), sqrt(diag(f$var))), stdout())')
    reference = read_r_table(out)
    model = coxph("Surv(time, cens) ~ .", pd.read_csv(gbsg2_csv))
    assert list(model.feature_names_in_) == sorted(reference.index, key=list(
        model.feature_names_in_).index)
    np.testing.assert_allclose(model.params_[reference.index], reference[0], rtol=1e-6)
    np.testing.assert_allclose(model.standard_errors_[reference.index], reference[1],
                               rtol=1e-6)


@needs_r
def test_dfbetas_against_r(gbsg2_csv):
    out = run_r(f'library(survival); d <- read.csv("{gbsg2_csv}", stringsAsFactors=TRUE); '
                'f <- coxph(Surv(time, cens) ~ ., d); '
                'write.csv(residuals(f, type="dfbetas"), stdout())')
    reference = read_r_table(out).to_numpy()
    model = coxph("Surv(time, cens) ~ .", pd.read_csv(gbsg2_csv))
    dfbetas = model.influence_(method="if", scale="se")
    np.testing.assert_allclose(-dfbetas, reference, rtol=1e-5, atol=1e-9)


def test_formula_influence_equals_the_hand_encoded_fit(gbsg2_csv):
    frame = pd.read_csv(gbsg2_csv)
    model = coxph("Surv(time, cens) ~ .", frame)
    X, y = hand_encoded(frame)
    hand = CoxPHInfluence().fit(X[model.feature_names_in_], y)
    np.testing.assert_allclose(model.coef_, hand.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.influence_(), hand.influence_(), rtol=1e-8, atol=1e-14)


def test_formula_right_hand_side_strata_and_calls(gbsg2_csv):
    frame = pd.read_csv(gbsg2_csv)
    model = coxph("np.log(pnodes) + C(tgrade) + strata(horTh)", frame, duration="time",
                  event="cens")
    assert list(model.feature_names_in_) == ["np.log(pnodes)", "tgradeII", "tgradeIII"]
    X = pd.DataFrame({"lp": np.log(frame.pnodes), "II": 1.0 * (frame.tgrade == "II"),
                      "III": 1.0 * (frame.tgrade == "III")})
    ref = CoxPHFitter(strata=["horTh"]).fit(
        X.assign(time=frame.time, cens=frame.cens, horTh=frame.horTh), "time", "cens",
        fit_options=PRECISE)
    np.testing.assert_allclose(model.coef_, ref.params_, rtol=1e-6)
    with pytest.raises(ValueError, match="contradicts"):
        coxph("Surv(time, cens) ~ age", frame, duration="age")
    with pytest.raises(ValueError, match="not in the data"):
        coxph("Surv(time, cens) ~ nope", frame)


def test_missing_values_dropped_counted_and_labels_kept(gbsg2_csv):
    frame = pd.read_csv(gbsg2_csv)
    frame.index = [f"p{i}" for i in range(len(frame))]
    frame.loc[["p3", "p10"], "age"] = np.nan
    frame.loc["p20", "tgrade"] = None
    frame.loc["p30", "time"] = np.nan
    frame["unused"] = np.where(np.arange(len(frame)) == 40, np.nan, 1.0)  # not in the model
    with pytest.warns(UserWarning, match=r"4 of 686 rows dropped .*age \(2\).*tgrade \(1\)"):
        model = coxph("Surv(time, cens) ~ age + horTh + tgrade", frame)
    dropped = ["p3", "p10", "p20", "p30"]
    assert sorted(model.dropped_rows_) == sorted(dropped)
    influence = model.influence_(as_frame=True)
    assert list(influence.index) == [i for i in frame.index if i not in dropped]
    complete = frame.drop(index=dropped)
    ref = coxph("Surv(time, cens) ~ age + horTh + tgrade", complete)
    np.testing.assert_allclose(influence.to_numpy(), ref.influence_(), rtol=1e-10)
    with pytest.raises(ValueError, match=r"4 of 686 row\(s\) have missing values .* in the "
                                         r"column\(s\) time \(1\), age \(2\), tgrade \(1\)"):
        coxph("Surv(time, cens) ~ age + horTh + tgrade", frame, missing="raise")


def test_estimator_missing_option_keeps_positions_of_arrays():
    rossi = load_rossi()
    X = rossi.drop(columns=["week", "arrest"]).to_numpy(dtype=float)
    X[[5, 50], 1] = np.nan
    y = rossi[["week", "arrest"]].to_numpy()
    with pytest.raises(ValueError, match=r"2 of 432 row\(s\) have missing values .*in X \(2\)"):
        CoxPHInfluence().fit(X, y)
    with pytest.warns(UserWarning, match="2 of 432 rows dropped"):
        model = CoxPHInfluence(missing="drop").fit(X, y)
    keep = np.setdiff1d(np.arange(432), [5, 50])
    assert list(model.influence_(as_frame=True).index) == list(keep)
    ref = CoxPHInfluence().fit(X[keep], y[keep])
    np.testing.assert_allclose(model.influence_(), ref.influence_(), rtol=1e-10)


def test_factor_columns_in_fit_point_to_the_formula_and_the_pipeline(gbsg2_csv):
    frame = pd.read_csv(gbsg2_csv)
    with pytest.raises(ValueError, match=r"horTh, menostat, tgrade.*coxph\(.*OneHotEncoder"):
        CoxPHInfluence().fit(frame.drop(columns=["time", "cens"]), frame[["time", "cens"]])


def test_column_transformer_recipe_equals_the_formula(gbsg2_csv):
    from sklearn.compose import make_column_transformer
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.read_csv(gbsg2_csv)
    encode = make_column_transformer(
        (OneHotEncoder(drop="first", sparse_output=False), ["horTh", "menostat", "tgrade"]),
        remainder="passthrough", verbose_feature_names_out=False).set_output(transform="pandas")
    X = encode.fit_transform(frame.drop(columns=["time", "cens"]))
    model = CoxPHInfluence().fit(X, frame[["time", "cens"]])
    formula = coxph("Surv(time, cens) ~ .", frame)
    coef = pd.Series(model.coef_, index=[c.replace("_", "") for c in model.feature_names_in_])
    np.testing.assert_allclose(coef[formula.feature_names_in_], formula.coef_, rtol=1e-10)


# ------------------------------------------------------------ other libraries
def test_from_lifelines_rossi_with_strata():
    rossi = load_rossi()
    cph = CoxPHFitter(strata=["race"]).fit(rossi, "week", "arrest", fit_options=PRECISE)
    model = CoxPHInfluence.from_lifelines(cph, rossi)
    own = CoxPHInfluence().fit(rossi.drop(columns=["week", "arrest", "race"]),
                               rossi[["week", "arrest"]], strata=rossi.race)
    np.testing.assert_allclose(model.coef_, cph.params_, rtol=1e-8)
    np.testing.assert_allclose(model.influence_(), own.influence_(), rtol=1e-10)
    np.testing.assert_allclose(model.standard_errors_, cph.standard_errors_, rtol=1e-6)


def test_from_lifelines_formula_weights_and_penalizer():
    rossi = load_rossi().assign(w=lambda d: 1.0 + (d.index % 2))
    cph = CoxPHFitter().fit(rossi, "week", "arrest", formula="fin + age + prio",
                            weights_col="w", fit_options=PRECISE)
    model = CoxPHInfluence.from_lifelines(cph, rossi)
    np.testing.assert_allclose(model.coef_, cph.params_, rtol=1e-7)
    # a penalizer maps exactly when the columns' standard deviations are equal
    scaled = rossi[["week", "arrest"]].assign(
        age=rossi.age / rossi.age.std(), prio=rossi.prio / rossi.prio.std())
    cph = CoxPHFitter(penalizer=0.05).fit(scaled, "week", "arrest", fit_options=PRECISE)
    model = CoxPHInfluence.from_lifelines(cph, scaled)
    assert model.alpha == pytest.approx(len(scaled) * 0.05)
    np.testing.assert_allclose(model.coef_, cph.params_, rtol=1e-7)


def test_from_lifelines_refuses_what_does_not_map():
    rossi = load_rossi()
    early = CoxPHFitter().fit(rossi, "week", "arrest", fit_options={"max_steps": 2})
    with pytest.raises(ValueError, match=r"differ from the exact optimum by up to .*precision"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            CoxPHInfluence.from_lifelines(early, rossi)
    ridge = CoxPHFitter(penalizer=0.1).fit(rossi, "week", "arrest")
    with pytest.raises(ValueError, match="standardized columns"):
        CoxPHInfluence.from_lifelines(ridge, rossi)
    lasso = CoxPHFitter(penalizer=0.1, l1_ratio=0.5).fit(rossi, "week", "arrest")
    with pytest.raises(ValueError, match="l1 penalty"):
        CoxPHInfluence.from_lifelines(lasso, rossi)
    with pytest.raises(TypeError, match="fitted lifelines CoxPHFitter"):
        CoxPHInfluence.from_lifelines(CoxPHInfluence(), rossi)


@pytest.fixture(scope="module")
def whas500():
    X, y = load_whas500()
    return X.astype(float), y


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_from_sksurv_whas500(whas500, ties):
    X, y = whas500
    est = CoxPHSurvivalAnalysis(ties=ties, alpha=0.5).fit(X, y)
    model = CoxPHInfluence.from_sksurv(est, X, y)
    own = CoxPHInfluence(ties=ties, alpha=0.5).fit(X, y)
    np.testing.assert_allclose(model.coef_, est.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.influence_(), own.influence_(), rtol=1e-10)


def test_from_sksurv_refuses_what_does_not_map(whas500):
    X, y = whas500
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        early = CoxPHSurvivalAnalysis(n_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="scikit-survival model differ"):
        CoxPHInfluence.from_sksurv(early, X, y)
    per_column = CoxPHSurvivalAnalysis(alpha=np.arange(1.0, X.shape[1] + 1)).fit(X, y)
    with pytest.raises(ValueError, match="differs between columns"):
        CoxPHInfluence.from_sksurv(per_column, X, y)


# ------------------------------------------------------------ attributes
def test_lifelines_attributes(capsys):
    rossi = load_rossi()
    cph = CoxPHFitter().fit(rossi, "week", "arrest", fit_options=PRECISE)
    model = CoxPHInfluence().fit(rossi.drop(columns=["week", "arrest"]),
                                 rossi[["week", "arrest"]])
    pd.testing.assert_series_equal(model.hazard_ratios_, cph.hazard_ratios_, rtol=1e-8,
                                   check_names=False)
    pd.testing.assert_series_equal(model.standard_errors_, cph.standard_errors_, rtol=1e-6,
                                   check_names=False)
    pd.testing.assert_frame_equal(model.variance_matrix_, cph.variance_matrix_, rtol=1e-6,
                                  check_names=False)
    pd.testing.assert_frame_equal(model.confidence_intervals_, cph.confidence_intervals_,
                                  rtol=1e-6, check_names=False)
    assert model.concordance_index_ == pytest.approx(cph.concordance_index_, rel=1e-12)
    ours, theirs = model.log_likelihood_ratio_test(), cph.log_likelihood_ratio_test()
    assert ours.test_statistic == pytest.approx(theirs.test_statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.p_value, rel=1e-6)
    assert ours.degrees_freedom == 7
    model.print_summary()
    printed = capsys.readouterr().out
    assert "n = 432, events = 114, censored = 318" in printed
    assert f"likelihood ratio test = {theirs.test_statistic:.2f} on 7 df" in printed
    np.testing.assert_allclose(model.summary()["se(coef)"], model.standard_errors_, rtol=1e-12)
    dfbetas = model.influence_(scale="se", as_frame=True)
    np.testing.assert_allclose(dfbetas, model.influence_() / cph.standard_errors_.to_numpy(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="target='coef' only"):
        model.influence_(rossi.drop(columns=["week", "arrest"]), target="predict", scale="se")


def test_attributes_need_a_fit_and_follow_a_refit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CoxPHInfluence().standard_errors_
    rossi = load_rossi()
    X, y = rossi.drop(columns=["week", "arrest"]), rossi[["week", "arrest"]]
    model = CoxPHInfluence().fit(X, y)
    first = model.standard_errors_
    model.fit(X.iloc[:300], y.iloc[:300])
    assert not np.allclose(model.standard_errors_, first)


# ------------------------------------------------------------ y by name
def test_y_columns_read_by_name():
    rossi = load_rossi()
    X = rossi.drop(columns=["week", "arrest"])
    by_position = CoxPHInfluence().fit(X, rossi[["week", "arrest"]])
    by_name = CoxPHInfluence().fit(X, rossi[["arrest", "week"]])
    np.testing.assert_array_equal(by_position.coef_, by_name.coef_)
    event, time = check_survival_y(pd.DataFrame({"status": [1, 0], "days": [5.0, 3.0]}))
    assert event.tolist() == [True, False] and time.tolist() == [5.0, 3.0]
    with pytest.raises(ValueError, match=r"\[time, event\], read by position because its "
                                         "column names 'a', 'b' are not recognised"):
        check_survival_y(pd.DataFrame({"a": [1, 0], "b": [5.0, 3.0]}))


# ------------------------------------------------------------ progress
def test_progress_bar_on_request_only(capsys):
    rossi = load_rossi().iloc[:60]
    model = CoxPHInfluence().fit(rossi.drop(columns=["week", "arrest"]),
                                 rossi[["week", "arrest"]])
    quiet = model.influence_(method="loo")  # automatic: stderr is not a terminal here
    assert capsys.readouterr().err == ""
    model = clone(model)  # (the first model keeps its refits: asked again, it does none)
    model.fit(rossi.drop(columns=["week", "arrest"]), rossi[["week", "arrest"]])
    loud = model.influence_(method="loo", verbose=1)
    err = capsys.readouterr().err
    assert "[skvif] refits" in err and "60/60" in err
    np.testing.assert_array_equal(quiet, loud)
    with pytest.raises(ValueError, match="verbose must be"):
        check_verbose(-1)
