"""Figures from Datasets: files written, and the content checked (labels with units, lines, bands, cells, masks)."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import PolyCollection, QuadMesh
from matplotlib.image import AxesImage

import neurosubset as ns
from neurosubset import cli
from neurosubset.circuit import Circuit, Projection, Region
from neurosubset.plot import allocation_masks, figures, mp_curves, mp_heatmap, mp_summary, save_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def two_inputs() -> Circuit:
    return Circuit((Region("A", 4, "input"), Region("B", 3, "input"), Region("O", 3, "output")),
                   (Projection("A", "O"), Projection("B", "O")), name="two_inputs")


@pytest.fixture(scope="module")
def swept() -> xr.Dataset:
    return ns.sweep(two_inputs(), budget=[6, 9], fractions=ns.simplex_grid(["A->O", "B->O"], step=0.5),
                    strategy=["spread-rows", "concentrated-rows"], m=[2, 3], trials=5, seed=0)


@pytest.fixture(scope="module")
def swept3() -> xr.Dataset:
    """Three fraction keys (region 'O' cannot be split, so a three-input circuit)."""
    c = Circuit((Region("A", 3, "input"), Region("B", 3, "input"), Region("C", 3, "input"),
                 Region("O", 2, "output")), (Projection("A", "O"), Projection("B", "O"), Projection("C", "O")),
                name="three_inputs")
    return ns.sweep(c, budget=[6], fractions=ns.simplex_grid(["A->O", "B->O", "C->O"], step=0.5),
                    strategy=["spread-rows"], m=[2], trials=3)


@pytest.fixture(scope="module")
def single() -> xr.Dataset:
    ff = ns.feedforward([6, 4, 3])
    return ns.match_probability(ff, ns.allocate(ff, 8, strategy="spread-rows", within=["W2"]), m=3, trials=12)


def _labels(ax) -> tuple[str, str]:
    return _flat(ax.get_xlabel()), _flat(ax.get_ylabel())


def _flat(text: str) -> str:
    """A label or title as one line (figures wrap long ones to fit)."""
    return " ".join(text.split())


def test_mp_curves_lines_bands_and_labels(swept):
    fig = mp_curves(swept)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2  # one panel per budget
    for ax, b in zip(axes, (6, 9)):
        assert f"M = {b}" in ax.get_title()
        assert _labels(ax)[0] == "fraction of the budget on A->O (1); B->O = 1 - A->O"  # every key named
        n_lines = 2 * 2  # strategies x m
        assert len(ax.get_lines()) == n_lines
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == n_lines
        for line in ax.get_lines():
            np.testing.assert_array_equal(line.get_xdata(), [0.0, 0.5, 1.0])
    assert _labels(axes[0])[1] == "match probability MP (1)"
    # the plotted values are the dataset's mp (spread-rows, m = 2, budget 6)
    line = axes[0].get_lines()[0]
    expected = swept["mp"].sel(budget=6, strategy="spread-rows", m=2)
    assert list(expected["A_to_O"].values) == [0.0, 0.5, 1.0]  # the points in simplex order
    np.testing.assert_array_equal(line.get_ydata(), expected.values)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(texts) == 4 + 4 and texts[4:] == [f"verdict {v}" for v in ("zero", "one", "positive", "unproven")]
    # verdict markers: every computed point of a line carries the marker of its certificate verdict
    markers = [c for c in axes[0].collections if not isinstance(c, PolyCollection)]
    assert sum(len(c.get_offsets()) for c in markers) == int((swept["status"].sel(budget=6) == 2).sum())
    verdicts = swept["verdict"].sel(budget=6).values.ravel()
    assert set(verdicts) <= {"zero", "one"}  # affine single layer: the rank theorem decides every point
    n_zero = int((verdicts == "zero").sum())
    down = [c for c in markers if _marker_of(c) == _marker_of_symbol("v")]
    assert sum(len(c.get_offsets()) for c in down) == n_zero > 0
    # the marked MP values: 0 under "zero", 1 under "one"
    for c in down:
        np.testing.assert_array_equal(np.asarray(c.get_offsets())[:, 1], 0.0)


def _marker_of(collection) -> bytes:
    return np.round(collection.get_paths()[0].vertices, 6).tobytes()


def _marker_of_symbol(symbol: str) -> bytes:
    from matplotlib.markers import MarkerStyle

    style = MarkerStyle(symbol)
    return np.round(style.get_path().transformed(style.get_transform()).vertices, 6).tobytes()


def test_m_axes_have_integer_ticks(swept):
    nokeys = ns.sweep(two_inputs(), budget=[6, 9], strategy=["spread-rows"], m=[2, 3, 5], trials=3)
    ax = [a for a in mp_curves(nokeys, x="m").axes if a.get_title()][0]
    assert ax.get_xlabel() == "number of probes m (1)"
    assert list(ax.get_xticks()) == [2, 3, 5]
    heat = [a for a in mp_heatmap(swept).axes if a.get_title()][0]
    assert list(heat.get_yticks()) == [2, 3]
    heat = [a for a in mp_heatmap(nokeys).axes if a.get_title()][0]
    assert list(heat.get_yticks()) == [2, 3, 5] and list(heat.get_xticks()) == [6, 9]


def test_mp_heatmap_cells(swept, swept3):
    fig = mp_heatmap(swept)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["spread-rows", "concentrated-rows"]
    assert _labels(axes[0]) == ("fraction of the budget on A->O (1)", "number of probes m (1)")
    assert "B->O = the rest of the budget" in _flat(fig.axes[-1].get_ylabel())  # the colour bar: the other key
    mesh = [c for c in axes[0].collections if isinstance(c, QuadMesh)][0]
    assert mesh.get_array().shape == (2, 3)  # m x fraction levels
    np.testing.assert_array_equal(np.asarray(mesh.get_array())[:, 2],
                                  swept["mp"].sel(budget=6, strategy="spread-rows", A_to_O=1.0, B_to_O=0.0))
    # verdict hatching: one hatched cell per "zero" (////) and "one" (....) point
    from matplotlib.patches import Rectangle

    hatched = [p for p in axes[0].patches if isinstance(p, Rectangle) and p.get_hatch()]
    verdicts = swept["verdict"].sel(budget=6, strategy="spread-rows").values
    assert sorted(p.get_hatch() for p in hatched) == sorted({"zero": "////", "one": "...."}[str(v)]
                                                           for v in verdicts.ravel())
    assert any("match probability" in ax.get_ylabel() for ax in fig.axes)  # the colour bar
    fig3 = mp_heatmap(swept3)
    ax3 = [ax for ax in fig3.axes if ax.get_title()][0]
    assert _labels(ax3) == ("fraction of the budget on A->O (1)", "fraction of the budget on B->O (1)")
    cells = np.ma.filled(np.asarray([c for c in ax3.collections if isinstance(c, QuadMesh)][0].get_array(), float),
                         np.nan)
    # 3x3 cells over (A, B); the simplex holds 6 of them (A + B <= 1), the other 3 are blank
    assert np.isfinite(cells).sum() == 6, cells


def test_allocation_masks_show_each_strategy(swept):
    fig = allocation_masks(swept, budget=9, fractions={"A->O": 1.0, "B->O": 0.0})
    axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(axes) == 2
    for ax, strat in zip(axes, ("spread-rows", "concentrated-rows")):
        img = ax.get_images()[0]
        assert isinstance(img, AxesImage)
        mat = np.asarray(img.get_array())
        assert mat.shape == (3, 7)  # O rows x (A, B) columns
        assert (mat == 2).sum() == 9  # the plastic synapses
        expected = swept["mask_A_to_O"].sel(budget=9, strategy=strat, A_to_O=1.0, B_to_O=0.0).values
        np.testing.assert_array_equal(mat[:, :4] == 2, expected)
        assert strat in ax.get_title()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"]
        assert _labels(ax) == ("presynaptic region (neurons)", "postsynaptic region (neurons)")


def test_mp_summary_histogram_tolerance_and_masks(single):
    fig = mp_summary(single)
    ax_h = fig.axes[0]
    assert ax_h.get_xscale() == "log"
    assert ax_h.get_xlabel().startswith("relative residual") and ax_h.get_ylabel() == "trials (count)"
    tol_lines = [ln for ln in ax_h.get_lines() if np.allclose(ln.get_xdata(), single["residual"].attrs["tolerance"])]
    assert len(tol_lines) == 1
    heights = sum(p.get_height() for p in ax_h.patches)
    assert heights == single.sizes["trial"]
    assert f"MP = {float(single['mp']):.3f}" in ax_h.get_title()
    mat = np.asarray(fig.axes[1].get_images()[0].get_array())
    assert (mat == 2).sum() == 8  # budget


def test_plot_allocation_without_a_result():
    c = two_inputs()
    alloc = ns.allocate(c, 5, strategy="concentrated-rows", within=["B->O"], seed=1)
    fig = ns.plot_allocation(c, alloc)
    mat = np.asarray(fig.axes[0].get_images()[0].get_array())
    assert mat.shape == (3, 7) and (mat == 2).sum() == 5
    np.testing.assert_array_equal(mat[:, 4:] == 2, alloc.masks["B->O"])  # B's columns come after A's 4
    assert (mat[:, :4] == 1).all()  # A->O: present, frozen
    with pytest.raises(ns.ParameterError, match="Circuit and an Allocation"):
        ns.plot_allocation(c, alloc.masks)


def test_ternary_plot_of_three_keys(swept3):
    from neurosubset.plot import mp_ternary

    fig = mp_ternary(swept3)
    ax = [a for a in fig.axes if a.name == "ternary"][0]
    points = np.concatenate([np.asarray(c.get_offsets()) for c in ax.collections])
    assert len(points) == int((swept3["status"] == 2).sum()) == 6  # every simplex point at step 0.5
    values = np.concatenate([np.asarray(c.get_array()) for c in ax.collections])
    np.testing.assert_array_equal(np.sort(values), np.sort(swept3["mp"].values.ravel()))
    assert (ax.get_tlabel(), ax.get_llabel(), ax.get_rlabel()) == ("A->O", "B->O", "C->O")
    assert set(figures(swept3)) == {"curves", "heatmap", "masks", "ternary"}
    with pytest.raises(ns.ParameterError, match="three fraction keys"):
        mp_ternary(ns.sweep(two_inputs(), budget=[6], fractions=ns.simplex_grid(["A->O", "B->O"], step=0.5),
                            strategy=["spread-rows"], m=[2], trials=2))


def test_paired_difference_plot(swept):
    from neurosubset.plot import plot_paired_difference

    diff = ns.paired_difference(swept, a={"strategy": "spread-rows"}, b={"strategy": "concentrated-rows"})
    fig = plot_paired_difference(diff.sel(budget=9))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "m (1)" and list(ax.get_xticks()) == [2, 3]
    lines = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]  # the data lines (not the error-bar caps)
    assert len(lines) == swept.sizes["point"]  # a series per fraction point
    got = np.sort(np.concatenate([ln.get_ydata() for ln in lines]))
    np.testing.assert_array_equal(got, np.sort(diff["mp_difference"].sel(budget=9).values.ravel()))


@pytest.mark.slow
def test_figures_and_files(swept, single, tmp_path):
    assert set(figures(swept)) == {"curves", "heatmap", "masks"}
    assert set(figures(single)) == {"mp"}
    paths = save_figures(swept, tmp_path / "sw")
    assert [p.name for p in paths] == ["sw_curves.png", "sw_heatmap.png", "sw_masks.png"]
    one = save_figures(single, tmp_path / "mp.png")
    assert one == [tmp_path / "mp.png"]
    for p in paths + one:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, (p, len(data))
    with pytest.raises(ValueError, match="needs a sweep Dataset"):
        mp_curves(single)


def test_cli_plot_of_an_mp_result(single, tmp_path, capsys):
    nc = tmp_path / "mp.nc"
    single.to_netcdf(nc, engine="h5netcdf")
    assert cli.main(["plot", str(nc), "--out", str(tmp_path / "mp.png")]) == 0
    assert (tmp_path / "mp.png").read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["plot", str(tmp_path / "missing.nc")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.nc" in err
