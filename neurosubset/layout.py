"""The index layout of a circuit's neurons: where each region and weight sits in the vectors and block matrices.

A neuron vector concatenates the regions of some roles in declaration order. :meth:`IndexLayout.slices` says where
each region sits in one, :meth:`IndexLayout.block_slices` where each weight sits in the block matrix between two
(the one assembly of those matrices is :func:`neurosubset.dynamics.blocks.block_matrix`). :class:`IndexLayout` is
a base of :class:`~neurosubset.Circuit`: it reads only the circuit's ``regions``, ``projections`` and ``dynamics``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property

from ._checks import ParameterError, check_choice, check_names
from ._spec import ROLES


class IndexLayout:
    """Neuron vectors by role and the block positions of each weight (a base class of Circuit)."""

    def slices(self, roles: str | Iterable[str] = ROLES) -> dict[str, slice]:
        """Where each region sits in the neuron vector of the regions with a role in ``roles``.

        Parameters
        ----------
        roles : str or iterable of {"input", "hidden", "output"}
            The vector concatenates, in declaration order, the regions whose role is one of these: ``"input"`` is
            one probe vector ``x``, ``("hidden", "output")`` the rates ``r`` of ``r = W_rec r + W_in x``.

        Returns
        -------
        dict
            Region name -> ``slice`` of that vector, in declaration order.

        Examples
        --------
        >>> linear_rnn(n=6, n_in=2, n_out=1, steps=3).slices(("hidden", "output"))   # doctest: +SKIP
        {'rec': slice(0, 6, None), 'out': slice(6, 7, None)}
        """
        key = _roles(roles)
        if key not in self._slices:
            self._slices[key] = _concatenate((r.name, r.size) for r in self.regions if r.role in key)
        return dict(self._slices[key])

    @cached_property
    def _slices(self) -> dict[tuple[str, ...], dict[str, slice]]:
        return {}

    def n_neurons(self, roles: str | Iterable[str] = ROLES) -> int:
        """Length of the neuron vector of the regions with a role in ``roles`` (see :meth:`slices`)."""
        return sum(s.stop - s.start for s in self.slices(roles).values())

    def block_slices(self, rows: str | Iterable[str], cols: str | Iterable[str]) -> dict[str, tuple[slice, slice]]:
        """Where each weight sits in the block matrix that maps the ``cols`` neuron vector onto the ``rows`` one.

        Parameters
        ----------
        rows, cols : str or iterable of {"input", "hidden", "output"}
            Roles of the postsynaptic (row) and presynaptic (column) neuron vectors, as in :meth:`slices`.

        Returns
        -------
        dict
            Weight name -> ``(post, pre)`` slices, ``post`` of ``slices(rows)`` and ``pre`` of ``slices(cols)``,
            for every projection between those regions, in declaration order: ``A[post, pre] = weights[name]``
            fills the ``(n_neurons(rows), n_neurons(cols))`` matrix.
        """
        post, pre = self.slices(rows), self.slices(cols)
        return {p.name: (post[p.post], pre[p.pre]) for p in self.projections if p.post in post and p.pre in pre}

    def offsets(self, names: Sequence[str]) -> dict[str, int]:
        """Start index of each region in the concatenation of regions ``names`` (in that order).

        :meth:`slices` gives the role-based vectors the toolkit uses; this takes any order of region names.
        """
        names = list(names)
        check_names("names", names, self.region, what="Region")
        return {n: s.start for n, s in _concatenate((n, self.region[n].size) for n in names).items()}

    @cached_property
    def input_regions(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions if r.role == "input")

    @cached_property
    def output_regions(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions if r.role == "output")

    @property
    def n_in(self) -> int:
        """Length of one input vector (input regions concatenated in declaration order)."""
        return self.n_neurons("input")

    @property
    def n_out(self) -> int:
        """Length of one output vector (output regions in declaration order; continuous: once per read-out time)."""
        return self.n_neurons("output") * self.dynamics.readouts(self)


def _roles(roles: str | Iterable[str]) -> tuple[str, ...]:
    """``roles`` as a tuple in the order of :data:`ROLES` (the key of a neuron vector's layout)."""
    given = (roles,) if isinstance(roles, str) else tuple(roles)
    for role in given:
        check_choice("roles", role, ROLES, error=ParameterError)
    return tuple(r for r in ROLES if r in given)


def _concatenate(sizes: Iterable[tuple[str, int]]) -> dict[str, slice]:
    """Name -> slice of each ``(name, size)`` block laid end to end, in the given order."""
    out, start = {}, 0
    for name, size in sizes:
        out[name] = slice(start, start + size)
        start += size
    return out
