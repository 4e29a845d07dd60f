"""Orthoslices (XY, XZ, YZ) of two or three maps side by side, with one slice position for all.

The three planes are linked: each section shows where the other two cut it (section lines),
and a click on a section moves the other two planes to that point, in every map at once.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import numpy as np
import panel as pn
from bokeh.events import Tap
from bokeh.models import Span

from ..context import html_pane
from ..plots import contrast, slice_data, slice_figure
from ..readers import orthoslices
from ..style import HALF_COLOURS
from .choices import LatestChoice

__all__ = ["OrthosliceViewer"]

_PLANES = (("XY", "z"), ("XZ", "y"), ("YZ", "x"))
#: the axes along a section's columns and rows (see :func:`dashboard.readers.orthoslices`)
_IN_PLANE = {"XY": ("x", "y"), "XZ": ("x", "z"), "YZ": ("y", "z")}


class OrthosliceViewer:
    """Sections of the maps ``maps_for(choice) -> {label: path}``.

    Parameters
    ----------
    watcher
        Supplies cached volumes (:meth:`SessionWatcher.volume`).
    labels
        Map labels shown side by side (``half1``, ``half2``; or ``half1``, ``half2``, ``merged``).
    maps_for
        Paths of the maps of one choice (an iteration, or ``None`` for a job with one set).
    choice_label
        Label of the choice selector (``Iteration``); ``None``: no selector.
    colours
        Title colour of each map label (default: the half-map colours).
    """

    def __init__(self, watcher, labels: list[str], maps_for: Callable[[str | None], dict[str, Path]], *,
                 choice_label: str | None = None, size: int = 220, colours: dict[str, str] | None = None):
        self.watcher = watcher
        self.labels = labels
        self.size = size
        self.maps_for = maps_for
        self.loaded: tuple | None = None
        self.shape: tuple[int, int, int] | None = None
        self.volumes: dict[str, np.ndarray] = {}
        self.pixel_sizes: dict[str, float] = {}
        self.contrast = pn.widgets.FloatSlider(name="Contrast (% of voxels saturated)", start=0.0, end=10.0, step=0.5,
                                               value=1.0, width=220, tags=["orthoslice-contrast"])
        self.contrast.param.watch(lambda e: self._draw(), "value_throttled")
        self.choice = pn.widgets.Select(label=choice_label or "", options=[], width=160,
                                        visible=choice_label is not None, tags=["orthoslice-choice"])
        self.latest = LatestChoice(self.choice, self.refresh)
        self.sliders = {axis: pn.widgets.IntSlider(label=f"{plane} section: {axis}", start=0, end=1, value=0,
                                                   width=size * len(labels),
                                                   tags=[f"slider:{axis}"])
                        for plane, axis in _PLANES}
        for axis, slider in self.sliders.items():
            slider.param.watch(lambda e: self._draw(), "value_throttled")
        self.section_lines = pn.widgets.Checkbox(name="Section lines", value=True, width=120, align="end",
                                                 tags=["orthoslice-lines"])
        self.section_lines.param.watch(lambda e: self._place_lines(), "value")
        self.figures: dict[tuple[str, str], tuple] = {}
        #: per section figure, the lines where the other two planes cut it: (column line, row line)
        self.lines: dict[tuple[str, str], tuple[Span, Span]] = {}
        self.panes: dict[tuple[str, str], pn.pane.Bokeh] = {}
        columns = []
        for plane, axis in _PLANES:
            row = []
            for label in labels:
                fig, source, mapper = slice_figure(f"{label} {plane}", size=size, name=f"slice_{label}_{plane}")
                fig.title.text_color = (colours or HALF_COLOURS).get(label, "#323f4b")
                self.figures[(label, plane)] = (fig, source, mapper)
                column_line = Span(location=0, dimension="height", line_color="#ffd166", line_alpha=0.6, line_width=1,
                                   name=f"line_{label}_{plane}_column")
                row_line = Span(location=0, dimension="width", line_color="#ffd166", line_alpha=0.6, line_width=1,
                                name=f"line_{label}_{plane}_row")
                fig.add_layout(column_line)
                fig.add_layout(row_line)
                self.lines[(label, plane)] = (column_line, row_line)
                fig.on_event(Tap, lambda event, plane=plane: self.go_to(plane, event.x, event.y))
                pane = pn.pane.Bokeh(fig, margin=(0, 2))
                self.panes[(label, plane)] = pane
                row.append(pane)
            width = (size + 4) * len(labels)
            images = pn.Row(*row, margin=0, width=width, height=size + 4) if len(row) > 1 else row[0]
            columns.append(pn.Column(images, self.sliders[axis],
                                     margin=(0, 12, 0, 0), width=width + 10))
        self.status = html_pane('<div class="tomo-note">no maps yet</div>')
        self.view = pn.Column(pn.Row(self.choice, self.contrast, self.section_lines, self.status, margin=0),
                              pn.FlexBox(*columns, flex_wrap="wrap", margin=0, sizing_mode="stretch_width"),
                              sizing_mode="stretch_width", margin=0, css_classes=["tomo-orthoslices"])

    # ---- choices -------------------------------------------------------------------------------

    def set_choices(self, options: list[str]) -> None:
        """Offer these choices (e.g. iterations, newest last); follow the newest unless the user
        picked another one."""
        self.latest.set_options(options)
        self.refresh()

    # ---- the linked slice position ---------------------------------------------------------------

    @property
    def position(self) -> dict[str, int]:
        """The slice position (voxel indices) on each axis: ``{"x": .., "y": .., "z": ..}``."""
        return {axis: int(slider.value) for axis, slider in self.sliders.items()}

    def go_to(self, plane: str, column: float | None, row: float | None) -> None:
        """Move the two planes crossing ``plane`` through the point (``column``, ``row``) of its
        section (data coordinates: voxels from the section's corner), in every map."""
        if self.shape is None or column is None or row is None:
            return
        col_axis, row_axis = _IN_PLANE[plane]
        for axis, value in ((col_axis, column), (row_axis, row)):
            slider = self.sliders[axis]
            slider.value = int(np.clip(np.floor(value), slider.start, slider.end))
        self._draw()

    def _place_lines(self) -> None:
        position = self.position
        for (label, plane), (column_line, row_line) in self.lines.items():
            col_axis, row_axis = _IN_PLANE[plane]
            # through the middle of the voxel the other plane cuts
            column_line.location = position[col_axis] + 0.5
            row_line.location = position[row_axis] + 0.5
            column_line.visible = row_line.visible = bool(self.section_lines.value)

    # ---- drawing -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """(Re)load the maps of the current choice if they changed on disk."""
        paths = self.maps_for(self.choice.value if self.choice.visible else None)
        stamps = []
        for label in self.labels:
            path = paths.get(label)
            try:
                stamps.append((str(path), path.stat().st_mtime_ns) if path else None)
            except OSError:
                stamps.append(None)
        key = (self.choice.value, tuple(stamps))
        if key == self.loaded:
            return
        volumes = {}
        for label in self.labels:
            path = paths.get(label)
            if path is None or not path.is_file():
                continue
            try:
                volumes[label], self.pixel_sizes[label] = self.watcher.volume(path)
            except Exception:
                continue
        if not volumes:
            self.status.object = '<div class="tomo-note">no maps yet</div>'
            return
        self.loaded = key
        self.volumes = volumes
        shape = next(iter(volumes.values())).shape
        if shape != self.shape:
            self.shape = shape
            for (plane, axis), n in zip(_PLANES, shape):
                slider = self.sliders[axis]
                slider.param.update(start=0, end=max(n - 1, 1), value=n // 2)
        names = ", ".join(f"{html.escape(l)}: {html.escape(paths[l].name)}" for l in self.labels if l in volumes)
        self.status.object = f'<div class="tomo-note">{names} · {shape[2]}×{shape[1]}×{shape[0]} px</div>'
        self._draw()

    def _draw(self) -> None:
        if not self.volumes:
            return
        z, y, x = (self.sliders[a].value for a in ("z", "y", "x"))
        self._place_lines()
        for label in self.labels:
            vol = self.volumes.get(label)
            if vol is None:
                continue
            lo, hi = contrast(vol, self.contrast.value)
            sections = orthoslices(vol, z=z, y=y, x=x)
            for plane, _ in _PLANES:
                fig, source, mapper = self.figures[(label, plane)]
                section = sections[plane]
                source.data = slice_data(section, self.pixel_sizes.get(label))
                mapper.low, mapper.high = lo, hi
                rows, cols = section.shape
                if fig.x_range.end != cols or fig.y_range.end != rows:
                    fig.x_range.update(start=0, end=cols)
                    fig.y_range.update(start=0, end=rows)
