"""Continuous-time rate dynamics: the spec fields, the time grid and the batched integrators (torch, float64).

Hidden regions follow ``T dh/dt = -h + phi(W_rec h + W_in x(t))`` from ``h(0) = 0``, ``T = diag(tau)`` (one
``tau`` per hidden region, seconds); output regions are instantaneous linear read-outs
``y(t) = W_out h(t) + W_direct x(t)``. The probe ``x(t)`` is held constant over ``steps`` equal intervals of the
``duration``; its interval ``k`` is row ``k`` of a probe ``(steps, n_in)``. A read-out at a time on an interval
boundary sees the input of the interval that ends there (as the discrete dynamics read out with ``x(T)``).

- ``nonlinearity = "linear"``: integrated exactly. With ``A = T^{-1}(I - W_rec)`` the generator
  ``G = [[-A, T^{-1} W_in], [0, 0]]`` gives ``expm(G s) = [[expm(-A s), (integral_0^s expm(-A r) dr) T^{-1} W_in],
  [0, I]]``, so one segment of length ``s`` with constant input ``u`` is ``h <- E h + F u`` (no inverse of ``A``:
  singular ``A`` is fine). One ``torch.linalg.matrix_exp`` per distinct segment length, batched over trials.
- ``"tanh"``, ``"softplus"``, ``"relu"``: classical fixed-step RK4 on the ``dt`` grid (input switches fall on it,
  so each RK4 step sees a constant input and the scheme keeps its 4th order for smooth ``phi``).

This module reads circuits by duck typing (``dynamics``, ``regions``, ``projections``, ``region``, ``slices``,
``projections_into`` and the continuous fields) so that :mod:`neurosubset.circuit` can call it while being built.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ._checks import CircuitSpecError, check_names, check_real

CONTINUOUS_FIELDS = ("tau", "duration", "dt", "readout")
SMOOTH = ("linear", "tanh", "softplus")  # nonlinearities whose outputs are analytic in the weights
_GRID_RTOL = 1e-9  # duration / dt and t / dt must be integers to this relative precision (decimal seconds)


# ---------------------------------------------------------------------------------------------- spec fields
def check_fields(circuit: Any) -> None:
    """Check the continuous fields of a circuit being built and store them normalised (``tau`` a float or
    ``((region, tau), ...)`` in declaration order, ``readout`` a tuple on the ``dt`` grid).

    For other dynamics every field must be ``None`` and the nonlinearity linear or relu. Raises
    :class:`CircuitSpecError` naming the field.
    """
    if circuit.dynamics != "continuous":
        for name in CONTINUOUS_FIELDS:
            if getattr(circuit, name) is not None:
                raise CircuitSpecError(f"The {name!r} parameter applies to dynamics 'continuous' only; circuit "
                                       f"{circuit.name!r} has dynamics {circuit.dynamics!r}. Remove it.")
        if circuit.nonlinearity in ("tanh", "softplus"):
            raise CircuitSpecError(f"The 'nonlinearity' parameter {circuit.nonlinearity!r} needs dynamics "
                                   f"'continuous'; {circuit.dynamics!r} circuits take one of ['linear', 'relu'].")
        return
    for name in ("tau", "duration", "dt"):
        if getattr(circuit, name) is None:
            raise CircuitSpecError(f"The {name!r} parameter is required for dynamics 'continuous' (seconds, > 0).")
    hidden = [r.name for r in circuit.regions if r.role == "hidden"]
    tau = circuit.tau
    if isinstance(tau, (Mapping, tuple, list)):
        given = dict(tau)
        check_names("tau", given, hidden, what="Hidden region", error=CircuitSpecError)
        missing = [n for n in hidden if n not in given]
        if missing:
            raise CircuitSpecError(f"The 'tau' parameter lacks hidden regions {missing}: give every hidden region "
                                   f"a time constant (s), or one number for all.")
        tau = tuple((n, check_real(f"tau.{n}", given[n], low=0.0, low_open=True, error=CircuitSpecError))
                    for n in hidden)
    else:
        tau = check_real("tau", tau, low=0.0, low_open=True, error=CircuitSpecError)
    duration = check_real("duration", circuit.duration, low=0.0, low_open=True, error=CircuitSpecError)
    dt = check_real("dt", circuit.dt, low=0.0, low_open=True, error=CircuitSpecError)
    if dt > duration * (1 + _GRID_RTOL):
        raise CircuitSpecError(f"The 'dt' parameter must be <= duration ({duration:g} s). Got {dt:g} instead.")
    n_dt = _grid_index(duration / dt)
    if n_dt is None:
        raise CircuitSpecError(f"The 'duration' parameter must be a whole multiple of dt ({dt:g} s). Got "
                               f"{duration:g} s ({duration / dt:.6g} steps of dt) instead.")
    if n_dt % circuit.steps:
        raise CircuitSpecError(f"The 'steps' parameter (input intervals) must divide the {n_dt} time steps of dt "
                               f"in the duration. Got {circuit.steps} instead.")
    readout = circuit.readout
    if readout is not None:
        readout = tuple(float(i * dt) for i in grid_steps(readout, dt, n_dt, "readout", CircuitSpecError))
    for key, value in {"tau": tau, "duration": duration, "dt": dt, "readout": readout}.items():
        object.__setattr__(circuit, key, value)  # a frozen dataclass in its __post_init__


def grid_steps(times: Any, dt: float, steps: int, field: str, error: type[ValueError]) -> np.ndarray:
    """``times`` (s) as ``dt`` step indices ``(R,)``; raises ``error`` naming ``field`` unless they are increasing
    and on the grid in ``(0, steps * dt]``."""
    try:
        values = np.atleast_1d(np.asarray(times, dtype=float))
    except (TypeError, ValueError):
        raise error(f"The {field!r} parameter must be a list of times (s). Got {times!r} instead.") from None
    index = [_grid_index(t / dt) if np.isfinite(t) else None for t in values.ravel()]
    if values.ndim != 1 or not index or any(i is None or not 0 < i <= steps for i in index) or (
            np.any(np.diff(index) <= 0)):
        raise error(f"The {field!r} parameter must be increasing times on the dt grid ({dt:g} s) in (0, duration = "
                    f"{steps * dt:g}] s. Got {values.tolist()} instead.")
    return np.array(index, dtype=np.int64)


def _grid_index(ratio: float) -> int | None:
    """``ratio`` as an integer if it is one to :data:`_GRID_RTOL`, else None."""
    n = int(round(ratio))
    return n if abs(ratio - n) <= _GRID_RTOL * max(1, n) else None


def neuron_taus(circuit: Any, regions: Any = None) -> np.ndarray:
    """``(N,)`` time constant (s) of each neuron of the hidden ``regions`` (default: all hidden, declaration order)."""
    names = [r.name for r in circuit.regions if r.role == "hidden"] if regions is None else list(regions)
    per = dict(circuit.tau) if isinstance(circuit.tau, tuple) else {n: circuit.tau for n in names}
    return np.concatenate([np.full(circuit.region[n].size, float(per[n])) for n in names] or [np.zeros(0)])


def n_dt(circuit: Any) -> int:
    """Number of ``dt`` steps in the duration."""
    return int(round(circuit.duration / circuit.dt))


def readout_times(circuit: Any) -> tuple[float, ...]:
    """The read-out times (s): ``readout``, or the end of the duration."""
    return circuit.readout if circuit.readout is not None else (circuit.duration,)


def time_index(circuit: Any, times: Any = None) -> np.ndarray:
    """Read-out times as ``dt`` step indices: ``times`` (s; ``"all"``: every step), default the circuit's."""
    if isinstance(times, str) and times == "all":
        return np.arange(1, n_dt(circuit) + 1)
    times = readout_times(circuit) if times is None else times
    return np.array([int(round(t / circuit.dt)) for t in times], dtype=np.int64)


# ---------------------------------------------------------------------------------------------- integration
def _phi(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(z)
    if name == "softplus":
        return torch.nn.functional.softplus(z)
    if name == "relu":
        return torch.relu(z)
    return z


def _blocks(circuit: Any, weights: Mapping[str, torch.Tensor], rows: list[str], cols: list[str],
            ref: torch.Tensor) -> torch.Tensor:
    """Block matrix ``(..., sum rows, sum cols)`` of the projections from ``cols`` onto ``rows`` (zeros elsewhere)."""
    lead = ref.shape[:-2]
    lines = []
    for post in rows:
        blocks = []
        for pre in cols:
            names = [p.name for p in circuit.projections_into(post) if p.pre == pre]  # same regions: summed
            shape = (circuit.region[post].size, circuit.region[pre].size)
            w = weights[names[0]] if names else ref.new_zeros(shape)
            for name in names[1:]:
                w = w + weights[name]
            blocks.append(w.expand(lead + shape) if w.shape[:-2] != lead else w)
        lines.append(torch.cat(blocks, dim=-1) if blocks else ref.new_zeros(lead + (circuit.region[post].size, 0)))
    return torch.cat(lines, dim=-2)


def _lead(weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A weight with the broadest leading shape (the one every block is expanded to)."""
    return max(weights.values(), key=lambda w: w.dim())


def integrate(circuit: Any, weights: Mapping[str, torch.Tensor], probes: torch.Tensor, index: np.ndarray
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and hidden rates at the ``dt`` step indices ``index``.

    Parameters
    ----------
    circuit : Circuit
        ``"continuous"`` dynamics.
    weights : dict
        Weight name -> ``(..., n_post, n_pre)``.
    probes : torch.Tensor
        ``(..., m, steps, n_in)``: the input of each interval (dimensionless).
    index : numpy.ndarray
        ``(R,)`` increasing step indices in ``1 .. n_dt`` (time ``index * dt``).

    Returns
    -------
    tuple of torch.Tensor
        ``y`` ``(..., m, R, n_out_neurons)`` and ``h`` ``(..., m, R, n_hidden)``.
    """
    hidden, inputs = list(circuit.slices("hidden")), list(circuit.input_regions)
    outputs = list(circuit.output_regions)
    ref = _lead(weights)
    w_rec = _blocks(circuit, weights, hidden, hidden, ref) if hidden else None
    w_in = _blocks(circuit, weights, hidden, inputs, ref) if hidden else None
    w_out = _blocks(circuit, weights, outputs, hidden, ref) if hidden else None
    w_dir = _blocks(circuit, weights, outputs, inputs, ref)
    per = n_dt(circuit) // circuit.steps  # dt steps per input interval
    index = [int(i) for i in index]
    if not hidden:
        h = probes.new_zeros(probes.shape[:-2] + (len(index), 0))
    elif circuit.nonlinearity == "linear":
        h = _linear(w_rec, w_in, neuron_taus(circuit), probes, circuit.dt, per, index)
    else:
        h = _rk4(circuit.nonlinearity, w_rec, w_in, neuron_taus(circuit), probes, circuit.dt, per, index)
    x = probes[..., [(i - 1) // per for i in index], :]  # (..., m, R, n_in): the input each read-out sees
    y = x @ w_dir.mT.unsqueeze(-3)
    if hidden:
        y = y + h @ w_out.mT.unsqueeze(-3)
    return y, h


def _linear(w_rec: torch.Tensor, w_in: torch.Tensor, taus: np.ndarray, probes: torch.Tensor, dt: float,
            per: int, index: list[int]) -> torch.Tensor:
    """Exact piecewise-constant solution at the read-out steps, ``(..., m, R, N)`` (see the module docstring)."""
    n, k = w_rec.shape[-1], w_in.shape[-1]
    inv = torch.as_tensor(1.0 / taus, dtype=w_rec.dtype).unsqueeze(-1)  # (N, 1)
    top = torch.cat([(w_rec - torch.eye(n, dtype=w_rec.dtype)) * inv, w_in * inv], dim=-1)  # (..., N, N + K)
    gen = torch.cat([top, top.new_zeros(top.shape[:-2] + (k, n + k))], dim=-2)
    # segment ends: the input switches and the read-outs, in dt steps
    ends = sorted(set(range(per, index[-1] + 1, per)) | set(index))
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    h = probes.new_zeros(probes.shape[:-2] + (n,))
    wanted, found, start = set(index), [], 0
    for end in ends:
        length = end - start
        if length not in cache:
            prop = torch.linalg.matrix_exp(gen * (length * dt))
            cache[length] = (prop[..., :n, :n].mT, prop[..., :n, n:].mT)
        e_t, f_t = cache[length]
        h = h @ e_t + probes[..., start // per, :] @ f_t
        if end in wanted:
            found.append(h)
        start = end
    return torch.stack(found, dim=-2)


def _rk4(name: str, w_rec: torch.Tensor, w_in: torch.Tensor, taus: np.ndarray, probes: torch.Tensor, dt: float,
         per: int, index: list[int]) -> torch.Tensor:
    """Classical RK4 with step ``dt``, input constant over each step, ``(..., m, R, N)`` at the read-outs."""
    inv = torch.as_tensor(1.0 / taus, dtype=w_rec.dtype)
    drive = probes @ w_in.mT.unsqueeze(-3)  # (..., m, steps, N): W_in x of each interval
    w_t = w_rec.mT

    def rate(h: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return (_phi(name, h @ w_t + d) - h) * inv

    h = probes.new_zeros(drive.shape[:-2] + (w_rec.shape[-1],))
    wanted, found = set(index), []
    for step in range(index[-1]):
        d = drive[..., step // per, :]
        k1 = rate(h, d)
        k2 = rate(h + (0.5 * dt) * k1, d)
        k3 = rate(h + (0.5 * dt) * k2, d)
        k4 = rate(h + dt * k3, d)
        h = h + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        if step + 1 in wanted:
            found.append(h)
    return torch.stack(found, dim=-2)


def forward(circuit: Any, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
    """Outputs at the circuit's read-out times, ``(..., m, R * n_out_neurons)`` (time-major: ``circuit.n_out``)."""
    y, _ = integrate(circuit, weights, probes, time_index(circuit))
    return y.flatten(-2)


def final_max_real(circuit: Any, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                   final: torch.Tensor | None = None) -> torch.Tensor:
    """``max Re eig`` of the Jacobian of the vector field at the final state, ``(..., m)`` (1/s).

    ``J = T^{-1} (-I + diag(phi'(z)) W_rec)`` with ``z = W_rec h(duration) + W_in x`` (last interval's input):
    negative where the trajectory ends near a locally stable state. ``-inf`` without hidden neurons, NaN where the
    final state or the weights are not finite. ``final``: ``h(duration)`` ``(..., m, N)`` where the caller already
    integrated it (else integrated here).
    """
    hidden, inputs = list(circuit.slices("hidden")), list(circuit.input_regions)
    if not hidden:
        return probes.new_full(probes.shape[:-2], -float("inf"))
    ref = _lead(weights)
    w_rec, w_in = _blocks(circuit, weights, hidden, hidden, ref), _blocks(circuit, weights, hidden, inputs, ref)
    if final is None:
        final = integrate(circuit, weights, probes, time_index(circuit, (circuit.duration,)))[1][..., -1, :]
    with torch.enable_grad():
        z = (final @ w_rec.mT + probes[..., -1, :] @ w_in.mT).detach().requires_grad_(True)
        slope = torch.autograd.grad(_phi(circuit.nonlinearity, z).sum(), z)[0]  # phi'(z), elementwise
    inv = torch.as_tensor(1.0 / neuron_taus(circuit), dtype=z.dtype)
    n = w_rec.shape[-1]
    jac = (slope.unsqueeze(-1) * w_rec.unsqueeze(-3) - torch.eye(n, dtype=z.dtype)) * inv.unsqueeze(-1)
    finite = torch.isfinite(jac).all(-1).all(-1)  # a diverged student: NaN, without handing LAPACK a NaN
    out = torch.linalg.eigvals(torch.where(finite[..., None, None], jac, 0.0)).real.amax(-1)
    return torch.where(finite, out, float("nan"))


def final_max_real_eig(circuit: Any, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> np.ndarray:
    """Per-trial stability of a nonlinear continuous student at the end of its probes, on the steady scale.

    ``max(0, 1 + tau_max * max_p max Re eig J_p)``, ``(...)`` float64 (1), with ``J_p`` the Jacobian of the vector
    field at probe ``p``'s final state (:func:`final_max_real`, 1/s), ``max_p`` over the trial's probes (a trial
    counts as stable only if every probe's final linearisation is), ``tau_max`` the largest hidden tau
    (s). It is ``< 1`` iff every ``J_p`` has all real parts ``< 0``, and with equal taus it is
    ``max_p max Re eig(diag(phi'(z_p)) W_rec)``, floored at 0 as ``max Re(eig W)`` of the linear circuits is
    (their read-outs' zero eigenvalues): the same threshold and the same value as the linear criterion at
    ``phi' = 1``. The final state is not a fixed point in general, so this is local, per-probe information:
    ``stable=True`` does not act on it (see :func:`neurosubset.match_probability`).

    ``weights``: weight name -> ``(..., n_post, n_pre)``; ``probes`` ``(..., m, steps, n_in)`` (torch, float64).
    """
    taus = neuron_taus(circuit)
    if not taus.size:
        return np.zeros(probes.shape[:-3])
    with torch.no_grad():
        per_probe = final_max_real(circuit, weights, probes)  # (..., m) 1/s
    return np.maximum(0.0, 1.0 + taus.max() * per_probe.amax(-1).cpu().numpy())


# ---------------------------------------------------------------------------------------------- RK4 Jacobian
def _dphi(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return 1.0 - torch.tanh(z) ** 2
    if name == "softplus":
        return torch.sigmoid(z)
    return (z > 0).to(z.dtype)  # relu: the derivative torch's autograd uses (0 at z = 0)


def _directions(circuit: Any, index: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, ...]]:
    """Per kind of block (``rec``, ``in``, ``out``, ``dir``): (position k in theta, post row, pre column) of each
    plastic synapse in the block layout of :func:`integrate` (hidden / input / output neuron vectors)."""
    pos = {role: circuit.slices(role) for role in ("input", "hidden", "output")}
    kinds: dict[str, list[list[np.ndarray]]] = {k: [[], [], []] for k in ("rec", "in", "out", "dir")}
    first = np.cumsum([0] + [index[name].numel() for name in circuit.weight_names])  # theta layout: weight order
    for name, start in zip(circuit.weight_names, first):
        idx = index[name].numpy()
        proj = circuit.projection[name]
        n_pre = circuit.shape(name)[1]
        post_role, pre_role = circuit.region[proj.post].role, circuit.region[proj.pre].role
        kind = {("hidden", "hidden"): "rec", ("hidden", "input"): "in", ("output", "hidden"): "out",
                ("output", "input"): "dir"}[(post_role, pre_role)]
        for lst, part in zip(kinds[kind], (np.arange(start, start + idx.size),
                                           idx // n_pre + pos[post_role][proj.post].start,
                                           idx % n_pre + pos[pre_role][proj.pre].start)):
            lst.append(part)
    return {k: tuple(torch.as_tensor(np.concatenate(v) if v else np.zeros(0, dtype=np.int64), dtype=torch.long)
                     for v in parts) for k, parts in kinds.items()}


def _scatter(values: torch.Tensor, direction: tuple[torch.Tensor, ...], rows: int, size: int) -> torch.Tensor:
    """``out[..., post_k, k] = values[..., pre_k]``: the derivative of ``W v`` along each plastic direction of one
    block, ``(..., rows, size)`` from ``values`` ``(..., n_pre)``."""
    out = values.new_zeros(values.shape[:-1] + (rows, size))
    k, post, pre = direction
    if k.numel():
        out[..., post, k] = values[..., pre]
    return out


def rk4_jacobian(circuit: Any, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 index: Mapping[str, torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``(..., m * n_out)`` and their exact derivative in the plastic weights ``(..., m * n_out, M)``.

    Forward sensitivities of the RK4 scheme itself (the derivative of the discrete map that :func:`forward`
    computes, not of the ODE): every stage carries its tangents ``dh (..., m, N, M)`` along all ``M`` plastic
    directions at once, ``d rate = (phi'(z) dz - dh) / tau`` with ``dz = W_rec dh + dW_rec h + dW_in x``.
    ``index``: weight name -> flat plastic indices (:attr:`Allocation.indices`), ``theta`` in weight order.
    """
    hidden, inputs, outputs = list(circuit.slices("hidden")), list(circuit.input_regions), list(circuit.output_regions)
    ref = _lead(weights)
    w_rec, w_in = _blocks(circuit, weights, hidden, hidden, ref), _blocks(circuit, weights, hidden, inputs, ref)
    w_out, w_dir = _blocks(circuit, weights, outputs, hidden, ref), _blocks(circuit, weights, outputs, inputs, ref)
    dirs = _directions(circuit, index)
    n, name, dt = w_rec.shape[-1], circuit.nonlinearity, circuit.dt
    per, read = n_dt(circuit) // circuit.steps, [int(i) for i in time_index(circuit)]
    inv = torch.as_tensor(1.0 / neuron_taus(circuit), dtype=w_rec.dtype)
    drive = probes @ w_in.mT.unsqueeze(-3)  # (..., m, steps, N)
    w_t, w_4 = w_rec.mT, w_rec.unsqueeze(-3)  # (..., N, N) and (..., 1, N, N) for the tangents
    drive_tan = _scatter(probes, dirs["in"], n, size)  # (..., m, steps, N, M): dW_in x of each interval

    def rate(h, dh, d, dd):
        z = h @ w_t + d
        dz = w_4 @ dh + _scatter(h, dirs["rec"], n, size) + dd
        return (_phi(name, z) - h) * inv, (_dphi(name, z).unsqueeze(-1) * dz - dh) * inv.unsqueeze(-1)

    h = probes.new_zeros(drive.shape[:-2] + (n,))
    dh = probes.new_zeros(h.shape + (size,))
    ys, jacs = [], []
    for step in range(read[-1]):
        d, dd = drive[..., step // per, :], drive_tan[..., step // per, :, :]
        k1, t1 = rate(h, dh, d, dd)
        k2, t2 = rate(h + (0.5 * dt) * k1, dh + (0.5 * dt) * t1, d, dd)
        k3, t3 = rate(h + (0.5 * dt) * k2, dh + (0.5 * dt) * t2, d, dd)
        k4, t4 = rate(h + dt * k3, dh + dt * t3, d, dd)
        h = h + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        dh = dh + (dt / 6.0) * (t1 + 2 * t2 + 2 * t3 + t4)
        if step + 1 in read:
            x = probes[..., step // per, :]
            o = w_out.shape[-2]
            ys.append(h @ w_out.mT + x @ w_dir.mT)
            jacs.append(w_out.unsqueeze(-3) @ dh + _scatter(h, dirs["out"], o, size)
                        + _scatter(x, dirs["dir"], o, size))
    y = torch.stack(ys, dim=-2).flatten(-3)  # (..., m * R * n_out): probe-major, then time, then neuron
    return y, torch.stack(jacs, dim=-3).flatten(-4, -2)


def has_tangents(circuit: Any) -> bool:
    """Whether :func:`rk4_jacobian` serves ``circuit``'s Jacobian (continuous, nonlinear, with hidden neurons):
    :meth:`neurosubset.dynamics.PlasticMap.jacobian` uses it for ``method="auto"`` (``"autograd"`` stays
    available; tests/test_continuous.py checks the two agree)."""
    return circuit.dynamics == "continuous" and circuit.nonlinearity != "linear" and bool(circuit.slices("hidden"))
