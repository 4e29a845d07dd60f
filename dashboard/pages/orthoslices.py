"""Orthoslices (XY, XZ, YZ) of two or three maps side by side, with a slider per plane."""
from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import numpy as np
import panel as pn

from ..context import html_pane
from ..plots import contrast, slice_data, slice_figure
from ..readers import orthoslices
from ..style import HALF_COLOURS
from .choices import LatestChoice

__all__ = ["OrthosliceViewer"]

_PLANES = (("XY", "z"), ("XZ", "y"), ("YZ", "x"))


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
    """

    def __init__(self, watcher, labels: list[str], maps_for: Callable[[str | None], dict[str, Path]], *,
                 choice_label: str | None = None, size: int = 220):
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
        self.figures: dict[tuple[str, str], tuple] = {}
        self.panes: dict[tuple[str, str], pn.pane.Bokeh] = {}
        columns = []
        for plane, axis in _PLANES:
            row = []
            for label in labels:
                fig, source, mapper = slice_figure(f"{label} {plane}", size=size, name=f"slice_{label}_{plane}")
                fig.title.text_color = HALF_COLOURS.get(label, "#323f4b")
                self.figures[(label, plane)] = (fig, source, mapper)
                pane = pn.pane.Bokeh(fig, margin=(0, 2))
                self.panes[(label, plane)] = pane
                row.append(pane)
            width = (size + 4) * len(labels)
            images = pn.Row(*row, margin=0, width=width, height=size + 4) if len(row) > 1 else row[0]
            columns.append(pn.Column(images, self.sliders[axis],
                                     margin=(0, 12, 0, 0), width=width + 10))
        self.status = html_pane('<div class="tomo-note">no maps yet</div>')
        self.view = pn.Column(pn.Row(self.choice, self.contrast, self.status, margin=0),
                              pn.FlexBox(*columns, flex_wrap="wrap", margin=0, sizing_mode="stretch_width"),
                              sizing_mode="stretch_width", margin=0, css_classes=["tomo-orthoslices"])

    # ---- choices -------------------------------------------------------------------------------

    def set_choices(self, options: list[str]) -> None:
        """Offer these choices (e.g. iterations, newest last); follow the newest unless the user
        picked another one."""
        self.latest.set_options(options)
        self.refresh()

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
