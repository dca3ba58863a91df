"""Progress bars for long runs (refits, Newton steps over many units, large CLI runs).

``verbose`` means the same everywhere in skvif:

- ``0`` or ``False``: silent;
- ``None`` (automatic, the default of ``influence_``): a bar on stderr when
  stderr is a terminal, shown only once the run has taken more than
  :data:`DELAY_SECONDS` (so quick runs, tests, pipes and log files stay silent);
- ``1`` or more (or ``True``): a bar on stderr from the start, whatever stderr is.

The bar is :class:`tqdm.tqdm` (units done, rate and ETA).
"""

import sys
from numbers import Integral

from tqdm import tqdm

__all__ = ["DELAY_SECONDS", "check_verbose", "progress_bar"]

DELAY_SECONDS = 2.0


def check_verbose(verbose):
    """``None``, a bool or an integer >= 0 (see the module docstring)."""
    if verbose is None or isinstance(verbose, bool):
        return verbose
    if not isinstance(verbose, Integral) or verbose < 0:
        raise ValueError(f"verbose must be None (automatic), a bool or an integer >= 0, "
                         f"got {verbose!r}.")
    return int(verbose)


def _stderr_is_terminal():
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(total, label, verbose):
    """A :class:`tqdm.tqdm` bar over ``total`` units on stderr, or a disabled one.

    Use as a context manager and call ``bar.update(k)`` after ``k`` units.
    """
    verbose = check_verbose(verbose)
    automatic = verbose is None
    enabled = _stderr_is_terminal() if automatic else bool(verbose)
    return tqdm(total=total, desc=f"[skvif] {label}", unit="unit", file=sys.stderr,
                disable=not enabled, delay=DELAY_SECONDS if automatic else 0.0,
                leave=not automatic, dynamic_ncols=True)
