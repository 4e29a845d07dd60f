"""Job monitor: status, progress with ETA, Abort/Continue/Share, live plots, log tail.

A thin view of :class:`~dashboard.viewmodels.JobModel`. Live: one periodic tick per browser
session asks the shared watcher whether this job's files changed (a version number); only then
the model reads, and only what is new (iterations not plotted yet), through the watcher's cache.
"""
from __future__ import annotations

import html
from pathlib import Path

import panel as pn

from sessions import RUNNING

from .. import auth
from ..context import CONFIG, PageContext, html_pane
from ..plots import fit_translation_axis, fsc_data, fsc_figure, series_data, series_figures
from ..readers import refine_iterations
from ..results import Headline
from ..viewmodels import JobModel, job_label
from .class3d_view import Class3DMonitorParts
from .frame import card, frame, message_html, status_badge
from .map3d import Map3DView
from .mask_overlay import MaskMonitorParts
from .orthoslices import OrthosliceViewer
from .particles import ParticlePlots
from .postprocess_view import view_for as postprocess_view_for

__all__ = ["page", "JobMonitor"]

def _title_html(name: str, alias: str, status: str, type_label: str) -> str:
    return (f'<div class="tomo-title">{html.escape(name.rstrip("/"))}<span class="alias">{html.escape(alias)}</span>'
            f' &nbsp;{status_badge(status)}</div><div class="tomo-sub">{html.escape(type_label)}</div>')


def _progress_html(text: str) -> str:
    return f'<div class="tomo-progress-line">{html.escape(text) or "&nbsp;"}</div>'


def _headline_html(headline: Headline | None) -> str:
    if headline is None:
        return ""
    facts = "".join(f"<div>{html.escape(f)}</div>" for f in headline.facts)
    warning = f'<div class="warning" id="headline-warning">&#9888; {html.escape(headline.warning)}</div>' \
        if headline.warning else ""
    return (f'<div class="tomo-headline" id="job-headline"><span class="value" id="headline-value">'
            f'{html.escape(headline.title)}</span><div class="facts">{facts}</div>{warning}</div>')


def _iteration_label(it) -> str:
    return f"it {it.iteration}" + (" (final)" if it.final else "")


def _log_html(text: str) -> str:
    return ('<div style="height:260px;overflow:auto;display:flex;flex-direction:column-reverse;'
            'background:#102a43;border-radius:4px">'
            f'<pre class="tomo-log" style="height:auto;overflow:visible">{html.escape(text) or "(empty)"}</pre></div>')


class JobMonitor:
    """The monitor's view of a :class:`~dashboard.viewmodels.JobModel`: widgets bound to its
    parameters, plots and map viewers fed from its iterations and files."""

    def __init__(self, ctx: PageContext, name: str, *, read_only: bool = False):
        self.model = model = JobModel(ctx, name, read_only=read_only)
        m = model.param
        title = html_pane(pn.bind(_title_html, m.name, m.alias, m.status, m.type_label), sizing_mode="stretch_width")
        progress_line = html_pane(pn.bind(_progress_html, m.progress_text), sizing_mode="stretch_width")
        progress = pn.indicators.Progress(value=m.progress, bar_color=m.progress_colour, max=100,
                                          sizing_mode="stretch_width", height=14, margin=(4, 10),
                                          tags=["job-progress"])
        message = html_pane(pn.bind(message_html, m.message), sizing_mode="stretch_width")
        abort_button = pn.widgets.Button(label="Abort", button_type="danger", width=110,
                                         visible=pn.bind(lambda can, asking: can and not asking,
                                                         m.can_abort, m.confirming_abort))
        confirm_abort = pn.widgets.Button(label="Yes, abort", button_type="danger", width=110,
                                          visible=m.confirming_abort)
        keep_running = pn.widgets.Button(label="Keep running", width=120, visible=m.confirming_abort)
        confirm_text = html_pane('<div class="tomo-problem">Abort this job? The iteration in progress is lost; '
                                 'Continue later resumes after the last finished one.</div>',
                                 visible=m.confirming_abort, align="center")
        continue_button = pn.widgets.Button(label="Continue", button_type="primary", width=110,
                                            visible=m.can_continue)
        can_share = ctx.identity.role in (auth.VIEWER, auth.OPERATOR)
        share_button = pn.widgets.Button(label="Share read-only link", width=170, visible=can_share)
        self.share_for = pn.widgets.Select(options=[c[0] for c in CONFIG.share_choices],
                                           value=CONFIG.share_choices[0][0], width=100, visible=can_share)
        share_url = pn.widgets.TextInput(value=m.share_url, visible=pn.bind(bool, m.share_url),
                                         sizing_mode="stretch_width", tags=["share-url"])
        abort_button.on_click(lambda event: model.ask_abort())
        confirm_abort.on_click(lambda event: model.abort())
        keep_running.on_click(lambda event: model.cancel_abort())
        continue_button.on_click(lambda event: model.continue_job())
        share_button.on_click(self._share)
        when = html_pane(pn.bind(lambda text: f'<div class="tomo-sub">{html.escape(text)}</div>', m.when_text),
                         align="center")
        controls = pn.FlexBox(abort_button, confirm_text, confirm_abort, keep_running, continue_button, self.share_for, share_button, when,
                              flex_wrap="wrap", align_items="center", sizing_mode="stretch_width", margin=0)
        headline = html_pane(pn.bind(_headline_html, m.headline), sizing_mode="stretch_width")
        head = card(title, headline, progress_line, progress, controls, share_url, message)
        logs = pn.Tabs(("run.out", html_pane(pn.bind(_log_html, m.log_out), sizing_mode="stretch_width")),
                       ("run.err", html_pane(pn.bind(_log_html, m.log_err), sizing_mode="stretch_width")),
                       sizing_mode="stretch_width")
        parts = [head]
        self.viewer: OrthosliceViewer | None = None
        if model.kind == "refine":
            parts += self._refine_parts()
        elif model.kind == "class3d":
            self.class3d = Class3DMonitorParts(ctx, model)
            parts += self.class3d.parts
        elif model.kind == "reconstruct":
            parts += self._reconstruct_parts()
        elif model.kind == "mask":
            self.mask_parts = MaskMonitorParts(model)
            parts += self.mask_parts.parts
        elif model.kind == "postprocess":
            self.postprocess = postprocess_view_for(model.watcher, model.info.path)
            model.param.watch(self.postprocess.refresh, "listing")
            parts += self.postprocess.parts
        parts.append(card(logs, title="Log"))
        self.view = pn.Column(*parts, sizing_mode="stretch_width", margin=0)
        model.param.watch(self._expire, "expired")

    def tick(self) -> None:
        self.model.tick()

    def _expire(self, event) -> None:
        if event.new:
            self.view.objects = [html_pane('<div class="tomo-error">This share link has expired.</div>')]

    def _share(self, event=None) -> None:
        loc = pn.state.location
        base = f"{loc.protocol}//{loc.hostname}{':' + loc.port if loc.port else ''}" if loc and loc.hostname else ""
        self.model.share(dict(CONFIG.share_choices)[self.share_for.value], base)

    def _add_map3d(self, name: str, title: str) -> None:
        """A 3D view of the job's ``name`` map, shown once the map exists (a finished job)."""
        path = self.model.info.path / name
        self.map3d = Map3DView(self.model.watcher, lambda: path if name in self.model.listing else None)
        self.map3d_card = card(self.map3d.view, title=title, visible=False)

        def follow(*events) -> None:
            self.map3d.refresh()
            self.map3d_card.visible = self.map3d.volume is not None

        self.model.param.watch(follow, "listing")
        follow()

    # ---- refine: FSC and series plots, half maps per iteration ------------------------------------

    def _refine_parts(self) -> list:
        self.fsc_fig, self.fsc_source = fsc_figure(height=330)
        self.series, self.series_source = series_figures(height=256)
        self.viewer = OrthosliceViewer(self.model.watcher, ["half1", "half2"], self._refine_maps,
                                       choice_label="Iteration")
        column = dict(sizing_mode="stretch_width", margin=0, min_width=320, styles={"flex": "1 1 440px"})
        self.particles = ParticlePlots(self._particle_stats)
        self._add_map3d("run_class001.mrc", "Final map in 3D")
        self.model.param.watch(self._plot_iterations, "iterations")
        self.model.param.watch(self._map_choices, "listing")
        self._plot_iterations()
        self._map_choices()
        # Two columns on a desk, one on a phone (the flex box wraps).
        return [
            pn.FlexBox(
                pn.Column(card(pn.pane.Bokeh(self.fsc_fig, sizing_mode="stretch_width")),
                          card(pn.pane.Bokeh(self.series["sampling"], sizing_mode="stretch_width")), **column),
                pn.Column(card(pn.pane.Bokeh(self.series["resolution"], sizing_mode="stretch_width")),
                          card(pn.pane.Bokeh(self.series["accuracy"], sizing_mode="stretch_width")), **column),
                flex_wrap="wrap", sizing_mode="stretch_width", margin=0),
            card(self.viewer.view, title="Half maps"),
            self.map3d_card,
            self.particles.view,
        ]

    def _plot_iterations(self, event=None) -> None:
        iterations = self.model.iterations
        if not iterations:
            return
        curves = [(_iteration_label(it), it.fsc, it.resolution) for it in iterations
                  if it.fsc.fsc.size and float(abs(it.fsc.fsc).max()) > 0]
        self.fsc_source.data = fsc_data(curves)
        data = series_data(iterations)
        self.series_source.data = data
        fit_translation_axis(self.series, data)
        # iteration 0 holds the input poses: nothing estimated yet
        self.particles.set_choices([_iteration_label(it) for it in iterations if it.iteration > 0])

    def _particle_stats(self, label: str):
        final = label.endswith("(final)")
        number = int(label.split()[1])
        return self.model.watcher.particle_stats(self.model.info, number, final=final)

    def _map_choices(self, event=None) -> None:
        listing = self.model.listing
        choices = [f"iteration {n}" for n in refine_iterations(listing)]
        if "run_half1_class001_unfil.mrc" in listing:
            choices.append("final")
        self.viewer.set_choices(choices)

    def _refine_maps(self, choice: str | None) -> dict[str, Path]:
        d = self.model.info.path
        if choice == "final":
            return {"half1": d / "run_half1_class001_unfil.mrc", "half2": d / "run_half2_class001_unfil.mrc"}
        if not choice:
            return {}
        it = int(choice.split()[-1])
        return {h: d / f"run_it{it:03d}_{h}_class001.mrc" for h in ("half1", "half2")}

    # ---- reconstruct: maps once they exist, the half-map FSC --------------------------------------

    def _reconstruct_parts(self) -> list:
        self.fsc_fig, self.fsc_source = fsc_figure("Half-map FSC", hover_label="maps", height=300)
        # The viewer is made once the maps exist, with the ones there are (merged only without
        # half sets).
        self.viewer = self._reconstruct_viewer()
        self.maps_card = card(self.viewer.view if self.viewer is not None else
                              html_pane('<div class="tomo-note">no maps yet</div>'), title="Maps")
        self.fsc_card = card(html_pane('<div class="tomo-note">No FSC (yet): it needs half maps, which need '
                                       'particles with random half sets.</div>'), title="Half-map FSC", max_width=700)
        self._add_map3d("merged.mrc", "Merged map in 3D")
        self.model.param.watch(self._reconstruct_files, ["listing", "fsc_star"])
        self._reconstruct_files()
        column = dict(sizing_mode="stretch_width", margin=0, min_width=320, styles={"flex": "1 1 440px"})
        return [self.maps_card, self.map3d_card, pn.FlexBox(pn.Column(self.fsc_card, **column), flex_wrap="wrap",
                                           sizing_mode="stretch_width", margin=0)]

    def _reconstruct_files(self, *events) -> None:
        curve = self.model.fsc_star
        if curve is not None:
            self.fsc_source.data = fsc_data([("half1 vs half2", curve, curve.resolution_at(0.143))],
                                            colours=["#1f6fb2"])
            if len(self.fsc_card.objects) == 2 and not isinstance(self.fsc_card.objects[1], pn.pane.Bokeh):
                self.fsc_card.objects = [self.fsc_card.objects[0],
                                         pn.pane.Bokeh(self.fsc_fig, sizing_mode="stretch_width")]
        if self.viewer is None:
            self.viewer = self._reconstruct_viewer()
            if self.viewer is not None:
                self.maps_card.objects = [self.maps_card.objects[0], self.viewer.view]
        if self.viewer is not None:
            self.viewer.refresh()

    def _reconstruct_viewer(self) -> OrthosliceViewer | None:
        listing = self.model.listing
        labels = [label for label, name in (("half1", "half1.mrc"), ("half2", "half2.mrc"),
                                            ("merged", "merged.mrc")) if name in listing]
        if not labels or (self.model.status == RUNNING and "merged.mrc" not in listing):
            return None
        d = self.model.info.path
        return OrthosliceViewer(self.model.watcher, labels,
                                lambda choice: {"half1": d / "half1.mrc", "half2": d / "half2.mrc",
                                                "merged": d / "merged.mrc"})


def page(ctx: PageContext):
    name = ctx.args.get("job", "")
    if ctx.watcher is None:
        return frame(ctx, html_pane('<div class="tomo-error">No such session.</div>'))
    info = ctx.watcher.job(name) if name else None
    if info is None and name:
        ctx.watcher.poll(force=True)  # a job created a moment ago
        info = ctx.watcher.job(name)
    if info is None:
        return frame(ctx, html_pane(f'<div class="tomo-error">No job {html.escape(name)} in this session.</div>'))
    monitor = JobMonitor(ctx, info.name)
    ctx.on_tick(monitor.tick)
    return frame(ctx, monitor.view, crumbs=[(job_label(info), None)],
                 current_job=info.name)
