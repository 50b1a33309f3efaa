"""Shared fixtures. The library never changes global torch/numpy state; a test that does fails here."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch


def _torch_state():
    return (torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(), torch.is_grad_enabled())


@pytest.fixture(autouse=True)
def _no_global_state_change():
    before = _torch_state()
    yield
    after = _torch_state()
    if after != before:
        pytest.fail(f"global torch state changed during the test: {before} -> {after}")


@pytest.fixture
def rng():
    """A seeded numpy Generator (tests pass explicit seeds, never the global state)."""
    return np.random.default_rng(12345)


def pytest_collection_modifyitems(config, items):
    """Optional components are real dependencies of the test extra; say so loudly if one is missing."""
    missing = {name for name in ("brian2", "dask") if importlib.util.find_spec(name) is None}
    for item in items:
        for name in missing:
            if item.get_closest_marker(f"requires_{name}"):
                item.add_marker(pytest.mark.xfail(reason=f"{name} not installed (pip install neurosubset[test])",
                                                  run=False, strict=False))
