"""Synthetic survival data for the benchmarks (generated, no downloads)."""

import numpy as np


def survival_data(n, p, seed=0, n_times=100):
    """Exponential event times with censoring, rounded onto ``n_times`` grid points (ties)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    beta = rng.normal(scale=0.3, size=p)
    event_time = rng.exponential(np.exp(-X @ beta))
    censor_time = rng.exponential(2 * np.median(event_time), size=n)
    time = np.minimum(event_time, censor_time)
    time = np.ceil(time / np.quantile(time, 0.99) * n_times).clip(1, n_times)
    return X, time, event_time <= censor_time
