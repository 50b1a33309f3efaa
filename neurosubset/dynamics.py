"""Forward maps in torch (float64), batched over any leading dimensions, and the plastic-parameter map.

Shapes use named dims: ``(..., m, n_in)`` probes (``(..., m, steps, n_in)`` for discrete and continuous), weights
``(..., n_post, n_pre)``, outputs ``(..., m, n_out)``. All functions accept extra leading batch dims (``trial``,
``restart``), so one call evaluates many independent circuits at once.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import torch

from . import _continuous
from ._checks import ParameterError, check_choice, check_int
from ._steady import split_steady
from .allocation import Allocation
from .circuit import Circuit

DTYPE = torch.float64
_AFFINE_RTOL = 1e-9  # second differences of an affine map are rounding noise (~1e-15); others are O(1)
_BROADCAST_MAX = 2**22  # elements (32 MB) of the broadcast intermediate of _sum_outer; beyond it, einsum
# steady circuits with at least this many hidden neurons factor only I - W_hidden (outputs are sinks); smaller ones
# keep the one LU over all neurons their results were made with, bit for bit
_SPLIT_MIN = 128


_THREADS_LOCK = threading.Condition()  # guards _THREADS_HELD and every set_num_threads of torch_threads


@dataclass
class _HeldThreads:
    threads: int = 0  # the shared count while depth is non-empty
    before: int = 0  # torch's count before the first entrant came in
    depth: dict[int, int] = field(default_factory=dict)  # thread ident -> nesting depth inside torch_threads


_THREADS_HELD = _HeldThreads()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run torch on ``threads`` intra-op threads inside the block, restoring the previous setting after.

    The batched operations here are small: on an idle 2-core machine one thread is as fast as two (RNN benchmark
    workload 3.19 s vs 3.02 s), while two threads on a loaded machine spin in OpenMP barriers and ran a 4-problem
    forward pass in 40 ms instead of 0.3 ms. ``None`` leaves torch's setting alone.

    Safe in threads: the setting is reference counted under one lock. The first block to enter records torch's
    count and sets ``threads``; blocks in other threads asking for the same count share it; a block asking for a
    different count waits until every block holding the current one has left (in the same thread, where waiting
    would never end, it raises :class:`~neurosubset._checks.ParameterError`). The last block to leave restores the
    recorded count. OpenMP keeps a count per thread (torch's setting is the default a new thread starts with), so
    every entering thread also sets its own count and, if others are still inside, resets it when it leaves; the
    last one leaves its own count and the default at the recorded one.

    Raises
    ------
    ParameterError
        ``threads`` is not a positive integer, or differs from the count of a block this thread is already in.
    """
    if threads is None:
        yield
        return
    threads = check_int("threads", threads, minimum=1)
    me, held = threading.get_ident(), _THREADS_HELD
    with _THREADS_LOCK:
        if held.depth.get(me) and held.threads != threads:
            raise ParameterError(f"The 'threads' parameter is {threads} inside a torch_threads({held.threads}) "
                                 f"block of the same thread; nested blocks must ask for the same count.")
        _THREADS_LOCK.wait_for(lambda: not held.depth or held.threads == threads)
        own = torch.get_num_threads()
        if not held.depth:
            held.threads, held.before = threads, own
        held.depth[me] = held.depth.get(me, 0) + 1
        if own != threads:
            torch.set_num_threads(threads)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            held.depth[me] -= 1
            if not held.depth[me]:
                del held.depth[me]
            if not held.depth:
                torch.set_num_threads(held.before)  # also the default of new threads, whatever this one had
                _THREADS_LOCK.notify_all()
            elif own != threads:
                torch.set_num_threads(own)


def _phi(circuit: Circuit, z: torch.Tensor) -> torch.Tensor:
    return torch.relu(z) if circuit.nonlinearity == "relu" else z


def _drive(circuit: Circuit, post: str, weights: Mapping[str, torch.Tensor],
           states: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Summed input ``sum_{q->post} states[q] @ W^T`` of shape ``(..., m, n_post)``."""
    total = None
    for proj in circuit.projections_into(post):
        z = states[proj.pre] @ weights[proj.name].transpose(-1, -2)
        total = z if total is None else total + z
    return total


def forward(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
    """Outputs of ``circuit`` with ``weights`` on ``probes``.

    Parameters
    ----------
    circuit : Circuit
    weights : dict
        Weight name -> tensor ``(..., n_post, n_pre)``.
    probes : torch.Tensor
        ``(..., m, n_in)``, or ``(..., m, steps, n_in)`` for discrete dynamics.

    Returns
    -------
    torch.Tensor
        ``(..., m, n_out)``: output regions concatenated in declaration order.
    """
    _check_forward(circuit, weights, probes)
    if circuit.dynamics == "continuous":  # exact matrix exponential (linear) or RK4: neurosubset._continuous
        return _continuous.forward(circuit, weights, probes)
    slices = circuit.slices("input")
    if circuit.dynamics == "feedforward":
        states = {name: probes[..., s] for name, s in slices.items()}
        for name in circuit.order:
            role = circuit.region[name].role
            if role == "hidden":
                states[name] = _phi(circuit, _drive(circuit, name, weights, states))
            elif role == "output":
                states[name] = _drive(circuit, name, weights, states)
    elif circuit.dynamics == "discrete":
        hidden = [r.name for r in circuit.regions if r.role == "hidden"]
        lead = probes.shape[:-2]  # (..., m)
        states = {name: probes.new_zeros(lead + (circuit.region[name].size,)) for name in hidden}
        for t in range(circuit.steps):
            x_t = probes[..., t, :]
            inputs = {name: x_t[..., s] for name, s in slices.items()}
            new = {name: _phi(circuit, _drive(circuit, name, weights, {**states, **inputs})) for name in hidden}
            states = new
        states.update({name: probes[..., -1, s] for name, s in slices.items()})
        for name in circuit.output_regions:
            states[name] = _drive(circuit, name, weights, states)
    else:  # steady: r = W_rec r + W_in x over all non-input neurons
        neurons = circuit.slices(("hidden", "output"))
        w_rec = _blocks(circuit, weights, list(neurons), list(neurons))
        w_in = _blocks(circuit, weights, list(neurons), list(slices))
        eye = torch.eye(w_rec.shape[-1], dtype=w_rec.dtype, device=w_rec.device)
        # lu_factor/lu_solve, not linalg.solve: in torch 2.13 vmap(jacfwd(linalg.solve)) returns wrong
        # derivatives (tests/test_dynamics.py checks the Jacobian against finite differences)
        lu, pivots = torch.linalg.lu_factor(eye - w_rec)
        rates = torch.linalg.lu_solve(lu, pivots, w_in @ probes.transpose(-1, -2)).transpose(-1, -2)
        states = {name: rates[..., s] for name, s in neurons.items()}
    return torch.cat([states[name] for name in circuit.output_regions], dim=-1)


def _check_forward(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> None:
    """Raise :class:`ParameterError` unless ``weights`` names every weight and ``probes`` ends in the probe shape."""
    missing = [k for k in circuit.weight_names if k not in weights]
    if missing:
        raise ParameterError(f"The 'weights' parameter lacks weights {missing} of circuit {circuit.name!r}.")
    tail = circuit.probe_shape(1)[1:]
    if tuple(probes.shape[-len(tail):]) != tail or probes.dim() < len(tail) + 1:
        raise ParameterError(f"The 'probes' parameter must have shape (..., m, {', '.join(map(str, tail))}) for "
                             f"circuit {circuit.name!r}. Got {tuple(probes.shape)} instead.")


def _blocks(circuit: Circuit, weights: Mapping[str, torch.Tensor], rows: list[str], cols: list[str]) -> torch.Tensor:
    """Block matrix ``(..., sum rows, sum cols)`` of the projections from ``cols`` onto ``rows`` (same pair: summed)."""
    if len(rows) == 1 and len(cols) == 1:  # one projection (a layer, an RNN's B, W or C): no copy
        names = [p.name for p in circuit.projections_into(rows[0]) if p.pre == cols[0]]
        if len(names) == 1:
            return weights[names[0]]
    ref = next(iter(weights.values()))
    lead = ref.shape[:-2]
    lines = []
    for post in rows:
        blocks = []
        for pre in cols:
            names = [p.name for p in circuit.projections_into(post) if p.pre == pre]
            shape = (circuit.region[post].size, circuit.region[pre].size)
            blocks.append(reduce(torch.add, [weights[n] for n in names]) if names else ref.new_zeros(lead + shape))
        lines.append(torch.cat(blocks, dim=-1))
    return torch.cat(lines, dim=-2)


def assemble(frozen: Mapping[str, torch.Tensor], index: Mapping[str, torch.Tensor],
             theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Student weights ``W = W_frozen + scatter(theta)``.

    Parameters
    ----------
    frozen : dict
        Weight name -> ``(..., n_post, n_pre)``, zero at plastic entries.
    index : dict
        Weight name -> long tensor of flat plastic indices (from :attr:`Allocation.indices`).
    theta : torch.Tensor
        ``(..., M)`` plastic values, concatenated in weight order.

    Returns
    -------
    dict
        Weight name -> ``(..., n_post, n_pre)``. Frozen entries are bit-identical to ``frozen``.
    """
    out, start = {}, 0
    for name, w in frozen.items():
        idx = index[name]
        if idx.numel() == 0:
            out[name] = w
            continue
        flat = w.flatten(-2)
        if flat.shape[:-1] != theta.shape[:-1]:
            lead = theta.shape[:-1] if len(theta.shape) > len(flat.shape) else flat.shape[:-1]
            flat = flat.expand(lead + flat.shape[-1:])
        flat = flat.index_add(-1, idx, theta[..., start:start + idx.numel()])
        out[name] = flat.unflatten(-1, w.shape[-2:])
        start += idx.numel()
    return out


class PlasticMap:
    """``theta -> F(theta)``: the stacked outputs of many student problems as functions of their plastic values.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    frozen : dict
        Weight name -> ``(problem, n_post, n_pre)`` frozen weights (plastic entries are ignored, set to 0).
    probes : torch.Tensor
        ``(problem, m, n_in)`` or ``(problem, m, steps, n_in)``.

    Notes
    -----
    ``F`` has shape ``(problem, E)`` with ``E = m * n_out`` (probe-major).
    """

    def __init__(self, circuit: Circuit, alloc: Allocation, frozen: Mapping[str, torch.Tensor],
                 probes: torch.Tensor):
        self.circuit = circuit
        device = probes.device  # every tensor of the map lives where the probes do
        self.index = {k: torch.as_tensor(v, dtype=torch.long, device=device) for k, v in alloc.indices.items()}
        masks = {k: torch.from_numpy(v.copy()).to(device) for k, v in alloc.masks.items()}
        self.frozen = {k: frozen[k].masked_fill(masks[k], 0.0) for k in circuit.weight_names}
        self.probes = probes
        self.size = alloc.size
        # continuous dynamics: no closed-form adjoint; the Jacobian comes from autograd through expm / RK4
        closed = circuit.nonlinearity == "linear" and circuit.dynamics != "continuous"
        self._layout = _adjoint_layout(circuit, alloc) if closed else None
        if closed and circuit.dynamics == "steady" and circuit.n_neurons("hidden") >= _SPLIT_MIN:
            self._layout["split"] = True  # PlasticMap's own select (output regions): see _steady.split_steady
        if self._layout is not None and device.type != "cpu":
            self._layout = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self._layout.items()}

    @property
    def closed_form(self) -> bool:
        """Whether :meth:`jacobian` uses the closed-form adjoint (linear circuits), i.e. needs no autograd."""
        return self._layout is not None

    def weights(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Full student weights for ``theta`` ``(problem, M)``."""
        return assemble(self.frozen, self.index, theta)

    def __call__(self, theta: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """``F(theta)`` of shape ``(problem, E)``; ``select`` (long) evaluates a subset of problems."""
        frozen, probes = self._subset(select)
        out = forward(self.circuit, assemble(frozen, self.index, theta), probes)
        return out.flatten(-2)

    def _subset(self, select):
        if select is None:
            return self.frozen, self.probes
        return {k: v[select] for k, v in self.frozen.items()}, self.probes[select]

    def subset(self, select: torch.Tensor) -> PlasticMap:
        """The map over problems ``select`` (long ``(problem,)``, repeats allowed), its tensors gathered once.

        An iterative solver works on a subset for many steps; gathering the frozen weights and probes once instead
        of at every evaluation keeps the per-step cost down.
        """
        out = object.__new__(PlasticMap)
        out.__dict__.update(self.__dict__)
        out.frozen, out.probes = self._subset(select)
        return out

    def value_and_jacobian(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``F(theta)`` ``(problem, E)`` and ``dF/dtheta`` ``(problem, E, M)`` together.

        For linear circuits both come from one pass of the closed-form adjoint (the outputs are a by-product of the
        presynaptic activity it computes); otherwise ``F`` is a plain forward pass beside the autograd Jacobian.
        """
        if _continuous.has_tangents(self.circuit):  # continuous nonlinear: forward sensitivities of the RK4 scheme
            return _continuous.rk4_jacobian(self.circuit, self.weights(theta), self.probes, self.index, self.size)
        if self._layout is None:
            return self(theta), self.jacobian(theta)
        return _adjoint_jacobian(self.circuit, self._layout, assemble(self.frozen, self.index, theta), self.probes,
                                 with_outputs=True)

    def jacobian(self, theta: torch.Tensor, select: torch.Tensor | None = None, *, method: str = "auto",
                 max_bytes: float = 2.5e8) -> torch.Tensor:
        """``dF/dtheta`` of shape ``(problem, E, M)``, exact (never finite differences).

        Parameters
        ----------
        theta : torch.Tensor
            ``(problem, M)``.
        select : torch.Tensor, optional
            Long ``(problem,)``: which of the map's problems each row of ``theta`` belongs to.
        method : {"auto", "adjoint", "autograd"}
            ``"adjoint"`` (linear circuits; the default there): the closed form
            ``dy/dW_ij = sum_t G_t[:, i] u_t[j]`` with ``G_t`` the adjoint (output sensitivity to the drive of
            neuron ``i`` at step ``t``) and ``u_t`` the presynaptic activity, a few batched matmuls.
            ``"autograd"``: torch.func, forward mode (one JVP per plastic weight) when ``M <= E``, reverse mode
            (one VJP per output) otherwise, vmapped over basis directions and chunked over problems so that the
            tangents stay under ``max_bytes``.
        """
        frozen, probes = self._subset(select)
        check_choice("method", method, ("auto", "adjoint", "autograd"))
        if method == "auto" and _continuous.has_tangents(self.circuit):  # RK4 sensitivities (neurosubset._continuous)
            return _continuous.rk4_jacobian(self.circuit, assemble(frozen, self.index, theta), probes, self.index,
                                            self.size)[1]
        if method == "auto":
            method = "adjoint" if self._layout is not None else "autograd"
        if method == "adjoint":
            if self._layout is None:
                raise ParameterError("method='adjoint' needs a linear circuit; use method='autograd'.")
            return _adjoint_jacobian(self.circuit, self._layout, assemble(frozen, self.index, theta), probes)
        n, size = theta.shape
        e = probes.shape[1] * self.circuit.n_out
        if n == 0 or size == 0:
            return theta.new_zeros((n, e, size))
        width = min(size, e)
        per_problem = 8.0 * width * (sum(v[0].numel() for v in frozen.values()) + probes[0].numel() * 4 + e)
        chunk = max(1, int(max_bytes // per_problem))
        parts = []
        for a in range(0, n, chunk):
            sub_frozen = {k: v[a:a + chunk] for k, v in frozen.items()}
            sub_probes, th = probes[a:a + chunk], theta[a:a + chunk]

            def fn(t, sub_frozen=sub_frozen, sub_probes=sub_probes):
                return forward(self.circuit, assemble(sub_frozen, self.index, t), sub_probes).flatten(-2)

            if size <= e:
                basis = torch.eye(size, dtype=th.dtype, device=th.device).unsqueeze(1).expand(size, th.shape[0], size)
                cols = torch.func.vmap(lambda v, fn=fn, th=th: torch.func.jvp(fn, (th,), (v,))[1])(basis)
                parts.append(cols.permute(1, 2, 0))
            else:
                _, vjp = torch.func.vjp(fn, th)
                basis = torch.eye(e, dtype=th.dtype, device=th.device).unsqueeze(1).expand(e, th.shape[0], e)
                parts.append(torch.func.vmap(vjp)(basis)[0].permute(1, 0, 2))
        return torch.cat(parts)


def _adjoint_layout(circuit: Circuit, alloc: Allocation) -> dict:
    """Per plastic synapse: its postsynaptic row and presynaptic column in the adjoint's global indexing."""
    if circuit.dynamics == "discrete":
        post_roles, pre_roles = ("hidden",), ("hidden",)
    else:  # feedforward (linear) and steady share r = A r + B x over all non-input neurons
        post_roles, pre_roles = ("hidden", "output"), ("hidden", "output")
    rows, cols = circuit.slices(post_roles), circuit.slices(pre_roles)
    n_cols = circuit.n_neurons(pre_roles)
    inputs, outputs = circuit.slices("input"), circuit.slices("output")
    post, pre, to_output = [], [], []
    for name in circuit.weight_names:
        idx = np.flatnonzero(alloc.masks[name])
        proj = circuit.projection[name]
        n_pre = circuit.shape(name)[1]
        i, j = idx // n_pre, idx % n_pre
        direct = circuit.dynamics == "discrete" and circuit.region[proj.post].role == "output"
        post.append(i + (outputs[proj.post].start if direct else rows[proj.post].start))
        pre.append(j + (inputs[proj.pre].start + n_cols if proj.pre in inputs else cols[proj.pre].start))
        to_output.append(np.full(idx.size, direct))
    cat = (lambda xs, dt: torch.as_tensor(np.concatenate(xs) if xs else np.zeros(0), dtype=dt))
    return {"rows": list(rows), "cols": list(cols), "post": cat(post, torch.long), "pre": cat(pre, torch.long),
            "to_output": cat(to_output, torch.bool),
            # steady / feedforward: the rows of the output neurons among all non-input ones, (n_out, N)
            "select": (None if circuit.dynamics == "discrete"
                       else torch.cat([_selector(circuit, post_roles, o, DTYPE) for o in outputs], dim=0)),
            "input_to_output": any(p.pre in inputs for o in outputs for p in circuit.projections_into(o))}


def _adjoint_jacobian(circuit: Circuit, layout: dict, weights: Mapping[str, torch.Tensor],
                      probes: torch.Tensor, *, with_outputs: bool = False):
    """Closed-form Jacobian of a linear circuit's outputs w.r.t. the plastic entries, ``(problem, E, M)``.

    With ``with_outputs`` also the outputs ``(problem, E)`` (probe-major, as :func:`forward` flattened), read off
    the same pass: ``(outputs, jacobian)``.
    """
    inputs = list(circuit.input_regions)
    outputs = list(circuit.output_regions)
    post, pre = layout["post"], layout["pre"]
    n_prob, m = probes.shape[0], probes.shape[1]
    if layout.get("split"):
        return split_steady(circuit, layout, weights, probes, with_outputs, blocks=_blocks, sum_outer=_sum_outer)
    if circuit.dynamics != "discrete":
        rows = layout["rows"]
        a = _blocks(circuit, weights, rows, rows)
        b = _blocks(circuit, weights, rows, inputs)
        lu, piv = torch.linalg.lu_factor(torch.eye(a.shape[-1], dtype=a.dtype, device=a.device) - a)
        x = probes.transpose(-1, -2)  # (P, n_in, m)
        rates = torch.linalg.lu_solve(lu, piv, b @ x)  # (P, N, m)
        select = layout["select"]  # (n_out, N)
        g_t = torch.linalg.lu_solve(lu, piv, select.T.expand(n_prob, -1, -1), adjoint=True)  # (P, N, n_out)
        act = torch.cat([rates, x], dim=-2)  # (P, N + n_in, m)
        jac = _sum_outer(g_t.transpose(-1, -2).unsqueeze(1), act.unsqueeze(1), post, pre)
        if not with_outputs:
            return jac
        return (select @ rates).transpose(-1, -2).reshape(n_prob, -1), jac
    hidden = layout["rows"]
    a = _blocks(circuit, weights, hidden, hidden)
    b = _blocks(circuit, weights, hidden, inputs)
    c = _blocks(circuit, weights, outputs, hidden)
    n_in, steps = probes.shape[-1], circuit.steps
    xs = probes.permute(0, 2, 3, 1)  # (P, T, n_in, m)
    # B x_t for every step in one product: (P, N_h, n_in) @ (P, n_in, T m) -> (P, N_h, T, m)
    drive = (b @ probes.permute(0, 3, 2, 1).reshape(n_prob, n_in, steps * m)).unflatten(-1, (steps, m))
    states = [torch.zeros_like(drive[..., 0, :]), drive[..., 0, :]]  # h_0 = 0, h_1 = B x_1
    for t in range(1, steps):
        states.append(torch.baddbmm(drive[..., t, :], a, states[-1]))  # h_{t+1} = A h_t + B x_{t+1}
    adjoints = [c]  # G_T = C, G_{t-1} = G_t A
    for _ in range(steps - 1):
        adjoints.append(adjoints[-1] @ a)
    g = torch.stack(adjoints[::-1], dim=1)  # (P, T, n_out, N_h), index t-1 for step t
    act = torch.cat([torch.stack(states[:-1], dim=1), xs], dim=2)  # (P, T, N_h + n_in, m): inputs to step t
    to_out = layout["to_output"]
    if not to_out.any():
        jac = _sum_outer(g, act, post, pre)
    else:
        jac = a.new_zeros((n_prob, m * circuit.n_out, post.numel()))
        hid = ~to_out
        if hid.any():
            jac[..., hid] = _sum_outer(g, act, post[hid], pre[hid])
        last = torch.cat([states[-1], xs[:, -1]], dim=1)  # (P, N_h + n_in, m): what the read-out sees
        onehot = torch.nn.functional.one_hot(post[to_out], circuit.n_out).to(a.dtype).T  # (n_out, k)
        jac[..., to_out] = (onehot * last[:, pre[to_out], :].permute(0, 2, 1).unsqueeze(2)).flatten(1, 2)
    if not with_outputs:
        return jac
    # y = C h_T + C_in x_T (read-outs may also see the inputs of the last step)
    y = c @ states[-1]
    if layout["input_to_output"]:
        y = y + _blocks(circuit, weights, outputs, inputs) @ xs[:, -1]
    return y.transpose(-1, -2).reshape(n_prob, -1), jac


def _sum_outer(g: torch.Tensor, act: torch.Tensor, post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """``J[p, (m, o), k] = sum_t g[p, t, o, post_k] act[p, t, pre_k, m]``, shape ``(P, m * n_out, K)``.

    ``g`` ``(P, T, n_out, N)`` adjoints, ``act`` ``(P, T, N', m)`` presynaptic activity. Small problems (the
    solver's hot path) use a broadcast product summed over ``t``, twice as fast as the einsum, which runs as
    ``P * K`` tiny matrix products; large ones (a certificate's full Jacobian) use the einsum, which needs no
    ``T``-fold intermediate.
    """
    n_prob, steps, n_out = g.shape[:3]
    if steps == 1:  # steady / feedforward: one outer product per synapse, written in the output layout
        return (g[:, 0, :, post].unsqueeze(1) * act[:, 0, pre, :].mT.contiguous().unsqueeze(2)).flatten(1, 2)
    if n_prob * steps * n_out * post.numel() * act.shape[-1] > _BROADCAST_MAX:
        return torch.einsum("ptos,ptsm->pmos", g[..., post], act[:, :, pre, :]).flatten(1, 2)
    prod = g[..., post].unsqueeze(-1) * act[:, :, pre, :].unsqueeze(2)  # (P, T, n_out, K, m)
    return prod.sum(1).permute(0, 3, 1, 2).flatten(1, 2)


def _selector(circuit: Circuit, roles: tuple[str, ...], region: str, dtype: torch.dtype) -> torch.Tensor:
    """Rows of the identity picking ``region``'s neurons out of the neuron vector of ``roles``, ``(size, N)``."""
    return torch.eye(circuit.n_neurons(roles), dtype=dtype)[circuit.slices(roles)[region]]


def is_affine(circuit: Circuit, alloc: Allocation, *, seed: int = 0) -> bool:
    """Whether the outputs are affine in the plastic weights (for every value of the frozen ones).

    Linear dynamics: outputs are polynomial (rational for steady) in the weights, so they are affine in the
    plastic ones iff their second difference along a random direction vanishes at random points (checked at two
    points; a non-affine polynomial vanishes there with probability 0). ReLU: affine iff every plastic synapse
    targets an output region (read-outs are linear; anything upstream passes a ReLU).
    """
    if alloc.size == 0:
        return True
    if circuit.nonlinearity == "relu":
        return all(circuit.region[circuit.projection[k].post].role == "output"
                   for k, v in alloc.masks.items() if v.any())
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xAFF,)))
    frozen = {}
    draws = [circuit.sample_weights(rng) for _ in range(2)]
    for name in circuit.weight_names:
        frozen[name] = torch.as_tensor(np.stack([d[name] for d in draws]), dtype=DTYPE)
    probes = torch.as_tensor(np.stack([circuit.sample_probes(2, rng) for _ in range(2)]), dtype=DTYPE)
    fmap = PlasticMap(circuit, alloc, frozen, probes)
    scale = circuit.init_scale(alloc)
    a = torch.as_tensor(rng.standard_normal((2, alloc.size)) * scale, dtype=DTYPE)
    d = torch.as_tensor(rng.standard_normal((2, alloc.size)) * scale, dtype=DTYPE)
    fp, f0, fm = fmap(a + d), fmap(a), fmap(a - d)
    second = (fp - 2 * f0 + fm).abs().amax(dim=-1)
    size = (fp.abs() + 2 * f0.abs() + fm.abs()).amax(dim=-1)
    return bool((second <= _AFFINE_RTOL * size).all())
