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
    option) must come first (tests/test_cli_attacks.py, tests/test_sweeps_safety.py)."""
    import neurosubset.benchmark
    import neurosubset.spiking
    from neurosubset.sweeps import core

    def refuse(*args, **kwargs):
        raise AssertionError("computed before refusing")

    monkeypatch.setattr(neurosubset.benchmark, "match_probability", refuse)
    monkeypatch.setattr(neurosubset.spiking, "spikecheck", refuse)
    monkeypatch.setattr(core, "run_point", refuse)


# ---------------------------------------------------------------------------------------------- shared circuits
def _steady(signed: bool):
    """A small linear steady circuit X(3) -> hidden -> OUT(2): one recurrent population H(5) (no signs), or
    E(4, sign +1) and I(2, sign -1) with every E/I projection (Dale's law), gains low enough for a stable start."""
    import neurosubset as ns

    if not signed:
        regions = (ns.Region("X", 3, "input"), ns.Region("H", 5), ns.Region("OUT", 2, "output"))
        projections = (ns.Projection("X", "H"), ns.Projection("H", "H", gain=0.3), ns.Projection("H", "OUT"))
        return ns.Circuit(regions, projections, dynamics="steady", name="steady_h5")
    regions = (ns.Region("X", 3, "input"), ns.Region("E", 4, sign=1), ns.Region("I", 2, sign=-1),
               ns.Region("OUT", 2, "output"))
    projections = (ns.Projection("X", "E"), ns.Projection("X", "I"), ns.Projection("E", "E", gain=0.3),
                   ns.Projection("E", "I", gain=0.3), ns.Projection("I", "E", gain=0.3),
                   ns.Projection("I", "I", gain=0.3), ns.Projection("E", "OUT"))
    return ns.Circuit(regions, projections, dynamics="steady", name="steady_dale_e4_i2")


def _continuous():
    """A continuous-time tanh RNN: 2 inputs -> 3 recurrent neurons -> 2 read-outs, tau = 20 ms, 0.1 s, RK4."""
    import neurosubset as ns

    regions = (ns.Region("in", 2, "input"), ns.Region("rec", 3), ns.Region("out", 2, "output"))
    projections = (ns.Projection("in", "rec", name="B"), ns.Projection("rec", "rec", gain=1.0, name="W"),
                   ns.Projection("rec", "out", name="C"))
    return ns.Circuit(regions, projections, dynamics="continuous", nonlinearity="tanh", tau=0.02, duration=0.1,
                      dt=0.01, steps=2, name="tanh_rnn_3")


def _named_circuits():
    import neurosubset as ns

    return {
        "lffn_1layer": lambda: ns.feedforward([5, 3]),                  # y = W1 x: affine in any allocation
        "lffn_2layer": lambda: ns.feedforward([4, 4, 3]),               # linear, bilinear across the two layers
        "lrnn": lambda: ns.linear_rnn(4, 2, 2, steps=3),                # h_t = W h_(t-1) + B x_t, y = C h_T
        "relu": lambda: ns.feedforward([3, 4, 1], "relu"),              # shallow ReLU
        "steady": lambda: _steady(signed=False),                        # linear steady, no signs
        "steady_dale": lambda: _steady(signed=True),                    # linear steady E/I, Dale-signed
        "continuous": _continuous,                                      # continuous-time tanh RNN
    }


# name -> a zero-argument constructor (public constructors only); tests build what they use: named_circuit(name)
CIRCUITS = _named_circuits()


def named_circuit(name: str):
    """The shared circuit ``name`` of :data:`CIRCUITS` (built once per test session)."""
    if name not in _BUILT:
        _BUILT[name] = CIRCUITS[name]()
    return _BUILT[name]


_BUILT: dict = {}


def shipped_circuit(stem: str):
    """``circuits/<stem>.toml`` loaded once per test session (circuits/balanced_ei.toml's load, with its sparse
    stability check, takes about 20 s of CPU; test_circuit and test_dynamics_stability share one)."""
    from pathlib import Path

    import neurosubset as ns

    key = ("shipped", stem)
    if key not in _BUILT:
        _BUILT[key] = ns.Circuit.from_toml(Path(__file__).resolve().parents[1] / "circuits" / f"{stem}.toml")
    return _BUILT[key]


def sparse_ei(n_e, n_i, *, n_x, n_out, p_in, p_rec, p_out, p_ii=None, seed=3, signed_readout=False, **extra):
    """A steady E/I circuit with every kind of structure the sparse layout reads: Bernoulli projections (I->I
    autapse-free), data-given synapses with init count (X->F), fixed weights (F->E), a dense input and read-out, and
    with ``signed_readout`` per-synapse signs on F->OUT. Gains as in circuits/balanced_ei.toml (E->E 0.3, E->I 0.4,
    I->E 0.7, I->I 0.6); I->I at ``p_ii`` (default ``p_rec``); ``extra`` overrides top-level spec fields (e.g.
    ``dynamics``)."""
    import neurosubset as ns

    f_out = {"pre": "F", "post": "OUT", "p": 1.0, "gain": 0.5}
    if signed_readout:
        f_out["signs"] = [[0, 1, -1], [2, 3, 1]]
    spec = {"name": "ei", "dynamics": "steady", "seed": seed,
            "regions": {"X": {"size": n_x, "role": "input"}, "E": {"size": n_e, "sign": 1},
                        "I": {"size": n_i, "sign": -1}, "F": {"size": 5}, "OUT": {"size": n_out, "role": "output"}},
            "projections": [
                {"pre": "X", "post": "E", "p": p_in}, {"pre": "X", "post": "I", "p": p_in},
                {"pre": "E", "post": "E", "p": p_rec, "gain": 0.3}, {"pre": "E", "post": "I", "p": p_rec, "gain": 0.4},
                {"pre": "I", "post": "E", "p": p_rec, "gain": 0.7},
                {"pre": "I", "post": "I", "p": p_rec if p_ii is None else p_ii, "gain": 0.6, "autapses": False},
                {"pre": "X", "post": "F", "synapses": [[0, 1, 2], [1, 0, 1], [3, 5, 4], [4, n_x - 1, 1]],
                 "init": "count"},
                {"pre": "F", "post": "E", "weights": [[0, 0, 0.5], [7, 2, -0.25]]},
                f_out, {"pre": "E", "post": "OUT", "p": p_out}, {"pre": "X", "post": "OUT", "p": 1.0}]}
    spec.update(extra)
    return ns.Circuit.from_dict(spec)


# ----------------------------------------------------------------------------------- a reference steady solve
def steady_system(circuit, weights):
    """The fixed-point system of a linear steady circuit, assembled here in numpy from the circuit's regions and
    projections (a reference: independent of :mod:`neurosubset.dynamics.blocks`).

    Parameters
    ----------
    circuit : neurosubset.Circuit
        A steady circuit; neurons ordered by region declaration, input regions apart.
    weights : dict of str to ndarray
        One trial's weight matrix ``(post size, pre size)`` per projection name.

    Returns
    -------
    w : ndarray, shape (N, N)
        Recurrent weights over the N non-input neurons.
    u : ndarray, shape (N, n_in)
        Input weights.
    outs : ndarray of int, shape (n_out,)
        Rows of the output neurons, so that the outputs are ``solve(I - w, u @ x)[outs]``.
    """
    names = [r.name for r in circuit.regions if r.role != "input"]
    inputs = [r.name for r in circuit.regions if r.role == "input"]
    start = dict(zip(names, np.cumsum([0] + [circuit.region[k].size for k in names])[:-1]))
    in_start = dict(zip(inputs, np.cumsum([0] + [circuit.region[k].size for k in inputs])[:-1]))
    n = sum(circuit.region[k].size for k in names)
    w, u = np.zeros((n, n)), np.zeros((n, sum(circuit.region[k].size for k in inputs)))
    for p in circuit.projections:
        a, b = start[p.post], circuit.region[p.post].size
        if p.pre in start:
            w[a:a + b, start[p.pre]:start[p.pre] + circuit.region[p.pre].size] = weights[p.name]
        else:
            u[a:a + b, in_start[p.pre]:in_start[p.pre] + circuit.region[p.pre].size] = weights[p.name]
    outs = np.concatenate([np.arange(start[k], start[k] + circuit.region[k].size) for k in names
                           if circuit.region[k].role == "output"])
    return w, u, outs


def steady_outputs(circuit, weights, probes):
    """Outputs of a linear steady circuit by a dense numpy solve of :func:`steady_system`: ``r = (I - W)^-1 U x``.

    Parameters
    ----------
    circuit : neurosubset.Circuit
    weights : dict of str to ndarray
        One trial's weights (see :func:`steady_system`).
    probes : ndarray, shape (m, n_in)

    Returns
    -------
    y : ndarray, shape (m, n_out)
    w : ndarray, shape (N, N)
        The recurrent weights (for a stability check by the caller).
    """
    w, u, outs = steady_system(circuit, weights)
    return np.linalg.solve(np.eye(w.shape[0]) - w, u @ probes.T)[outs].T, w
