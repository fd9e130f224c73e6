"""N-1 mixing of one conference at one focus, vectorised.

Sans-IO: the caller puts each party's decoded frame for this tick
(int16 at the mixer's rate, ``frame`` samples) in its row, or marks it silent, and
calls ``mix()`` once per 20 ms tick; it returns, for every party that
receives, the frame it hears, which its own call codes (engine.py, the
call's Transcoder).  numpy does the work: one sum over the rows, one
subtraction for the parties that spoke, one clip; parties that hear the
same thing (everyone silent this tick hears the whole mix; every peer
hears our members) get the very same array, so what codes it once may
serve them all.

Parties are *members* (phones this focus holds) and *peers* (the other foci
of the conference, one cascade leg each: docs/design.md, "Cascade"):

- a member hears everyone but itself: all members' voices plus every
  peer's stream, minus its own voice;
- a peer hears the mix of *our members only* (never another peer's
  stream, never its own), so across the mesh each voice reaches each
  member once and nobody hears an echo;
- a party that is muted, on hold, had nothing to play this tick, or sent
  silence (its peak below ``QUIET``) contributes nothing; one that does
  not receive (hold: ``receives`` False) gets no frame;
- of the members speaking, only the ``speakers`` loudest are mixed (0:
  all), so the mix stays intelligible and all but a few members hear the
  one shared mix: what each distinct mix costs to code is paid once per
  codec (engine.py), not once per member.

Sums are int32 (no overflow below 65536 parties), clipped to int16.
"""

import numpy as np

from .codecs import FRAME

__all__ = ["Mixer", "Party", "QUIET"]

QUIET = 64          # a frame whose peak is below this is silence (about -54 dBFS)


class Party:
    """One row of the mixer."""

    __slots__ = ("key", "row", "peer", "muted", "held", "receives")

    def __init__(self, key, row, peer):
        self.key, self.row, self.peer = key, row, peer
        self.muted = False              # by the API or *6
        self.held = False               # the party put us on hold
        self.receives = True


class Mixer:
    """See the module docstring.  ``capacity``: rows preallocated (grows)."""

    def __init__(self, capacity=64, speakers=0, frame=FRAME):
        self.parties = {}               # key -> Party
        self.speakers = speakers        # the loudest members mixed (0: all)
        #: this tick's shared frames: what silent members hear, what peers hear
        self.whole = self.ours = None
        self._frames = np.zeros((capacity, frame), dtype=np.int32)
        self._voice = np.zeros(capacity, dtype=bool)    # row has audio this tick
        self._free = list(range(capacity - 1, -1, -1))
        self._layout = None             # cached row index arrays

    # -- parties ------------------------------------------------------------

    def add(self, key, peer=False):
        if key in self.parties:
            raise ValueError(f"{key!r} is already mixed")
        if not self._free:
            self._grow()
        party = self.parties[key] = Party(key, self._free.pop(), peer)
        self._frames[party.row] = 0
        self._voice[party.row] = False
        self._layout = None
        return party

    def remove(self, key):
        party = self.parties.pop(key, None)
        if party is not None:
            self._voice[party.row] = False
            self._free.append(party.row)
            self._layout = None

    def set(self, key, muted=None, receives=None, held=None):
        party = self.parties[key]
        if muted is not None:
            party.muted = muted
        if held is not None:
            party.held = held
        if receives is not None:
            party.receives = receives
        self._layout = None

    def _grow(self):
        old = len(self._frames)
        self._frames = np.vstack([self._frames, np.zeros_like(self._frames)])
        self._voice = np.concatenate([self._voice, np.zeros(old, dtype=bool)])
        self._free = list(range(2 * old - 1, old - 1, -1))

    # -- one tick --------------------------------------------------------------

    def put(self, key, samples):
        """``key``'s frame for this tick (int16 samples), or None: silent."""
        party = self.parties[key]
        if samples is None:
            self._voice[party.row] = False
        else:
            self._frames[party.row] = samples
            self._voice[party.row] = True

    def mix(self):
        """{key: int16 frame} of what each receiving party hears this tick;
        clears the tick.  Parties hearing the same get the same array."""
        layout = self._layout or self._plan()
        rows, members, heard, receiving, keys = layout
        if not len(rows):
            return {}
        frames = self._frames[rows]
        weight = self._speaking(frames, (self._voice & heard)[rows], members)
        own = frames[weight & members].sum(axis=0, dtype=np.int32)      # our members
        total = own + frames[weight & ~members].sum(axis=0, dtype=np.int32)  # + peers
        self._voice[:] = False
        self.whole, self.ours = whole, ours = _clip(total), _clip(own)
        out = {}
        for i, key in zip(receiving, keys):
            if not members[i]:
                out[key] = ours                 # a peer: our members, shared
            elif weight[i]:
                out[key] = _clip(total - frames[i])     # all but its own voice
            else:
                out[key] = whole                # silent: the whole mix, shared
        return out

    def _speaking(self, frames, weight, members):
        """Which rows are mixed: those with a frame, heard, not silence; of
        the members among them, the ``speakers`` loudest."""
        candidates = np.flatnonzero(weight)
        if not len(candidates):
            return weight
        loud = np.zeros(len(weight), dtype=np.int32)
        loud[candidates] = np.abs(frames[candidates]).max(axis=1)
        weight &= loud >= QUIET
        talking = np.flatnonzero(weight & members)
        if self.speakers and len(talking) > self.speakers:
            weight[talking] = False
            weight[talking[np.argsort(loud[talking])[-self.speakers:]]] = True
        return weight

    def _plan(self):
        """Row index arrays for the current parties (rebuilt on a change)."""
        parties = sorted(self.parties.values(), key=lambda p: p.row)
        rows = np.array([p.row for p in parties], dtype=np.intp)
        members = np.array([not p.peer for p in parties], dtype=bool)
        heard = np.zeros(len(self._frames), dtype=bool)
        heard[[p.row for p in parties if not (p.muted or p.held)]] = True
        receiving = [i for i, p in enumerate(parties) if p.receives]
        self._layout = (rows, members, heard, receiving, [parties[i].key for i in receiving])
        return self._layout


def _clip(samples):
    return np.clip(samples, -32768, 32767).astype(np.int16)
