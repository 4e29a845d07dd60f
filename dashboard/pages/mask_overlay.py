"""A Mask creation job on the monitor: the input map's orthoslices (XY, XZ, YZ) with the mask
tinted over them, a slider per plane, the map's contrast and the mask's opacity."""
from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource
from numpy.typing import NDArray

from ..context import html_pane
from ..mask_summary import MASK_FILE, mask_input_path
from ..plots import contrast, slice_data, slice_figure
from ..readers import orthoslices
from .frame import card

__all__ = ["MASK_COLOUR", "PLANES", "mask_rgba", "overlay_data", "overlay_figure", "MaskOverlayViewer", "MaskMonitorParts"]

#: (plane, the axis its slider moves along)
PLANES = (("XY", "z"), ("XZ", "y"), ("YZ", "x"))
#: RGB of the tint (a warm red that reads over grey levels)
MASK_COLOUR = (230, 57, 70)


def mask_rgba(section: NDArray, *, opacity: float = 0.45, colour: tuple[int, int, int] = MASK_COLOUR) -> NDArray[np.uint32]:
    """A mask section as Bokeh RGBA pixels: ``colour`` with alpha ``opacity * mask`` (0..255).

    Parameters
    ----------
    section
        ``[rows, cols]`` mask values (clipped to [0, 1]).
    opacity
        Alpha of a voxel of value 1 (0..1).

    Returns
    -------
    ndarray
        ``[rows, cols]`` uint32, bytes R, G, B, A in memory order (Bokeh's ``image_rgba``).
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be within 0..1, got {opacity:g}")
    m = np.clip(np.asarray(section, dtype=np.float64), 0.0, 1.0)
    rgba = np.empty(m.shape + (4,), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = colour
    rgba[..., 3] = np.rint(255.0 * opacity * m).astype(np.uint8)
    return rgba.view(np.uint32).reshape(m.shape)


def overlay_data(map_section: NDArray | None, mask_section: NDArray, *, pixel_size: float | None,
                 opacity: float = 0.45) -> tuple[dict, dict]:
    """Source data of one plane: the map's grey image (the mask's, when there is no map) and the
    tinted mask. Both ``[rows, cols]`` with the same shape."""
    if map_section is not None and np.shape(map_section) != np.shape(mask_section):
        raise ValueError(f"map section {np.shape(map_section)} and mask section {np.shape(mask_section)} differ")
    grey = slice_data(mask_section if map_section is None else map_section, pixel_size)
    rows, cols = np.shape(mask_section)
    tint = {"image": [mask_rgba(mask_section, opacity=opacity)], "dw": [cols], "dh": [rows]}
    return grey, tint


def overlay_figure(title: str, *, size: int = 220, name: str = ""):
    """One plane: ``(figure, map source, mask source, colour mapper)``; the tint is drawn over the
    map and under the scale bar."""
    fig, source, mapper = slice_figure(title, size=size, name=name)
    mask_source = ColumnDataSource({"image": [], "dw": [], "dh": []}, name=f"{name}_mask_source" if name else None)
    fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=mask_source)
    fig.renderers.insert(1, fig.renderers.pop())
    return fig, source, mask_source, mapper


class MaskOverlayViewer:
    """The map's central sections with the mask over them.

    Parameters
    ----------
    watcher
        Supplies cached volumes (``volume(path) -> (array, pixel size)``).
    paths
        ``() -> (map path or None, mask path)``: the files to show (read again when they change).
    size
        Pixels per plane.
    """

    def __init__(self, watcher, paths: Callable[[], tuple[Path | None, Path]], *, size: int = 220):
        self.watcher = watcher
        self.paths = paths
        self.loaded: tuple | None = None
        self.volume: NDArray | None = None
        self.mask: NDArray | None = None
        self.pixel_size: float | None = None
        self.contrast = pn.widgets.FloatSlider(label="Contrast (% of voxels saturated)", start=0.0, end=10.0, step=0.5,
                                               value=1.0, width=220, tags=["mask-contrast"])
        self.opacity = pn.widgets.FloatSlider(label="Mask opacity", start=0.0, end=1.0, step=0.05, value=0.45,
                                              width=180, tags=["mask-opacity"])
        self.sliders = {axis: pn.widgets.IntSlider(label=f"{plane} section: {axis}", start=0, end=1, value=0,
                                                   width=size, tags=[f"mask-slider:{axis}"])
                        for plane, axis in PLANES}
        for widget in (self.contrast, self.opacity, *self.sliders.values()):
            widget.param.watch(lambda e: self.draw(), "value_throttled")
        self.figures = {plane: overlay_figure(f"{plane}", size=size, name=f"mask_{plane}") for plane, _ in PLANES}
        columns = [pn.Column(pn.pane.Bokeh(self.figures[plane][0], margin=(0, 2)), self.sliders[axis],
                             margin=(0, 12, 0, 0), width=size + 14) for plane, axis in PLANES]
        self.status = html_pane('<div class="tomo-note">no mask yet</div>')
        self.view = pn.Column(pn.Row(self.contrast, self.opacity, self.status, margin=0),
                              pn.FlexBox(*columns, flex_wrap="wrap", margin=0, sizing_mode="stretch_width"),
                              sizing_mode="stretch_width", margin=0, css_classes=["tomo-mask-overlay"])

    def refresh(self) -> None:
        """(Re)load the map and the mask if either changed on disk, then draw."""
        map_path, mask_path = self.paths()
        stamps = []
        for path in (map_path, mask_path):
            try:
                stamps.append((str(path), path.stat().st_mtime_ns) if path is not None else None)
            except OSError:
                stamps.append(None)
        if stamps[1] is None:
            self.status.object = '<div class="tomo-note">no mask yet</div>'
            return
        if tuple(stamps) == self.loaded:
            return
        try:
            mask, pixel_size = self.watcher.volume(mask_path)
        except Exception:
            self.status.object = '<div class="tomo-note">the mask cannot be read (yet)</div>'
            return
        volume, note = None, ""
        if stamps[0] is not None:
            try:
                volume, _ = self.watcher.volume(map_path)
            except Exception:
                note = " · the input map cannot be read: the mask alone"
        else:
            note = " · the input map is gone: the mask alone"
        if volume is not None and volume.shape != mask.shape:
            volume, note = None, " · the input map's box differs from the mask's: the mask alone"
        self.loaded = tuple(stamps)
        self.volume, self.mask, self.pixel_size = volume, mask, pixel_size
        for (plane, axis), n in zip(PLANES, mask.shape):
            slider = self.sliders[axis]
            if slider.end != max(n - 1, 1):
                slider.param.update(start=0, end=max(n - 1, 1), value=n // 2)
        shown = html.escape(map_path.name) + " + " if volume is not None else ""
        nz, ny, nx = mask.shape
        self.status.object = (f'<div class="tomo-note">{shown}{html.escape(mask_path.name)} · '
                              f'{nx}×{ny}×{nz} px{html.escape(note)}</div>')
        self.draw()

    def sections(self) -> dict[str, tuple[NDArray | None, NDArray]]:
        """Plane -> (map section or None, mask section) at the sliders' positions."""
        z, y, x = (self.sliders[a].value for a in ("z", "y", "x"))
        masks = orthoslices(self.mask, z=z, y=y, x=x)
        maps = orthoslices(self.volume, z=z, y=y, x=x) if self.volume is not None else {}
        return {plane: (maps.get(plane), masks[plane]) for plane, _ in PLANES}

    def draw(self) -> None:
        if self.mask is None:
            return
        lo, hi = contrast(self.volume if self.volume is not None else self.mask, self.contrast.value)
        for plane, (map_section, mask_section) in self.sections().items():
            fig, source, mask_source, mapper = self.figures[plane]
            source.data, mask_source.data = overlay_data(map_section, mask_section, pixel_size=self.pixel_size,
                                                         opacity=self.opacity.value)
            mapper.low, mapper.high = lo, hi
            rows, cols = mask_section.shape
            if fig.x_range.end != cols or fig.y_range.end != rows:
                fig.x_range.update(start=0, end=cols)
                fig.y_range.update(start=0, end=rows)


class MaskMonitorParts:
    """The monitor's cards for a Mask creation job, following the job's files.

    Parameters
    ----------
    model
        The page's :class:`~dashboard.viewmodels.JobModel` (its ``info``, ``watcher`` and
        ``listing``).
    """

    def __init__(self, model) -> None:
        self.model = model
        root = Path(model.watcher.root)
        self.viewer = MaskOverlayViewer(model.watcher, lambda: (mask_input_path(model.info.path, root),
                                                                model.info.path / MASK_FILE))
        self.parts = [card(self.viewer.view, title="Mask over the input map")]
        model.param.watch(lambda *events: self.viewer.refresh(), "listing")
        self.viewer.refresh()
