"""Job monitor: status, progress with ETA, Abort/Continue/Share, live plots, log tail.

Live: one periodic tick per browser session asks the shared watcher whether this job's files
changed (a version number); only then it reads, and only what is new (iterations not plotted
yet), through the watcher's cache.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import panel as pn

from processing.errors import InputError
from sessions import RUNNING, SCHEDULED, runner

from .. import auth
from ..context import CONFIG, PageContext, html_pane
from ..plots import fit_translation_axis, fsc_data, fsc_figure, series_data, series_figures
from ..readers import refine_iterations
from .frame import alias_of, card, frame, status_badge
from .orthoslices import OrthosliceViewer

__all__ = ["page", "JobMonitor", "job_kind", "format_duration"]


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s" if seconds < 600 else f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {(seconds % 3600) // 60} min"


def job_kind(info, listing: list[str]) -> str:
    """``refine`` / ``reconstruct`` / ``other``: from the job type, else from its files."""
    if info.job_type == "refine3d" or any(n.endswith("_half1_model.star") for n in listing):
        return "refine"
    if info.job_type == "reconstruct" or "merged.mrc" in listing:
        return "reconstruct"
    return "other"


class JobMonitor:
    def __init__(self, ctx: PageContext, name: str, *, read_only: bool = False):
        self.ctx = ctx
        self.watcher = ctx.watcher
        self.name = name
        self.read_only = read_only or not ctx.identity.can_operate
        info = self.watcher.job(name)
        self.info = info
        self.watcher.want(info.name)
        self.kind = job_kind(info, self.watcher.listing(info.name))
        self.seen_version = -1
        self.plotted: list[int] = []
        self.iterations = []

        self.title = html_pane(sizing_mode="stretch_width")
        self.progress_line = html_pane(sizing_mode="stretch_width")
        self.progress = pn.indicators.Progress(value=0, max=100, bar_color="primary", sizing_mode="stretch_width",
                                               height=14, margin=(4, 10), tags=["job-progress"])
        self.message = html_pane(sizing_mode="stretch_width")
        self.abort_button = pn.widgets.Button(label="Abort", button_type="danger", width=110, visible=False)
        self.continue_button = pn.widgets.Button(label="Continue", button_type="primary", width=110, visible=False)
        self.share_button = pn.widgets.Button(label="Share read-only link", width=170,
                                              visible=ctx.identity.role in (auth.VIEWER, auth.OPERATOR))
        self.share_for = pn.widgets.Select(options=[c[0] for c in CONFIG.share_choices], value=CONFIG.share_choices[0][0],
                                           width=100, visible=self.share_button.visible)
        self.share_url = pn.widgets.TextInput(value="", visible=False, sizing_mode="stretch_width", tags=["share-url"])
        self.abort_button.on_click(self._abort)
        self.continue_button.on_click(self._continue)
        self.share_button.on_click(self._share)
        self.when = html_pane(align="center")
        controls = pn.FlexBox(self.abort_button, self.continue_button, self.share_for, self.share_button, self.when,
                              flex_wrap="wrap", align_items="center", sizing_mode="stretch_width", margin=0)
        head = card(self.title, self.progress_line, self.progress, controls, self.share_url, self.message)

        self.log_out = html_pane(sizing_mode="stretch_width")
        self.log_err = html_pane(sizing_mode="stretch_width")
        logs = pn.Tabs(("run.out", self.log_out), ("run.err", self.log_err), sizing_mode="stretch_width")
        parts = [head]
        self.fsc_fig = self.fsc_source = self.series = self.series_source = None
        self.viewer: OrthosliceViewer | None = None
        if self.kind == "refine":
            self.fsc_fig, self.fsc_source = fsc_figure(height=330)
            self.series, self.series_source = series_figures(height=256)
            self.viewer = OrthosliceViewer(self.watcher, ["half1", "half2"], self._refine_maps,
                                           choice_label="Iteration")
            column = dict(sizing_mode="stretch_width", margin=0, min_width=320, styles={"flex": "1 1 440px"})
            # Two columns on a desk, one on a phone (the flex box wraps).
            parts.append(pn.FlexBox(
                pn.Column(card(pn.pane.Bokeh(self.fsc_fig, sizing_mode="stretch_width")),
                          card(pn.pane.Bokeh(self.series["sampling"], sizing_mode="stretch_width")), **column),
                pn.Column(card(pn.pane.Bokeh(self.series["resolution"], sizing_mode="stretch_width")),
                          card(pn.pane.Bokeh(self.series["accuracy"], sizing_mode="stretch_width")), **column),
                flex_wrap="wrap", sizing_mode="stretch_width", margin=0))
            parts.append(card(self.viewer.view, title="Half maps"))
        elif self.kind == "reconstruct":
            self.fsc_fig, self.fsc_source = fsc_figure("Half-map FSC", hover_label="maps", height=300)
            # The viewer is made once the maps exist, with the ones there are (merged only without
            # half sets).
            self.maps_card = card(html_pane('<div class="tomo-note">no maps yet</div>'), title="Maps")
            self._make_reconstruct_viewer(info, self.watcher.listing(info.name))
            self.fsc_card = card(html_pane('<div class="tomo-note">No FSC (yet): it needs half maps, which need particles with random '
                                           'half sets.</div>'), title="Half-map FSC", max_width=700)
            parts.append(self.maps_card)
            parts.append(self.fsc_card)
        parts.append(card(logs, title="Log"))
        self.view = pn.Column(*parts, sizing_mode="stretch_width", margin=0)
        self.update()

    # ---- maps ------------------------------------------------------------------------------------

    def _refine_maps(self, choice: str | None) -> dict[str, Path]:
        d = self.info.path
        if choice == "final":
            return {"half1": d / "run_half1_class001_unfil.mrc", "half2": d / "run_half2_class001_unfil.mrc"}
        if not choice:
            return {}
        it = int(choice.split()[-1])
        return {h: d / f"run_it{it:03d}_{h}_class001.mrc" for h in ("half1", "half2")}

    def _reconstruct_maps(self, choice) -> dict[str, Path]:
        d = self.info.path
        return {"half1": d / "half1.mrc", "half2": d / "half2.mrc", "merged": d / "merged.mrc"}

    # ---- live update -------------------------------------------------------------------------------

    def tick(self) -> None:
        self.watcher.want(self.info.name)
        if self.ctx.identity.role == auth.SHARE and self.ctx.identity.share_expires and \
                time.time() >= self.ctx.identity.share_expires:
            self.view.objects = [html_pane('<div class="tomo-error">This share link has expired.</div>')]
            return
        if self.watcher.job_version(self.info.name) != self.seen_version:
            self.update()

    def update(self) -> None:
        self.seen_version = self.watcher.job_version(self.info.name)
        info = self.watcher.job(self.info.name) or self.info
        self.info = info
        listing = self.watcher.listing(info.name)
        progress = self.watcher.progress(info)
        record = runner.read_run_record(info.path)
        self._header(info, progress, record)
        if self.kind == "refine":
            self._update_refine(info, listing)
        elif self.kind == "reconstruct":
            self._update_reconstruct(info, listing)
        out = self.watcher.log_tail(info, "run.out")
        err = self.watcher.log_tail(info, "run.err")
        self.log_out.object = _log_html(out)
        self.log_err.object = _log_html(err)

    def _header(self, info, progress: dict | None, record) -> None:
        alias = alias_of(info)
        self.title.object = (f'<div class="tomo-title">{html.escape(info.name.rstrip("/"))}'
                             f'<span class="alias">{html.escape(alias or "")}</span> &nbsp;{status_badge(info.status)}'
                             f'</div><div class="tomo-sub">{html.escape(info.type_label)}</div>')
        running = info.status == RUNNING
        parts = []
        if progress and (running or progress.get("iteration") is not None):
            if progress.get("iteration") is not None:
                parts.append(f"iteration {progress['iteration']}")
            phase = progress.get("phase")
            done, total = progress.get("particles_done"), progress.get("particles_total")
            if phase:
                parts.append(f"{_phase_name(phase)} {done}/{total} particles" if total else _phase_name(phase))
            left = progress.get("estimated_seconds_left_in_phase")
            if running and left is not None:
                parts.append(f"~{format_duration(left)} left in this phase")
            if total:
                self.progress.value = int(round(100 * (done or 0) / max(total, 1)))
                self.progress.max = 100
        elif running:
            self.progress.value = -1  # indeterminate
            parts.append("running")
        if not running:
            if info.status == "Succeeded":
                self.progress.value = 100
            self.progress.bar_color = {"Succeeded": "success", "Failed": "danger"}.get(info.status, "secondary")
            reason = runner.failure_reason(info.path) if info.status in ("Failed", "Aborted") else None
            if reason:
                parts.append(html.escape(reason))
        else:
            self.progress.bar_color = "primary"
        self.progress_line.object = f'<div class="tomo-progress-line">{" · ".join(parts) or "&nbsp;"}</div>'
        when = []
        if record is not None and record.data.get("launched_at"):
            started = float(record.data["launched_at"])
            when.append("started " + time.strftime("%H:%M", time.localtime(started)))
            end = time.time() if running else (info.path / "run.out").stat().st_mtime if (info.path / "run.out").exists() \
                else time.time()
            when.append(format_duration(end - started))
        self.when.object = f'<div class="tomo-sub">{" · ".join(when)}</div>'
        operate = not self.read_only
        self.abort_button.visible = operate and running
        self.continue_button.visible = operate and not running and info.status != SCHEDULED and info.job_type is not None

    def _update_refine(self, info, listing: list[str]) -> None:
        numbers = refine_iterations(listing)
        new = [n for n in numbers if n not in self.plotted]
        if new:
            for n in new:
                it = self.watcher.refine_iteration(info, n)
                if it is not None:
                    self.iterations.append(it)
                    self.plotted.append(n)
            self.iterations.sort(key=lambda it: it.iteration)
            curves = [(f"it {it.iteration}", it.fsc, it.resolution) for it in self.iterations
                      if it.fsc.fsc.size and float(abs(it.fsc.fsc).max()) > 0]
            self.fsc_source.data = fsc_data(curves)
            data = series_data(self.iterations)
            self.series_source.data = data
            fit_translation_axis(self.series, data)
        choices = [f"iteration {n}" for n in numbers]
        if "run_half1_class001_unfil.mrc" in listing:
            choices.append("final")
        self.viewer.set_choices(choices)

    def _update_reconstruct(self, info, listing: list[str]) -> None:
        if "fsc.star" in listing:
            curve = self.watcher.fsc_star(info.path / "fsc.star")
            if curve is not None:
                self.fsc_source.data = fsc_data([("half1 vs half2", curve, curve.resolution_at(0.143))],
                                                colours=["#1f6fb2"])
                if len(self.fsc_card.objects) == 2 and not isinstance(self.fsc_card.objects[1], pn.pane.Bokeh):
                    self.fsc_card.objects = [self.fsc_card.objects[0],
                                             pn.pane.Bokeh(self.fsc_fig, sizing_mode="stretch_width")]
        if self.viewer is None:
            self._make_reconstruct_viewer(info, listing)
        if self.viewer is not None:
            self.viewer.refresh()

    def _make_reconstruct_viewer(self, info, listing: list[str]) -> None:
        labels = [label for label, name in (("half1", "half1.mrc"), ("half2", "half2.mrc"),
                                            ("merged", "merged.mrc")) if name in listing]
        if not labels or (info.status == RUNNING and "merged.mrc" not in listing):
            return
        self.viewer = OrthosliceViewer(self.watcher, labels, self._reconstruct_maps,
                                       size=180 if len(labels) <= 2 else 150)
        self.maps_card.objects = [self.maps_card.objects[0], self.viewer.view]

    # ---- actions (server side, role-checked) ----------------------------------------------------------

    def _abort(self, event=None) -> None:
        try:
            self.ctx.require("abort jobs")
            runner.abort(self.ctx.session, self.info.name, wait=False, grace=10.0, term_grace=5.0)
            self.message.object = '<div class="tomo-ok">Abort requested; the job stops at its next check.</div>'
        except InputError as exc:
            self.message.object = f'<div class="tomo-error">{html.escape(str(exc))}</div>'

    def _continue(self, event=None) -> None:
        try:
            self.ctx.require("continue jobs")
            runner.continue_job(self.ctx.session, self.info.name)
            self.message.object = '<div class="tomo-ok">Continued.</div>'
        except InputError as exc:
            self.message.object = f'<div class="tomo-error">{html.escape(str(exc))}</div>'

    def _share(self, event=None) -> None:
        if self.ctx.identity.role not in (auth.VIEWER, auth.OPERATOR):
            return
        seconds = dict(CONFIG.share_choices)[self.share_for.value]
        token = auth.make_share_token(CONFIG.cookie_secret, self.ctx.session_key, self.info.name, seconds=seconds)
        loc = pn.state.location
        base = f"{loc.protocol}//{loc.hostname}{':' + loc.port if loc.port else ''}" if loc and loc.hostname else ""
        self.share_url.value = auth.share_url(base, token)
        self.share_url.visible = True
        self.message.object = f'<div class="tomo-note">Anyone with this link can watch this job until ' \
                              f'{time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + seconds))}.</div>'


def _phase_name(phase: str) -> str:
    return {"expectation": "E-step", "maximisation": "M-step"}.get(phase, phase)


def _log_html(text: str) -> str:
    return ('<div style="height:260px;overflow:auto;display:flex;flex-direction:column-reverse;'
            'background:#102a43;border-radius:4px">'
            f'<pre class="tomo-log" style="height:auto;overflow:visible">{html.escape(text) or "(empty)"}</pre></div>')


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
    return frame(ctx, monitor.view, crumbs=[(info.name.rstrip("/") + (f" ({alias_of(info)})" if info.alias else ""), None)],
                 current_job=info.name)
