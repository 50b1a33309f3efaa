"""The one block assembly: the matrix of all projections between two lists of regions.

Every user of a circuit's weights as one operator — the forward maps, the closed-form adjoints, the GF(p) ranks,
the stability of recurrent loops, the large steady adjoint, the spiking mapping, recorded rates — builds it here.
A neuron vector concatenates its regions in the given order; ``weights[name]`` fills the block of its projection
(``(..., n_post, n_pre)``), projections between the same pair of regions are summed, every other block is zero.
Torch tensors (batched over leading dims) and numpy arrays (float or integer, e.g. residues mod p) are both taken.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ..circuit import Circuit


def region_list(circuit: Circuit, regions: str | Sequence[str]) -> list[str]:
    """Region names: a list of names as given, or a role / tuple of roles (``"hidden"``, ``("hidden", "output")``)
    as the regions with that role in declaration order (:meth:`Circuit.slices`)."""
    if isinstance(regions, str) and regions in circuit.region:
        return [regions]
    if isinstance(regions, str) or all(r in ("input", "hidden", "output") and r not in circuit.region
                                       for r in regions):
        return list(circuit.slices(regions))
    return list(regions)


def block_matrix(circuit: Circuit, weights: Mapping[str, Any], rows: str | Sequence[str],
                 cols: str | Sequence[str]) -> Any:
    """Block matrix ``(..., sum rows, sum cols)`` of the projections from the ``cols`` regions onto the ``rows`` ones.

    Parameters
    ----------
    circuit : Circuit
    weights : dict
        Weight name -> ``(..., n_post, n_pre)``: torch tensors, or numpy arrays (float or integer). Only the weights
        of projections between the given regions are read.
    rows, cols : str or sequence of str
        Postsynaptic and presynaptic regions (names, or roles as in :meth:`Circuit.slices`).

    Returns
    -------
    torch.Tensor or numpy.ndarray
        Of the weights' kind; torch blocks are expanded to the broadest leading shape among the weights read. One
        projection alone between one pair of regions is returned as is (no copy).
    """
    rows, cols = region_list(circuit, rows), region_list(circuit, cols)
    names = {(post, pre): [p.name for p in circuit.projections_into(post) if p.pre == pre]
             for post in rows for pre in cols}
    used = [n for v in names.values() for n in v]
    first = weights[used[0]] if used else next(iter(weights.values()))
    if not isinstance(first, torch.Tensor):
        return _numpy_blocks(circuit, weights, rows, cols, names, np.asarray(first))
    if len(rows) == 1 and len(cols) == 1 and len(names[rows[0], cols[0]]) == 1:
        return weights[names[rows[0], cols[0]][0]]
    ref = max((weights[n] for n in used), key=lambda w: w.dim()) if used else broadest(weights)
    lead = ref.shape[:-2]
    lines = []
    for post in rows:
        blocks = []
        for pre in cols:
            shape = (circuit.region[post].size, circuit.region[pre].size)
            found = names[post, pre]
            w = weights[found[0]] if found else ref.new_zeros(lead + shape)
            for name in found[1:]:
                w = w + weights[name]
            blocks.append(w.expand(lead + shape) if w.shape[:-2] != lead else w)
        lines.append(torch.cat(blocks, dim=-1) if blocks else ref.new_zeros(lead + (circuit.region[post].size, 0)))
    return torch.cat(lines, dim=-2) if lines else ref.new_zeros(lead + (0, sum(circuit.region[c].size for c in cols)))


def _numpy_blocks(circuit: Circuit, weights: Mapping[str, Any], rows: list[str], cols: list[str],
                  names: dict[tuple[str, str], list[str]], first: np.ndarray) -> np.ndarray:
    size = {r: circuit.region[r].size for r in (*rows, *cols)}
    pos = {r: slice(o, o + size[r]) for r, o in circuit.offsets(rows).items()}
    cpos = {c: slice(o, o + size[c]) for c, o in circuit.offsets(cols).items()}
    n_rows, n_cols = sum(size[r] for r in rows), sum(size[c] for c in cols)
    lead = np.broadcast_shapes(*[np.shape(weights[n])[:-2] for v in names.values() for n in v] or [()])
    dtype = np.int64 if np.issubdtype(first.dtype, np.integer) else np.float64
    out = np.zeros(lead + (n_rows, n_cols), dtype=dtype)
    for (post, pre), found in names.items():
        for name in found:
            out[..., pos[post], cpos[pre]] += np.asarray(weights[name])  # same region pair: summed
    return out


def selector(circuit: Circuit, roles: tuple[str, ...], region: str, dtype: torch.dtype) -> torch.Tensor:
    """Rows of the identity picking ``region``'s neurons out of the neuron vector of ``roles``, ``(size, N)``."""
    return torch.eye(circuit.n_neurons(roles), dtype=dtype)[circuit.slices(roles)[region]]


def broadest(weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A weight with the broadest leading shape (the one every block is expanded to)."""
    return max(weights.values(), key=lambda w: w.dim())


def phi(circuit: Circuit, z: torch.Tensor) -> torch.Tensor:
    """The hidden nonlinearity of feed-forward and discrete circuits (linear or ReLU)."""
    return torch.relu(z) if circuit.nonlinearity == "relu" else z


def drive(circuit: Circuit, post: str, weights: Mapping[str, torch.Tensor],
          states: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Summed input ``sum_{q->post} states[q] @ W^T`` of shape ``(..., m, n_post)``."""
    total = None
    for proj in circuit.projections_into(post):
        z = states[proj.pre] @ weights[proj.name].transpose(-1, -2)
        total = z if total is None else total + z
    return total
