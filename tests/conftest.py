"""Shared test configuration: ``@pytest.mark.slow`` checks run only with ``--runslow``."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the checks marked slow (large data, many refits)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long check; run with --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow check: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
