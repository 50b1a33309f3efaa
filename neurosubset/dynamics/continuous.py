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

Jacobians (what the solvers use) by reverse mode, one adjoint row per output and read-out time, batched over
problems: :func:`linear_jacobian` (the exact solution's derivative as an integral over each segment, Gauss-Legendre
on panels with Taylor-series propagators; no eigenvectors) and :func:`rk4_adjoint_jacobian` (the discrete adjoint of
the scheme). Their cost grows with outputs x read-out times, not with the plastic synapses; :func:`rk4_jacobian`
(forward sensitivities, cost ~ plastic synapses) stays as a reference. Issue 29's profile (the V1 circuit at 50 ms,
dt = 1 ms, two read-outs, 40 plastic synapses, one trial): 0.9 s per LM iteration, 97% of it in torch.func's reverse
pass through ``matrix_exp`` (one ``2 (N + n_in)`` block exponential per output); the forward pass took 20 ms.
Measured since (``benchmarks/bench_continuous_lm.py --problems 4``, one trial's 4 restarts, one thread, CPU time,
both in one run): torch.func 1,058 ms, reverse mode 36 ms per LM iteration (29.5x) at 40 plastic synapses, 34 ms
at 80 (0.95x the cost at 40); on the full 200 ms circuit the reverse mode's panels sized by :func:`_growth_bound`
instead of ``||A||_1`` halved the cost again (48 ms against 96 ms per ``value_and_jacobian`` of 4 problems).

The :class:`Continuous` dynamics object ties these together for the rest of the package.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._checks import CircuitSpecError, ParameterError, check_names, check_real
from .base import CONTINUOUS_FIELDS as CONTINUOUS_FIELDS
from .base import Dynamics, register
from .blocks import block_matrix
from .stability import Loop, Stability

if TYPE_CHECKING:
    from ..circuit import Circuit

SMOOTH = ("linear", "tanh", "softplus")  # nonlinearities whose outputs are analytic in the weights
_GRID_RTOL = 1e-9  # duration / dt and t / dt must be integers to this relative precision (decimal seconds)


# ---------------------------------------------------------------------------------------------- spec fields
def check_fields(circuit: Circuit) -> None:
    """Check the continuous fields of a circuit being built and store them normalised (``tau`` a float or
    ``((region, tau), ...)`` in declaration order, ``readout`` a tuple on the ``dt`` grid).

    Raises :class:`CircuitSpecError` naming the field.
    """
    for name in ("tau", "duration", "dt"):
        if getattr(circuit, name) is None:
            raise CircuitSpecError(f"The {name!r} parameter is required for dynamics 'continuous' (seconds, > 0).")
    hidden = [r.name for r in circuit.regions if r.role == "hidden"]
    tau = circuit.tau
    if isinstance(tau, (Mapping, tuple, list)):
        try:
            given = dict(tau)
        except (TypeError, ValueError):
            example = ", ".join(f"{n} = 0.02" for n in hidden[:2])
            raise CircuitSpecError(f"The 'tau' parameter must be one number (s) or a table hidden region -> tau "
                                   f"(s), e.g. {{{example}}}. Got {tau!r}.") from None
        check_names("tau", given, hidden, what="Hidden region", error=CircuitSpecError)
        missing = [n for n in hidden if n not in given]
        if missing:
            raise CircuitSpecError(f"The 'tau' parameter lacks hidden regions {missing}: give every hidden region "
                                   f"a time constant (s), or one number for all.")
        tau = tuple((n, _finite(f"tau.{n}", check_real(f"tau.{n}", given[n], low=0.0, low_open=True,
                                                              error=CircuitSpecError))) for n in hidden)
    else:
        tau = _finite("tau", check_real("tau", tau, low=0.0, low_open=True, error=CircuitSpecError))
    duration = _finite("duration", check_real("duration", circuit.duration, low=0.0, low_open=True,
                                              error=CircuitSpecError))
    dt = _finite("dt", check_real("dt", circuit.dt, low=0.0, low_open=True, error=CircuitSpecError))
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


def _finite(field: str, value: float) -> float:
    """``value`` if finite, else :class:`CircuitSpecError` (an infinite time constant freezes the circuit: its
    outputs would be 0 whatever the weights, and every student would trivially match)."""
    if not np.isfinite(value):
        raise CircuitSpecError(f"The {field!r} parameter must be a finite number of seconds. Got {value} instead.")
    return value


RK4_LIMIT = 2.785  # RK4 is stable on the negative real axis for dt |lambda| below about 2.785


def check_rk4_step(circuit: Circuit) -> None:
    """Refuse a nonlinear continuous circuit whose ``dt`` lies beyond RK4's stability limit.

    The vector field's Jacobian is ``T^-1 (-I + diag(phi') W_rec)`` with ``0 <= phi' <= 1``; its eigenvalues have
    modulus up to about ``(1 + rho) / tau_min`` with ``rho`` the expected spectral radius of the recurrent weights
    at initialisation (:attr:`Circuit.expected_spectral_radius`). A step with ``dt (1 + rho) / tau_min`` beyond
    :data:`RK4_LIMIT` diverges (measured: 1.5e49 instead of 2.6 at ``dt = 10 tau``), so it is refused rather than
    reported as a lower bound. An estimate, not a guarantee: trials that still diverge are flagged ``non_finite``.
    """
    taus = neuron_taus(circuit)
    if circuit.nonlinearity == "linear" or not taus.size:
        return  # linear circuits are integrated exactly (matrix exponentials), whatever dt
    rho = circuit.expected_spectral_radius
    reach = circuit.dt * (1.0 + rho) / taus.min()
    if reach >= RK4_LIMIT:
        raise CircuitSpecError(f"The 'dt' parameter ({circuit.dt:g} s) is beyond RK4's stability limit for tau = "
                               f"{taus.min():g} s: dt (1 + rho) / tau_min = {reach:.3g} with rho = {rho:.3g}, the "
                               f"expected spectral radius of the recurrent weights; RK4 needs < {RK4_LIMIT}. Use dt "
                               f"<= {RK4_LIMIT * taus.min() / (1 + rho) / 2:.3g} s (half the limit, for accuracy).")


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


def neuron_taus(circuit: Circuit, regions: Any = None) -> np.ndarray:
    """``(N,)`` time constant (s) of each neuron of the hidden ``regions`` (default: all hidden, declaration order)."""
    names = [r.name for r in circuit.regions if r.role == "hidden"] if regions is None else list(regions)
    per = dict(circuit.tau) if isinstance(circuit.tau, tuple) else {n: circuit.tau for n in names}
    return np.concatenate([np.full(circuit.region[n].size, float(per[n])) for n in names] or [np.zeros(0)])


def n_dt(circuit: Circuit) -> int:
    """Number of ``dt`` steps in the duration."""
    return int(round(circuit.duration / circuit.dt))


def readout_times(circuit: Circuit) -> tuple[float, ...]:
    """The read-out times (s): ``readout``, or the end of the duration."""
    return circuit.readout if circuit.readout is not None else (circuit.duration,)


def time_index(circuit: Circuit, times: Any = None) -> np.ndarray:
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


def integrate(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor, index: np.ndarray
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
    w_rec = block_matrix(circuit, weights, hidden, hidden) if hidden else None
    w_in = block_matrix(circuit, weights, hidden, inputs) if hidden else None
    w_out = block_matrix(circuit, weights, outputs, hidden) if hidden else None
    w_dir = block_matrix(circuit, weights, outputs, inputs)
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


def forward(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
    """Outputs at the circuit's read-out times, ``(..., m, R * n_out_neurons)`` (time-major: ``circuit.n_out``)."""
    y, _ = integrate(circuit, weights, probes, time_index(circuit))
    return y.flatten(-2)


def final_max_real(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
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
    w_rec, w_in = block_matrix(circuit, weights, hidden, hidden), block_matrix(circuit, weights, hidden, inputs)
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


def final_max_real_eig(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> np.ndarray:
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


def _directions(circuit: Circuit, index: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, ...]]:
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


def rk4_jacobian(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 index: Mapping[str, torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``(..., m * n_out)`` and their exact derivative in the plastic weights ``(..., m * n_out, M)``.

    Forward sensitivities of the RK4 scheme itself (the derivative of the discrete map that :func:`forward`
    computes, not of the ODE): every stage carries its tangents ``dh (..., m, N, M)`` along all ``M`` plastic
    directions at once, ``d rate = (phi'(z) dz - dh) / tau`` with ``dz = W_rec dh + dW_rec h + dW_in x``.
    ``index``: weight name -> flat plastic indices (:attr:`Allocation.indices`), ``theta`` in weight order.
    """
    hidden, inputs, outputs = list(circuit.slices("hidden")), list(circuit.input_regions), list(circuit.output_regions)
    w_rec, w_in = block_matrix(circuit, weights, hidden, hidden), block_matrix(circuit, weights, hidden, inputs)
    w_out, w_dir = block_matrix(circuit, weights, outputs, hidden), block_matrix(circuit, weights, outputs, inputs)
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


# ---------------------------------------------------------------------------------------------- reverse mode
# The Jacobians the solvers use: one adjoint per output (read-out time x output neuron, per probe), batched over
# problems and probes, so the cost grows with outputs x read-out times and not with the plastic synapses (they
# enter only through a gather of the adjoint against the presynaptic activity). No eigenvectors anywhere.
_GL_NODES = 8  # Gauss-Legendre nodes per panel of the linear circuits' gradient integrals
_PANEL_NORM = 2.0  # panels short enough that alpha h <= 2 (alpha: _growth_bound of A = T^-1 (W_rec - I))
_MAX_PANELS = 4096
_TAYLOR_TERMS = 24  # expm(X) of alpha(X) <= 2 by its Taylor series: remainder <= 1.1 x 2^25 / 25! ~ 2e-18


def _growth_bound(a: torch.Tensor) -> torch.Tensor:
    """``alpha_3(A) = max(||A^3||_1^(1/3), ||A^4||_1^(1/4))`` per matrix of ``a`` ``(..., N, N)`` (1/s), at most
    ``||A||_1``; where a power overflows, ``||A||_1``.

    Al-Mohy & Higham (2009, SIAM J. Matrix Anal. Appl. 31, Thm 4.2): ``||A^j|| <= alpha_3^j`` for every ``j >= 6``.
    So the Taylor tail of ``expm(X)`` beyond 24 terms, and the derivatives of order ``>= 16`` of the quadrature's
    integrands (products ``A^i`` x ``A^(k - i)`` with ``max(i, k - i) >= 8``), are bounded through ``alpha_3 h``
    (times ``max_(i <= 5) ||A^i|| / alpha_3^i``, a factor of about 3 on the V1 circuit) rather than through the
    1-norm. Measured: on the V1 continuous circuit ``alpha_3`` = 275 1/s against ``||A||_1`` = 720 1/s (2.6x; E/I
    blocks: column sums count every synapse of a neuron, the powers average their signs), on the tests' small E/I
    circuit 319 against 410 (1.3x); the panels shrink in number by the same factor.
    """
    norm = a.abs().sum(-2).amax(-1)
    a2 = a @ a
    a3 = a2 @ a
    d3 = a3.abs().sum(-2).amax(-1) ** (1.0 / 3.0)
    d4 = (a2 @ a2).abs().sum(-2).amax(-1) ** 0.25
    alpha = torch.minimum(torch.maximum(d3, d4), norm)
    return torch.where(torch.isfinite(alpha), alpha, norm)


def _plastic_outputs(circuit: Circuit, dirs: Mapping[str, tuple[torch.Tensor, ...]], h: torch.Tensor | None,
                     x: torch.Tensor, jac: torch.Tensor) -> None:
    """Add the read-out synapses' columns to ``jac`` ``(..., m, R, n_out, M)``: ``dy_o / dW_out[o', l] =
    delta(o, o') h_l`` and ``dy_o / dW_dir[o', l] = delta(o, o') x_l`` (``h`` ``(..., m, R, N)``, ``x``
    ``(..., m, R, n_in)`` the read-outs' states and inputs)."""
    for kind, values in (("out", h), ("dir", x)):
        k, post, pre = dirs[kind]
        if k.numel() and values is not None:
            jac[..., post, k] = values[..., pre]


def linear_jacobian(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                    index: Mapping[str, torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_linear_jacobian` over problems grouped by their own panel counts.

    The panel count of a segment follows ``||A||_1`` (:func:`_linear_jacobian`); one count for a whole batch, from
    its largest norm, made every problem pay for the widest one: on the V1 E/I circuit (24 problems) one LM trial
    point at 100 init SDs made a call 5x dearer, one at 1,000 SDs 34x. Where the weights are batched over one
    leading dim (the solvers' problems: ``(P, n_post, n_pre)``, probes ``(P, m, steps, n_in)``), problems with the
    same panel counts are integrated together, each with its own counts: a problem's Jacobian no longer depends on
    the others in the batch. Other shapes: one group.
    """
    groups = _panel_groups(circuit, weights, probes)
    if groups is None:
        return _linear_jacobian(circuit, weights, probes, index, size)
    y_all, h_all = integrate(circuit, weights, probes, time_index(circuit))  # the outputs as forward(), bit for bit
    y, jac = None, None
    for sel in groups:
        y_g, jac_g = _linear_jacobian(circuit, {k: w[sel] for k, w in weights.items()}, probes[sel], index, size,
                                      (y_all[sel], h_all[sel]))
        if y is None:
            y = y_g.new_empty((probes.shape[0],) + y_g.shape[1:])
            jac = jac_g.new_empty((probes.shape[0],) + jac_g.shape[1:])
        y[sel], jac[sel] = y_g, jac_g
    return y, jac


def _panel_groups(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor
                  ) -> list[torch.Tensor] | None:
    """Problems (long index tensors) with equal panel counts for every segment length of :func:`_linear_jacobian`,
    or None where there is one group (or the weights are not batched over one leading dim like the probes)."""
    hidden = list(circuit.slices("hidden"))
    if not hidden or probes.dim() != 4 or probes.shape[0] < 2:
        return None
    if any(w.dim() != 3 or w.shape[0] != probes.shape[0] for w in weights.values()):
        return None
    w_rec = block_matrix(circuit, weights, hidden, hidden)
    n = w_rec.shape[-1]
    inv = torch.as_tensor(1.0 / neuron_taus(circuit), dtype=w_rec.dtype)
    norm = _growth_bound((w_rec - torch.eye(n, dtype=w_rec.dtype)) * inv[:, None]).numpy()  # (P,)
    per, read = n_dt(circuit) // circuit.steps, [int(i) for i in time_index(circuit)]
    ends = sorted(set(range(per, read[-1] + 1, per)) | set(read))
    lengths = sorted({end - start for start, end in zip([0] + ends[:-1], ends)})
    keys = np.stack([_panel_count(norm, length * circuit.dt) for length in lengths], axis=-1)  # (P, lengths)
    _, label = np.unique(keys, axis=0, return_inverse=True)
    label = label.reshape(-1)
    if label.max(initial=0) == 0:
        return None
    return [torch.as_tensor(np.flatnonzero(label == g)) for g in range(int(label.max()) + 1)]


def _panel_count(norm: Any, s: float) -> Any:
    """Panels of a segment of ``s`` seconds for :func:`_growth_bound` ``= norm`` (scalar or array, 1/s): ``norm h
    <= 2`` per panel, at most :data:`_MAX_PANELS`; a non-finite norm (a diverging iterate) gets one (its step is
    refused anyway)."""
    norm = np.asarray(norm, dtype=float)
    count = np.clip(np.ceil(np.where(np.isfinite(norm), norm, 0.0) * s / _PANEL_NORM), 1, _MAX_PANELS)
    return count.astype(np.int64)


def _linear_jacobian(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                     index: Mapping[str, torch.Tensor], size: int,
                     read: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``(..., m * n_out)`` and ``dF/dtheta`` ``(..., m * n_out, M)`` of a linear continuous circuit, by
    reverse mode through the exact solution.

    Over a segment of length ``s`` with constant input ``u`` the state moves as ``h(s) = expm(A s) h(0) +
    int_0^s expm(A (s - r)) K u dr`` (``A = T^-1 (W_rec - I)``, ``K = T^-1 W_in``), and for an adjoint row
    ``lam`` (the sensitivity of one output to the segment's end state) ``d(lam h(s)) / dW_rec[i, l] =
    (1 / tau_i) int_0^s a_i(r) h_l(r) dr`` with ``a(r) = lam expm(A (s - r))``, and ``d / dW_in[i, l] =
    (1 / tau_i) u_l int_0^s a_i(r) dr`` (the derivative of ``expm``, integral form). Both integrands are entire
    functions of ``r``; each segment is cut into panels with ``alpha h <= 2`` (``alpha`` :func:`_growth_bound` of
    ``A``, the largest over the batch) and integrated by 8-point Gauss-Legendre per panel (exact for degree 15;
    the error term ~ ``(2 alpha h)^16 (8!)^4 / (17 (16!)^3)`` ~ 1e-13 relative), with ``a`` and ``h`` at the nodes
    from the Taylor series of ``expm(G h xi)`` (``G`` the augmented generator of the module docstring, 24 terms,
    all nodes in one product). The adjoints move back by ``lam <- lam expm(A h)`` panel by panel. Cost per
    segment length: 24 products of ``N x (N + n_in)`` matrices per problem, plus ``(outputs + probes) x nodes``
    matrix-vector products per panel; the plastic synapses only index the integrals.

    ``weights``: name -> ``(..., n_post, n_pre)``; ``probes`` ``(..., m, steps, n_in)``; ``index`` weight name ->
    flat plastic indices (theta in weight order, :func:`_directions`); outputs probe-major, then read-out time,
    then output neuron (as :func:`forward`); ``read``: :func:`integrate`'s ``(y, h)`` at the read-outs where the
    caller has them.
    """
    # the outputs exactly as forward()
    y, h_read = integrate(circuit, weights, probes, time_index(circuit)) if read is None else read
    hidden, inputs, outputs = list(circuit.slices("hidden")), list(circuit.input_regions), list(circuit.output_regions)
    dirs = _directions(circuit, index)
    per, read = n_dt(circuit) // circuit.steps, [int(i) for i in time_index(circuit)]
    x_read = probes[..., [(i - 1) // per for i in read], :]
    jac = probes.new_zeros(y.shape + (size,))  # (..., m, R, n_out, M)
    _plastic_outputs(circuit, dirs, h_read if hidden else None, x_read, jac)
    if not hidden or not (dirs["rec"][0].numel() or dirs["in"][0].numel()):
        return y.flatten(-3), jac.flatten(-4, -2)
    w_rec, w_in = block_matrix(circuit, weights, hidden, hidden), block_matrix(circuit, weights, hidden, inputs)
    w_out = block_matrix(circuit, weights, outputs, hidden)
    n, dt = w_rec.shape[-1], circuit.dt
    inv = torch.as_tensor(1.0 / neuron_taus(circuit), dtype=w_rec.dtype)
    top = torch.cat([(w_rec - torch.eye(n, dtype=w_rec.dtype)) * inv[:, None], w_in * inv[:, None]], dim=-1)
    norm = float(_growth_bound(top[..., :n]).amax())  # the largest over the batch (the rates of h, a)
    xi, wts = np.polynomial.legendre.leggauss(_GL_NODES)
    xi, wts = (xi + 1.0) / 2.0, wts / 2.0  # on [0, 1]
    ends = sorted(set(range(per, read[-1] + 1, per)) | set(read))
    starts = [0] + ends[:-1]
    cache: dict[int, tuple] = {}

    def panels(length: int):
        """Panel count, the nodes' weights (s), and the blocks of ``expm(G h xi_j)``: ``E^T`` and ``F^T`` at the
        nodes ``(q, ..., N, N)`` / ``(q, ..., K, N)``, ``E`` at the mirrored nodes ``1 - xi_j``, and ``E^T``,
        ``F^T``, ``E`` of the whole panel."""
        if length not in cache:
            s = length * dt
            # a diverging iterate (inf / NaN weights, or rates far beyond the dt grid) gets a capped count: its
            # outputs are not finite or its step is refused anyway
            count = int(_panel_count(norm, s))
            step = s / count
            x = top * step  # the top rows of G h: X^j = [[(A h)^j, (A h)^(j - 1) K h], [0, 0]] for j >= 1
            frac = torch.as_tensor(np.concatenate([xi, [1.0]]), dtype=top.dtype)  # nodes, then the whole panel
            powers = top.new_empty((_TAYLOR_TERMS + 1,) + top.shape)  # the top rows of X^j / j!
            powers[0] = 0.0
            powers[0].diagonal(dim1=-2, dim2=-1)[..., :n] = 1.0
            for j in range(1, _TAYLOR_TERMS + 1):
                torch.matmul(powers[j - 1][..., :n], x, out=powers[j])
                powers[j] /= j
            coef = frac[:, None] ** torch.arange(_TAYLOR_TERMS + 1, dtype=top.dtype)  # (q + 1, terms)
            # sum_j xi^j X^j / j! at every node at once: one product (q + 1, terms) x (terms, ... N (N + K))
            props = (coef @ powers.flatten(1)).view((frac.numel(),) + top.shape)
            e, f = props[..., :n], props[..., n:]
            q = xi.size
            # side by side along the columns, so that each panel is one product per operand: the adjoints times
            # [E(1 - xi_1) ... E(1 - xi_q) E(1)] (nodes, then the whole panel), the states times [E(xi_j)^T]
            a_cat = torch.cat([*e[:-1].flip(0).unbind(0), e[-1]], dim=-1)  # (..., N, (q + 1) N)
            h_cat = torch.cat(e[:-1].mT.unbind(0), dim=-1)  # (..., N, q N)
            f_cat = torch.cat(f[:-1].mT.unbind(0), dim=-1)  # (..., K, q N)
            cache[length] = (count, torch.as_tensor(wts * step, dtype=top.dtype), q, a_cat, h_cat, f_cat,
                             e[-1].mT, f[-1].mT)
        return cache[length]

    # forward: the state at every panel boundary of every segment, (..., m, N)
    h = probes.new_zeros(probes.shape[:-2] + (n,))
    bounds = []
    for start, end in zip(starts, ends):
        count, _, _, _, _, _, e1, f1 = panels(end - start)
        u = probes[..., start // per, :]
        seg = [h]
        for _ in range(count):
            h = h @ e1 + u @ f1
            seg.append(h)
        bounds.append(seg)
    # backward: adjoints (..., R, n_out, N), the rows of W_out entering at their read-out's segment end. They do not
    # depend on the probe (the circuit is linear), so they are carried once and met with each probe's states.
    rk, rpost, rpre = dirs["rec"]
    ik, ipost, ipre = dirs["in"]
    batch, rows = y.shape[:-3], y.shape[-2:]  # rows (R, o)
    lam = probes.new_zeros(batch + rows + (n,))
    for seg_no in range(len(ends) - 1, -1, -1):
        start, end = starts[seg_no], ends[seg_no]
        if end in read:
            lam[..., read.index(end), :, :] = w_out.expand(batch + w_out.shape[-2:])
        count, wq, q, a_cat, h_cat, f_cat, _, _ = panels(end - start)
        u = probes[..., start // per, :]
        u_nodes = u @ f_cat  # (..., m, q N): F(xi_j h) u
        a_sum = probes.new_zeros(lam.shape)  # int a dr over the segment (input synapses)
        wcol = wq[:, None]
        for p in range(count - 1, -1, -1):
            hb = bounds[seg_no][p]  # (..., m, N) at the panel's start
            # nodes j: h(r_j) = E(xi_j h) hb + F(xi_j h) u, a(r_j) = lam E((1 - xi_j) h); then lam E(h)
            h_nodes = (hb @ h_cat + u_nodes).unflatten(-1, (q, n))  # (..., m, q, N)
            moved = (lam.flatten(-3, -2) @ a_cat).unflatten(-2, rows)  # (..., R, o, (q + 1) N)
            a_nodes = moved[..., :q * n].unflatten(-1, (q, n))  # (..., R, o, q, N)
            if rk.numel():  # sum_j w_j a_i(r_j) h_l(r_j) per probe: (..., m, R, o, Mr)
                jac[..., rk] += torch.einsum("...roqk,...mqk->...mrok", a_nodes[..., rpost] * wcol,
                                             h_nodes[..., rpre]) * inv[rpost]
            if ik.numel():
                a_sum += (a_nodes * wcol).sum(-2)
            lam = moved[..., q * n:]  # lam expm(A h): back to the panel's start
        if ik.numel():
            jac[..., ik] += a_sum[..., ipost].unsqueeze(-4) * inv[ipost] * u[..., None, None, :][..., ipre]
    return y.flatten(-3), jac.flatten(-4, -2)


def rk4_adjoint_jacobian(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                         index: Mapping[str, torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``(..., m * n_out)`` and their exact derivative ``(..., m * n_out, M)`` for RK4 circuits, by the
    discrete adjoint of the scheme (reverse mode through the stored steps).

    The forward pass stores the state at every ``dt`` step; the reverse pass recomputes each step's four stages
    and carries one adjoint row per output (read-out time x output neuron, per probe) back through them:
    ``g_k4 = lam' dt/6``, ``g_k3 = lam' dt/3 + dt g_h4``, ``g_k2 = lam' dt/3 + dt/2 g_h3``, ``g_k1 = lam' dt/6 +
    dt/2 g_h2`` with ``mu_s = g_ks phi'(z_s) / tau`` (the sensitivity to the stage's drive ``z_s``) and ``g_hs =
    mu_s W_rec - g_ks / tau``; ``lam = lam' + sum_s g_hs``. Plastic weights: ``dW_rec[i, l] += sum_s mu_s,i
    h_s,l``, ``dW_in[i, l] += sum_s mu_s,i x_l``. The derivative of the discrete map that :func:`forward`
    computes (equal to :func:`rk4_jacobian`'s forward sensitivities); cost per step grows with the outputs, the
    plastic synapses only index the sums. Arguments as :func:`rk4_jacobian`.
    """
    hidden, inputs, outputs = list(circuit.slices("hidden")), list(circuit.input_regions), list(circuit.output_regions)
    w_rec, w_in = block_matrix(circuit, weights, hidden, hidden), block_matrix(circuit, weights, hidden, inputs)
    w_out, w_dir = block_matrix(circuit, weights, outputs, hidden), block_matrix(circuit, weights, outputs, inputs)
    dirs = _directions(circuit, index)
    name, dt = circuit.nonlinearity, circuit.dt
    per, read = n_dt(circuit) // circuit.steps, [int(i) for i in time_index(circuit)]
    inv = torch.as_tensor(1.0 / neuron_taus(circuit), dtype=w_rec.dtype)
    drive = probes @ w_in.mT.unsqueeze(-3)  # (..., m, steps, N)
    w_t = w_rec.mT

    def rate(h, d):
        z = h @ w_t + d
        return (_phi(name, z) - h) * inv, z

    h = probes.new_zeros(drive.shape[:-2] + (w_rec.shape[-1],))
    states = [h]
    for step in range(read[-1]):
        d = drive[..., step // per, :]
        k1, _ = rate(h, d)
        k2, _ = rate(h + (0.5 * dt) * k1, d)
        k3, _ = rate(h + (0.5 * dt) * k2, d)
        k4, _ = rate(h + dt * k3, d)
        h = h + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        states.append(h)
    h_read = torch.stack([states[i] for i in read], dim=-2)  # (..., m, R, N)
    x_read = probes[..., [(i - 1) // per for i in read], :]
    y = h_read @ w_out.mT.unsqueeze(-3) + x_read @ w_dir.mT.unsqueeze(-3)  # (..., m, R, n_out)
    jac = probes.new_zeros(y.shape + (size,))
    _plastic_outputs(circuit, dirs, h_read, x_read, jac)
    rk, rpost, rpre = dirs["rec"]
    ik, ipost, ipre = dirs["in"]
    if not (rk.numel() or ik.numel()):
        return y.flatten(-3), jac.flatten(-4, -2)
    o, n_read = w_out.shape[-2], len(read)
    w_back = w_rec  # (..., N, N): the adjoint rows of all probes (..., m outputs, N) in one product
    lam = probes.new_zeros(y.shape[:-2] + (n_read * o, w_rec.shape[-1]))  # (..., m, R n_out, N), time-major
    rec_sum = probes.new_zeros(lam.shape[:-1] + (rk.numel(),))  # sum_s mu_s,post h_s,pre of the rec synapses
    drive_sens = [torch.zeros_like(lam) for _ in range(circuit.steps)]  # sum of mu over each input interval
    slope_of = (lambda z: _dphi(name, z) * inv)  # noqa: E731

    def back(g_k, z_s):
        """A stage's adjoint: ``mu = dL/dz_s`` and ``dL/dh_s`` (rows: the active outputs)."""
        mu = g_k * slope_of(z_s).unsqueeze(-2)
        return mu, (mu.flatten(-3, -2) @ w_back).view(mu.shape) - g_k * inv

    first = n_read  # outputs from read-out `first` on are active (their read-out lies at or after this step)
    for step in range(read[-1] - 1, -1, -1):
        while first and read[first - 1] >= step + 1:
            first -= 1
            lam[..., first * o:(first + 1) * o, :] = w_out.unsqueeze(-3).expand(lam[..., :o, :].shape)
        act = slice(first * o, None)
        h, d = states[step], drive[..., step // per, :]
        k1, z1 = rate(h, d)
        h2 = h + (0.5 * dt) * k1
        k2, z2 = rate(h2, d)
        h3 = h + (0.5 * dt) * k2
        k3, z3 = rate(h3, d)
        h4 = h + dt * k3
        _, z4 = rate(h4, d)
        lam_a = lam[..., act, :]
        mu4, g_h4 = back(lam_a * (dt / 6.0), z4)
        mu3, g_h3 = back(lam_a * (dt / 3.0) + dt * g_h4, z3)
        mu2, g_h2 = back(lam_a * (dt / 3.0) + (0.5 * dt) * g_h3, z2)
        mu1, g_h1 = back(lam_a * (dt / 6.0) + (0.5 * dt) * g_h2, z1)
        if rk.numel():
            mus, hs = torch.stack([mu1, mu2, mu3, mu4]), torch.stack([h, h2, h3, h4]).unsqueeze(-2)
            rec_sum[..., act, :] += (mus[..., rpost] * hs[..., rpre]).sum(0)
        if ik.numel():
            drive_sens[step // per][..., act, :] += mu1 + mu2 + mu3 + mu4
        lam[..., act, :] = lam_a + g_h1 + g_h2 + g_h3 + g_h4
    flat = jac.flatten(-3, -2)  # (..., m, R n_out, M), a view
    if rk.numel():
        flat[..., rk] += rec_sum
    if ik.numel():  # dW_in[i, l]: per interval, (sum of mu_i over its steps and stages) x_l
        for iv, sens in enumerate(drive_sens):
            flat[..., ik] += sens[..., ipost] * probes[..., iv, :].unsqueeze(-2)[..., ipre]
    return y.flatten(-3), jac.flatten(-4, -2)


@register
class Continuous(Dynamics):
    """``T dh/dt = -h + phi(W_rec h + W_in x(t))`` from ``h(0) = 0``; ``y(t) = W_out h(t) + W_direct x(t)``.

    ``T = diag(tau)`` (s, per hidden region), ``x(t)`` constant over ``steps`` intervals of ``duration`` (s),
    outputs read out at the ``readout`` times (default the end), concatenated (``n_out`` = read-outs x output
    neurons). Linear circuits are integrated exactly (matrix exponentials), the others by RK4 on the ``dt`` grid
    (see the module docstring). Jacobians by reverse mode: through the exact solution (linear) or the
    discrete adjoint of the RK4 scheme; float ranks only (``expm`` is not rational). Linear circuits keep
    ``max Re eig(T^-1 (W - I)) < 0``.
    """

    name = "continuous"
    nonlinearities = ("linear", "relu", "tanh", "softplus")
    sequences = True
    cpu_only = True  # the integrators build CPU tensors

    def validate(self, circuit: Circuit) -> None:
        check_fields(circuit)
        check_rk4_step(circuit)

    def readouts(self, circuit: Circuit) -> int:
        return len(readout_times(circuit))

    def recorded_times(self, circuit: Circuit) -> int:
        return len(readout_times(circuit))

    def readout_times(self, circuit: Circuit) -> np.ndarray:
        return np.asarray(readout_times(circuit), dtype=float)

    def time_units(self, circuit: Circuit) -> str:
        return "s"

    def forward(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
        return forward(circuit, weights, probes)

    def rates(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
              regions: Sequence[str], *, time: bool = False) -> dict[str, torch.Tensor]:
        """Hidden rates and read-outs at the read-out times (the last one without ``time``)."""
        y, h = integrate(circuit, weights, probes, time_index(circuit))
        where = {**circuit.slices("hidden"), **circuit.slices("output")}
        out = {r: (h if circuit.region[r].role == "hidden" else y)[..., where[r]] for r in regions}
        return out if time else {r: v[..., -1, :] for r, v in out.items()}

    def simulate(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 regions: Sequence[str], times: Sequence[float] | str | None = None
                 ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Rates at ``times`` (s; ``"all"``: every ``dt`` step; None: the read-out times), one integration."""
        n = n_dt(circuit)
        if isinstance(times, str):
            if times != "all":
                raise ParameterError(f"The 'times' parameter must be a list of times (s), 'all' or None. "
                                     f"Got {times!r}.")
            index = np.arange(1, n + 1)
        else:
            index = grid_steps(readout_times(circuit) if times is None else times, circuit.dt, n, "times",
                               ParameterError)
        y, h = integrate(circuit, weights, probes, index)
        where = {**circuit.slices("hidden"), **circuit.slices("output")}
        return ({r: (h if circuit.region[r].role == "hidden" else y)[..., where[r]] for r in regions},
                index * circuit.dt)

    def simulate_extras(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                        rates: Mapping[str, torch.Tensor], times: np.ndarray | None) -> tuple[dict, dict, dict]:
        """``max_real_jacobian (probe)`` (1/s) at the final state, the input intervals' starts, the integrator."""
        from .._schema import meta

        n = n_dt(circuit)
        hidden = [r.name for r in circuit.regions if r.role == "hidden"]
        last = None  # RK4's trajectory does not depend on the read-outs: reuse h(duration) where it was read out
        if circuit.nonlinearity != "linear" and hidden and round(times[-1] / circuit.dt) == n and all(
                r in rates for r in hidden):
            last = torch.cat([rates[r][..., -1, :] for r in hidden], dim=-1)
        final = final_max_real(circuit, weights, probes, last)
        per = n // circuit.steps
        variables = {"max_real_jacobian": (("probe",), final.numpy(), meta("max_real_jacobian"))}
        coords = {"interval_start": ("interval", np.arange(circuit.steps) * per * circuit.dt, meta("interval_start"))}
        attrs = {"integrator": "expm" if circuit.nonlinearity == "linear" else "rk4", "dt": float(circuit.dt),
                 "duration": float(circuit.duration)}
        return variables, coords, attrs

    def tangent_jacobian(self, circuit: Circuit) -> bool:
        """Whether :meth:`tangents` serves ``circuit``'s Jacobian (with hidden neurons): reverse mode,
        :func:`linear_jacobian` (linear) or :func:`rk4_adjoint_jacobian` (RK4);
        :meth:`neurosubset.dynamics.PlasticMap.jacobian` uses it for ``method="auto"`` (``"autograd"`` stays
        available; tests/test_dynamics_continuous.py checks them against it, against :func:`rk4_jacobian`'s forward
        sensitivities and against finite differences)."""
        return bool(circuit.slices("hidden"))

    def tangents(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 index: Mapping[str, torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and Jacobian by reverse mode (cost grows with outputs x read-out times, not plastic synapses)."""
        if circuit.nonlinearity == "linear":
            return linear_jacobian(circuit, weights, probes, index, size)
        return rk4_adjoint_jacobian(circuit, weights, probes, index, size)

    def local_stability(self, circuit: Circuit, weights: Mapping[str, torch.Tensor],
                        probes: torch.Tensor) -> np.ndarray | None:
        """Nonlinear students: the linearisation at each probe's final state (:func:`final_max_real_eig`)."""
        return final_max_real_eig(circuit, weights, probes)

    def stability(self, circuit: Circuit) -> ContinuousStability | None:
        return ContinuousStability(circuit) if circuit.nonlinearity == "linear" else None


class ContinuousStability(Stability):
    """``max Re eig(T^-1 (W - I)) < 0`` per loop, reported on the steady scale ``1 + tau_max max Re eig(...)``."""

    def refusal(self, fraction: float, draws: int) -> str:
        return (f"linear continuous circuit {self.circuit.name!r} is unstable in {fraction:.0%} of {draws} teacher "
                f"draws (max Re eig(T^-1 (W - I)) >= 0; at most ")

    def _generator(self, loop: Loop, block: np.ndarray):
        taus = neuron_taus(self.circuit, loop.regions)
        return (block - np.eye(taus.size)) / taus[:, None], 1.0 / taus, 1.0, float(taus.max())

    def hurwitz(self, gen: np.ndarray) -> np.ndarray:
        """``T^-1 (W - I)`` itself: the loop is stable iff it is Hurwitz."""
        return gen
