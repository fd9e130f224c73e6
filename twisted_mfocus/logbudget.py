"""Log lines that a flood cannot multiply: one per source per interval.

Bad input is logged once, with its source; from then on, what the same
source sends wrong within ``interval`` seconds is only counted, and the
next line that source earns says how many were not written.  The table of
sources is bounded (the oldest is forgotten): however many sources, at
most one line per source per interval, and ``max_sources`` lines in all
per interval once the table is full.  Sans-IO: time from the clock.
"""

import collections

__all__ = ["LogBudget"]


class LogBudget:
    """Decides which of a key's events are written."""

    def __init__(self, clock, interval=60.0, max_sources=1024):
        self.clock = clock
        self.interval = interval
        self.max_sources = max_sources
        self._sources = collections.OrderedDict()   # key -> [written at, suppressed]

    def admit(self, key):
        """None if this event of ``key`` is only counted; else how many of
        its events were not written since its last line (0 the first time)."""
        now = self.clock.seconds()
        entry = self._sources.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        suppressed = entry[1] if entry is not None else 0
        self._sources[key] = [now, 0]
        self._sources.move_to_end(key)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        return suppressed
