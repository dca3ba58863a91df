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
