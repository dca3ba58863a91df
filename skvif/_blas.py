"""BLAS threads for tall and thin products."""

import contextlib
import functools
import os

import numpy as np
from threadpoolctl import ThreadpoolController

_THREADPOOLS = []  # the controller of the BLAS libraries, made on first use
_SINGLE_THREAD_MIN_ROWS = 2**12


class _BlasController(ThreadpoolController):
    """A ``ThreadpoolController`` that looks only at loaded libraries named like a BLAS.

    threadpoolctl resolves the path of each of the (here about 230) loaded
    libraries: 13 to 26 ms, against 4 ms for the few whose names hold "blas"
    or "mkl" (on Linux; elsewhere, or should threadpoolctl's internals change,
    :func:`_blas_controller` falls back to the full scan).
    """

    def _find_libraries_with_linux(self):
        with open("/proc/self/maps", "rb") as f:
            maps = f.read()
        for path in set(self._PATH_RE.findall(maps)):
            name = os.path.basename(path).lower()
            if b"blas" in name or b"mkl" in name:
                self._make_controller_from_path(path.decode("utf-8"))


def _blas_controller():
    """:class:`_BlasController`, or threadpoolctl's own where it finds no BLAS or fails."""
    try:
        controller = _BlasController()
    except Exception:   # (threadpoolctl's private names changed)
        return ThreadpoolController()
    blas = controller.select(user_api="blas")
    return controller if blas.lib_controllers else ThreadpoolController()


def _controller():
    if not _THREADPOOLS:
        _THREADPOOLS.append(_blas_controller())
    return _THREADPOOLS[0]


def blas_threads():
    """The number of threads BLAS would use now (1 without a BLAS threadpoolctl finds).

    What ``threadpoolctl.threadpool_limits`` (or ``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS``) leaves it: the budget of code that runs its own
    threads, each with one BLAS thread, instead.
    """
    blas = _controller().select(user_api="blas")
    return max([1] + [lib.num_threads for lib in blas.lib_controllers])


@contextlib.contextmanager
def single_blas_thread(length=None):
    """Context: one BLAS thread for ``length`` rows from ``_SINGLE_THREAD_MIN_ROWS`` (None: any).

    Tall and thin products (``n x p`` by ``n``-vectors or ``n x p``) are
    memory-bound: one thread runs them about as fast as two on an idle
    machine, while OpenBLAS's threads spin-waiting for a core on a busy one
    made them 10 to 300 times slower (measured at ``n = 10^5 .. 10^6``,
    ``p = 20``). Below ``_SINGLE_THREAD_MIN_ROWS`` that costs less than
    finding the BLAS libraries does.
    """
    if length is not None and length < _SINGLE_THREAD_MIN_ROWS:
        yield
        return
    with _controller().limit(limits=1, user_api="blas"):
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
