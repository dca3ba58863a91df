"""Tests of skvif.plotting on the Agg backend: what is drawn, not only that it runs."""

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from skvif import CoxPHInfluence  # noqa: E402
from skvif.plotting import (plot_estimated_vs_exact, plot_influence_index,  # noqa: E402
                            plot_top_influence)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def frame():
    """An influence table as ``influence_(as_frame=True)`` returns it: labelled rows."""
    rng = np.random.RandomState(0)
    values = rng.standard_normal((12, 3))
    values[4, 1] = 5.0     # the most influential unit on "b"
    values[9, 1] = -4.0    # the second, negative
    index = pd.Index([f"row{i}" for i in range(12)], name="person")
    return pd.DataFrame(values, index=index, columns=["a", "b", "c"])


def tick_texts(labels):
    return [t.get_text() for t in labels]


def data_lines(ax):
    """The plotted series (the zero line and other helpers have private labels)."""
    return [line for line in ax.lines if not line.get_label().startswith("_")]


def bar_widths(ax):
    return np.array([p.get_width() for p in ax.patches])


# --------------------------------------------------------------------------
# plot_top_influence
# --------------------------------------------------------------------------
def test_top_bars_are_the_k_largest_absolute_influences_with_their_sign(frame):
    ax = plot_top_influence(frame, "b", k=5)
    values = frame["b"].to_numpy()
    order = np.argsort(-np.abs(values))[:5]
    np.testing.assert_array_equal(bar_widths(ax), values[order])
    assert bar_widths(ax)[:2].tolist() == [5.0, -4.0]
    # the DataFrame's index labels become the tick labels, in bar order
    ticks = tick_texts(ax.get_yticklabels())
    assert ticks == [frame.index[i] for i in order]
    assert ticks[:2] == ["row4", "row9"]
    # bars sit at the tick positions, most influential on top (inverted y axis)
    centres = [p.get_y() + p.get_height() / 2 for p in ax.patches]
    np.testing.assert_allclose(centres, ax.get_yticks())
    bottom, top = ax.get_ylim()
    assert bottom > top
    # colour encodes the sign
    assert ax.patches[0].get_facecolor() == to_rgba("tab:red")
    assert ax.patches[1].get_facecolor() == to_rgba("tab:blue")
    assert ax.get_ylabel() == "person"
    assert ax.get_xlabel() == "change of b when removed"


def test_top_by_position_equals_by_label(frame):
    by_label = bar_widths(plot_top_influence(frame, "c", k=4))
    by_position = bar_widths(plot_top_influence(frame, 2, k=4))
    np.testing.assert_array_equal(by_label, by_position)


def test_top_several_columns_ranks_by_row_norm(frame):
    ax = plot_top_influence(frame, ["a", "c"], k=3)
    norms = np.sqrt(frame["a"] ** 2 + frame["c"] ** 2)
    expected = norms.sort_values(ascending=False).iloc[:3]
    np.testing.assert_allclose(bar_widths(ax), expected.to_numpy())
    assert tick_texts(ax.get_yticklabels()) == list(expected.index)
    assert "norm" in ax.get_xlabel()


def test_top_k_larger_than_units_shows_all_and_series_works():
    s = pd.Series([0.1, -0.5, 0.2], index=["ann", "bob", "cy"], name="age")
    ax = plot_top_influence(s, k=10)
    np.testing.assert_array_equal(bar_widths(ax), [-0.5, 0.2, 0.1])
    assert tick_texts(ax.get_yticklabels()) == ["bob", "cy", "ann"]
    assert ax.get_xlabel() == "change of age when removed"


def test_top_plain_array_labels_are_positions():
    ax = plot_top_influence(np.array([0.0, 3.0, -1.0, 2.0]), k=2)
    np.testing.assert_array_equal(bar_widths(ax), [3.0, 2.0])
    assert tick_texts(ax.get_yticklabels()) == ["1", "3"]


def test_top_skips_nan_units():
    # a node embedding's influence is NaN for the pairs of the removed node itself
    ax = plot_top_influence(np.array([np.nan, 1.0, -2.0, np.nan]), k=4)
    np.testing.assert_array_equal(bar_widths(ax), [-2.0, 1.0])
    assert tick_texts(ax.get_yticklabels()) == ["2", "1"]


def test_top_draws_on_the_given_axes():
    fig, ax = plt.subplots()
    assert plot_top_influence([1.0, 2.0], ax=ax) is ax
    assert plt.get_fignums() == [fig.number]


def test_tuple_column_labels_select_one_column():
    # as NodeEmbeddingInfluence.influence_(as_frame=True): columns are (u, v) pairs
    columns = pd.MultiIndex.from_tuples([(0, 33), (1, 2)], names=["u", "v"])
    frame = pd.DataFrame([[1.0, 9.0], [-3.0, 0.0], [2.0, 1.0]], columns=columns,
                         index=pd.Index(["x", "y", "z"], name="node"))
    ax = plot_top_influence(frame, (0, 33), k=2)
    np.testing.assert_array_equal(bar_widths(ax), [-3.0, 2.0])
    assert ax.get_xlabel() == "change of 0, 33 when removed"
    ax = plot_influence_index(frame, [(0, 33), (1, 2)])
    assert [line.get_label() for line in data_lines(ax)] == ["0, 33", "1, 2"]


# --------------------------------------------------------------------------
# plot_influence_index
# --------------------------------------------------------------------------
def test_index_points_are_the_values_in_unit_order(frame):
    ax = plot_influence_index(frame, "b", annotate=2)
    (line,) = data_lines(ax)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(12))
    np.testing.assert_array_equal(line.get_ydata(), frame["b"].to_numpy())
    # the two largest |values| are annotated with their index labels, at their points
    texts = {t.get_text(): t.xy for t in ax.texts}
    assert set(texts) == {"row4", "row9"}
    assert texts["row4"] == (4, 5.0) and texts["row9"] == (9, -4.0)
    # one stem per unit from 0 to the value
    (stems,) = ax.collections
    segments = stems.get_segments()
    assert len(segments) == 12
    np.testing.assert_allclose([seg[:, 1] for seg in segments],
                               np.c_[np.zeros(12), frame["b"].to_numpy()])
    assert ax.get_xlabel() == "position of the training unit (labels: person)"
    assert ax.get_ylabel() == "change of b when removed"


def test_index_all_columns_one_series_each_with_legend(frame):
    ax = plot_influence_index(frame, annotate=0)
    assert [line.get_label() for line in data_lines(ax)] == ["a", "b", "c"]
    for line, name in zip(data_lines(ax), frame.columns):
        np.testing.assert_array_equal(line.get_ydata(), frame[name].to_numpy())
    assert tick_texts(ax.get_legend().get_texts()) == ["a", "b", "c"]
    assert not ax.texts and not ax.collections  # no annotations, no stems


def test_index_nan_is_a_gap_and_never_annotated():
    values = np.array([0.5, np.nan, -2.0, 1.0])
    ax = plot_influence_index(values, annotate=4)
    assert sorted(t.get_text() for t in ax.texts) == ["0", "2", "3"]
    assert np.isnan(data_lines(ax)[0].get_ydata()[1])


# --------------------------------------------------------------------------
# plot_estimated_vs_exact
# --------------------------------------------------------------------------
def test_scatter_offsets_are_exact_against_estimated():
    rng = np.random.RandomState(1)
    exact = rng.standard_normal((6, 2))
    vif_est = exact + 0.1 * rng.standard_normal((6, 2))
    newton_est = exact + 0.01 * rng.standard_normal((6, 2))
    ax = plot_estimated_vs_exact({"vif": vif_est, "newton": newton_est}, exact)
    assert len(ax.collections) == 2
    for coll, est in zip(ax.collections, [vif_est, newton_est]):
        np.testing.assert_array_equal(coll.get_offsets(), np.c_[exact.ravel(), est.ravel()])
    legend = tick_texts(ax.get_legend().get_texts())
    r_vif = np.corrcoef(vif_est.ravel(), exact.ravel())[0, 1]
    r_newton = np.corrcoef(newton_est.ravel(), exact.ravel())[0, 1]
    assert legend == [f"vif (r = {r_vif:.4f})", f"newton (r = {r_newton:.4f})", "identity"]
    # the identity line covers every point
    (identity,) = ax.lines
    x, y = identity.get_xdata(), identity.get_ydata()
    np.testing.assert_array_equal(x, y)
    values = np.r_[exact.ravel(), vif_est.ravel(), newton_est.ravel()]
    assert x[0] < values.min() and x[1] > values.max()


def test_scatter_accepts_frames_and_a_label():
    exact = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, -1.0, 0.5]})
    ax = plot_estimated_vs_exact(exact * 2, exact, label="if")
    np.testing.assert_array_equal(ax.collections[0].get_offsets(),
                                  np.c_[exact.to_numpy().ravel(), 2 * exact.to_numpy().ravel()])
    assert ax.get_legend().get_texts()[0].get_text() == "if (r = 1.0000)"


def test_scatter_leaves_nan_entries_out():
    exact = np.array([1.0, np.nan, 3.0, 4.0])
    estimated = np.array([1.5, 2.0, np.nan, 3.5])
    ax = plot_estimated_vs_exact(estimated, exact)
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), [[1.0, 1.5], [4.0, 3.5]])
    assert np.all(np.isfinite(ax.lines[0].get_xdata()))
    assert ax.get_legend().get_texts()[0].get_text() == "estimated (r = 1.0000)"


def test_scatter_with_real_influence_and_refits():
    rng = np.random.RandomState(0)
    n = 40
    X = pd.DataFrame({"x1": rng.standard_normal(n), "x2": rng.standard_normal(n)})
    y = np.c_[rng.exponential(size=n), rng.rand(n) < 0.7]
    cox = CoxPHInfluence().fit(X, y)
    est, exact = cox.influence_(), cox.influence_(method="loo")
    ax = plot_estimated_vs_exact(est, exact)
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), np.c_[exact.ravel(),
                                                                         est.ravel()])
    r = float(ax.get_legend().get_texts()[0].get_text().split("= ")[1].rstrip(")"))
    assert r > 0.9


# --------------------------------------------------------------------------
# errors and laziness
# --------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda: plot_top_influence(np.zeros((2, 2, 2))), ValueError, "1-D or 2-D"),
    (lambda: plot_top_influence(np.zeros(0)), ValueError, "empty"),
    (lambda: plot_top_influence([1.0], k=0), ValueError, "k must be"),
    (lambda: plot_top_influence([1.0], k=True), ValueError, "k must be"),
    (lambda: plot_top_influence([np.nan, np.nan]), ValueError, "no finite"),
    (lambda: plot_top_influence(pd.DataFrame({"a": [1.0]}), "z"), KeyError, "not found"),
    (lambda: plot_top_influence(pd.DataFrame({"a": [1.0]}), 3), KeyError, "not found"),
    (lambda: plot_top_influence(pd.DataFrame({"a": [1.0]}), []), ValueError, "empty"),
    (lambda: plot_influence_index([1.0], annotate=-1), ValueError, "annotate"),
    (lambda: plot_estimated_vs_exact([1.0, 2.0], [1.0]), ValueError, "entries"),
    (lambda: plot_estimated_vs_exact({}, [1.0]), ValueError, "empty dict"),
    (lambda: plot_estimated_vs_exact([np.nan], [1.0]), ValueError, "no finite"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_import_does_not_import_matplotlib():
    code = ("import sys, skvif, skvif.plotting; "
            "sys.exit(1 if 'matplotlib' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
