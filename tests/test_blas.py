"""BLAS threads: the lean controller finds what threadpoolctl's full scan finds."""

from threadpoolctl import ThreadpoolController, threadpool_info

from skvif import _blas


def _blas_paths(controller):
    return sorted(lib.filepath for lib in controller.select(user_api="blas").lib_controllers)


def test_blas_controller_finds_the_blas_libraries_of_the_full_scan():
    assert _blas_paths(_blas._blas_controller()) == _blas_paths(ThreadpoolController())


def _blas_threads():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_single_blas_thread_limits_and_restores(monkeypatch):
    monkeypatch.setattr(_blas, "_THREADPOOLS", [])
    before = _blas_threads()
    with _blas.single_blas_thread(_blas._SINGLE_THREAD_MIN_ROWS):
        inside = _blas_threads()
    after = _blas_threads()
    assert inside and set(inside) == set(before)
    assert all(threads == 1 for threads in inside.values())
    assert after == before
    # below the size nothing is looked up
    monkeypatch.setattr(_blas, "_THREADPOOLS", [])
    with _blas.single_blas_thread(_blas._SINGLE_THREAD_MIN_ROWS - 1):
        pass
    assert _blas._THREADPOOLS == []


def test_blas_threads_follows_threadpool_limits():
    from threadpoolctl import threadpool_limits
    assert _blas.blas_threads() == max([1] + list(_blas_threads().values()))
    with threadpool_limits(1):
        assert _blas.blas_threads() == 1
    with _blas.single_blas_thread():   # (None: whatever the size)
        assert set(_blas_threads().values()) <= {1}
