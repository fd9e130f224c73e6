"""Log lines that a flood cannot multiply: one per source per interval.

Bad input is logged once, with its source; from then on, what the same
source does wrong within ``interval`` seconds is only counted, and the
next line that source earns says how many were not written.  The table is
bounded: sources whose line is older than ``interval`` are forgotten, and
once ``max_sources`` are in it every other source shares one entry,
``others``.  So, however many sources, at most ``max_sources + 1`` lines
per interval.  Sans-IO: time from ``now()``.
"""

import collections

__all__ = ["LogBudget"]


class LogBudget:
    """Decides which of a source's events are written."""

    def __init__(self, now, interval=60.0, max_sources=1024, others="other sources"):
        self.now = now
        self.interval = interval
        self.max_sources = max_sources
        self.others = others
        #: source -> [when its last line was written, events not written since];
        #: oldest line first
        self.last = collections.OrderedDict()

    def admit(self, key):
        """None if this event of ``key`` is only counted; else the key to log
        it under (``others`` when the table is full) and how many events of
        that key were not written since its last line (0 the first time)."""
        now, last = self.now(), self.last
        entry = last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        suppressed = last.pop(key)[1] if entry is not None else 0
        while last:                             # forget lines old enough
            oldest = next(iter(last.values()))
            if now - oldest[0] < self.interval:
                break
            last.popitem(last=False)
        if len(last) >= self.max_sources:
            key, suppressed = self.others, 0
            entry = last.get(key)
            if entry is not None:               # the others had their line lately
                entry[1] += 1
                return None
        last[key] = [now, 0]
        return key, suppressed
