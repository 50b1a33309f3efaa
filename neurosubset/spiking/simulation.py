"""The brian2 simulation: every (network, repeat, probe) as an independent copy in one brian2 ``Network``.

brian2 is imported only here and only when a simulation runs (the extra ``neurosubset[spiking]``). Spike counts
and per-neuron counters of clipped and saturated steps are recorded, never spike times or traces; brian2's seed
is set per call and the previous random state and codegen target are restored afterwards.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import MissingExtraError


def _import_brian2():
    """brian2, imported on first use; without it a :class:`MissingExtraError` naming the extra."""
    try:
        import brian2
    except ImportError as exc:
        raise MissingExtraError("The spiking check needs brian2, an optional dependency. Install it with "
                                "`pip install 'neurosubset[spiking]'`.") from exc
    return brian2


def _simulate(nets: list[dict[str, np.ndarray]], nu: np.ndarray, *, duration: float, warmup: float, repeats: int,
              seed: int, tau: float, dt: float, target: str) -> dict[str, Any]:
    """Run every (network, repeat, probe) as an independent copy in one brian2 Network.

    Parameters
    ----------
    nets : list of dict
        Each with ``a`` ``(n, n)``, ``b`` ``(n, n_in)``, ``mu`` ``(n,)`` Hz and ``rates`` ``(n, probe)`` Hz (the
        predicted stationary rates, used to start the drive at its mean).
    nu : numpy.ndarray
        ``(input, probe)`` input rates (Hz).

    Returns
    -------
    dict
        ``counts``, ``clipped``, ``saturated``: ``(net, repeat, probe, n)`` spike counts and numbers of clipped
        / saturated steps over ``duration``; ``steps`` the number of counted steps; ``brian2_version``.
    """
    b2 = _import_brian2()
    from brian2.devices.device import get_device

    n_net, (n, n_in), m = len(nets), nets[0]["b"].shape, nu.shape[1]
    copies = n_net * repeats * m
    net_of = np.arange(copies) // (repeats * m)
    probe_of = np.arange(copies) % m
    a_stack = np.stack([d["a"] for d in nets])
    b_stack = np.stack([d["b"] for d in nets])
    mu = np.concatenate([nets[k]["mu"] for k in net_of])
    # drive at its stationary mean: s = A r + B nu = r - mu
    s0 = np.concatenate([nets[k]["rates"][:, p] - nets[k]["mu"] for k, p in zip(net_of, probe_of)])
    gain = np.expm1(dt / tau) / dt  # 1/s: increment per spike giving the discrete kernel unit area
    unit_dt = dt * b2.second

    prefs = b2.prefs
    old_target = prefs.codegen.target
    device = get_device()
    old_random = device.get_random_state()
    try:
        prefs.codegen.target = target
        b2.seed(seed)
        group = b2.NeuronGroup(
            n * copies,
            """ds/dt = -s / tau_s : Hz
               mu : Hz (constant)
               nclip : integer
               nsat : integer""",
            threshold="rand() < (mu + s) * dt", method="exact", dt=unit_dt, namespace={"tau_s": tau * b2.second})
        group.mu = mu * b2.Hz
        group.s = s0 * b2.Hz
        group.run_regularly("nclip += int(mu + s < 0*Hz)\nnsat += int((mu + s) * dt > 1)", when="thresholds",
                            order=-1, dt=unit_dt)
        objects = [group]
        inputs = b2.PoissonGroup(n_in * copies, rates=np.concatenate([nu[:, p] for p in probe_of]) * b2.Hz,
                                 dt=unit_dt)
        objects.append(inputs)
        for mats, source, width in ((a_stack, group, n), (b_stack, inputs, n_in)):
            k, post, pre = np.nonzero(mats)
            if k.size == 0:
                continue
            # copy c of network k holds neurons c*n .. c*n + n - 1 and inputs c*n_in .. c*n_in + n_in - 1
            per = np.bincount(k, minlength=n_net)
            first = np.concatenate([[0], np.cumsum(per)])
            ii, jj = [], []
            for c in range(copies):
                sl = slice(first[net_of[c]], first[net_of[c] + 1])
                ii.append(pre[sl] + c * width)
                jj.append(post[sl] + c * n)
            syn = b2.Synapses(source, group, model="w : Hz (constant)", on_pre="s_post += w", dt=unit_dt)
            syn.connect(i=np.concatenate(ii), j=np.concatenate(jj))
            # set w from the connected indices, whatever order brian2 stores the synapses in
            si, sj = np.asarray(syn.i[:]), np.asarray(syn.j[:])
            c = sj // n
            syn.w = mats[net_of[c], sj % n, si % width] * gain * b2.Hz
            objects.append(syn)
        counter = b2.SpikeMonitor(group, record=False)
        objects.append(counter)
        net = b2.Network(*objects)
        if warmup > 0:
            net.run(warmup * b2.second, namespace={})
        before = np.asarray(counter.count[:]).copy()
        group.nclip = 0
        group.nsat = 0
        net.run(duration * b2.second, namespace={})
        counts = np.asarray(counter.count[:]) - before
        clipped = np.asarray(group.nclip[:]).copy()
        saturated = np.asarray(group.nsat[:]).copy()
    finally:
        prefs.codegen.target = old_target
        device.set_random_state(old_random)
    shape = (n_net, repeats, m, n)
    return {"counts": counts.reshape(shape), "clipped": clipped.reshape(shape), "saturated": saturated.reshape(shape),
            "steps": int(round(duration / dt)), "brian2_version": str(b2.__version__)}
