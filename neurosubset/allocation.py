"""Allocations: which synapses of a circuit are plastic.

An :class:`Allocation` is a set of boolean masks, one per weight, ``True`` where the synapse is plastic. Only
structurally present synapses of projections that are not fixed (:attr:`Circuit.eligible`) can be plastic.
:func:`allocate` builds one from a budget and a strategy:

- ``"random"``: a uniformly random subset of the eligible synapses.
- ``"spread-rows"``: dealt round-robin over postsynaptic neurons (rows), so per-neuron counts differ by at most
  one among neurons that still have eligible synapses left; which neurons get the extra one is random.
- ``"spread-cols"``: the same over presynaptic neurons (columns).
- ``"concentrated-rows"`` / ``"concentrated-cols"``: fill as few postsynaptic (presynaptic) neurons as possible,
  largest capacity first.

A neuron is identified by its region, so a postsynaptic neuron receiving two eligible projections is one row.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._checks import AllocationError, check_choice, check_int, check_names
from .circuit import Circuit

STRATEGIES = ("random", "spread-rows", "spread-cols", "concentrated-rows", "concentrated-cols")
_FRACTION_TOL = 1e-6  # fractions must sum to 1 within this (they usually come from decimal text)


@dataclass(frozen=True, eq=False)
class Allocation:
    """Which synapses are plastic.

    Parameters
    ----------
    masks : dict
        Weight name -> bool array ``(n_post, n_pre)`` for every weight of the circuit, ``True`` = plastic.
    strategy : str
        How it was built (``"explicit"`` for :meth:`from_masks`, ``"optimal"`` for the theory's choice).
    circuit_name : str
        The circuit it belongs to (a label).

    Attributes
    ----------
    size : int
        ``M``, the number of plastic synapses.
    """

    masks: Mapping[str, np.ndarray]
    strategy: str = "explicit"
    circuit_name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.masks, Mapping):
            raise AllocationError(f"The 'masks' parameter must be a mapping of weight name -> bool array. "
                                  f"Got {type(self.masks).__name__}.")
        frozen = {}
        for name, mask in self.masks.items():
            arr = np.array(mask, dtype=bool, copy=True)
            arr.setflags(write=False)
            frozen[name] = arr
        object.__setattr__(self, "masks", frozen)

    @classmethod
    def from_masks(cls, circuit: Circuit, masks: Mapping[str, np.ndarray], *, strategy: str = "explicit") -> Allocation:
        """Build an allocation from explicit masks; weights not named are frozen.

        Parameters
        ----------
        circuit : Circuit
        masks : dict
            Weight name -> array-like of bool ``(n_post, n_pre)``.

        Raises
        ------
        AllocationError
            Unknown weight name, wrong shape, or a plastic entry where no synapse exists.
        """
        if not isinstance(masks, Mapping):
            raise AllocationError(f"The 'masks' parameter must be a mapping of weight name -> bool array. "
                                  f"Got {type(masks).__name__}.")
        check_names("masks", masks, circuit.weight_names, what="Weight", error=AllocationError)
        out = {}
        for name in circuit.weight_names:
            shape = circuit.shape(name)
            if name not in masks:
                out[name] = np.zeros(shape, dtype=bool)
                continue
            arr = np.asarray(masks[name])
            if arr.shape != shape:
                raise AllocationError(f"The mask for weight {name!r} must have shape {shape} (n_post, n_pre). "
                                      f"Got {arr.shape} instead.")
            if arr.dtype != bool:
                if not np.isin(arr, (0, 1)).all():
                    raise AllocationError(f"The mask for weight {name!r} must be boolean (0/1).")
                arr = arr.astype(bool)
            absent = arr & ~circuit.eligible[name]
            if absent.any():
                i, j = np.argwhere(absent)[0]
                if circuit.projection[name].fixed:
                    raise AllocationError(f"The mask for weight {name!r} makes synapses of a fixed projection "
                                          f"plastic, e.g. ({i}, {j}). Fixed projections are never plastic.")
                raise AllocationError(f"The mask for weight {name!r} makes {int(absent.sum())} absent synapse(s) "
                                      f"plastic, e.g. ({i}, {j}). Only structurally present synapses can be plastic.")
            out[name] = arr
        return cls(out, strategy=strategy, circuit_name=circuit.name)

    @property
    def size(self) -> int:
        """``M``: the number of plastic synapses."""
        return int(sum(m.sum() for m in self.masks.values()))

    @property
    def counts(self) -> dict[str, int]:
        """Plastic synapses per weight."""
        return {k: int(v.sum()) for k, v in self.masks.items()}

    @property
    def indices(self) -> dict[str, np.ndarray]:
        """Weight name -> sorted flat (row-major) indices of its plastic entries.

        The plastic parameter vector ``theta`` of length ``M`` is these entries concatenated in weight order.
        """
        return {k: np.flatnonzero(v) for k, v in self.masks.items()}

    @property
    def hash(self) -> str:
        """A short content hash of the masks (sha256, 16 hex digits)."""
        h = hashlib.sha256()
        for k in sorted(self.masks):
            h.update(k.encode())
            h.update(str(self.masks[k].shape).encode())
            h.update(np.packbits(self.masks[k]).tobytes())
        return h.hexdigest()[:16]

    def rows(self, name: str) -> np.ndarray:
        """Plastic synapses per postsynaptic neuron of weight ``name``, shape ``(n_post,)``."""
        check_names("name", [name], self.masks, what="Weight", error=AllocationError)
        return self.masks[name].sum(axis=1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Allocation):
            return NotImplemented
        return self.masks.keys() == other.masks.keys() and all(
            np.array_equal(self.masks[k], other.masks[k]) for k in self.masks)

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:  # budget, plastic per weight, rows / cols touched (neurosubset._repr)
        from ._repr import allocation_text
        return allocation_text(self)

    def _repr_html_(self) -> str:
        from ._repr import allocation_html
        return allocation_html(self)


def _pool(circuit: Circuit, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Eligible synapses of weights ``names``: arrays of weight id, flat index, global post and pre neuron id."""
    neuron = circuit.slices()  # every region, declaration order: a neuron's global id
    w_id, flat, post, pre = [], [], [], []
    for k, name in enumerate(circuit.weight_names):
        if name not in names:
            continue
        proj = circuit.projection[name]
        idx = np.flatnonzero(circuit.eligible[name])  # fixed projections: none
        n_pre = circuit.shape(name)[1]
        w_id.append(np.full(idx.size, k))
        flat.append(idx)
        post.append(neuron[proj.post].start + idx // n_pre)
        pre.append(neuron[proj.pre].start + idx % n_pre)
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=int))
    return {"weight": cat(w_id), "flat": cat(flat), "post": cat(post), "pre": cat(pre)}


def _select(groups: np.ndarray, k: int, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """Pick ``k`` of ``len(groups)`` pool entries; ``groups`` gives each entry's neuron (row or column)."""
    n = groups.size
    if strategy == "random":
        return np.sort(rng.choice(n, size=k, replace=False))
    # a random order inside each group, entries of a group contiguous
    perm = rng.permutation(n)
    perm = perm[np.argsort(groups[perm], kind="stable")]
    ids, starts, caps = np.unique(groups[perm], return_index=True, return_counts=True)
    take = np.zeros(ids.size, dtype=int)
    if strategy.startswith("spread"):
        # water filling: every group gets min(cap, level); the remainder goes to random unsaturated groups
        level = 0
        while np.minimum(caps, level + 1).sum() <= k and level < caps.max():
            level += 1
        take = np.minimum(caps, level)
        rest = k - take.sum()
        if rest:
            open_groups = np.flatnonzero(caps > level)
            take[rng.choice(open_groups, size=rest, replace=False)] += 1
    else:
        # concentrated: largest capacity first, ties in random order
        order = np.lexsort((rng.permutation(ids.size), -caps))
        left = k
        for g in order:
            take[g] = min(caps[g], left)
            left -= take[g]
            if left == 0:
                break
    chosen = np.concatenate([perm[s:s + t] for s, t in zip(starts, take)]) if ids.size else perm[:0]
    return np.sort(chosen)


def _split_budget(budget: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder apportionment of ``budget`` by ``fractions`` (ties go to the earlier key)."""
    keys = list(fractions)
    exact = np.array([budget * fractions[k] for k in keys])
    base = np.floor(exact + 1e-9).astype(int)
    rest = budget - base.sum()
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return dict(zip(keys, base.tolist()))


def check_fractions(circuit: Circuit, fractions: Mapping[str, float], names: Sequence[str]) -> dict[str, list[str]]:
    """Validate a fractions mapping; return each key's weight names.

    Keys are weight (projection) names or region names (a region means every eligible projection into it).

    Raises
    ------
    AllocationError
        Unknown key, negative or non-finite fraction, fractions not summing to 1, overlapping keys.
    """
    allowed = list(circuit.weight_names) + [r.name for r in circuit.regions]
    check_names("fractions", fractions, allowed, what="Projection or region", error=AllocationError)
    groups: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for key, frac in fractions.items():
        try:
            value = float(frac)
        except (TypeError, ValueError):
            raise AllocationError(f"fractions[{key!r}] must be a number in [0, 1]. Got {frac!r}.") from None
        if not np.isfinite(value) or value < 0 or value > 1:
            raise AllocationError(f"fractions[{key!r}] must be in [0, 1]. Got {frac!r}.")
        members = [key] if key in circuit.projection else [p.name for p in circuit.projections_into(key)]
        members = [w for w in members if w in names]
        if not members:
            raise AllocationError(f"fractions[{key!r}] covers no eligible weight (eligible: {list(names)}).")
        for w in members:
            if w in owner:
                raise AllocationError(f"fractions keys {owner[w]!r} and {key!r} both cover weight {w!r}; "
                                      f"each synapse may belong to one key.")
            owner[w] = key
        groups[key] = members
    total = sum(float(v) for v in fractions.values())
    if abs(total - 1.0) > _FRACTION_TOL:
        raise AllocationError(f"The fractions must sum to 1. Got {total:g} from {dict(fractions)}.")
    return groups


def allocate(circuit: Circuit, budget: int, *, strategy: str = "random",
             fractions: Mapping[str, float] | None = None, within: Sequence[str] | None = None,
             seed: int = 0) -> Allocation:
    """Choose ``budget`` plastic synapses of ``circuit`` by a strategy.

    Parameters
    ----------
    circuit : Circuit
    budget : int
        ``M``, the number of plastic synapses (0 <= M <= eligible synapses).
    strategy : {"random", "spread-rows", "spread-cols", "concentrated-rows", "concentrated-cols"}
    fractions : dict, optional
        Projection or region name -> share of the budget (non-negative, summing to 1). Each share is rounded by
        largest remainder and allocated inside its projections with ``strategy``.
    within : list of str, optional
        Restrict the eligible synapses to these weights (default: all weights).
    seed : int
        Seed for the random choices.

    Returns
    -------
    Allocation

    Examples
    --------
    >>> import neurosubset as ns
    >>> rnn = ns.linear_rnn(n=6, n_in=2, n_out=1, steps=3)
    >>> ns.allocate(rnn, budget=12, strategy="spread-rows", within=["W"]).rows("W")   # 2 per postsynaptic neuron
    array([2, 2, 2, 2, 2, 2])
    """
    check_choice("strategy", strategy, STRATEGIES, error=AllocationError)
    names = list(circuit.weight_names) if within is None else list(within)
    if isinstance(within, str):
        raise AllocationError(f"The 'within' parameter must be a list of weight names. Got the string {within!r}.")
    check_names("within", names, circuit.weight_names, what="Weight", error=AllocationError)
    budget = check_int("budget", budget, minimum=0, error=AllocationError)
    seed = check_int("seed", seed, minimum=0, error=AllocationError)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[str]]
    if fractions is None:
        parts, shares = {"all": names}, {"all": budget}
    else:
        if not isinstance(fractions, Mapping):
            raise AllocationError(f"The 'fractions' parameter must be a mapping of name -> fraction. Got "
                                  f"{fractions!r}.")
        parts = check_fractions(circuit, fractions, names)
        shares = _split_budget(budget, {k: float(v) for k, v in fractions.items()})
    total_eligible = sum(int(circuit.eligible[w].sum()) for w in names)
    if budget > total_eligible:
        raise AllocationError(f"The 'budget' parameter of allocate must be <= {total_eligible} (the plastic-eligible "
                              f"synapses in {names}). Got {budget} instead.")
    masks = {w: np.zeros(circuit.shape(w), dtype=bool) for w in circuit.weight_names}
    for key, members in parts.items():
        pool = _pool(circuit, members)
        k = shares[key]
        if k > pool["flat"].size:
            raise AllocationError(f"The share of fractions[{key!r}] is {k} synapses, more than the {pool['flat'].size}"
                                  f" plastic-eligible synapses in {members}. Lower its fraction or the budget.")
        if k == 0:
            continue
        groups = pool["post"] if strategy.endswith("rows") else pool["pre"]
        chosen = _select(groups, k, strategy, rng)
        for wid, flat in zip(pool["weight"][chosen], pool["flat"][chosen]):
            masks[circuit.weight_names[wid]].flat[flat] = True
    return Allocation(masks, strategy=strategy, circuit_name=circuit.name)
