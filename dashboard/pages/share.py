"""``/share?token=...``: one job's monitor, read-only, while the token is valid."""
from __future__ import annotations


from .. import auth
from ..context import CONFIG, PageContext, html_pane
from ..watcher import watcher_for
from .frame import frame
from .monitor import JobMonitor


def page(ctx: PageContext):
    token = ctx.args.get("token", "")
    guest = auth.check_share_token(CONFIG.cookie_secret, token) if token else None
    if guest is None or guest.share_session not in CONFIG.sessions:
        ctx.identity = auth.Identity("guest", auth.SHARE)
        return frame(ctx, html_pane('<div class="tomo-error" id="share-expired">This share link is invalid or has '
                                    'expired. Ask for a new one.</div>'), sidebar=False)
    # The link grants exactly this job, read-only, whoever opens it.
    ctx.identity = guest
    ctx.session_key = guest.share_session
    ctx.watcher = watcher_for(CONFIG.sessions[guest.share_session])
    info = ctx.watcher.job(guest.share_job)
    if info is None:
        return frame(ctx, html_pane('<div class="tomo-error">The shared job no longer exists.</div>'), sidebar=False)
    monitor = JobMonitor(ctx, info.name, read_only=True)
    ctx.on_tick(monitor.tick)
    return frame(ctx, monitor.view, sidebar=False)
