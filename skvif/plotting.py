"""Plots of influence: the index (dfbeta) plot, the top-k bar chart, estimated vs exact.

Every function takes what ``influence_`` returns (a NumPy array, or the pandas
DataFrame / Series of ``influence_(as_frame=True)``, whose index labels and
column names then label the plot), draws on ``ax`` (a new figure when
``ax=None``) and returns the :class:`matplotlib.axes.Axes`. matplotlib is
imported only when a function is called, so ``import skvif`` never needs it.
"""

import numpy as np
import pandas as pd

__all__ = ["plot_influence_index", "plot_top_influence", "plot_estimated_vs_exact"]


def _get_ax(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _as_frame(influence, name="influence"):
    """A 2-D DataFrame view of an influence array, Series or DataFrame."""
    if isinstance(influence, pd.DataFrame):
        frame = influence
    elif isinstance(influence, pd.Series):
        frame = influence.to_frame(name=influence.name if influence.name is not None else name)
    else:
        arr = np.asarray(influence, dtype=float)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 1-D or 2-D (units x quantities), got shape "
                             f"{arr.shape}; select or reshape the quantities first.")
        frame = pd.DataFrame(arr, columns=[name] if arr.shape[1] == 1 else None)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{name} is empty.")
    return frame


def _select(frame, column):
    """The columns to plot, by label, by position, or all of them (``None``).

    A tuple that is itself a column label (the ``(u, v)`` pairs of a node
    embedding's influence frame) selects that column; any other tuple or a
    list selects several.
    """
    if column is None:
        return frame
    labels = list(frame.columns)
    if isinstance(column, list) or (isinstance(column, tuple) and column not in labels):
        columns = list(column)
    else:
        columns = [column]
    if not columns:
        raise ValueError("column is an empty list.")
    out = []
    for c in columns:
        if c in labels:
            out.append(frame.iloc[:, labels.index(c)].rename(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) \
                and -frame.shape[1] <= c < frame.shape[1]:
            out.append(frame.iloc[:, int(c)])
        else:
            raise KeyError(f"column {c!r} not found; columns are {labels}.")
    return pd.concat(out, axis=1)


def _largest(values, k):
    """Positions of the ``k`` largest finite absolute values, largest first (stable)."""
    finite = np.flatnonzero(np.isfinite(values))
    order = np.argsort(-np.abs(values[finite]), kind="stable")
    return finite[order[:k]]


def _text(label):
    if isinstance(label, tuple):
        return ", ".join(map(str, label))
    return str(label)


def plot_influence_index(influence, column=None, *, annotate=3, ax=None):
    """Index plot of the influence of each training unit (the dfbeta plot).

    One point per training unit (row, group, query, node...) at its position
    ``0, 1, ...`` in the data, its height the estimated change of the quantity
    when that unit is removed, with a stem to zero when one quantity is
    plotted. The ``annotate`` largest absolute values are labelled with the
    unit's index label, so that outlying units can be looked up.

    Parameters
    ----------
    influence : array-like of shape (n_units,) or (n_units, n_quantities)
        An influence array, or the DataFrame / Series returned by
        ``influence_(as_frame=True)``.
    column : label, int, list or None, default=None
        Quantity (column name, or position for arrays) to plot; a list plots
        several, ``None`` all of them (one series each, with a legend).
    annotate : int, default=3
        Number of units with the largest absolute influence to label, per
        plotted quantity (NaN values are drawn as gaps and never labelled).
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure when ``None``.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes. For each quantity its points are a
        :class:`~matplotlib.lines.Line2D` whose ``get_ydata()`` are the
        influence values in unit order.

    See Also
    --------
    plot_top_influence : The same values as a ranked bar chart.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skvif.plotting import plot_influence_index
    >>> ax = plot_influence_index(np.array([0.1, -0.5, 0.2]))
    >>> ax.lines[0].get_ydata().tolist()
    [0.1, -0.5, 0.2]
    """
    frame = _select(_as_frame(influence), column)
    if not isinstance(annotate, (int, np.integer)) or isinstance(annotate, bool) \
            or annotate < 0:
        raise ValueError(f"annotate must be an integer >= 0, got {annotate!r}.")
    ax = _get_ax(ax)
    x = np.arange(frame.shape[0])
    single = frame.shape[1] == 1
    for name, values in frame.items():
        values = values.to_numpy(dtype=float)
        line, = ax.plot(x, values, "o", markersize=3 if frame.shape[0] > 100 else 4,
                        label=_text(name))
        if single:
            ax.vlines(x, 0.0, values, colors=line.get_color(), linewidth=0.6, alpha=0.6)
        for i in _largest(values, annotate):
            ax.annotate(_text(frame.index[i]), (x[i], values[i]), textcoords="offset points",
                        xytext=(3, 3), fontsize="small")
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    index_name = frame.index.name
    ax.set_xlabel(f"position of the training unit (labels: {index_name})" if index_name
                  else "position of the training unit")
    ax.set_ylabel(f"change of {_text(frame.columns[0])} when removed" if single
                  else "change when removed")
    if not single:
        ax.legend(fontsize="small")
    return ax


def plot_top_influence(influence, column=None, *, k=10, ax=None):
    """Horizontal bar chart of the ``k`` most influential training units.

    Units are ranked by the absolute influence on ``column`` (or, when
    several quantities are given, by the Euclidean norm of their changes,
    NaN entries left out); the most influential is at the top, bars keep
    their sign, and each bar is labelled with the unit's index label. Units
    whose value is NaN (e.g. a removed node's own pairs) are not ranked.

    Parameters
    ----------
    influence : array-like of shape (n_units,) or (n_units, n_quantities)
        An influence array, or the DataFrame / Series returned by
        ``influence_(as_frame=True)``.
    column : label, int, list or None, default=None
        Quantity to rank by; ``None`` with several columns ranks by the norm
        of each row over all of them (the bars are then that norm).
    k : int, default=10
        Number of units shown (all of them if fewer).
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure when ``None``.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes; its bars (``ax.patches``) run from the most to the least
        influential unit.

    See Also
    --------
    plot_influence_index : All units in their training order.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> from skvif.plotting import plot_top_influence
    >>> s = pd.Series([0.1, -0.5, 0.2], index=["ann", "bob", "cy"], name="age")
    >>> ax = plot_top_influence(s, k=2)
    >>> [float(p.get_width()) for p in ax.patches]
    [-0.5, 0.2]
    """
    frame = _select(_as_frame(influence), column)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}.")
    if frame.shape[1] == 1:
        values = frame.iloc[:, 0].to_numpy(dtype=float)
        xlabel = f"change of {_text(frame.columns[0])} when removed"
    else:
        arr = frame.to_numpy(dtype=float)
        values = np.sqrt(np.nansum(arr ** 2, axis=1))
        values[np.all(np.isnan(arr), axis=1)] = np.nan
        xlabel = f"norm of the change of {frame.shape[1]} quantities when removed"
    top = _largest(values, k)
    if top.size == 0:
        raise ValueError("influence has no finite value to rank.")
    ax = _get_ax(ax)
    heights = values[top]
    colors = np.where(heights >= 0, "tab:red", "tab:blue")
    y = np.arange(top.size)
    ax.barh(y, heights, color=colors)
    ax.set_yticks(y, [_text(frame.index[i]) for i in top])
    ax.invert_yaxis()  # the most influential on top
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_xlabel(xlabel)
    index_name = frame.index.name
    ax.set_ylabel(_text(index_name) if index_name else "training unit")
    return ax


def plot_estimated_vs_exact(estimated, exact, *, label="estimated", ax=None, **scatter_kws):
    """Scatter of estimated against exact (refit) leave-one-out changes.

    Points on the dashed identity line are perfect estimates: because skvif's
    influence is the change *upon removal*, it is compared with exact refits
    entry by entry, not only by correlation. Pearson's r of each scatter is
    shown in the legend. Entries that are NaN in either array (such as the
    pairs that contain a removed node) are left out of the plot and of r.

    Parameters
    ----------
    estimated : array-like, DataFrame or dict of them
        Estimated changes, e.g. ``influence_(method="vif")``; any shape, they
        are compared entry by entry with ``exact``. A dict ``{name: array}``
        draws one scatter per method, named in the legend.
    exact : array-like or DataFrame
        Exact changes of the same shape, e.g. ``influence_(method="loo")``.
    label : str, default="estimated"
        Legend name when ``estimated`` is not a dict.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure when ``None``.
    **scatter_kws
        Passed to :meth:`matplotlib.axes.Axes.scatter`.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes; the legend reads ``"<name> (r = 0.9876)"``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skvif.plotting import plot_estimated_vs_exact
    >>> exact = np.array([0.1, -0.4, 0.25, 0.0])
    >>> ax = plot_estimated_vs_exact({"vif": 0.9 * exact}, exact)
    >>> ax.get_legend().get_texts()[0].get_text()
    'vif (r = 1.0000)'
    """
    series = estimated if isinstance(estimated, dict) else {label: estimated}
    if not series:
        raise ValueError("estimated is an empty dict.")
    y_true = np.ravel(np.asarray(exact, dtype=float))
    ax = _get_ax(ax)
    lo, hi = np.inf, -np.inf
    kws = {"s": 12, "alpha": 0.7}
    kws.update(scatter_kws)
    for name, values in series.items():
        values = np.ravel(np.asarray(values, dtype=float))
        if values.shape != y_true.shape:
            raise ValueError(f"estimated {name!r} has {values.size} entries but exact has "
                             f"{y_true.size}.")
        keep = np.isfinite(values) & np.isfinite(y_true)
        if not keep.any():
            raise ValueError(f"estimated {name!r} and exact have no finite entry in common.")
        values, truth = values[keep], y_true[keep]
        if np.std(values) > 0 and np.std(truth) > 0:
            r = f"{np.corrcoef(values, truth)[0, 1]:.4f}"
        else:
            r = "nan"
        ax.scatter(truth, values, label=f"{name} (r = {r})", **kws)
        lo = min(lo, np.min(values), np.min(truth))
        hi = max(hi, np.max(values), np.max(truth))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="0.4", linewidth=1,
            label="identity")
    ax.set_xlabel("exact change (refit without the unit)")
    ax.set_ylabel("estimated change")
    ax.legend(fontsize="small")
    return ax
