"""BLAS threads for tall and thin products."""

import contextlib
import functools

import numpy as np
from threadpoolctl import ThreadpoolController

_THREADPOOLS = []  # the ThreadpoolController, made on first use (0.05 to 0.1 s here)
_SINGLE_THREAD_MIN_ROWS = 2**12


@contextlib.contextmanager
def single_blas_thread(length):
    """Context: BLAS on one thread for arrays of ``length`` rows (from ``_SINGLE_THREAD_MIN_ROWS``).

    Tall and thin products (``n x p`` by ``n``-vectors or ``n x p``) are
    memory-bound: one thread runs them about as fast as two on an idle
    machine, while OpenBLAS's threads spin-waiting for a core on a busy one
    made them 10 to 300 times slower (measured at ``n = 10^5 .. 10^6``,
    ``p = 20``). Below ``_SINGLE_THREAD_MIN_ROWS`` that costs less than
    finding the BLAS libraries does.
    """
    if length < _SINGLE_THREAD_MIN_ROWS:
        yield
        return
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    with _THREADPOOLS[0].limit(limits=1, user_api="blas"):
        yield


def single_threaded_blas(func):
    """Decorator: :func:`single_blas_thread` for the length of the first 2-D array argument."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        length = next((max(a.shape) for a in args if isinstance(a, np.ndarray) and a.ndim == 2),
                      0)
        with single_blas_thread(length):
            return func(*args, **kwargs)
    return wrapper
