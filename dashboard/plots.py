"""Bokeh figures of the job monitor and compare pages, updated in place (no flicker; a user's
zoom survives new data: the ranges are data ranges that stop following once touched).

* FSC: x is spatial frequency (1/Å) so that shells are evenly spaced, with tick labels in Å;
  dashed lines at 0.143 and 0.5; every iteration one curve, light to dark, newest strongest;
  hovering names the iteration and its resolution.
* Series vs iteration: resolution (Å), accuracy of rotations (°) and translations (Å, right
  axis), angular sampling (° step line).
* Orthoslices: XY, XZ, YZ sections of a map with sliders, grey scale with auto contrast.
"""
from __future__ import annotations

import numpy as np
from bokeh.models import (ColorBar, ColumnDataSource, CustomJSHover, CustomJSTickFormatter, HoverTool, Label, LinearAxis,
                          LinearColorMapper, Range1d, Span)
from bokeh.plotting import figure

from .readers import FscCurve, RefineIteration
from .style import ACCENT, HALF_COLOURS, class_colours, iteration_colours

__all__ = ["class_figures", "class_data", "angular_figure", "angular_data", "histogram_figure", "histogram_data", "particles_3d_figure",
           "projection_callback", "project_points", "tomogram_data", "fsc_figure", "fsc_data", "series_figures", "series_data", "slice_figure", "slice_data",
           "angstrom_ticks", "style_figure"]

_ANGSTROM_TICKS_JS = """
    if (tick <= 0) return '∞';
    const a = 1 / tick;
    return (a >= 100 ? a.toFixed(0) : a >= 10 ? a.toFixed(1) : a.toFixed(2)) + ' Å';
"""


def angstrom_ticks() -> CustomJSTickFormatter:
    """Tick labels of a 1/Å axis, in Å (a new model per figure: models belong to one document)."""
    return CustomJSTickFormatter(code=_ANGSTROM_TICKS_JS)

_TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def style_figure(fig) -> None:
    fig.toolbar.logo = None
    fig.toolbar.autohide = True
    fig.title.text_font_size = "13px"
    fig.title.text_color = "#323f4b"
    fig.outline_line_color = None
    fig.grid.grid_line_color = "#eef2f6"
    fig.axis.axis_line_color = "#9aa5b1"
    fig.axis.major_tick_line_color = "#9aa5b1"
    fig.axis.minor_tick_line_color = None
    fig.axis.axis_label_text_font_style = "normal"
    fig.axis.axis_label_text_color = "#52606d"
    fig.background_fill_color = "#ffffff"
    fig.border_fill_color = "#ffffff"
    fig.min_border_left = 50
    if fig.xaxis and fig.xaxis[0].axis_label == "iteration":
        fig.xaxis[0].ticker.min_interval = 1


def fsc_figure(title: str = "Gold-standard FSC (every iteration)", *, name: str = "fsc", height: int = 340,
               hover_label: str = "iteration"):
    """An FSC figure and its source (one row per curve: xs, ys, label, resolution, colour, width,
    alpha, and the curve's 0.143 crossing cross_x, cross_y); a legend names the curves, hovering
    a curve gives its FSC and resolution under the cursor, a diamond marks each 0.143 crossing."""
    source = ColumnDataSource({"xs": [], "ys": [], "label": [], "resolution": [], "colour": [], "width": [],
                               "alpha": [], "cross_x": [], "cross_y": []}, name=f"{name}_source")
    fig = figure(title=title, height=height, sizing_mode="stretch_width", tools=_TOOLS, name=name,
                 x_axis_label="resolution (Å)", y_axis_label="FSC", y_range=Range1d(-0.05, 1.05))
    style_figure(fig)
    fig.xaxis.formatter = angstrom_ticks()
    for value, text in ((0.143, "0.143"), (0.5, "0.5")):
        fig.add_layout(Span(location=value, dimension="width", line_dash="dashed", line_color="#9aa5b1",
                            line_width=1))
        fig.add_layout(Label(x=2, y=value, x_units="screen", text=text, text_font_size="10px",
                             text_color="#7b8794", y_offset=2))
    fig.add_layout(Span(location=0, dimension="width", line_color="#cbd2d9", line_width=1))
    renderer = fig.multi_line("xs", "ys", source=source, line_color="colour", line_width="width",
                              line_alpha="alpha", hover_line_width=4, hover_line_color="#d9822b",
                              legend_field="label")
    fig.scatter("cross_x", "cross_y", source=source, marker="diamond", size=9, color="colour",
                line_color="#1f2933", line_width=0.5)
    fig.legend.label_text_font_size = "10px"
    fig.legend.spacing = 0
    fig.legend.padding = 4
    fig.legend.background_fill_alpha = 0.6
    fig.legend.location = "top_right"
    in_angstrom = CustomJSHover(code="return value > 0 ? (1 / value).toFixed(1) + ' Å' : '∞'")
    fig.add_tools(HoverTool(renderers=[renderer], tooltips=[(hover_label, "@label"), ("FSC", "$y{0.000}"),
                                                            ("at", "$x{custom}"),
                                                            ("resolution", "@resolution{0.0} Å")],
                            formatters={"$x": in_angstrom}, line_policy="nearest"))
    return fig, source


def fsc_data(curves: list[tuple[str, FscCurve, float | None]], colours: list[str] | None = None) -> dict:
    """Source data of an FSC figure: ``(label, curve, resolution in Å)`` per curve, oldest first;
    default colours light -> dark, the newest drawn strongest. ``resolution`` is what the hover
    names; the marker sits where the curve crosses 0.143 (none if it never does)."""
    n = len(curves)
    colours = colours or iteration_colours(n)
    widths = [1.2] * n
    alphas = [0.75] * n
    if n:
        widths[-1], alphas[-1] = 3.0, 1.0
    xs, ys, cross_x, cross_y = [], [], [], []
    for _, curve, _ in curves:
        f, c = np.asarray(curve.frequency), np.asarray(curve.fsc)
        keep = f > 0
        xs.append(f[keep].tolist())
        ys.append(c[keep].tolist())
        crossing = curve.resolution_at(0.143)
        cross_x.append(1.0 / crossing if crossing else float("nan"))
        cross_y.append(0.143 if crossing else float("nan"))
    return {"xs": xs, "ys": ys, "label": [c[0] for c in curves],
            "resolution": [float(c[2]) if c[2] is not None else float("nan") for c in curves],
            "colour": colours[:n], "width": widths, "alpha": alphas, "cross_x": cross_x, "cross_y": cross_y}


def series_figures(*, height: int = 210):
    """Resolution, accuracy and sampling vs iteration: ``(figures dict, source)``."""
    source = ColumnDataSource({"iteration": [], "resolution": [], "acc_rot": [], "acc_trans": [], "sampling": []},
                              name="series_source")
    res = figure(title="Resolution vs iteration", height=height, sizing_mode="stretch_width", tools=_TOOLS,
                 x_axis_label="iteration", y_axis_label="resolution (Å)", name="resolution")
    style_figure(res)
    res.line("iteration", "resolution", source=source, line_color=ACCENT, line_width=2)
    res.scatter("iteration", "resolution", source=source, size=6, color=ACCENT)
    res.add_tools(HoverTool(tooltips=[("iteration", "@iteration"), ("resolution", "@resolution{0.0} Å")], mode="vline"))

    acc = figure(title="Accuracy: rotations (°) and translations (Å)", height=height, sizing_mode="stretch_width",
                 tools=_TOOLS, x_axis_label="iteration", y_axis_label="rotations (°)", name="accuracy")
    style_figure(acc)
    acc.extra_y_ranges = {"trans": Range1d(0, 1)}
    acc.add_layout(LinearAxis(y_range_name="trans", axis_label="translations (Å)",
                              axis_label_text_color=HALF_COLOURS["half2"]), "right")
    acc.line("iteration", "acc_rot", source=source, line_color=ACCENT, line_width=2, legend_label="rotations (°)")
    acc.scatter("iteration", "acc_rot", source=source, size=6, color=ACCENT)
    acc.line("iteration", "acc_trans", source=source, line_color=HALF_COLOURS["half2"], line_width=2,
             y_range_name="trans", legend_label="translations (Å)")
    acc.scatter("iteration", "acc_trans", source=source, size=6, color=HALF_COLOURS["half2"], y_range_name="trans",
                marker="square")
    acc.legend.location = "top_right"
    acc.legend.label_text_font_size = "11px"
    acc.legend.background_fill_alpha = 0.7
    acc.add_tools(HoverTool(tooltips=[("iteration", "@iteration"), ("rotations", "@acc_rot{0.00}°"),
                                      ("translations", "@acc_trans{0.00} Å")], mode="vline"))

    samp = figure(title="Angular sampling vs iteration", height=height, sizing_mode="stretch_width", tools=_TOOLS,
                  x_axis_label="iteration", y_axis_label="angular step (°)", name="sampling")
    style_figure(samp)
    samp.step("iteration", "sampling", source=source, mode="after", line_color="#2e7d32", line_width=2)
    samp.scatter("iteration", "sampling", source=source, size=5, color="#2e7d32")
    samp.add_tools(HoverTool(tooltips=[("iteration", "@iteration"), ("angular step", "@sampling{0.00}°")], mode="vline"))
    return {"resolution": res, "accuracy": acc, "sampling": samp}, source


def _clean(value: float | None) -> float:
    if value is None or not np.isfinite(value) or value >= 999:
        return float("nan")
    return float(value)


def series_data(iterations: list[RefineIteration]) -> dict:
    return {
        "iteration": [it.iteration for it in iterations],
        "resolution": [_clean(it.resolution) for it in iterations],
        "acc_rot": [_clean(it.accuracy_rotations) for it in iterations],
        "acc_trans": [_clean(it.accuracy_translations) for it in iterations],
        "sampling": [_clean(it.angular_step) for it in iterations],
    }


def class_figures(*, height: int = 260):
    """Per class of a classification, vs iteration: its occupancy (% of the particles) and its
    estimated resolution (Å), one line per class in the class's colour: ``(figures, sources)``
    keyed ``occupancy`` and ``resolution``; each source has one row per class (xs, ys, label,
    colour)."""
    figures, sources = {}, {}
    for key, title, axis, unit in (("occupancy", "Class occupancy (% of the particles)", "particles (%)", "%"),
                                   ("resolution", "Resolution of each class (Å)", "resolution (Å)", " Å")):
        source = ColumnDataSource({"xs": [], "ys": [], "label": [], "colour": []}, name=f"class_{key}_source")
        fig = figure(title=title, height=height, sizing_mode="stretch_width", tools=_TOOLS, name=f"class_{key}",
                     x_axis_label="iteration", y_axis_label=axis)
        style_figure(fig)
        lines = fig.multi_line("xs", "ys", source=source, line_color="colour", line_width=2.5, legend_field="label",
                               hover_line_width=4)
        fig.legend.label_text_font_size = "10px"
        fig.legend.location = "top_right" if key == "resolution" else "top_left"
        fig.legend.background_fill_alpha = 0.6
        fig.add_tools(HoverTool(renderers=[lines], tooltips=[("", "@label"), ("iteration", "$x{0}"),
                                                             (key, f"$y{{0.0}}{unit}")], line_policy="nearest"))
        figures[key], sources[key] = fig, source
    return figures, sources


def class_data(history: list) -> dict[str, dict]:
    """Source data of :func:`class_figures` from a classification's iterations
    (:class:`~dashboard.class3d_results.ClassIteration`, in order): per class, its occupancy
    (%) and resolution (Å; not yet estimated: a gap) at each iteration."""
    n = max((it.n_classes for it in history), default=0)
    iterations = [it.iteration for it in history]
    colours = class_colours(n)
    out = {}
    for key in ("occupancy", "resolution"):
        ys = []
        for k in range(n):
            values = []
            for it in history:
                if k >= it.n_classes:
                    values.append(float("nan"))
                elif key == "occupancy":
                    values.append(100.0 * float(it.distribution[k]))
                else:
                    values.append(_clean(float(it.class_resolution[k])))
            ys.append(values)
        out[key] = {"xs": [list(iterations) for _ in range(n)], "ys": ys,
                    "label": [f"class {k + 1}" for k in range(n)], "colour": colours}
    return out


def fit_translation_axis(figures: dict, data: dict) -> None:
    """The right-hand axis of the accuracy plot follows the translations."""
    values = [v for v in data["acc_trans"] if np.isfinite(v)]
    rng = figures["accuracy"].extra_y_ranges["trans"]
    top = max(values) * 1.1 if values else 1.0
    rng.start, rng.end = 0, top


def slice_figure(title: str, *, size: int = 190, name: str = ""):
    """One section image: ``(figure, source, colour mapper)``."""
    mapper = LinearColorMapper(palette="Greys256", low=0, high=1)
    source = ColumnDataSource({"image": [], "dw": [], "dh": [], "bar_x0": [], "bar_x1": [], "bar_y": [], "bar_label": []},
                              name=f"{name}_source" if name else None)
    fig = figure(title=title, width=size, height=size, tools="pan,wheel_zoom,reset", match_aspect=True,
                 x_range=Range1d(0, 1), y_range=Range1d(0, 1), name=name or None)
    style_figure(fig)
    fig.min_border_left = 4
    fig.axis.visible = False
    fig.grid.visible = False
    fig.image(image="image", x=0, y=0, dw="dw", dh="dh", source=source, color_mapper=mapper)
    # a scale bar in Å along the bottom left (set by slice_data from the pixel size)
    fig.segment(x0="bar_x0", y0="bar_y", x1="bar_x1", y1="bar_y", source=source, line_color="#ffd166", line_width=3)
    fig.text(x="bar_x0", y="bar_y", text="bar_label", source=source, text_color="#ffd166", text_font_size="10px",
             y_offset=-4, text_baseline="bottom")
    return fig, source, mapper


def scale_bar_length(width_angstrom: float) -> float:
    """A round length (Å) about a quarter of ``width_angstrom``: 1, 2 or 5 times a power of ten."""
    target = max(width_angstrom / 4.0, 1e-6)
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1.0, 2.0, 5.0) if m * power <= target))


def slice_data(section: np.ndarray, pixel_size: float | None = None) -> dict:
    """Source data of a section image; with ``pixel_size`` (Å) a scale bar of a round length."""
    rows, cols = section.shape
    data = {"image": [np.asarray(section, dtype=np.float32)], "dw": [cols], "dh": [rows],
            "bar_x0": [float("nan")], "bar_x1": [float("nan")], "bar_y": [float("nan")], "bar_label": [""]}
    if pixel_size and pixel_size > 0:
        length = scale_bar_length(cols * pixel_size)
        data.update(bar_x0=[0.06 * cols], bar_x1=[0.06 * cols + length / pixel_size], bar_y=[0.07 * rows],
                    bar_label=[f"{length:g} Å"])
    return data


def contrast(vol: np.ndarray, clip: float = 1.0) -> tuple[float, float]:
    """Auto contrast of a map: the ``clip`` and ``100 - clip / 2`` percentiles (of a subsample);
    a larger ``clip`` saturates more voxels, for more contrast."""
    flat = np.asarray(vol, dtype=np.float32).ravel()
    if flat.size > 200_000:
        flat = flat[:: flat.size // 200_000]
    lo, hi = np.percentile(flat, [clip, 100.0 - clip / 2.0])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


# ---- particles of one refine iteration ---------------------------------------------------------

#: bins of the viewing-direction map: rot in 5° steps, cos(tilt) in 36 equal-area bands
_ROT_BINS, _TILT_BINS = 72, 36


def angular_figure(*, height: int = 260, name: str = "angles"):
    """Viewing directions as an equal-area map (Lambert cylindrical: x = rot, y = cos tilt), the
    number of particles per cell as grey levels (RELION users draw its .bild for this)."""
    # empty cells (count 0, below low) are white
    mapper = LinearColorMapper(palette="Viridis256", low=0.5, high=1, low_color="#ffffff")
    source = ColumnDataSource({"image": [], "count_max": []}, name=f"{name}_source")
    fig = figure(title="Viewing directions (particles per direction)", height=height, sizing_mode="stretch_width",
                 tools="pan,wheel_zoom,reset,save,hover", x_range=Range1d(-180, 180), y_range=Range1d(-1, 1),
                 x_axis_label="rot (°)", y_axis_label="tilt (°)", name=name)
    style_figure(fig)
    fig.image(image="image", x=-180, y=-1, dw=360, dh=2, source=source, color_mapper=mapper)
    fig.yaxis.ticker = [-1.0, -0.5, 0.0, 0.5, 1.0]
    fig.yaxis.major_label_overrides = {-1.0: "180", -0.5: "120", 0.0: "90", 0.5: "60", 1.0: "0"}
    fig.hover.tooltips = [("rot", "$x{0}°"), ("particles", "@image")]
    return fig, source, mapper


def angular_data(rot: np.ndarray, tilt: np.ndarray) -> dict:
    """Counts per (cos tilt, rot) cell; rot wrapped to [-180, 180)."""
    rot = (np.asarray(rot, float) + 180.0) % 360.0 - 180.0
    y = np.cos(np.radians(np.asarray(tilt, float)))
    counts, _, _ = np.histogram2d(y, rot, bins=(_TILT_BINS, _ROT_BINS), range=((-1, 1), (-180, 180)))
    return {"image": [counts.astype(np.float32)], "count_max": [float(counts.max()) if counts.size else 0.0]}


def histogram_figure(title: str, x_label: str, *, name: str, height: int = 220):
    """Bars of one histogram: ``(figure, source)`` with columns left, right, count."""
    source = ColumnDataSource({"left": [], "right": [], "count": []}, name=f"{name}_source")
    fig = figure(title=title, height=height, sizing_mode="stretch_width", tools="pan,wheel_zoom,reset,save",
                 x_axis_label=x_label, y_axis_label="particles", name=name)
    style_figure(fig)
    bars = fig.quad(left="left", right="right", bottom=0, top="count", source=source, fill_color=ACCENT,
                    line_color="#ffffff", fill_alpha=0.85)
    fig.add_tools(HoverTool(renderers=[bars], tooltips=[("from", "@left{0.000}"), ("to", "@right{0.000}"),
                                                        ("particles", "@count")]))
    return fig, source


def histogram_data(values: np.ndarray, *, bins: int = 30, value_range: tuple[float, float] | None = None) -> dict:
    """Histogram bars of the finite values (an integer-valued column gets one bar per value up to
    ``bins`` values)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"left": [], "right": [], "count": []}
    if value_range is None and np.all(v == np.round(v)) and v.max() - v.min() < bins:
        edges = np.arange(v.min() - 0.5, v.max() + 1.5)
    else:
        edges = np.histogram_bin_edges(v, bins=bins, range=value_range)
    counts, edges = np.histogram(v, bins=edges)
    return {"left": edges[:-1].tolist(), "right": edges[1:].tolist(), "count": counts.tolist()}


#: the rotation of the 3D particle view, the same in Python (first drawing) and in the browser
#: (sliders): azimuth about z, then the view tilted to the elevation (90 looks straight down z).
_PROJECTION_JS = """
const az = azimuth.value * Math.PI / 180, el = (90 - elevation.value) * Math.PI / 180;
function project(x, y, z) {
  const xa = x * Math.cos(az) - y * Math.sin(az), ya = x * Math.sin(az) + y * Math.cos(az);
  return [xa, ya * Math.cos(el) + z * Math.sin(el), z * Math.cos(el) - ya * Math.sin(el)];
}
const d = points.data, n = d.x.length, depth = new Array(n), sx = new Array(n), sy = new Array(n);
for (let i = 0; i < n; i++) { const p = project(d.x[i], d.y[i], d.z[i]); sx[i] = p[0]; sy[i] = p[1]; depth[i] = p[2]; }
const order = [...Array(n).keys()].sort((a, b) => depth[a] - depth[b]);
let lo = Infinity, hi = -Infinity;
for (const v of depth) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
const out = {};
for (const k of Object.keys(d)) out[k] = order.map(i => d[k][i]);
out.px = order.map(i => sx[i]); out.py = order.map(i => sy[i]); out.depth = order.map(i => depth[i]);
out.size = order.map(i => 5 + 8 * (depth[i] - lo) / Math.max(hi - lo, 1e-9));
points.data = out;
const e = edges.data, m = e.x0.length, ex0 = [], ey0 = [], ex1 = [], ey1 = [];
for (let i = 0; i < m; i++) { const a = project(e.x0[i], e.y0[i], e.z0[i]), b = project(e.x1[i], e.y1[i], e.z1[i]);
  ex0.push(a[0]); ey0.push(a[1]); ex1.push(b[0]); ey1.push(b[1]); }
edges.data = {...e, px0: ex0, py0: ey0, px1: ex1, py1: ey1};
"""

_POINT_KEYS = ("x", "y", "z", "value", "px", "py", "depth", "size")
_EDGE_KEYS = ("x0", "y0", "z0", "x1", "y1", "z1", "px0", "py0", "px1", "py1")


def project_points(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, azimuth: float,
                   elevation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthographic view of points in 3D: turned by ``azimuth`` (degrees) about z, then seen from
    ``elevation`` (degrees; 90 looks straight down z, 0 along the xy plane).

    Returns
    -------
    (screen x, screen y, depth), each ``(n,)`` in the input's units; a larger depth is nearer.
    """
    az, el = np.radians(azimuth), np.radians(90.0 - elevation)
    x, y, z = (np.asarray(a, float) for a in (x, y, z))
    xa, ya = x * np.cos(az) - y * np.sin(az), x * np.sin(az) + y * np.cos(az)
    return xa, ya * np.cos(el) + z * np.sin(el), z * np.cos(el) - ya * np.sin(el)


def particles_3d_figure(*, name: str = "tomogram", height: int = 340):
    """One tomogram's particles in 3D (Å) in their bounding box, coloured by a value, the nearer
    ones larger and drawn on top; turned in the browser by :func:`projection_callback`.

    Returns ``(figure, points source, box-edges source, colour mapper)``.
    """
    mapper = LinearColorMapper(palette="Viridis256", low=0, high=1)
    source = ColumnDataSource({k: [] for k in _POINT_KEYS}, name=f"{name}_source")
    edges = ColumnDataSource({k: [] for k in _EDGE_KEYS}, name=f"{name}_edges")
    fig = figure(title="Particles in the tomogram, in 3D (nearer = larger)", height=height,
                 sizing_mode="stretch_width", tools="pan,wheel_zoom,box_zoom,reset,save", match_aspect=True,
                 name=name)
    style_figure(fig)
    fig.axis.visible = False
    fig.grid.visible = False
    fig.segment(x0="px0", y0="py0", x1="px1", y1="py1", source=edges, line_color="#9fb3c8", line_width=1)
    points = fig.scatter("px", "py", size="size", source=source, fill_color={"field": "value", "transform": mapper},
                         line_color="#323f4b", line_width=0.3, fill_alpha=0.9)
    fig.add_tools(HoverTool(renderers=[points], tooltips=[("x, y, z", "@x{0}, @y{0}, @z{0} Å"),
                                                         ("value", "@value{0.000}")]))
    fig.add_layout(ColorBar(color_mapper=mapper, width=8, title=""), "right")
    return fig, source, edges, mapper


def projection_callback(source: ColumnDataSource, edges: ColumnDataSource) -> tuple[str, dict]:
    """``(code, args)`` of the browser-side turn: re-projects ``source`` and ``edges`` with
    :func:`project_points`'s formula; add the ``azimuth`` and ``elevation`` sliders to ``args``."""
    return _PROJECTION_JS, {"points": source, "edges": edges}


def _box_edges(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 12 edges of the box from corner ``lo`` to ``hi`` (corners differing in one axis)."""
    corners = [np.where([(c >> k) & 1 for k in range(3)], hi, lo) for c in range(8)]
    return [(corners[a], corners[b]) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]


def tomogram_data(x: np.ndarray, y: np.ndarray, z: np.ndarray, value: np.ndarray, *,
                  azimuth: float = 30.0, elevation: float = 35.0) -> tuple[dict, dict]:
    """Source data of :func:`particles_3d_figure` for one tomogram: ``(points, box edges)``.

    Positions (Å, ``(n,)`` each) are centred on the middle of their bounding box; points are
    ordered far to near (so the nearer are drawn on top), marker sizes 5-13 px from far to near;
    particles without a position (NaN) are left out.
    """
    x, y, z, value = (np.asarray(a, float) for a in (x, y, z, value))
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z, value = x[keep], y[keep], z[keep], value[keep]
    if not x.size:
        return {k: [] for k in _POINT_KEYS}, {k: [] for k in _EDGE_KEYS}
    lo, hi = np.array([x.min(), y.min(), z.min()]), np.array([x.max(), y.max(), z.max()])
    centre = (lo + hi) / 2.0
    x, y, z = x - centre[0], y - centre[1], z - centre[2]
    px, py, depth = project_points(x, y, z, azimuth=azimuth, elevation=elevation)
    order = np.argsort(depth, kind="stable")
    near = (depth - depth.min()) / max(float(np.ptp(depth)), 1e-9)
    points = {"x": x[order].tolist(), "y": y[order].tolist(), "z": z[order].tolist(), "value": value[order].tolist(),
              "px": px[order].tolist(), "py": py[order].tolist(), "depth": depth[order].tolist(),
              "size": (5.0 + 8.0 * near[order]).tolist()}
    box = _box_edges(lo - centre, hi - centre)
    starts, ends = np.array([a for a, _ in box]), np.array([b for _, b in box])
    (sx0, sy0, _), (sx1, sy1, _) = (project_points(*v.T, azimuth=azimuth, elevation=elevation) for v in (starts, ends))
    edges = {"x0": starts[:, 0].tolist(), "y0": starts[:, 1].tolist(), "z0": starts[:, 2].tolist(),
             "x1": ends[:, 0].tolist(), "y1": ends[:, 1].tolist(), "z1": ends[:, 2].tolist(),
             "px0": sx0.tolist(), "py0": sy0.tolist(), "px1": sx1.tolist(), "py1": sy1.tolist()}
    return points, edges
