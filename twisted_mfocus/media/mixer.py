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

A party whose codec runs below the mixer's rate (G.711 at 8 kHz under a
16 kHz mix) may be put at its own rate with a ``widen`` that brings a frame
up: loudness is measured on the narrow frame and only the frames mixed
this tick are widened (an interpolating filter per member and tick was
the most of a tick's cost with hundreds of members; bench/mixer_bench.py).

Sums are int32 (no overflow below 65536 parties), clipped to int16.

``level(key)``: how loud a party has been lately (0..1, for the live page's
speaking indicator, focus/views.py): the peak ``_speaking`` measures anyway
for the frames it ranks, held and halving every ``LEVEL_HALF_LIFE`` ticks;
kept per tick for those rows only, so no packet pays for it.  A muted or
held party is not measured: its level falls to 0.
"""

import numpy as np

from .codecs import FRAME

__all__ = ["Mixer", "Party", "QUIET"]

QUIET = 64          # a frame whose peak is below this is silence (about -54 dBFS)
LEVEL_HALF_LIFE = 10    # ticks (200 ms): how fast a held peak fades in level()


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
        #: frames put at a party's own rate: length -> their rows
        self._narrow = {}
        self._length = np.zeros(capacity, dtype=np.intp)  # row's narrow length (0: full)
        self._widen = [None] * capacity                 # row -> its widen this tick
        self._free = list(range(capacity - 1, -1, -1))
        self._layout = None             # cached row index arrays
        self._ticks = 0                 # mix() calls: the clock of the levels
        self._peak = np.zeros(capacity, dtype=np.float64)   # row's held peak, at _at
        self._at = np.zeros(capacity, dtype=np.int64)       # tick of the row's _peak

    # -- parties ------------------------------------------------------------

    def add(self, key, peer=False):
        if key in self.parties:
            raise ValueError(f"{key!r} is already mixed")
        if not self._free:
            self._grow()
        party = self.parties[key] = Party(key, self._free.pop(), peer)
        self._frames[party.row] = 0
        self._voice[party.row] = False
        self._peak[party.row] = 0.0
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
        self._narrow = {n: np.vstack([a, np.zeros_like(a)]) for n, a in self._narrow.items()}
        self._length = np.concatenate([self._length, np.zeros(old, dtype=np.intp)])
        self._widen += [None] * old
        self._voice = np.concatenate([self._voice, np.zeros(old, dtype=bool)])
        self._peak = np.concatenate([self._peak, np.zeros(old)])
        self._at = np.concatenate([self._at, np.zeros(old, dtype=np.int64)])
        self._free = list(range(2 * old - 1, old - 1, -1))

    def level(self, key):
        """How loud ``key`` has been lately, 0..1 (see the module
        docstring); None if it is not mixed here."""
        party = self.parties.get(key)
        if party is None:
            return None
        row = party.row
        age = self._ticks - int(self._at[row])
        return round(min(1.0, float(self._peak[row]) / 32768 * 0.5 ** (age / LEVEL_HALF_LIFE)), 3)

    # -- one tick --------------------------------------------------------------

    def put(self, key, samples, widen=None):
        """``key``'s frame for this tick (int16 samples), or None: silent.
        With ``widen``, ``samples`` are at the party's own lower rate and
        ``widen()`` gives them at the mixer's, if they are mixed."""
        row = self.parties[key].row
        if samples is None:
            self._voice[row] = False
            return
        self._voice[row] = True
        if widen is None:
            self._frames[row] = samples
            self._length[row] = 0
            return
        narrow = self._narrow.get(len(samples))
        if narrow is None:
            narrow = self._narrow[len(samples)] = np.zeros((len(self._frames), len(samples)),
                                                           dtype=np.int32)
        narrow[row] = samples
        self._length[row] = len(samples)
        self._widen[row] = widen

    def mix(self):
        """{key: int16 frame} of what each receiving party hears this tick;
        clears the tick.  Parties hearing the same get the same array."""
        layout = self._layout or self._plan()
        rows, members, heard, receiving, keys = layout
        if not len(rows):
            self.whole = self.ours = None       # no mix this tick (a recording: silence)
            return {}
        self._ticks += 1
        frames = self._frames[rows]
        weight = self._speaking(frames, rows, (self._voice & heard)[rows], members)
        self._widened(frames, rows, weight)
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

    def _speaking(self, frames, rows, weight, members):
        """Which rows are mixed: those with a frame, heard, not silence; of
        the members among them, the ``speakers`` loudest."""
        candidates = np.flatnonzero(weight)
        if not len(candidates):
            return weight
        loud = np.zeros(len(weight), dtype=np.int32)
        lengths = self._length[rows[candidates]]
        for n, samples in self._narrow.items():
            at = candidates[lengths == n]
            if len(at):
                loud[at] = np.abs(samples[rows[at]]).max(axis=1)
        full = candidates[lengths == 0]
        if len(full):
            loud[full] = np.abs(frames[full]).max(axis=1)
        self._hold(rows[candidates], loud[candidates])
        weight &= loud >= QUIET
        talking = np.flatnonzero(weight & members)
        if self.speakers and len(talking) > self.speakers:
            weight[talking] = False
            weight[talking[np.argsort(loud[talking])[-self.speakers:]]] = True
        return weight

    def _hold(self, at, loud):
        """Rows ``at`` measured ``loud`` this tick: their held peaks (level())."""
        held = self._peak[at] * 0.5 ** ((self._ticks - self._at[at]) / LEVEL_HALF_LIFE)
        self._peak[at] = np.maximum(held, loud)
        self._at[at] = self._ticks

    def _widened(self, frames, rows, weight):
        """The narrow frames mixed this tick, brought to the mixer's rate."""
        for i in np.flatnonzero(weight & (self._length[rows] > 0)):
            frames[i] = np.clip(self._widen[rows[i]](), -32768, 32767)

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
