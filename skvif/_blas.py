"""BLAS threads for tall and thin products."""

import functools

import numpy as np
from threadpoolctl import ThreadpoolController

_THREADPOOLS = []  # the ThreadpoolController, made on first use (0.05 to 0.1 s here)
_SINGLE_THREAD_MIN_ROWS = 2**12


def single_threaded_blas(func):
    """Run ``func`` with BLAS on one thread when its first 2-D array is long.

    Its products are tall and thin (``n x p`` by ``n``-vectors or ``n x p``):
    memory-bound, so one thread runs them about as fast as two on an idle
    machine, while OpenBLAS's threads spin-waiting for a core on a busy one
    made them 10 to 300 times slower (measured at ``n = 10^5 .. 10^6``,
    ``p = 20``). Below ``_SINGLE_THREAD_MIN_ROWS`` rows (or columns) that
    costs less than finding the BLAS libraries does.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        rows = next((max(a.shape) for a in args if isinstance(a, np.ndarray) and a.ndim == 2),
                    0)
        if rows < _SINGLE_THREAD_MIN_ROWS:
            return func(*args, **kwargs)
        if not _THREADPOOLS:
            _THREADPOOLS.append(ThreadpoolController())
        with _THREADPOOLS[0].limit(limits=1, user_api="blas"):
            return func(*args, **kwargs)
    return wrapper
