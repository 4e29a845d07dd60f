"""The Post-processing part of the job monitor: the four FSC curves with the 0.143 line, and the
Guinier plot (original / MTF-corrected / weighted / sharpened, with the fitted line of the
automatic B-factor), read from the job's ``postprocess.star`` once it exists.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from processing.errors import InputError

from ..context import html_pane
from ..plots import fsc_data, fsc_figure, style_figure
from ..postprocess_result import (
    PostprocessStar,
    guinier_fit_line,
    guinier_lines,
    postprocess_fsc_curves,
    read_postprocess_star,
)
from .frame import card

__all__ = ["guinier_figure", "guinier_data", "fit_data", "PostprocessView", "view_for"]


def guinier_figure(*, height: int = 300, name: str = "guinier"):
    """A Guinier figure (ln amplitude vs 1/d² in Å⁻²) and its two sources: the curves
    (xs, ys, label, colour) and the fitted line (x, y)."""
    source = ColumnDataSource({"xs": [], "ys": [], "label": [], "colour": []}, name=f"{name}_source")
    fit_source = ColumnDataSource({"x": [], "y": []}, name=f"{name}_fit_source")
    fig = figure(title="Guinier plot", height=height, sizing_mode="stretch_width", name=name,
                 tools="pan,wheel_zoom,box_zoom,reset,save", x_axis_label="1/resolution² (Å⁻²)",
                 y_axis_label="ln(amplitude)")
    style_figure(fig)
    fig.multi_line("xs", "ys", source=source, line_color="colour", line_width=2, legend_field="label")
    fig.line("x", "y", source=fit_source, line_dash="dashed", line_color="#d9822b", line_width=1.5,
             legend_label="fitted line (auto B)")
    fig.legend.label_text_font_size = "10px"
    fig.legend.location = "top_right"
    fig.legend.background_fill_alpha = 0.6
    return fig, source, fit_source


def guinier_data(pp: PostprocessStar) -> dict:
    """Source data of :func:`guinier_figure`'s curves."""
    lines = guinier_lines(pp)
    return {"xs": [x.tolist() for _, x, _, _ in lines], "ys": [y.tolist() for _, _, y, _ in lines],
            "label": [label for label, _, _, _ in lines], "colour": [c for _, _, _, c in lines]}


def fit_data(pp: PostprocessStar) -> dict:
    """Source data of the fitted line (empty without an automatic B-factor)."""
    line = guinier_fit_line(pp)
    return {"x": [], "y": []} if line is None else {"x": line[0].tolist(), "y": line[1].tolist()}


class PostprocessView:
    """FSC and Guinier cards of one Post-processing job.

    Parameters
    ----------
    read
        Reads ``postprocess.star`` (through the watcher's cache), e.g.
        ``lambda p: watcher.read(p, read_postprocess_star)``.
    job_dir
        The job directory.
    """

    def __init__(self, read: Callable[[Path], PostprocessStar], job_dir: Path) -> None:
        self._read = read
        self._path = Path(job_dir) / "postprocess.star"
        self.fsc_fig, self.fsc_source = fsc_figure("Post-processing FSC", name="postprocess_fsc",
                                                   hover_label="curve", height=320)
        self.guinier_fig, self.guinier_source, self.fit_source = guinier_figure(height=320)
        note = '<div class="tomo-note">No postprocess.star yet.</div>'
        self.fsc_card = card(html_pane(note), title="FSC")
        self.guinier_card = card(html_pane(note), title="Guinier plot")
        self.star: PostprocessStar | None = None
        column = dict(sizing_mode="stretch_width", margin=0, min_width=320, styles={"flex": "1 1 440px"})
        self.parts = [pn.FlexBox(pn.Column(self.fsc_card, **column), pn.Column(self.guinier_card, **column),
                                 flex_wrap="wrap", sizing_mode="stretch_width", margin=0)]
        self.refresh()

    def refresh(self, *events) -> None:
        """Read ``postprocess.star`` if it exists and update both figures in place."""
        try:
            pp = self._read(self._path)
        except (FileNotFoundError, OSError, InputError, ValueError, KeyError):
            return
        self.star = pp
        curves = postprocess_fsc_curves(pp)
        self.fsc_source.data = fsc_data([(label, c, r) for label, c, r, _ in curves],
                                        colours=[colour for *_, colour in curves])
        self.guinier_source.data = guinier_data(pp)
        self.fit_source.data = fit_data(pp)
        for box, fig in ((self.fsc_card, self.fsc_fig), (self.guinier_card, self.guinier_fig)):
            if not isinstance(box.objects[-1], pn.pane.Bokeh):
                box.objects = [box.objects[0], pn.pane.Bokeh(fig, sizing_mode="stretch_width")]


def view_for(watcher, job_dir: Path) -> PostprocessView:
    """The view of a job the session's watcher follows."""
    return PostprocessView(lambda p: watcher.read(p, read_postprocess_star, kind="postprocess_star"), job_dir)
