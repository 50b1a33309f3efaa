"""Shared fixtures. The library never changes global torch/numpy state; a test that does fails here."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

# marker -> the module it needs; all are dependencies of the test extra, so a missing one is an error, not a skip
_OPTIONAL = {"requires_brian2": "brian2", "requires_dask": "distributed"}


def _torch_state():
    return {"default dtype": torch.get_default_dtype(),
            "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
            "grad enabled": torch.is_grad_enabled(),
            "intra-op threads": torch.get_num_threads(),
            "inter-op threads": torch.get_num_interop_threads()}


@pytest.fixture(autouse=True)
def _no_global_state_change():
    before = _torch_state()
    yield
    after = _torch_state()
    if after != before:
        changed = {k: f"{before[k]} -> {after[k]}" for k in before if after[k] != before[k]}
        pytest.fail(f"global torch state changed during the test: {changed}")


@pytest.fixture(autouse=True)
def _optional_dependencies(request):
    """Error (never skip) a ``requires_*`` test whose module is missing: it is a dependency of the test extra."""
    for marker, module in _OPTIONAL.items():
        if request.node.get_closest_marker(marker) and importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed, but the {marker} tests need it and it is a test dependency: "
                        f"pip install -e '.[test]'", pytrace=False)


@pytest.fixture
def rng():
    """A seeded numpy Generator (tests pass explicit seeds, never the global state)."""
    return np.random.default_rng(12345)


@pytest.fixture
def no_compute(monkeypatch):
    """Neither match_probability, a sweep point nor the spiking check may run: a refusal (bad output path, bad
    option) must come first (tests/test_attacks.py, tests/test_sweeps_safety.py)."""
    import neurosubset.benchmark
    import neurosubset.spiking
    from neurosubset.sweeps import core

    def refuse(*args, **kwargs):
        raise AssertionError("computed before refusing")

    monkeypatch.setattr(neurosubset.benchmark, "match_probability", refuse)
    monkeypatch.setattr(neurosubset.spiking, "spikecheck", refuse)
    monkeypatch.setattr(core, "run_point", refuse)
