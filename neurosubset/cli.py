"""Command line: ``neurosubset SUBCOMMAND ...``. Thin: parse, call one public function, write one file.

Every error a user can cause (the toolkit's own error classes, :class:`neurosubset.NeurosubsetError`, and
operating-system errors such as a missing file or a read-only folder) ends as one line on stderr and exit status 2.
Anything else is a bug in the toolkit: it ends with its traceback.

No command replaces an existing file unless ``--overwrite`` is given, and ``mp``, ``spikecheck`` and ``export``
never replace (or write into) a sweep store; the suffix decides the format (``.nc`` netCDF, ``.zarr`` Zarr) and the
output folder must exist (see :mod:`neurosubset._outputs`). ``mp`` and ``spikecheck`` check their output before
computing anything.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import __version__
from ._checks import MAX_SEED, NeurosubsetError, NonFiniteOutputWarning, max_workers, workers_allowed
from ._outputs import FIGURE_FORMATS, check_output, check_writable, write_dataset, write_figure
from ._schema import DONE, INFEASIBLE_BUDGET, INFEASIBLE_SHARE, NON_FINITE, var_name
from .allocation import STRATEGIES, allocate
from .circuit import Circuit, feedforward, linear_rnn
from .dynamics import Continuous
from .options import DEFAULT_TOL, FitOptions, constraints_act, fit_options
from .solvers import SOLVERS, LeastSquares, LevenbergMarquardt, Solver

EXIT_USER_ERROR = 2


class CLIError(NeurosubsetError):
    """A bad command-line argument."""


_LRNN_FIELDS = ("N", "N_IN", "N_OUT", "T", "GAIN")


def _builtin_field(spec: str, field: str, text: str, kind: Callable) -> int | float:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise CLIError(f"Cannot parse builtin circuit {spec!r}: field {field} must be {what}. Got {text!r}."
                       ) from None


def load_circuit(spec: str) -> Circuit:
    """A circuit from a TOML path or a builtin: ``lffn:8-6-3``, ``relu:8-6-3``, ``lrnn:N,N_IN,N_OUT,T[,GAIN]``."""
    kind, _, args = spec.partition(":")
    if kind in ("lffn", "relu") and args:
        sizes = [_builtin_field(spec, f"size {i + 1} (of {kind}:D0-D1-...)", v, int)
                 for i, v in enumerate(args.split("-"))]
        return feedforward(sizes, "linear" if kind == "lffn" else "relu")
    if kind == "lrnn" and args:
        parts = args.split(",")
        if not 4 <= len(parts) <= 5:
            raise CLIError(f"Cannot parse builtin circuit {spec!r}: 'lrnn:N,N_IN,N_OUT,T[,GAIN]' takes 4 or 5 "
                           f"comma-separated fields. Got {len(parts)} ({', '.join(_LRNN_FIELDS[len(parts):4])} "
                           f"missing)." if len(parts) < 4 else
                           f"Cannot parse builtin circuit {spec!r}: 'lrnn:N,N_IN,N_OUT,T[,GAIN]' takes 4 or 5 "
                           f"comma-separated fields. Got {len(parts)}.")
        n, n_in, n_out, steps = (_builtin_field(spec, f, v, int) for f, v in zip(_LRNN_FIELDS, parts[:4]))
        gain = _builtin_field(spec, "GAIN", parts[4], float) if len(parts) > 4 else 1.0
        return linear_rnn(n, n_in, n_out, steps=steps, gain=gain)
    if not Path(spec).exists():
        raise CLIError(f"Circuit {spec!r} is neither a TOML file nor a builtin ('lffn:8-6-3', 'relu:8-6-3', "
                       f"'lrnn:16,2,2,5').")
    return Circuit.from_toml(spec)


def parse_fractions(text: str | None) -> dict[str, float] | None:
    """``"CA3->CA3=0.25,CA3->CA1=0.75"`` -> ``{"CA3->CA3": 0.25, "CA3->CA1": 0.75}``."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        key, sep, value = item.rpartition("=")
        if not sep or not key.strip():
            raise CLIError(f"--fractions takes NAME=FRACTION pairs separated by commas, e.g. "
                           f"'CA3->CA3=0.25,CA3->CA1=0.75'. Got {item!r}.")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise CLIError(f"--fractions: {value!r} (for {key.strip()!r}) is not a number.") from None
    return out


def _seed(text: str) -> int:
    """``--seed``: an integer the writers can store (0 .. 2^63 - 1), refused before any work otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer. Got {text!r}.") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED} (what result files store). Got {text}.")
    return value


def parse_list(text: str | None, kind: Callable = str, *, option: str = "") -> list | None:
    """``"5,10,20"`` -> ``[5, 10, 20]``."""
    if text is None:
        return None
    try:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{option} takes a comma-separated list of {kind.__name__} values. Got {text!r}.") from None


def _check_out(args: argparse.Namespace) -> None:
    """Refuse a bad ``--out`` (and check the folder is writable) before anything is computed."""
    if args.out:
        check_output(args.out, overwrite=args.overwrite, what="--out")
        check_writable(args.out)


def _cmd_mp(args: argparse.Namespace) -> None:
    """Estimate the match probability MP(A, m) of one allocation and write the dataset."""
    from . import _partial
    from .benchmark import PartialResult, match_probability
    from .results import summary

    resumable = bool(args.out) and not args.save_weights and Path(args.out).suffix == ".nc"
    if not (resumable and not args.overwrite and Path(args.out).is_file() and _partial.resume_path(args.out).is_file()):
        _check_out(args)  # else: maybe an interrupted run of this request (checked below, once the request is known)
    options = _fit_options(args, threads=_workers(args), device=args.device, skip_zero=args.skip_zero)
    circuit = load_circuit(args.circuit)
    options.check_circuit(circuit, "neurosubset mp")
    alloc = _allocation(circuit, args)
    key = _partial.request_key(circuit, alloc, args.m, args.trials, args.seed, options)
    resume = _partial.load(args.out, key) if resumable and not args.overwrite and Path(args.out).is_file() else None
    if resumable and resume is None and not args.overwrite and Path(args.out).is_file():
        _check_out(args)  # a complete result, or another request's: refused as any existing file
    if resume is not None:
        print(f"resuming {args.out}: {resume.matched.size} of {args.trials} trials done")
    if resumable and options.chunk is None and args.trials >= _RESUMABLE_TRIALS:  # four chunks of trials: what
        options = options._evolve(chunk=-(-args.trials // 4))  # an interrupt keeps (small runs: one batch)
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _interrupt) if resumable and main_thread else None
    try:
        ds = match_probability(circuit, alloc, m=args.m, trials=args.trials, seed=args.seed, options=options,
                               return_weights=args.save_weights, progress=not args.quiet, _resume=resume)
    except PartialResult as exc:
        if resumable:
            write_dataset(exc.dataset, args.out, overwrite=True, what="--out")
            _partial.save(args.out, exc.result, key)
            print(f"interrupted: wrote {exc.result.matched.size} of {args.trials} trials to {args.out} (partial; "
                  f"rerun the same command to complete it)", file=sys.stderr)
        raise KeyboardInterrupt from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"MP = {float(ds.mp):.3f}  95% CI [{float(ds.mp_low):.3f}, {float(ds.mp_high):.3f}]  "
          f"({int(ds.matched.sum())}/{ds.sizes['trial']} matched; M = {alloc.size}, m = {args.m}, "
          f"strategy {args.strategy}, solver {ds.attrs['solver']}, first-round MP {float(ds.mp_first_round):.3f}; "
          f"{_estimate(ds)}, certificate {ds.attrs.get('certificate_verdict', 'not computed')}; {summary(ds)})")
    _warn_non_finite(args, int((ds["fit_status"].values == NON_FINITE).sum()), ds.sizes["trial"])
    if args.out:
        _write(ds, args.out, args.overwrite or resume is not None)
        _partial.clear(args.out)


_RESUMABLE_TRIALS = 32  # mp --out with at least this many trials fits them in four chunks (resumable after an
# interrupt); fewer trials stay one batch (the LM's per-iteration cost is mostly overhead on small batches)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the run stops where it is and keeps what it finished."""
    raise KeyboardInterrupt


def _estimate(ds) -> str:
    """"exact" or "lower bound": how MP was decided (attr ``decision_kind``; ``mp_estimate`` in older files)."""
    kind = str(ds.attrs.get("decision_kind", ds.attrs.get("mp_estimate", "unknown")))
    return {"lower_bound": "lower bound"}.get(kind, kind)


def _warn_non_finite(args: argparse.Namespace, count: int, total: int) -> None:
    if count:
        print(f"neurosubset {args.command}: warning: in {count} of {total} trials the outputs overflowed to inf/NaN "
              f"(fit_status 'non_finite'): those trials count as unmatched for numerical reasons, so MP is not "
              f"meaningful there; lower the circuit's gains or steps", file=sys.stderr)


def _write(ds, out: str, overwrite: bool) -> None:
    print(f"wrote {write_dataset(ds, out, overwrite=overwrite, what='--out')}")


def _cmd_sweep(args: argparse.Namespace) -> None:
    """Sweep MP over budgets, plasticity fractions, strategies and probe counts into a resumable Zarr store."""
    from .sweeps import dirichlet_grid, simplex_grid, sweep
    from .sweeps.table import mp_table

    options = _fit_options(args, device=args.device)
    circuit = load_circuit(args.circuit)
    options.check_circuit(circuit, "neurosubset sweep")
    keys = parse_list(args.fractions, option="--fractions")
    if keys and any("=" in k for k in keys):
        raise CLIError(f"sweep --fractions takes the keys to sweep, e.g. 'CA3->CA3,CA3->CA1' (with --step), not "
                       f"NAME=FRACTION pairs. Got {args.fractions!r}.")
    if args.workers is not None and args.scheduler:
        raise CLIError("Give either --workers (local processes) or --scheduler (a dask scheduler), not both.")
    workers = _workers(args)
    if args.dirichlet is not None and not keys:
        raise CLIError("--dirichlet N draws fraction points over the --fractions keys: give --fractions too.")
    grid = (dirichlet_grid(keys, args.dirichlet, args.seed) if args.dirichlet is not None else
            simplex_grid(keys, args.step)) if keys else None
    ds = sweep(circuit, budget=parse_list(args.budget, int, option="--budget"), fractions=grid, paired=args.paired,
               strategy=parse_list(args.strategy, option="--strategy"), m=parse_list(args.m, int, option="--m"),
               trials=args.trials, seed=args.seed, store=args.out, overwrite=args.overwrite,
               workers=workers,
               scheduler=args.scheduler or None, within=parse_list(args.within, option="--within"),
               options=options, progress=not args.quiet,
               **({"dale": [True, False]} if args.compare_dale else {}),
               **({"stable": [True, False]} if args.compare_stable else {}))
    status = ds["status"].values
    infeasible = np.isin(status, [INFEASIBLE_BUDGET, INFEASIBLE_SHARE])
    print(f"wrote {args.out}: {int((status == DONE).sum())} points done, {int(infeasible.sum())} infeasible "
          f"(NaN), dims {dict(ds['mp'].sizes)}")
    if "fit_status" in ds:
        _warn_non_finite(args, int((ds["fit_status"].values == NON_FINITE).sum()), int((status == DONE).sum() *
                                                                                          ds.sizes["trial"]))
    if args.compare_dale and not args.compare_stable and options.stable and constraints_act(circuit)[1]:
        print("note: the dale=False arm still requires stability (stable=True), as the dale=True arm does; "
              "--no-stable drops it, --compare-stable sweeps it too")
    table = mp_table(ds)  # MP and its bracket per computed point; lower bounds and still-improving points marked
    if table:
        print(table)


MAX_DPI = 1200  # a 6 x 4 inch figure at 1200 dpi is a 35-megapixel canvas (about 140 MB)


def _cmd_plot(args: argparse.Namespace) -> None:
    """Write PNG figures of a sweep store / netCDF file or of one `neurosubset mp` result."""
    from .plot import figure_paths, figures
    from .sweeps import open_sweep

    if not 1 <= args.dpi <= MAX_DPI:  # 20000 dpi would be a 38 GB canvas
        raise CLIError(f"--dpi must be between 1 and {MAX_DPI}. Got {args.dpi}.")
    ds = open_sweep(args.path)
    out = Path(args.out or str(Path(args.path).with_suffix("")))
    figs = figures(ds)
    paths = figure_paths(list(figs), out)
    for path in paths:  # every figure passes the output rules before any is written
        check_output(path, formats=FIGURE_FORMATS, overwrite=args.overwrite, what="--out")
    for path, fig in zip(paths, figs.values()):
        print(f"wrote {write_figure(fig, path, dpi=args.dpi, overwrite=args.overwrite, what='--out')}")


def _cmd_export(args: argparse.Namespace) -> None:
    """Export a sweep store (.zarr) as one netCDF-4 file (h5netcdf)."""
    from .sweeps import export

    print(f"wrote {export(args.store, args.out, overwrite=args.overwrite)}")


def _cmd_spikecheck(args: argparse.Namespace) -> None:
    """Fit one student, then run teacher, fitted and unfitted student as linear Poisson networks in brian2."""
    from .plot import spike_rates
    from .spiking import SpikingSettings, spikecheck
    from .spiking.checks import continuous_kernel_tau

    _check_out(args)
    if args.out and Path(args.out).suffix != ".nc":
        raise CLIError(f"spikecheck --out takes a .nc (netCDF) file. Got {args.out!r}.")
    fig = args.fig or (Path(args.out).with_suffix(".png") if args.out else None)
    if fig is not None:  # the figure follows the same rules, checked before the simulation
        check_output(fig, formats=FIGURE_FORMATS, overwrite=args.overwrite, what="--fig")
        check_writable(fig)
    circuit = load_circuit(args.circuit)
    tau = args.tau if args.tau is not None else (  # unset: a continuous circuit's own tau, else automatic
        continuous_kernel_tau(circuit) if isinstance(circuit.dynamics, Continuous) else None)
    settings = SpikingSettings(duration=args.duration, repeats=args.repeats, tau=tau,
                               rate_unit=args.rate_unit, target=args.target)
    alloc = _allocation(circuit, args)
    ds = spikecheck(circuit, alloc, args.m, seed=args.seed, settings=settings)
    matched, residual = ds.attrs["matched"], ds.attrs["residual"]
    verdict = "matched" if matched else "NOT matched (the spiking comparison is then expected to differ)"
    print(f"fit: student {verdict}, relative residual {residual:.2e} (M = {alloc.size}, m = {args.m})")
    print(f"teacher spikes vs rate model: {ds.attrs['fraction_agree_teacher_model']:.0%} of (probe, neuron) pairs "
          f"agree (3 s.e. or 5%); max clipped fraction {ds.attrs['clipped_fraction_all_max']:.2%}; "
          f"{ds.attrs['repeats']} x {float(ds['duration']):g} s, dt {1e3 * float(ds['dt']):g} ms, "
          f"{ds.attrs['codegen_target']}")
    print(f"operating point: {ds.attrs['rate_unit_choice']}; predicted mean output rates up to "
          f"{ds.attrs['predicted_output_rate_max']:.0f} Hz; the precision of 40 Hz per unit needs --duration about "
          f"{ds.attrs['duration_for_same_precision']:.3g}")
    for s in ds["student"].values:
        row = ds.sel(student=s)
        print(f"{s:>9} vs teacher: agree {float(row.fraction_agree):.0%}, median |z| {float(row.median_abs_z):.2f}, "
              f"|z| > 3 in {float(row.fraction_abs_z_above_3):.0%}, max |z| {float(abs(row.z).max()):.1f}")
    if ds.attrs["rectification_dominated"]:
        print(f"warning: {ds.attrs['flags']}")
    if args.out:
        _write(ds, args.out, args.overwrite)
    if fig is not None:
        print(f"wrote {write_figure(spike_rates(ds), fig, overwrite=args.overwrite, what='--fig')}")


def _cmd_localize(args: argparse.Namespace) -> None:
    """Which projection's (or region's) synapses could have changed to produce recorded responses? Fit each
    candidate to the recording and rank them on held-out probes."""
    from .responses import localize, projection_candidates, read_responses, read_weights, region_candidates

    _check_out(args)
    options = _fit_options(args)
    circuit = load_circuit(args.circuit)
    weights = read_weights(args.weights, circuit)
    probes, responses, noise = read_responses(args.responses, circuit)
    candidates = projection_candidates(circuit) if args.candidates == "projections" else region_candidates(circuit)
    ds = localize(circuit, weights, probes, responses, candidates, noise=noise, holdout=args.holdout,
                  options=options, alpha=args.alpha, seed=args.seed)
    cols = ["place", "n_plastic", "residual", "heldout_residual", "matched", "identifiable", "rank",
            "decision_kind", "ambiguous"] + (["chi_square", "dof", "p_value"] if noise is not None else [])
    print(ds[[c for c in cols if c in ds]].to_dataframe().rename_axis(None).to_string())  # best candidate first
    if ds.attrs.get("ambiguous"):
        print(f"ambiguous: the first place is not unique; equally good (structurally or statistically): "
              f"{ds.attrs['equally_good'].replace(',', ', ')}; their order (fewer plastic synapses first) is a "
              f"convention, not evidence")
    if args.out:
        _write(ds, args.out, args.overwrite)


def _cmd_simulate(args: argparse.Namespace) -> None:
    """Simulate a circuit on given weights and probes and write the responses file (R.nc) that ``localize`` reads:
    probes and the rates of the chosen regions, for any dynamics."""
    from .responses import read_weights, responses_dataset
    from .simulate import simulate

    _check_out(args)
    circuit = load_circuit(args.circuit)
    weights = read_weights(args.weights, circuit)
    probes = _read_probes(args.probes)
    regions = parse_list(args.regions, option="--regions") or [r.name for r in circuit.regions if r.role != "input"]
    ds = simulate(circuit, weights, probes, regions=regions)
    responses = {r: ds[f"rate_{var_name(r)}"].values for r in regions}
    _write(responses_dataset(circuit, probes, responses), args.out, args.overwrite)
    print(f"wrote {args.out}: responses of {regions} to {ds.sizes['probe']} probes")


def _read_probes(path: str) -> np.ndarray:
    """The ``probes`` variable of a netCDF file ((probe, input) or (probe, time, input)), one line on failure."""
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            if "probes" not in ds.data_vars:
                raise CLIError(f"--probes {path!r} has no 'probes' variable (probe, input) or (probe, time, input).")
            return ds["probes"].values
    except (OSError, ValueError) as exc:
        raise CLIError(f"--probes {path!r} is not a readable netCDF file ({exc}).") from None


def _allocation(circuit: Circuit, args: argparse.Namespace):
    """The allocation the ``_add_allocation`` options describe."""
    return allocate(circuit, args.budget, strategy=args.strategy, fractions=parse_fractions(args.fractions),
                    within=parse_list(args.within, option="--within"), seed=args.seed)


def _add_allocation(parser: argparse.ArgumentParser, circuit_help: str) -> None:
    """The circuit and the allocation options shared by ``mp`` and ``spikecheck``."""
    parser.add_argument("circuit", help=circuit_help)
    parser.add_argument("--budget", type=int, required=True, help="M, the number of plastic synapses")
    parser.add_argument("--strategy", default="random", choices=STRATEGIES)
    parser.add_argument("--fractions",
                        help="share of the budget per projection/region, e.g. 'CA3->CA3=0.5,CA3->CA1=0.5'")
    parser.add_argument("--within", help="comma-separated weight names eligible for plasticity")


def _add_solver(parser: argparse.ArgumentParser) -> None:
    """The solver options shared by ``mp`` and ``sweep``; unset effort options keep the library's defaults."""
    parser.add_argument("--solver", default="auto", metavar="{" + ",".join(SOLVERS) + "}",
                        help="auto: exact least squares where outputs are affine in the plastic weights, else "
                             "Levenberg-Marquardt (default auto)")
    parser.add_argument("--tol", type=float, default=DEFAULT_TOL,
                        help=f"match tolerance on the relative residual (default {DEFAULT_TOL:g})")
    lm = LevenbergMarquardt()
    parser.add_argument("--restarts", type=int, help=f"LM random starts per round (default {lm.restarts})")
    parser.add_argument("--max-rounds", type=int, help=f"LM restart rounds at most (default {lm.max_rounds})")
    parser.add_argument("--iterations", type=int,
                        help=f"LM iterations in the first round, doubling per round (default {lm.iterations})")
    parser.add_argument("--widen", type=float, help=f"growth of the LM start scale per round (default {lm.widen:g})")
    parser.add_argument("--patience", type=int,
                        help=f"LM rounds in a row without improving a trial before it stops (0: every round; "
                             f"default {lm.patience})")
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)  # deprecated alias of --iterations


def _add_constraints(parser: argparse.ArgumentParser) -> None:
    """The biological constraints shared by ``mp`` and ``sweep`` (both on by default)."""
    parser.add_argument("--no-dale", dest="dale", action="store_false",
                        help="let fitted plastic synapses change sign (default: Dale's law, each keeps its "
                             "region's sign)")
    parser.add_argument("--no-stable", dest="stable", action="store_false",
                        help="count matches of steady circuits whose student is unstable (default: max Re(eig W) < 1 "
                             "required, teachers and students drawn stable)")


DEFAULT_TRIALS = 100  # `mp` and `sweep` alike (mp had 200, sweep 100)
_CIRCUIT_HELP = "TOML spec path or builtin ('lffn:8-6-3', 'relu:8-6-3', 'lrnn:16,2,2,5')"


def _add_mp_and_sweep(parser: argparse.ArgumentParser, *, sweep: bool) -> None:
    """Every option ``mp`` and ``sweep`` share: one name, one default, one meaning (tests/test_cli.py compares).

    Where the two differ it is in how many values an option takes: ``sweep`` takes comma-separated lists for
    ``--budget``, ``--strategy`` and ``--m``, and ``--fractions`` names the keys to sweep (``mp``: NAME=FRACTION
    pairs); and ``sweep`` requires ``--out`` (its store). ``--workers``: ``mp`` fits all its trials as one batch,
    so its workers are the torch threads of that batch; ``sweep`` starts that many worker processes, each on one
    torch thread, and computes points side by side. Either way the numbers do not depend on ``--workers``.
    """
    if sweep:
        parser.add_argument("circuit", help=_CIRCUIT_HELP)
        parser.add_argument("--budget", required=True, help="comma-separated budgets M, e.g. '100,200'")
        parser.add_argument("--strategy", default="random",
                            help=f"comma-separated strategies from {list(STRATEGIES)} (default random)")
        parser.add_argument("--fractions", help="comma-separated projection/region keys to split the budget over, "
                                                "e.g. 'CA3->CA3,CA3->CA1' (all simplex points at --step)")
        parser.add_argument("--within", help="comma-separated weight names eligible for plasticity")
        parser.add_argument("--m", required=True, help="comma-separated probe counts, e.g. '5,10,20'")
    else:
        _add_allocation(parser, _CIRCUIT_HELP)
        parser.add_argument("--m", type=int, required=True, help="number of probes")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"teacher/student/probe draws{' per point' if sweep else ''} (default {DEFAULT_TRIALS})")
    parser.add_argument("--seed", type=_seed, default=0, help="base seed of every draw (default 0)")
    parser.add_argument("--workers", type=int,
                        help="local worker processes, one torch thread each (default 1)" if sweep else
                        "torch threads for the one batched fit of all trials (default 1; on a loaded machine one "
                        "is fastest)")
    _add_solver(parser)
    _add_constraints(parser)
    parser.add_argument("--device", default="cpu", help="where the LM runs: cpu (default) or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if sweep:
        parser.add_argument("--out", required=True, help="the .zarr store (rerun the same command to resume)")
        parser.add_argument("--overwrite", action="store_true",
                            help="start the store over (after taking its lock: never while another sweep writes it)")
    else:
        parser.add_argument("--out", help="output .nc (netCDF) or .zarr (an existing file is refused without "
                                          "--overwrite)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace an existing output file (never a sweep store)")


def _workers(args: argparse.Namespace) -> int:
    """``--workers`` checked (>= 1), 1 when not given."""
    if args.workers is None:
        return 1
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1. Got {args.workers}.")
    if args.workers > max_workers():  # the same rule as FitOptions.threads and sweep(workers=)
        raise CLIError(f"--workers must be {workers_allowed()}. Got {args.workers}.")
    return args.workers


def _fit_options(args: argparse.Namespace, **extra) -> FitOptions:
    """The :class:`~neurosubset.FitOptions` that ``--solver``, ``--tol``, the constraints and ``extra`` describe,
    validated once (the one-line message names the command)."""
    return fit_options(f"neurosubset {args.command}", solver=_solver(args), tol=args.tol, dale=args.dale,
                       stable=args.stable, **extra)


def _solver(args: argparse.Namespace) -> Solver | str:
    """The solver object that ``--solver`` and the effort options describe (an unknown name as given: the options'
    validator refuses it)."""
    effort = {key: getattr(args, key) for key in ("restarts", "max_rounds", "iterations", "widen", "patience")
              if getattr(args, key) is not None}
    if args.steps is not None:
        if "iterations" in effort:
            raise CLIError("Give --iterations, not both --iterations and its deprecated alias --steps.")
        print(f"neurosubset {args.command}: warning: --steps is deprecated (it means a circuit's time steps "
              f"elsewhere); use --iterations", file=sys.stderr)
        effort["iterations"] = args.steps
    if args.solver not in SOLVERS:
        return args.solver
    if args.solver == "lstsq":
        if effort:
            raise CLIError(f"--solver lstsq is exact and takes no LM options; got {sorted(effort)}.")
        return LeastSquares()
    return SOLVERS[args.solver](**effort)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="neurosubset", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"neurosubset {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mp = sub.add_parser("mp", help=_cmd_mp.__doc__, description=_cmd_mp.__doc__)
    _add_mp_and_sweep(mp, sweep=False)
    mp.add_argument("--save-weights", action="store_true", help="store teacher/student weights and probes")
    mp.add_argument("--skip-zero", action=argparse.BooleanOptionalAction, default=None,
                    help="certify first; on a 'zero' verdict (rank deficit: MP = 0 exactly) record every trial "
                         "without fitting (default: only circuits with >= 128 hidden neurons)")
    mp.set_defaults(func=_cmd_mp)

    sw = sub.add_parser("sweep", help=_cmd_sweep.__doc__, description=_cmd_sweep.__doc__)
    _add_mp_and_sweep(sw, sweep=True)
    sw.add_argument("--step", type=float, default=0.25, help="simplex grid spacing of --fractions (default 0.25)")
    sw.add_argument("--dirichlet", type=int, metavar="N",
                    help="N fraction points drawn from a flat Dirichlet (seeded by --seed) instead of the grid")
    sw.add_argument("--unpaired", dest="paired", action="store_false", default=None,
                    help="draw each point's trials from its own seed (default: paired, trial i identical everywhere)")
    sw.add_argument("--compare-dale", action="store_true", help="a 'dale' dim with Dale's law on and off (both arms "
                    "still require stability where it applies: add --no-stable or --compare-stable)")
    sw.add_argument("--compare-stable", action="store_true", help="a 'stable_required' dim with stability on and off")
    sw.add_argument("--scheduler", help="dask.distributed scheduler address, e.g. tcp://host:8786 (instead of "
                                        "--workers)")
    sw.set_defaults(func=_cmd_sweep)

    pl = sub.add_parser("plot", help=_cmd_plot.__doc__, description=_cmd_plot.__doc__)
    pl.add_argument("path", help="a sweep .zarr store, an exported .nc sweep, or an `mp --out` .nc file")
    pl.add_argument("--out", help="x.png / x.pdf / x.svg (one figure) or a prefix: <prefix>_<figure>.png, or "
                                   "x.pdf for <x>_<figure>.pdf (default: next to PATH)")
    pl.add_argument("--dpi", type=int, default=120, help=f"resolution, 1 to {MAX_DPI} (default 120)")
    pl.add_argument("--overwrite", action="store_true", help="replace existing figure files")
    pl.set_defaults(func=_cmd_plot)

    ex = sub.add_parser("export", help=_cmd_export.__doc__, description=_cmd_export.__doc__)
    ex.add_argument("store", help="the .zarr sweep store")
    ex.add_argument("out", help="the .nc file to write (an existing file is refused without --overwrite)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output file (never a sweep store)")
    ex.set_defaults(func=_cmd_export)

    sc = sub.add_parser("spikecheck", help=_cmd_spikecheck.__doc__, description=_cmd_spikecheck.__doc__)
    _add_allocation(sc, "TOML spec path or builtin ('lffn:8-6-3'); linear 'steady' or 'feedforward'")
    sc.add_argument("--m", type=int, required=True, help="number of probes (each is simulated)")
    sc.add_argument("--seed", type=int, default=0, help="fit draw and brian2 seed")
    sc.add_argument("--duration", type=float, default=10.0, help="simulated seconds per repeat (default 10)")
    sc.add_argument("--repeats", type=int, default=4, help="independent repeats for the standard errors (>= 2)")
    sc.add_argument("--tau", type=float,
                    help="synaptic kernel time constant in s (default: a continuous circuit's tau, else automatic: "
                         "0.05, longer where that keeps predicted output rates <= 100 Hz)")
    sc.add_argument("--rate-unit", type=float, default=None,
                    help="Hz per unit of rate-model activity (default: automatic, at most 40, lower where needed to "
                         "keep predicted output rates <= 100 Hz)")
    sc.add_argument("--target", default="numpy", choices=("numpy", "cython"), help="brian2 codegen target")
    sc.add_argument("--out", help="output .nc (netCDF); the figure goes next to it as .png unless --fig is given")
    sc.add_argument("--fig", help="figure path (.png, .pdf, .svg; an existing file is refused without --overwrite)")
    sc.add_argument("--overwrite", action="store_true", help="replace an existing output file (never a sweep store)")
    sc.set_defaults(func=_cmd_spikecheck)

    lo = sub.add_parser("localize", help=_cmd_localize.__doc__, description=_cmd_localize.__doc__)
    lo.add_argument("circuit", help=_CIRCUIT_HELP)
    lo.add_argument("--weights", required=True,
                    help="W.nc: the weights before learning, one variable per projection (e.g. CA3_to_CA1, dims "
                         "(CA3_to_CA1_post, CA3_to_CA1_pre), attr weight='CA3->CA1'); see neurosubset.responses.files")
    lo.add_argument("--responses", required=True,
                    help="R.nc: 'probes' (probe[, time], input) and per recorded region response_<region> (probe[, "
                         "time], neuron) with attrs region, recording='response'; optional noise_<region> (neuron) SDs")
    lo.add_argument("--candidates", default="projections", choices=("projections", "regions"),
                    help="one candidate per projection (its synapses plastic) or per region (every synapse onto it)")
    lo.add_argument("--holdout", type=int, help="probes held out of the fits to rank the candidates (default m // 4)")
    lo.add_argument("--alpha", type=float, default=0.01,
                    help="with noise: a candidate matches if its chi-square p-values are >= alpha (default 0.01)")
    lo.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the LM starts (default 0)")
    _add_solver(lo)
    _add_constraints(lo)
    lo.add_argument("--out", help="output .nc (netCDF) or .zarr (an existing file is refused without --overwrite)")
    lo.add_argument("--overwrite", action="store_true", help="replace an existing output file (never a sweep store)")
    lo.set_defaults(func=_cmd_localize)

    si = sub.add_parser("simulate", help=_cmd_simulate.__doc__, description=_cmd_simulate.__doc__)
    si.add_argument("circuit", help=_CIRCUIT_HELP)
    si.add_argument("--weights", required=True, help="W.nc: one variable per projection (as localize --weights)")
    si.add_argument("--probes", required=True, help="P.nc: a 'probes' variable (probe, input) or (probe, time, input)")
    si.add_argument("--regions", help="comma-separated non-input regions to record (default: all of them)")
    si.add_argument("--out", required=True, help="output R.nc (refused if it exists, without --overwrite)")
    si.add_argument("--overwrite", action="store_true", help="replace an existing output file (never a sweep store)")
    si.set_defaults(func=_cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurosubset`` console script."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # the commands say it in their own one line (_warn_non_finite)
            warnings.simplefilter("ignore", NonFiniteOutputWarning)
            args.func(args)
    except (NeurosubsetError, OSError) as exc:  # the user's to fix; anything else is a bug: its traceback shows
        message = exc if not isinstance(exc, OSError) or not exc.filename else f"{exc.strerror}: {exc.filename!r}"
        print(f"neurosubset {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"neurosubset {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
