"""python -m skvif cox, run as a user would."""

import subprocess
import sys

import numpy as np
import pandas as pd
from lifelines.datasets import load_rossi

from skvif import CoxPHInfluence


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
    np.testing.assert_allclose(written[list(model.feature_names_in_)].to_numpy(),
                               model.influence_(), rtol=1e-10)
    # the printed rows are the 3 with the largest size
    top = written["size"].nlargest(3).index
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
        ("cox", "--data", str(bad), "--duration", "t", "--event", "e"),
        ("cox", "--data", str(bad)),
        ("cox", "--top", "-2"),
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
    np.testing.assert_allclose(written[["age", "year", "surgery"]].to_numpy(),
                               model.influence_(groups=heart.id), rtol=1e-10)


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
