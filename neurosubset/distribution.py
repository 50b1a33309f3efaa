"""The weight distribution of a circuit: initial scales, teacher and student draws, random probes.

Entry ``(i, j)`` of projection ``pre->post`` is present where the circuit's structure says so and drawn
``N(0, gain^2 / (p * n_pre))`` (variance over the expected in-degree; init ``"count"``: per synapse, see
:func:`neurosubset.connectivity.init_sd`). A region with ``sign = +1`` or ``-1`` (Dale's law) makes its outgoing
weights ``sign * |N(...)|``; fixed projections keep their given weights. :class:`WeightDistribution` is a base of
:class:`~neurosubset.Circuit`: it reads the circuit's projections, regions, structure and layout.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ._checks import AllocationError, check_int, check_names
from .connectivity import init_sd, triples_to_dense

if TYPE_CHECKING:
    from .allocation import Allocation


class WeightDistribution:
    """Initial weight scales, draws of weights and probes (a base class of Circuit)."""

    @cached_property
    def init_std(self) -> dict[str, float]:
        """SD of each weight's initial distribution, ``gain / sqrt(p * n_pre)`` (see :func:`connectivity.init_sd`)."""
        return {p.name: init_sd(p, self.structure[p.name], scalar=True) for p in self.projections}

    @cached_property
    def init_sd(self) -> dict[str, np.ndarray]:
        """Per-synapse initial SD, weight name -> ``(n_post, n_pre)`` float64, 0 where no synapse is drawn."""
        return {p.name: init_sd(p, self.structure[p.name]) for p in self.projections}

    def init_scale(self, plastic: Allocation | Mapping[str, Any]) -> np.ndarray:
        """Initial standard deviation of each plastic synapse, in the order of the plastic values ``theta``.

        Parameters
        ----------
        plastic : Allocation or dict
            An allocation, or weight name -> number of plastic synapses (int) or bool mask ``(n_post, n_pre)``;
            weights not named have none.

        Returns
        -------
        numpy.ndarray
            ``(M,)`` float64: :attr:`init_std` of each weight repeated over its plastic synapses, weights in
            declaration order (the layout of ``theta``, see :attr:`Allocation.indices`).
        """
        counts = getattr(plastic, "masks", plastic)
        if not isinstance(counts, Mapping):
            raise AllocationError(f"The 'plastic' parameter must be an Allocation or a mapping of weight name -> "
                                  f"count or mask. Got {type(plastic).__name__}.")
        check_names("plastic", counts, self.weight_names, what="Weight", error=AllocationError)
        parts = []
        for name in self.weight_names:
            n = counts.get(name, 0)
            if np.ndim(n):
                if np.shape(n) != self.shape(name):
                    raise AllocationError(f"The mask for weight {name!r} must have shape {self.shape(name)} "
                                          f"(n_post, n_pre). Got {np.shape(n)} instead.")
                parts.append(self.init_sd[name][np.asarray(n, dtype=bool)])  # row-major: the order of theta
                continue
            if n and np.unique(self.init_sd[name][self.structure[name]]).size > 1:  # init 'count'
                raise AllocationError(f"plastic[{name!r}]: per-synapse init SDs (init 'count') need a bool mask.")
            parts.append(np.full(check_int(f"plastic[{name!r}]", n, minimum=0, error=AllocationError),
                                 self.init_std[name]))
        return np.concatenate(parts)

    @cached_property
    def expected_spectral_radius(self) -> float:
        """Estimated spectral radius of the recurrent (non-input to non-input) weights at initialisation.

        ``max(rho(E[W]), sqrt(rho(Var[W])))``: the outlier of the mean matrix (Dale's law) and the bulk radius of
        a random matrix with the given variance profile. Zero when there is no recurrence.
        """
        from .dynamics.blocks import block_matrix

        neurons = ("hidden", "output")
        n = self.n_neurons(neurons)
        means, variances = {}, {}  # per weight: the mean and variance of each entry's initial distribution
        for name in self.weight_names:
            sign = self.region[self.projection[name].pre].sign
            std = self.init_sd[name]
            if self.projection[name].fixed:
                means[name] = triples_to_dense(self.projection[name].weights, self.shape(name))
                variances[name] = np.zeros(self.shape(name))
                continue
            mu, v = (0.0, std**2) if sign is None else (sign * std * np.sqrt(2 / np.pi), std**2 * (1 - 2 / np.pi))
            means[name], variances[name] = np.broadcast_to(mu, self.shape(name)), v
            if self.projection[name].signs:  # per-synapse signs: half-normal entries
                s = synapse_signs(self.projection[name], self.shape(name))
                sd = np.broadcast_to(std, self.shape(name))
                means[name] = np.where(s != 0, s * sd * np.sqrt(2 / np.pi), means[name])
                variances[name] = np.where(s != 0, sd**2 * (1 - 2 / np.pi), variances[name])
        mean, var = (block_matrix(self, d, neurons, neurons) for d in (means, variances))
        if n == 0 or not var.any():
            return 0.0
        return float(max(spectral_radius(mean), np.sqrt(spectral_radius(var))))

    def sample_weights(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw one set of weights from the initial distribution.

        Parameters
        ----------
        rng : numpy.random.Generator

        Returns
        -------
        dict
            Weight name -> float64 array ``(n_post, n_pre)``, zero where no synapse exists.
        """
        out = {}
        for p in self.projections:
            shape = self.shape(p.name)
            w = triples_to_dense(p.weights, shape) if p.fixed else rng.standard_normal(shape) * self.init_sd[p.name]
            sign = None if p.fixed else self.region[p.pre].sign  # fixed: the given weights, no draw
            if sign is not None:
                w = sign * np.abs(w)
            if p.signs:  # per-synapse signs from data (a sign constraint, not Dale's law)
                s = synapse_signs(p, shape)
                w = np.where(s != 0, s * np.abs(w), w)
            out[p.name] = np.where(self.structure[p.name], w, 0.0)
        return out

    def probe_shape(self, m: int) -> tuple[int, ...]:
        """Shape of ``m`` probes: ``(m, n_in)``, or ``(m, steps, n_in)`` where the dynamics takes sequences."""
        return self.dynamics.probe_shape(self, m)

    def sample_probes(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``m`` probes with iid N(0, 1) entries, shape :meth:`probe_shape`."""
        return rng.standard_normal(self.probe_shape(m))


def synapse_signs(projection: Any, shape: tuple[int, int]) -> np.ndarray:
    """The per-synapse signs of ``projection`` as an int8 matrix ``(n_post, n_pre)``: +1, -1, 0 (free)."""
    out = np.zeros(shape, dtype=np.int8)
    for i, j, s in projection.signs or ():
        out[i, j] = s
    return out


def spectral_radius(a: np.ndarray) -> float:
    """Largest ``|eigenvalue|`` of a square matrix: dense LAPACK up to 300 rows, ARPACK (sparse) above."""
    if not a.any():
        return 0.0
    if a.shape[0] > 300:
        from scipy.sparse import csr_matrix
        from scipy.sparse.linalg import ArpackNoConvergence, eigs

        try:
            vals = eigs(csr_matrix(a), k=1, which="LM", tol=1e-8, maxiter=20 * a.shape[0],
                        v0=np.ones(a.shape[0]), return_eigenvectors=False)
            return float(np.abs(vals).max())
        except ArpackNoConvergence:  # pragma: no cover - rare; fall back to the dense solver
            pass
    return float(np.abs(np.linalg.eigvals(a)).max())
