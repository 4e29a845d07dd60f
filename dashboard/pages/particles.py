"""Pictures of one refine iteration's particles, which RELION users otherwise make by hand: the
viewing-direction distribution, histograms of rlnMaxValueProbDistribution and
rlnNrOfSignificantSamples, and each tomogram's particles in 3D coloured by either (turned in the
browser by two sliders, so a turn costs no round trip)."""
from __future__ import annotations

import numpy as np
import panel as pn

from ..plots import (angular_data, angular_figure, histogram_data, histogram_figure, particles_3d_figure,
                     projection_callback, tomogram_data)
from ..readers import ParticleStats
from .choices import LatestChoice
from .frame import card

__all__ = ["ParticlePlots"]

_COLOUR_BY = {"max. probability (Pmax)": "pmax", "significant samples": "n_significant"}


class ParticlePlots:
    """The particles card of a refine monitor; ``stats_for(label) -> ParticleStats | None``
    reads an iteration (labels as offered by :meth:`set_choices`, newest last)."""

    def __init__(self, stats_for) -> None:
        self.stats_for = stats_for
        self.stats: ParticleStats | None = None
        self.choice = pn.widgets.Select(label="Iteration", options=[], width=150, tags=["particles-choice"])
        self.colour_by = pn.widgets.Select(label="Colour by", options=list(_COLOUR_BY), width=200)
        self.tomogram = pn.widgets.Select(label="Tomogram", options=[], width=160)
        self.angles, self.angle_source, self.angle_mapper = angular_figure()
        self.pmax, self.pmax_source = histogram_figure("Max. probability per particle (rlnMaxValueProbDistribution)",
                                                       "Pmax", name="pmax_hist")
        self.nsig, self.nsig_source = histogram_figure("Significant samples per particle (rlnNrOfSignificantSamples)",
                                                       "samples", name="nsig_hist")
        self.positions, self.position_source, self.edge_source, self.position_mapper = particles_3d_figure()
        self.azimuth = pn.widgets.IntSlider(name="Turn (azimuth, °)", start=-180, end=180, step=5, value=30,
                                            width=200, tags=["particles-azimuth"])
        self.elevation = pn.widgets.IntSlider(name="View from (elevation, °)", start=-90, end=90, step=5, value=35,
                                              width=200, tags=["particles-elevation"])
        code, args = projection_callback(self.position_source, self.edge_source)
        for slider in (self.azimuth, self.elevation):
            slider.jscallback(value=code, args={**args, "azimuth": self.azimuth, "elevation": self.elevation})
        self.latest = LatestChoice(self.choice, self._load)
        self.colour_by.param.watch(lambda e: self._draw_tomogram(), "value")
        self.tomogram.param.watch(lambda e: self._draw_tomogram(), "value")
        column = dict(sizing_mode="stretch_width", margin=0, min_width=320, styles={"flex": "1 1 440px"})
        self.view = card(
            pn.Row(self.choice, self.colour_by, self.tomogram, margin=0),
            pn.FlexBox(pn.Column(pn.pane.Bokeh(self.angles, sizing_mode="stretch_width"),
                                 pn.Row(self.azimuth, self.elevation, margin=0),
                                 pn.pane.Bokeh(self.positions, sizing_mode="stretch_width"), **column),
                       pn.Column(pn.pane.Bokeh(self.pmax, sizing_mode="stretch_width"),
                                 pn.pane.Bokeh(self.nsig, sizing_mode="stretch_width"), **column),
                       flex_wrap="wrap", sizing_mode="stretch_width", margin=0),
            title="Particles")

    def set_choices(self, labels: list[str]) -> None:
        """Offer these iterations; follow the newest unless the user chose another one."""
        if self.latest.set_options(labels):
            self._load()

    def _load(self) -> None:
        stats = self.stats_for(self.choice.value) if self.choice.value else None
        if stats is None:
            return
        self.stats = stats
        data = angular_data(stats.rot, stats.tilt)
        self.angle_source.data = data
        self.angle_mapper.high = max(data["count_max"][0], 1.0)
        self.pmax_source.data = histogram_data(stats.pmax, bins=25, value_range=(0.0, 1.0))
        self.nsig_source.data = histogram_data(stats.n_significant, bins=30)
        names = sorted(set(stats.tomogram.tolist()))
        if list(self.tomogram.options) != names:
            self.tomogram.options = names
        if self.tomogram.value not in names:
            self.tomogram.value = names[0] if names else None
        self._draw_tomogram()

    def _draw_tomogram(self) -> None:
        stats = self.stats
        if stats is None or self.tomogram.value is None:
            return
        mine = stats.tomogram == self.tomogram.value
        values = getattr(stats, _COLOUR_BY[self.colour_by.value])[mine]
        self.position_source.data, self.edge_source.data = tomogram_data(
            stats.x[mine], stats.y[mine], stats.z[mine], values,
            azimuth=self.azimuth.value, elevation=self.elevation.value)
        finite = values[np.isfinite(values)]
        if finite.size:
            self.position_mapper.low = float(finite.min())
            self.position_mapper.high = float(max(finite.max(), finite.min() + 1e-9))
