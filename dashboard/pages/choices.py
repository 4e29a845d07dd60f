"""A drop-down that follows the newest of its options (a refinement's latest iteration) until
the user picks an older one, and again once they pick the newest."""
from __future__ import annotations

from collections.abc import Callable

import panel as pn

__all__ = ["LatestChoice"]


class LatestChoice:
    """Drives ``select``; ``on_pick`` runs when the user (not :meth:`set_options`) changes it."""

    def __init__(self, select: pn.widgets.Select, on_pick: Callable[[], None]) -> None:
        self.select = select
        self.on_pick = on_pick
        self.follow_latest = True
        self._setting = False
        select.param.watch(self._picked, "value")

    def set_options(self, options: list[str]) -> bool:
        """Offer ``options`` (newest last); returns whether they changed."""
        if list(self.select.options) == options:
            return False
        self._setting = True
        try:
            self.select.options = options
            if self.follow_latest or self.select.value not in options:
                self.select.value = options[-1] if options else None
        finally:
            self._setting = False
        return True

    def _picked(self, event) -> None:
        if self._setting:
            return
        options = list(self.select.options)
        self.follow_latest = bool(options) and event.new == options[-1]
        self.on_pick()
