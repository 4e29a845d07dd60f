"""tomodash's browser dashboard (Panel): sessions, the job builder, live job monitors, compare.

Started by ``tomodash serve`` (``server_cli``); ``app`` routes each page; ``context`` holds the
server's configuration and who is asking; ``viewmodels`` hold what each page shows; ``pages``
are thin views of them. Nothing below ``dashboard`` imports it (docs/architecture.md).
"""
