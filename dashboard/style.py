"""Colours and stylesheets shared by all pages (static/tomodash.css holds the page-level rules)."""
from __future__ import annotations

from pathlib import Path

ACCENT = "#1f6fb2"
STATUS_COLOURS = {
    "Running": "#1f6fb2",
    "Succeeded": "#2e7d32",
    "Failed": "#c62828",
    "Aborted": "#8a8f98",
    "Scheduled": "#ffffff",
}
STATUS_SYMBOLS = {"Running": "●", "Succeeded": "✓", "Failed": "✕", "Aborted": "■", "Scheduled": "○"}
HALF_COLOURS = {"half1": "#1f6fb2", "half2": "#d9822b", "merged": "#52606d"}
#: Comparison palette (one colour per job).
JOB_PALETTE = ["#1f6fb2", "#d9822b", "#2e7d32", "#8e44ad", "#c62828", "#00838f", "#6d4c41", "#5c6bc0"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


#: One colour per class of a classification (class 1 first), repeating after ten.
CLASS_PALETTE = ["#1f6fb2", "#d9822b", "#2e7d32", "#c62828", "#8e44ad", "#00838f", "#6d4c41", "#e91e63",
                 "#7b8794", "#b5a000"]


def class_colours(n: int) -> list[str]:
    """Colours of classes 1..n, the same in every plot and map title."""
    return [CLASS_PALETTE[k % len(CLASS_PALETTE)] for k in range(n)]


def iteration_colours(n: int) -> list[str]:
    """``n`` colours from light to dark in the accent's hue (newest darkest)."""
    light, dark = (198, 219, 239), (8, 48, 107)
    if n <= 1:
        return ["#%02x%02x%02x" % dark] * n
    out = []
    for i in range(n):
        t = i / (n - 1)
        out.append("#%02x%02x%02x" % tuple(round(a + (b - a) * t) for a, b in zip(light, dark)))
    return out


# Rules for the pages' own markup (header, sidebar, cards, badges). Panel renders components in
# shadow roots, so these are attached to the HTML panes and layouts that use the classes.
CSS = """
:host { --tomo-accent: #1f6fb2; }
.tomo-header { display: flex; align-items: center; gap: 18px; padding: 10px 20px; background: #10293f;
  color: #e4e7eb; font: 15px system-ui, sans-serif; min-height: 28px; }
.tomo-brand { font-weight: 700; font-size: 18px; color: #fff; letter-spacing: .3px; text-decoration: none; }
.tomo-brand span { color: #7cc4fa; }
.tomo-crumbs { flex: 1; color: #bcccdc; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tomo-crumbs a { color: #e4e7eb; text-decoration: none; }
.tomo-crumbs a:hover { text-decoration: underline; }
.tomo-crumbs .sep { margin: 0 8px; color: #627d98; }
.tomo-user { color: #bcccdc; font-size: 13px; }
.tomo-user a { color: #7cc4fa; margin-left: 10px; }
.tomo-side { font: 14px system-ui, sans-serif; color: #1f2933; }
.tomo-side h4 { font-size: 11px; letter-spacing: 1px; color: #7b8794; margin: 14px 0 6px 4px; font-weight: 600; }
.tomo-side a.nav { display: block; padding: 5px 8px; border-radius: 4px; color: #1f2933; text-decoration: none; }
.tomo-side a.nav:hover { background: #e4ecf5; }
.tomo-side a.nav.active { background: #dbe9f7; color: #1f6fb2; font-weight: 600; }
.tomo-job { display: flex; gap: 8px; align-items: baseline; padding: 4px 8px; border-radius: 4px;
  color: #1f2933; text-decoration: none; }
.tomo-job:hover { background: #e4ecf5; }
.tomo-job.active { background: #dbe9f7; }
.tomo-job .num { font-variant-numeric: tabular-nums; }
.tomo-job .alias { color: #616e7c; font-size: 12px; min-width: 0; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; }
.tomo-job .type { color: #9aa5b1; font-size: 11px; margin-left: auto; flex: none; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; flex: none; position: relative; top: 1px; }
.dot.Running { background: #1f6fb2; animation: tomo-pulse 1.4s ease-in-out infinite; }
.dot.Succeeded { background: #2e7d32; }
.dot.Failed { background: #c62828; }
.dot.Aborted { background: #8a8f98; }
.dot.Scheduled { border: 2px solid #8a8f98; width: 6px; height: 6px; }
@keyframes tomo-pulse { 0% { box-shadow: 0 0 0 0 rgba(31,111,178,.6); } 70% { box-shadow: 0 0 0 7px rgba(31,111,178,0); }
  100% { box-shadow: 0 0 0 0 rgba(31,111,178,0); } }
.badge { display: inline-block; padding: 2px 10px; border-radius: 11px; font-size: 13px; font-weight: 600; color: #fff; }
.badge.Running { background: #1f6fb2; } .badge.Succeeded { background: #2e7d32; } .badge.Failed { background: #c62828; }
.badge.Aborted { background: #8a8f98; } .badge.Scheduled { background: #fff; color: #52606d; border: 1px solid #8a8f98; }
.tomo-title { font: 600 20px system-ui, sans-serif; margin: 0; color: #1f2933; }
.tomo-title .alias { color: #616e7c; font-weight: 400; margin-left: 8px; }
.tomo-sub { color: #616e7c; font: 13px system-ui, sans-serif; }
.tomo-progress-line { font: 14px system-ui, sans-serif; color: #1f2933; }
.tomo-card-title { font: 600 14px system-ui, sans-serif; color: #323f4b; margin: 0 0 4px 2px; }
table.tomo-table { border-collapse: collapse; width: 100%; font: 14px system-ui, sans-serif; }
table.tomo-table th { text-align: left; color: #616e7c; font-weight: 600; border-bottom: 2px solid #d9e2ec; padding: 6px 10px; }
table.tomo-table td { border-bottom: 1px solid #e4e7eb; padding: 6px 10px; vertical-align: top; }
table.tomo-table tr:hover td { background: #f5f9fd; }
table.tomo-table a { color: #1f6fb2; text-decoration: none; font-weight: 600; }
.tomo-problem { color: #b42318; font: 13px system-ui, sans-serif; padding: 2px 0; }
.tomo-note { color: #616e7c; font: 13px system-ui, sans-serif; }
.tomo-facts { font: 13px system-ui, sans-serif; color: #334e68; background: #eef5fc; border-left: 3px solid #1f6fb2;
  padding: 6px 10px; border-radius: 3px; }
.tomo-facts div { margin: 2px 0; }
.tomo-ok { color: #2e7d32; font: 13px system-ui, sans-serif; }
.tomo-error { color: #b42318; font: 14px system-ui, sans-serif; }
pre.tomo-log { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #102a43; color: #d9e2ec; margin: 0;
  padding: 10px 12px; border-radius: 4px; height: 260px; overflow: auto; white-space: pre-wrap; }
.tomo-headline { display: flex; flex-wrap: wrap; gap: 4px 18px; align-items: baseline; font: 13px system-ui, sans-serif;
  color: #334e68; background: #edf7ee; border-left: 4px solid #2e7d32; padding: 8px 12px; border-radius: 3px; }
.tomo-headline .value { font: 700 24px system-ui, sans-serif; color: #1f2933; }
.tomo-headline .facts div { margin: 1px 0; }
.tomo-headline .warning { flex-basis: 100%; color: #8a4b08; font-weight: 600; }
.result-badge { font-weight: 600; color: #1f2933; white-space: nowrap; }
.tomo-empty { color: #7b8794; font: italic 14px system-ui, sans-serif; padding: 20px; }
"""
