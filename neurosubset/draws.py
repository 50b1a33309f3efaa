"""The random draws of a batch of trials: teachers, the students' own weights and probes (:func:`draw_trials`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import CircuitSpecError
from .dynamics.stability import loops, max_real_eig, stability_applies
from .circuit import Circuit

_MAX_REJECTIONS = 1000  # unstable draws rejected in a row before a trial gives up (specs allow <= 50% unstable)

__all__ = ["Trials", "draw_trials"]


@dataclass(frozen=True)
class Trials:
    """The random draws of a batch of trials (numpy, float64).

    Attributes
    ----------
    teacher, student_init : dict
        Weight name -> ``(trial, n_post, n_pre)``: the teacher and the student's own draw (the frozen values).
    probes : numpy.ndarray
        ``(trial, m, n_in)`` or ``(trial, m, steps, n_in)``.
    teacher_rejected, student_rejected : numpy.ndarray
        ``(trial,)`` int64 unstable draws rejected before the teacher / the student's draw (``stable`` only).
    """

    teacher: dict[str, np.ndarray]
    student_init: dict[str, np.ndarray]
    probes: np.ndarray
    teacher_rejected: np.ndarray | None = None
    student_rejected: np.ndarray | None = None


def draw_trials(circuit: Circuit, m: int, trials: int, seed: int, *, first: int = 0,
                stable: bool = False) -> Trials:
    """Draw teachers, student initial weights and probes for trials ``first .. first + trials - 1``.

    Trial ``i`` depends only on ``(seed, i)``: teacher and student do not depend on ``m`` either. With ``stable``
    (steady circuits), a teacher or student draw whose recurrent matrix has ``max Re(eig W) >= 1`` is rejected and
    drawn again from the same stream (the draws are then the init distribution conditioned on stability); a
    trial whose first draws are stable is the same as without ``stable``.
    """
    found = loops(circuit) if stable and stability_applies(circuit) else ()  # once: every draw asks about these
    stable = bool(found)
    teachers, students, probes = [], [], []
    rejected = np.zeros((trials, 2), dtype=np.int64)
    for k, i in enumerate(range(first, first + trials)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 0)))
        for j, out in enumerate((teachers, students)):
            w = circuit.sample_weights(rng)
            while stable and max_real_eig(circuit, w, found) >= 1.0:
                rejected[k, j] += 1
                if rejected[k, j] > _MAX_REJECTIONS:
                    raise CircuitSpecError(
                        f"Trial {i} of circuit {circuit.name!r}: {_MAX_REJECTIONS} draws in a row were unstable "
                        f"(max Re(eig W) >= 1); the spec's estimate was {circuit.stability.unstable_fraction:.0%}. "
                        f"{circuit.stability.suggestion(circuit)}.")
                w = circuit.sample_weights(rng)
            out.append(w)
        probes.append(circuit.sample_probes(m, rng))
    stack = (lambda ds: {k: np.stack([d[k] for d in ds]) for k in circuit.weight_names})
    return Trials(stack(teachers), stack(students), np.stack(probes), rejected[:, 0], rejected[:, 1])
