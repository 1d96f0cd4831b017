"""The link and unit watchers the stage conditions ask about, opened as needed."""
from __future__ import annotations

from ..config import Config, LinkUp
from ..model import LinkState


class Watchers:
    def __init__(self) -> None:
        self.links = self.units = None

    def open_for(self, config: Config) -> dict[str, dict]:
        """Open what the config's stages need and is not open yet; the first facts
        of each: {"links": {...}, "units": {...}} (Facts' fields)."""
        conditions = [c for s in config.stages for c in s.conditions]
        out: dict[str, dict] = {}
        if self.links is None and any(isinstance(c, LinkUp) for c in conditions):
            from .links import LinkWatch
            self.links = LinkWatch()
            out["links"] = self.links.links
        units = list(config.units_watched())
        if units and (self.units is None or set(units) - set(self.units.units)):
            from .systemd import UnitWatch
            if self.units is not None:
                self.units.close()
            self.units = UnitWatch(units)
            out["units"] = dict(self.units.states)
        return out

    def sources(self) -> list[tuple[str, object]]:
        """(what, watcher) for the selector: readable means look."""
        return [(what, w) for what, w in (("links", self.links), ("units", self.units)) if w]

    def changed(self, what: str) -> dict[str, LinkState] | dict[str, str] | None:
        """The facts again if the watcher's events changed them, else None."""
        watcher = self.links if what == "links" else self.units
        if not watcher.process():
            return None
        return watcher.links if what == "links" else dict(watcher.states)

    def close(self) -> None:
        for watcher in (self.links, self.units):
            if watcher is not None:
                watcher.close()
