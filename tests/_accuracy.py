"""Entry-by-entry agreement of influence estimates with exact refits.

Pearson's r alone cannot see a wrong scale (twice the truth correlates perfectly),
so every accuracy test bounds three numbers, computed over all entries given:

- ``r``: Pearson correlation of estimate and refit;
- ``slope``: least-squares slope of the estimate regressed on the refit (with an
  intercept), 1 for an unbiased scale, 2 for a 2x error;
- ``max_error``: ``max |estimate - refit| / max |refit|``, the largest error relative
  to the largest change.
"""

import numpy as np


def agreement(estimate, exact):
    """Return ``{"r", "slope", "max_error"}`` of ``estimate`` against ``exact``.

    >>> exact = np.array([1.0, -2.0, 0.5, 3.0])
    >>> {name: round(value, 9) for name, value in agreement(2 * exact, exact).items()}
    {'r': 1.0, 'slope': 2.0, 'max_error': 1.0}
    """
    estimate = np.ravel(np.asarray(estimate, dtype=float))
    exact = np.ravel(np.asarray(exact, dtype=float))
    if estimate.shape != exact.shape:
        raise ValueError(f"shapes differ: {estimate.shape} vs {exact.shape}")
    de, dx = estimate - estimate.mean(), exact - exact.mean()
    return {"r": float(de @ dx / np.sqrt((de @ de) * (dx @ dx))),
            "slope": float(de @ dx / (dx @ dx)),
            "max_error": float(np.max(np.abs(estimate - exact)) / np.max(np.abs(exact)))}


def assert_agrees(estimate, exact, *, min_r, slope, max_error, label=""):
    """Assert ``r >= min_r``, ``slope[0] <= slope <= slope[1]`` and ``max_error <= max_error``.

    The message of a failure shows all three measured values.
    """
    got = agreement(estimate, exact)
    ok = (got["r"] >= min_r and slope[0] <= got["slope"] <= slope[1]
          and got["max_error"] <= max_error)
    assert ok, (f"{label}: measured {got}; required r >= {min_r}, slope in {slope}, "
                f"max_error <= {max_error}")
    return got
