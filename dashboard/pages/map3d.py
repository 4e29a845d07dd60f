"""A 3D view of a map: volume rendering with vtk.js (shipped with Panel and served by this
server, so it works without internet), the solvent below a chosen density level left out."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import panel as pn

from ..context import html_pane

__all__ = ["Map3DView", "above_level"]


def above_level(volume: np.ndarray, sigmas: float) -> np.ndarray:
    """``volume`` with everything below ``mean + sigmas * std`` set to that level, so that the
    renderer's opacity ramp starts at the particle's surface instead of in the solvent."""
    v = np.asarray(volume, dtype=np.float32)
    level = float(v.mean() + sigmas * v.std())
    return np.maximum(v, level)


class Map3DView:
    """The map ``path_for()`` names (None: not there yet), re-read when the file changes."""

    def __init__(self, watcher, path_for: Callable[[], Path | None], *, height: int = 420) -> None:
        self.watcher = watcher
        self.path_for = path_for
        self.loaded: tuple | None = None
        self.volume: np.ndarray | None = None
        self.pixel_size = 1.0
        self.level = pn.widgets.FloatSlider(name="Density level (σ above the mean)", start=0.0, end=4.0, step=0.25,
                                            value=1.5, width=300, tags=["map3d-level"])
        self.level.param.watch(lambda e: self._render(), "value_throttled")
        self.height = height
        self.note = html_pane('<div class="tomo-note">no map yet</div>')
        # The renderer is made with its first map: vtk.js sets its camera from the first volume.
        self.pane: pn.pane.VTKVolume | None = None
        self.view = pn.Column(pn.Row(self.level, self.note, margin=0), sizing_mode="stretch_width", margin=0)

    def refresh(self) -> None:
        path = self.path_for()
        if path is None or not path.is_file():
            return
        key = (str(path), path.stat().st_mtime_ns)
        if key == self.loaded:
            return
        try:
            volume, pixel = self.watcher.volume(path)
        except Exception:          # a map being written: the next tick reads it
            return
        self.loaded, self.volume, self.pixel_size = key, volume, float(pixel or 1.0)
        shape = volume.shape
        self.note.object = (f'<div class="tomo-note">{path.name} · {shape[2]}×{shape[1]}×{shape[0]} px at '
                            f'{self.pixel_size:.2f} Å · drag to turn, scroll to zoom</div>')
        self._render()

    def _render(self) -> None:
        if self.volume is None:
            return
        shown = above_level(self.volume, self.level.value)
        if self.pane is None or self.pane.spacing != (self.pixel_size,) * 3:
            self.pane = pn.pane.VTKVolume(shown, spacing=(self.pixel_size,) * 3, height=self.height,
                                          sizing_mode="stretch_width", render_background="#102a43",
                                          display_slices=False, display_volume=True,
                                          colormap="Cool to Warm", name="map3d")
            self.view.objects = [self.view.objects[0], self.pane]
        else:
            self.pane.object = shown
