"""python -m skvif cox, run as a user would."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi

from skvif import CoxPHInfluence
from skvif.__main__ import main


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "skvif", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_default_rossi_audit(tmp_path):
    out = tmp_path / "influence.csv"
    res = run("cox", "--top", "3", "--out", str(out))
    assert res.returncode == 0, res.stderr
    rossi = load_rossi()
    model = CoxPHInfluence().fit(rossi.drop(columns=["week", "arrest"]),
                                 rossi[["week", "arrest"]])
    assert f"{model.coef_[0]:.4f}" in res.stdout  # fin's coefficient is printed
    written = pd.read_csv(out, index_col="row")
    estimated = (written["method"] == "vif").to_numpy()
    assert (~estimated).sum() == 3  # --refine defaults to --top
    np.testing.assert_allclose(written[list(model.feature_names_in_)].to_numpy()[estimated],
                               model.influence_()[estimated], rtol=1e-10)
    # the printed rows are the 3 refitted ones, by decreasing size
    top = written["size"][~estimated].sort_values(ascending=False).index
    lines = res.stdout.splitlines()
    table = lines[[i for i, line in enumerate(lines) if "most influential" in line][0] + 2:]
    assert [int(line.split()[0]) for line in table[:3]] == list(top)


def test_csv_input(tmp_path):
    rossi = load_rossi()
    path = tmp_path / "data.csv"
    rossi.to_csv(path, index=False)
    res = run("cox", "--data", str(path), "--duration", "week", "--event", "arrest", "--top", "0")
    assert res.returncode == 0, res.stderr
    assert "prio" in res.stdout


def test_bad_input_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"t": [1, 2, 3], "e": [1, 0, 1], "g": ["a", "b", "c"]}).to_csv(bad, index=False)
    cases = [
        ("cox", "--data", str(tmp_path / "missing.csv"), "--duration", "t", "--event", "e"),
        ("cox", "--data", str(bad), "--duration", "t", "--event", "nope"),
        ("cox", "--data", str(bad), "--duration", "g", "--event", "e"),  # text durations
        ("cox", "--data", str(bad)),
        ("cox", "--top", "-2"),
        ("cox", "--top", "abc"),  # argparse's own errors are one line too
    ]
    for args in cases:
        res = run(*args)
        assert res.returncode != 0
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("skvif: error:")
        assert "Traceback" not in res.stderr


def test_strata_entry_id_weights(tmp_path):
    # start-stop data: one subject per id, robust standard errors clustered by id
    from lifelines.datasets import load_stanford_heart_transplants

    heart = load_stanford_heart_transplants()
    heart["w"] = 1.0 + (heart.index % 3) / 2
    path, out = tmp_path / "heart.csv", tmp_path / "influence.csv"
    heart.to_csv(path, index=False)
    res = run("cox", "--data", str(path), "--duration", "stop", "--event", "event",
              "--entry", "start", "--strata", "transplant", "--id", "id", "--weights", "w",
              "--top", "3", "--out", str(out))
    assert res.returncode == 0, res.stderr
    X = heart[["age", "year", "surgery"]]
    model = CoxPHInfluence().fit(X, heart[["stop", "event"]], heart.w, entry=heart.start,
                                 strata=heart.transplant)
    robust = model.summary(robust=True, groups=heart.id)
    lines = res.stdout.splitlines()
    row = [line for line in lines if line.startswith("surgery")][0].split()
    assert float(row[3]) == round(robust.loc["surgery", "se(coef)"], 4)
    # the coefficient table comes before the influential subjects
    assert lines.index(next(x for x in lines if x.startswith("surgery"))) < \
        lines.index(next(x for x in lines if "most influential subjects" in x))
    written = pd.read_csv(out, index_col="id")
    assert list(written.index) == sorted(heart.id.unique())
    expected = model.influence_(groups=heart.id, refine=3)  # the printed units are refits
    np.testing.assert_allclose(written[["age", "year", "surgery"]].to_numpy(), expected,
                               rtol=1e-10, atol=1e-12)


def test_bad_role_columns_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"t": [1, 2, 3, 4], "e": [1, 0, 1, 1], "x": [0.1, 0.5, 0.2, 0.9],
                  "s": ["a", "b", "a", "b"], "g": [1, 1, 2, 2]}).to_csv(bad, index=False)
    base = ("cox", "--data", str(bad), "--duration", "t", "--event", "e")
    for extra in (("--strata", "nope"), ("--entry", "s"), ("--weights", "s"),
                  ("--id", "t"), ("--entry", "t")):
        res = run(*base, *extra)
        assert res.returncode != 0, extra
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("skvif: error:")


def run_in_process(argv, capsys):
    """``main(argv)`` as the console script runs it: exit code, stdout, stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _frame(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"t": rng.exponential(size=n).round(2) + 0.1,
                         "e": (rng.random(n) < 0.7).astype(int),
                         "x": rng.normal(size=n), "z": rng.normal(size=n)})


OK = _frame()
ROW2 = np.arange(len(OK)) == 2
DATA = "--data {path} --duration t --event e"
# name: (file content (DataFrame, bytes or None for no file), arguments, message fragment)
BAD_INPUT = {
    "missing file": (None, DATA, "cannot read"),
    "directory": ("dir", DATA, "cannot read"),
    "empty file": (b"", DATA, "cannot read {path}: No columns to parse from file"),
    "undecodable file": (b"\xff\xfe\x00t,e\n\x00\x01", DATA, "cannot read"),
    "header only": (OK.iloc[:0], DATA, "has no data rows"),
    "missing column": (OK, "--data {path} --duration t --event died",
                       "column(s) died not in {path}; columns are: t, e, x, z"),
    "no --event": (OK, "--data {path} --duration t", "--data needs --duration COL and --event COL"),
    "same column twice": (OK, "--data {path} --duration t --event t", "must all be different"),
    "negative --top": (OK, DATA + " --top -2", "--top must be >= 0"),
    "non-integer --top": (OK, DATA + " --top 2.5", "argument --top: invalid int value: '2.5'"),
    "unknown option": (OK, DATA + " --lambda 1", "unrecognized arguments: --lambda 1"),
    "negative --alpha": (OK, DATA + " --alpha -1", "--alpha must be a finite number >= 0"),
    "unknown --ties": (OK, DATA + " --ties exact", "argument --ties: invalid choice: 'exact'"),
    "unknown --covariates": (OK, DATA + " --covariates x,age", "column(s) age not in the data"),
    "--formula with --drop": (OK, DATA + " --formula x --drop z", "do not combine it"),
    "bad --formula": (OK, DATA + " --formula x+*", "cannot parse the formula"),
    "unknown --method": (OK, DATA + " --method exact", "argument --method: invalid choice"),
    "repeated --label": (OK.assign(name=["a", "b"] * 15), DATA + " --label name",
                         "has repeated values"),
    "non-numeric duration": (OK.assign(t="soon"), DATA, "the duration column 't' must be numeric"),
    "event not 0/1": (OK.assign(e=2 * OK.e), DATA, "the event column 'e' must be 0/1"),
    "no events": (OK.assign(e=0), DATA, "All observations are censored"),
    "negative durations": (OK.assign(t=-OK.t), DATA, "Survival times must be non-negative"),
    "missing values": (OK.assign(x=np.where(ROW2, np.nan, OK.x)), DATA + " --missing raise",
                       "1 of 30 row(s) have missing values (NaN or None) in the column(s) x (1)"),
    "infinite covariate": (OK.assign(x=np.where(ROW2, np.inf, OK.x)), DATA,
                           "the covariates contain infinite values"),
    "collinear covariates": (OK.assign(x_mg=1000 * OK.x), DATA,
                             "covariate column(s) x, x_mg are collinear or constant"),
    "constant covariate": (OK.assign(site=1), DATA, "covariate column(s) site are collinear"),
    "no covariates": (OK[["t", "e"]], DATA, "no covariate columns"),
    "entry after duration": (OK.assign(start=OK.t + 1), DATA + " --entry start",
                             "entry must be strictly before time"),
    "negative weights": (OK.assign(w=-1.0), DATA + " --weights w", "Negative values"),
    "unwritable --out": (OK, DATA + " --top 0 --out {tmp}/no/such/dir/out.csv",
                         "non-existent directory"),
    "unwritable --plot": (OK, DATA + " --top 0 --plot {tmp}/no/such/dir/out.png",
                          "non-existent directory"),
}


@pytest.mark.parametrize("name", BAD_INPUT)
def test_every_bad_input_is_one_line_naming_the_problem(name, tmp_path, capsys):
    content, args, fragment = BAD_INPUT[name]
    path = tmp_path / "data.csv"
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "dir":
        path.mkdir()
    fill = {"path": str(path), "tmp": str(tmp_path)}
    code, _, err = run_in_process(["cox", *args.format(**fill).split()], capsys)
    assert code not in (0, None)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("skvif: error: ") and "Traceback" not in err
    assert fragment.format(**fill) in err


def test_a_fit_warning_is_reported_on_stderr_after_a_successful_run(tmp_path, capsys):
    # events only where x = 1: monotone partial likelihood, the run still completes
    frame = OK.assign(x=OK.e.astype(float))
    path = tmp_path / "separated.csv"
    frame.to_csv(path, index=False)
    code, out, err = run_in_process(["cox", *DATA.format(path=path).split(), "--top", "1"],
                                    capsys)
    assert code == 0 and "Coefficients" in out
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("skvif: warning: ") for line in lines)
    assert any("monotone" in line for line in lines)


def test_alpha_and_ties_reach_the_fit(tmp_path, capsys):
    # a ridge penalty makes collinear covariates identifiable; on columns of unit
    # sample standard deviation lifelines' penalizer c equals alpha = n c
    from lifelines import CoxPHFitter

    frame = OK.assign(x=OK.x / OK.x.std(), z=OK.z / OK.z.std())
    frame = frame.assign(x2=frame.x)  # collinear: only fits with a penalty
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    alpha = 3.0
    code, out, err = run_in_process(
        ["cox", *DATA.format(path=path).split(), "--alpha", str(alpha), "--ties", "breslow",
         "--top", "0", "--out", str(tmp_path / "out.csv")], capsys)
    assert code == 0, err
    reference = CoxPHFitter(penalizer=alpha / len(frame)).fit(
        frame, "t", "e", fit_options={"precision": 1e-12})
    model = CoxPHInfluence(alpha=alpha, ties="breslow").fit(frame.drop(columns=["t", "e"]),
                                                           frame[["t", "e"]])
    written = pd.read_csv(tmp_path / "out.csv", index_col="row")
    np.testing.assert_allclose(written[["x", "z", "x2"]].to_numpy(), model.influence_(),
                               rtol=1e-10)
    # lifelines has only Efron ties: compare the penalty on the Efron fit
    efron = CoxPHInfluence(alpha=alpha).fit(frame.drop(columns=["t", "e"]), frame[["t", "e"]])
    np.testing.assert_allclose(efron.coef_, reference.params_[["x", "z", "x2"]], rtol=1e-5)
    assert not np.allclose(model.coef_, efron.coef_)


# ------------------------------------------------------------ one test per option
@pytest.fixture
def gbsg2_path(tmp_path):
    from sksurv.datasets import load_gbsg2

    X, y = load_gbsg2()
    path = tmp_path / "gbsg2.csv"
    X.assign(time=y["time"], cens=y["cens"].astype(int)).to_csv(path, index=False)
    return path


def coefficient_rows(out):
    lines = out.splitlines()
    start = lines.index("Coefficients:") + 3
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        rows[line.split()[0]] = [float(v) for v in line.split()[1:]]
    return rows


def test_formula_on_a_csv_with_string_factors(gbsg2_path, capsys):
    # R 3.5: coxph(Surv(time, cens) ~ ., gbsg2) on this CSV
    code, out, err = run_in_process(["cox", "--data", str(gbsg2_path), "--formula",
                                     "Surv(time, cens) ~ .", "--top", "2"], capsys)
    assert code == 0, err
    coef = {name: values[0] for name, values in coefficient_rows(out).items()}
    for name, value in {"horThyes": -0.3463, "menostatPre": -0.2584, "tgradeII": 0.6361,
                        "tgradeIII": 0.7797}.items():
        assert coef[name] == value
    assert "reference levels: horTh = no, menostat = Post, tgrade = I" in out
    # string factors are encoded without --formula too, and give the same fit
    code, out2, err = run_in_process(["cox", "--data", str(gbsg2_path), "--duration", "time",
                                      "--event", "cens", "--top", "2"], capsys)
    assert code == 0, err
    assert coefficient_rows(out2) == coefficient_rows(out)


def test_header_prints_n_events_concordance_and_lr_test(capsys):
    from lifelines import CoxPHFitter

    code, out, _ = run_in_process(["cox", "--top", "0"], capsys)
    cph = CoxPHFitter().fit(load_rossi(), "week", "arrest",
                            fit_options={"precision": 1e-16, "r_precision": 1e-18})
    lr = cph.log_likelihood_ratio_test()
    assert code == 0
    assert "n = 432, events = 114, censored = 318" in out
    assert f"concordance = {cph.concordance_index_:.3f}" in out
    assert f"log-likelihood = {cph.log_likelihood_:.3f}" in out
    assert f"likelihood ratio test = {lr.test_statistic:.2f} on 7 df" in out


def test_covariates_and_drop_choose_the_columns(tmp_path, capsys):
    path, out_csv = tmp_path / "data.csv", tmp_path / "out.csv"
    OK.assign(patient_id=np.arange(30)).to_csv(path, index=False)
    model = CoxPHInfluence().fit(OK[["x"]], OK[["t", "e"]])
    estimated, refitted = model.influence_(), model.influence_(method="loo")
    for option in (["--covariates", "x"], ["--drop", "z,patient_id"]):
        code, out, err = run_in_process(["cox", *DATA.format(path=path).split(), *option,
                                         "--out", str(out_csv)], capsys)
        assert code == 0, err
        written = pd.read_csv(out_csv, index_col="row").sort_index()
        assert list(written.columns) == ["x", "size", "method"]
        refit = (written["method"] == "refit").to_numpy()
        assert refit.sum() == 10  # --refine defaults to --top
        expected = np.where(refit[:, None], refitted, estimated)
        np.testing.assert_allclose(written[["x"]].to_numpy(), expected, rtol=1e-8)


def test_label_names_rows_without_clustering(tmp_path, capsys):
    path, out_csv = tmp_path / "data.csv", tmp_path / "out.csv"
    OK.assign(name=[f"p{i}" for i in range(30)]).to_csv(path, index=False)
    code, out, err = run_in_process(["cox", *DATA.format(path=path).split(), "--label", "name",
                                     "--top", "3", "--refine", "0", "--out", str(out_csv)],
                                    capsys)
    assert code == 0, err
    written = pd.read_csv(out_csv, index_col="name")
    assert list(written.index) == [f"p{i}" for i in range(30)]
    model = CoxPHInfluence().fit(OK[["x", "z"]], OK[["t", "e"]])
    np.testing.assert_allclose(written[["x", "z"]].to_numpy(), model.influence_(), rtol=1e-10)
    assert "robust" not in out  # no clustering: the model's own standard errors
    assert written["size"].idxmax() in out.split("size = RMS of the dfbetas")[1]


@pytest.mark.parametrize("method", ["if", "newton", "loo"])
def test_method_reaches_the_influence(tmp_path, capsys, method):
    path, out_csv = tmp_path / "data.csv", tmp_path / "out.csv"
    OK.to_csv(path, index=False)
    code, out, err = run_in_process(["cox", *DATA.format(path=path).split(), "--method",
                                     method, "--top", "2", "--refine", "0", "--out",
                                     str(out_csv)], capsys)
    assert code == 0, err
    assert f"method {method} (" in out
    model = CoxPHInfluence().fit(OK[["x", "z"]], OK[["t", "e"]])
    written = pd.read_csv(out_csv, index_col="row")
    np.testing.assert_allclose(written[["x", "z"]].to_numpy(),
                               model.influence_(method=method), rtol=1e-8, atol=1e-12)


def test_scale_dfbetas(tmp_path, capsys):
    path, out_csv = tmp_path / "data.csv", tmp_path / "out.csv"
    OK.to_csv(path, index=False)
    code, out, err = run_in_process(["cox", *DATA.format(path=path).split(), "--scale",
                                     "dfbetas", "--refine", "0", "--out", str(out_csv)],
                                    capsys)
    assert code == 0, err
    assert "dfbetas x" in out
    model = CoxPHInfluence().fit(OK[["x", "z"]], OK[["t", "e"]])
    written = pd.read_csv(out_csv, index_col="row")
    np.testing.assert_allclose(written[["x", "z"]].to_numpy(),
                               model.influence_() / model.standard_errors_.to_numpy(),
                               rtol=1e-10)
    # size is the root mean square of the dfbetas
    np.testing.assert_allclose(written["size"], np.sqrt((written[["x", "z"]] ** 2).mean(axis=1)),
                               rtol=1e-12)


def test_plot_writes_a_png(tmp_path, capsys):
    path, png = tmp_path / "data.csv", tmp_path / "influence.png"
    OK.to_csv(path, index=False)
    code, out, err = run_in_process(["cox", *DATA.format(path=path).split(), "--plot",
                                     str(png)], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verbose_reports_stages_and_progress(tmp_path, capsys):
    path = tmp_path / "data.csv"
    OK.to_csv(path, index=False)
    code, out, err = run_in_process(["cox", *DATA.format(path=path).split(), "--method", "loo",
                                     "--verbose", "--top", "0"], capsys)
    assert code == 0, err
    assert "skvif: fitting the Cox model on 30 rows and 2 covariates" in err
    assert "[skvif] refits" in err and "30/30" in err
    code, _, err = run_in_process(["cox", *DATA.format(path=path).split(), "--method", "loo",
                                   "--top", "0"], capsys)
    assert code == 0 and err == ""  # quiet by default when stderr is not a terminal


def test_missing_rows_are_dropped_counted_and_keep_their_labels(tmp_path, capsys):
    path, out_csv = tmp_path / "data.csv", tmp_path / "out.csv"
    frame = OK.assign(x=np.where(ROW2, np.nan, OK.x), unused=np.nan)
    frame.to_csv(path, index=False)
    code, out, err = run_in_process(["cox", *DATA.format(path=path).split(), "--drop", "unused",
                                     "--refine", "0", "--out", str(out_csv)], capsys)
    assert code == 0, err
    assert "1 of 30 rows dropped because of missing values (in the column(s) x (1))" in err
    assert "1 rows dropped for missing values" in out
    written = pd.read_csv(out_csv, index_col="row")
    assert list(written.index) == [i for i in range(30) if i != 2]
    model = CoxPHInfluence().fit(OK[["x", "z"]].drop(index=2), OK[["t", "e"]].drop(index=2))
    np.testing.assert_allclose(written[["x", "z"]].to_numpy(), model.influence_(), rtol=1e-10)


def test_out_is_written_in_chunks(tmp_path, capsys, monkeypatch):
    import skvif.__main__ as cli

    monkeypatch.setattr(cli, "OUT_CHUNK_ROWS", 7)  # 30 rows: 5 chunks
    path, out_csv = tmp_path / "data.csv", tmp_path / "out.csv"
    OK.to_csv(path, index=False)
    code, _, err = run_in_process(["cox", *DATA.format(path=path).split(), "--refine", "0",
                                   "--out", str(out_csv)], capsys)
    assert code == 0, err
    written = pd.read_csv(out_csv, index_col="row")
    assert list(written.index) == list(range(30))
    model = CoxPHInfluence().fit(OK[["x", "z"]], OK[["t", "e"]])
    np.testing.assert_allclose(written[["x", "z"]].to_numpy(), model.influence_(), rtol=1e-10)


def test_bad_out_path_fails_before_the_computation(tmp_path, capsys, monkeypatch):
    import skvif.survival

    def no_fit(*args, **kwargs):
        raise AssertionError("the model was fitted")

    monkeypatch.setattr(skvif.survival.CoxPHInfluence, "fit", no_fit)
    code, _, err = run_in_process(["cox", "--out", str(tmp_path / "no" / "out.csv")], capsys)
    assert code == 1 and "non-existent directory" in err
