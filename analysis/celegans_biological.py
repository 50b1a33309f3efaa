"""The worm's biological answer (issue 28): Dale (or Fenyves 2020) signs + stability, m = 2, on the allocations the
certificate calls positive (greedy optimal 276, spread-rows 1,004, all 3,709 chemical synapses), with and without
gap junctions. Per allocation: the outcomes (proven match / proven no match within the plausibility bound K /
undecided), the proof kinds, witness_scale and the time.

Run: ``python analysis/celegans_biological.py [TRIALS] [--fenyves]`` (default 4 trials: the pilot of
analysis/README.md). Prints one JSON line per allocation; ``ns.fit`` with ``Auto(restarts=2, max_rounds=1,
iterations=200)``, K = 100 (the default). Undecided trials are neither matches nor proofs: a bracket from them is
wide, never a guess.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import neurosubset as ns
from neurosubset._internal import OUTCOME, PROOF_KIND

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cell_type_blocks, projection_groups  # noqa: E402

SOLVER = ns.Auto(restarts=2, max_rounds=1, iterations=200)


def run(trials: int, signs: str | None) -> list[dict]:
    out = []
    for gap in (False, True):
        worm = ns.celegans("cook2019-herm", seed=0, gap_junctions=gap, signs=signs)
        chem = projection_groups(cell_type_blocks(worm))["all chemical"]
        allocs = [("greedy-276", ns.optimal_allocation(worm, 276, m=2, within=chem, seed=0)),
                  ("spread-rows-1004", ns.allocate(worm, 1004, strategy="spread-rows", within=chem, seed=0)),
                  ("all-3709", ns.Allocation.from_masks(worm, {w: worm.eligible[w] for w in chem}, strategy="full"))]
        for label, alloc in allocs:
            t = time.perf_counter()
            r = ns.fit(worm, alloc, m=2, trials=trials, seed=0, solver=SOLVER, dale=True, stable=True)
            rec = {"signs": signs or "dale", "gap_junctions": gap, "allocation": label, "M": int(alloc.size),
                   "trials": trials, "wall_s": round(time.perf_counter() - t, 1),
                   "outcome": [OUTCOME.meanings[k] for k in r.outcome],
                   "proof_kind": [PROOF_KIND.meanings[k] for k in r.proof_kind],
                   "witness_scale": [None if not np.isfinite(v) else round(float(v), 1) for v in r.witness_scale]}
            print(json.dumps(rec), flush=True)
            out.append(rec)
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(int(args[0]) if args else 4, "fenyves2020" if "--fenyves" in sys.argv else None)
